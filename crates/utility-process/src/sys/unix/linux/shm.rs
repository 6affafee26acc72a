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
//! `never`, and `MFD_HUGETLB` needs pages reserved by the administrator). [`Mapping::populate`]
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
use std::ptr::NonNull;

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
pub(crate) fn freeze(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: F_ADD_SEALS on a borrowed descriptor.
    cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, FROZEN_SEALS) }).map(drop)
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

/// A mapping of a whole buffer into this process.
#[derive(Debug)]
pub(crate) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
    writable: bool,
}

// SAFETY: the mapping is plain memory owned by this value; sharing it between threads is as
// safe as sharing a `Box<[u8]>` (mutable access needs `&mut Mapping`).
unsafe impl Send for Mapping {}
// SAFETY: as above: `&Mapping` only gives out `&[u8]`.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `len` bytes of `fd`, read-write or read-only; with `populate`, pre-faults the
    /// pages in bulk (allocating them: for a buffer this process creates and is about to
    /// fill), see [`populate`](Self::populate).
    pub(crate) fn new(
        fd: BorrowedFd<'_>,
        len: usize,
        writable: bool,
        populate: bool,
    ) -> io::Result<Mapping> {
        if len == 0 {
            return Ok(Mapping {
                ptr: NonNull::dangling(),
                len: 0,
                writable,
            });
        }
        let prot = if writable {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        // SAFETY: a fresh shared mapping of a descriptor we borrow, at an address the kernel
        // picks; the descriptor's size is sealed at >= len, so no access within len faults.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // A fork (of a child about to exec, or of the guardian, which never does) would
        // otherwise copy a writable mapping into a process that keeps it, and the write seal
        // of `freeze` would then fail with EBUSY for as long as that process lives.
        // SAFETY: advice on the region we just mapped.
        unsafe { libc::madvise(ptr, len, libc::MADV_DONTFORK) };
        let mapping = Mapping {
            ptr: NonNull::new(ptr.cast()).ok_or_else(|| io::Error::other("mmap returned null"))?,
            len,
            writable,
        };
        if populate {
            if writable {
                // Where the system allows huge pages for shmem only on request
                // (`shmem_enabled` = `advise`), this asks for them: 32 allocations for 64 MiB
                // instead of 16,384. Elsewhere it changes nothing (measured: `never` here).
                // SAFETY: advice on the region we just mapped; it changes no byte of it.
                unsafe { libc::madvise(ptr, len, libc::MADV_HUGEPAGE) };
            }
            mapping.populate();
        }
        Ok(mapping)
    }

    /// Fills the page table of the whole mapping in one system call (allocating the pages the
    /// memfd does not have yet), so that using it costs no page faults. Best effort: on a
    /// kernel older than 5.14 (`EINVAL`), or without the memory, the pages are faulted in on
    /// use instead. Returns whether the kernel did it.
    pub(crate) fn populate(&self) -> bool {
        if self.len == 0 {
            return true;
        }
        let advice = if self.writable {
            libc::MADV_POPULATE_WRITE
        } else {
            libc::MADV_POPULATE_READ
        };
        // SAFETY: advice on the region this value maps. Populating changes no byte of it.
        unsafe { libc::madvise(self.ptr.as_ptr().cast(), self.len, advice) == 0 }
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` is a live mapping of `len` readable bytes (or dangling with len 0).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The bytes, writable; `None` for a read-only mapping.
    pub(crate) fn as_mut_slice(&mut self) -> Option<&mut [u8]> {
        if !self.writable {
            return None;
        }
        // SAFETY: a live writable mapping of `len` bytes, borrowed mutably through `self`.
        Some(unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: unmapping exactly the region `new` mapped, once.
            unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
        }
    }
}
