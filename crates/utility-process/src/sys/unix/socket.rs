//! Unix stream sockets: one pair per port.
//!
//! Every socket is created close-on-exec; the spawn code hands the child its end explicitly.
//! Sends use `MSG_NOSIGNAL | MSG_DONTWAIT`, so a dead peer is an `EPIPE` error rather than a
//! SIGPIPE, and a full socket is `WouldBlock` whether or not the descriptor is non-blocking.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::{cvt, retry};

/// A connected pair of `AF_UNIX` stream sockets, both close-on-exec and blocking.
pub(crate) fn socketpair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [-1; 2];
    // SAFETY: `fds` is a valid array of two ints for socketpair to fill.
    cvt(unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    })?;
    // SAFETY: socketpair succeeded: two fresh descriptors that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Sends as much of `buf` as the socket takes now, without blocking and without SIGPIPE.
pub(crate) fn send(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
    retry(|| {
        // SAFETY: `buf` is valid for reads of `buf.len()` bytes for the whole call.
        let n = unsafe {
            libc::send(
                fd.as_raw_fd(),
                buf.as_ptr().cast(),
                buf.len(),
                libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    })
}

/// Receives into the spare capacity of `buf` (at most `max` bytes), without blocking, and
/// extends its length by what arrived. `Ok(0)` is end-of-file.
pub(crate) fn recv_into(fd: BorrowedFd<'_>, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
    let spare: &mut [MaybeUninit<u8>] = buf.spare_capacity_mut();
    let len = spare.len().min(max);
    let n = retry(|| {
        // SAFETY: `spare` is valid for writes of `len` bytes; recv writes at most that many.
        let n = unsafe {
            libc::recv(
                fd.as_raw_fd(),
                spare.as_mut_ptr().cast(),
                len,
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    })?;
    // SAFETY: recv initialised the first `n` bytes of the spare capacity (n <= len <= spare).
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

/// Shuts both directions of a socket down: the peer reads end-of-file, our reads end too.
pub(crate) fn shutdown(fd: BorrowedFd<'_>) {
    // SAFETY: shutdown only changes the state of the socket we borrow. Its error (ENOTCONN
    // when the peer is already gone) means there is nothing left to shut down.
    unsafe { libc::shutdown(fd.as_raw_fd(), libc::SHUT_RDWR) };
}

/// Whether `fd` is a Unix stream socket: what a port must be.
pub(crate) fn is_stream_socket(fd: BorrowedFd<'_>) -> bool {
    let mut ty: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    let mut domain: libc::c_int = 0;
    let mut dlen = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len`/`dlen` bytes into the ints we pass.
    unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TYPE,
            (&mut ty as *mut libc::c_int).cast(),
            &mut len,
        ) == 0
            && libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_DOMAIN,
                (&mut domain as *mut libc::c_int).cast(),
                &mut dlen,
            ) == 0
            && ty == libc::SOCK_STREAM
            && domain == libc::AF_UNIX
    }
}
