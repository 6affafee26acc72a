//! Registering descriptors with a tokio runtime.
//!
//! tokio's `AsyncFd` trusts its caller to keep the descriptor open for the registration's
//! whole life. [`SharedFd`] makes that hold by construction: the registration owns a
//! reference to the descriptor, which therefore cannot close before the registration ends.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::Arc;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// A descriptor shared by its owner and its runtime registrations.
#[derive(Debug, Clone)]
pub(crate) struct SharedFd(Arc<OwnedFd>);

impl SharedFd {
    pub(crate) fn new(fd: OwnedFd) -> SharedFd {
        SharedFd(Arc::new(fd))
    }
}

impl AsRawFd for SharedFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

impl AsFd for SharedFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

/// Registers `fd` with the current tokio runtime for `interest`.
///
/// # Errors
///
/// An error, rather than tokio's panic, when called outside a tokio runtime; and the
/// runtime's error if the registration fails.
pub(crate) fn register(fd: &SharedFd, interest: Interest) -> io::Result<AsyncFd<SharedFd>> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(io::Error::other(
            "utility-process must be awaited within a tokio runtime (or use the blocking calls)",
        ));
    }
    // SAFETY: the AsyncFd owns a clone of the Arc holding the OwnedFd, so the descriptor stays
    // open, naming the same open file description, for as long as the AsyncFd exists; and
    // `SharedFd::as_raw_fd` always returns that same number.
    unsafe { AsyncFd::register_with_interest(fd.clone(), interest) }.map_err(|e| e.into_parts().1)
}
