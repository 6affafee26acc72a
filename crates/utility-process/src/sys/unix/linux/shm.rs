//! Shared memory: sealed memfds, mapped into each process that holds one.
//!
//! A buffer is a `memfd` whose size is sealed (`F_SEAL_SHRINK | F_SEAL_GROW`) from the start:
//! no holder can truncate it under another's mapping, which would turn the other's reads into
//! SIGBUS. Freezing a buffer removes its writable mapping and adds `F_SEAL_WRITE`: from then
//! on no process can change it, so a receiver may trust what it reads.
//!
//! Every mapping is `MADV_DONTFORK`: a fork made by this process (for a child, before its
//! exec, or for the guardian) does not copy it, so no other process ends up holding it.
//!
//! A received descriptor is checked before it is mapped: it must be a memfd (it answers
//! `F_GET_SEALS`), its size must be the announced one and sealed, and a buffer announced as
//! frozen must carry the write seal.
//!
//! # Populating in bulk
//!
//! Touching a fresh mapping page by page costs a fault per 4 KiB page (16,384 for 64 MiB;
//! shmem gets no huge pages while `/sys/kernel/mm/transparent_hugepage/shmem_enabled` says
//! `never`, and `MFD_HUGETLB` needs pages reserved by the administrator). [`populate`]
//! asks the kernel to fill the page table in one call instead (`MADV_POPULATE_WRITE` or
//! `_READ`, Linux 5.14); a kernel without them answers `EINVAL` and the mapping is simply
//! faulted in on use, as before. Measured on a 2-vCPU VM (Linux 6.18), 64 MiB: a fresh buffer
//! written by faults 15–27 ms, `MAP_POPULATE` then writing 19–21 ms (a shared mapping is
//! populated for reading, and the writes fault again), `MADV_POPULATE_WRITE` then writing
//! 13–16 ms; an allocated buffer read by faults 3.5–7 ms, `MADV_POPULATE_READ` then reading
//! 3.2 ms. `fallocate` before mapping bought nothing (the pages are zeroed at the first fault
//! anyway).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use crate::sys::unix::cvt;

/// Seals every buffer carries from birth.
const SIZE_SEALS: libc::c_int = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW;
/// Seals a frozen buffer adds.
const FROZEN_SEALS: libc::c_int = libc::F_SEAL_WRITE | libc::F_SEAL_SEAL;

/// A memfd of fixed size, sealed against resizing.
pub(crate) fn create(len: usize) -> io::Result<OwnedFd> {
    // SAFETY: memfd_create reads a NUL-terminated name and returns a new descriptor or -1.
    let raw = unsafe {
        libc::memfd_create(
            c"utility-process-buffer".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    };
    let raw = cvt(raw)?;
    // SAFETY: memfd_create succeeded: a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let size = libc::off_t::try_from(len)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "buffer too large"))?;
    // SAFETY: ftruncate and fcntl act on the descriptor we own.
    unsafe {
        cvt(libc::ftruncate(fd.as_raw_fd(), size))?;
        cvt(libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, SIZE_SEALS))?;
    }
    Ok(fd)
}

/// Makes a buffer immutable: adds the write seal (which needs every writable mapping gone).
/// The same descriptor comes back, now naming a buffer nobody can write.
pub(crate) fn freeze(fd: OwnedFd) -> io::Result<OwnedFd> {
    // SAFETY: F_ADD_SEALS on a descriptor we own.
    cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, FROZEN_SEALS) })?;
    Ok(fd)
}

/// Checks a received descriptor: a memfd of exactly `len` bytes, size sealed, and write-sealed
/// if `frozen`. Returns a reason for the protocol violation otherwise.
pub(crate) fn check(fd: BorrowedFd<'_>, len: u64, frozen: bool) -> Result<(), &'static str> {
    // SAFETY: F_GET_SEALS only reads; it fails on anything but a memfd (or shmem file).
    let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
    if seals < 0 {
        return Err("a shared buffer that is not a memfd");
    }
    if seals & SIZE_SEALS != SIZE_SEALS {
        return Err("a shared buffer whose size is not sealed");
    }
    if frozen && seals & libc::F_SEAL_WRITE == 0 {
        return Err("a read-only shared buffer that is not sealed against writes");
    }
    // SAFETY: fstat writes into the zeroed stat we own.
    let stat = unsafe {
        let mut stat: libc::stat = std::mem::zeroed();
        if libc::fstat(fd.as_raw_fd(), &mut stat) != 0 {
            return Err("a shared buffer that cannot be inspected");
        }
        stat
    };
    if u64::try_from(stat.st_size).ok() != Some(len) {
        return Err("a shared buffer whose size is not the announced one");
    }
    Ok(())
}

/// Which memory object a descriptor refers to: its device and inode numbers. Two descriptors
/// with the same identity, both open, refer to the same memory.
pub(crate) fn identity(fd: BorrowedFd<'_>) -> io::Result<(u64, u64)> {
    // SAFETY: fstat writes into the zeroed stat we own.
    let stat = unsafe {
        let mut stat: libc::stat = std::mem::zeroed();
        cvt(libc::fstat(fd.as_raw_fd(), &mut stat))?;
        stat
    };
    #[allow(clippy::useless_conversion)] // the field types differ between targets
    Ok((u64::from(stat.st_dev), u64::from(stat.st_ino)))
}

/// Keeps a mapping out of every process this one forks: a fork (of a child about to exec, or
/// of the guardian, which never does) would otherwise copy a writable mapping into a process
/// that keeps it, and the write seal of `freeze` would then fail with EBUSY for as long as
/// that process lives (`madvise(2)` `MADV_DONTFORK`).
///
/// # Safety
///
/// `ptr` and `len` are a mapping this process made and still holds.
pub(crate) unsafe fn keep_from_forks(ptr: *mut libc::c_void, len: usize) {
    // SAFETY: advice on a region the caller vouches for; it changes no byte of it.
    unsafe { libc::madvise(ptr, len, libc::MADV_DONTFORK) };
}

/// Advice for a new writable buffer about to be filled: where the system allows huge pages
/// for shmem only on request (`shmem_enabled` = `advise`), this asks for them (32
/// allocations for 64 MiB instead of 16,384). Elsewhere it changes nothing (measured:
/// `never` here).
///
/// # Safety
///
/// As [`keep_from_forks`].
pub(crate) unsafe fn advise_new(ptr: *mut libc::c_void, len: usize) {
    // SAFETY: advice on a region the caller vouches for; it changes no byte of it.
    unsafe { libc::madvise(ptr, len, libc::MADV_HUGEPAGE) };
}

/// Fills the page table of a whole mapping in one system call (allocating the pages the
/// memfd does not have yet), so that using it costs no page faults. Best effort: on a kernel
/// older than 5.14 (`EINVAL`), or without the memory, the pages are faulted in on use
/// instead. Returns whether the kernel did it.
///
/// # Safety
///
/// As [`keep_from_forks`].
pub(crate) unsafe fn populate(ptr: *mut libc::c_void, len: usize, writable: bool) -> bool {
    let advice = if writable {
        libc::MADV_POPULATE_WRITE
    } else {
        libc::MADV_POPULATE_READ
    };
    // SAFETY: advice on a region the caller vouches for. Populating changes no byte of it.
    unsafe { libc::madvise(ptr, len, advice) == 0 }
}
