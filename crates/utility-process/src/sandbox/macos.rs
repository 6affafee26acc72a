//! The macOS sandbox: Seatbelt, applied by Apple's launcher before the program's first
//! instruction (stage 1), and confirmed by the child's library before `main` (stage 2).
//!
//! - **Stage 1, in the parent** ([`Sandbox::prepare`]): the launcher must be there (a
//!   root-owned executable at `/usr/bin/sandbox-exec`; otherwise [`Missing::Seatbelt`], best
//!   effort or not: without it there is no sandbox at all), every path is made canonical, and
//!   the deny-by-default profile is written (`seatbelt.rs` says what it allows and why). The
//!   child then starts as `sandbox-exec -p <profile> -- <program> <args…>`
//!   (`sys/unix/macos/process.rs`): the sandbox binds the program's loader and every
//!   constructor, and every process it may start.
//! - **Stage 2, in a child built with this library** ([`apply_strict`]): there is nothing
//!   left to narrow (Seatbelt cannot be loosened or stacked from inside), so the child asks
//!   the kernel whether it is sandboxed (`sandbox_check`) and refuses to start if not; its
//!   handshake then confirms the sandbox, and [`status`](super::status) reports it. A launcher
//!   that ran the program unconfined would be caught here, for a program that links this
//!   library; as on Linux, what the sandbox promises rests on stage 1 alone.

use std::ffi::CString;
use std::path::Path;

use super::seatbelt::{self, Profile};
use super::{Enforcement, Missing, Policy, PrepareError, Sandbox, Support};
use crate::sys::confine as sys;

/// What macOS offers that this library can enforce: none of the Linux layers (Seatbelt is
/// what [`Sandbox::prepare`] uses; it needs no kernel feature check).
pub(super) fn support() -> Support {
    Support {
        seccomp: false,
        landlock_abi: 0,
    }
}

/// Stage 1 for one child, ready for its launch.
#[derive(Debug)]
pub(crate) struct Prepared {
    /// The profile's text, for `sandbox-exec -p`.
    profile: CString,
}

impl Prepared {
    /// What to start instead of `program` (and its `argv`, whose first word, the service
    /// name, sandbox-exec replaces by the program's path): the launcher and its `argv`.
    pub(crate) fn launcher(&self, program: &CString, argv: &[CString]) -> (CString, Vec<CString>) {
        seatbelt::launcher(&self.profile, program, argv.get(1..).unwrap_or(&[]))
    }
}

impl Sandbox {
    /// Checks for the launcher, and writes the profile for a fork of `program` (its resolved
    /// path).
    pub(crate) fn prepare(
        &self,
        program: &Path,
        _memory_limited: bool,
    ) -> Result<Prepared, PrepareError> {
        // Without the launcher nothing confines the child: refused even as best effort, as a
        // Linux kernel without seccomp is.
        if !sys::launcher_ready(Path::new(seatbelt::SANDBOX_EXEC)) {
            return Err(PrepareError::Missing(Missing::Seatbelt));
        }
        let canonical = |paths: &[std::path::PathBuf]| {
            paths
                .iter()
                .map(|p| seatbelt::canonical(p))
                .collect::<std::io::Result<Vec<_>>>()
        };
        let program = seatbelt::canonical(program).map_err(PrepareError::Io)?;
        let interpreter = match script_head(&program).as_deref().and_then(seatbelt::shebang) {
            Some(interpreter) => Some(seatbelt::canonical(&interpreter).map_err(PrepareError::Io)?),
            None => None,
        };
        let profile = Profile {
            program,
            interpreter,
            read: canonical(&self.read).map_err(PrepareError::Io)?,
            write: canonical(&self.write).map_err(PrepareError::Io)?,
            exec: canonical(&self.exec).map_err(PrepareError::Io)?,
            network: self.network,
        };
        let text = profile
            .text()
            .map_err(|e| PrepareError::Io(std::io::Error::from(e)))?;
        // `quote` refuses every control character, NUL included, and the rest of the text is
        // the library's own: no NUL can be in it.
        let profile = CString::new(text).map_err(|e| PrepareError::Io(std::io::Error::other(e)))?;
        Ok(Prepared { profile })
    }
}

/// The first bytes of `program`, to look for a `#!` line; `None` if it cannot be read.
fn script_head(program: &Path) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut head = vec![0u8; 256];
    let n = std::fs::File::open(program).ok()?.read(&mut head).ok()?;
    head.truncate(n);
    Some(head)
}

/// Stage 2 in the child: Seatbelt is already in place (the launcher applied it before the
/// program's first instruction, and nothing can loosen it), so the child only makes sure of
/// it. Not sandboxed means the launch went wrong: refuse to start (fail closed).
pub(super) fn apply_strict(policy: &Policy) -> std::io::Result<Enforcement> {
    if !sys::seatbelt_applied() {
        return Err(std::io::Error::from_raw_os_error(libc::ENOTSUP));
    }
    Ok(Enforcement {
        seatbelt: true,
        filesystem: true,
        tcp: !policy.network,
        signals: true,
        ..Enforcement::default()
    })
}
