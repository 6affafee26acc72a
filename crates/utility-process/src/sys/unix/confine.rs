//! The report pipe, and the constructor that runs a child's stage 2 before `main`: what a
//! confined child shares with its parent on every Unix. The kernel-specific layers (Landlock
//! and seccomp on Linux, Seatbelt on macOS) are in the OS module, re-exported from here.
//!
//! # The report pipe
//!
//! A confined child holds one more descriptor than the others: fd 4, the write end of a pipe
//! whose read end the parent's watcher reads. What writes into it uses nothing but
//! `write(2)` (async-signal-safe) and never blocks (the pipe is non-blocking on the child's
//! side: a report that does not fit is dropped, never waited for). The reports: `'S'` and a
//! system-call number (a call the seccomp filter denied, Linux), `'M'` (an abort caused by a
//! failed allocation under the memory limit, Linux), and `'F'` and an errno (the child's
//! library could not apply its stage 2, and exits).

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use crate::{Backend, Limit, Limits};

pub(crate) use super::os::confine::*;

/// The child's end of the report pipe.
pub(crate) const REPORT_FD: RawFd = 4;

/// The report of a denied system call: this byte, then the number.
pub(crate) const REPORT_SYSCALL: u8 = b'S';
/// The report of an abort caused by a failed allocation.
pub(crate) const REPORT_OUT_OF_MEMORY: u8 = b'M';

/// Writes `bytes` to the report pipe, keeping `errno` as it was.
///
/// # Safety
///
/// Async-signal-safe: callable from a signal handler.
pub(crate) unsafe fn report(bytes: &[u8]) {
    // SAFETY: errno is this thread's; write reads `bytes`, alive for the call, into a pipe
    // that never blocks. A failed write (pipe full, or closed) is ignored.
    unsafe {
        let errno = *super::os::errno_location();
        libc::write(REPORT_FD, bytes.as_ptr().cast(), bytes.len());
        *super::os::errno_location() = errno;
    }
}

/// Reads what the child reported so far, without blocking; `Ok(0)` at end of file.
pub(crate) fn read_reports(fd: std::os::fd::BorrowedFd<'_>, into: &mut [u8]) -> io::Result<usize> {
    // SAFETY: writes at most `into.len()` bytes into `into`.
    let n = unsafe { libc::read(fd.as_raw_fd(), into.as_mut_ptr().cast(), into.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// The report of a child whose library could not apply its sandbox or limits: this byte,
/// then the errno (4 bytes, little endian).
pub(crate) const REPORT_REFUSED: u8 = b'F';

/// Tells the parent that stage 2 failed with `errno` (the child exits next).
pub(crate) fn report_refusal(errno: i32) {
    let mut bytes = [REPORT_REFUSED, 0, 0, 0, 0];
    bytes[1..].copy_from_slice(&errno.to_le_bytes());
    // SAFETY: `report` is safe to call anywhere; fd 4 is the report pipe (or, if the
    // parent did not place one, the write fails harmlessly with EBADF).
    unsafe { report(&bytes) };
}

/// Ends the process at once, with no destructor or atexit handler.
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: _exit has no preconditions and does not return.
    unsafe { libc::_exit(code) }
}

/// Runs stage 2 of the sandbox before `main` in every program that links this library (a
/// no-op unless the parent asked for it), as C constructors run: from the ELF `.init_array`
/// on Linux, and from Mach-O's `__DATA,__mod_init_func` section on macOS (the section dyld
/// runs initializers from: Apple's "Mach-O Programming Topics", and `<mach-o/loader.h>`'s
/// `S_MOD_INIT_FUNC_POINTERS`). `parent_port` and `init` refer to it, so that the linker
/// keeps it.
#[used]
#[cfg_attr(target_os = "linux", link_section = ".init_array")]
#[cfg_attr(target_os = "macos", link_section = "__DATA,__mod_init_func")]
pub(crate) static APPLY_BEFORE_MAIN: extern "C" fn() = apply_before_main;

extern "C" fn apply_before_main() {
    // A panic must not unwind out of a constructor: treat it as a failure to apply.
    if std::panic::catch_unwind(crate::sandbox::apply_at_start).is_err() {
        report_refusal(libc::EIO);
        exit_now(127);
    }
}

/// Makes the code that calls it refer to [`APPLY_BEFORE_MAIN`], so that a linker that drops
/// unreferenced object files keeps the constructor in every program that uses the library.
pub(crate) fn keep_constructor() {
    std::hint::black_box(&APPLY_BEFORE_MAIN);
}

/// What enforces `limit` on this machine (see `Limits::backend`): an rlimit, unless the OS
/// module says it cannot.
pub(crate) fn backend(limit: Limit) -> Backend {
    match limit {
        Limit::Memory => match super::os::confine::ADDRESS_SPACE_LIMIT {
            Ok(rlimit) => Backend::Rlimit(rlimit),
            Err(why) => Backend::Unavailable(why),
        },
        Limit::CpuTime => Backend::Rlimit("RLIMIT_CPU"),
        Limit::OpenFiles => Backend::Rlimit("RLIMIT_NOFILE"),
        Limit::FileSize => Backend::Rlimit("RLIMIT_FSIZE"),
        Limit::Processes => match super::os::confine::process_limit_unavailable() {
            Some(why) => Backend::Unavailable(why),
            None => Backend::Rlimit("RLIMIT_NPROC"),
        },
    }
}

/// The limits that are set, with their values as `setrlimit` takes them.
pub(crate) fn rlimits(limits: &Limits) -> Vec<(Limit, super::RlimitResource, libc::rlimit)> {
    let same = |value: u64| libc::rlimit {
        rlim_cur: value,
        rlim_max: value,
    };
    let mut out = Vec::new();
    if let Some(bytes) = limits.memory {
        out.push((Limit::Memory, libc::RLIMIT_AS, same(bytes)));
    }
    if let Some(time) = limits.cpu_time {
        // Whole seconds, at least one; the hard limit one second later turns a child that
        // ignores SIGXCPU into a SIGKILLed one.
        let seconds = (time.as_secs() + u64::from(time.subsec_nanos() > 0)).max(1);
        out.push((
            Limit::CpuTime,
            libc::RLIMIT_CPU,
            libc::rlimit {
                rlim_cur: seconds,
                rlim_max: seconds + 1,
            },
        ));
    }
    if let Some(count) = limits.open_files {
        out.push((Limit::OpenFiles, libc::RLIMIT_NOFILE, same(count)));
    }
    if let Some(count) = limits.processes {
        out.push((Limit::Processes, libc::RLIMIT_NPROC, same(count)));
    }
    if let Some(bytes) = limits.file_size {
        out.push((Limit::FileSize, libc::RLIMIT_FSIZE, same(bytes)));
    }
    out
}
