//! Unix stream sockets: one pair per port.
//!
//! Every socket is created close-on-exec; the spawn code hands the child its end explicitly.
//! Sends never block (`MSG_DONTWAIT`), so a full socket is `WouldBlock` whether or not the
//! descriptor is non-blocking, and never raise SIGPIPE, so a dead peer is an `EPIPE` error.
//!
//! # Platform-specific behavior
//!
//! Linux creates the pair close-on-exec (`SOCK_CLOEXEC`), sends with `MSG_NOSIGNAL`, and
//! receives descriptors close-on-exec (`MSG_CMSG_CLOEXEC`), each atomically. macOS has none of
//! the three: the OS module sets `FD_CLOEXEC` and `SO_NOSIGPIPE` right after `socketpair` and
//! right after `recvmsg` (see `macos/mod.rs` for the window this leaves, and why the library's
//! own spawns do not see it).

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::{cvt, retry};

/// The send buffer asked for on each end of a pair (the kernel doubles it for its own
/// bookkeeping and caps it at `net.core.wmem_max`).
///
/// The default (about 208 KiB) makes a large message cross in some 300 rounds of "write until
/// full, wake the reader, wait": with 1 MiB, a 64 KiB stream and a 64 MiB message go two to
/// four times faster (measured on a 2-vCPU VM, see the README). It is a ceiling, not an
/// allocation: an idle socket holds nothing.
const SEND_BUFFER: libc::c_int = 1024 * 1024;

/// A connected pair of `AF_UNIX` stream sockets, both close-on-exec and blocking, each with a
/// send buffer of [`SEND_BUFFER`].
pub(crate) fn socketpair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [-1; 2];
    // SAFETY: `fds` is a valid array of two ints for socketpair to fill.
    cvt(unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | super::os::SOCKET_FLAGS,
            0,
            fds.as_mut_ptr(),
        )
    })?;
    // SAFETY: socketpair succeeded: two fresh descriptors that nothing else owns.
    let pair = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    for fd in [&pair.0, &pair.1] {
        // SAFETY: setsockopt reads one int from the pointer we pass, of the size we pass.
        // Failure only leaves the kernel's default size, so it is ignored.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_SNDBUF,
                (&SEND_BUFFER as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        super::os::after_socketpair(fd.as_fd())?;
    }
    Ok(pair)
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
                super::os::SEND_FLAGS,
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    })
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
    // SAFETY: getsockopt writes at most `len` bytes into the int we pass.
    let typed = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TYPE,
            (&mut ty as *mut libc::c_int).cast(),
            &mut len,
        )
    } == 0;
    typed && ty == libc::SOCK_STREAM && super::os::is_unix_domain(fd)
}

/// The most descriptors one `sendmsg` may carry: the kernel's `SCM_MAX_FD`.
pub(crate) const MAX_FDS: usize = 253;

/// Bytes of control buffer for [`MAX_FDS`] descriptors.
// SAFETY: CMSG_SPACE only computes a size from its argument.
const CMSG_ROOM: usize =
    unsafe { libc::CMSG_SPACE((MAX_FDS * std::mem::size_of::<libc::c_int>()) as u32) } as usize;

/// A control-message buffer aligned as `cmsghdr` requires.
#[repr(C, align(8))]
struct CmsgBuffer([u8; CMSG_ROOM]);

/// Sends as much of `buf` as the socket takes now, with `fds` attached to its first byte
/// (`SCM_RIGHTS`); without blocking and without SIGPIPE. At most [`MAX_FDS`] descriptors.
pub(crate) fn send_with_fds(
    fd: BorrowedFd<'_>,
    buf: &[u8],
    fds: &[BorrowedFd<'_>],
) -> io::Result<usize> {
    if fds.is_empty() {
        return send(fd, buf);
    }
    if fds.len() > MAX_FDS || buf.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "descriptors must travel with 1 to 253 of them and at least one byte",
        ));
    }
    let mut control = CmsgBuffer([0; CMSG_ROOM]);
    let data_len = std::mem::size_of_val(fds) as u32;
    let mut iov = libc::iovec {
        iov_base: buf.as_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    retry(|| {
        // SAFETY: `msg` points at one iovec over `buf` (read-only for sendmsg) and at a control
        // buffer of CMSG_SPACE(data_len) <= CMSG_ROOM bytes, aligned for cmsghdr; the header
        // and the descriptor array are written inside that buffer through CMSG_FIRSTHDR and
        // CMSG_DATA, which stay within `msg_controllen`. The descriptors are borrowed, so
        // they are open for the whole call.
        let n = unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.0.as_mut_ptr().cast();
            msg.msg_controllen = libc::CMSG_SPACE(data_len) as _;
            let header = libc::CMSG_FIRSTHDR(&msg);
            (*header).cmsg_level = libc::SOL_SOCKET;
            (*header).cmsg_type = libc::SCM_RIGHTS;
            (*header).cmsg_len = libc::CMSG_LEN(data_len) as _;
            let data = libc::CMSG_DATA(header).cast::<libc::c_int>();
            for (i, fd) in fds.iter().enumerate() {
                data.add(i).write_unaligned(fd.as_raw_fd());
            }
            libc::sendmsg(fd.as_raw_fd(), &msg, super::os::SEND_FLAGS)
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    })
}

/// What [`recv_with_fds`] received.
#[derive(Debug)]
pub(crate) struct Received {
    /// Bytes appended to the buffer; 0 is end-of-file.
    pub bytes: usize,
    /// The control message was cut short (`MSG_CTRUNC`): descriptors were lost.
    pub truncated: bool,
}

/// Receives into the spare capacity of `buf` (at most `max` bytes), without blocking,
/// appending any descriptors that came with the bytes to `fds` (close-on-exec, as
/// `MSG_CMSG_CLOEXEC` delivers them).
pub(crate) fn recv_with_fds(
    fd: BorrowedFd<'_>,
    buf: &mut Vec<u8>,
    max: usize,
    fds: &mut Vec<OwnedFd>,
) -> io::Result<Received> {
    let spare: &mut [MaybeUninit<u8>] = buf.spare_capacity_mut();
    let mut iov = libc::iovec {
        iov_base: spare.as_mut_ptr().cast(),
        iov_len: spare.len().min(max),
    };
    let first_new = fds.len();
    let mut control = CmsgBuffer([0; CMSG_ROOM]);
    let (n, flags, controllen) = retry(|| {
        // SAFETY: `msg` points at one iovec over the spare capacity of `buf` (valid for writes
        // of its length) and at our aligned control buffer of CMSG_ROOM bytes; recvmsg
        // writes within both and reports the lengths it used.
        unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.0.as_mut_ptr().cast();
            msg.msg_controllen = CMSG_ROOM as _;
            let n = libc::recvmsg(fd.as_raw_fd(), &mut msg, super::os::RECV_FLAGS);
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok((n as usize, msg.msg_flags, msg.msg_controllen))
            }
        }
    })?;
    // SAFETY: recvmsg initialised the first `n` bytes of the spare capacity.
    unsafe { buf.set_len(buf.len() + n) };
    // SAFETY: we walk the control messages the kernel wrote, within the `controllen` bytes it
    // reported, with the CMSG macros; each SCM_RIGHTS payload is an array of descriptors that
    // the kernel has just installed in this process for us alone, so wrapping each in an
    // OwnedFd is sound (and closes them if we drop them).
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_control = control.0.as_mut_ptr().cast();
        msg.msg_controllen = controllen;
        let mut header = libc::CMSG_FIRSTHDR(&msg);
        while !header.is_null() {
            if (*header).cmsg_level == libc::SOL_SOCKET && (*header).cmsg_type == libc::SCM_RIGHTS {
                let payload = (*header).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let data = libc::CMSG_DATA(header).cast::<libc::c_int>();
                for i in 0..payload / std::mem::size_of::<libc::c_int>() {
                    fds.push(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                }
            }
            header = libc::CMSG_NXTHDR(&msg, header);
        }
    }
    for received in &fds[first_new..] {
        super::os::after_recv(received.as_fd())?;
    }
    Ok(Received {
        bytes: n,
        truncated: flags & libc::MSG_CTRUNC != 0,
    })
}
