//! Shared buffers on Windows, fitted to the contract of `sys/mod.rs` ("shared memory"):
//! pagefile-backed sections (`section.rs`).
//!
//! # What a frozen buffer guarantees here
//!
//! Freezing replaces the buffer's handle with one that can only map it read-only (and closes
//! the writable one): the receiver of a frozen buffer cannot write it, which `check` verifies
//! by trying. Windows has no seal: the receiver cannot verify that the *sender* kept no
//! writable handle or view of its own. So a buffer that another process ever had writable
//! (it arrived writable, or a pool lent it) is never frozen here (`freeze` refuses it), and a
//! buffer frozen by this library in the parent keeps the promise; one that a child says is
//! frozen is read-only to the parent, but the child may still change it, so the parent must
//! copy (or re-check) what it trusts.
//!
//! A `BufferPool` recognises a section that comes back by `CompareObjectHandles`
//! ([`Identity`]).

use std::io;
use std::os::windows::io::{AsRawHandle, BorrowedHandle, OwnedHandle};

use windows_sys::Win32::Foundation::CompareObjectHandles;

use super::mapping::Mapping;
use super::section::{self, Access};

/// A new unnamed section of `len` bytes (at least one: Windows has no empty section).
pub(crate) fn create(len: usize) -> io::Result<OwnedHandle> {
    section::create(len.max(1))
}

/// The buffer's handle, replaced by one that maps it read-only. A buffer that another
/// process had writable (`shared`) is refused: that process may have kept a writable handle
/// or view, and Windows has no seal to take its access back.
pub(crate) fn freeze(handle: OwnedHandle, shared: bool) -> io::Result<OwnedHandle> {
    if shared {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "another process had this buffer writable, and Windows has no seal to stop it \
             writing: freeze a new buffer instead",
        ));
    }
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

/// A section's identity, for `BufferPool`: a handle of our own to it. Windows gives a
/// section no number to recognise it by, but the kernel tells whether two handles refer to
/// the same object (`CompareObjectHandles`, Windows 10 1607, learn.microsoft.com/windows/
/// win32/api/handleapi/nf-handleapi-compareobjecthandles), so two identities are equal when
/// their handles are. A peer cannot forge one: the handles it sends are duplicated by the
/// kernel from objects it really holds.
#[derive(Debug)]
pub(crate) struct Identity(OwnedHandle);

impl PartialEq for Identity {
    fn eq(&self, other: &Identity) -> bool {
        // SAFETY: both handles are open for the duration of the call (owned by the
        // identities); the call only reads them.
        unsafe { CompareObjectHandles(self.0.as_raw_handle(), other.0.as_raw_handle()) != 0 }
    }
}

/// What object `handle` refers to: a handle of our own to it (no access rights: comparing
/// needs none, and it cannot map the section).
pub(crate) fn identity(handle: BorrowedHandle<'_>) -> io::Result<Identity> {
    super::handle::duplicate_as(handle, Some(0)).map(Identity)
}

/// Which of the `parked` buffers (their identities and mappings) is the section of `handle`,
/// a buffer that has just come back mapped at `_back`: the one the kernel says is the same
/// object.
pub(crate) fn recognise<'a>(
    handle: BorrowedHandle<'_>,
    _back: &mut Mapping,
    mut parked: impl Iterator<Item = (&'a Identity, &'a Mapping)>,
) -> Option<usize> {
    let identity = identity(handle).ok()?;
    parked.position(|(parked, _)| *parked == identity)
}
