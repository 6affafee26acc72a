//! What only Unix has: signals, and the extension traits that use them, as
//! `std::os::unix::process::ExitStatusExt` does for `std`.
//!
//! The rest of the API is the same on every OS; these are the parts that have no meaning
//! elsewhere (Windows ends a process with an exit code only).
//!
//! ```
//! use utility_process::unix::{ExitStatusExt, Signal, UtilityProcessExt};
//! use utility_process::{fork, Event, ForkOptions};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), utility_process::Error> {
//! let mut child = fork("sleep", ["10"], ForkOptions::default())?;
//! assert!(child.signal(Signal::SIGTERM));
//! while let Some(event) = child.next_event().await {
//!     assert!(!matches!(event, Event::Error(_)), "asked for: no error");
//!     if let Event::Exit(status) = event {
//!         assert_eq!(status.signal(), Some(Signal::SIGTERM));
//!         assert!(!status.core_dumped());
//!     }
//! }
//! # Ok(())
//! # }
//! ```

use std::fmt;

use crate::{ExitStatus, UtilityProcess};

/// A signal number, shown with its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signal(i32);

impl Signal {
    /// SIGTERM: the polite request to end, sent first by `kill()`.
    pub const SIGTERM: Signal = Signal(libc::SIGTERM);
    /// SIGKILL: sent after the grace period, and to every process left in a child's group.
    pub const SIGKILL: Signal = Signal(libc::SIGKILL);
    /// SIGSEGV: an invalid memory access.
    pub const SIGSEGV: Signal = Signal(libc::SIGSEGV);
    /// SIGABRT: `abort()`, and a Rust panic with `panic = "abort"`.
    pub const SIGABRT: Signal = Signal(libc::SIGABRT);

    /// The signal with this number.
    pub fn from_raw(number: i32) -> Signal {
        Signal(number)
    }

    /// The signal's number.
    pub fn as_raw(self) -> i32 {
        self.0
    }

    /// The signal's name, such as `"SIGSEGV"`, or `None` for a number without one.
    pub fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            libc::SIGHUP => "SIGHUP",
            libc::SIGINT => "SIGINT",
            libc::SIGQUIT => "SIGQUIT",
            libc::SIGILL => "SIGILL",
            libc::SIGTRAP => "SIGTRAP",
            libc::SIGABRT => "SIGABRT",
            libc::SIGBUS => "SIGBUS",
            libc::SIGFPE => "SIGFPE",
            libc::SIGKILL => "SIGKILL",
            libc::SIGUSR1 => "SIGUSR1",
            libc::SIGSEGV => "SIGSEGV",
            libc::SIGUSR2 => "SIGUSR2",
            libc::SIGPIPE => "SIGPIPE",
            libc::SIGALRM => "SIGALRM",
            libc::SIGTERM => "SIGTERM",
            libc::SIGCHLD => "SIGCHLD",
            libc::SIGCONT => "SIGCONT",
            libc::SIGSTOP => "SIGSTOP",
            libc::SIGTSTP => "SIGTSTP",
            libc::SIGTTIN => "SIGTTIN",
            libc::SIGTTOU => "SIGTTOU",
            libc::SIGURG => "SIGURG",
            libc::SIGXCPU => "SIGXCPU",
            libc::SIGXFSZ => "SIGXFSZ",
            libc::SIGVTALRM => "SIGVTALRM",
            libc::SIGPROF => "SIGPROF",
            libc::SIGWINCH => "SIGWINCH",
            libc::SIGIO => "SIGIO",
            libc::SIGSYS => "SIGSYS",
            other => return crate::sys::signal_name(other),
        })
    }
}

impl PartialEq<i32> for Signal {
    fn eq(&self, other: &i32) -> bool {
        self.0 == *other
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name} ({})", self.0),
            None => write!(f, "signal {}", self.0),
        }
    }
}

/// Unix-specific parts of [`ExitStatus`].
///
/// This trait is sealed: it cannot be implemented outside this crate.
pub trait ExitStatusExt: sealed::Sealed {
    /// The signal that ended the child, if a signal did.
    fn signal(&self) -> Option<Signal>;
    /// Whether the kernel wrote a core dump when a signal ended the child.
    fn core_dumped(&self) -> bool;
}

impl ExitStatusExt for ExitStatus {
    fn signal(&self) -> Option<Signal> {
        self.unix_signal()
    }

    fn core_dumped(&self) -> bool {
        self.unix_core_dumped()
    }
}

/// Unix-specific parts of [`UtilityProcess`].
///
/// This trait is sealed: it cannot be implemented outside this crate.
pub trait UtilityProcessExt: sealed::Sealed {
    /// Sends `signal` to the child, through its pidfd on Linux (never to a recycled pid).
    /// Returns `false` when the child has already ended or the signal could not be sent. An
    /// end by a signal sent this way is not reported as a crash.
    fn signal(&self, signal: Signal) -> bool;
}

impl UtilityProcessExt for UtilityProcess {
    fn signal(&self, signal: Signal) -> bool {
        self.send_signal(signal)
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for crate::ExitStatus {}
    impl Sealed for crate::UtilityProcess {}
}
