//! Starting a child, and watching, signalling and reaping it through a pidfd.
//!
//! # How a child starts
//!
//! [`spawn`] starts the child as `posix_spawn` does, with `clone(CLONE_VM | CLONE_VFORK)`: the
//! child borrows the parent's memory until it execs, so no page table is copied (a plain
//! `fork` of a large parent costs a copy of its page tables, and another to tear them down at
//! exec). The child — which may only make async-signal-safe calls, since it shares a
//! multi-threaded parent's memory — lays out its world before `execve`:
//!
//! 1. every signal disposition back to `SIG_DFL` and an empty signal mask (a Rust parent
//!    ignores SIGPIPE, and std children inherit the mask since rust-lang/rust#101077: a parent
//!    that blocks SIGTERM would otherwise make `kill()` powerless);
//! 2. its own process group, so that the whole tree it starts can be signalled at once;
//! 3. `PR_SET_PDEATHSIG = SIGKILL`, then a check that the parent has not already died in the
//!    window before it was armed. The signal fires when the *thread* that forked exits, so
//!    the library forks only from its own thread, which lives as long as the process;
//! 4. its descriptors: `/dev/null` as stdin, the chosen stdout and stderr, the port as fd 3,
//!    and every other descriptor — even those the parent opened without `O_CLOEXEC` — marked
//!    close-on-exec with `close_range`, so none survives `execve`;
//! 5. `chdir`, then `execve` of a path resolved before the fork.
//!
//! A failing step writes `(step, errno)` into a close-on-exec pipe and exits 127; the parent
//! reads that pipe until end-of-file (which a successful `execve` causes), so [`spawn`]
//! returns only once the program is running or known not to start — and it says which step
//! failed. Nothing is allocated between fork and exec: every string is prepared before.
//!
//! # Why a pidfd
//!
//! A pid can be recycled the moment its process is reaped. A pidfd names one process forever:
//! signals sent through it after the process is gone fail with `ESRCH` instead of reaching a
//! stranger. The library never calls `waitpid(-1)`: it reaps exactly its own children, by
//! pidfd, so a host application's own `wait()` calls are never robbed.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::sys::unix::reactor::SharedFd;
use crate::sys::unix::retry;

use crate::sys::unix::spawn::{
    block_all_signals, fail, null_terminated, reap_blocking, restore_signal_mask,
};
pub(crate) use crate::sys::unix::spawn::{
    kill_process_group, ChildFd, PreExec, RawExit, Reaped, SpawnPlan, SpawnStep,
};

/// A child that is running.
#[derive(Debug)]
pub(crate) struct Spawned {
    pub pid: libc::pid_t,
    pub pidfd: Pidfd,
}

/// Forks and executes `plan`; returns once the program runs, or why it could not.
pub(crate) fn spawn(plan: SpawnPlan) -> Result<Spawned, (SpawnStep, io::Error)> {
    let (err_read, err_write) = crate::sys::unix::pipe().map_err(|e| (SpawnStep::Fork, e))?;

    let argv = null_terminated(&plan.argv);
    let envp = null_terminated(&plan.envp);
    let stdout = match &plan.stdout {
        ChildFd::Inherit => None,
        ChildFd::Fd(fd) => Some(fd.as_raw_fd()),
    };
    let stderr = match &plan.stderr {
        ChildFd::Inherit => None,
        ChildFd::Fd(fd) => Some(fd.as_raw_fd()),
    };
    let sandbox = plan.confine.as_ref().and_then(|c| c.sandbox.as_ref());
    let layout = Layout {
        program: plan.program.as_ptr(),
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        cwd: plan.cwd.as_ref().map(|c| c.as_ptr()),
        stdin: plan.dev_null.as_raw_fd(),
        stdout,
        stderr,
        port: plan.port.as_raw_fd(),
        report: err_write.as_raw_fd(),
        // SAFETY: getpid has no preconditions.
        parent_pid: unsafe { libc::getpid() },
        rlimits: plan
            .confine
            .as_ref()
            .map_or(&[][..], |c| &c.rlimits[..])
            .as_ptr(),
        rlimit_count: plan.confine.as_ref().map_or(0, |c| c.rlimits.len()),
        no_new_privs: sandbox.is_some(),
        new_session: sandbox.is_some(),
        namespaces: sandbox.map_or(0, |s| s.namespaces),
        ruleset: sandbox
            .and_then(|s| s.ruleset.as_ref())
            .map(|r| r.as_raw_fd()),
        filter: sandbox
            .filter(|s| !s.filter.is_empty())
            .map(|s| libc::sock_fprog {
                len: s.filter.len() as libc::c_ushort,
                filter: s.filter.as_ptr().cast_mut(),
            }),
        confine_report: plan.confine.as_ref().map(|c| c.report.as_raw_fd()),
    };

    // The child runs on a stack of its own, in our memory, until it execs.
    let mut stack = vec![0u8; CHILD_STACK];
    // Block every signal across the clone, so that no handler of the parent runs in the child
    // before the child has reset the dispositions.
    let old_mask = block_all_signals();
    // SAFETY: `CLONE_VM | CLONE_VFORK` (what posix_spawn does): the child shares our memory
    // and this thread is suspended until the child execs or exits, so nothing of ours changes
    // under it. It runs `child_entry` on `stack` (the top of it: stacks grow down on every
    // architecture Linux runs this on), aligned to 16 bytes, and only reads `layout`, which
    // outlives the call. It makes only raw syscalls, its handler table and descriptor table
    // are its own (no CLONE_SIGHAND, no CLONE_FILES), and every signal is blocked until it
    // has reset the handlers. SIGCHLD as its exit signal makes it an ordinary child to wait
    // for.
    let pid = unsafe {
        let top = stack.as_mut_ptr().add(stack.len());
        let top = top.sub(top as usize % 16);
        libc::clone(
            child_entry,
            top.cast(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (&layout as *const Layout).cast_mut().cast(),
        )
    };
    restore_signal_mask(&old_mask);
    drop(stack);
    if pid < 0 {
        return Err((SpawnStep::Fork, io::Error::last_os_error()));
    }
    drop(err_write);
    drop(plan);
    // The child also does this; doing it here too closes the race in which the parent
    // signals the group before the child has created it.
    // SAFETY: setpgid on our own unreaped child; EACCES after its exec is harmless.
    unsafe { libc::setpgid(pid, pid) };

    let mut report = [0u8; 8];
    let mut got = 0;
    while got < report.len() {
        // SAFETY: writes at most `report.len() - got` bytes into `report[got..]`.
        let n = unsafe {
            libc::read(
                err_read.as_raw_fd(),
                report[got..].as_mut_ptr().cast(),
                report.len() - got,
            )
        };
        match n {
            0 => break,
            n if n > 0 => got += n as usize,
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    break;
                }
            }
        }
    }
    if got == report.len() {
        let step = SpawnStep::from_code(u32::from_ne_bytes([
            report[0], report[1], report[2], report[3],
        ]));
        let errno = i32::from_ne_bytes([report[4], report[5], report[6], report[7]]);
        reap_blocking(pid);
        return Err((step, io::Error::from_raw_os_error(errno)));
    }
    match Pidfd::open(pid) {
        Ok(pidfd) => Ok(Spawned { pid, pidfd }),
        Err(e) => {
            // SAFETY: `pid` is our own unreaped child, so the number cannot have been reused.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            reap_blocking(pid);
            Err((SpawnStep::Pidfd, e))
        }
    }
}

/// The child's stack between clone and exec: `exec_child` needs a few hundred bytes.
const CHILD_STACK: usize = 64 * 1024;

/// Where the cloned child starts.
extern "C" fn child_entry(layout: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `spawn` passes a pointer to its `Layout`, alive until this child execs or exits
    // (the parent is suspended meanwhile); we are the freshly cloned child.
    unsafe { exec_child(&*(layout as *const Layout)) }
}

/// Raw pointers into the plan, for the child to use without allocating.
struct Layout {
    program: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    cwd: Option<*const libc::c_char>,
    stdin: RawFd,
    stdout: Option<RawFd>,
    stderr: Option<RawFd>,
    port: RawFd,
    report: RawFd,
    parent_pid: libc::pid_t,
    rlimits: *const (super::RlimitResource, libc::rlimit),
    rlimit_count: usize,
    no_new_privs: bool,
    new_session: bool,
    namespaces: libc::c_int,
    ruleset: Option<RawFd>,
    filter: Option<libc::sock_fprog>,
    confine_report: Option<RawFd>,
}

/// The child between fork and exec.
///
/// # Safety
///
/// Must be called only in a freshly forked child, with `layout` pointing to valid memory.
unsafe fn exec_child(layout: &Layout) -> ! {
    // SAFETY: the whole body makes only async-signal-safe syscalls, on pointers into memory
    // the caller vouches for, as a forked child of a multi-threaded parent must.
    unsafe {
        // 1. Signals: default dispositions, then an empty mask.
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = libc::SIG_DFL;
        for signal in 1..65 {
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::pthread_sigmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());

        // 2. Its own process group — for a sandboxed child, a session of its own, which
        //    also leaves the parent's controlling terminal behind.
        let grouped = if layout.new_session {
            libc::setsid() >= 0
        } else {
            libc::setpgid(0, 0) == 0
        };
        if !grouped {
            fail(layout.report, SpawnStep::ProcessGroup);
        }

        // 3. Die with the parent, and make sure the parent did not die before this was armed.
        if libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        ) != 0
        {
            fail(layout.report, SpawnStep::ParentDeathSignal);
        }
        if libc::getppid() != layout.parent_pid {
            libc::_exit(127);
        }

        // 4. Descriptors. First copy every source above 4, so that placing one cannot
        //    overwrite another that happens to sit at 0..=4.
        let high = |fd: RawFd| libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 5);
        let stdin = high(layout.stdin);
        let port = high(layout.port);
        let stdout = layout.stdout.map(high);
        let stderr = layout.stderr.map(high);
        let confine_report = layout.confine_report.map(high);
        // The ruleset too: the parent may hold it at a number about to be overwritten.
        let ruleset = layout.ruleset.map(high);
        if stdin < 0
            || port < 0
            || stdout == Some(-1)
            || stderr == Some(-1)
            || confine_report == Some(-1)
            || ruleset == Some(-1)
        {
            fail(layout.report, SpawnStep::Descriptors);
        }
        // dup2 clears FD_CLOEXEC on the target: these survive exec.
        let placed = libc::dup2(stdin, 0) == 0
            && stdout.is_none_or(|fd| libc::dup2(fd, 1) == 1)
            && stderr.is_none_or(|fd| libc::dup2(fd, 2) == 2)
            && libc::dup2(port, 3) == 3
            && confine_report.is_none_or(|fd| libc::dup2(fd, 4) == 4);
        if !placed {
            fail(layout.report, SpawnStep::Descriptors);
        }
        // Everything above closes at exec — including descriptors the parent opened
        // without O_CLOEXEC, and our error pipe, whose closing tells the parent exec worked.
        let first_closed = if confine_report.is_some() { 5 } else { 4 };
        if super::close_range(
            first_closed,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC as libc::c_int,
        ) != 0
        {
            let mut limit: libc::rlimit = std::mem::zeroed();
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
            let top = limit.rlim_cur.min(1 << 20) as RawFd;
            for fd in first_closed as RawFd..top {
                libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
            }
        }

        // 5. Working directory, then the program.
        if let Some(cwd) = layout.cwd {
            if libc::chdir(cwd) != 0 {
                fail(layout.report, SpawnStep::Chdir);
            }
        }

        // 6. Limits, then the sandbox's first layers, last of all so that nothing above
        //    needs what they forbid. The filter lets `execve` through: the program's loader
        //    needs to open its libraries; the child's library code tightens the rest.
        for i in 0..layout.rlimit_count {
            let (resource, limit) = &*layout.rlimits.add(i);
            if libc::setrlimit(*resource, limit) != 0 {
                fail(layout.report, SpawnStep::Limits);
            }
        }
        if layout.no_new_privs && libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            fail(layout.report, SpawnStep::Sandbox);
        }
        // Namespaces are a layer "where allowed": a kernel or container that refuses them
        // leaves the child with the other layers, and its library reports what holds.
        if layout.namespaces != 0 {
            libc::unshare(layout.namespaces);
        }
        if let Some(ruleset) = ruleset {
            if libc::syscall(libc::SYS_landlock_restrict_self, ruleset, 0 as libc::c_uint) != 0 {
                fail(layout.report, SpawnStep::Sandbox);
            }
        }
        if let Some(filter) = &layout.filter {
            if libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0 as libc::c_uint,
                filter as *const libc::sock_fprog,
            ) != 0
            {
                fail(layout.report, SpawnStep::Sandbox);
            }
        }
        libc::execve(layout.program, layout.argv, layout.envp);
        fail(layout.report, SpawnStep::Exec)
    }
}

/// A descriptor naming one child process for as long as we hold it.
#[derive(Debug)]
pub(crate) struct Pidfd {
    fd: SharedFd,
}

impl Pidfd {
    fn open(pid: libc::pid_t) -> io::Result<Pidfd> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel just created this close-on-exec descriptor for us alone.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
        Ok(Pidfd {
            fd: SharedFd::new(fd),
        })
    }

    /// Sends `signal` to the process; `ESRCH` once it has been reaped.
    pub(crate) fn send_signal(&self, signal: i32) -> io::Result<()> {
        // SAFETY: pidfd_send_signal with a null siginfo and no flags, on a descriptor we own.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.fd.as_raw_fd(),
                signal,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if ret < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Whether the process has ended (it may be a zombie still): does not reap.
    pub(crate) fn has_exited(&self) -> io::Result<bool> {
        Ok(self
            .wait(libc::WEXITED | libc::WNOHANG | libc::WNOWAIT)?
            .is_some())
    }

    /// Reaps the process if it has ended.
    pub(crate) fn try_reap(&self) -> io::Result<Option<Reaped>> {
        self.wait(libc::WEXITED | libc::WNOHANG)
    }

    fn wait(&self, flags: libc::c_int) -> io::Result<Option<Reaped>> {
        retry(|| {
            // SAFETY: the raw waitid (whose fifth argument, which libc's wrapper lacks, is
            // the child's resource usage) fills `info` and `usage`, zeroed values we own, for
            // the process behind our pidfd only (P_PIDFD): it can never reap anyone else.
            unsafe {
                let mut info: libc::siginfo_t = std::mem::zeroed();
                let mut usage: libc::rusage = std::mem::zeroed();
                let ret = libc::syscall(
                    libc::SYS_waitid,
                    libc::P_PIDFD,
                    self.fd.as_raw_fd() as libc::id_t,
                    &mut info as *mut libc::siginfo_t,
                    flags,
                    &mut usage as *mut libc::rusage,
                );
                if ret < 0 {
                    return Err(io::Error::last_os_error());
                }
                if info.si_pid() == 0 {
                    return Ok(None);
                }
                let status = info.si_status();
                let exit = match info.si_code {
                    libc::CLD_EXITED => RawExit::Code(status),
                    libc::CLD_DUMPED => RawExit::Signal {
                        signal: status,
                        core_dumped: true,
                    },
                    _ => RawExit::Signal {
                        signal: status,
                        core_dumped: false,
                    },
                };
                let time = |t: libc::timeval| {
                    std::time::Duration::from_secs(t.tv_sec.max(0) as u64)
                        + std::time::Duration::from_micros(t.tv_usec.max(0) as u64)
                };
                Ok(Some(Reaped {
                    exit,
                    cpu_time: time(usage.ru_utime) + time(usage.ru_stime),
                }))
            }
        })
    }
}

impl Pidfd {
    /// The descriptor, to register with a runtime: it becomes readable when the process ends.
    pub(crate) fn shared_fd(&self) -> &SharedFd {
        &self.fd
    }
}

/// Names this process (its main thread's `comm`, shown by `top` and `ps -o comm`).
pub(crate) fn set_process_name(name: &str) -> io::Result<()> {
    // The kernel keeps 15 bytes; cut at a character boundary.
    let mut end = name.len().min(15);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    std::fs::write("/proc/self/comm", &name.as_bytes()[..end])
}
