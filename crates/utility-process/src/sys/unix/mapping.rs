//! A mapping of a whole shared buffer into this process, the same on every Unix (`mmap(2)`);
//! what differs — keeping it out of forks, advice for a new buffer, bulk population — is the
//! OS's `shm` module's.

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
    /// Maps `len` bytes of `fd`, shared, read-write or read-only; with `populate`, pre-faults
    /// the pages in bulk where the OS can (allocating them: for a buffer this process creates
    /// and is about to fill), see [`populate`](Self::populate).
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
        // picks, overlapping nothing Rust owns. The OS's `create` (owner) or `check`
        // (receiver) made sure the object holds at least `len` bytes and cannot shrink, so
        // no access within `len` faults.
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
        // SAFETY: the region just mapped, held by the value built below.
        unsafe { os::keep_from_forks(ptr, len) };
        let mapping = Mapping {
            ptr: NonNull::new(ptr.cast()).ok_or_else(|| io::Error::other("mmap returned null"))?,
            len,
            writable,
        };
        if populate {
            if writable {
                // SAFETY: as above.
                unsafe { os::advise_new(ptr, len) };
            }
            mapping.populate();
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
