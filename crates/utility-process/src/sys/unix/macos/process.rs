//! Starting a child with `posix_spawn`, and watching, signalling and reaping it by pid, woken
//! by kqueue.
//!
//! # How a child starts
//!
//! Unconfined children (and children with only a report pipe) start with `posix_spawn(2)`,
//! which on macOS is one system call: the kernel builds the child from the attributes and
//! file actions and execs it, and an exec failure comes back as `posix_spawn`'s return value
//! (no error pipe is needed). The attributes (`posix_spawnattr_setflags(3)`):
//!
//! 1. `POSIX_SPAWN_SETSIGDEF` with every signal and `POSIX_SPAWN_SETSIGMASK` with an empty
//!    mask (`posix_spawnattr_setsigdefault(3)`, `posix_spawnattr_setsigmask(3)`): default
//!    dispositions and nothing blocked, whatever the Rust parent ignores or blocks;
//! 2. `POSIX_SPAWN_SETPGROUP` with group 0 (`posix_spawnattr_setpgroup(3)`): a process group of
//!    its own, so that the whole tree it starts can be signalled at once;
//! 3. `POSIX_SPAWN_CLOEXEC_DEFAULT` (an Apple extension, `posix_spawnattr_setflags(3)`): every
//!    descriptor not named by a file action is closed in the child, even one the parent opened
//!    without `FD_CLOEXEC` — what `close_range` does on Linux;
//! 4. file actions (`posix_spawn_file_actions_adddup2(3)`): `/dev/null` as 0, the chosen
//!    stdout and stderr, the port as 3, the report pipe as 4, each from a copy the parent made
//!    above 4 first, so that placing one never overwrites another's source; and the working
//!    directory (`posix_spawn_file_actions_addchdir_np(3)`, macOS 10.15).
//!
//! A sandboxed child starts the same way, as `/usr/bin/sandbox-exec` with the profile and
//! the program on its command line (`sandbox-exec(1)`): the launcher applies the sandbox to
//! itself and execs the program in the same process (see `sandbox/seatbelt.rs`).
//!
//! A child with resource limits needs code between fork and exec (`setrlimit(2)` has no
//! spawn attribute), so it starts with `fork(2)` instead, and makes only async-signal-safe
//! calls before `execve(2)` — the same steps, by hand, with the `(step, errno)` error pipe
//! that Linux uses. macOS has no parent-death signal: the guardian takes the child's group
//! down if the parent dies.
//!
//! # Why kqueue, and how pids stay safe without a pidfd
//!
//! macOS has no pidfd. A kqueue with an `EVFILT_PROC` / `NOTE_EXIT` filter on the child's pid
//! (`kqueue(2)`, `kevent(2)`) becomes readable when the child exits, and since its event is
//! never retrieved it stays readable, as a pidfd does: the runtime watches that kqueue
//! descriptor as it watches a socket, and the blocking event loop `poll`s it. The pid itself is only ever used while it cannot
//! name anyone else: a pid is not recycled until its process is reaped, and only this module
//! reaps it (`wait4(2)` on that one pid, never `waitpid(-1)`), after the exit was seen.
//! Signals go through [`Pidfd::send_signal`], which holds the same lock as the reap: a signal
//! is sent only while the child is unreaped, so it can never reach a stranger. What remains
//! outside this module's control, as on any system without pidfds: a host application that
//! reaps children it did not start (`waitpid(-1)`, or SIGCHLD set to `SIG_IGN`) frees the pid
//! early; the library then sees `ECHILD` when it reaps, reports the status as lost, and from
//! then on refuses to signal that pid.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::Mutex;

use crate::sys::unix::reactor::SharedFd;
use crate::sys::unix::{cvt, retry};

use crate::sys::unix::spawn::{
    block_all_signals, fail, null_terminated, reap_blocking, restore_signal_mask,
};
pub(crate) use crate::sys::unix::spawn::{
    kill_process_group, ChildFd, PreExec, RawExit, Reaped, SpawnPlan, SpawnStep,
};

/// A child that is running.
#[derive(Debug)]
pub(crate) struct Spawned {
    pub pid: libc::pid_t,
    pub pidfd: Pidfd,
}

/// The descriptors a child gets at 0..=4, each a copy above 4 (close-on-exec in the parent).
struct Sources {
    stdin: OwnedFd,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
    port: OwnedFd,
    report: Option<OwnedFd>,
}

impl Sources {
    fn new(plan: &SpawnPlan) -> io::Result<Sources> {
        let high = |fd: std::os::fd::BorrowedFd<'_>| -> io::Result<OwnedFd> {
            // SAFETY: F_DUPFD_CLOEXEC (fcntl(2)) makes a new descriptor, at 5 or above, that
            // we own alone.
            let raw = cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 5) })?;
            // SAFETY: as above: fresh, ours.
            Ok(unsafe { OwnedFd::from_raw_fd(raw) })
        };
        // `Inherit` is a file action too: under POSIX_SPAWN_CLOEXEC_DEFAULT a descriptor that
        // no action names is closed, the parent's own 1 and 2 included. A parent whose 1 or 2
        // is closed (EBADF) leaves it closed in the child, as on Linux.
        let output = |child: &ChildFd, own: RawFd| match child {
            ChildFd::Inherit => {
                // SAFETY: F_GETFD only asks whether our descriptor `own` is open.
                if unsafe { libc::fcntl(own, libc::F_GETFD) } < 0 {
                    return Ok(None);
                }
                // SAFETY: `own` is open (checked just above) and stays open for this call.
                high(unsafe { std::os::fd::BorrowedFd::borrow_raw(own) }).map(Some)
            }
            ChildFd::Fd(fd) => high(fd.as_fd()).map(Some),
        };
        Ok(Sources {
            stdin: high(plan.dev_null.as_fd())?,
            stdout: output(&plan.stdout, 1)?,
            stderr: output(&plan.stderr, 2)?,
            port: high(plan.port.as_fd())?,
            report: match &plan.confine {
                Some(c) => Some(high(c.report.as_fd())?),
                None => None,
            },
        })
    }

    /// `(source, target)` pairs, in placing order.
    fn placements(&self) -> Vec<(RawFd, RawFd)> {
        let mut out = vec![(self.stdin.as_raw_fd(), 0)];
        out.extend(self.stdout.as_ref().map(|fd| (fd.as_raw_fd(), 1)));
        out.extend(self.stderr.as_ref().map(|fd| (fd.as_raw_fd(), 2)));
        out.push((self.port.as_raw_fd(), 3));
        out.extend(self.report.as_ref().map(|fd| (fd.as_raw_fd(), 4)));
        out
    }
}

/// Starts `plan`; returns once the program runs, or why it could not.
pub(crate) fn spawn(mut plan: SpawnPlan) -> Result<Spawned, (SpawnStep, io::Error)> {
    // A sandboxed child starts as Apple's launcher, which applies the profile to itself and
    // then execs the program (`sandbox-exec(1)`; see `sandbox/seatbelt.rs`): the same
    // descriptors, environment, working directory, limits and process group, and the same
    // pid, from the launcher's first instruction to the program's last.
    if let Some(sandbox) = plan.confine.as_ref().and_then(|c| c.sandbox.as_ref()) {
        let (launcher, argv) = sandbox.launcher(&plan.program, &plan.argv);
        plan.program = launcher;
        plan.argv = argv;
    }
    let sources = Sources::new(&plan).map_err(|e| (SpawnStep::Descriptors, e))?;
    let argv = null_terminated(&plan.argv);
    let envp = null_terminated(&plan.envp);
    let rlimits = plan.confine.as_ref().map_or(&[][..], |c| &c.rlimits[..]);
    let pid = if rlimits.is_empty() {
        posix_spawn(&plan, &sources, &argv, &envp)?
    } else {
        fork_exec(&plan, &sources, rlimits, &argv, &envp)?
    };
    drop(sources);
    drop(plan);
    match Pidfd::open(pid) {
        Ok(pidfd) => Ok(Spawned { pid, pidfd }),
        Err(e) => {
            // SAFETY: `pid` is our own unreaped child, so the number cannot have been reused.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            reap_blocking(pid);
            Err((SpawnStep::Pidfd, e))
        }
    }
}

/// A `posix_spawnattr_t`, initialised (`posix_spawnattr_init(3)`) and destroyed on drop.
struct SpawnAttr(libc::posix_spawnattr_t);

impl SpawnAttr {
    fn new() -> io::Result<SpawnAttr> {
        let mut attr: libc::posix_spawnattr_t = std::ptr::null_mut();
        // SAFETY: initialises the opaque object into the local we own.
        check_spawn(unsafe { libc::posix_spawnattr_init(&mut attr) })?;
        Ok(SpawnAttr(attr))
    }
}

impl Drop for SpawnAttr {
    fn drop(&mut self) {
        // SAFETY: initialised by `new`, destroyed once, here (posix_spawnattr_destroy(3)).
        unsafe { libc::posix_spawnattr_destroy(&mut self.0) };
    }
}

/// A `posix_spawn_file_actions_t`, initialised (`posix_spawn_file_actions_init(3)`) and
/// destroyed on drop.
struct SpawnActions(libc::posix_spawn_file_actions_t);

impl SpawnActions {
    fn new() -> io::Result<SpawnActions> {
        let mut actions: libc::posix_spawn_file_actions_t = std::ptr::null_mut();
        // SAFETY: initialises the opaque object into the local we own.
        check_spawn(unsafe { libc::posix_spawn_file_actions_init(&mut actions) })?;
        Ok(SpawnActions(actions))
    }
}

impl Drop for SpawnActions {
    fn drop(&mut self) {
        // SAFETY: initialised by `new`, destroyed once, here
        // (posix_spawn_file_actions_destroy(3)).
        unsafe { libc::posix_spawn_file_actions_destroy(&mut self.0) };
    }
}

/// Turns a `posix_spawn*` return value (an error number, not `-1` and `errno`) into a result.
fn check_spawn(ret: libc::c_int) -> io::Result<()> {
    if ret == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(ret))
    }
}

fn posix_spawn(
    plan: &SpawnPlan,
    sources: &Sources,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
) -> Result<libc::pid_t, (SpawnStep, io::Error)> {
    let mut attr = SpawnAttr::new().map_err(|e| (SpawnStep::Fork, e))?;
    let mut actions = SpawnActions::new().map_err(|e| (SpawnStep::Fork, e))?;
    let flags = libc::POSIX_SPAWN_SETPGROUP
        | libc::POSIX_SPAWN_SETSIGDEF
        | libc::POSIX_SPAWN_SETSIGMASK
        | libc::POSIX_SPAWN_CLOEXEC_DEFAULT;
    // SAFETY: as above: the attribute and action objects are initialised and ours; the
    // signal sets are locals, the strings outlive `posix_spawn`, which copies what it needs.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::sigemptyset(&mut none);
        check_spawn(libc::posix_spawnattr_setflags(
            &mut attr.0,
            flags as libc::c_short,
        ))
        .and_then(|()| check_spawn(libc::posix_spawnattr_setpgroup(&mut attr.0, 0)))
        .and_then(|()| check_spawn(libc::posix_spawnattr_setsigdefault(&mut attr.0, &all)))
        .and_then(|()| check_spawn(libc::posix_spawnattr_setsigmask(&mut attr.0, &none)))
        .map_err(|e| (SpawnStep::ProcessGroup, e))?;
        for (source, target) in sources.placements() {
            check_spawn(libc::posix_spawn_file_actions_adddup2(
                &mut actions.0,
                source,
                target,
            ))
            .map_err(|e| (SpawnStep::Descriptors, e))?;
        }
        if let Some(cwd) = &plan.cwd {
            check_spawn(libc::posix_spawn_file_actions_addchdir_np(
                &mut actions.0,
                cwd.as_ptr(),
            ))
            .map_err(|e| (SpawnStep::Chdir, e))?;
        }
        let mut pid: libc::pid_t = 0;
        check_spawn(libc::posix_spawn(
            &mut pid,
            plan.program.as_ptr(),
            &actions.0,
            &attr.0,
            argv.as_ptr().cast(),
            envp.as_ptr().cast(),
        ))
        .map_err(|e| {
            // posix_spawn reports a failed chdir action and a failed exec alike: tell them
            // apart by looking at the directory.
            let cwd_missing = plan.cwd.as_ref().is_some_and(|cwd| {
                let cwd = std::ffi::OsStr::from_bytes(cwd.as_bytes());
                !std::path::Path::new(cwd).is_dir()
            });
            (
                if cwd_missing {
                    SpawnStep::Chdir
                } else {
                    SpawnStep::Exec
                },
                e,
            )
        })?;
        Ok(pid)
    }
}

/// Raw pointers and numbers for the forked child, so that it allocates nothing.
struct Layout<'a> {
    program: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    cwd: Option<*const libc::c_char>,
    placements: &'a [(RawFd, RawFd)],
    keep_below: RawFd,
    table_size: RawFd,
    rlimits: &'a [(super::RlimitResource, libc::rlimit)],
    report: RawFd,
}

fn fork_exec(
    plan: &SpawnPlan,
    sources: &Sources,
    rlimits: &[(super::RlimitResource, libc::rlimit)],
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
) -> Result<libc::pid_t, (SpawnStep, io::Error)> {
    let (err_read, err_write) = super::pipe().map_err(|e| (SpawnStep::Fork, e))?;
    let placements = sources.placements();
    let layout = Layout {
        program: plan.program.as_ptr(),
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        cwd: plan.cwd.as_ref().map(|c| c.as_ptr()),
        keep_below: if sources.report.is_some() { 5 } else { 4 },
        placements: &placements,
        table_size: table_size(),
        rlimits,
        report: err_write.as_raw_fd(),
    };
    let old_mask = block_all_signals();
    // SAFETY: fork(2) in a multi-threaded process: the child runs only `exec_child`, which
    // makes only async-signal-safe calls on memory prepared before the fork (`layout` and
    // what it points to, which the child's copy of our memory holds too).
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: we are the freshly forked child.
        unsafe { exec_child(&layout) }
    }
    restore_signal_mask(&old_mask);
    if pid < 0 {
        return Err((SpawnStep::Fork, io::Error::last_os_error()));
    }
    drop(err_write);
    // Closes the race in which the parent signals the group before the child made it.
    // SAFETY: setpgid on our own unreaped child; EACCES after its exec is harmless.
    unsafe { libc::setpgid(pid, pid) };
    let mut report = [0u8; 8];
    let mut got = 0;
    while got < report.len() {
        // SAFETY: writes at most `report.len() - got` bytes into `report[got..]`.
        let n = unsafe {
            libc::read(
                err_read.as_raw_fd(),
                report[got..].as_mut_ptr().cast(),
                report.len() - got,
            )
        };
        match n {
            0 => break,
            n if n > 0 => got += n as usize,
            _ => {
                if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                    break;
                }
            }
        }
    }
    if got == report.len() {
        let step = SpawnStep::from_code(u32::from_ne_bytes([
            report[0], report[1], report[2], report[3],
        ]));
        let errno = i32::from_ne_bytes([report[4], report[5], report[6], report[7]]);
        reap_blocking(pid);
        return Err((step, io::Error::from_raw_os_error(errno)));
    }
    Ok(pid)
}

/// The child between fork and exec.
///
/// # Safety
///
/// Only in a freshly forked child, with `layout` pointing into memory the fork copied.
unsafe fn exec_child(layout: &Layout<'_>) -> ! {
    // SAFETY: only async-signal-safe calls (sigaction, sigprocmask, setpgid, dup2, fcntl,
    // chdir, setrlimit — a plain system call in libsystem_kernel —, execve, write, _exit), on
    // pointers into memory the caller vouches for.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = libc::SIG_DFL;
        // 1 to NSIG - 1: macOS has 31 signals (`<sys/signal.h>`, `NSIG` 32).
        for signal in 1..32 {
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::pthread_sigmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        if libc::setpgid(0, 0) != 0 {
            fail(layout.report, SpawnStep::ProcessGroup);
        }
        // Every source sits at 5 or above (see `Sources`): placing one overwrites none.
        for &(source, target) in layout.placements {
            if libc::dup2(source, target) != target {
                fail(layout.report, SpawnStep::Descriptors);
            }
        }
        // Everything else closes at exec, even what the parent opened without FD_CLOEXEC.
        for fd in layout.keep_below..layout.table_size {
            if fd != layout.report {
                libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
            }
        }
        if let Some(cwd) = layout.cwd {
            if libc::chdir(cwd) != 0 {
                fail(layout.report, SpawnStep::Chdir);
            }
        }
        for (resource, limit) in layout.rlimits {
            if libc::setrlimit(*resource, limit) != 0 {
                fail(layout.report, SpawnStep::Limits);
            }
        }
        libc::execve(layout.program, layout.argv, layout.envp);
        fail(layout.report, SpawnStep::Exec)
    }
}

/// The number of descriptor slots the forked child sweeps (`getrlimit(2)` `RLIMIT_NOFILE`,
/// capped), computed before the fork.
fn table_size() -> RawFd {
    // SAFETY: an all-zero rlimit is valid; getrlimit fills it.
    let mut limit: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: getrlimit writes one rlimit into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 10_240;
    }
    limit.rlim_cur.min(1 << 16) as RawFd
}

/// One child, by pid, with a kqueue that becomes readable when it exits. macOS's stand-in
/// for a pidfd: see the module documentation for why the pid is safe to use.
#[derive(Debug)]
pub(crate) struct Pidfd {
    pid: libc::pid_t,
    /// A kqueue with one `EVFILT_PROC` / `NOTE_EXIT` filter on `pid`.
    kqueue: SharedFd,
    /// What is known of the child; held across every signal and the reap.
    state: Mutex<State>,
}

/// What a [`Pidfd`] knows of its child.
#[derive(Debug, Default)]
struct State {
    /// The child has exited (it may be a zombie still).
    exited: bool,
    /// The child was reaped (by us, or — `ECHILD` — by someone else): its pid is no longer
    /// ours to signal.
    reaped: bool,
}

impl Pidfd {
    fn open(pid: libc::pid_t) -> io::Result<Pidfd> {
        // SAFETY: kqueue(2) takes nothing and returns a new descriptor or -1.
        let raw = cvt(unsafe { libc::kqueue() })?;
        // SAFETY: a fresh descriptor that we own alone. (kqueue(2): a kqueue is not inherited
        // by a forked child; it is marked close-on-exec below as well.)
        let kqueue = unsafe { OwnedFd::from_raw_fd(raw) };
        super::set_cloexec(kqueue.as_fd(), true)?;
        // No EV_CLEAR, and the event is never retrieved: once the child exits, the kqueue
        // stays readable for good, as a pidfd does — what both the runtime's watcher and the
        // blocking event loop's `poll` rely on.
        let registered = add_event(
            kqueue.as_raw_fd(),
            pid as libc::uintptr_t,
            libc::EVFILT_PROC,
            libc::NOTE_EXIT,
        );
        let exited = match registered {
            Ok(()) => false,
            // ESRCH (kevent(2)): no such process — our child is unreaped, so it has already
            // exited and no NOTE_EXIT will come. A user event, triggered at once
            // (EVFILT_USER, NOTE_TRIGGER: kqueue(2)), makes the kqueue readable all the same.
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {
                add_event(kqueue.as_raw_fd(), 0, libc::EVFILT_USER, 0)?;
                add_event(kqueue.as_raw_fd(), 0, libc::EVFILT_USER, libc::NOTE_TRIGGER)?;
                true
            }
            Err(e) => return Err(e),
        };
        Ok(Pidfd {
            pid,
            kqueue: SharedFd::new(kqueue),
            state: Mutex::new(State {
                exited,
                reaped: false,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends `signal` to the process; `ESRCH` once it has been reaped.
    pub(crate) fn send_signal(&self, signal: i32) -> io::Result<()> {
        let state = self.lock();
        if state.reaped {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        // SAFETY: `pid` is our child and not reaped (we hold the lock the reap takes), so the
        // number still names it (kill(2)).
        cvt(unsafe { libc::kill(self.pid, signal) }).map(drop)
    }

    /// Whether the process has ended (it may be a zombie still): does not reap.
    ///
    /// Looks whether the kqueue is readable (without retrieving its event); if not, asks
    /// `waitid(2)` with `WNOWAIT`, which leaves the child waitable. Never `true` for a
    /// running child: the watcher takes the whole group down when this says so.
    pub(crate) fn has_exited(&self) -> io::Result<bool> {
        let mut state = self.lock();
        if state.reaped || state.exited {
            return Ok(true);
        }
        // The kqueue holds only the NOTE_EXIT filter (or the user event standing for it), and
        // its event is never retrieved: readable means exited. poll(2) only looks.
        if matches!(
            crate::sys::unix::wait_fd(
                self.kqueue.as_fd(),
                crate::sys::unix::Interest::Readable,
                Some(std::time::Duration::ZERO),
            ),
            Ok(true)
        ) {
            state.exited = true;
        }
        if !state.exited {
            // A failing waitid (it should not) leaves the answer to the kqueue.
            state.exited = retry(|| {
                // SAFETY: waitid on our one unreaped child (P_PID), with WNOWAIT so that
                // nothing is reaped; it fills the zeroed siginfo we own.
                unsafe {
                    let mut info: libc::siginfo_t = std::mem::zeroed();
                    cvt(libc::waitid(
                        libc::P_PID,
                        self.pid as libc::id_t,
                        &mut info,
                        libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
                    ))?;
                    Ok(info.si_pid == self.pid)
                }
            })
            .unwrap_or(false);
        }
        Ok(state.exited)
    }

    /// Reaps the process if it has ended (`wait4(2)` on its pid alone, with `WNOHANG`).
    pub(crate) fn try_reap(&self) -> io::Result<Option<Reaped>> {
        let mut state = self.lock();
        if state.reaped {
            return Err(io::Error::from_raw_os_error(libc::ECHILD));
        }
        let mut status = 0;
        // SAFETY: an all-zero rusage is valid; wait4 fills it and `status`, for our one
        // child only.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let ret = retry(|| {
            // SAFETY: as above.
            cvt(unsafe { libc::wait4(self.pid, &mut status, libc::WNOHANG, &mut usage) })
        });
        let ret = match ret {
            Ok(ret) => ret,
            Err(e) => {
                // ECHILD: someone else reaped it; the pid is no longer ours to signal.
                if e.raw_os_error() == Some(libc::ECHILD) {
                    state.reaped = true;
                }
                return Err(e);
            }
        };
        if ret == 0 {
            return Ok(None);
        }
        state.exited = true;
        state.reaped = true;
        let exit = if libc::WIFEXITED(status) {
            RawExit::Code(libc::WEXITSTATUS(status))
        } else {
            RawExit::Signal {
                signal: libc::WTERMSIG(status),
                core_dumped: libc::WCOREDUMP(status),
            }
        };
        let time = |t: libc::timeval| {
            std::time::Duration::from_secs(t.tv_sec.max(0) as u64)
                + std::time::Duration::from_micros(t.tv_usec.max(0) as u64)
        };
        Ok(Some(Reaped {
            exit,
            cpu_time: time(usage.ru_utime) + time(usage.ru_stime),
        }))
    }

    /// The kqueue, to register with a runtime: it becomes readable when the process ends.
    pub(crate) fn shared_fd(&self) -> &SharedFd {
        &self.kqueue
    }
}

/// Adds one filter to `kqueue` (`kevent(2)`, `EV_ADD`), with no event list.
fn add_event(kqueue: RawFd, ident: libc::uintptr_t, filter: i16, fflags: u32) -> io::Result<()> {
    // SAFETY: an all-zero kevent is a valid value; we fill the fields kevent(2) reads.
    let mut change: libc::kevent = unsafe { std::mem::zeroed() };
    change.ident = ident;
    change.filter = filter;
    change.flags = libc::EV_ADD;
    change.fflags = fflags;
    // SAFETY: one change from a local, no event list, on a kqueue the caller owns.
    cvt(unsafe {
        libc::kevent(
            kqueue,
            &change,
            1,
            std::ptr::null_mut(),
            0,
            std::ptr::null(),
        )
    })
    .map(drop)
}

/// Names this process's main thread (`pthread_setname_np(3)`: macOS names only the calling
/// thread, and `ps` keeps showing the executable's name). At most 63 bytes are kept.
pub(crate) fn set_process_name(name: &str) -> io::Result<()> {
    let mut end = name.len().min(63);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    let name = CString::new(&name.as_bytes()[..end]).map_err(io::Error::other)?;
    // SAFETY: reads a NUL-terminated string alive for the call.
    let ret = unsafe { libc::pthread_setname_np(name.as_ptr()) };
    if ret == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(ret))
    }
}
