//! What starting a child means on every Unix: the plan prepared before it starts, the steps
//! at which it can fail and how a forked child reports one, and how an ended child is
//! described. Each OS's `process` module starts, watches and reaps children its own way on
//! top of these.

use std::ffi::CString;
use std::io;
use std::os::fd::{OwnedFd, RawFd};

use super::{cvt, retry};

/// Where a child's stdout or stderr goes.
#[derive(Debug)]
pub(crate) enum ChildFd {
    /// The parent's own descriptor, unchanged.
    Inherit,
    /// This descriptor (a pipe's write end, or `/dev/null`).
    Fd(OwnedFd),
}

/// Everything a child needs, prepared before it is started.
#[derive(Debug)]
pub(crate) struct SpawnPlan {
    /// The resolved path of the program.
    pub program: CString,
    /// `argv`, starting with the service name.
    pub argv: Vec<CString>,
    /// The whole environment, as `KEY=VALUE`.
    pub envp: Vec<CString>,
    /// The working directory, if not the parent's.
    pub cwd: Option<CString>,
    pub stdout: ChildFd,
    pub stderr: ChildFd,
    /// The child's end of the parent port: fd 3 in the child.
    pub port: OwnedFd,
    /// `/dev/null`, for stdin.
    pub dev_null: OwnedFd,
    /// Limits and sandbox layers to apply just before `execve`, if any.
    pub confine: Option<PreExec>,
}

/// What a confined child gets before its first instruction.
#[derive(Debug)]
pub(crate) struct PreExec {
    /// `setrlimit` calls: (resource, soft and hard limits).
    pub rlimits: Vec<(super::RlimitResource, libc::rlimit)>,
    /// The sandbox's stage 1, if sandboxed. On Linux: `no_new_privs`, a session of its own
    /// (no controlling terminal, so no `TIOCSTI` into the parent's terminal), namespaces
    /// where the kernel allows them, the Landlock ruleset and the seccomp filter. On macOS:
    /// the Seatbelt profile, for the launcher that starts in the program's place.
    pub sandbox: Option<crate::sandbox::Prepared>,
    /// The write end of the report pipe: fd 4 in the child.
    pub report: OwnedFd,
}

/// The step at which a child failed to start: the same steps on every Unix, so that the
/// neutral layer maps them alike (`ParentDeathSignal` and `Sandbox` never happen on macOS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SpawnStep {
    Fork,
    ProcessGroup,
    ParentDeathSignal,
    Descriptors,
    Chdir,
    Limits,
    Sandbox,
    Exec,
    Pidfd,
}

impl SpawnStep {
    pub(crate) fn from_code(code: u32) -> SpawnStep {
        match code {
            1 => SpawnStep::ProcessGroup,
            2 => SpawnStep::ParentDeathSignal,
            3 => SpawnStep::Descriptors,
            4 => SpawnStep::Chdir,
            6 => SpawnStep::Limits,
            7 => SpawnStep::Sandbox,
            _ => SpawnStep::Exec,
        }
    }

    pub(crate) fn code(self) -> u32 {
        match self {
            SpawnStep::ProcessGroup => 1,
            SpawnStep::ParentDeathSignal => 2,
            SpawnStep::Descriptors => 3,
            SpawnStep::Chdir => 4,
            SpawnStep::Limits => 6,
            SpawnStep::Sandbox => 7,
            _ => 5,
        }
    }
}

pub(crate) fn null_terminated(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// Reports `step` and the current errno to the parent, and exits.
///
/// # Safety
///
/// Only in the forked child.
pub(crate) unsafe fn fail(report: RawFd, step: SpawnStep) -> ! {
    let errno = io::Error::last_os_error().raw_os_error().unwrap_or(0);
    let mut bytes = [0u8; 8];
    bytes[..4].copy_from_slice(&step.code().to_ne_bytes());
    bytes[4..].copy_from_slice(&errno.to_ne_bytes());
    // SAFETY: write and _exit are async-signal-safe; `bytes` lives on this stack. A pipe write
    // of 8 bytes is atomic (below PIPE_BUF).
    unsafe {
        libc::write(report, bytes.as_ptr().cast(), bytes.len());
        libc::_exit(127)
    }
}

pub(crate) fn block_all_signals() -> libc::sigset_t {
    // SAFETY: sigfillset initialises `all`; pthread_sigmask writes the old mask into `old`.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        old
    }
}

pub(crate) fn restore_signal_mask(old: &libc::sigset_t) {
    // SAFETY: `old` is a mask pthread_sigmask returned.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, old, std::ptr::null_mut()) };
}

/// Reaps our own child `pid`, waiting for it. Used only for a child that failed to start.
pub(crate) fn reap_blocking(pid: libc::pid_t) {
    let mut status = 0;
    // SAFETY: waits for one specific child of ours, writing its status into a local.
    let _ = retry(|| cvt(unsafe { libc::waitpid(pid, &mut status, 0) }));
}

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RawExit {
    Code(i32),
    Signal { signal: i32, core_dumped: bool },
}

/// How a reaped child ended, and the CPU time it used.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reaped {
    pub exit: RawExit,
    pub cpu_time: std::time::Duration,
}

/// Sends `signal` to every process in the group `pgid`.
///
/// Sound against recycling only while the group's leader — our child, whose pid is `pgid` —
/// is not yet reaped: until then no other process can own that number as a pid or a group.
pub(crate) fn kill_process_group(pgid: libc::pid_t, signal: i32) {
    // SAFETY: kill with a negative pid signals a process group; an error (ESRCH: the group
    // is empty) means there is nobody left to signal.
    unsafe { libc::kill(-pgid, signal) };
}
