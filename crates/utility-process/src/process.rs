//! The parent side: [`fork`], [`UtilityProcess`] and its [`Event`]s.
//!
//! # Events and their order
//!
//! [`UtilityProcess::next_event`] yields, as Electron does: [`Event::Spawn`] first and once;
//! then the child's messages in the order it sent them; [`Event::Error`] for an end the parent
//! did not ask for; [`Event::Exit`] last and once; then `None`. The order holds without races
//! because exit is only reported after the port has been drained: when the OS says the child
//! has ended, every byte it wrote is already in its channel, and those messages come first.
//! The order itself is a pure state machine (`event_order.rs`).
//!
//! # What is the backend's
//!
//! This file is the same on every OS. Starting the child, watching it until it is reaped,
//! killing it and telling what its end means (a chosen exit, a crash, a limit) are its
//! backend's: `sys::child` (on Unix, `sys/unix/child.rs`), through [`Launch`] and [`Ending`].

use std::ffi::{OsStr, OsString};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;
use utility_process_wire::{Hello, ENVELOPE_ROOM};

use crate::error::{PanicInfo, SpawnStep, Violation};
use crate::event_order::{EventOrder, Next};
use crate::options::ForkOptions;
use crate::port::{post_on, raw_payload, send_with, transferred, Transferable};
use crate::sandbox::Syscall;
use crate::script::{Language, Script};
use crate::stdio::{ChildStderr, ChildStdout};
use crate::sys::channel::Channel;
use crate::transport::{Endpoint, Incoming, Limits, RecvError, TryRecv};
use crate::{sys, Error, ExitStatus, Limit, Message, MessagePort};

/// Environment variables the parent gives a child (besides `sys::PORT_ENV`).
pub(crate) const ENV_SERVICE_NAME: &str = "UTILITY_PROCESS_SERVICE_NAME";
pub(crate) const ENV_PARENT_PID: &str = "UTILITY_PROCESS_PARENT_PID";

/// Something that happened to a utility process.
#[derive(Debug)]
pub enum Event {
    /// The program is running. First, and exactly once.
    Spawn,
    /// A message from the child, in the order it was posted.
    Message(Message),
    /// The child ended in a way the parent did not ask for: [`Error::Crashed`] (a signal the
    /// parent did not send), [`Error::Panicked`] (a Rust child's panic, with its message and
    /// location), or [`Error::ProtocolViolation`] (the child was killed for it). Comes before
    /// [`Event::Exit`].
    Error(Error),
    /// The child has ended and been reaped. Last, and exactly once.
    Exit(ExitStatus),
}

/// What a confined child's confinement reported (on Unix, through its report pipe), and what
/// its reaping told.
#[derive(Debug, Default)]
#[cfg_attr(windows, allow(dead_code))] // a Windows child's job tells its limits
pub(crate) struct Reports {
    /// Distinct system calls its sandbox denied, in order (at most [`MAX_SYSCALL_REPORTS`]).
    pub(crate) syscalls: Vec<u32>,
    /// It aborted after an allocation failed.
    pub(crate) out_of_memory: bool,
    /// Its library refused to start it: the errno.
    pub(crate) refused: Option<i32>,
    /// The CPU time it used, once reaped.
    pub(crate) cpu_time: Option<Duration>,
    /// It broke the report pipe's rules (flooded it, or wrote garbage): how.
    pub(crate) violation: Option<&'static str>,
}

/// A child that tries every forbidden call gets each reported once, up to this many.
#[cfg_attr(windows, allow(dead_code))]
pub(crate) const MAX_SYSCALL_REPORTS: usize = 512;

/// A running (or ended) utility process: its port, its events, its life.
///
/// Dropping the handle ends the child as [`kill`](Self::kill) does, unless it was
/// [`detach`](Self::detach)ed.
#[derive(Debug)]
pub struct UtilityProcess {
    service_name: String,
    port: Arc<Endpoint>,
    child: Arc<sys::child::Child>,
    exit: watch::Receiver<Option<ExitStatus>>,
    stdout: Option<ChildStdout>,
    stderr: Option<ChildStderr>,
    events: EventState,
    detached: bool,
    reports: Option<watch::Receiver<Reports>>,
}

/// Where `next_event` is: the order of events ([`EventOrder`]), and what the Linux event
/// loop keeps beside it.
#[derive(Debug, Default)]
struct EventState {
    order: EventOrder,
    hello_seen: bool,
    /// A protocol violation was reported: the kill that followed is not another error.
    violated: bool,
    last_panic: Option<PanicInfo>,
    /// What the child said failed, in a `FAILURE` report.
    last_failure: Option<String>,
    /// How many of the child's denied calls have been reported.
    syscalls_reported: usize,
    /// The child's refusal to start unconfined has been reported.
    refusal_reported: bool,
    /// The child closed its port mid-frame: unless it has exited by then, that is a
    /// violation at this instant.
    cut_short_deadline: Option<Instant>,
    /// The blocking event loop saw the child's pidfd readable: it has ended.
    child_ended: bool,
}

/// Starts `program` as a utility process.
///
/// `program` is found as `std::process::Command` finds it: a path with a `/` is used as it is
/// (a relative one against the parent's working directory), a bare name is looked up on the
/// `PATH` of the child's environment. `args` follow the service name in the child's `argv`.
///
/// The function returns once the program is running (or known not to start): it does not
/// wait for the child to connect. Messages posted at once are queued and delivered when the
/// child reads its port. Must be called with a tokio runtime available to await the events,
/// but the call itself needs none.
///
/// # Errors
///
/// [`Error::Spawn`], naming the program and the failing step, when the program does not
/// exist, is not executable, the working directory does not exist, an argument holds a NUL
/// byte, or the system is out of resources. Nothing is left behind: no child, no zombie, no
/// descriptor.
///
/// # Examples
///
/// ```
/// use utility_process::{fork, Event, ForkOptions};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), utility_process::Error> {
/// let mut child = fork("sh", ["-c", "exit 3"], ForkOptions::default().service_name("three"))?;
/// assert!(matches!(child.next_event().await, Some(Event::Spawn)));
/// match child.next_event().await {
///     Some(Event::Exit(status)) => assert_eq!(status.code(), Some(3)),
///     other => panic!("unexpected {other:?}"),
/// }
/// assert!(child.next_event().await.is_none());
/// # Ok(())
/// # }
/// ```
pub fn fork<P, I, S>(program: P, args: I, options: ForkOptions) -> Result<UtilityProcess, Error>
where
    P: AsRef<Path>,
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let program = program.as_ref();
    let service_name = options
        .service_name
        .clone()
        .unwrap_or_else(|| sys::child::default_service_name(program));
    let spawn_error = |step: SpawnStep, source: std::io::Error| Error::Spawn {
        program: program.to_path_buf(),
        service_name: service_name.clone(),
        step,
        source,
    };

    let mut env = environment(&options, &service_name);
    env.remove(OsStr::new(crate::sandbox::ENV));
    let search = env.get(OsStr::new("PATH")).map(|p| p.as_os_str());
    let script = Script::prepare(program, &options, &env, &service_name)?;
    let resolved = match &script {
        Some(script) => script.interpreter.clone(),
        None => sys::child::resolve_program(program, search)
            .map_err(|e| spawn_error(SpawnStep::Lookup, e))?,
    };
    // A sandboxed script may read itself and, for JavaScript, the bootstrap's package.
    let options = match (&script, &options.sandbox) {
        (Some(script), Some(sandbox)) => {
            let mut sandbox = sandbox.clone().allow_read(&script.path);
            if let Some(package) = script.package_root() {
                sandbox = sandbox.allow_read(package);
            }
            options.clone().sandbox(sandbox)
        }
        _ => options,
    };
    let mut argv: Vec<OsString> = vec![service_name.clone().into()];
    if let Some(script) = &script {
        // Python finds its installation from argv[0]: it keeps its own name there.
        if script.language == Language::Python {
            argv[0] = resolved.clone().into();
        }
        argv.extend(script.leading.iter().cloned());
        argv.push(script.path.clone().into());
    }
    argv.extend(args.into_iter().map(|arg| arg.as_ref().to_owned()));

    let setup = |e| spawn_error(SpawnStep::Fork, e);
    let max_message_size = options
        .max_message_size
        .min((u32::MAX - ENVELOPE_ROOM) as usize);
    let limits = Limits {
        max_frame_len: max_message_size as u32 + ENVELOPE_ROOM,
        max_message_size,
        max_queued_bytes: options.max_queued_bytes,
    };
    let (ours, theirs) = Channel::pair_owned().map_err(setup)?;
    let port = Endpoint::new(Channel::from_owned(ours).map_err(setup)?, limits, 0);
    // The HELLO goes into the channel before the child exists: it finds it there at once.
    port.send_frame(
        |encoder, buf| {
            encoder.hello(buf, &Hello::new(limits.max_frame_len));
            Ok(())
        },
        Vec::new(),
    )
    .map_err(|_| setup(std::io::Error::other("cannot write the HELLO")))?;

    let launched = sys::child::launch(Launch {
        ours: port.channel(),
        program,
        resolved: &resolved,
        argv,
        env,
        options: &options,
        service_name: &service_name,
        port: theirs,
        // An interpreter the library started for a script has no second stage to confirm:
        // its sandbox is the first stage alone, which the parent applied.
        confirms_sandbox: script.is_none(),
    })?;
    let child = launched.child;
    Ok(UtilityProcess {
        service_name,
        port,
        exit: child.exit_receiver(),
        reports: child.reports_receiver(),
        child,
        stdout: launched.stdout,
        stderr: launched.stderr,
        events: EventState::default(),
        detached: false,
    })
}

/// What the neutral layer hands a backend to start a child: the program resolved, its whole
/// `argv` (the service name, or the interpreter, first) and environment, the options (working
/// directory, output, limits, sandbox, kill grace) and the child's end of its parent port.
#[derive(Debug)]
pub(crate) struct Launch<'a> {
    /// The parent's end of the child's port (Windows makes it the broker for the child;
    /// Unix has no use for it).
    #[cfg_attr(unix, allow(dead_code))]
    pub(crate) ours: &'a Channel,
    /// The program as the caller named it, for errors.
    pub(crate) program: &'a Path,
    /// What runs: the program found on `PATH`, or a script's interpreter.
    pub(crate) resolved: &'a Path,
    pub(crate) argv: Vec<OsString>,
    pub(crate) env: std::collections::BTreeMap<OsString, OsString>,
    pub(crate) options: &'a ForkOptions,
    pub(crate) service_name: &'a str,
    pub(crate) port: sys::Object,
    /// The child must confirm its sandbox's second stage in its `HELLO`.
    #[cfg_attr(windows, allow(dead_code))] // a Windows sandbox has no second stage to confirm
    pub(crate) confirms_sandbox: bool,
}

/// Arms the end of `kill`'s grace period, once: the watcher ends the child at `deadline` if
/// it is still alive then. A grace period too long to represent means "never".
pub(crate) fn arm_kill_deadline(deadline: &watch::Sender<Option<Instant>>, grace: Duration) {
    let Some(at) = Instant::now().checked_add(grace) else {
        return;
    };
    deadline.send_if_modified(|current| {
        if current.is_none() {
            *current = Some(at);
            true
        } else {
            false
        }
    });
}

/// How a child ended, as its backend tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    /// An exit code the child chose (zero or not).
    Chosen,
    /// An end the parent asked for (`kill`, a kill for a violation, a signal it sent).
    Asked,
    /// An end nobody chose: a signal the parent did not send.
    Crash,
    /// One of its limits ended it.
    Limit(Limit),
    /// Its sandbox killed it for a call it denied.
    #[cfg_attr(windows, allow(dead_code))]
    DeniedCall,
}

/// A started child: the backend's handle on it and the parent's ends of its piped output.
pub(crate) struct Launched {
    pub(crate) child: Arc<sys::child::Child>,
    pub(crate) stdout: Option<ChildStdout>,
    pub(crate) stderr: Option<ChildStderr>,
}

/// The child's environment: the parent's (unless cleared), the options' changes, and the
/// library's own variables.
fn environment(
    options: &ForkOptions,
    service_name: &str,
) -> std::collections::BTreeMap<OsString, OsString> {
    let mut env: std::collections::BTreeMap<OsString, OsString> = if options.env_clear {
        Default::default()
    } else {
        std::env::vars_os().collect()
    };
    for (key, value) in &options.env {
        match value {
            Some(value) => env.insert(key.clone(), value.clone()),
            None => env.remove(key),
        };
    }
    if !options
        .env
        .contains_key(OsStr::new(crate::entry::ENV_ENTRY))
    {
        // Only `fork_entry` names an entry point; a plain program never inherits one.
        env.remove(OsStr::new(crate::entry::ENV_ENTRY));
    }
    env.insert(ENV_SERVICE_NAME.into(), service_name.into());
    env.insert(ENV_PARENT_PID.into(), std::process::id().to_string().into());
    env
}

/// Records an error event about a child, at the level it deserves, with its fields.
fn trace_error(span: &tracing::Span, error: &Error) {
    match error {
        Error::Crashed { status, .. } => tracing::warn!(parent: span, %status, "crashed"),
        Error::Panicked { panic, .. } => tracing::warn!(
            parent: span,
            panic = %panic.message,
            location = %panic.location,
            "panicked"
        ),
        Error::EntryFailed { message, .. } => {
            tracing::warn!(parent: span, error = %message, "its entry point failed")
        }
        // Logged where it was found, with the rule.
        Error::ProtocolViolation { .. } => {}
        Error::SandboxViolation { syscall, .. } => tracing::warn!(
            parent: span,
            syscall = syscall.map(|s| s.name),
            number = syscall.map(|s| s.number),
            "the sandbox denied a system call"
        ),
        Error::LimitExceeded { limit, .. } => {
            tracing::warn!(parent: span, limit = %limit, "stopped by its limit")
        }
        Error::SandboxNotApplied { errno, .. } => tracing::error!(
            parent: span,
            errno = *errno,
            "the child did not apply its sandbox: killed"
        ),
        other => tracing::warn!(parent: span, error = %other, "error"),
    }
}

enum Step {
    Port(Result<Option<Incoming>, RecvError>),
    Exited(ExitStatus),
    Reported,
}

impl UtilityProcess {
    /// The child's pid: `Some` from the start until [`next_event`](Self::next_event) has
    /// returned [`Event::Exit`], `None` after, as in Electron.
    ///
    /// A child that has ended is reaped at once, even before its `Exit` is read, and from
    /// then on the number may be given to another process: to signal the child, use
    /// [`kill`](Self::kill), which goes through a pidfd and never reaches a stranger.
    pub fn pid(&self) -> Option<u32> {
        if self.events.order.finished() {
            None
        } else {
            Some(self.child.pid)
        }
    }

    /// The child's service name.
    pub fn service_name(&self) -> &str {
        &self.service_name
    }

    /// Posts `value` to the child, encoded as MessagePack.
    ///
    /// The message is written to the socket at once when it has room, and otherwise queued
    /// and written as the child reads: posting never blocks. Messages posted before the child
    /// has connected, or while it is not reading, are delivered in order once it does.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] once the child has exited; [`Error::MessageTooLarge`] over the
    /// maximum message size (nothing is sent); [`Error::QueueFull`] when the child is not
    /// reading and the queue is at its limit; [`Error::Encode`] when `value` cannot be encoded.
    pub fn post_message<T: Serialize + ?Sized>(&self, value: &T) -> Result<(), Error> {
        self.post(
            |buf, cap| utility_process_wire::encode_value_capped(buf, value, cap),
            Vec::new(),
        )
    }

    /// Posts `value` to the child with `ports`, which move to the child's process: from then
    /// on whoever holds the other ends talks to the child directly.
    ///
    /// # Errors
    ///
    /// As [`post_message`](Self::post_message), and as
    /// [`MessagePort::post_message_with_ports`](crate::MessagePort::post_message_with_ports).
    pub fn post_message_with_ports<T: Serialize + ?Sized>(
        &self,
        value: &T,
        ports: Vec<MessagePort>,
    ) -> Result<(), Error> {
        self.post(
            |buf, cap| utility_process_wire::encode_value_capped(buf, value, cap),
            ports.into_iter().map(Transferable::Port).collect(),
        )
    }

    /// Posts `value` to the child with ports and shared buffers, which move to the child's
    /// process (Electron's `postMessage(message, transfer)`).
    ///
    /// # Errors
    ///
    /// As [`post_message_with_ports`](Self::post_message_with_ports).
    pub fn post_message_with_transfer<T: Serialize + ?Sized>(
        &self,
        value: &T,
        transfer: Vec<Transferable>,
    ) -> Result<(), Error> {
        self.post(
            |buf, cap| utility_process_wire::encode_value_capped(buf, value, cap),
            transfer,
        )
    }

    /// Posts `value` to the child, waiting for room while the child is not reading and the
    /// send queue is at its limit ([`ForkOptions::max_queued_bytes`]), where
    /// [`post_message`](Self::post_message) would fail with [`Error::QueueFull`]:
    /// back-pressure for a producer that must not lose messages.
    ///
    /// # Errors
    ///
    /// As [`post_message`](Self::post_message), except `QueueFull`.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a message is queued whole when the future completes, or not at all.
    ///
    /// [`ForkOptions::max_queued_bytes`]: crate::ForkOptions::max_queued_bytes
    pub async fn send<T: Serialize + ?Sized>(&self, value: &T) -> Result<(), Error> {
        send_with(&self.port, || self.post_message(value)).await
    }

    /// Posts raw bytes to the child, waiting for room as [`send`](Self::send) does.
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send).
    pub async fn send_bytes(&self, bytes: &[u8]) -> Result<(), Error> {
        send_with(&self.port, || self.post_bytes(bytes)).await
    }

    /// Posts raw bytes to the child, without encoding them.
    ///
    /// # Errors
    ///
    /// As [`post_message`](Self::post_message).
    pub fn post_bytes(&self, bytes: &[u8]) -> Result<(), Error> {
        self.post(|buf, cap| raw_payload(buf, bytes, cap), Vec::new())
    }

    fn post<F>(&self, fill: F, transfer: Vec<Transferable>) -> Result<(), Error>
    where
        F: FnOnce(&mut Vec<u8>, usize) -> Result<(), utility_process_wire::Error>,
    {
        if self.exit.borrow().is_some() {
            return Err(Error::Closed { peer: self.peer() });
        }
        post_on(&self.port, fill, transfer, || self.peer())
    }

    /// Waits for the next event; `None` after [`Event::Exit`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future (in `tokio::select!`, say) loses no event.
    pub async fn next_event(&mut self) -> Option<Event> {
        loop {
            if let Some(answer) = self.event_without_waiting() {
                return self.traced(answer);
            }
            let step = {
                let port = &self.port;
                let exit = &mut self.exit;
                let read_port = self.events.order.reading_port();
                let reports = &mut self.reports;
                let cut_short = self.events.cut_short_deadline;
                tokio::select! {
                    biased;
                    _ = tokio::time::sleep_until(cut_short.unwrap_or_else(Instant::now)), if cut_short.is_some() => Step::Reported,
                    _ = async {
                        let changed = match reports {
                            Some(reports) => reports.changed().await.is_ok(),
                            None => false,
                        };
                        if !changed {
                            std::future::pending::<()>().await;
                        }
                    } => Step::Reported,
                    frame = port.recv(), if read_port => Step::Port(frame),
                    status = exit.wait_for(Option::is_some) => {
                        // The sender lives in `self.child`: the channel cannot close.
                        Step::Exited(status.ok().and_then(|s| *s).unwrap_or(ExitStatus::from_raw(None)))
                    }
                }
            };
            match step {
                Step::Port(result) => {
                    if let Some(event) = self.on_port(result) {
                        return self.traced(Some(event));
                    }
                }
                Step::Exited(status) => self.on_exit(status),
                Step::Reported => {}
            }
        }
    }

    /// Waits for the next event, blocking this thread: [`next_event`](Self::next_event) for
    /// programs without an async runtime. The same events, in the same order.
    pub fn next_event_blocking(&mut self) -> Option<Event> {
        loop {
            if let Some(answer) = self.event_without_waiting() {
                return self.traced(answer);
            }
            let published = *self.exit.borrow();
            if let Some(status) = published {
                self.on_exit(status);
                continue;
            }
            if self.events.order.reading_port() {
                // A frame already read (or, in low-latency mode, one that comes during the
                // spin); otherwise wait below, then read.
                let step = match self.port.try_recv_blocking_step() {
                    Ok(TryRecv::Frame(frame)) => Some(Ok(Some(frame))),
                    Ok(TryRecv::Closed) => Some(Ok(None)),
                    Ok(TryRecv::WouldBlock) => None,
                    Err(e) => Some(Err(e)),
                };
                if let Some(step) = step {
                    if let Some(event) = self.on_port(step) {
                        return self.traced(Some(event));
                    }
                    continue;
                }
            }
            // Wait for the port, or for the child's end. Once the child has ended, the
            // library's thread reaps it and publishes its status within moments: look again
            // shortly rather than wait on a pidfd that stays readable. Whether it has ended is
            // what the last poll said of its pidfd (no `waitid` per message).
            let ended = self.events.child_ended;
            let mut timeout = ended.then_some(Duration::from_micros(100));
            if let Some(deadline) = self.events.cut_short_deadline {
                let left = deadline.saturating_duration_since(Instant::now());
                timeout = Some(timeout.map_or(left, |t| t.min(left)));
            }
            let port = (self.events.order.reading_port()).then(|| self.port.source());
            match self.child.wait(port.as_ref(), !ended, timeout) {
                Ok(child_ended) => self.events.child_ended |= child_ended,
                // A failed wait: fall back to asking the OS directly.
                Err(_) => self.events.child_ended = self.child.has_exited(),
            }
            if self.events.order.reading_port() {
                let step = match self.port.try_recv() {
                    Ok(TryRecv::Frame(frame)) => Ok(Some(frame)),
                    Ok(TryRecv::Closed) => Ok(None),
                    Ok(TryRecv::WouldBlock) => continue,
                    Err(e) => Err(e),
                };
                if let Some(event) = self.on_port(step) {
                    return self.traced(Some(event));
                }
            }
        }
    }

    /// Records `event` in the child's span (every event but a message, which is the hot
    /// path), and passes it on.
    fn traced(&self, event: Option<Event>) -> Option<Event> {
        let span = &self.child.span;
        match &event {
            Some(Event::Exit(status)) => tracing::info!(
                parent: span,
                code = status.code(),
                %status,
                "exited"
            ),
            Some(Event::Error(error)) => trace_error(span, error),
            _ => {}
        }
        event
    }

    /// What `next_event` can answer without waiting: `Some(answer)`, or `None` when it must
    /// wait for the port or for the child's end.
    fn event_without_waiting(&mut self) -> Option<Option<Event>> {
        if self.events.order.finished() {
            return Some(None);
        }
        if let Some(spawn) = self.events.order.tell_spawn() {
            return Some(Some(spawn));
        }
        // What the child's confinement reported comes before what it wrote after.
        if let Some(error) = self.reported_error() {
            return Some(Some(Event::Error(error)));
        }
        if let Some(deadline) = self.events.cut_short_deadline {
            if self.events.order.end_known() || self.exit.borrow().is_some() {
                self.events.cut_short_deadline = None;
            } else if Instant::now() >= deadline && !self.child.has_exited() {
                self.events.cut_short_deadline = None;
                return Some(Some(self.violation(Violation::CutShort)));
            }
        }
        loop {
            match self.events.order.next() {
                Next::Tell(event) => return Some(Some(event)),
                Next::Finished => return Some(None),
                Next::Wait => return None,
                Next::DrainPort => {
                    // Drain what the child wrote before it ended, then tell the end.
                    let step = match self.port.try_recv() {
                        Ok(TryRecv::Frame(frame)) => Ok(Some(frame)),
                        Ok(TryRecv::Closed | TryRecv::WouldBlock) => Ok(None),
                        Err(e) => Err(e),
                    };
                    if let Some(event) = self.on_port(step) {
                        return Some(Some(event));
                    }
                }
            }
        }
    }

    /// The child has ended and been reaped.
    fn on_exit(&mut self, status: ExitStatus) {
        let error = self.abnormal_end(status);
        self.events.order.ended(status, error);
    }

    /// Handles what the port gave; returns an event to report, if any. What the child
    /// reported through its report pipe before it wrote the frame comes first.
    fn on_port(&mut self, result: Result<Option<Incoming>, RecvError>) -> Option<Event> {
        let event = self.on_frame(result)?;
        if matches!(event, Event::Message(_)) {
            if let Some(error) = self.reported_error() {
                self.events.order.hold(event);
                return Some(Event::Error(error));
            }
        }
        Some(event)
    }

    fn on_frame(&mut self, result: Result<Option<Incoming>, RecvError>) -> Option<Event> {
        let frame = match result {
            Ok(Some(frame)) => frame,
            Ok(None) => {
                self.events.order.port_done();
                if !self.events.order.end_known() && self.port.closed_mid_frame() {
                    // A child that dies mid-send is not to blame; one that lives on is.
                    self.events.cut_short_deadline =
                        Instant::now().checked_add(self.child.kill_grace);
                }
                return None;
            }
            Err(RecvError::Protocol(e)) => return Some(self.violation(Violation::Frame(e))),
            Err(RecvError::Descriptors(problem)) => {
                return Some(self.violation(Violation::Descriptors(problem)))
            }
            Err(RecvError::Io(e)) => return Some(self.violation(Violation::Read(e))),
        };
        match frame {
            Incoming::Hello { .. } if self.events.hello_seen => {
                Some(self.violation(Violation::DuplicateHello))
            }
            Incoming::Hello { sandboxed } => {
                self.events.hello_seen = true;
                if self.child.confirms_sandbox && !sandboxed {
                    return Some(self.unconfined(None));
                }
                None
            }
            _ if !self.events.hello_seen => Some(self.violation(Violation::MissingHello)),
            Incoming::Message {
                payload,
                attachments,
                objects,
            } => match transferred(attachments, objects) {
                Ok((ports, buffers)) => Some(Event::Message(Message::new(payload, ports, buffers))),
                Err(problem) => Some(self.violation(Violation::Descriptors(problem))),
            },
            Incoming::Panic(report) => {
                self.events.last_panic = Some(report.into());
                None
            }
            Incoming::Failure(report) => {
                self.events.last_failure = Some(report.message);
                None
            }
        }
    }

    /// The child broke the protocol: stop reading, kill it, and say why.
    fn violation(&mut self, violation: Violation) -> Event {
        tracing::warn!(parent: &self.child.span, rule = %violation, "protocol violation: SIGKILL");
        self.events.violated = true;
        self.events.order.port_done();
        self.port.close();
        self.child.kill_now();
        Event::Error(Error::ProtocolViolation {
            service_name: self.service_name.clone(),
            pid: self.child.pid,
            violation,
        })
    }

    /// A child that should be sandboxed is not: stop reading, kill it, and say so.
    fn unconfined(&mut self, errno: Option<i32>) -> Event {
        let _ = self.violation(Violation::MissingHello);
        Event::Error(Error::SandboxNotApplied {
            service_name: self.service_name.clone(),
            pid: self.child.pid,
            errno,
        })
    }

    /// The next thing the child's report pipe said that has not been reported yet.
    fn reported_error(&mut self) -> Option<Error> {
        self.child.drain_reports();
        let reports = self.reports.as_mut()?;
        let (refused, syscall, violation) = {
            let reports = reports.borrow_and_update();
            (
                reports.refused,
                reports.syscalls.get(self.events.syscalls_reported).copied(),
                reports.violation,
            )
        };
        if let (Some(how), false) = (violation, self.events.violated) {
            return match self.violation(Violation::Reports(how)) {
                Event::Error(error) => Some(error),
                _ => None,
            };
        }
        if let (Some(errno), false) = (refused, self.events.refusal_reported) {
            self.events.refusal_reported = true;
            self.events.violated = true;
            return Some(Error::SandboxNotApplied {
                service_name: self.service_name.clone(),
                pid: self.child.pid,
                errno: Some(errno),
            });
        }
        if self.events.violated {
            // After a violation the child's reports mean nothing.
            return None;
        }
        let nr = syscall?;
        self.events.syscalls_reported += 1;
        Some(Error::SandboxViolation {
            service_name: self.service_name.clone(),
            pid: self.child.pid,
            syscall: Some(Syscall::from_raw(nr)),
        })
    }

    /// The error to report for an end the parent did not ask for, if it was one.
    fn abnormal_end(&mut self, status: ExitStatus) -> Option<Error> {
        if self.events.violated {
            return None;
        }
        let ending = self.child.ending(status);
        match ending {
            Ending::Limit(limit) => {
                return Some(Error::LimitExceeded {
                    service_name: self.service_name.clone(),
                    pid: self.child.pid,
                    limit,
                })
            }
            Ending::DeniedCall => {
                return Some(Error::SandboxViolation {
                    service_name: self.service_name.clone(),
                    pid: self.child.pid,
                    syscall: None,
                })
            }
            Ending::Chosen | Ending::Asked | Ending::Crash => {}
        }
        let crashed = ending == Ending::Crash;
        let failed = crashed || status.code().is_some_and(|c| c != 0);
        let failure = self.events.last_failure.take();
        match (failed, self.events.last_panic.take(), crashed) {
            (true, Some(panic), _) => Some(Error::Panicked {
                service_name: self.service_name.clone(),
                pid: self.child.pid,
                panic,
            }),
            (true, None, false) if failure.is_some() => Some(Error::EntryFailed {
                service_name: self.service_name.clone(),
                pid: self.child.pid,
                message: failure.unwrap_or_default(),
            }),
            (_, _, true) => Some(Error::Crashed {
                service_name: self.service_name.clone(),
                pid: self.child.pid,
                status,
            }),
            _ => None,
        }
    }

    /// Asks the child to end: SIGTERM now, SIGKILL if it is still alive after the grace
    /// period ([`ForkOptions::kill_grace`]). When the child ends, whatever is left of its
    /// process tree (its process group) is killed too.
    ///
    /// Returns `true` if a live child was signalled, `false` if it had already ended. The
    /// signal goes through a pidfd, so it can never reach a process that reused the pid.
    /// An end caused by `kill` is not reported as [`Event::Error`].
    pub fn kill(&self) -> bool {
        self.child.kill()
    }

    /// Ends the child at once, without the grace period [`kill`](Self::kill) gives: SIGKILL on
    /// Unix (and its process group with it), its job terminated on Windows (the child and
    /// everything it started). Returns `false` if the child had already ended. An end caused
    /// by it is not reported as [`Event::Error`].
    pub fn kill_now(&self) -> bool {
        if self.exit.borrow().is_some() || self.child.has_exited() {
            return false;
        }
        tracing::debug!(parent: &self.child.span, "kill now");
        self.child.kill_now();
        true
    }

    /// See `unix::UtilityProcessExt::signal`.
    #[cfg(unix)]
    pub(crate) fn send_signal(&self, signal: crate::unix::Signal) -> bool {
        self.child.send_signal(signal)
    }

    /// Lets the child outlive this handle: dropping it no longer kills the child. The child
    /// is still reaped when it ends (no zombie), and still dies with the parent process.
    pub fn detach(mut self) {
        self.detached = true;
    }

    /// Low-latency mode, off by default: while waiting for the child's next message,
    /// [`next_event`](Self::next_event) first polls the socket for up to `spin` before it
    /// parks. On a machine where waking a sleeping thread on another CPU costs tens of
    /// microseconds (a VM), an answer that comes within the budget arrives without that
    /// cost. The budget adapts: it shrinks while nothing comes within it, so a quiet child
    /// soon costs little, and a parked receiver costs nothing. Spinning occupies the
    /// awaiting thread (the runtime runs nothing else on it meanwhile). Set it on both sides
    /// ([`ParentPort::set_low_latency`](crate::ParentPort::set_low_latency)) for round trips.
    /// A process allowed to run on one CPU only does not spin: there it would only keep the
    /// other side from answering.
    pub fn set_low_latency(&self, spin: Option<Duration>) {
        self.port.set_spin(spin);
    }

    /// The child's stdout, once, when it was started with [`Stdio::Pipe`](crate::Stdio::Pipe).
    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.stdout.take()
    }

    /// The child's stderr, once, when it was started with [`Stdio::Pipe`](crate::Stdio::Pipe).
    pub fn take_stderr(&mut self) -> Option<ChildStderr> {
        self.stderr.take()
    }

    fn peer(&self) -> String {
        format!("{} (pid {})", self.service_name, self.child.pid)
    }
}

impl Drop for UtilityProcess {
    fn drop(&mut self) {
        if !self.detached {
            self.kill();
        }
    }
}
