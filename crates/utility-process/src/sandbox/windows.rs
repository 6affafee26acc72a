//! The Windows sandbox: not available yet, and refused rather than pretended.
//!
//! What it will build on is Chromium's: a restricted token at low integrity (or an
//! AppContainer with no capabilities) for the child's first thread, and the job object's UI
//! limits. Until then the Windows `launch` (`sys/windows/child.rs`) refuses a sandbox with
//! `Missing::WindowsToken`, best effort or not, so a child that asked for one never runs
//! unconfined; nothing here is prepared or applied.

use super::Support;

/// What Windows offers that this library can enforce: none of the Linux layers.
pub(super) fn support() -> Support {
    Support {
        seccomp: false,
        landlock_abi: 0,
    }
}
