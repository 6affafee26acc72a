//! A child process on Windows: starting it (`launch`), watching it until it ends, killing it,
//! and how its end is told (`Child::ending`) — the Windows half of `process.rs`, over
//! `spawn.rs` (`CreateProcessW` and the child's job object).
//!
//! # What `kill` does here
//!
//! Windows has no polite signal a process without a console can catch. `kill()` therefore
//! asks through the port: it closes the parent's side of the child's parent port (the child's
//! `recv` returns `None`, which a utility process takes as the request to finish), and if the
//! child is still running when the grace period ends, terminates its job — the child and
//! every process it started. Messages the child posts meanwhile still arrive.
//!
//! # The tree lives and dies with the child
//!
//! When the child ends, whatever is left in its job is terminated (as a Unix child's process
//! group is killed), and the job's kill-on-close takes the whole tree down with the parent,
//! however the parent ends: the parent holds the only handle to each job.

use std::ffi::OsString;
use std::io;
use std::os::windows::io::AsRawHandle;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::channel::Channel;
use super::spawn::{self, ChildStdio, JobLimit, JobLimits, Launcher, SpawnPlan};
use super::{confine, stdio_pipe, Interest, PORT_ENV};
use crate::error::SpawnStep;
use crate::options::Stdio;
use crate::process::{Ending, Launch, Launched, Reports};
use crate::sandbox::Missing;
use crate::stdio::{ChildStderr, ChildStdout};
use crate::ExitStatus;
use crate::{driver, Backend, Error, Limit};

/// The target of this file's spans and events: the one `process.rs` has.
const TARGET: &str = "utility_process::process";

/// The exit code a child's job is terminated with when the parent ends it (as
/// `std::process::Child::kill` does on Windows).
const TERMINATED: u32 = 1;

/// How often a blocking wait on a port also looks at whether the child has ended, for the
/// rare child whose port outlives it (a process it started holds a copy).
const EXIT_CHECK: Duration = Duration::from_millis(50);

/// What the parent and the child's watcher task share.
#[derive(Debug)]
pub(crate) struct Child {
    pub(crate) pid: u32,
    pub(crate) kill_grace: Duration,
    /// Never: a Windows sandbox has no second stage for the child to confirm (the parent
    /// checked the child's token and job before it ran).
    pub(crate) confirms_sandbox: bool,
    pub(crate) span: tracing::Span,
    process: spawn::Child,
    /// The parent's end of the child's port, closed by `kill` to ask the child to finish.
    port: Channel,
    /// The parent ended (or asked to end) the child: an end by termination was asked for.
    asked: AtomicBool,
    /// When `kill`'s grace period ends.
    kill_deadline: watch::Sender<Option<Instant>>,
    /// Set once, when the child has ended.
    exit: watch::Sender<Option<ExitStatus>>,
}

/// Starts a child as `launch` says: the Windows half of `fork` (see `process.rs`).
pub(crate) fn launch(launch: Launch<'_>) -> Result<Launched, Error> {
    let Launch {
        program,
        resolved,
        options,
        service_name,
        ours,
        ..
    } = launch;
    let spawn_error = |step: SpawnStep, source: io::Error| Error::Spawn {
        program: program.to_path_buf(),
        service_name: service_name.to_owned(),
        step,
        source,
    };
    let unenforceable = |missing: Missing| Error::Unenforceable {
        program: program.to_path_buf(),
        service_name: service_name.to_owned(),
        missing,
    };
    // The sandbox is decided before anything is created: what Windows cannot give is refused
    // here, and how the child will be started (AppContainer, or best effort's restricted
    // token) is prepared.
    let sandbox = match &options.sandbox {
        None => None,
        Some(sandbox) => {
            let request = confine::request(&sandbox.policy(false)).map_err(unenforceable)?;
            let (launcher, expected) = confine::prepare(&request).map_err(|r| match r {
                confine::Refusal::Missing(missing) => unenforceable(missing),
                confine::Refusal::Io(e) => spawn_error(SpawnStep::Sandbox, e),
            })?;
            Some((request, launcher, expected))
        }
    };
    let mut limits = job_limits(&options.limits).map_err(unenforceable)?;
    if let Some((request, ..)) = &sandbox {
        if !request.exec {
            limits.processes = Some(limits.processes.map_or(1, |n| n.min(1)));
        }
    }

    let mut env: Vec<(OsString, OsString)> = launch.env.into_iter().collect();
    let port_value = launch.port.as_raw_handle() as usize;
    env.push((PORT_ENV.into(), port_value.to_string().into()));
    if sandbox.is_some() {
        // Tells the child's `sandbox::status()` to read its token and job.
        env.push((crate::sandbox::ENV.into(), "windows".into()));
    }
    let (stdout_ours, stdout) =
        stdio_pair(options.stdout).map_err(|e| spawn_error(SpawnStep::Descriptors, e))?;
    let (stderr_ours, stderr) =
        stdio_pair(options.stderr).map_err(|e| spawn_error(SpawnStep::Descriptors, e))?;
    let (launcher, checks) = match sandbox {
        Some((request, launcher, expected)) => (launcher, Some((request, expected))),
        None => (Launcher::Ours, None),
    };
    let in_app_container = matches!(launcher, Launcher::AppContainer { .. });
    let plan = SpawnPlan {
        program: resolved.to_path_buf(),
        args: launch.argv.into_iter().skip(1).collect(),
        env,
        cwd: options.cwd.clone(),
        stdin: ChildStdio::Null,
        stdout,
        stderr,
        inherit: vec![launch.port],
        limits,
        title: Some(service_name.into()),
        launcher,
    };
    let failed = |(step, source): (spawn::SpawnStep, io::Error)| {
        let error = match step {
            // ERROR_ACCESS_DENIED: the AppContainer cannot open the program or its directory.
            spawn::SpawnStep::CreateProcess
                if in_app_container && source.raw_os_error() == Some(5) =>
            {
                unenforceable(Missing::AppContainerAccess {
                    path: resolved.to_path_buf(),
                })
            }
            spawn::SpawnStep::Job | spawn::SpawnStep::AssignJob => {
                spawn_error(SpawnStep::Limits, source)
            }
            spawn::SpawnStep::Handles => spawn_error(SpawnStep::Descriptors, source),
            // ERROR_DIRECTORY: the working directory is not one.
            spawn::SpawnStep::CreateProcess
                if options.cwd.is_some() && source.raw_os_error() == Some(267) =>
            {
                spawn_error(
                    SpawnStep::Chdir(options.cwd.clone().unwrap_or_default()),
                    source,
                )
            }
            spawn::SpawnStep::CreateProcess | spawn::SpawnStep::Resume => {
                spawn_error(SpawnStep::Exec, source)
            }
            spawn::SpawnStep::Watch => spawn_error(SpawnStep::Pidfd, source),
        };
        tracing::debug!(target: TARGET, service = %service_name, error = %error, "fork failed");
        error
    };
    let suspended = spawn::spawn_suspended(plan).map_err(failed)?;
    let held = match &checks {
        None => None,
        Some((request, expected)) => Some(check(&suspended, request, expected).map_err(|e| {
            // Never resumed: it ran no instruction. Its job goes with `suspended` too.
            let _ = suspended.job().terminate(TERMINATED);
            match e {
                Ok(missing) => unenforceable(missing),
                Err(io) => spawn_error(SpawnStep::Sandbox, io),
            }
        })?),
    };
    let process = suspended.resume().map_err(failed)?;
    // Handles the child sends on its port are pulled out of its table, and ours pushed in.
    ours.broker_for(process.process_arc());

    let pid = process.pid();
    let span = tracing::info_span!(target: TARGET, "utility_process", service = %service_name, pid);
    tracing::info!(target: TARGET, parent: &span, program = %resolved.display(), sandboxed = held.is_some(), confined = !options.limits.is_empty(), "spawned");
    if let Some(held) = held {
        tracing::info!(target: "utility_process::sandbox", parent: &span, app_container = held.app_container, low_integrity = held.low_integrity, ui_limits = held.ui_limits, "sandbox verified before the child's first instruction");
    }
    let child = Arc::new(Child {
        pid,
        kill_grace: options.kill_grace,
        confirms_sandbox: false,
        span,
        process,
        port: ours.clone(),
        asked: AtomicBool::new(false),
        kill_deadline: watch::Sender::new(None),
        exit: watch::Sender::new(None),
    });
    let driver = driver::driver().map_err(|e| spawn_error(SpawnStep::Fork, e))?;
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

/// Puts the UI limits on the suspended child's job and checks its token and job (see
/// `confine`): what holds, or why the child must not run — `Ok(missing)` for a layer that
/// did not hold, `Err` for a call that failed — unless the sandbox is best effort, when what
/// holds is all there is.
fn check(
    suspended: &spawn::Suspended,
    request: &confine::Request,
    expected: &confine::Expected,
) -> Result<crate::sandbox::Enforcement, Result<Missing, io::Error>> {
    if let Err(e) = suspended.job().restrict_ui() {
        if !request.best_effort {
            return Err(Err(e));
        }
    }
    let observed = confine::observe(suspended);
    let (held, shortfalls) = confine::judge(expected, &observed);
    if shortfalls.is_empty() {
        return Ok(held);
    }
    if request.best_effort {
        tracing::warn!(target: "utility_process::sandbox", ?shortfalls, "best effort: the sandbox holds only in part");
        return Ok(held);
    }
    Err(Ok(Missing::WindowsUnverified {
        what: shortfalls.join("; "),
    }))
}

/// The job limits `limits` asks for; a limit Windows cannot enforce is `Missing` unless the
/// limits are best effort.
fn job_limits(limits: &crate::Limits) -> Result<JobLimits, Missing> {
    let mut job = JobLimits::default();
    let set = [
        (Limit::Memory, limits.memory.is_some()),
        (Limit::CpuTime, limits.cpu_time.is_some()),
        (Limit::Processes, limits.processes.is_some()),
        (Limit::OpenFiles, limits.open_files.is_some()),
        (Limit::FileSize, limits.file_size.is_some()),
    ];
    for (limit, wanted) in set {
        if let (true, Backend::Unavailable(why)) = (wanted, super::confine::backend(limit)) {
            if !limits.best_effort {
                return Err(Missing::Limit { limit, why });
            }
        }
    }
    job.memory = limits.memory;
    job.cpu_time = limits.cpu_time;
    job.processes = limits.processes.map(|n| n.min(u64::from(u32::MAX)) as u32);
    Ok(job)
}

/// The parent's end (for `Stdio::Pipe`) and the child's for one output stream.
fn stdio_pair(stdio: Stdio) -> io::Result<(Option<crate::sys::Object>, ChildStdio)> {
    match stdio {
        Stdio::Inherit => Ok((None, ChildStdio::Inherit)),
        Stdio::Ignore => Ok((None, ChildStdio::Null)),
        Stdio::Pipe => {
            let (read, write) = stdio_pipe::pipe()?;
            Ok((Some(read), ChildStdio::Handle(write)))
        }
    }
}

/// The watcher task: waits for the child to end, enforces the kill grace period, terminates
/// what is left of the child's job, and publishes its status.
async fn watch_child(child: Arc<Child>) {
    let mut deadline_rx = child.kill_deadline.subscribe();
    let mut terminated = false;
    let far_future = Instant::now() + Duration::from_secs(86400 * 365);
    let code = loop {
        let deadline = if terminated {
            None
        } else {
            *deadline_rx.borrow_and_update()
        };
        tokio::select! {
            code = child.process.exited() => break code,
            _ = tokio::time::sleep_until(deadline.unwrap_or(far_future)), if deadline.is_some() => {
                tracing::warn!(target: TARGET, grace = ?child.kill_grace, "still alive after the kill grace period: terminating its job");
                let _ = child.process.terminate(TERMINATED);
                terminated = true;
            }
            _ = deadline_rx.changed() => {}
        }
    };
    // The tree lives and dies with the child.
    let _ = child.process.terminate(TERMINATED);
    let status = ExitStatus::from_raw(code.ok());
    child.exit.send_replace(Some(status));
}

impl Child {
    /// The child's status, published once when it has ended.
    pub(crate) fn exit_receiver(&self) -> watch::Receiver<Option<ExitStatus>> {
        self.exit.subscribe()
    }

    /// Windows children have no report pipe: their limits are told by the job.
    pub(crate) fn reports_receiver(&self) -> Option<watch::Receiver<Reports>> {
        None
    }

    /// Whether the child has ended; `true` when the OS cannot tell.
    pub(crate) fn has_exited(&self) -> bool {
        self.process.try_exit().map_or(true, |code| code.is_some())
    }

    /// Nothing to drain: see [`reports_receiver`](Self::reports_receiver).
    pub(crate) fn drain_reports(&self) {}

    /// Blocks until `port` is readable, the child ends (when `watch_exit`), or `timeout`
    /// passes. Returns whether the child has ended.
    pub(crate) fn wait(
        &self,
        port: Option<&Channel>,
        watch_exit: bool,
        timeout: Option<Duration>,
    ) -> io::Result<bool> {
        match (port, watch_exit) {
            (None, true) => Ok(self.process.wait(timeout)?.is_some()),
            (Some(port), false) => port.wait(Interest::Readable, timeout).map(|_| false),
            (None, false) => {
                std::thread::sleep(timeout.unwrap_or(Duration::from_millis(1)));
                Ok(false)
            }
            // A child's end closes its port, which wakes the wait; a port that outlives its
            // child is noticed within EXIT_CHECK.
            (Some(port), true) => {
                let slice = timeout.map_or(EXIT_CHECK, |t| t.min(EXIT_CHECK));
                port.wait(Interest::Readable, Some(slice))?;
                Ok(self.has_exited())
            }
        }
    }

    /// Asks the child to end (see the module documentation): its parent port is closed now,
    /// its job terminated after the grace period. `false` if it had already ended.
    pub(crate) fn kill(&self) -> bool {
        if self.exit.borrow().is_some() || self.has_exited() {
            return false;
        }
        self.asked.store(true, Ordering::SeqCst);
        self.port.finish_sending();
        tracing::debug!(target: TARGET, parent: &self.span, grace = ?self.kill_grace, "kill: closed its parent port");
        crate::process::arm_kill_deadline(&self.kill_deadline, self.kill_grace);
        true
    }

    /// Terminates the child's job at once: for a child that broke the protocol.
    pub(crate) fn kill_now(&self) {
        self.asked.store(true, Ordering::SeqCst);
        let _ = self.process.terminate(TERMINATED);
    }

    /// What the child's end means: a chosen exit, one the parent asked for, a crash, or a
    /// limit of its job.
    pub(crate) fn ending(&self, status: ExitStatus) -> Ending {
        if self.asked.load(Ordering::SeqCst) && status.code() == Some(TERMINATED as i32) {
            return Ending::Asked;
        }
        match self.process.limit_hit() {
            Some(JobLimit::Memory) => return Ending::Limit(Limit::Memory),
            Some(JobLimit::CpuTime) => return Ending::Limit(Limit::CpuTime),
            Some(JobLimit::Processes) if status.code() != Some(0) => {
                return Ending::Limit(Limit::Processes)
            }
            _ => {}
        }
        match status.windows_crash() {
            Some(_) if self.asked.load(Ordering::SeqCst) => Ending::Asked,
            Some(_) => Ending::Crash,
            None => Ending::Chosen,
        }
    }
}

/// A child's service name when the options give none: the program's file name, without the
/// `.exe` every Windows program has (`worker.exe` is the service `worker`, as on Unix).
pub(crate) fn default_service_name(program: &Path) -> String {
    let is_exe = program
        .extension()
        .is_some_and(|extension| extension.eq_ignore_ascii_case("exe"));
    let name = match (is_exe, program.file_stem()) {
        (true, Some(stem)) => stem,
        _ => program.file_name().unwrap_or(program.as_os_str()),
    };
    name.to_string_lossy().into_owned()
}

/// Finds the program as `std::process::Command` does on Windows: a bare name on the child's
/// `PATH` (then the parent's), `.exe` appended when it has no extension.
pub(crate) fn resolve_program(
    program: &Path,
    path: Option<&std::ffi::OsStr>,
) -> io::Result<PathBuf> {
    super::cmdline::resolve_program(program, path)
}

/// Whether `path` names a file (Windows has no execute bit: a file is a program if
/// `CreateProcessW` says so).
pub(crate) fn is_executable_file(path: &Path) -> bool {
    path.is_file()
}
