//! The parent side: [`fork`], [`UtilityProcess`] and its [`Event`]s.
//!
//! # Events and their order
//!
//! [`UtilityProcess::next_event`] yields, as Electron does: [`Event::Spawn`] first and once;
//! then the child's messages in the order it sent them; [`Event::Error`] for an end the parent
//! did not ask for; [`Event::Exit`] last and once; then `None`. The order holds without races
//! because exit is only reported after the port has been drained: when the child's pidfd says
//! it has ended, every byte it wrote is already in the socket, and those messages come first.
//!
//! # Who watches the child
//!
//! A task on the library's thread (see `driver.rs`) waits on each child's pidfd. When the
//! child ends it kills whatever is left of the child's process group (the tree lives and dies
//! with the child), then reaps the child, by pidfd, so that there is never a zombie — even for
//! a handle that was leaked, or whose events nobody reads. The same task turns `kill()`'s
//! SIGTERM into a SIGKILL when the grace period runs out.

use std::ffi::{CString, OsStr, OsString};
use std::fmt;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;
use utility_process_wire::{Hello, ENVELOPE_ROOM};

use crate::error::{PanicInfo, SpawnStep, Violation};
use crate::event_order::{EventOrder, Next};
use crate::options::{ForkOptions, Stdio};
use crate::port::{post_on, raw_payload, send_with, transferred, Transferable};
use crate::sandbox::{Missing, Policy, Syscall};
use crate::script::{self, Language};
use crate::stdio::{ChildStderr, ChildStdout};
use crate::sys::channel::Channel;
use crate::sys::confine as confine_sys;
use crate::sys::process::{ChildFd, Pidfd, PreExec, RawExit, SpawnPlan};
use crate::sys::relay;
use crate::transport::{Endpoint, Incoming, Limits, RecvError, TryRecv};
use crate::unix::Signal;
use crate::{driver, sys, Error, Limit, Message, MessagePort};

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

/// How a child ended: an exit code, or (on Unix) a signal, never both.
///
/// What only one OS has is in its extension trait:
/// [`unix::ExitStatusExt`](crate::unix::ExitStatusExt) for the signal and the core dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitStatus {
    code: Option<i32>,
    signal: Option<Signal>,
    core_dumped: bool,
}

impl ExitStatus {
    /// An exit with `code`, for tests that need a status without a process.
    #[cfg(test)]
    pub(crate) fn from_code(code: i32) -> ExitStatus {
        ExitStatus::from_raw(Some(RawExit::Code(code)))
    }

    fn from_raw(raw: Option<RawExit>) -> ExitStatus {
        match raw {
            Some(RawExit::Code(code)) => ExitStatus {
                code: Some(code),
                signal: None,
                core_dumped: false,
            },
            Some(RawExit::Signal {
                signal,
                core_dumped,
            }) => ExitStatus {
                code: None,
                signal: Some(Signal::from_raw(signal)),
                core_dumped,
            },
            None => ExitStatus {
                code: None,
                signal: None,
                core_dumped: false,
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

    /// See [`unix::ExitStatusExt::signal`](crate::unix::ExitStatusExt::signal).
    pub(crate) fn unix_signal(&self) -> Option<Signal> {
        self.signal
    }

    /// See [`unix::ExitStatusExt::core_dumped`](crate::unix::ExitStatusExt::core_dumped).
    pub(crate) fn unix_core_dumped(&self) -> bool {
        self.core_dumped
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.code, self.signal) {
            (Some(code), _) => write!(f, "exit code {code}"),
            (None, Some(signal)) if self.core_dumped => {
                write!(f, "killed by {signal} (core dumped)")
            }
            (None, Some(signal)) => write!(f, "killed by {signal}"),
            // Only when something else reaped the child (SIGCHLD set to SIG_IGN).
            (None, None) => f.write_str("unknown (the child was reaped by someone else)"),
        }
    }
}

/// What the parent and the child's watcher task share.
#[derive(Debug)]
struct Child {
    pid: u32,
    pidfd: Pidfd,
    kill_grace: Duration,
    /// The signals the parent sent (`kill()`, a kill for a protocol violation,
    /// [`UtilityProcess::signal`]), one bit each: an end by one of them was asked for.
    signals_sent: AtomicU64,
    /// When SIGKILL follows the SIGTERM that `kill()` sent.
    kill_deadline: watch::Sender<Option<Instant>>,
    /// Set once, when the child has been reaped.
    exit: watch::Sender<Option<ExitStatus>>,
    /// What the child's limits and sandbox reported, for a confined child.
    reports: Option<ReportPipe>,
    /// The child is sandboxed.
    sandboxed: bool,
    /// The child should confirm its sandbox's second stage in its HELLO (a program the
    /// library runs directly, not an interpreter it started for a script).
    confirms_sandbox: bool,
    /// The CPU-time limit in force (whole seconds), if any.
    cpu_limit: Option<Duration>,
    /// The relay of its output, when the library stands between the child and its streams.
    relay: Option<Relayed>,
    /// The span of this child's life: every event about it is recorded inside it.
    span: tracing::Span,
}

/// What the relay of a child's output found, and whether it has finished.
#[derive(Debug)]
struct Relayed {
    seen: Arc<relay::Seen>,
    /// `true` once every relayed stream has ended.
    done: watch::Receiver<bool>,
}

impl Child {
    /// Records that the parent sent `signal`: an end by it is not an error.
    fn mark_sent(&self, signal: i32) {
        if (1..64).contains(&signal) {
            self.signals_sent.fetch_or(1 << signal, Ordering::SeqCst);
        }
    }

    /// Whether the parent sent `signal`.
    fn was_sent(&self, signal: i32) -> bool {
        (1..64).contains(&signal) && self.signals_sent.load(Ordering::SeqCst) & (1 << signal) != 0
    }
}

/// What a confined child's report pipe said, and what its reaping told.
#[derive(Debug, Default)]
struct Reports {
    /// Distinct system calls its sandbox denied, in order (at most [`MAX_SYSCALL_REPORTS`]).
    syscalls: Vec<u32>,
    /// It aborted after an allocation failed.
    out_of_memory: bool,
    /// Its library refused to start it: the errno.
    refused: Option<i32>,
    /// The CPU time it used, once reaped.
    cpu_time: Option<Duration>,
    /// It broke the report pipe's rules (flooded it, or wrote garbage): how.
    violation: Option<&'static str>,
}

/// A child that tries every forbidden call gets each reported once, up to this many.
const MAX_SYSCALL_REPORTS: usize = 512;

/// A running (or ended) utility process: its port, its events, its life.
///
/// Dropping the handle ends the child as [`kill`](Self::kill) does, unless it was
/// [`detach`](Self::detach)ed.
#[derive(Debug)]
pub struct UtilityProcess {
    service_name: String,
    port: Arc<Endpoint>,
    child: Arc<Child>,
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
    let service_name = options.service_name.clone().unwrap_or_else(|| {
        program
            .file_name()
            .unwrap_or(program.as_os_str())
            .to_string_lossy()
            .into_owned()
    });
    let spawn_error = |step: SpawnStep, source: std::io::Error| Error::Spawn {
        program: program.to_path_buf(),
        service_name: service_name.clone(),
        step,
        source,
    };

    let to_c = |bytes: &[u8]| {
        CString::new(bytes).map_err(|_| {
            spawn_error(
                SpawnStep::Arguments,
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "an argument or environment entry contains a NUL byte",
                ),
            )
        })
    };

    let mut env = environment(&options, &service_name);
    env.remove(OsStr::new(crate::sandbox::ENV));
    let search = env.get(OsStr::new("PATH")).map(|p| p.as_os_str());
    let script = Script::prepare(program, &options, &env, &service_name)?;
    let resolved = match &script {
        Some(script) => script.interpreter.clone(),
        None => resolve_program(program, search).map_err(|e| spawn_error(SpawnStep::Lookup, e))?,
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
    let confinement = Confinement::prepare(&options, &resolved).map_err(|e| match e {
        ConfineError::Missing(missing) => Error::Unenforceable {
            program: program.to_path_buf(),
            service_name: service_name.clone(),
            missing,
        },
        ConfineError::Io(e) => spawn_error(SpawnStep::Sandbox, e),
    })?;
    if let Some(confinement) = &confinement {
        env.insert(crate::sandbox::ENV.into(), confinement.policy.encode());
    }
    let mut argv = vec![to_c(service_name.as_bytes())?];
    if let Some(script) = &script {
        // Python finds its installation from argv[0]: it keeps its own name there.
        if script.language == Language::Python {
            argv[0] = to_c(resolved.as_os_str().as_bytes())?;
        }
        for arg in &script.leading {
            argv.push(to_c(arg.as_bytes())?);
        }
        argv.push(to_c(script.path.as_os_str().as_bytes())?);
    }
    for arg in args {
        argv.push(to_c(arg.as_ref().as_bytes())?);
    }
    let mut envp = Vec::with_capacity(env.len());
    for (key, value) in &env {
        let mut entry = key.clone().into_vec();
        entry.push(b'=');
        entry.extend_from_slice(value.as_bytes());
        envp.push(to_c(&entry)?);
    }
    let cwd = match &options.cwd {
        Some(dir) => Some(to_c(dir.as_os_str().as_bytes())?),
        None => None,
    };

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
    // The HELLO goes into the socket before the child exists: it finds it there at once.
    port.send_frame(
        |encoder, buf| {
            encoder.hello(buf, &Hello::new(limits.max_frame_len));
            Ok(())
        },
        Vec::new(),
    )
    .map_err(|_| setup(std::io::Error::other("cannot write the HELLO")))?;

    let output = ChildOutput::new(&options).map_err(setup)?;
    let (stdout_ours, stdout_theirs) = output.stdout;
    let (stderr_ours, stderr_theirs) = output.stderr;
    let relay = match output.relayed {
        streams if streams.is_empty() => None,
        streams => {
            let seen = Arc::new(relay::Seen::default());
            let (done_tx, done) = watch::channel(false);
            relay::start(streams, Arc::clone(&seen), move || {
                done_tx.send_replace(true);
            })
            .map_err(setup)?;
            Some(Relayed { seen, done })
        }
    };
    let plan = SpawnPlan {
        program: to_c(resolved.as_os_str().as_bytes())?,
        argv,
        envp,
        cwd,
        stdout: stdout_theirs,
        stderr: stderr_theirs,
        port: theirs,
        dev_null: sys::open_dev_null().map_err(setup)?,
        confine: None,
    };
    let mut plan = plan;
    let mut report_pipe = None;
    let mut sandboxed = false;
    let mut cpu_limit = None;
    if let Some(confinement) = confinement {
        sandboxed = confinement.policy.sandbox;
        cpu_limit = confinement.cpu_limit;
        report_pipe = Some(confinement.report_read);
        plan.confine = Some(PreExec {
            rlimits: confinement.rlimits,
            sandbox: confinement.prepared,
            report: confinement.report_write,
        });
    }

    let driver = driver::driver().map_err(setup)?;
    let spawned = driver
        .run(move || {
            let spawned = sys::process::spawn(plan);
            if let (Ok(child), Some(guardian)) =
                (&spawned, driver::driver().ok().and_then(|d| d.guardian()))
            {
                guardian.watch(child.pid);
            }
            spawned
        })
        .map_err(setup)?
        .map_err(|(step, source)| {
            let step = match step {
                sys::process::SpawnStep::Fork => SpawnStep::Fork,
                sys::process::SpawnStep::ProcessGroup => SpawnStep::ProcessGroup,
                sys::process::SpawnStep::ParentDeathSignal => SpawnStep::ParentDeathSignal,
                sys::process::SpawnStep::Descriptors => SpawnStep::Descriptors,
                sys::process::SpawnStep::Chdir => {
                    SpawnStep::Chdir(options.cwd.clone().unwrap_or_default())
                }
                sys::process::SpawnStep::Limits => SpawnStep::Limits,
                sys::process::SpawnStep::Sandbox => SpawnStep::Sandbox,
                sys::process::SpawnStep::Exec => SpawnStep::Exec,
                sys::process::SpawnStep::Pidfd => SpawnStep::Pidfd,
            };
            let error = spawn_error(step, source);
            tracing::debug!(service = %service_name, error = %error, "fork failed");
            error
        })?;

    let span = tracing::info_span!(
        "utility_process",
        service = %service_name,
        pid = spawned.pid,
    );
    tracing::info!(
        parent: &span,
        program = %resolved.display(),
        sandboxed,
        confined = report_pipe.is_some(),
        "spawned"
    );
    let (exit_tx, exit_rx) = watch::channel(None);
    let child = Arc::new(Child {
        pid: spawned.pid as u32,
        pidfd: spawned.pidfd,
        kill_grace: options.kill_grace,
        signals_sent: AtomicU64::new(0),
        kill_deadline: watch::Sender::new(None),
        exit: exit_tx,
        reports: report_pipe.map(|fd| ReportPipe {
            fd: sys::reactor::SharedFd::new(fd),
            parser: std::sync::Mutex::new(ReportParser {
                sandboxed,
                memory_limited: options.limits.memory.is_some(),
                ..ReportParser::default()
            }),
            reports: watch::Sender::new(Reports::default()),
        }),
        sandboxed,
        // An interpreter the library started for a script has no second stage to confirm:
        // its sandbox is the first stage alone, which the parent applied.
        confirms_sandbox: sandboxed && script.is_none(),
        cpu_limit,
        relay,
        span,
    });
    let reports = child.reports.as_ref().map(|r| r.reports.subscribe());
    driver.handle().spawn(tracing::Instrument::instrument(
        watch_child(Arc::clone(&child)),
        child.span.clone(),
    ));

    Ok(UtilityProcess {
        service_name,
        port,
        child,
        exit: exit_rx,
        stdout: stdout_ours.map(ChildStdout::new),
        stderr: stderr_ours.map(ChildStderr::new),
        events: EventState::default(),
        detached: false,
        reports,
    })
}

/// A confined child's limits and sandbox, prepared in the parent.
struct Confinement {
    rlimits: Vec<(sys::RlimitResource, libc::rlimit)>,
    prepared: Option<crate::sandbox::Prepared>,
    policy: Policy,
    report_read: OwnedFd,
    report_write: OwnedFd,
    cpu_limit: Option<Duration>,
}

enum ConfineError {
    Missing(Missing),
    Io(std::io::Error),
}

impl Confinement {
    /// Checks what the options ask for against the machine and prepares it; `None` for a
    /// child with neither limits nor sandbox.
    fn prepare(options: &ForkOptions, program: &Path) -> Result<Option<Confinement>, ConfineError> {
        let limits = &options.limits;
        if limits.is_empty() && options.sandbox.is_none() {
            return Ok(None);
        }
        let mut rlimits = Vec::new();
        let mut cpu_limit = None;
        for (limit, resource, value) in limits.rlimits() {
            if let crate::Backend::Unavailable(why) = crate::Limits::backend(limit) {
                if limits.best_effort {
                    continue;
                }
                return Err(ConfineError::Missing(Missing::Limit { limit, why }));
            }
            if limit == Limit::CpuTime {
                cpu_limit = Some(Duration::from_secs(value.rlim_cur));
            }
            rlimits.push((resource, value));
        }
        let memory_limited = limits.memory.is_some();
        let (prepared, policy) = match &options.sandbox {
            Some(sandbox) => {
                let prepared = sandbox
                    .prepare(program, memory_limited)
                    .map_err(|e| match e {
                        crate::sandbox::PrepareError::Missing(m) => ConfineError::Missing(m),
                        crate::sandbox::PrepareError::Io(e) => ConfineError::Io(e),
                    })?;
                (Some(prepared), sandbox.policy(memory_limited))
            }
            None => (
                None,
                Policy {
                    memory_limited,
                    ..Policy::default()
                },
            ),
        };
        let (report_read, report_write) = sys::pipe().map_err(ConfineError::Io)?;
        sys::set_nonblocking(report_read.as_fd(), true).map_err(ConfineError::Io)?;
        Ok(Some(Confinement {
            rlimits,
            prepared,
            policy,
            report_read,
            report_write,
            cpu_limit,
        }))
    }
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
    env.insert(sys::PORT_ENV.into(), sys::PORT_FD.to_string().into());
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

/// A script to run with an interpreter: what runs it, and the arguments before its own.
struct Script {
    language: Language,
    /// The script, absolute.
    path: PathBuf,
    /// The interpreter, resolved.
    interpreter: PathBuf,
    /// Arguments between the interpreter and the script (Node's bootstrap).
    leading: Vec<OsString>,
}

impl Script {
    /// The npm package whose bootstrap a JavaScript child preloads (`…/lib/bootstrap.cjs`
    /// lives two levels below it).
    fn package_root(&self) -> Option<&Path> {
        let bootstrap = self.leading.last()?;
        Path::new(bootstrap).parent()?.parent()
    }

    /// `None` for a program that is not a script the library knows; the interpreter and
    /// bootstrap for one that is, or why they cannot be found.
    fn prepare(
        program: &Path,
        options: &ForkOptions,
        env: &std::collections::BTreeMap<OsString, OsString>,
        service_name: &str,
    ) -> Result<Option<Script>, Error> {
        let Some(language) = Language::of(program) else {
            return Ok(None);
        };
        let missing = |interpreter: &'static str, how_to_fix: &'static str| {
            let error = Error::MissingInterpreter {
                program: program.to_path_buf(),
                service_name: service_name.to_owned(),
                interpreter,
                how_to_fix,
            };
            tracing::debug!(service = %service_name, error = %error, "fork failed");
            error
        };
        let chosen = match language {
            Language::JavaScript => options.node.as_deref(),
            Language::Python => options.python.as_deref(),
        };
        let name = Path::new(language.interpreter());
        let search = env.get(OsStr::new("PATH")).map(|p| p.as_os_str());
        let interpreter = resolve_program(chosen.unwrap_or(name), search)
            .ok()
            .filter(|path| is_executable_file(path))
            .ok_or_else(|| missing(language.interpreter(), language.how_to_fix()))?;
        let path = if program.is_absolute() {
            program.to_path_buf()
        } else {
            let base = match &options.cwd {
                Some(cwd) => cwd.clone(),
                None => std::env::current_dir().map_err(Error::io("finding the script"))?,
            };
            base.join(program)
        };
        let bootstrap = match language {
            Language::JavaScript => {
                let named = env
                    .get(OsStr::new(script::ENV_NODE_BOOTSTRAP))
                    .map(OsString::as_os_str);
                Some(script::node_bootstrap(&path, named).ok_or_else(|| {
                    missing(
                        "the utility-process npm package's bootstrap",
                        "install the package where the script can find it (npm install \
                         utility-process), or set UTILITY_PROCESS_NODE_BOOTSTRAP to its \
                         lib/bootstrap.cjs",
                    )
                })?)
            }
            Language::Python => None,
        };
        Ok(Some(Script {
            language,
            leading: script::leading_args(language, bootstrap.as_deref()),
            path,
            interpreter,
        }))
    }
}

/// Finds the program as `execvp` would, but in the parent, so a missing program is an error
/// that names it rather than a child that exits 127.
fn resolve_program(program: &Path, path: Option<&OsStr>) -> std::io::Result<PathBuf> {
    if program.as_os_str().as_bytes().contains(&b'/') {
        return if program.is_absolute() {
            Ok(program.to_path_buf())
        } else {
            Ok(std::env::current_dir()?.join(program))
        };
    }
    let default_path = OsStr::new("/usr/local/bin:/usr/bin:/bin");
    let parent_path = std::env::var_os("PATH");
    let search = path.or(parent_path.as_deref()).unwrap_or(default_path);
    std::env::split_paths(search)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable_file(candidate))
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no executable file of that name on PATH",
            )
        })
}

fn is_executable_file(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A child's stdout and stderr: the parent's end (for `Stdio::Pipe`) and the child's, and
/// the streams the library relays.
///
/// A sandboxed child never holds the parent's own stdout or stderr (see `sys::relay`): for
/// `Stdio::Inherit` it gets a pipe whose output the relay copies to the parent's stream. A
/// memory-limited child's stderr always goes through the relay, which watches it for Rust's
/// allocation-failure line and passes it on where `Stdio` says.
struct ChildOutput {
    stdout: (Option<OwnedFd>, ChildFd),
    stderr: (Option<OwnedFd>, ChildFd),
    relayed: Vec<relay::Stream>,
}

impl ChildOutput {
    fn new(options: &ForkOptions) -> std::io::Result<ChildOutput> {
        let sandboxed = options.sandbox.is_some();
        let memory_limited = options.limits.memory.is_some();
        let mut relayed = Vec::new();
        let mut relay = |sink: relay::Sink, watch: bool| -> std::io::Result<ChildFd> {
            let (read, write) = sys::pipe()?;
            relayed.push(relay::Stream {
                source: read,
                sink,
                watch_allocation_failure: watch,
            });
            Ok(ChildFd::Fd(write))
        };
        let stdout = match options.stdout {
            Stdio::Inherit if sandboxed => (None, relay(relay::Sink::Parent(1), false)?),
            other => stdio_pair(other)?,
        };
        let stderr = match options.stderr {
            Stdio::Inherit if sandboxed || memory_limited => {
                (None, relay(relay::Sink::Parent(2), memory_limited)?)
            }
            Stdio::Ignore if memory_limited => (None, relay(relay::Sink::Discard, true)?),
            Stdio::Pipe if memory_limited => {
                let (ours, theirs) = sys::pipe()?;
                (Some(ours), relay(relay::Sink::Pipe(theirs), true)?)
            }
            other => stdio_pair(other)?,
        };
        Ok(ChildOutput {
            stdout,
            stderr,
            relayed,
        })
    }
}

/// The parent's and the child's ends for one output stream.
fn stdio_pair(stdio: Stdio) -> std::io::Result<(Option<OwnedFd>, ChildFd)> {
    match stdio {
        Stdio::Inherit => Ok((None, ChildFd::Inherit)),
        Stdio::Ignore => Ok((None, ChildFd::Fd(sys::open_dev_null()?))),
        Stdio::Pipe => {
            let (read, write) = sys::pipe()?;
            Ok((Some(read), ChildFd::Fd(write)))
        }
    }
}

/// The watcher task: waits for the child to end, enforces the kill grace period, kills what is
/// left of the child's process group, reaps the child and publishes its status.
async fn watch_child(child: Arc<Child>) {
    let readiness =
        sys::reactor::register(child.pidfd.shared_fd(), tokio::io::Interest::READABLE).ok();
    let report_readiness = child
        .reports
        .as_ref()
        .and_then(|pipe| sys::reactor::register(&pipe.fd, tokio::io::Interest::READABLE).ok());
    let mut deadline_rx = child.kill_deadline.subscribe();
    let mut sigkill_sent = false;
    let mut reports_pending = false;
    let far_future = Instant::now() + Duration::from_secs(86400 * 365);
    loop {
        if child.pidfd.has_exited().unwrap_or(true) {
            break;
        }
        let deadline = if sigkill_sent {
            None
        } else {
            *deadline_rx.borrow_and_update()
        };
        tokio::select! {
            ready = async {
                match &readiness {
                    Some(afd) => afd.readable().await.map(|mut g| g.clear_ready()).is_ok(),
                    None => false,
                }
            } => {
                if !ready {
                    // No registration: fall back to looking every few milliseconds.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            _ = tokio::time::sleep_until(deadline.unwrap_or(far_future)), if deadline.is_some() => {
                tracing::warn!(grace = ?child.kill_grace, "still alive after the kill grace period: SIGKILL");
                let _ = child.pidfd.send_signal(libc::SIGKILL);
                sys::process::kill_process_group(child.pid as libc::pid_t, libc::SIGKILL);
                sigkill_sent = true;
            }
            _ = deadline_rx.changed() => {}
            _ = async {
                match &report_readiness {
                    Some(afd) => {
                        if let Ok(mut guard) = afd.readable().await {
                            guard.clear_ready();
                        }
                    }
                    None => std::future::pending().await,
                }
            }, if !reports_pending => {
                reports_pending = drain_reports(&child);
            }
            // A full pipe is read a bounded slice at a time, other children's work between.
            _ = tokio::task::yield_now(), if reports_pending => {
                reports_pending = drain_reports(&child);
            }
        }
    }
    drop(readiness);
    drop(report_readiness);
    // The tree lives and dies with the child. The child is a zombie now, not yet reaped, so
    // its pid still names its group and nobody else's.
    sys::process::kill_process_group(child.pid as libc::pid_t, libc::SIGKILL);
    let status = loop {
        match child.pidfd.try_reap() {
            Ok(Some(reaped)) => {
                // Everything the child wrote into its report pipe is there now.
                if let Some(pipe) = &child.reports {
                    while pipe.drain() {}
                    pipe.reports
                        .send_modify(|r| r.cpu_time = Some(reaped.cpu_time));
                }
                break ExitStatus::from_raw(Some(reaped.exit));
            }
            Ok(None) => tokio::time::sleep(Duration::from_millis(1)).await,
            // ECHILD: someone else reaped it (the application set SIGCHLD to SIG_IGN, or
            // called waitpid(-1)); its status is lost.
            Err(_) => break ExitStatus::from_raw(None),
        }
    };
    if let Some(guardian) = driver::driver().ok().and_then(|d| d.started_guardian()) {
        guardian.forget(child.pid as libc::pid_t);
    }
    // What the child wrote last (an allocation failure's line, say) is relayed before its
    // end is told; a descendant that kept the pipe open delays that by a moment at most.
    if let Some(relay) = &child.relay {
        let mut done = relay.done.clone();
        let _ = tokio::time::timeout(RELAY_GRACE, done.wait_for(|done| *done)).await;
    }
    child.exit.send_replace(Some(status));
}

/// How long a child's end waits for the relay of its output to finish.
const RELAY_GRACE: Duration = Duration::from_millis(250);

/// Drains the child's report pipe once; a child that broke its rules is killed at once.
/// Returns whether more may be waiting.
fn drain_reports(child: &Child) -> bool {
    let Some(pipe) = &child.reports else {
        return false;
    };
    let more = pipe.drain();
    if let Some(how) = pipe.reports.borrow().violation {
        tracing::warn!(rule = how, "report pipe violation: SIGKILL");
        child.mark_sent(libc::SIGKILL);
        let _ = child.pidfd.send_signal(libc::SIGKILL);
        return false;
    }
    more
}

/// The parent's end of a confined child's report pipe. Both the watcher (to wake the event
/// loop) and the event loop itself (so that a report the child wrote before a message is
/// seen before that message) drain it.
#[derive(Debug)]
struct ReportPipe {
    fd: sys::reactor::SharedFd,
    parser: std::sync::Mutex<ReportParser>,
    reports: watch::Sender<Reports>,
}

impl ReportPipe {
    /// Reads what is there, up to [`REPORT_BYTES_PER_DRAIN`]; `true` when more may be
    /// waiting (drain again after letting other work run).
    fn drain(&self) -> bool {
        let mut parser = self.parser.lock().unwrap_or_else(|p| p.into_inner());
        parser.drain(self.fd.as_fd(), &self.reports)
    }
}

/// The most one drain reads, so that a child that keeps its pipe full cannot keep the
/// library's thread (which forks, reaps and reports for every child) to itself.
const REPORT_BYTES_PER_DRAIN: usize = 4096;

/// The most a child may write into its report pipe in its whole life. The library's own
/// handlers report each denied call once (at most a few kilobytes): a child past this is
/// flooding, and that is a protocol violation.
const REPORT_BYTES_PER_LIFE: usize = 64 * 1024;

/// Turns the report pipe's bytes into [`Reports`]; a report cut across two reads is kept.
/// The bytes come from the child: hostile input, bounded per drain and per life, and a byte
/// that starts no known report is a violation.
#[derive(Debug, Default)]
struct ReportParser {
    /// The child is sandboxed: denied calls can be reported.
    sandboxed: bool,
    /// The child has a memory limit: an allocation failure can be reported.
    memory_limited: bool,
    partial: Vec<u8>,
    /// Bytes read so far, over the child's life.
    total: usize,
    /// A violation was found: nothing more is read.
    done: bool,
}

impl ReportParser {
    fn drain(
        &mut self,
        pipe: std::os::fd::BorrowedFd<'_>,
        reports: &watch::Sender<Reports>,
    ) -> bool {
        let mut buf = [0u8; 512];
        let mut update = Reports::default();
        let mut changed = false;
        let mut read = 0;
        let mut more = false;
        while !self.done {
            if read >= REPORT_BYTES_PER_DRAIN {
                more = true;
                break;
            }
            let n = match confine_sys::read_reports(pipe, &mut buf) {
                Ok(n @ 1..) => n,
                _ => break,
            };
            read += n;
            self.total += n;
            if self.total > REPORT_BYTES_PER_LIFE {
                update.violation = Some("it flooded its report pipe");
                self.done = true;
                break;
            }
            self.partial.extend_from_slice(&buf[..n]);
            let at = self.parse(&mut update);
            self.partial.drain(..at);
            changed = true;
        }
        if changed || update.violation.is_some() {
            reports.send_modify(|r| {
                r.out_of_memory |= update.out_of_memory;
                r.refused = r.refused.or(update.refused);
                r.violation = r.violation.or(update.violation);
                for nr in update.syscalls {
                    if r.syscalls.len() < MAX_SYSCALL_REPORTS && !r.syscalls.contains(&nr) {
                        r.syscalls.push(nr);
                    }
                }
            });
        }
        more
    }

    /// Parses the whole reports at the front of `partial` into `update`; returns how many
    /// bytes it used (a report cut short stays for the next read).
    fn parse(&mut self, update: &mut Reports) -> usize {
        let mut at = 0;
        while at < self.partial.len() {
            let rest = &self.partial[at..];
            let word = |r: &[u8]| r.get(1..5).map(|b| [b[0], b[1], b[2], b[3]]);
            let possible = match rest[0] {
                confine_sys::REPORT_OUT_OF_MEMORY => self.memory_limited,
                confine_sys::REPORT_SYSCALL => self.sandboxed,
                _ => true,
            };
            if !possible {
                update.violation = Some("it reported what its confinement cannot produce");
                self.done = true;
                return self.partial.len();
            }
            match rest[0] {
                confine_sys::REPORT_OUT_OF_MEMORY => {
                    update.out_of_memory = true;
                    at += 1;
                }
                confine_sys::REPORT_SYSCALL | confine_sys::REPORT_REFUSED => {
                    let Some(bytes) = word(rest) else { break };
                    if rest[0] == confine_sys::REPORT_SYSCALL {
                        let nr = u32::from_le_bytes(bytes);
                        if !update.syscalls.contains(&nr) {
                            update.syscalls.push(nr);
                        }
                    } else {
                        update.refused = Some(i32::from_le_bytes(bytes));
                    }
                    at += 5;
                }
                _ => {
                    update.violation = Some("it wrote a report the library does not define");
                    self.done = true;
                    return self.partial.len();
                }
            }
        }
        at
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
            match sys::wait_any(
                port.as_ref().map(|p| p.as_object()),
                (!ended).then(|| self.child.pidfd.shared_fd().as_fd()),
                timeout,
            ) {
                Ok(pidfd_ready) => self.events.child_ended |= pidfd_ready,
                // A failed poll: fall back to asking the kernel directly.
                Err(_) => self.events.child_ended = self.child.pidfd.has_exited().unwrap_or(true),
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
                signal = status.unix_signal().map(|s| s.as_raw()),
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
            } else if Instant::now() >= deadline && !self.child.pidfd.has_exited().unwrap_or(true) {
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
        self.child.mark_sent(libc::SIGKILL);
        let _ = self.child.pidfd.send_signal(libc::SIGKILL);
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
        if let Some(pipe) = &self.child.reports {
            pipe.drain();
        }
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

    /// The limit that ended the child, if one did.
    fn limit_reached(&self, status: ExitStatus) -> Option<Limit> {
        let reports = self.reports.as_ref()?.borrow();
        let signal = status.unix_signal()?;
        match signal.as_raw() {
            libc::SIGXCPU => Some(Limit::CpuTime),
            libc::SIGXFSZ => Some(Limit::FileSize),
            libc::SIGABRT
                if reports.out_of_memory
                    || self
                        .child
                        .relay
                        .as_ref()
                        .is_some_and(|r| r.seen.allocation_failure.load(Ordering::SeqCst)) =>
            {
                Some(Limit::Memory)
            }
            libc::SIGKILL
                if !self.child.was_sent(libc::SIGKILL)
                    && self
                        .child
                        .cpu_limit
                        .zip(reports.cpu_time)
                        .is_some_and(|(limit, used)| used >= limit) =>
            {
                Some(Limit::CpuTime)
            }
            _ => None,
        }
    }

    /// The error to report for an end the parent did not ask for, if it was one.
    fn abnormal_end(&mut self, status: ExitStatus) -> Option<Error> {
        if self.events.violated {
            return None;
        }
        if let Some(limit) = self.limit_reached(status) {
            return Some(Error::LimitExceeded {
                service_name: self.service_name.clone(),
                pid: self.child.pid,
                limit,
            });
        }
        if self.child.sandboxed && status.unix_signal().map(|s| s.as_raw()) == Some(libc::SIGSYS) {
            return Some(Error::SandboxViolation {
                service_name: self.service_name.clone(),
                pid: self.child.pid,
                syscall: None,
            });
        }
        let unasked_signal = status
            .unix_signal()
            .filter(|s| !self.child.was_sent(s.as_raw()));
        let failed = unasked_signal.is_some() || status.code().is_some_and(|c| c != 0);
        let failure = self.events.last_failure.take();
        match (failed, self.events.last_panic.take(), unasked_signal) {
            (true, Some(panic), _) => Some(Error::Panicked {
                service_name: self.service_name.clone(),
                pid: self.child.pid,
                panic,
            }),
            (true, None, None) if failure.is_some() => Some(Error::EntryFailed {
                service_name: self.service_name.clone(),
                pid: self.child.pid,
                message: failure.unwrap_or_default(),
            }),
            (_, _, Some(_)) => Some(Error::Crashed {
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
        if self.exit.borrow().is_some() || self.child.pidfd.has_exited().unwrap_or(true) {
            return false;
        }
        // SIGTERM now, SIGKILL after the grace period (from the watcher): both asked for.
        self.child.mark_sent(libc::SIGTERM);
        self.child.mark_sent(libc::SIGKILL);
        if self.child.pidfd.send_signal(libc::SIGTERM).is_err() {
            return false;
        }
        tracing::debug!(parent: &self.child.span, grace = ?self.child.kill_grace, "kill: sent SIGTERM");
        // A grace period too long to represent means "never SIGKILL".
        let Some(deadline) = Instant::now().checked_add(self.child.kill_grace) else {
            return true;
        };
        self.child.kill_deadline.send_if_modified(|current| {
            if current.is_none() {
                *current = Some(deadline);
                true
            } else {
                false
            }
        });
        true
    }

    /// See [`unix::UtilityProcessExt::signal`](crate::unix::UtilityProcessExt::signal).
    pub(crate) fn send_signal(&self, signal: Signal) -> bool {
        if self.exit.borrow().is_some() || self.child.pidfd.has_exited().unwrap_or(true) {
            return false;
        }
        self.child.mark_sent(signal.as_raw());
        tracing::debug!(parent: &self.child.span, signal = %signal, "signal sent");
        self.child.pidfd.send_signal(signal.as_raw()).is_ok()
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

    /// The child's stdout, once, when it was started with [`Stdio::Pipe`].
    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.stdout.take()
    }

    /// The child's stderr, once, when it was started with [`Stdio::Pipe`].
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
