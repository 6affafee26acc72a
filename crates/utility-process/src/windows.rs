//! What only Windows has: the exception that ended a child, as `std::os::windows` keeps
//! Windows' own parts of `std`.
//!
//! A Windows child that crashes (an access violation, a stack overflow, Rust's `abort`,
//! which ends in `__fastfail`) ends with an NTSTATUS error code instead of an exit code it
//! chose: [`ExitStatus::code`](crate::ExitStatus::code) is `None` then, and this trait gives
//! the status.

use crate::ExitStatus;

/// Windows-specific parts of [`ExitStatus`].
///
/// This trait is sealed: it cannot be implemented outside this crate.
pub trait ExitStatusExt: sealed::Sealed {
    /// The NTSTATUS of the exception that ended the child (`0xC0000005` for an access
    /// violation), if one did.
    fn exception(&self) -> Option<u32>;
}

impl ExitStatusExt for ExitStatus {
    fn exception(&self) -> Option<u32> {
        self.windows_crash()
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for crate::ExitStatus {}
}
