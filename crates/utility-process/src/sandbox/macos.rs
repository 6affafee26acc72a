//! The macOS sandbox: not available yet, and refused rather than pretended.
//!
//! Seatbelt is the layer to build on: `sandbox_init(3)` (declared in `<sandbox.h>`, marked
//! deprecated since macOS 10.8 but still what Chromium's renderers use, through
//! `sandbox_init_with_parameters`) applies a Scheme-like profile (`sandbox(7)`), and a
//! sandbox survives `execve`. A deny-by-default profile (`(version 1) (deny default)`, then
//! `(allow ...)` for the allowed paths and `file-read*` of the dyld shared cache) would match
//! the Linux profile's intent. What is missing is the moment to apply it: `posix_spawn` runs
//! no code of ours in the child, and `sandbox_init` is not async-signal-safe, so it cannot
//! run between `fork` and `exec` either. The plan is a trusted launcher (this executable,
//! re-entered through the entry-point table) that applies the profile and then execs the
//! program. Until then [`prepare`](Sandbox::prepare) fails with [`Missing::Seatbelt`], best
//! effort or not, so a child that asked for a sandbox never runs unconfined.

use std::path::Path;

use super::{Enforcement, Missing, Policy, PrepareError, Sandbox, Support};

/// What macOS offers that this library can enforce: none of the Linux layers.
pub(super) fn support() -> Support {
    Support {
        seccomp: false,
        landlock_abi: 0,
    }
}

/// Stage 1 for one child: never built on macOS.
#[derive(Debug)]
pub(crate) struct Prepared {
    _private: (),
}

impl Sandbox {
    /// Refuses: see the module documentation.
    pub(crate) fn prepare(
        &self,
        _program: &Path,
        _memory_limited: bool,
    ) -> Result<Prepared, PrepareError> {
        Err(PrepareError::Missing(Missing::Seatbelt))
    }
}

/// Stage 2 in the child: a child is never started sandboxed on macOS, so a policy asking for
/// a sandbox means something went wrong; refuse to start (fail closed).
pub(super) fn apply_strict(_policy: &Policy) -> std::io::Result<Enforcement> {
    Err(std::io::Error::from_raw_os_error(libc::ENOSYS))
}
