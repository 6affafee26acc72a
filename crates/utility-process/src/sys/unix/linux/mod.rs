//! Linux: what differs from the other Unix backends — spawning by `clone(CLONE_VM |
//! CLONE_VFORK)` and reaping by pidfd (`process`), sealed memfds (`shm`), Landlock and
//! seccomp (`confine`) — and the small primitives the shared modules ask of the OS.

pub(crate) mod confine;
pub(crate) mod process;
pub(crate) mod shm;

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use super::cvt;

/// The type `setrlimit` takes its resource as: glibc's own enum type, an `int` elsewhere.
#[cfg(target_env = "gnu")]
pub(crate) type RlimitResource = libc::__rlimit_resource_t;
/// The type `setrlimit` takes its resource as: glibc's own enum type, an `int` elsewhere.
#[cfg(not(target_env = "gnu"))]
pub(crate) type RlimitResource = libc::c_int;

/// `close_range(2)` (Linux 5.9), through `syscall`: not every C library wraps it.
///
/// # Safety
///
/// Closing descriptors others own is the caller's to answer for (async-signal-safe: a raw
/// system call).
pub(crate) unsafe fn close_range(
    first: libc::c_uint,
    last: libc::c_uint,
    flags: libc::c_int,
) -> libc::c_int {
    // SAFETY: integer arguments only; what closing means for the descriptors is the caller's.
    unsafe { libc::syscall(libc::SYS_close_range, first, last, flags) as libc::c_int }
}

/// A pipe whose two ends are close-on-exec: `(read, write)`.
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [-1; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: pipe2 succeeded, so both are fresh descriptors that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// The calling thread's `errno`, to save and restore it in a signal handler.
pub(crate) fn errno_location() -> *mut libc::c_int {
    // SAFETY: __errno_location has no preconditions and returns this thread's errno.
    unsafe { libc::__errno_location() }
}

/// Extra `socketpair` type flags: the pair is created close-on-exec, atomically.
pub(crate) const SOCKET_FLAGS: libc::c_int = libc::SOCK_CLOEXEC;
/// `send`/`sendmsg` flags: never block, never raise SIGPIPE.
pub(crate) const SEND_FLAGS: libc::c_int = libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT;
/// `recvmsg` flags: never block; received descriptors arrive close-on-exec, atomically.
pub(crate) const RECV_FLAGS: libc::c_int = libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC;

/// Nothing to do after `socketpair`: `SOCKET_FLAGS` and `SEND_FLAGS` did it.
pub(crate) fn after_socketpair(_fd: BorrowedFd<'_>) -> io::Result<()> {
    Ok(())
}

/// Nothing to do for a received descriptor: `MSG_CMSG_CLOEXEC` did it.
pub(crate) fn after_recv(_fd: BorrowedFd<'_>) -> io::Result<()> {
    Ok(())
}

/// Whether the socket `fd` is in the Unix domain (`SO_DOMAIN`, Linux 2.6.32).
pub(crate) fn is_unix_domain(fd: BorrowedFd<'_>) -> bool {
    let mut domain: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into the int we pass.
    let ok = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_DOMAIN,
            (&mut domain as *mut libc::c_int).cast(),
            &mut len,
        )
    } == 0;
    ok && domain == libc::AF_UNIX
}

/// In the freshly forked guardian: closes every descriptor but `keep`.
///
/// # Safety
///
/// Only in a forked child that owns nothing else of its descriptor table.
pub(crate) unsafe fn close_all_but(keep: RawFd) {
    // SAFETY: the caller is a forked child whose other descriptors nothing will use.
    unsafe {
        if keep > 0 {
            close_range(0, (keep - 1) as libc::c_uint, 0);
        }
        close_range((keep + 1) as libc::c_uint, libc::c_uint::MAX, 0);
    }
}

/// Names the guardian (`comm`), for `ps` and `top`.
pub(crate) fn name_guardian() {
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes from a static.
    unsafe {
        libc::prctl(
            libc::PR_SET_NAME,
            c"up-guardian".as_ptr() as libc::c_ulong,
            0,
            0,
            0,
        )
    };
}

/// The names of Linux's own signals, past the ones every Unix shares.
pub(crate) fn signal_name(number: i32) -> Option<&'static str> {
    match number {
        libc::SIGSTKFLT => Some("SIGSTKFLT"),
        libc::SIGPWR => Some("SIGPWR"),
        _ => None,
    }
}
/// The size of a transparent huge page on the platforms we run on.
const HUGE_PAGE: usize = 2 * 1024 * 1024;

/// Asks the kernel to back the spare capacity of `buf` with transparent huge pages where it
/// can (`MADV_HUGEPAGE`, on the 2 MiB-aligned part of it).
///
/// A large message's buffer is fresh memory, and filling 64 MiB of fresh 4 KiB pages takes
/// 16,384 page faults; with huge pages it takes 32, several times faster end to end. The
/// advice changes neither the contents nor the size of the buffer, and is only advice: on a
/// kernel without THP (or with it off), it fails quietly and nothing changes.
pub(crate) fn advise_huge_pages(buf: &mut Vec<u8>) {
    let spare = buf.spare_capacity_mut();
    let start = spare.as_mut_ptr() as usize;
    let end = start + spare.len();
    let first = start.next_multiple_of(HUGE_PAGE);
    let last = end - end % HUGE_PAGE;
    if last <= first {
        return;
    }
    // SAFETY: `first..last` lies inside the spare capacity of `buf`, memory this Vec owns and
    // that nothing else refers to; MADV_HUGEPAGE only changes how the kernel backs those pages
    // (never what they hold, nor whether they are mapped), so no Rust value is affected.
    unsafe {
        libc::madvise(
            first as *mut libc::c_void,
            last - first,
            libc::MADV_HUGEPAGE,
        );
    }
}
