//! Resource limits for a utility process: how much memory, CPU time, open files, processes
//! and file size it may use.
//!
//! Limits are set with [`ForkOptions::limits`](crate::ForkOptions::limits) and applied in the
//! child before its program runs, so they hold from its first instruction. On Linux today the
//! kernel's resource limits (`setrlimit`) enforce them:
//!
//! | limit | enforced by | what the child sees | what the parent is told |
//! |---|---|---|---|
//! | [`memory`](Limits::memory) | `RLIMIT_AS` (address space) | allocations fail; a Rust child aborts | [`Error::LimitExceeded`] with [`Limit::Memory`] |
//! | [`cpu_time`](Limits::cpu_time) | `RLIMIT_CPU` (whole seconds) | SIGXCPU, then SIGKILL one second later | [`Limit::CpuTime`] |
//! | [`open_files`](Limits::open_files) | `RLIMIT_NOFILE` | `open`, `socketpair`… fail with `EMFILE` | nothing: the child carries on |
//! | [`processes`](Limits::processes) | `RLIMIT_NPROC` (per user) | `fork` fails with `EAGAIN` | nothing: the child carries on |
//! | [`file_size`](Limits::file_size) | `RLIMIT_FSIZE` | SIGXFSZ on a write past the limit | [`Limit::FileSize`] |
//!
//! A limit the machine cannot enforce is an error at fork ([`Error::Unenforceable`]), unless
//! the limits were made [`best_effort`](Limits::best_effort). [`Limits::backend`] tells, ahead
//! of time, what enforces each one here.
//!
//! # Platform-specific behavior
//!
//! `RLIMIT_AS` counts address space, not resident memory: thread stacks and allocator arenas
//! are reserved up front, so give a multi-threaded child room (a tokio child reserves tens of
//! MiB before it allocates anything). `RLIMIT_NPROC` counts every process of the child's real
//! user, not only the child's own, and does not bind a process with `CAP_SYS_ADMIN` or
//! `CAP_SYS_RESOURCE` (root): there it cannot be enforced. cgroup v2 (`memory.max`,
//! `cpu.max`, `pids.max`) is not used yet — see the README's limitations.
//!
//! On macOS, limits are rlimits too, set by the child between `fork` and `execve` (a child
//! without limits starts with `posix_spawn`). macOS accepts `RLIMIT_AS` but does not enforce
//! it, so a memory limit is [`Backend::Unavailable`] there ([`Error::Unenforceable`] unless
//! best effort); `RLIMIT_NPROC` does not bind root.
//!
//! [`Error::LimitExceeded`]: crate::Error::LimitExceeded
//! [`Error::Unenforceable`]: crate::Error::Unenforceable

use std::fmt;
use std::time::Duration;

/// One kind of resource limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Limit {
    /// Address space, in bytes.
    Memory,
    /// CPU time, user and system together.
    CpuTime,
    /// Open file descriptors.
    OpenFiles,
    /// Processes (and threads) of the child's user.
    Processes,
    /// The size of any file the child writes.
    FileSize,
}

impl Limit {
    /// Every kind, in a fixed order.
    pub const ALL: [Limit; 5] = [
        Limit::Memory,
        Limit::CpuTime,
        Limit::OpenFiles,
        Limit::Processes,
        Limit::FileSize,
    ];

    /// A short name: `"memory"`, `"CPU time"`…
    pub fn name(self) -> &'static str {
        match self {
            Limit::Memory => "memory",
            Limit::CpuTime => "CPU time",
            Limit::OpenFiles => "open files",
            Limit::Processes => "processes",
            Limit::FileSize => "file size",
        }
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What enforces a limit on this machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Backend {
    /// A kernel resource limit (`setrlimit`), named.
    Rlimit(&'static str),
    /// A limit of the child's job object (Windows), named.
    JobObject(&'static str),
    /// Nothing can: the reason, in words.
    Unavailable(&'static str),
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Backend::Rlimit(name) | Backend::JobObject(name) => write!(f, "{name}"),
            Backend::Unavailable(why) => write!(f, "unavailable: {why}"),
        }
    }
}

/// The resource limits of one utility process. Every limit is off until set.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use utility_process::{fork, Error, Event, ForkOptions, Limit, Limits};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Error> {
/// // A shell that spins forever is stopped after one second of CPU time.
/// let limits = Limits::new().cpu_time(Duration::from_secs(1));
/// let mut child = fork("sh", ["-c", "while :; do :; done"], ForkOptions::default().limits(limits))?;
/// let mut reason = None;
/// while let Some(event) = child.next_event().await {
///     if let Event::Error(Error::LimitExceeded { limit, .. }) = event {
///         reason = Some(limit);
///     }
/// }
/// assert_eq!(reason, Some(Limit::CpuTime));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    pub(crate) memory: Option<u64>,
    pub(crate) cpu_time: Option<Duration>,
    pub(crate) open_files: Option<u64>,
    pub(crate) processes: Option<u64>,
    pub(crate) file_size: Option<u64>,
    pub(crate) best_effort: bool,
}

impl Limits {
    /// No limit set.
    pub fn new() -> Limits {
        Limits::default()
    }

    /// At most `bytes` of address space (`RLIMIT_AS`).
    ///
    /// # What it counts
    ///
    /// Every mapping the child makes: its heap, stacks, libraries, and shared buffers it
    /// maps. It does **not** count memory the kernel holds for the child outside its address
    /// space: the contents of a memfd or a tmpfs file it never maps, pipe and socket buffers
    /// (each bounded by the kernel's per-buffer maximum, so in all by about the
    /// [`open_files`](Self::open_files) limit times 1 MiB), and kernel objects. A child that
    /// is also sandboxed cannot use the first way round: under a memory limit the sandbox
    /// denies `memfd_create`, and its filesystem is read-only except the paths given to
    /// [`Sandbox::allow_write`](crate::Sandbox::allow_write) (bound those with
    /// [`file_size`](Self::file_size)). An unsandboxed child can.
    ///
    /// A Rust child that reaches the limit aborts; the parent reports
    /// [`Limit::Memory`](crate::Limit::Memory). It learns that from the line Rust's allocation
    /// error handler writes to stderr (which the library relays for a memory-limited child),
    /// or from the child's own SIGABRT handler when that line never came.
    pub fn memory(mut self, bytes: u64) -> Limits {
        self.memory = Some(bytes);
        self
    }

    /// At most this much CPU time, rounded up to whole seconds (the kernel's unit).
    pub fn cpu_time(mut self, time: Duration) -> Limits {
        self.cpu_time = Some(time);
        self
    }

    /// At most `count` open descriptors (the child's stdio and port count).
    pub fn open_files(mut self, count: u64) -> Limits {
        self.open_files = Some(count);
        self
    }

    /// At most `count` processes and threads for the child's user (see the module docs).
    pub fn processes(mut self, count: u64) -> Limits {
        self.processes = Some(count);
        self
    }

    /// No file written larger than `bytes`.
    pub fn file_size(mut self, bytes: u64) -> Limits {
        self.file_size = Some(bytes);
        self
    }

    /// Apply what this machine can enforce and skip the rest, instead of failing the fork.
    pub fn best_effort(mut self) -> Limits {
        self.best_effort = true;
        self
    }

    /// What enforces `limit` on this machine, for this process's privileges.
    ///
    /// # Examples
    ///
    /// ```
    /// use utility_process::{Backend, Limit, Limits};
    ///
    /// assert_eq!(Limits::backend(Limit::Memory), Backend::Rlimit("RLIMIT_AS"));
    /// for limit in Limit::ALL {
    ///     println!("{limit}: {}", Limits::backend(limit));
    /// }
    /// ```
    pub fn backend(limit: Limit) -> Backend {
        crate::sys::confine::backend(limit)
    }

    /// Whether any limit is set.
    pub(crate) fn is_empty(&self) -> bool {
        self.memory.is_none()
            && self.cpu_time.is_none()
            && self.open_files.is_none()
            && self.processes.is_none()
            && self.file_size.is_none()
    }
}
