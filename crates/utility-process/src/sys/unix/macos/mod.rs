//! macOS: what differs from the other Unix backends — spawning with `posix_spawn` and
//! watching exits with kqueue (`process`), POSIX shared memory (`shm`), the confinement that
//! exists (`confine`) — and the small primitives the shared modules ask of the OS.
//!
//! # Close-on-exec without `SOCK_CLOEXEC`, `MSG_CMSG_CLOEXEC` or `pipe2`
//!
//! macOS creates sockets, pipes and received descriptors inheritable, and sets `FD_CLOEXEC`
//! only with a second call (`fcntl(2)`). Between the two calls, a `fork` + `exec` on another
//! thread would carry the descriptor into its program. The library's own children never see
//! such a descriptor: they are started with `POSIX_SPAWN_CLOEXEC_DEFAULT`
//! (`posix_spawnattr_setflags(3)`), which closes every descriptor not named by a file action,
//! whatever its flag; and the fork path (for rlimits) marks every descriptor but 0–4
//! close-on-exec itself. A *host application* that spawns with `fork` + `exec` on another
//! thread at that moment could still leak one into its own child: the window is two system
//! calls wide, and closing it needs a process-wide lock that the host would have to share.
//!
//! # SIGPIPE without `MSG_NOSIGNAL`
//!
//! Every socket the library creates, and every socket it receives, gets `SO_NOSIGPIPE`
//! (`setsockopt(2)`, `getsockopt(2)` man page: "do not generate SIGPIPE, instead return
//! EPIPE"), so a write to a dead peer is an `EPIPE` error as on Linux.

pub(crate) mod confine;
pub(crate) mod process;
pub(crate) mod shm;

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use super::{cvt, set_cloexec};

/// The type `setrlimit(2)` takes its resource as on macOS: an `int`.
pub(crate) type RlimitResource = libc::c_int;

/// A pipe whose two ends are close-on-exec: `(read, write)`.
///
/// `pipe(2)`, then `fcntl(2)` `F_SETFD` on each end: macOS has no `pipe2`. See the module
/// documentation for the window between the two.
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [-1; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe to fill.
    cvt(unsafe { libc::pipe(fds.as_mut_ptr()) })?;
    // SAFETY: pipe succeeded, so both are fresh descriptors that nothing else owns.
    let pair = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    set_cloexec(std::os::fd::AsFd::as_fd(&pair.0), true)?;
    set_cloexec(std::os::fd::AsFd::as_fd(&pair.1), true)?;
    Ok(pair)
}

/// The calling thread's `errno` (`__error()`, what `<sys/errno.h>` defines `errno` as on
/// macOS), to save and restore it in a signal handler.
pub(crate) fn errno_location() -> *mut libc::c_int {
    // SAFETY: __error has no preconditions and returns this thread's errno.
    unsafe { libc::__error() }
}

/// Extra `socketpair` type flags: none exist on macOS (`socket(2)` knows no `SOCK_CLOEXEC`).
pub(crate) const SOCKET_FLAGS: libc::c_int = 0;
/// `send`/`sendmsg` flags: never block (`MSG_DONTWAIT`, `send(2)`); SIGPIPE is off per socket
/// (`SO_NOSIGPIPE`), as macOS has no `MSG_NOSIGNAL`.
pub(crate) const SEND_FLAGS: libc::c_int = libc::MSG_DONTWAIT;
/// `recvmsg` flags: never block (`recv(2)`); macOS has no `MSG_CMSG_CLOEXEC`, so
/// [`after_recv`] marks each received descriptor.
pub(crate) const RECV_FLAGS: libc::c_int = libc::MSG_DONTWAIT;

/// Right after `socketpair(2)`: close-on-exec (`fcntl(2)`) and no SIGPIPE (`SO_NOSIGPIPE`,
/// `getsockopt(2)`).
pub(crate) fn after_socketpair(fd: BorrowedFd<'_>) -> io::Result<()> {
    set_cloexec(fd, true)?;
    set_no_sigpipe(fd)
}

/// Right after `recvmsg(2)`, for each descriptor it delivered: close-on-exec at once
/// (`fcntl(2)`), and `SO_NOSIGPIPE` if it is a socket, so that a port received from a peer
/// (which may not have set it) cannot raise SIGPIPE either.
pub(crate) fn after_recv(fd: BorrowedFd<'_>) -> io::Result<()> {
    set_cloexec(fd, true)?;
    // ENOTSOCK for a shared buffer's descriptor: nothing to do.
    let _ = set_no_sigpipe(fd);
    Ok(())
}

/// `setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, 1)` (`getsockopt(2)`).
fn set_no_sigpipe(fd: BorrowedFd<'_>) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: setsockopt reads one int from the pointer we pass, of the size we pass, for a
    // descriptor we borrow.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_NOSIGPIPE,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// Whether the socket `fd` is in the Unix domain: macOS has no `SO_DOMAIN`, so the family of
/// its local address (`getsockname(2)`; a socket pair's address is unnamed, but its family is
/// `AF_UNIX`).
pub(crate) fn is_unix_domain(fd: BorrowedFd<'_>) -> bool {
    // SAFETY: an all-zero sockaddr_storage is a valid value of this plain C struct.
    let mut address: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: getsockname writes at most `len` bytes into the storage we own, and updates
    // `len`.
    let ok = unsafe {
        libc::getsockname(
            fd.as_raw_fd(),
            (&mut address as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    } == 0;
    ok && i32::from(address.ss_family) == libc::AF_UNIX
}

/// Nothing on macOS: it has no transparent huge pages (superpages exist only for memory
/// allocated with `mach_vm_allocate`'s `VM_FLAGS_SUPERPAGE_*`, not for a `Vec`).
pub(crate) fn advise_huge_pages(_buf: &mut Vec<u8>) {}

/// In the freshly forked guardian: closes every descriptor but `keep`, up to the table's
/// size (`getrlimit(2)` `RLIMIT_NOFILE`; macOS has no `close_range`). `close(2)` is
/// async-signal-safe.
///
/// # Safety
///
/// Only in a forked child that owns nothing else of its descriptor table.
pub(crate) unsafe fn close_all_but(keep: RawFd) {
    // SAFETY: the caller is a forked child whose other descriptors nothing will use; the
    // rlimit struct is ours to fill.
    unsafe {
        for fd in 0..descriptor_table_size() {
            if fd != keep {
                libc::close(fd);
            }
        }
    }
}

/// The number of descriptor slots to sweep: the soft `RLIMIT_NOFILE`, capped (it can be
/// `RLIM_INFINITY`, and `OPEN_MAX` is 10,240 on macOS: `getrlimit(2)`, COMPATIBILITY).
fn descriptor_table_size() -> RawFd {
    // SAFETY: an all-zero rlimit is a valid value; getrlimit fills it.
    let mut limit: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: getrlimit writes one rlimit into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 10_240;
    }
    limit.rlim_cur.min(1 << 16) as RawFd
}

/// Names the guardian's only thread (`pthread_setname_np(3)`, which on macOS names the
/// calling thread only: `ps` still shows the executable's name).
pub(crate) fn name_guardian() {
    // SAFETY: pthread_setname_np reads a NUL-terminated string from a static.
    unsafe { libc::pthread_setname_np(c"up-guardian".as_ptr()) };
}

/// The names of macOS's own signals, past the ones every Unix shares (`signal(3)`).
pub(crate) fn signal_name(number: i32) -> Option<&'static str> {
    match number {
        libc::SIGEMT => Some("SIGEMT"),
        libc::SIGINFO => Some("SIGINFO"),
        _ => None,
    }
}
