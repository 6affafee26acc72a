//! What macOS offers for confinement, and what it does not.
//!
//! - **Resource limits**: `setrlimit(2)`, applied by the forked child before `execve` (see
//!   `process.rs`). macOS accepts `RLIMIT_AS` but does not enforce it (XNU checks no mapping
//!   against it), so a memory limit is reported unavailable rather than pretended.
//!   `RLIMIT_NPROC` does not bind root (XNU's `fork1` exempts uid 0).
//! - **Sandbox**: Seatbelt (`sandbox_init(3)`, `sandbox(7)`) is how Chromium confines its
//!   renderers, with a deny-by-default profile the child applies to itself. `posix_spawn`
//!   gives the parent no moment to run code in the child before its first instruction, and
//!   `sandbox_init` is not async-signal-safe (it compiles the profile), so it cannot run
//!   between `fork` and `exec` either: the sound way is a small trusted launcher (this
//!   library's own executable, re-entered) that applies the profile and then `execve`s the
//!   program, which inherits the sandbox. That launcher is not written yet, so a sandbox is
//!   refused on macOS (`Error::Unenforceable`, see `sandbox/macos.rs`): fail closed.
//! - **Reports**: no seccomp, so no denied-call reports; no enforced memory limit, so no
//!   out-of-memory reports. The report pipe still carries a refusal (`'F'`).

use std::io;

use crate::sys::unix::confine::REPORT_FD;

/// The address-space limit: unavailable. `setrlimit(2)` accepts `RLIMIT_AS` on macOS, but
/// the kernel does not enforce it.
pub(crate) const ADDRESS_SPACE_LIMIT: Result<&str, &str> = Err(
    "macOS accepts RLIMIT_AS but does not enforce it, and no other per-process memory \
         limit is public API",
);

/// Why `RLIMIT_NPROC` would not bind a child of this process, if it would not: XNU does not
/// apply it to root.
pub(crate) fn process_limit_unavailable() -> Option<&'static str> {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    root.then_some("RLIMIT_NPROC does not bind a process running as root on macOS")
}

/// Takes the report pipe at fd 4 (close-on-exec and non-blocking from now on, so that a
/// program this child may exec does not inherit it and a full pipe never blocks a writer).
/// No signal handler is installed: macOS has no seccomp to report, and no enforced memory
/// limit whose failure to report.
pub(crate) fn install_reporters(_memory_limited: bool) -> io::Result<()> {
    // SAFETY: fd 4 is the report pipe the parent placed there for this child; we only change
    // its flags (fcntl(2)).
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(REPORT_FD) };
    crate::sys::unix::set_cloexec(fd, true)?;
    crate::sys::unix::set_nonblocking(fd, true)
}
