//! The structured event stream: [`SupervisorEvent`], the reasons it carries, and [`Events`].

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;
#[cfg(unix)]
use utility_process::unix::Signal;
use utility_process::ExitStatus;

use crate::output::OutputTail;

/// Which part of a start did not finish in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartStage {
    /// The child never took the control channel: it does not call
    /// [`child::attach`](crate::child::attach), or is stuck before it.
    Attach,
    /// The child attached but never called [`Supervised::ready`](crate::child::Supervised::ready).
    Ready,
}

/// Why a health probe failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeFailure {
    /// The child's probe answered unhealthy, in its own words.
    Unhealthy(String),
    /// The child did not answer within the probe's timeout.
    NoAnswer {
        /// The timeout that ran out.
        after: Duration,
    },
}

/// Why a child ended (or could not start).
#[derive(Debug, Clone)]
pub enum ExitReason {
    /// The child ended on its own: it returned, exited, crashed or panicked.
    Exited {
        /// Its exit code or signal.
        status: ExitStatus,
        /// The core's explanation, when there is one: a crash signal, a panic's message and
        /// location, a protocol violation.
        error: Option<Arc<utility_process::Error>>,
    },
    /// The child stopped answering heartbeats and was ended: sent `signal` on Unix, its job
    /// terminated on Windows.
    HeartbeatMissed {
        /// How many heartbeats in a row went unanswered.
        missed: u32,
        /// The signal it was sent.
        #[cfg(unix)]
        signal: Signal,
    },
    /// The child did not finish starting within its start timeout, and was killed.
    StartTimeout {
        /// What it did not do.
        stage: StartStage,
        /// The timeout that ran out.
        after: Duration,
    },
    /// The application's health probe failed, and the child was stopped.
    ProbeFailed(ProbeFailure),
    /// The child's first message was not understood by its side of this crate, or it broke
    /// the control protocol: it runs another version of this crate, or is not a supervised
    /// program. It was killed.
    ControlViolation,
    /// The child could not be started at all.
    SpawnFailed(Arc<utility_process::Error>),
    /// The supervisor stopped it (shutdown, or after giving up).
    Stopped,
}

impl ExitReason {
    /// Whether this counts as a failure for [`Restart::OnFailure`](crate::Restart::OnFailure):
    /// everything except exit code 0 and a stop asked by the supervisor.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use utility_process_supervisor::{ExitReason, StartStage};
    ///
    /// assert!(!ExitReason::Stopped.is_failure());
    /// let late = ExitReason::StartTimeout { stage: StartStage::Ready, after: Duration::from_secs(1) };
    /// assert!(late.is_failure());
    /// assert_eq!(late.to_string(), "did not say it was ready within 1s");
    /// ```
    pub fn is_failure(&self) -> bool {
        match self {
            ExitReason::Exited { status, .. } => !status.success(),
            ExitReason::Stopped => false,
            _ => true,
        }
    }
}

impl std::fmt::Display for ExitReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitReason::Exited {
                error: Some(error), ..
            } => write!(f, "{error}"),
            ExitReason::Exited { status, .. } => write!(f, "ended with {status}"),
            #[cfg(unix)]
            ExitReason::HeartbeatMissed { missed, signal } => {
                write!(f, "missed {missed} heartbeats in a row; sent {signal}")
            }
            #[cfg(not(unix))]
            ExitReason::HeartbeatMissed { missed } => {
                write!(f, "missed {missed} heartbeats in a row; ended it")
            }
            ExitReason::StartTimeout { stage, after } => {
                let what = match stage {
                    StartStage::Attach => "attach to the control channel",
                    StartStage::Ready => "say it was ready",
                };
                write!(f, "did not {what} within {after:?}")
            }
            ExitReason::ProbeFailed(ProbeFailure::Unhealthy(detail)) => {
                write!(f, "health probe failed: {detail}")
            }
            ExitReason::ProbeFailed(ProbeFailure::NoAnswer { after }) => {
                write!(f, "health probe not answered within {after:?}")
            }
            ExitReason::ControlViolation => f.write_str("broke the supervisor's control protocol"),
            ExitReason::SpawnFailed(error) => write!(f, "could not start: {error}"),
            ExitReason::Stopped => f.write_str("stopped by the supervisor"),
        }
    }
}

/// Why the supervisor gave up.
#[derive(Debug, Clone)]
pub enum GiveUpReason {
    /// A restart would have exceeded the restart intensity.
    IntensityExceeded {
        /// The configured limit.
        max_restarts: u32,
        /// The configured window.
        period: Duration,
        /// The service whose restart was refused.
        service: String,
        /// Why that service had ended.
        last: ExitReason,
    },
}

impl std::fmt::Display for GiveUpReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GiveUpReason::IntensityExceeded {
                max_restarts,
                period,
                service,
                last,
            } => write!(
                f,
                "more than {max_restarts} restarts within {period:?}; {service} last {last}"
            ),
        }
    }
}

/// Something the supervisor saw or did.
///
/// For one service, the events of a life come in this order: `Started`, then `Ready` (or its
/// start fails), `HeartbeatMissed` any number of times, then `Exited` once; then one of
/// `Restarting` (and the next life), `NotRestarted`, or nothing more if the supervisor is
/// stopping it. A supervisor's last event is `ShutdownComplete`, after a shutdown or after
/// `GaveUp`.
///
/// # Examples
///
/// A log line per event (the [crate documentation](crate) reacts to them):
///
/// ```
/// use utility_process_supervisor::{ExitReason, SupervisorEvent};
///
/// fn log(event: &SupervisorEvent) -> String {
///     match event {
///         SupervisorEvent::Restarting { service, attempt, delay, reason } => {
///             format!("{service}: {reason}; restart #{attempt} in {delay:?}")
///         }
///         SupervisorEvent::GaveUp(why) => format!("giving up: {why}"),
///         other => format!("{other:?}"),
///     }
/// }
/// let event = SupervisorEvent::NotRestarted { service: "w".into(), reason: ExitReason::Stopped };
/// assert_eq!(event.service(), Some("w"));
/// assert!(log(&event).starts_with("NotRestarted"));
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum SupervisorEvent {
    /// The process was started (not yet ready).
    Started {
        /// The service.
        service: String,
        /// Its process.
        pid: u32,
        /// How many times the service was restarted before this start (0 the first time).
        restarts: u32,
    },
    /// The child said it was ready.
    Ready {
        /// The service.
        service: String,
        /// Its process.
        pid: u32,
        /// How many times the service was restarted before this life (0 the first time):
        /// `restarts > 0` is "ready again". See also
        /// [`Supervisor::wait_ready_again`](crate::Supervisor::wait_ready_again).
        restarts: u32,
    },
    /// A heartbeat went unanswered.
    HeartbeatMissed {
        /// The service.
        service: String,
        /// Its process.
        pid: u32,
        /// How many times the service was restarted before this life.
        restarts: u32,
        /// How many in a row so far.
        missed: u32,
        /// How many in a row are allowed before it is declared hung.
        allowed: u32,
    },
    /// The child ended, or could not be started (`pid` is then `None`).
    Exited {
        /// The service.
        service: String,
        /// Its process, if one was started.
        pid: Option<u32>,
        /// How many times the service was restarted before this life.
        restarts: u32,
        /// Why it ended.
        reason: ExitReason,
        /// How its process ended (its code or signal), if one was started.
        status: Option<ExitStatus>,
        /// How long it had been ready, if it said so.
        uptime: Option<Duration>,
        /// The last bytes it wrote on its piped stdout and stderr (see
        /// [`ChildSpec::output_tail`](crate::ChildSpec::output_tail)); empty when they were
        /// not piped.
        output: OutputTail,
    },
    /// The service will be started again after `delay`.
    Restarting {
        /// The service.
        service: String,
        /// Which consecutive restart this is (1 after a stable run); see [`Backoff`](crate::Backoff).
        attempt: u32,
        /// The wait before it starts.
        delay: Duration,
        /// Why its last life ended.
        reason: ExitReason,
    },
    /// The service ended and its policy does not restart it; it is no longer supervised.
    NotRestarted {
        /// The service.
        service: String,
        /// Why its last life ended.
        reason: ExitReason,
    },
    /// The supervisor gave up: it stops every child and then ends.
    GaveUp(GiveUpReason),
    /// A child was stopped by a shutdown (or after `GaveUp`).
    Stopped {
        /// The service.
        service: String,
        /// Its process, if one was running.
        pid: Option<u32>,
        /// How it ended, if it was running; a signal of SIGKILL means it outlived its
        /// shutdown timeout.
        status: Option<ExitStatus>,
    },
    /// Every child has been stopped; nothing more will happen.
    ShutdownComplete,
    /// This subscriber fell behind and lost the `count` oldest events.
    EventsLost {
        /// How many.
        count: u64,
    },
}

impl SupervisorEvent {
    /// The service the event is about, if it is about one.
    pub fn service(&self) -> Option<&str> {
        match self {
            SupervisorEvent::Started { service, .. }
            | SupervisorEvent::Ready { service, .. }
            | SupervisorEvent::HeartbeatMissed { service, .. }
            | SupervisorEvent::Exited { service, .. }
            | SupervisorEvent::Restarting { service, .. }
            | SupervisorEvent::NotRestarted { service, .. }
            | SupervisorEvent::Stopped { service, .. } => Some(service),
            SupervisorEvent::GaveUp(_)
            | SupervisorEvent::ShutdownComplete
            | SupervisorEvent::EventsLost { .. } => None,
        }
    }
}

/// A subscription to a supervisor's events, from [`Supervisor::events`](crate::Supervisor::events).
///
/// Each subscriber sees every event sent after it subscribed, in order. One that falls more
/// than [`SupervisorOptions::event_capacity`](crate::SupervisorOptions::event_capacity)
/// behind loses the oldest and is told so with [`SupervisorEvent::EventsLost`]: a slow
/// reader never slows supervision down.
///
/// # Examples
///
/// ```
/// use utility_process_supervisor::{Supervisor, SupervisorEvent, SupervisorOptions};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let supervisor = Supervisor::new(SupervisorOptions::default().event_capacity(1));
/// let mut slow = supervisor.events();
/// supervisor.shutdown().await; // one event
/// supervisor.shutdown().await; // nothing more: the shutdown already happened
/// assert!(matches!(slow.recv().await, Some(SupervisorEvent::ShutdownComplete)));
/// # }
/// ```
#[derive(Debug)]
pub struct Events {
    pub(crate) receiver: broadcast::Receiver<SupervisorEvent>,
}

impl Events {
    /// The next event; `None` after [`SupervisorEvent::ShutdownComplete`] once the
    /// supervisor is gone.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future loses no event.
    pub async fn recv(&mut self) -> Option<SupervisorEvent> {
        match self.receiver.recv().await {
            Ok(event) => Some(event),
            Err(broadcast::error::RecvError::Lagged(count)) => {
                Some(SupervisorEvent::EventsLost { count })
            }
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}
