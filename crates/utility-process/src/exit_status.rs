//! How a child ended: [`ExitStatus`], the same type on every OS, with each OS's own detail
//! behind its extension trait.

use std::fmt;

use crate::sys::process::RawExit;

/// How a child ended: an exit code it chose, or an end it did not choose (on Unix a signal,
/// on Windows an exception such as an access violation), never both.
///
/// What only one OS has is in its extension trait (each exists on its own OS only):
/// `utility_process::unix::ExitStatusExt` for the signal and the core dump,
/// `utility_process::windows::ExitStatusExt` for the exception's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitStatus {
    code: Option<i32>,
    #[cfg(unix)]
    signal: Option<crate::unix::Signal>,
    #[cfg(unix)]
    core_dumped: bool,
    /// The NTSTATUS of the exception that ended the child.
    #[cfg(windows)]
    crash: Option<u32>,
}

impl ExitStatus {
    /// An exit with `code`, for tests that need a status without a process.
    #[cfg(test)]
    pub(crate) fn from_code(code: i32) -> ExitStatus {
        #[cfg(unix)]
        let raw = RawExit::Code(code);
        #[cfg(windows)]
        let raw = code as RawExit;
        ExitStatus::from_raw(Some(raw))
    }

    /// The status the OS reported; `None` when it was lost (on Unix, when something else
    /// reaped the child).
    #[cfg(unix)]
    pub(crate) fn from_raw(raw: Option<RawExit>) -> ExitStatus {
        let (code, signal, core_dumped) = match raw {
            Some(RawExit::Code(code)) => (Some(code), None, false),
            Some(RawExit::Signal {
                signal,
                core_dumped,
            }) => (
                None,
                Some(crate::unix::Signal::from_raw(signal)),
                core_dumped,
            ),
            None => (None, None, false),
        };
        ExitStatus {
            code,
            signal,
            core_dumped,
        }
    }

    /// The status the OS reported: an exception's status is a crash, anything else a code.
    #[cfg(windows)]
    pub(crate) fn from_raw(raw: Option<RawExit>) -> ExitStatus {
        use crate::sys::process::{classify, Exit};
        match raw.map(classify) {
            Some(Exit::Code(code)) => ExitStatus {
                code: Some(code as i32),
                crash: None,
            },
            Some(Exit::Crash { status, .. }) => ExitStatus {
                code: None,
                crash: Some(status),
            },
            None => ExitStatus {
                code: None,
                crash: None,
            },
        }
    }

    /// The exit code, if the child exited (returned from `main`, or called `exit`).
    pub fn code(&self) -> Option<i32> {
        self.code
    }

    /// Whether the child exited with code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// See `unix::ExitStatusExt::signal`.
    #[cfg(unix)]
    pub(crate) fn unix_signal(&self) -> Option<crate::unix::Signal> {
        self.signal
    }

    /// See `unix::ExitStatusExt::core_dumped`.
    #[cfg(unix)]
    pub(crate) fn unix_core_dumped(&self) -> bool {
        self.core_dumped
    }

    /// See `windows::ExitStatusExt::exception`.
    #[cfg(windows)]
    pub(crate) fn windows_crash(&self) -> Option<u32> {
        self.crash
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(code) = self.code {
            return write!(f, "exit code {code}");
        }
        #[cfg(unix)]
        match self.signal {
            Some(signal) if self.core_dumped => write!(f, "killed by {signal} (core dumped)"),
            Some(signal) => write!(f, "killed by {signal}"),
            // Only when something else reaped the child (SIGCHLD set to SIG_IGN).
            None => f.write_str("unknown (the child was reaped by someone else)"),
        }
        #[cfg(windows)]
        match self
            .crash
            .map(|status| (status, crate::sys::process::classify(status)))
        {
            Some((
                status,
                crate::sys::process::Exit::Crash {
                    name: Some(name), ..
                },
            )) => {
                write!(f, "ended by {name} ({status:#010X})")
            }
            Some((status, _)) => write!(f, "ended by exception {status:#010X}"),
            None => f.write_str("unknown"),
        }
    }
}
