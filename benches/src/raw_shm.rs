//! The shared-memory floor (`floor.shared.first.64mib`): a new 64 MiB buffer handed to another
//! process and read there, with nothing but system calls — what the OS allows for the
//! library's `SharedBuffer` first-use row, measured in the same run and placement.
//!
//! Per buffer, timed together, as the library's row does it: the parent makes a memfd of
//! 64 MiB, maps it on a 2 MiB boundary, gives it huge pages the way the library does (first
//! byte of each 2 MiB, `MADV_COLLAPSE`, then `MADV_POPULATE_WRITE`), fills it with a memset
//! and unmaps it; it sends the descriptor over a socket pair (`SCM_RIGHTS`, with the length);
//! the child maps it read-only on a 2 MiB boundary, populates it (`MADV_POPULATE_READ`),
//! sums every byte as 64-bit words, unmaps and closes it, and writes the sum back. No seal,
//! no envelope, no pool, no check of what arrives: only the work that cannot be skipped.
//!
//! If this floor is as slow as the library's row in a placement, the time goes to the
//! machine (allocating, zeroing and touching fresh memory), not to the library.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::Instant;

use crate::{sample, Ctx, Result};

/// The buffer's size.
const SIZE: usize = 64 << 20;
/// A huge page: the alignment of every mapping, and the unit of the collapse.
const HUGE: usize = 2 << 20;
/// `MADV_COLLAPSE` (Linux 6.1, `include/uapi/asm-generic/mman-common.h`).
const MADV_COLLAPSE: libc::c_int = 25;

/// The parent's side: one buffer per sample, bytes per second end to end.
pub fn first_use(ctx: &Ctx, mut to_child: UnixStream) -> Result<Vec<f64>> {
    let mut byte = 0u8;
    sample(ctx, 1, || {
        byte = byte.wrapping_add(1);
        let started = Instant::now();
        let fd = memfd(SIZE)?;
        let map = map_aligned(&fd, true)?;
        // SAFETY: `map` is a fresh writable mapping of SIZE bytes that only this function
        // uses; touching, advising and filling it changes only the memfd's contents.
        unsafe {
            for offset in (0..SIZE).step_by(HUGE) {
                map.add(offset).write_volatile(0);
            }
            libc::madvise(map.cast(), SIZE, MADV_COLLAPSE);
            libc::madvise(map.cast(), SIZE, libc::MADV_POPULATE_WRITE);
            std::ptr::write_bytes(map, byte, SIZE);
            libc::munmap(map.cast(), SIZE);
        }
        send_fd(&to_child, &fd)?;
        drop(fd);
        let mut sum = [0u8; 8];
        to_child.read_exact(&mut sum)?;
        let expected = u64::from_le_bytes([byte; 8]).wrapping_mul((SIZE / 8) as u64);
        if u64::from_le_bytes(sum) != expected {
            return Err("the raw reader summed something else".into());
        }
        Ok(SIZE as f64 / started.elapsed().as_secs_f64())
    })
}

/// The child's side: maps, reads and answers every buffer that comes, until end-of-file.
pub fn reader(mut from_parent: UnixStream) -> Result<()> {
    while let Some(fd) = recv_fd(&from_parent)? {
        let map = map_aligned(&fd, false)?;
        // SAFETY: a fresh read-only mapping of SIZE bytes of a memfd of SIZE bytes that the
        // parent no longer writes; unmapped once, after the last read.
        let sum = unsafe {
            libc::madvise(map.cast(), SIZE, libc::MADV_POPULATE_READ);
            let words = std::slice::from_raw_parts(map.cast::<u64>(), SIZE / 8);
            let sum = words.iter().fold(0u64, |sum, &word| sum.wrapping_add(word));
            libc::munmap(map.cast(), SIZE);
            sum
        };
        drop(fd);
        from_parent.write_all(&sum.to_le_bytes())?;
    }
    Ok(())
}

/// A memfd of `len` bytes.
fn memfd(len: usize) -> Result<OwnedFd> {
    // SAFETY: a NUL-terminated name and flags; returns a new descriptor or -1.
    let raw = unsafe { libc::memfd_create(c"floor".as_ptr(), libc::MFD_CLOEXEC) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    // SAFETY: memfd_create just returned this descriptor for us alone.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: ftruncate on the descriptor we own.
    if unsafe { libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(fd)
}

/// Maps all SIZE bytes of `fd`, shared, at a 2 MiB boundary: SIZE + 2 MiB of address space
/// reserved, the memfd mapped over its aligned start, the rest given back.
fn map_aligned(fd: &OwnedFd, writable: bool) -> Result<*mut u8> {
    let prot = if writable {
        libc::PROT_READ | libc::PROT_WRITE
    } else {
        libc::PROT_READ
    };
    // SAFETY: an anonymous inaccessible reservation at an address the kernel picks; then the
    // memfd mapped with MAP_FIXED over the aligned part of that reservation, which nothing
    // else refers to. Both results are checked.
    unsafe {
        let reserved = libc::mmap(
            std::ptr::null_mut(),
            SIZE + HUGE,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        );
        if reserved == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error().into());
        }
        let start = (reserved as usize).next_multiple_of(HUGE);
        let map = libc::mmap(
            start as *mut libc::c_void,
            SIZE,
            prot,
            libc::MAP_SHARED | libc::MAP_FIXED,
            fd.as_raw_fd(),
            0,
        );
        if map == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error().into());
        }
        // What is left of the reservation around the mapping, so address space does not pile
        // up over the samples.
        if start > reserved as usize {
            libc::munmap(reserved, start - reserved as usize);
        }
        let end = start + SIZE;
        let reserved_end = reserved as usize + SIZE + HUGE;
        if reserved_end > end {
            libc::munmap(end as *mut libc::c_void, reserved_end - end);
        }
        Ok(map.cast())
    }
}

/// Sends `fd` over `socket` (`SCM_RIGHTS`, one byte of data).
fn send_fd(socket: &UnixStream, fd: &OwnedFd) -> Result<()> {
    let mut data = [1u8];
    let mut iov = one_byte(&mut data);
    let mut control = vec![0u8; fd_space()];
    let msg = message(&mut iov, &mut control);
    // SAFETY: the control buffer holds one header and one int (`fd_space`); the header and
    // its data are written inside it; sendmsg reads the message we built.
    unsafe {
        let header = libc::CMSG_FIRSTHDR(&msg);
        (*header).cmsg_level = libc::SOL_SOCKET;
        (*header).cmsg_type = libc::SCM_RIGHTS;
        (*header).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<libc::c_int>() as u32) as usize;
        libc::CMSG_DATA(header)
            .cast::<libc::c_int>()
            .write_unaligned(fd.as_raw_fd());
        if libc::sendmsg(socket.as_raw_fd(), &msg, 0) != 1 {
            return Err(std::io::Error::last_os_error().into());
        }
    }
    Ok(())
}

/// Receives one descriptor sent by [`send_fd`]; `None` at end-of-file.
fn recv_fd(socket: &UnixStream) -> Result<Option<OwnedFd>> {
    let mut data = [0u8];
    let mut iov = one_byte(&mut data);
    let mut control = vec![0u8; fd_space()];
    let mut msg = message(&mut iov, &mut control);
    // SAFETY: recvmsg writes at most one byte and `fd_space()` bytes of control data into
    // buffers we own; the header is read only if the kernel filled one in.
    unsafe {
        let n = libc::recvmsg(socket.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC);
        if n < 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        if n == 0 {
            return Ok(None);
        }
        let header = libc::CMSG_FIRSTHDR(&msg);
        if header.is_null() || (*header).cmsg_type != libc::SCM_RIGHTS {
            return Err("the raw floor's parent sent no descriptor".into());
        }
        let raw = libc::CMSG_DATA(header)
            .cast::<libc::c_int>()
            .read_unaligned();
        Ok(Some(OwnedFd::from_raw_fd(raw)))
    }
}

/// The one byte of data that carries a descriptor.
fn one_byte(data: &mut [u8; 1]) -> libc::iovec {
    libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: 1,
    }
}

/// Room for one descriptor's control message.
fn fd_space() -> usize {
    // SAFETY: CMSG_SPACE of one int: a constant computation.
    unsafe { libc::CMSG_SPACE(std::mem::size_of::<libc::c_int>() as u32) as usize }
}

/// A message of `iov` with `control` as its control buffer; both outlive its use.
fn message(iov: &mut libc::iovec, control: &mut [u8]) -> libc::msghdr {
    // SAFETY: msghdr is plain data; all-zero is valid before the fields are set below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = control.len();
    msg
}
