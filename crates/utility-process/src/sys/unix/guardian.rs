//! The guardian: takes every child's process group down when the parent dies.
//!
//! `PR_SET_PDEATHSIG` kills a child when its parent dies, but not the processes the child has
//! started: they are re-parented and live on. Nothing runs in a parent killed with SIGKILL,
//! so the cleanup has to live in another process. The guardian is that process: forked once,
//! the first time the library forks a child, it blocks reading one end of a socket pair whose
//! other end only the parent holds. The parent writes the process group of each child it
//! starts (`+pgid`) and of each child it has reaped (`-pgid`). When the parent dies — however
//! it dies — the guardian reads end-of-file, sends SIGKILL to every group still listed, and
//! exits.
//!
//! The guardian is a fork that never execs, so it may only make async-signal-safe calls; it
//! allocates nothing (its table is allocated before the fork) and makes only raw syscalls.
//! It sits in its own process group and ignores the terminal's signals, so that a Ctrl-C
//! aimed at the application does not kill it before it has done its work.
//!
//! Each child is killed twice: its group (`kill(-pgid)`), which takes the processes it started,
//! and the child itself by its pid (equal to the group's number), so that a child that cleared
//! its parent-death signal and moved to another group or session still dies.
//!
//! # Known limits
//!
//! - An unsandboxed child runs as the parent's user and can do what that user can: its own
//!   children may leave its process group (`setsid`, `setpgid`) and then outlive it, and it
//!   can even kill the guardian before escaping. Closing that needs a container the child
//!   cannot leave (a cgroup with `cgroup.kill`, or a PID namespace, whose init would change
//!   the child's signal semantics), which the library does not create. A sandboxed child
//!   cannot: its filter denies `setsid` and `setpgid` to it and to everything it starts, and
//!   Landlock's signal scope (ABI 6) keeps it from signalling the guardian.
//! - It tracks up to [`CAPACITY`] live children at once; beyond that, further children are
//!   still killed by their parent-death signal, but their own children are not.
//! - A group is killed a few microseconds after the parent's death; a group whose members have
//!   all exited by then may, in theory, have had its number reused by an unrelated process
//!   that made itself a group leader in that window.
//! - A process that inherits the parent's end without exec (a bare `fork()` by the host
//!   application) keeps the guardian waiting until that process exits too.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use super::socket;

/// How many process groups the guardian can watch at once.
pub(crate) const CAPACITY: usize = 65_536;

/// The parent's handle on its guardian.
#[derive(Debug)]
pub(crate) struct Guardian {
    channel: OwnedFd,
}

impl Guardian {
    /// Forks the guardian.
    pub(crate) fn start() -> io::Result<Guardian> {
        let (ours, theirs) = socket::socketpair()?;
        let mut table = vec![0 as libc::pid_t; CAPACITY].into_boxed_slice();
        let keep = theirs.as_raw_fd();
        // SAFETY: the child branch makes only async-signal-safe syscalls and plain memory
        // accesses on `table`, which the fork copied; it never returns (it `_exit`s).
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: we are the freshly forked child.
            unsafe { guard(keep, &mut table) }
        }
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Guardian { channel: ours })
    }

    /// Asks the guardian to kill group `pgid` if the parent dies.
    pub(crate) fn watch(&self, pgid: libc::pid_t) {
        self.tell(pgid);
    }

    /// Tells the guardian that group `pgid` is no longer ours.
    pub(crate) fn forget(&self, pgid: libc::pid_t) {
        self.tell(-pgid);
    }

    fn tell(&self, record: libc::pid_t) {
        let bytes = record.to_ne_bytes();
        // Four bytes on a stream socket: written whole or not at all unless the guardian is
        // gone (EPIPE) or its buffer is full of unread records, which it drains continuously.
        let mut sent = 0;
        while sent < bytes.len() {
            match socket::send(self.channel.as_fd(), &bytes[sent..]) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let _ = super::wait_fd(self.channel.as_fd(), super::Interest::Writable, None);
                }
                // The guardian is gone: children still die with their parent-death signal.
                Err(_) => return,
            }
        }
    }
}

/// The guardian's whole life.
///
/// # Safety
///
/// Only in a freshly forked child.
unsafe fn guard(channel: RawFd, table: &mut [libc::pid_t]) -> ! {
    // SAFETY: the whole body makes raw, async-signal-safe syscalls on our own stack and
    // table, as a forked child of a multi-threaded parent must.
    unsafe {
        // Only the channel stays open: not the parent's stdio, not its other sockets.
        super::os::close_all_but(channel);

        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = libc::SIG_DFL;
        for signal in 1..65 {
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
        action.sa_sigaction = libc::SIG_IGN;
        for signal in [
            libc::SIGINT,
            libc::SIGQUIT,
            libc::SIGHUP,
            libc::SIGTERM,
            libc::SIGPIPE,
        ] {
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::pthread_sigmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        libc::setpgid(0, 0);
        super::os::name_guardian();

        let mut used = 0usize; // table[..used] holds every listed group (and zeros)
        let mut buf = [0u8; 4096];
        let mut carry = 0usize; // bytes of an incomplete record at the front of `buf`
        loop {
            let n = libc::read(channel, buf[carry..].as_mut_ptr().cast(), buf.len() - carry);
            if n < 0 && *super::os::errno_location() == libc::EINTR {
                continue;
            }
            if n <= 0 {
                break;
            }
            let end = carry + n as usize;
            let whole = end - end % 4;
            for record in buf[..whole].chunks_exact(4) {
                let value =
                    libc::pid_t::from_ne_bytes([record[0], record[1], record[2], record[3]]);
                if value > 0 {
                    if let Some(slot) = table[..used].iter_mut().find(|s| **s == 0) {
                        *slot = value;
                    } else if let Some(slot) = table.get_mut(used) {
                        *slot = value;
                        used += 1;
                    }
                } else if let Some(slot) = table[..used].iter_mut().find(|s| **s == -value) {
                    *slot = 0;
                }
            }
            buf.copy_within(whole..end, 0);
            carry = end - whole;
        }
        for &pgid in &table[..used] {
            if pgid > 0 {
                libc::kill(-pgid, libc::SIGKILL);
                // The child itself, by its pid (which is its group's number): a child that
                // left its group and cleared its parent-death signal is still ended.
                libc::kill(pgid, libc::SIGKILL);
            }
        }
        libc::_exit(0)
    }
}
