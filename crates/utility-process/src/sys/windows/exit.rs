//! Telling a crash from a chosen exit code.
//!
//! A Windows process ends with one 32-bit number, whichever way it ends: the code it passed to
//! `ExitProcess` (or returned from `main`), the code another process passed to
//! `TerminateProcess` or `TerminateJobObject`, or — when an exception went unhandled — the
//! exception code, an `NTSTATUS`. There is no flag saying which. [`classify`] reads the
//! number as `NTSTATUS` layout suggests (ntstatus.h; "NTSTATUS Values",
//! learn.microsoft.com/openspecs/windows_protocols/ms-erref/596a1078-e883-4972-9bbc-49e60bebca55):
//!
//! - the two top bits `11` are "error" severity; with the customer bit (bit 29) clear, that is
//!   Microsoft's own status codes, `0xC000_0000..=0xDFFF_FFFF`: a crash;
//! - two customer codes that programs raise as exceptions are crashes too: `0xE06D_7363`
//!   (an unhandled C++ exception, "msc") and `0xE043_4352` (an unhandled .NET exception,
//!   "CCR");
//! - the "warning" exceptions that end a process when unhandled are crashes:
//!   `STATUS_BREAKPOINT` (`0x8000_0003`, a `__debugbreak` or `int3` with no debugger),
//!   `STATUS_SINGLE_STEP` and `STATUS_DATATYPE_MISALIGNMENT`;
//! - everything else is a code the program chose. That includes `exit(-1)`, which is
//!   `0xFFFF_FFFF` — customer bit set, so not read as a status.
//!
//! # What cannot be told apart
//!
//! - A program may exit with a status value on purpose (`exit(0xC0000005)`), or be terminated
//!   by someone else with one (`TerminateProcess(h, 0xC000013A)`): it reads as that crash.
//! - The C runtime's `abort()` ends with exit code 3 (after its own error report): it reads as
//!   a chosen `Code(3)`, the same as `exit(3)`.
//! - Rust's `std::process::abort`, a `panic = "abort"` panic, a failed allocation and a stack
//!   smash all end in `__fastfail`, which is `STATUS_STACK_BUFFER_OVERRUN` (`0xC000_0409`)
//!   whatever the fast-fail reason: we cannot say which.
//! - A `panic!` that unwinds out of `main` is not a crash at all: Rust exits with code 101.
//! - `STATUS_CONTROL_C_EXIT` is how a console process ends on Ctrl+C or a closed console: it
//!   is named as a crash here because, like a signal on Unix, it was not chosen by the program.
//!
//! The job's `JOB_OBJECT_LIMIT_DIE_ON_UNHANDLED_EXCEPTION` makes the exception code the exit
//! code at once, without Windows Error Reporting in between.

/// How a child ended, read from its exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    /// The program chose this code (or another process chose it for the program).
    Code(u32),
    /// An exception ended it; `name` is the status constant's name when we know it.
    Crash {
        /// The exception code (an `NTSTATUS`), which is also the exit code.
        status: u32,
        /// Its name, such as `"STATUS_ACCESS_VIOLATION"`, for the common ones.
        name: Option<&'static str>,
    },
}

/// Reads an exit code as a crash or a chosen code (see the module docs for the rules).
pub(crate) fn classify(code: u32) -> Exit {
    let name = status_name(code);
    let system_error = (0xC000_0000..=0xDFFF_FFFF).contains(&code);
    if system_error || name.is_some() {
        Exit::Crash { status: code, name }
    } else {
        Exit::Code(code)
    }
}

/// The name of a status that ends a process, for the common ones.
///
/// Values from ntstatus.h ("NTSTATUS Values", MS-ERREF 2.3.1).
fn status_name(code: u32) -> Option<&'static str> {
    Some(match code {
        0x8000_0002 => "STATUS_DATATYPE_MISALIGNMENT",
        0x8000_0003 => "STATUS_BREAKPOINT",
        0x8000_0004 => "STATUS_SINGLE_STEP",
        0xC000_0005 => "STATUS_ACCESS_VIOLATION",
        0xC000_0006 => "STATUS_IN_PAGE_ERROR",
        0xC000_0008 => "STATUS_INVALID_HANDLE",
        0xC000_0017 => "STATUS_NO_MEMORY",
        0xC000_001D => "STATUS_ILLEGAL_INSTRUCTION",
        0xC000_0025 => "STATUS_NONCONTINUABLE_EXCEPTION",
        0xC000_0026 => "STATUS_INVALID_DISPOSITION",
        0xC000_008C => "STATUS_ARRAY_BOUNDS_EXCEEDED",
        0xC000_008D => "STATUS_FLOAT_DENORMAL_OPERAND",
        0xC000_008E => "STATUS_FLOAT_DIVIDE_BY_ZERO",
        0xC000_008F => "STATUS_FLOAT_INEXACT_RESULT",
        0xC000_0090 => "STATUS_FLOAT_INVALID_OPERATION",
        0xC000_0091 => "STATUS_FLOAT_OVERFLOW",
        0xC000_0092 => "STATUS_FLOAT_STACK_CHECK",
        0xC000_0093 => "STATUS_FLOAT_UNDERFLOW",
        0xC000_0094 => "STATUS_INTEGER_DIVIDE_BY_ZERO",
        0xC000_0095 => "STATUS_INTEGER_OVERFLOW",
        0xC000_0096 => "STATUS_PRIVILEGED_INSTRUCTION",
        0xC000_00FD => "STATUS_STACK_OVERFLOW",
        0xC000_0135 => "STATUS_DLL_NOT_FOUND",
        0xC000_0139 => "STATUS_ENTRYPOINT_NOT_FOUND",
        0xC000_013A => "STATUS_CONTROL_C_EXIT",
        0xC000_0142 => "STATUS_DLL_INIT_FAILED",
        0xC000_0374 => "STATUS_HEAP_CORRUPTION",
        0xC000_0409 => "STATUS_STACK_BUFFER_OVERRUN",
        0xC000_041D => "STATUS_FATAL_USER_CALLBACK_EXCEPTION",
        0xC000_0420 => "STATUS_ASSERTION_FAILURE",
        0xC000_0602 => "STATUS_FAIL_FAST_EXCEPTION",
        0xE043_4352 => "CLR_EXCEPTION",
        0xE06D_7363 => "CPP_EXCEPTION",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chosen_codes_are_codes() {
        for code in [
            0,
            1,
            3,
            7,
            101,
            255,
            0x1234,
            259,
            0x7FFF_FFFF,
            0xFFFF_FFFF,
            0xFFFF_FFFE,
        ] {
            assert_eq!(classify(code), Exit::Code(code), "{code:#x}");
        }
    }

    #[test]
    fn common_crashes_are_named() {
        let cases = [
            (0xC000_0005, "STATUS_ACCESS_VIOLATION"),
            (0xC000_0409, "STATUS_STACK_BUFFER_OVERRUN"),
            (0xC000_00FD, "STATUS_STACK_OVERFLOW"),
            (0xC000_001D, "STATUS_ILLEGAL_INSTRUCTION"),
            (0xC000_0094, "STATUS_INTEGER_DIVIDE_BY_ZERO"),
            (0xC000_0374, "STATUS_HEAP_CORRUPTION"),
            (0xC000_013A, "STATUS_CONTROL_C_EXIT"),
            (0x8000_0003, "STATUS_BREAKPOINT"),
            (0xE06D_7363, "CPP_EXCEPTION"),
        ];
        for (status, name) in cases {
            assert_eq!(
                classify(status),
                Exit::Crash {
                    status,
                    name: Some(name)
                }
            );
        }
    }

    #[test]
    fn unknown_error_statuses_are_unnamed_crashes() {
        assert_eq!(
            classify(0xC0DE_0001),
            Exit::Crash {
                status: 0xC0DE_0001,
                name: None
            }
        );
    }
}
