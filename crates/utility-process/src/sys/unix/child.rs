//! A child process on Unix: starting it (`launch`), watching it until it is reaped, its
//! report pipe, and how its end is told (`Child::ending`).
//!
//! This is the Unix half of `process.rs`: the neutral layer hands `launch` a [`Launch`] and
//! keeps the [`Child`] it gets back, asking it whether the child has ended, to kill it, and
//! what its end means.
//!
//! # Who watches the child
//!
//! A task on the library's thread (see `driver.rs`) waits on each child's pidfd (Linux) or
//! kqueue (macOS). When the child ends it kills whatever is left of the child's process group
//! (the tree lives and dies with the child), then reaps the child, so that there is never a
//! zombie — even for a handle that was leaked, or whose events nobody reads. The same task
//! turns `kill()`'s SIGTERM into a SIGKILL when the grace period runs out.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::channel::Channel;
use super::confine as confine_sys;
use super::process::{ChildFd, Pidfd, PreExec, SpawnPlan};
use super::relay;
use super::{PORT_ENV, PORT_FD};
use crate::error::SpawnStep;
use crate::options::{ForkOptions, Stdio};
use crate::process::{Ending, Launch, Launched, Reports, MAX_SYSCALL_REPORTS};
use crate::sandbox::{Missing, Policy};
use crate::stdio::{ChildStderr, ChildStdout};
use crate::unix::Signal;
use crate::ExitStatus;
use crate::{driver, sys, Error, Limit};

/// The target of this file's spans and events: the one `process.rs` has, so that a filter
/// on the parent side's life does not depend on which backend runs.
const TARGET: &str = "utility_process::process";

/// Starts a child as `launch` says: the Unix half of `fork` (see `process.rs`).
///
/// Prepares its confinement (limits and sandbox, with the report pipe), its output (pipes,
/// relays), forks it on the library's thread (registered with the guardian), and starts the
/// task that watches it.
pub(crate) fn launch(launch: Launch<'_>) -> Result<Launched, Error> {
    let Launch {
        program,
        resolved,
        options,
        service_name,
        confirms_sandbox,
        ..
    } = launch;
    let mut env = launch.env;
    let spawn_error = |step: SpawnStep, source: io::Error| Error::Spawn {
        program: program.to_path_buf(),
        service_name: service_name.to_owned(),
        step,
        source,
    };
    let setup = |e| spawn_error(SpawnStep::Fork, e);
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

    let confinement = Confinement::prepare(options, resolved).map_err(|e| match e {
        ConfineError::Missing(missing) => Error::Unenforceable {
            program: program.to_path_buf(),
            service_name: service_name.to_owned(),
            missing,
        },
        ConfineError::Io(e) => spawn_error(SpawnStep::Sandbox, e),
    })?;
    if let Some(confinement) = &confinement {
        env.insert(crate::sandbox::ENV.into(), confinement.policy.encode());
    }
    env.insert(PORT_ENV.into(), PORT_FD.to_string().into());
    let argv = launch
        .argv
        .iter()
        .map(|arg| to_c(arg.as_bytes()))
        .collect::<Result<Vec<_>, _>>()?;
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

    let output = ChildOutput::new(options).map_err(setup)?;
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
        port: launch.port,
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
            tracing::debug!(target: TARGET, service = %service_name, error = %error, "fork failed");
            error
        })?;

    let span = tracing::info_span!(
        target: TARGET, "utility_process",
        service = %service_name,
        pid = spawned.pid,
    );
    tracing::info!(
        target: TARGET, parent: &span,
        program = %resolved.display(),
        sandboxed,
        confined = report_pipe.is_some(),
        "spawned"
    );
    let exit_tx = watch::Sender::new(None);
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
        confirms_sandbox: sandboxed && confirms_sandbox,
        cpu_limit,
        relay,
        span,
    });
    driver.handle().spawn(tracing::Instrument::instrument(
        watch_child(Arc::clone(&child)),
        child.span.clone(),
    ));

    Ok(Launched {
        child,
        stdout: stdout_ours.map(ChildStdout::new),
        stderr: stderr_ours.map(ChildStderr::new),
    })
}

/// What the parent and the child's watcher task share.
#[derive(Debug)]
pub(crate) struct Child {
    pub(crate) pid: u32,
    pidfd: Pidfd,
    pub(crate) kill_grace: Duration,
    /// The signals the parent sent (`kill()`, a kill for a protocol violation,
    /// `UtilityProcessExt::signal`), one bit each: an end by one of them was asked for.
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
    pub(crate) confirms_sandbox: bool,
    /// The CPU-time limit in force (whole seconds), if any.
    cpu_limit: Option<Duration>,
    /// The relay of its output, when the library stands between the child and its streams.
    relay: Option<Relayed>,
    /// The span of this child's life: every event about it is recorded inside it.
    pub(crate) span: tracing::Span,
}

/// What the relay of a child's output found, and whether it has finished.
#[derive(Debug)]
struct Relayed {
    seen: Arc<relay::Seen>,
    /// `true` once every relayed stream has ended.
    done: watch::Receiver<bool>,
}

impl Child {
    /// The child's status, published once when it has been reaped.
    pub(crate) fn exit_receiver(&self) -> watch::Receiver<Option<ExitStatus>> {
        self.exit.subscribe()
    }

    /// What its confinement reports, for a confined child.
    pub(crate) fn reports_receiver(&self) -> Option<watch::Receiver<Reports>> {
        self.reports.as_ref().map(|r| r.reports.subscribe())
    }

    /// Whether the child has ended (reaped or not); `true` when the OS cannot tell.
    pub(crate) fn has_exited(&self) -> bool {
        self.pidfd.has_exited().unwrap_or(true)
    }

    /// Reads what the child's report pipe holds now, so that a report it wrote before a
    /// message is seen before that message.
    pub(crate) fn drain_reports(&self) {
        if let Some(pipe) = &self.reports {
            pipe.drain();
        }
    }

    /// Blocks until `port` is readable, the child ends (when `watch_exit`), or `timeout`
    /// passes. Returns whether the child has ended.
    pub(crate) fn wait(
        &self,
        port: Option<&Channel>,
        watch_exit: bool,
        timeout: Option<Duration>,
    ) -> io::Result<bool> {
        sys::wait_any(
            port.map(Channel::as_object),
            watch_exit.then(|| self.pidfd.shared_fd().as_fd()),
            timeout,
        )
    }

    /// Asks the child to end: SIGTERM now, SIGKILL from the watcher if it is still alive
    /// after the grace period. `false` if it had already ended.
    pub(crate) fn kill(&self) -> bool {
        if self.exit.borrow().is_some() || self.has_exited() {
            return false;
        }
        // SIGTERM now, SIGKILL after the grace period (from the watcher): both asked for.
        self.mark_sent(libc::SIGTERM);
        self.mark_sent(libc::SIGKILL);
        if self.pidfd.send_signal(libc::SIGTERM).is_err() {
            return false;
        }
        tracing::debug!(target: TARGET, parent: &self.span, grace = ?self.kill_grace, "kill: sent SIGTERM");
        crate::process::arm_kill_deadline(&self.kill_deadline, self.kill_grace);
        true
    }

    /// Kills the child at once (SIGKILL): for a child that broke the protocol.
    pub(crate) fn kill_now(&self) {
        self.mark_sent(libc::SIGKILL);
        let _ = self.pidfd.send_signal(libc::SIGKILL);
    }

    /// Sends `signal` through the pidfd; an end by it is not a crash.
    pub(crate) fn send_signal(&self, signal: Signal) -> bool {
        if self.exit.borrow().is_some() || self.has_exited() {
            return false;
        }
        self.mark_sent(signal.as_raw());
        tracing::debug!(target: TARGET, parent: &self.span, signal = %signal, "signal sent");
        self.pidfd.send_signal(signal.as_raw()).is_ok()
    }

    /// What the child's end means: a chosen exit, one the parent asked for, a crash, a
    /// limit, or its sandbox's kill.
    pub(crate) fn ending(&self, status: ExitStatus) -> Ending {
        if let Some(limit) = self.limit_reached(status) {
            return Ending::Limit(limit);
        }
        match status.unix_signal() {
            None => Ending::Chosen,
            Some(signal) if self.sandboxed && signal.as_raw() == libc::SIGSYS => Ending::DeniedCall,
            Some(signal) if self.was_sent(signal.as_raw()) => Ending::Asked,
            Some(_) => Ending::Crash,
        }
    }

    /// The limit that ended the child, if one did.
    fn limit_reached(&self, status: ExitStatus) -> Option<Limit> {
        let reports = self.reports.as_ref()?.reports.borrow();
        let signal = status.unix_signal()?;
        match signal.as_raw() {
            libc::SIGXCPU => Some(Limit::CpuTime),
            libc::SIGXFSZ => Some(Limit::FileSize),
            libc::SIGABRT
                if reports.out_of_memory
                    || self
                        .relay
                        .as_ref()
                        .is_some_and(|r| r.seen.allocation_failure.load(Ordering::SeqCst)) =>
            {
                Some(Limit::Memory)
            }
            libc::SIGKILL
                if !self.was_sent(libc::SIGKILL)
                    && self
                        .cpu_limit
                        .zip(reports.cpu_time)
                        .is_some_and(|(limit, used)| used >= limit) =>
            {
                Some(Limit::CpuTime)
            }
            _ => None,
        }
    }

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
        for (limit, resource, value) in confine_sys::rlimits(limits) {
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

/// A child's service name when the options give none: the program's file name.
pub(crate) fn default_service_name(program: &Path) -> String {
    program
        .file_name()
        .unwrap_or(program.as_os_str())
        .to_string_lossy()
        .into_owned()
}

/// Finds the program as `execvp` would, but in the parent, so a missing program is an error
/// that names it rather than a child that exits 127.
pub(crate) fn resolve_program(program: &Path, path: Option<&OsStr>) -> std::io::Result<PathBuf> {
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

pub(crate) fn is_executable_file(path: &Path) -> bool {
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
                tracing::warn!(target: TARGET, grace = ?child.kill_grace, "still alive after the kill grace period: SIGKILL");
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
        tracing::warn!(target: TARGET, rule = how, "report pipe violation: SIGKILL");
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
