//! Shared buffers on Windows, fitted to the contract of `sys/mod.rs` ("shared memory"):
//! pagefile-backed sections (`section.rs`).
//!
//! # What a frozen buffer guarantees here
//!
//! Freezing replaces the buffer's handle with one that can only map it read-only (and closes
//! the writable one): the receiver of a frozen buffer cannot write it, which `check` verifies
//! by trying. Windows has no seal: the receiver cannot verify that the *sender* kept no
//! writable handle or view of its own. A buffer frozen by this library in the parent keeps
//! that promise; one that a child says is frozen is read-only to the parent, but the child may
//! still change it, so the parent must copy (or re-check) what it trusts.

use std::io;
use std::os::windows::io::{BorrowedHandle, OwnedHandle};

use super::section::{self, Access};

/// A new unnamed section of `len` bytes (at least one: Windows has no empty section).
pub(crate) fn create(len: usize) -> io::Result<OwnedHandle> {
    section::create(len.max(1))
}

/// The buffer's handle, replaced by one that maps it read-only.
pub(crate) fn freeze(handle: OwnedHandle) -> io::Result<OwnedHandle> {
    section::freeze(handle)
}

/// Checks a received handle before it is mapped: a section of at least `len` bytes, and, if
/// `frozen`, one that cannot be mapped writable. Returns a reason for the protocol violation
/// otherwise.
pub(crate) fn check(
    handle: BorrowedHandle<'_>,
    len: u64,
    frozen: bool,
) -> Result<(), &'static str> {
    let len =
        usize::try_from(len).map_err(|_| "a shared buffer larger than this process can map")?;
    match section::check(handle, len.max(1)) {
        Err(_) => Err("a shared buffer that is not a section of the announced size"),
        Ok(Access::ReadWrite) if frozen => {
            Err("a read-only shared buffer whose handle can map it writable")
        }
        Ok(_) => Ok(()),
    }
}

/// What would tell two buffers apart: not asked of Windows yet (`CompareObjectHandles` is
/// the call), so a `BufferPool` is refused here, as on macOS.
pub(crate) fn identity(_handle: BorrowedHandle<'_>) -> io::Result<(u64, u64)> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "buffer pools are not available on Windows yet",
    ))
}
