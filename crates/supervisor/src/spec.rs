//! What to supervise and how: [`ChildSpec`], [`Restart`], [`Backoff`], [`Heartbeat`],
//! [`Probe`], and the supervisor-wide [`Intensity`] and [`SupervisorOptions`].
//!
//! Every default is written here, once:
//!
//! | setting | default | after |
//! | --- | --- | --- |
//! | [`ChildSpec::restart`] | [`Restart::Always`] | Erlang's `permanent` |
//! | [`ChildSpec::backoff`] | 100 ms doubling to 30 s, ±20 % jitter, reset after 60 s up | systemd's `RestartSec`/`RestartSteps` |
//! | [`ChildSpec::start_timeout`] | 10 s to attach and say ready | systemd's `TimeoutStartSec` |
//! | [`ChildSpec::shutdown_timeout`] | 5 s from SIGTERM to SIGKILL | Erlang's shutdown timeout |
//! | [`ChildSpec::heartbeat`] | none | systemd's `WatchdogSec` |
//! | [`ChildSpec::probe`] | none | an application-level check |
//! | [`ChildSpec::output_tail`] | the last 4 KiB of each piped stream, in the exit report | systemd's journal excerpt in `systemctl status` |
//! | [`SupervisorOptions::intensity`] | 5 restarts in 10 s | Erlang's `intensity`/`period`, systemd's `StartLimitBurst` |
//! | [`SupervisorOptions::message_capacity`] | 256 messages waiting to be read | |
//! | [`SupervisorOptions::event_capacity`] | 1024 events per subscriber | |
//! | [`SupervisorOptions::output_capacity`] | 1024 output lines per subscriber | |

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[cfg(unix)]
use utility_process::unix::Signal;
use utility_process::ForkOptions;

/// When a child that ended is started again (Erlang's restart types).
///
/// # Examples
///
/// ```
/// use utility_process_supervisor::{ChildSpec, Restart};
///
/// assert_eq!(Restart::default(), Restart::Always);
/// // A batch job: restarted if it fails, done when it succeeds.
/// let job = ChildSpec::entry("nightly-import", "import").restart(Restart::OnFailure);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Restart {
    /// Never restarted (Erlang's `temporary`, systemd's `Restart=no`).
    Never,
    /// Restarted when it failed: any end but exit code 0 — a non-zero code, a signal, a
    /// missed heartbeat, a failed probe, a start that did not finish in time (Erlang's
    /// `transient`, systemd's `Restart=on-failure`).
    OnFailure,
    /// Always restarted, even after exit code 0 (Erlang's `permanent`, systemd's
    /// `Restart=always`).
    #[default]
    Always,
}

/// The delay before a restart: exponential, capped, jittered, and reset after a stable run.
///
/// The `n`-th consecutive restart (counting from 1) waits
/// `min(max, initial × factorⁿ⁻¹)`, less a random part of up to `jitter` of it, so that
/// services that failed together do not restart in lockstep: the delay always lies in
/// `[(1 − jitter) × d, d]` and never exceeds `max`. A child that stayed up (ready) for at
/// least `reset_after` before it ended counts as stable: its next restart is the first again.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use utility_process_supervisor::Backoff;
///
/// let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1)).jitter(0.0);
/// assert_eq!(backoff.delay(1), Duration::from_millis(100));
/// assert_eq!(backoff.delay(3), Duration::from_millis(400));
/// assert_eq!(backoff.delay(10), Duration::from_secs(1)); // capped
///
/// let jittered = backoff.jitter(0.5);
/// let d = jittered.delay(2);
/// assert!(d >= Duration::from_millis(100) && d <= Duration::from_millis(200));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    factor: f64,
    jitter: f64,
    reset_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(30),
            factor: 2.0,
            jitter: 0.2,
            reset_after: Duration::from_secs(60),
        }
    }
}

impl Backoff {
    /// A backoff from `initial` doubling up to `max`, with the default jitter (0.2) and
    /// reset (60 s). A `max` below `initial` is raised to `initial`.
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max: max.max(initial),
            ..Backoff::default()
        }
    }

    /// No delay at all: restart at once (only restart intensity stops a crash loop).
    pub fn none() -> Backoff {
        Backoff {
            initial: Duration::ZERO,
            max: Duration::ZERO,
            jitter: 0.0,
            ..Backoff::default()
        }
    }

    /// The growth factor between consecutive delays; values below 1 (and NaN) count as 1.
    pub fn factor(mut self, factor: f64) -> Backoff {
        self.factor = if factor >= 1.0 { factor } else { 1.0 };
        self
    }

    /// The largest part of each delay taken off at random, from 0 (none) to 1; values
    /// outside that range (and NaN) are clamped into it.
    pub fn jitter(mut self, jitter: f64) -> Backoff {
        self.jitter = if jitter.is_nan() {
            0.0
        } else {
            jitter.clamp(0.0, 1.0)
        };
        self
    }

    /// How long a child must stay up (from its ready signal) for its next restart to count
    /// as the first again.
    pub fn reset_after(mut self, stable: Duration) -> Backoff {
        self.reset_after = stable;
        self
    }

    /// The configured stable uptime, see [`reset_after`](Self::reset_after).
    pub fn stable_uptime(&self) -> Duration {
        self.reset_after
    }

    /// The delay before the `attempt`-th consecutive restart (1 for the first), jitter
    /// included. `attempt` 0 is treated as 1.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(1024) as i32;
        let max = self.max.as_secs_f64();
        let base = (self.initial.as_secs_f64() * self.factor.powi(exponent)).min(max);
        let base = if base.is_finite() { base } else { max };
        let taken = base * self.jitter * random_unit();
        // `max` itself may not survive the round trip through f64 (Duration::MAX does not).
        Duration::try_from_secs_f64((base - taken).clamp(0.0, max))
            .map_or(self.max, |d| d.min(self.max))
    }
}

/// A number in `[0, 1)`, different on every call: splitmix64 over the clock, the pid and a
/// counter. Spreading restarts needs no cryptographic quality, and no dependency.
fn random_unit() -> f64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut z = nanos
        ^ (u64::from(std::process::id()) << 32)
        ^ COUNTER
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// The watchdog: the supervisor sends a heartbeat every `interval` on the control channel,
/// and a child that leaves `misses` heartbeats in a row unanswered is declared hung, sent
/// [`signal`](Self::signal) (SIGKILL unless chosen otherwise), and restarted under its policy.
///
/// Heartbeats start once the child has said it is ready. A hung child is noticed between
/// `misses × interval` and `(misses + 1) × interval` after it stopped answering.
///
/// # What an answer proves
///
/// The child's side ([`attach`](crate::child::attach)) answers from a task on the child's own
/// tokio runtime. On a current-thread runtime (what
/// [`Entry::new`](utility_process::Entry::new) gives an entry point) an answer proves that the
/// thread running the child's code came back to the scheduler within the allowed time: a child
/// that is stopped (SIGSTOP), stuck in a busy loop, or blocked in a system call or a lock
/// without `.await` cannot answer. It does not prove that a task waiting on something that
/// never comes (an async deadlock) makes progress; use a [`Probe`] for that. On a
/// multi-thread runtime an answer proves only that one worker thread is free.
///
/// A child without a runtime attaches with
/// [`attach_blocking`](crate::child::attach_blocking) and is not asked: it must call
/// [`Supervised::alive`](crate::child::Supervised::alive) from its own loop at least once per
/// interval (systemd's model), which proves that loop goes round.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use utility_process::unix::Signal;
/// use utility_process_supervisor::Heartbeat;
///
/// let watchdog = Heartbeat::new(Duration::from_millis(500)).misses(3).signal(Signal::SIGABRT);
/// assert_eq!(watchdog.allowed_misses(), 3);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    pub(crate) interval: Duration,
    pub(crate) misses: u32,
    #[cfg(unix)]
    pub(crate) signal: Signal,
}

impl Heartbeat {
    /// A heartbeat every `interval` (at least 1 ms), declaring the child hung after 3 misses
    /// in a row, with SIGKILL.
    pub fn new(interval: Duration) -> Heartbeat {
        Heartbeat {
            interval: interval.max(Duration::from_millis(1)),
            misses: 3,
            #[cfg(unix)]
            signal: Signal::SIGKILL,
        }
    }

    /// How many heartbeats in a row may go unanswered before the child is declared hung (at
    /// least 1).
    pub fn misses(mut self, misses: u32) -> Heartbeat {
        self.misses = misses.max(1);
        self
    }

    /// The signal sent to a hung child (Unix only: on Windows a hung child's job is
    /// terminated). Should it not end the child, the supervisor follows with SIGTERM, then
    /// SIGKILL after the child's shutdown timeout.
    #[cfg(unix)]
    pub fn signal(mut self, signal: Signal) -> Heartbeat {
        self.signal = signal;
        self
    }

    /// The configured number of allowed misses.
    pub fn allowed_misses(&self) -> u32 {
        self.misses
    }

    /// The configured interval.
    pub fn interval(&self) -> Duration {
        self.interval
    }
}

/// An application-level health check: every `every`, the supervisor asks the child to run the
/// probe it registered with [`attach_with_probe`](crate::child::attach_with_probe). An
/// unhealthy answer, or no answer within `timeout`, ends the child (SIGTERM, then SIGKILL
/// after its shutdown timeout) and it is restarted under its policy.
///
/// A child that registered no probe answers healthy.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use utility_process_supervisor::Probe;
///
/// let probe = Probe::new(Duration::from_secs(5)).timeout(Duration::from_secs(1));
/// assert_eq!(probe.answer_timeout(), Duration::from_secs(1));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub(crate) every: Duration,
    pub(crate) timeout: Duration,
}

impl Probe {
    /// A probe every `every` (at least 1 ms), with an answer timeout of the same length.
    pub fn new(every: Duration) -> Probe {
        let every = every.max(Duration::from_millis(1));
        Probe {
            every,
            timeout: every,
        }
    }

    /// How long the child has to answer a probe (at least 1 ms).
    pub fn timeout(mut self, timeout: Duration) -> Probe {
        self.timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// The configured answer timeout.
    pub fn answer_timeout(&self) -> Duration {
        self.timeout
    }
}

/// Restart intensity: at most `max_restarts` restarts within any sliding window of `period`,
/// for all the supervisor's children together (Erlang's `intensity` and `period`). The
/// restart that would exceed it is not made: the supervisor gives up, says why
/// ([`SupervisorEvent::GaveUp`](crate::SupervisorEvent::GaveUp)), and shuts every child down.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use utility_process_supervisor::{Intensity, SupervisorOptions};
///
/// let options = SupervisorOptions::default().intensity(Intensity::new(3, Duration::from_secs(5)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Intensity {
    pub(crate) max_restarts: u32,
    pub(crate) period: Duration,
}

impl Intensity {
    /// At most `max_restarts` in any `period`. `0` means the first restart gives up.
    pub fn new(max_restarts: u32, period: Duration) -> Intensity {
        Intensity {
            max_restarts,
            period,
        }
    }

    /// The configured number of restarts.
    pub fn max_restarts(&self) -> u32 {
        self.max_restarts
    }

    /// The configured window.
    pub fn period(&self) -> Duration {
        self.period
    }
}

impl Default for Intensity {
    fn default() -> Self {
        Intensity::new(5, Duration::from_secs(10))
    }
}

/// Supervisor-wide settings, for [`Supervisor::new`](crate::Supervisor::new).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use utility_process_supervisor::{Intensity, SupervisorOptions};
///
/// let options = SupervisorOptions::default()
///     .intensity(Intensity::new(10, Duration::from_secs(60)))
///     .message_capacity(1024)
///     .event_capacity(4096)
///     .output_capacity(256);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SupervisorOptions {
    pub(crate) intensity: Intensity,
    pub(crate) message_capacity: usize,
    pub(crate) event_capacity: usize,
    pub(crate) output_capacity: usize,
}

impl Default for SupervisorOptions {
    fn default() -> Self {
        SupervisorOptions {
            intensity: Intensity::default(),
            message_capacity: 256,
            event_capacity: 1024,
            output_capacity: 1024,
        }
    }
}

impl SupervisorOptions {
    /// The restart intensity (default: 5 restarts in 10 s).
    pub fn intensity(mut self, intensity: Intensity) -> Self {
        self.intensity = intensity;
        self
    }

    /// How many children's messages wait for [`Supervisor::recv_message`] before the
    /// children are slowed down: further messages then stay in their sockets (default 256,
    /// at least 1).
    ///
    /// [`Supervisor::recv_message`]: crate::Supervisor::recv_message
    pub fn message_capacity(mut self, capacity: usize) -> Self {
        self.message_capacity = capacity.max(1);
        self
    }

    /// How many events each [`Events`](crate::Events) subscriber may fall behind before it
    /// loses the oldest ones (it is told how many, with
    /// [`SupervisorEvent::EventsLost`](crate::SupervisorEvent::EventsLost)); default 1024,
    /// at least 1.
    pub fn event_capacity(mut self, capacity: usize) -> Self {
        self.event_capacity = capacity.max(1);
        self
    }

    /// How many lines of the children's piped output each [`Output`](crate::Output)
    /// subscriber may fall behind before it loses the oldest ones (it is told how many, with
    /// [`OutputEvent::Lost`](crate::OutputEvent::Lost)); default 1024, at least 1. Each
    /// line is at most [`MAX_LINE`](crate::MAX_LINE) bytes.
    pub fn output_capacity(mut self, capacity: usize) -> Self {
        self.output_capacity = capacity.max(1);
        self
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub(crate) enum Command {
    /// An entry point of the current executable, as `fork_entry`.
    Entry(String),
    /// A program, as `fork`.
    Program(PathBuf),
}

/// One supervised service: what to run, under which policy, with which health checks.
///
/// The service name identifies the child in the supervisor (it must be unique), in every
/// event, and in `ps` (it is the [`ForkOptions::service_name`]).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use utility_process::ForkOptions;
/// use utility_process_supervisor::{Backoff, ChildSpec, Heartbeat, Restart};
///
/// let spec = ChildSpec::entry("decoder", "decoder-entry")
///     .restart(Restart::OnFailure)
///     .backoff(Backoff::new(Duration::from_millis(50), Duration::from_secs(5)))
///     .heartbeat(Heartbeat::new(Duration::from_millis(200)).misses(3))
///     .start_timeout(Duration::from_secs(2))
///     .shutdown_timeout(Duration::from_secs(1))
///     .options(ForkOptions::default().env("RUST_LOG", "info"));
/// assert_eq!(spec.name(), "decoder");
/// ```
#[derive(Debug, Clone)]
pub struct ChildSpec {
    pub(crate) name: String,
    pub(crate) command: Command,
    pub(crate) args: Vec<OsString>,
    pub(crate) options: ForkOptions,
    pub(crate) restart: Restart,
    pub(crate) backoff: Backoff,
    pub(crate) heartbeat: Option<Heartbeat>,
    pub(crate) probe: Option<Probe>,
    pub(crate) start_timeout: Duration,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) output_tail: usize,
}

impl ChildSpec {
    fn with(name: String, command: Command) -> ChildSpec {
        ChildSpec {
            name,
            command,
            args: Vec::new(),
            options: ForkOptions::default(),
            restart: Restart::default(),
            backoff: Backoff::default(),
            heartbeat: None,
            probe: None,
            start_timeout: Duration::from_secs(10),
            shutdown_timeout: Duration::from_secs(5),
            output_tail: 4096,
        }
    }

    /// A service named `name` running the entry point `entry` of the current executable
    /// (see [`utility_process::init`]).
    pub fn entry(name: impl Into<String>, entry: impl Into<String>) -> ChildSpec {
        ChildSpec::with(name.into(), Command::Entry(entry.into()))
    }

    /// A service named `name` running `program` (found as [`utility_process::fork`] finds
    /// it). The program must use [`child::attach`](crate::child::attach).
    pub fn program(name: impl Into<String>, program: impl Into<PathBuf>) -> ChildSpec {
        ChildSpec::with(name.into(), Command::Program(program.into()))
    }

    /// The arguments the child is started with, after its service name.
    pub fn args<I, S>(mut self, args: I) -> ChildSpec
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args = args.into_iter().map(Into::into).collect();
        self
    }

    /// How the child is started. The service name is always the spec's name, and the kill
    /// grace is always the [`shutdown_timeout`](Self::shutdown_timeout).
    ///
    /// A stream set to [`Stdio::Pipe`](utility_process::Stdio::Pipe) is read by the
    /// supervisor for as long as the child lives, so the child never blocks writing to it:
    /// its lines go to [`Supervisor::output`](crate::Supervisor::output), and its last bytes
    /// to the exit report (see [`output_tail`](Self::output_tail)).
    pub fn options(mut self, options: ForkOptions) -> ChildSpec {
        self.options = options;
        self
    }

    /// When the child is restarted (default [`Restart::Always`]).
    pub fn restart(mut self, restart: Restart) -> ChildSpec {
        self.restart = restart;
        self
    }

    /// The delay before restarts (default: [`Backoff::default`]).
    pub fn backoff(mut self, backoff: Backoff) -> ChildSpec {
        self.backoff = backoff;
        self
    }

    /// Watch the child with heartbeats (default: none).
    pub fn heartbeat(mut self, heartbeat: Heartbeat) -> ChildSpec {
        self.heartbeat = Some(heartbeat);
        self
    }

    /// Check the child with the application's probe (default: none).
    pub fn probe(mut self, probe: Probe) -> ChildSpec {
        self.probe = Some(probe);
        self
    }

    /// How long the child has, from its start, to attach to the control channel and say
    /// it is ready (default 10 s). A child that does not is killed, and the start failed.
    pub fn start_timeout(mut self, timeout: Duration) -> ChildSpec {
        self.start_timeout = timeout;
        self
    }

    /// How long a child asked to stop has between SIGTERM and SIGKILL (default 5 s).
    pub fn shutdown_timeout(mut self, timeout: Duration) -> ChildSpec {
        self.shutdown_timeout = timeout;
        self
    }

    /// How many of the last bytes of each piped stream (stdout, stderr) a life keeps for its
    /// exit report: [`SupervisorEvent::Exited`](crate::SupervisorEvent::Exited) and a failed
    /// first start's [`Error::StartFailed`](crate::Error::StartFailed) carry them as an
    /// [`OutputTail`](crate::OutputTail). Default 4096; 0 keeps nothing. Streams that are not
    /// [`Stdio::Pipe`](utility_process::Stdio::Pipe) have no tail.
    pub fn output_tail(mut self, bytes: usize) -> ChildSpec {
        self.output_tail = bytes;
        self
    }

    /// The service name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jittered_delays_stay_between_their_floor_and_the_cap() {
        let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2)).jitter(0.3);
        for attempt in 1..=12 {
            let full = Duration::from_millis(100)
                .saturating_mul(1 << (attempt - 1))
                .min(Duration::from_secs(2));
            for _ in 0..200 {
                let d = backoff.delay(attempt);
                assert!(d <= full, "attempt {attempt}: {d:?} over {full:?}");
                assert!(
                    d >= full.mul_f64(0.7) - Duration::from_micros(1),
                    "attempt {attempt}: {d:?}"
                );
            }
        }
    }

    #[test]
    fn jitter_spreads_delays() {
        let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(1)).jitter(1.0);
        let distinct: std::collections::BTreeSet<Duration> =
            (0..100).map(|_| backoff.delay(1)).collect();
        assert!(
            distinct.len() > 50,
            "only {} distinct delays of 100",
            distinct.len()
        );
    }

    #[test]
    fn extreme_settings_neither_panic_nor_exceed_the_cap() {
        let cases = [
            Backoff::new(Duration::from_secs(1), Duration::MAX).factor(f64::MAX),
            Backoff::new(Duration::MAX, Duration::MAX).jitter(f64::NAN),
            Backoff::none().factor(f64::NAN),
            Backoff::new(Duration::ZERO, Duration::from_secs(5)).jitter(-3.0),
        ];
        for backoff in cases {
            for attempt in [0, 1, 2, 64, 1025, u32::MAX] {
                assert!(
                    backoff.delay(attempt) <= backoff.max,
                    "{backoff:?} attempt {attempt}"
                );
            }
        }
        assert_eq!(Backoff::none().delay(u32::MAX), Duration::ZERO);
    }

    #[test]
    fn settings_are_clamped_to_their_meaningful_range() {
        assert_eq!(
            Heartbeat::new(Duration::ZERO).interval(),
            Duration::from_millis(1)
        );
        assert_eq!(
            Heartbeat::new(Duration::from_secs(1))
                .misses(0)
                .allowed_misses(),
            1
        );
        assert_eq!(
            Probe::new(Duration::ZERO).answer_timeout(),
            Duration::from_millis(1)
        );
        let backoff = Backoff::new(Duration::from_secs(5), Duration::from_secs(1));
        assert_eq!(
            backoff.jitter(0.0).delay(3),
            Duration::from_secs(5),
            "max is raised to initial"
        );
    }
}
