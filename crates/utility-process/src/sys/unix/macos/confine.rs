//! What macOS offers for confinement, and what it does not.
//!
//! - **Resource limits**: `setrlimit(2)`, applied by the forked child before `execve` (see
//!   `process.rs`). macOS accepts `RLIMIT_AS` but does not enforce it (XNU checks no mapping
//!   against it), so a memory limit is reported unavailable rather than pretended.
//!   `RLIMIT_NPROC` does not bind root (XNU's `fork1` exempts uid 0).
//! - **Sandbox**: Seatbelt (`sandbox(7)`), applied by Apple's launcher
//!   `/usr/bin/sandbox-exec` (`sandbox-exec(1)`) before it execs the program: `posix_spawn`
//!   gives the parent no moment to run code in the child before its first instruction, and
//!   `sandbox_init(3)` is not async-signal-safe (it compiles the profile), so it cannot run
//!   between `fork` and `exec` either. `sandbox/seatbelt.rs` has the launcher's command line
//!   and the profile; `process.rs` starts the launcher in the program's place. Here: whether
//!   the launcher can be trusted ([`launcher_ready`]), and the child's question to the kernel
//!   ([`seatbelt_applied`]).
//! - **Reports**: no seccomp, so no denied-call reports (a Seatbelt denial is an error the
//!   call returns, `EPERM`, logged by the system as "Sandbox: … deny"); no enforced memory
//!   limit, so no out-of-memory reports. The report pipe still carries a refusal (`'F'`).
//!
//! Why this launcher rather than this library's own executable, re-entered through its
//! constructor to call `sandbox_init_with_parameters` and then `execve`: that call is private
//! API (`sandbox_init(3)` documents only named profiles), the executable that forks may not be
//! one that links the library's constructor at all (a `cdylib` loaded by Python or Node), and
//! the re-entered program would run its own constructors and load every library it links
//! before the sandbox is in place. sandbox-exec is a platform binary on the sealed system
//! volume (macOS 11 and later), which no one but Apple can change.

use std::io;
use std::path::Path;

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

/// Whether `path` is a launcher the parent may hand a sandbox to: a regular file, executable,
/// owned by root and writable by no one else (`stat(2)`). `/usr/bin/sandbox-exec` is so on
/// every macOS: it lives on the sealed, read-only system volume. A missing or replaced
/// launcher is refused (`Missing::Seatbelt`), never run.
pub(crate) fn launcher_ready(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(path) else {
        return false;
    };
    let mode = meta.mode();
    meta.is_file() && meta.uid() == 0 && mode & 0o111 != 0 && mode & 0o022 == 0
}

/// `SANDBOX_FILTER_NONE` of `enum sandbox_filter_type`: no filter argument follows.
const SANDBOX_FILTER_NONE: libc::c_int = 0;

extern "C" {
    /// `int sandbox_check(pid_t pid, const char *operation, enum sandbox_filter_type type,
    /// ...)`, exported by `libsystem_sandbox.dylib` (part of libSystem, which every program
    /// links). Apple does not document it; it is declared in WebKit's
    /// `Source/WTF/wtf/spi/darwin/SandboxSPI.h`, and with a NULL operation it answers
    /// whether `pid` is sandboxed at all: WebKit's `currentProcessIsSandboxed`
    /// (`Source/WebKit/Shared/mac/SandboxUtilities.mm`) and Chromium's
    /// `Seatbelt::IsSandboxed` (`sandbox/mac/seatbelt.cc`) ask exactly this.
    fn sandbox_check(
        pid: libc::pid_t,
        operation: *const libc::c_char,
        filter: libc::c_int,
        ...
    ) -> libc::c_int;
}

/// Whether a Seatbelt sandbox holds this process, as the kernel says: stage 2's check that
/// the launcher did its work.
pub(crate) fn seatbelt_applied() -> bool {
    // SAFETY: getpid has no preconditions; sandbox_check reads no operation (NULL) and, for
    // SANDBOX_FILTER_NONE, no variadic argument.
    unsafe { sandbox_check(libc::getpid(), std::ptr::null(), SANDBOX_FILTER_NONE) > 0 }
}
