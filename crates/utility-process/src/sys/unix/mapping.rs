//! A mapping of a whole shared buffer into this process, the same on every Unix (`mmap(2)`);
//! what differs — keeping it out of forks, where to place it, filling a new buffer in bulk,
//! populating a received one — is the OS's `shm` module's.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::NonNull;

use super::os::shm as os;

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
    /// Maps `len` bytes of `fd`, shared, read-write or read-only, where the OS wants it
    /// placed (a huge-page boundary on Linux, for buffers of 2 MiB or more); with
    /// `populate`, gives the pages their memory in bulk where the OS can: a writable mapping
    /// is a new buffer this process is about to fill (huge pages on Linux where the kernel
    /// makes them), a read-only one is populated as [`populate`](Self::populate) does.
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
        let ptr = map_shared(fd, len, prot, os::alignment(len))?;
        // SAFETY: the region just mapped, held by the value built below.
        unsafe { os::keep_from_forks(ptr, len) };
        let mapping = Mapping {
            ptr: NonNull::new(ptr.cast()).ok_or_else(|| io::Error::other("mmap returned null"))?,
            len,
            writable,
        };
        if populate {
            if writable {
                // SAFETY: the region this value maps, new and not yet handed to any caller.
                unsafe { os::populate_new(ptr, len) };
            } else {
                mapping.populate();
            }
        }
        Ok(mapping)
    }

    /// Fills the page table of the whole mapping in one system call where the OS can, so
    /// that using it costs no page faults; otherwise the pages fault in on use. Returns
    /// whether the kernel did it.
    pub(crate) fn populate(&self) -> bool {
        if self.len == 0 {
            return true;
        }
        // SAFETY: the region this value maps.
        unsafe { os::populate(self.ptr.as_ptr().cast(), self.len, self.writable) }
    }

    /// The bytes.
    pub(crate) fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` is a live mapping of `len` readable bytes (or dangling with len 0);
        // writes through other mappings are the shared-memory contract the callers document,
        // and bytes are valid for any value.
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
            // SAFETY: unmapping exactly the region `new` mapped, once, which nothing borrows
            // any more.
            unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
        }
    }
}

/// Maps `len` (> 0) bytes of `fd`, shared, at an address the kernel picks, or at a multiple of
/// `align` when it is above 1 (a power of two, a multiple of the page size): `len + align`
/// bytes of address space are reserved (no memory), the buffer is mapped over the first
/// aligned address inside them, and the rest is given back.
fn map_shared(
    fd: BorrowedFd<'_>,
    len: usize,
    prot: libc::c_int,
    align: usize,
) -> io::Result<*mut libc::c_void> {
    let fd = fd.as_raw_fd();
    if align <= 1 {
        // SAFETY: a fresh shared mapping of a descriptor we borrow, at an address the kernel
        // picks, overlapping nothing Rust owns. The OS's `create` (owner) or `check`
        // (receiver) made sure the object holds at least `len` bytes and cannot shrink, so no
        // access within `len` faults.
        let ptr = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, libc::MAP_SHARED, fd, 0) };
        return if ptr == libc::MAP_FAILED {
            Err(io::Error::last_os_error())
        } else {
            Ok(ptr)
        };
    }
    let too_large = || io::Error::new(io::ErrorKind::InvalidInput, "buffer too large");
    let span = len.checked_add(align).ok_or_else(too_large)?;
    // SAFETY: an anonymous, inaccessible reservation at an address the kernel picks: it
    // overlaps nothing Rust owns and commits no memory.
    let reserved = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            span,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if reserved == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    let base = reserved as usize;
    let start = base.next_multiple_of(align);
    // SAFETY: `start..start + len` lies inside the reservation just made, which only this
    // function knows of; MAP_FIXED replaces that part of it. The object holds `len` bytes,
    // as above.
    let ptr = unsafe {
        libc::mmap(
            start as *mut libc::c_void,
            len,
            prot,
            libc::MAP_SHARED | libc::MAP_FIXED,
            fd,
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        let error = io::Error::last_os_error();
        // SAFETY: the whole reservation, made above and referred to by nothing.
        unsafe { libc::munmap(reserved, span) };
        return Err(error);
    }
    let page = super::page_size();
    let end = (start + len).next_multiple_of(page);
    let reserved_end = (base + span).next_multiple_of(page);
    // SAFETY: the parts of the reservation before and after the buffer's mapping: page
    // aligned (the reservation and `start` are), still inaccessible, and referred to by
    // nothing.
    unsafe {
        if start > base {
            libc::munmap(reserved, start - base);
        }
        if reserved_end > end {
            libc::munmap(end as *mut libc::c_void, reserved_end - end);
        }
    }
    Ok(ptr)
}
