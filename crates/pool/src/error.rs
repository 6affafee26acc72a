//! What can go wrong: [`TaskError`] for a task, [`StartFailure`] for a worker that never
//! became ready, [`BuildError`] for a pool that cannot be built.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use utility_process::ExitStatus;

/// Why a task did not produce its reply. Every task ends exactly once: with its reply, or
/// with one of these.
///
/// # Examples
///
/// What to do with each, in a caller:
///
/// ```
/// use utility_process_pool::{Stop, TaskError};
///
/// fn worth_retrying(error: &TaskError) -> bool {
///     match error {
///         // The worker died under the task: maybe the task, maybe the machine — unless it
///         // chose to exit.
///         TaskError::WorkerCrashed(crash) => crash.status.code().is_none(),
///         // Back-pressure or a busy pool: try again later.
///         TaskError::QueueFull { .. } | TaskError::QueueTimeout { .. } => true,
///         // The task itself is the problem, or the caller gave up, or the pool is going.
///         TaskError::Poisoned { .. } | TaskError::Failed { .. } | TaskError::Cancelled { .. } => false,
///         TaskError::RunTimeout { stop: Stop::Killed { .. }, .. } => false,
///         _ => false,
///     }
/// }
/// # let _ = worth_retrying;
/// ```
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum TaskError {
    /// Occurs when the queue holds [`PoolBuilder::queue_capacity`] tasks and the pool was
    /// built with [`WhenFull::Reject`]. The task was never queued.
    ///
    /// [`PoolBuilder::queue_capacity`]: crate::PoolBuilder::queue_capacity
    /// [`WhenFull::Reject`]: crate::WhenFull::Reject
    #[error("{service_name}: the task queue is full ({capacity} tasks waiting)")]
    QueueFull {
        /// The pool's service name.
        service_name: String,
        /// How many tasks the queue holds.
        capacity: usize,
    },

    /// Occurs when a task is submitted after [`Pool::close`](crate::Pool::close) began.
    #[error("{service_name}: the pool is closed")]
    Closed {
        /// The pool's service name.
        service_name: String,
    },

    /// Occurs when the request cannot be encoded (its `Serialize` implementation failed).
    /// Nothing was queued.
    #[error("cannot encode the request")]
    Encode(#[source] Arc<utility_process_wire::Error>),

    /// Occurs when the worker's reply does not decode as the pool's reply type. The worker
    /// is unaffected.
    #[error("{service_name} (pid {pid}): cannot decode the reply")]
    Decode {
        /// The worker's service name.
        service_name: String,
        /// The worker's pid.
        pid: u32,
        /// The decoder's reason.
        #[source]
        source: Arc<utility_process_wire::Error>,
    },

    /// Occurs when the worker's handler returned an error. The worker is unaffected.
    #[error("{service_name} (pid {pid}): the task failed: {message}")]
    Failed {
        /// The worker's service name.
        service_name: String,
        /// The worker's pid.
        pid: u32,
        /// The handler's error, as text (at most 4 KiB).
        message: String,
    },

    /// Occurs when the worker cannot decode the request as its handler's request type: the
    /// pool and the worker disagree on the type.
    #[error("{service_name} (pid {pid}) cannot decode the request: {message}")]
    BadRequest {
        /// The worker's service name.
        service_name: String,
        /// The worker's pid.
        pid: u32,
        /// The worker's decoder's reason.
        message: String,
    },

    /// Occurs when the task could not be handed to its worker: the worker had just ended,
    /// or the request is larger than the fork options' maximum message size, or the worker
    /// stopped reading and its queue is full.
    #[error("cannot send the task to {service_name} (pid {pid})")]
    Send {
        /// The worker's service name.
        service_name: String,
        /// The worker's pid.
        pid: u32,
        /// The core's reason.
        #[source]
        source: Arc<utility_process::Error>,
    },

    /// Occurs when the worker running the task ended (crash, panic, exit, protocol breach,
    /// or a kill because another task on it ignored its cancellation) before it answered,
    /// and the task may not be retried (see
    /// [`RunOptions::retries`](crate::RunOptions::retries)). Only the tasks on that worker
    /// fail; the worker is replaced.
    #[error("{0}")]
    WorkerCrashed(Box<Crash>),

    /// Occurs when the task has crashed its worker as many times as
    /// [`PoolBuilder::poison_after`](crate::PoolBuilder::poison_after) allows: it is failed
    /// rather than retried again.
    #[error("the task is poison: it crashed {crashes} workers; the last: {last}")]
    Poisoned {
        /// How many workers it crashed.
        crashes: u32,
        /// The last crash.
        last: Box<Crash>,
    },

    /// Occurs when the task waited in the queue longer than its queue deadline. It never
    /// ran.
    #[error("the task waited {waited:?} in the queue, its queue deadline is {limit:?}")]
    QueueTimeout {
        /// The queue deadline.
        limit: Duration,
        /// How long it waited.
        waited: Duration,
    },

    /// Occurs when the task ran longer than its run deadline. `stop` says how the worker
    /// was stopped.
    #[error("the task ran {ran:?}, its run deadline is {limit:?}; {stop}")]
    RunTimeout {
        /// The run deadline.
        limit: Duration,
        /// How long it waited in the queue first.
        waited: Duration,
        /// How long it ran.
        ran: Duration,
        /// How the running task was stopped.
        stop: Stop,
    },

    /// Occurs when the task took longer, queue and run together, than its total deadline.
    #[error("the task took {:?} in all (queue {waited:?}), its total deadline is {limit:?}{}",
        *waited + ran.unwrap_or_default(),
        stop.as_ref().map(|s| format!("; {s}")).unwrap_or_default())]
    TotalTimeout {
        /// The total deadline.
        limit: Duration,
        /// How long it waited in the queue.
        waited: Duration,
        /// How long it ran, if it started.
        ran: Option<Duration>,
        /// How the running task was stopped, if it had started.
        stop: Option<Stop>,
    },

    /// Occurs when the task was cancelled, by its [`CancelToken`](crate::CancelToken) or by
    /// a forced close. `stop` is `None` when it was still queued (it was removed and never
    /// ran), and says how it was stopped otherwise.
    #[error("the task was cancelled{}", match stop {
        None => " while queued".to_owned(),
        Some(stop) => format!(" while running; {stop}"),
    })]
    Cancelled {
        /// How long it waited in the queue.
        waited: Duration,
        /// How long it ran, if it started.
        ran: Option<Duration>,
        /// How the running task was stopped, if it had started.
        stop: Option<Stop>,
    },

    /// Occurs when no worker can be started: the start-failure breaker is open. The
    /// failure that tripped it says why (the worker's own initializer error, its exit
    /// status and stderr, or the fork error).
    #[error("no worker can be started: {0}")]
    WorkersFailing(Arc<StartFailure>),
}

/// How a running task was stopped after a cancellation or a run deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Stop {
    /// The handler saw the cancellation and answered within the grace period; the worker
    /// lives on.
    Cooperatively,
    /// The handler did not answer within the grace period: the worker was killed (and is
    /// replaced).
    Killed {
        /// The grace period that ran out.
        grace: Duration,
    },
    /// The worker ended on its own before it answered.
    WorkerEnded,
}

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stop::Cooperatively => f.write_str("it stopped cooperatively"),
            Stop::Killed { grace } => {
                write!(
                    f,
                    "it ignored the cancellation for {grace:?} and its worker was killed"
                )
            }
            Stop::WorkerEnded => f.write_str("its worker ended before it answered"),
        }
    }
}

/// A worker that ended with tasks in flight.
#[derive(Debug, Clone)]
pub struct Crash {
    /// The worker's service name.
    pub service_name: String,
    /// The worker's pid.
    pub pid: u32,
    /// How it ended.
    pub status: ExitStatus,
    /// What the core reported about the end: the signal ([`utility_process::Error::Crashed`]),
    /// the panic and its location ([`utility_process::Error::Panicked`]), or a protocol
    /// violation. `None` for an ordinary exit.
    pub cause: Option<Arc<utility_process::Error>>,
    /// The last lines of its stderr (at most 4 KiB), when the pool's fork options pipe
    /// stderr ([`utility_process::Stdio::Pipe`]).
    pub stderr_tail: Option<String>,
}

impl fmt::Display for Crash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.cause {
            Some(cause) => write!(f, "{cause}")?,
            None => write!(
                f,
                "{} (pid {}) ended with {} while running the task",
                self.service_name, self.pid, self.status
            )?,
        }
        if let Some(tail) = self.stderr_tail.as_deref().filter(|t| !t.trim().is_empty()) {
            write!(f, "; its stderr ended with: {}", tail.trim_end())?;
        }
        Ok(())
    }
}

impl std::error::Error for Crash {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// A worker that failed before it was ready, and how many failed in a row.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{service_name}: {failures} worker start(s) failed in a row; the last: {reason}")]
pub struct StartFailure {
    /// The pool's service name.
    pub service_name: String,
    /// Consecutive start failures, this one included.
    pub failures: u32,
    /// What happened to the last one.
    #[source]
    pub reason: StartError,
}

/// Why a worker did not become ready.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// Occurs when the worker cannot be forked at all (missing program, unknown entry
    /// point, out of processes).
    #[error("{0}")]
    Fork(#[source] Arc<utility_process::Error>),

    /// Occurs when the worker's initializer
    /// ([`serve_with_init`](crate::serve_with_init)) returned an error.
    #[error("the worker's initializer failed (pid {pid}): {message}")]
    Init {
        /// The worker's pid.
        pid: u32,
        /// The initializer's error, as text.
        message: String,
    },

    /// Occurs when the worker ended before it said it was ready (it does not call
    /// [`serve`](crate::serve), or crashed in its `main`).
    #[error("the worker (pid {pid}) ended with {status} before it was ready{}{}",
        cause.as_ref().map(|c| format!(": {c}")).unwrap_or_default(),
        stderr_tail.as_ref().filter(|t| !t.trim().is_empty())
            .map(|t| format!("; its stderr ended with: {}", t.trim_end())).unwrap_or_default())]
    Exited {
        /// The worker's pid.
        pid: u32,
        /// How it ended.
        status: ExitStatus,
        /// What the core reported (signal, panic), if anything.
        cause: Option<Arc<utility_process::Error>>,
        /// The end of its stderr, when piped.
        stderr_tail: Option<String>,
    },

    /// Occurs when the worker did not say it was ready within
    /// [`PoolBuilder::start_timeout`](crate::PoolBuilder::start_timeout); it was killed.
    #[error("the worker (pid {pid}) was not ready within {limit:?} and was killed")]
    NotReady {
        /// The worker's pid.
        pid: u32,
        /// The start timeout.
        limit: Duration,
    },

    /// Occurs when the worker sent something other than the pool's ready message first:
    /// it is not a pool worker, or speaks another version.
    #[error("the worker (pid {pid}) does not speak the pool protocol: {what}")]
    Protocol {
        /// The worker's pid.
        pid: u32,
        /// What it sent.
        what: String,
    },
}

/// Why [`PoolBuilder::build`](crate::PoolBuilder::build) refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// Occurs when `build` is called outside a tokio runtime: the pool's tasks need one.
    #[error("a pool must be built inside a tokio runtime")]
    NoRuntime,
    /// Occurs when the options contradict each other or are out of range.
    #[error("invalid pool option {option}: {reason}")]
    Invalid {
        /// The option.
        option: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}
