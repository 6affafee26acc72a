//! Starting a child inside its own job, watching it, and ending it.
//!
//! # How a child starts
//!
//! [`spawn_suspended`] goes through the first four steps and [`Suspended::resume`] the last
//! two; between them the caller checks what it must before the child's first instruction (a
//! sandbox: `super::confine`). Each says which step failed ([`SpawnStep`]):
//!
//! 1. **Job** — a new job object with kill-on-close and the plan's limits ([`super::job`]).
//! 2. **Handles** — the child's stdio resolved to real handles (`NUL`, duplicates of ours,
//!    or the caller's pipe ends), and the handle list: stdio plus `inherit`, nothing else
//!    ([`super::inherit`]). The command line, environment block and program path are built
//!    here too, but fail as **CreateProcess** — they are its arguments.
//! 3. **CreateProcess** — `CreateProcessW` with `EXTENDED_STARTUPINFO_PRESENT` (the handle
//!    list, and for a sandboxed child the AppContainer's `SECURITY_CAPABILITIES`),
//!    `CREATE_SUSPENDED` and `CREATE_UNICODE_ENVIRONMENT`; `CreateProcessAsUserW` with the
//!    same for a child given a token of its own ([`Launcher`]). The child exists but has run
//!    no instruction; its handles are inheritable only around this call.
//! 4. **AssignJob** — the suspended child goes into the job. From here on, everything it
//!    starts is in the job too, and cannot leave it (no breakaway).
//! 5. **Watch** — a thread-pool wait on the process handle, which wakes [`Child::exited`].
//! 6. **Resume** — its first thread starts: the child never ran outside its job.
//!
//! A failure after step 3 terminates the suspended child (or its job) before returning, so
//! nothing is left behind. The parent's copies of the stdio handles and of `inherit` are
//! closed when `spawn` returns, either way: the child has its own.
//!
//! # Requirements and the console
//!
//! Windows 8 or later: jobs nest there (so a parent that is itself in a job can still give
//! each child its own), and console handles are real handles that may appear in a handle
//! list. The child shares the parent's console, if it has one, as `std::process::Command`'s
//! children do. A console program started by a parent without a console (a GUI host) gets a
//! new console window, and its `conhost.exe` then runs in the child's job — counting against
//! [`JobLimits::processes`]. A host that wants no window would add `CREATE_NO_WINDOW` to the
//! creation flags; this backend does not choose that for the caller — except for a sandboxed
//! child (any [`Launcher`] but our own token) of a parent without a console: its job allows
//! one process, which leaves no room for a `conhost.exe`, so it starts with
//! `DETACHED_PROCESS` (no console at all; its standard handles are still the ones given).
//!
//! # The child's handles have the same values
//!
//! Inherited handles keep their values in the child, so the caller can write the value of
//! its port handle into the child's environment (or command line) before spawning.
//!
//! # The title
//!
//! [`SpawnPlan::title`] goes into `STARTUPINFOW.lpTitle`. The child can read it back with
//! `GetStartupInfoW`. Windows shows it only as the title of a *new* console window — when a
//! console child gets its own console (a console program started by a GUI parent that has
//! none). A console child that shares the parent's console leaves that console's title alone
//! (Microsoft documents `lpTitle` as "must be NULL" in that case; in practice it is stored and
//! ignored), and a GUI child ignores it. Task Manager, Process Explorer and the like show the
//! image name, never this title.
//!
//! See `CreateProcessW`
//! (learn.microsoft.com/windows/win32/api/processthreadsapi/nf-processthreadsapi-createprocessw),
//! `STARTUPINFOW` (learn.microsoft.com/windows/win32/api/processthreadsapi/ns-processthreadsapi-startupinfow)
//! and "Process Creation Flags"
//! (learn.microsoft.com/windows/win32/procthread/process-creation-flags).

use std::ffi::OsString;
use std::io;
use std::os::windows::io::{AsHandle, AsRawHandle, BorrowedHandle, FromRawHandle, OwnedHandle};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use windows_sys::Win32::Foundation::{
    DuplicateHandle, DUPLICATE_SAME_ACCESS, HANDLE, INVALID_HANDLE_VALUE, WAIT_OBJECT_0,
    WAIT_TIMEOUT,
};
use windows_sys::Win32::Security::{SECURITY_CAPABILITIES, SID_AND_ATTRIBUTES};
use windows_sys::Win32::System::Console::{
    GetConsoleWindow, GetStdHandle, STD_ERROR_HANDLE, STD_HANDLE, STD_INPUT_HANDLE,
    STD_OUTPUT_HANDLE,
};
use windows_sys::Win32::System::SystemServices::SE_GROUP_ENABLED;
use windows_sys::Win32::System::Threading::{
    CreateProcessAsUserW, CreateProcessW, GetCurrentProcess, GetExitCodeProcess,
    RegisterWaitForSingleObject, ResumeThread, TerminateProcess, UnregisterWaitEx,
    WaitForSingleObject, CREATE_SUSPENDED, CREATE_UNICODE_ENVIRONMENT, DETACHED_PROCESS,
    EXTENDED_STARTUPINFO_PRESENT, INFINITE, PROCESS_INFORMATION, STARTF_USESTDHANDLES,
    STARTUPINFOEXW, WT_EXECUTEONLYONCE,
};

use super::app_container::Sid;
use super::cmdline::{command_line, env_block, env_lookup, resolve_program, wide_nul};
// The contract names these here; the layers above use them, this module does not.
#[allow(unused_imports)]
pub(crate) use super::exit::{classify, Exit};
use super::inherit::{HandleList, InheritWindow};
use super::job::Job;

/// Where one of the child's standard handles comes from.
#[derive(Debug)]
pub(crate) enum ChildStdio {
    /// The `NUL` device: end-of-file for stdin, nowhere for output.
    Null,
    /// The parent's own standard handle (a duplicate of it); none if the parent has none.
    Inherit,
    /// This handle: our pipe's partner end (the write end for stdout and stderr, the read end
    /// for stdin), or any handle the child should use.
    Handle(OwnedHandle),
}

/// Everything needed to start one child.
#[derive(Debug)]
pub(crate) struct SpawnPlan {
    /// The program, found as [`resolve_program`] describes (a bare name is searched on the
    /// child's `PATH`, then the parent's, with `.exe` appended when it has no extension).
    pub program: PathBuf,
    /// `argv[1..]`; `argv[0]` is `program` exactly as given.
    pub args: Vec<OsString>,
    /// The child's whole environment (the caller merged it with ours if it wanted to).
    pub env: Vec<(OsString, OsString)>,
    /// The child's working directory, if not the parent's.
    pub cwd: Option<PathBuf>,
    /// The child's standard input.
    pub stdin: ChildStdio,
    /// The child's standard output.
    pub stdout: ChildStdio,
    /// The child's standard error.
    pub stderr: ChildStdio,
    /// Handles the child must hold besides stdio (its port), at the same values as ours.
    pub inherit: Vec<OwnedHandle>,
    /// What the child's job allows it and its descendants.
    pub limits: JobLimits,
    /// The service name, as `STARTUPINFOW.lpTitle` (see the module docs for where it shows).
    pub title: Option<OsString>,
    /// Who the child runs as: us, an AppContainer, or a token of the caller's.
    pub launcher: Launcher,
}

#[cfg(test)]
impl SpawnPlan {
    /// A plan for `program` with `args`, an empty environment, no handles and no limits.
    pub(crate) fn bare(program: &str, args: &[&str]) -> SpawnPlan {
        SpawnPlan {
            program: PathBuf::from(program),
            args: args.iter().map(|a| (*a).into()).collect(),
            env: vec![],
            cwd: None,
            stdin: ChildStdio::Null,
            stdout: ChildStdio::Null,
            stderr: ChildStdio::Null,
            inherit: vec![],
            limits: JobLimits::default(),
            title: None,
            launcher: Launcher::Ours,
        }
    }
}

/// The security context a child starts in.
#[derive(Debug, Default)]
pub(crate) enum Launcher {
    /// Our own token (`CreateProcessW`).
    #[default]
    Ours,
    /// An AppContainer with these capabilities: `CreateProcessW` with
    /// `PROC_THREAD_ATTRIBUTE_SECURITY_CAPABILITIES`, which also lowers the child to low
    /// integrity.
    AppContainer {
        /// The container's SID (`super::app_container::profile_sid`).
        container: Sid,
        /// The capability SIDs (none, or the network ones).
        capabilities: Vec<Sid>,
    },
    /// This primary token (`CreateProcessAsUserW`): the restricted low-integrity one.
    Token(OwnedHandle),
}

/// Limits on the child and every process it starts, enforced by its job.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct JobLimits {
    /// Committed memory per process, in bytes.
    pub memory: Option<u64>,
    /// User-mode CPU time per process; the system terminates a process that uses more.
    pub cpu_time: Option<Duration>,
    /// Processes alive at once in the job, the child included.
    pub processes: Option<u32>,
}

/// A limit of [`JobLimits`] that the job reported as hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JobLimit {
    /// A process tried to commit more than [`JobLimits::memory`].
    Memory,
    /// A process used up [`JobLimits::cpu_time`] and was terminated.
    CpuTime,
    /// A process could not start: [`JobLimits::processes`] were alive.
    Processes,
}

/// The step at which [`spawn`] failed (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SpawnStep {
    /// Creating the job object or setting its limits.
    Job,
    /// Preparing the stdio handles, the handle list, or making them inheritable.
    Handles,
    /// Building the command line, environment or program path, or `CreateProcessW` itself.
    CreateProcess,
    /// `AssignProcessToJobObject` (fails before Windows 8 when the parent is in a job).
    AssignJob,
    /// Registering the exit wait (`RegisterWaitForSingleObject`).
    Watch,
    /// `ResumeThread`.
    Resume,
}

/// A running (or ended, not yet dropped) child. Dropping it kills the child's whole tree.
#[derive(Debug)]
pub(crate) struct Child {
    /// Declared first so it is dropped first: the wait must go before its handle closes.
    exit: ExitWatch,
    /// The process handle (`PROCESS_ALL_ACCESS`), shared with whoever brokers handles.
    process: Arc<OwnedHandle>,
    /// The process id.
    pid: u32,
    /// Dropping the job kills the child and everything it started.
    job: Job,
}

/// Starts `plan` (see the module docs for the steps); returns once the child runs.
#[cfg(test)]
pub(crate) fn spawn(plan: SpawnPlan) -> Result<Child, (SpawnStep, io::Error)> {
    spawn_suspended(plan)?.resume()
}

/// Steps 1 to 4 of `plan` (see the module docs): the child exists, in its job, and has run
/// no instruction. [`Suspended::resume`] does the rest; dropping the [`Suspended`] instead
/// kills the child (its job is closed).
pub(crate) fn spawn_suspended(plan: SpawnPlan) -> Result<Suspended, (SpawnStep, io::Error)> {
    let job = Job::new(&plan.limits).map_err(|e| (SpawnStep::Job, e))?;
    let stdio = [
        stdio_handle(plan.stdin, STD_INPUT_HANDLE),
        stdio_handle(plan.stdout, STD_OUTPUT_HANDLE),
        stdio_handle(plan.stderr, STD_ERROR_HANDLE),
    ];
    let [stdin, stdout, stderr] = stdio;
    let stdio = [
        stdin.map_err(|e| (SpawnStep::Handles, e))?,
        stdout.map_err(|e| (SpawnStep::Handles, e))?,
        stderr.map_err(|e| (SpawnStep::Handles, e))?,
    ];
    let text = LaunchText::new(&plan.program, &plan.args, &plan.env, &plan.cwd, &plan.title)
        .map_err(|e| (SpawnStep::CreateProcess, e))?;

    let (process, thread, pid) = create_suspended(text, &stdio, &plan.inherit, &plan.launcher)?;
    // The child holds its own copies now.
    drop(stdio);
    drop(plan.inherit);

    if let Err(e) = job.assign(process.as_handle()) {
        // SAFETY: our own suspended child, which has run nothing; its handle is open.
        unsafe { TerminateProcess(process.as_raw_handle(), 1) };
        return Err((SpawnStep::AssignJob, e));
    }
    Ok(Suspended {
        process,
        thread,
        pid,
        job,
    })
}

/// A child created suspended and put in its job: it has run no instruction yet. What the
/// parent checks before letting it run (its token, its job) is read from here.
#[derive(Debug)]
pub(crate) struct Suspended {
    process: OwnedHandle,
    thread: OwnedHandle,
    pid: u32,
    /// Dropping it (with the `Suspended`) kills the child: kill-on-close.
    job: Job,
}

impl Suspended {
    /// The process handle (`PROCESS_ALL_ACCESS`: its token can be opened).
    pub(crate) fn process(&self) -> BorrowedHandle<'_> {
        self.process.as_handle()
    }

    /// The child's job.
    pub(crate) fn job(&self) -> &Job {
        &self.job
    }

    /// Steps 5 and 6: watches the child's exit and lets its first thread run.
    pub(crate) fn resume(self) -> Result<Child, (SpawnStep, io::Error)> {
        let Suspended {
            process,
            thread,
            pid,
            job,
        } = self;
        let process = Arc::new(process);
        let exit = match ExitWatch::register(process.clone()) {
            Ok(exit) => exit,
            Err(e) => {
                let _ = job.terminate(1);
                return Err((SpawnStep::Watch, e));
            }
        };
        // SAFETY: the thread handle is open and has THREAD_SUSPEND_RESUME (CreateProcessW
        // gives THREAD_ALL_ACCESS).
        if unsafe { ResumeThread(thread.as_raw_handle()) } == u32::MAX {
            let e = io::Error::last_os_error();
            let _ = job.terminate(1);
            return Err((SpawnStep::Resume, e));
        }
        Ok(Child {
            exit,
            process,
            pid,
            job,
        })
    }
}

/// The strings `CreateProcessW` reads, each NUL-terminated (or double-NUL for the block).
#[derive(Debug)]
struct LaunchText {
    /// The resolved program path (`lpApplicationName`).
    application: Vec<u16>,
    /// The quoted command line (`lpCommandLine`, which Windows may write to).
    command_line: Vec<u16>,
    /// The `CREATE_UNICODE_ENVIRONMENT` block.
    environment: Vec<u16>,
    /// The working directory (`lpCurrentDirectory`), if any.
    cwd: Option<Vec<u16>>,
    /// `STARTUPINFOW.lpTitle`, if any.
    title: Option<Vec<u16>>,
}

impl LaunchText {
    /// Resolves the program and builds every string, failing before anything is created.
    fn new(
        program: &std::path::Path,
        args: &[OsString],
        env: &[(OsString, OsString)],
        cwd: &Option<PathBuf>,
        title: &Option<OsString>,
    ) -> io::Result<LaunchText> {
        let resolved = resolve_program(program, env_lookup(env, "PATH"))?;
        Ok(LaunchText {
            application: wide_nul(resolved.as_os_str())?,
            command_line: command_line(program.as_os_str(), args)?,
            environment: env_block(env)?,
            cwd: cwd.as_ref().map(|c| wide_nul(c.as_os_str())).transpose()?,
            title: title.as_ref().map(|t| wide_nul(t)).transpose()?,
        })
    }
}

/// The handle for one of the child's standard handles, or `None` for none at all.
///
/// `Inherit` duplicates the parent's handle (non-inheritable, like all of ours), so that
/// making it inheritable for the call does not touch the parent's own. See `GetStdHandle`
/// (learn.microsoft.com/windows/console/getstdhandle) and `DuplicateHandle`
/// (learn.microsoft.com/windows/win32/api/handleapi/nf-handleapi-duplicatehandle).
fn stdio_handle(stdio: ChildStdio, which: STD_HANDLE) -> io::Result<Option<OwnedHandle>> {
    match stdio {
        ChildStdio::Null => super::stdio_pipe::null().map(Some),
        ChildStdio::Handle(handle) => Ok(Some(handle)),
        ChildStdio::Inherit => {
            // SAFETY: no preconditions; the result is borrowed, not owned.
            let ours = unsafe { GetStdHandle(which) };
            if ours.is_null() || ours == INVALID_HANDLE_VALUE {
                // A process without a console (a GUI parent) has no standard handles.
                return Ok(None);
            }
            let mut copy: HANDLE = std::ptr::null_mut();
            // SAFETY: `ours` is open (the process's standard handle); the copy goes into a
            // local, in our own process, with the same access, not inheritable.
            let ok = unsafe {
                let me = GetCurrentProcess();
                DuplicateHandle(me, ours, me, &mut copy, 0, 0, DUPLICATE_SAME_ACCESS)
            };
            if ok == 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: the duplicate is new and owned by nobody else.
            Ok(Some(unsafe { OwnedHandle::from_raw_handle(copy) }))
        }
    }
}

/// `CreateProcessW` with the handle list, suspended: (process, thread, pid).
///
/// The launcher decides the security context: an AppContainer adds its
/// `SECURITY_CAPABILITIES` to the attribute list (whose SIDs live in `launcher` past the
/// call), a token goes to `CreateProcessAsUserW` (same arguments, the token first). See
/// `CreateProcessAsUserW`
/// (learn.microsoft.com/windows/win32/api/processthreadsapi/nf-processthreadsapi-createprocessasuserw)
/// and `SECURITY_CAPABILITIES`
/// (learn.microsoft.com/windows/win32/api/winnt/ns-winnt-security_capabilities).
fn create_suspended(
    mut text: LaunchText,
    stdio: &[Option<OwnedHandle>; 3],
    inherit: &[OwnedHandle],
    launcher: &Launcher,
) -> Result<(OwnedHandle, OwnedHandle, u32), (SpawnStep, io::Error)> {
    let listed: Vec<BorrowedHandle<'_>> = stdio
        .iter()
        .flatten()
        .chain(inherit)
        .map(|h| h.as_handle())
        .collect();
    let granted: Vec<SID_AND_ATTRIBUTES> = match launcher {
        Launcher::AppContainer { capabilities, .. } => capabilities
            .iter()
            .map(|sid| SID_AND_ATTRIBUTES {
                Sid: sid.as_psid(),
                Attributes: SE_GROUP_ENABLED as u32,
            })
            .collect(),
        _ => Vec::new(),
    };
    let security = match launcher {
        Launcher::AppContainer { container, .. } => Some(SECURITY_CAPABILITIES {
            AppContainerSid: container.as_psid(),
            Capabilities: granted.as_ptr().cast_mut(),
            CapabilityCount: granted.len() as u32,
            Reserved: 0,
        }),
        _ => None,
    };
    if security.is_some() && listed.is_empty() {
        // Never so in practice (the port is always listed); the attribute list needs one.
        return Err((
            SpawnStep::Handles,
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "an AppContainer child with no handle",
            ),
        ));
    }
    let mut list = match listed.is_empty() {
        true => None,
        false => Some(
            HandleList::with_capabilities(&listed, security.as_ref())
                .map_err(|e| (SpawnStep::Handles, e))?,
        ),
    };
    let raw_of = |h: &Option<OwnedHandle>| {
        h.as_ref()
            .map_or(std::ptr::null_mut(), |h| h.as_raw_handle())
    };

    // SAFETY: plain data; zero is "absent" for every field.
    let mut info: STARTUPINFOEXW = unsafe { std::mem::zeroed() };
    info.StartupInfo.cb = std::mem::size_of::<STARTUPINFOEXW>() as u32;
    info.StartupInfo.dwFlags = STARTF_USESTDHANDLES;
    info.StartupInfo.hStdInput = raw_of(&stdio[0]);
    info.StartupInfo.hStdOutput = raw_of(&stdio[1]);
    info.StartupInfo.hStdError = raw_of(&stdio[2]);
    info.StartupInfo.lpTitle = text
        .title
        .as_mut()
        .map_or(std::ptr::null_mut(), |t| t.as_mut_ptr());
    info.lpAttributeList = list.as_mut().map_or(std::ptr::null_mut(), |l| l.raw());

    let window = InheritWindow::open(&listed).map_err(|e| (SpawnStep::Handles, e))?;
    // SAFETY: PROCESS_INFORMATION is plain data, filled by the call.
    let mut created: PROCESS_INFORMATION = unsafe { std::mem::zeroed() };
    let mut flags = EXTENDED_STARTUPINFO_PRESENT | CREATE_SUSPENDED | CREATE_UNICODE_ENVIRONMENT;
    if !matches!(launcher, Launcher::Ours) && !has_console() {
        // See the module docs: no conhost.exe in a one-process job.
        flags |= DETACHED_PROCESS;
    }
    // SAFETY: every string is NUL-terminated (the environment double-NUL-terminated, UTF-16
    // as CREATE_UNICODE_ENVIRONMENT says) and lives in `text` past the call; the command line
    // is writable, as CreateProcessW requires; `info` is a STARTUPINFOEXW with its size in
    // `cb` and, when present, an initialised attribute list whose handle array lives in
    // `list` (and whose SECURITY_CAPABILITIES, in `security`, points to SIDs owned by
    // `launcher` and to `granted`, all alive past the call); every listed handle is open and,
    // inside `window`, inheritable. For a token: it is a primary token with TOKEN_ALL_ACCESS
    // (made by this process), open past the call, and a restricted version of our own, which
    // needs no privilege to assign.
    let ok = unsafe {
        match launcher {
            Launcher::Token(token) => CreateProcessAsUserW(
                token.as_raw_handle(),
                text.application.as_ptr(),
                text.command_line.as_mut_ptr(),
                std::ptr::null(),
                std::ptr::null(),
                i32::from(list.is_some()),
                flags,
                text.environment.as_ptr().cast(),
                text.cwd.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
                &info.StartupInfo,
                &mut created,
            ),
            _ => CreateProcessW(
                text.application.as_ptr(),
                text.command_line.as_mut_ptr(),
                std::ptr::null(),
                std::ptr::null(),
                i32::from(list.is_some()),
                flags,
                text.environment.as_ptr().cast(),
                text.cwd.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
                &info.StartupInfo,
                &mut created,
            ),
        }
    };
    let error = io::Error::last_os_error();
    drop(window);
    drop(list);
    // `security` points into `granted`, which goes only now.
    drop(granted);
    if ok == 0 {
        return Err((SpawnStep::CreateProcess, error));
    }
    // SAFETY: both handles are new and ours alone.
    let (process, thread) = unsafe {
        (
            OwnedHandle::from_raw_handle(created.hProcess),
            OwnedHandle::from_raw_handle(created.hThread),
        )
    };
    Ok((process, thread, created.dwProcessId))
}

/// Whether this process has a console (a console program, or a GUI one that allocated or
/// attached one). See `GetConsoleWindow`
/// (learn.microsoft.com/windows/console/getconsolewindow).
fn has_console() -> bool {
    // SAFETY: no arguments; it only reports this process's console window, if any.
    !unsafe { GetConsoleWindow() }.is_null()
}

impl Child {
    /// The child's process id. Another process may get this number once every handle to
    /// the child is closed; while the [`Child`] lives, its handle keeps the number taken.
    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// The process handle, shareable: a channel that brokers handles keeps one.
    pub(crate) fn process_arc(&self) -> Arc<OwnedHandle> {
        self.process.clone()
    }

    /// The exit code, if the child has ended.
    ///
    /// Asks `GetExitCodeProcess` only once the process handle is signalled: a child may exit
    /// with 259 (`STILL_ACTIVE`) on purpose. See `GetExitCodeProcess`
    /// (learn.microsoft.com/windows/win32/api/processthreadsapi/nf-processthreadsapi-getexitcodeprocess).
    pub(crate) fn try_exit(&self) -> io::Result<Option<u32>> {
        self.wait_raw(0)
    }

    /// Waits for the child to end, at most `timeout` (forever if `None`); blocks the thread.
    pub(crate) fn wait(&self, timeout: Option<Duration>) -> io::Result<Option<u32>> {
        let Some(timeout) = timeout else {
            return self.wait_raw(INFINITE);
        };
        let deadline = Instant::now().checked_add(timeout);
        loop {
            let left = match deadline {
                Some(deadline) => deadline.saturating_duration_since(Instant::now()),
                None => Duration::MAX,
            };
            // Round up, so as never to return before the deadline; stay below INFINITE.
            let ms = left
                .as_nanos()
                .div_ceil(1_000_000)
                .min(u128::from(INFINITE - 1)) as u32;
            if let Some(code) = self.wait_raw(ms)? {
                return Ok(Some(code));
            }
            if left.is_zero() {
                return Ok(None);
            }
        }
    }

    /// Waits up to `ms` milliseconds on the process handle, then reads its exit code.
    ///
    /// See `WaitForSingleObject`
    /// (learn.microsoft.com/windows/win32/api/synchapi/nf-synchapi-waitforsingleobject).
    fn wait_raw(&self, ms: u32) -> io::Result<Option<u32>> {
        let handle = self.process.as_raw_handle();
        // SAFETY: the process handle is open while `self` lives.
        match unsafe { WaitForSingleObject(handle, ms) } {
            WAIT_OBJECT_0 => {
                let mut code = 0u32;
                // SAFETY: as above; `code` is a local.
                if unsafe { GetExitCodeProcess(handle, &mut code) } == 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(Some(code))
            }
            WAIT_TIMEOUT => Ok(None),
            _ => Err(io::Error::last_os_error()),
        }
    }

    /// Waits for the child to end, without blocking a thread or polling.
    ///
    /// Cancel-safe, and any number of tasks may await it at once: a thread-pool wait on the
    /// process handle wakes them all. Works on any tokio runtime, current-thread included.
    pub(crate) async fn exited(&self) -> io::Result<u32> {
        loop {
            let notified = self.exit.state.notified();
            let mut notified = std::pin::pin!(notified);
            // Registered before the check, so a wake between the two is not lost.
            notified.as_mut().enable();
            if let Some(code) = self.try_exit()? {
                return Ok(code);
            }
            notified.await;
        }
    }

    /// Terminates the child and every process it started, with exit code `code`.
    ///
    /// `Ok(false)` if the child had already ended (its remaining descendants are terminated
    /// all the same); `Ok(true)` if it was running when asked — it may still have ended by
    /// itself just before, and its exit code tells which. Termination completes
    /// asynchronously: [`Child::wait`] or [`Child::exited`] to see it done.
    pub(crate) fn terminate(&self, code: u32) -> io::Result<bool> {
        let already = self.try_exit()?.is_some();
        self.job.terminate(code)?;
        Ok(!already)
    }

    /// Which job limit ended or blocked the child (or one of its processes), if the job said
    /// so. Best effort: see [`super::job`].
    pub(crate) fn limit_hit(&self) -> Option<JobLimit> {
        self.job.limit_hit()
    }
}

/// A thread-pool wait on the process handle, waking [`Child::exited`] when it is signalled.
#[derive(Debug)]
struct ExitWatch {
    /// The registered wait, unregistered (waiting for a running callback) on drop.
    wait: WaitHandle,
    /// What the callback notifies; it borrows this `Arc`'s contents.
    state: Arc<Notify>,
    /// The handle waited on, kept open until the wait is gone.
    _process: Arc<OwnedHandle>,
}

/// A wait handle from `RegisterWaitForSingleObject`.
#[derive(Debug)]
struct WaitHandle(HANDLE);

// SAFETY: a wait handle is a kernel-side registration, usable from any thread: it is only
// passed to UnregisterWaitEx, once, by whoever drops the ExitWatch.
unsafe impl Send for WaitHandle {}
// SAFETY: shared references never use the handle.
unsafe impl Sync for WaitHandle {}

impl ExitWatch {
    /// Registers a one-shot wait on `process`.
    ///
    /// See `RegisterWaitForSingleObject`
    /// (learn.microsoft.com/windows/win32/api/winbase/nf-winbase-registerwaitforsingleobject).
    fn register(process: Arc<OwnedHandle>) -> io::Result<ExitWatch> {
        let state = Arc::new(Notify::new());
        let mut wait: HANDLE = std::ptr::null_mut();
        // SAFETY: the process handle stays open while the wait exists (`_process` is dropped
        // after `wait` is unregistered); the context points to `state`'s Notify, which lives
        // until then too (the ExitWatch keeps an Arc). WT_EXECUTEONLYONCE: at most one call.
        let ok = unsafe {
            RegisterWaitForSingleObject(
                &mut wait,
                process.as_raw_handle(),
                Some(on_exit),
                Arc::as_ptr(&state).cast_mut().cast(),
                INFINITE,
                WT_EXECUTEONLYONCE,
            )
        };
        if ok == 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(ExitWatch {
            wait: WaitHandle(wait),
            state,
            _process: process,
        })
    }
}

/// The thread-pool callback: the process ended; wake every awaiter.
unsafe extern "system" fn on_exit(context: *mut core::ffi::c_void, _timed_out: bool) {
    // SAFETY: `context` is the Notify registered with this wait, alive until the wait is
    // unregistered — which waits for this callback to finish.
    let state = unsafe { &*(context as *const Notify) };
    state.notify_waiters();
}

impl Drop for ExitWatch {
    fn drop(&mut self) {
        // SAFETY: the wait handle is unregistered once, here. INVALID_HANDLE_VALUE: return only
        // once a running callback has finished, so `state` and the process handle may go.
        // See `UnregisterWaitEx`
        // (learn.microsoft.com/windows/win32/api/winbase/nf-winbase-unregisterwaitex).
        unsafe { UnregisterWaitEx(self.wait.0, INVALID_HANDLE_VALUE) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn child_is_send_and_sync() {
        assert_send_sync::<Child>();
    }

    #[test]
    fn a_missing_program_fails_at_create_process_with_not_found() {
        let plan = SpawnPlan::bare(r"C:\no\such\program-xyz.exe", &[]);
        let (step, error) = spawn(plan).unwrap_err();
        assert_eq!(step, SpawnStep::CreateProcess);
        assert!(
            matches!(error.raw_os_error(), Some(2 | 3)),
            "expected file or path not found, got {error}"
        );
    }

    #[test]
    fn a_nul_in_an_argument_fails_before_anything_starts() {
        let plan = SpawnPlan::bare(r"C:\windows\system32\cmd.exe", &["a\0b"]);
        let (step, error) = spawn(plan).unwrap_err();
        assert_eq!(step, SpawnStep::CreateProcess);
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    }
}
