//! [`Error`]: what the supervisor's calls can fail with, and [`AttachError`] for the child's
//! side.

use utility_process::Message;

use crate::event::{ExitReason, GiveUpReason};
use crate::output::OutputTail;

/// An error from a [`Supervisor`](crate::Supervisor) call.
///
/// # Examples
///
/// ```
/// use utility_process_supervisor::{Error, Supervisor, SupervisorOptions};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let supervisor = Supervisor::new(SupervisorOptions::default());
/// supervisor.shutdown().await;
/// let late = supervisor.post_bytes("gone", b"hi".to_vec()).await.unwrap_err();
/// assert_eq!(late.to_string(), "the supervisor has no service named \"gone\"");
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Occurs when a child is added under a service name the supervisor already has.
    #[error("the supervisor already has a service named {service:?}")]
    DuplicateService {
        /// The name.
        service: String,
    },
    /// Occurs when a call names a service the supervisor does not have (never added, or no
    /// longer supervised: not restarted, or its first start failed).
    #[error("the supervisor has no service named {service:?}")]
    UnknownService {
        /// The name.
        service: String,
    },
    /// Occurs when a service's first start fails: it could not be spawned, ended, or did not
    /// say ready within its start timeout. The service is not supervised.
    #[error("{service} failed to start: {reason}")]
    StartFailed {
        /// The service.
        service: String,
        /// What happened.
        reason: ExitReason,
        /// The last bytes the child wrote on its piped stdout and stderr, often the best
        /// explanation (see [`ChildSpec::output_tail`](crate::ChildSpec::output_tail)).
        output: OutputTail,
    },
    /// Occurs when a message is posted to a service that is between two lives (restarting),
    /// or that ended before the message could be handed to it.
    #[error(
        "{service} is not running (it is being restarted or has ended); the message was not sent"
    )]
    NotRunning {
        /// The service.
        service: String,
    },
    /// Occurs when posting fails in the core (the message is too large, the child's queue is
    /// full, the value cannot be encoded, the child has just exited).
    #[error("posting to {service}: {source}")]
    Post {
        /// The service.
        service: String,
        /// The core's error.
        source: Box<utility_process::Error>,
    },
    /// Occurs when the supervisor has given up (restart intensity) and takes no new work.
    #[error("the supervisor gave up: {0}")]
    GaveUp(GiveUpReason),
    /// Occurs when the supervisor is shutting down or shut down.
    #[error("the supervisor is shut down")]
    ShutDown,
    /// Occurs when a supervisor is used outside a tokio runtime.
    #[error("the supervisor needs a tokio runtime (with time enabled) to run its children")]
    NoRuntime,
}

/// An error from [`child::attach`](crate::child::attach).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AttachError {
    /// Occurs when the program was not started by `utility_process::fork` at all.
    #[error(transparent)]
    NotAUtilityProcess(#[from] utility_process::Error),
    /// Occurs when the parent closed the port before sending anything: the process was
    /// started by `fork` but the parent is gone.
    #[error("the parent closed the port before the supervisor's first message")]
    ParentGone,
    /// Occurs when the first message is not the supervisor's: the process was started by
    /// `fork`, but not by a [`Supervisor`](crate::Supervisor) (or by one of another version).
    /// The message is handed back, unread.
    #[error("the first message from the parent is not from a supervisor{}", version_note(*.version))]
    NotSupervised {
        /// The message that came first.
        first: Message,
        /// The control protocol version it announced, if it came from a supervisor of
        /// another version.
        version: Option<u32>,
    },
    /// Occurs when [`attach`](crate::child::attach) is called outside a tokio runtime: the
    /// heartbeat is answered by a task on the child's own runtime.
    #[error("attach must be called from inside a tokio runtime (the heartbeat runs on it)")]
    NoRuntime,
}

fn version_note(version: Option<u32>) -> String {
    match version {
        Some(v) => format!(
            " of this version (it speaks control protocol {v}, this child {})",
            crate::protocol::VERSION
        ),
        None => String::new(),
    }
}
