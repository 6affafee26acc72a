//! Sandboxes for utility processes: a child that can compute and talk on its ports, and
//! nothing else.
//!
//! [`Sandbox::strict`] is the compute-only profile. A child under it may read and write the
//! descriptors it holds (its port, stdio, ports and shared buffers it receives), allocate
//! memory, start threads, use time and futexes, and exit. It may not open any path, create a
//! socket (other than the socket pairs behind new [`MessageChannel`]s), exec a program, fork,
//! ptrace or signal another process, change its sandbox, use io_uring, or use the 32-bit and
//! x32 system-call entry points. [`Sandbox::allow_read`], [`allow_write`](Sandbox::allow_write),
//! [`allow_exec`](Sandbox::allow_exec) and [`allow_network`](Sandbox::allow_network) open what
//! an application needs beyond that.
//!
//! # How it is built
//!
//! Three kernel features, applied in two stages:
//!
//! 1. **Before `execve`**, by the parent's code in the forked child, for any program:
//!    `PR_SET_NO_NEW_PRIVS` (no set-user-ID or file-capability gain, ever); a session of its
//!    own (no controlling terminal); a Landlock ruleset under which nothing of the filesystem
//!    is open but the program and its `#!` interpreter (read and run), the system's shared
//!    libraries (`/lib`, `/usr/lib`, …, read: the loader needs them) and the allowed paths, TCP
//!    bind/connect are denied (Landlock ABI 4) and signals and abstract Unix sockets cannot
//!    reach outside the sandbox (ABI 6); and a seccomp filter that denies the dangerous calls
//!    outright (ptrace, io_uring, namespaces, mounts, BPF, keyrings, module loading, fork,
//!    socket creation, datagram socket pairs, leaving its process group, `F_SETOWN`,
//!    `TIOCSTI`…, and `memfd_create` under a memory limit). Its stdout and stderr are pipes of
//!    its own, never the parent's descriptors (`Stdio::Inherit` is relayed).
//! 2. **Before `main`**, in a Rust child built with this crate: a library constructor (run by
//!    the loader, before the program's own code) adds a second Landlock ruleset that takes
//!    the libraries away again, and a second seccomp filter that allows only the calls listed
//!    in the module source (`strict_rules`), with arguments checked where they matter
//!    (threads but not processes; signals only to itself; `fcntl`, `ioctl` and `prctl` only
//!    for harmless requests). The child confirms it in its handshake; a child that talks
//!    without confirming is killed ([`Error::SandboxNotApplied`]).
//!
//! **Every promise rests on stage 1.** Code can run in the child before the library's
//! constructor (another constructor, a thread a native library starts as it loads), and a
//! hostile program can skip stage 2 and still claim it in its handshake. Neither gets more
//! than stage 1 allows, because the parent put stage 1 in place before the program's first
//! instruction: stage 2 narrows the kernel's surface for a child that applies it, and the
//! confirmation only catches a program that forgot to. A program that does not link this
//! crate (a Python script, a shell) must be given what its interpreter reads as it starts:
//! `allow_read` its installation (`sys.prefix` for Python).
//!//! # Fail closed
//!
//! A layer the kernel cannot enforce is an error at fork ([`Error::Unenforceable`], naming the
//! missing feature) unless the sandbox was made [`best_effort`](Sandbox::best_effort); the
//! child can then ask [`status`] what is actually enforced.
//!
//! # Platform-specific behavior
//!
//! Linux on x86_64 only for now. Landlock does not govern `stat`: a sandboxed child can learn
//! whether a path exists and its metadata, but not open it.
//!
//! On macOS the sandbox is Seatbelt (`sandbox(7)`), with a deny-by-default profile modelled
//! on Chromium's renderers: stage 1 is Apple's launcher, `/usr/bin/sandbox-exec`
//! (`sandbox-exec(1)`), which applies the profile and then execs the program, so the
//! sandbox holds from the program's first instruction; stage 2 only confirms it (the child
//! asks the kernel, and its handshake says so). The profile allows what the strict profile
//! allows on Linux, as closely as Seatbelt can say it: the paths, programs and network the
//! sandbox opens, the system's libraries for the loader, and metadata (not contents) of any
//! path; no system service (`mach-lookup`) at all. `sandbox/seatbelt.rs` lists every rule
//! and why. Without the launcher every sandbox, best effort or not, is refused
//! ([`Missing::Seatbelt`]). The program's `argv[0]` is its path, not the service name; a
//! profile macOS refuses to compile ends the child before its first message, with
//! sandbox-exec's reason on its stderr. [`Sandbox::support`] reports neither seccomp nor
//! Landlock there, and `strict_allowed` (Linux-only) does not exist.
//!
//! On Windows a sandbox is an AppContainer with no capabilities (low integrity, no network,
//! none of the user's files) and job limits (UI, one process), checked by the parent in the
//! suspended child's token and job before its first instruction; paths cannot be opened to
//! it ([`Missing::AppContainerPaths`]). Best effort falls back to a restricted token at low
//! integrity where there is no AppContainer. See `sandbox/windows.rs` for the whole story.
//!
//! [`MessageChannel`]: crate::MessageChannel
//! [`Error::SandboxNotApplied`]: crate::Error::SandboxNotApplied
//! [`Error::SandboxViolation`]: crate::Error::SandboxViolation
//! [`Error::Unenforceable`]: crate::Error::Unenforceable

// The kernel layers differ per OS (seccomp and Landlock; Seatbelt): one module each, the
// same names (`support`, `Prepared`, `Sandbox::prepare`, `apply_strict`), chosen here.
#[cfg(target_os = "linux")]
pub(crate) mod filter;
#[cfg(target_os = "linux")]
#[path = "linux.rs"]
mod imp;
#[cfg(target_os = "macos")]
#[path = "macos.rs"]
mod imp;
#[cfg(windows)]
#[path = "windows.rs"]
mod imp;
// The macOS profile and launcher as pure functions: compiled and tested on every OS.
#[cfg_attr(not(target_os = "macos"), allow(dead_code))]
mod seatbelt;
mod syscall_names;

#[cfg(windows)]
pub use imp::app_container_name;
#[cfg(target_os = "linux")]
pub use imp::strict_allowed;
#[cfg(unix)]
pub(crate) use imp::Prepared;

#[cfg(unix)]
use std::ffi::OsString;
use std::fmt;
#[cfg(unix)]
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;
use std::sync::OnceLock;

#[cfg(unix)]
use crate::sys::confine as sys;

/// The environment variable that carries stage 2 to the child.
pub(crate) const ENV: &str = "UTILITY_PROCESS_CONFINE";

/// The Landlock ABI that covers everything the strict profile promises (scoped signals and
/// abstract sockets arrived in ABI 6, Linux 6.12).
pub const LANDLOCK_ABI_NEEDED: u32 = 6;

/// A sandbox profile for [`ForkOptions::sandbox`](crate::ForkOptions::sandbox).
///
/// # Examples
///
/// ```
/// use utility_process::{fork, Error, Event, ForkOptions, Sandbox};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Error> {
/// # if !Sandbox::support().seccomp || Sandbox::support().landlock_abi < 6 { return Ok(()) }
/// // Any program gets the layers applied before exec: this shell can write no file.
/// let options = ForkOptions::default().sandbox(Sandbox::strict());
/// let mut child = fork("sh", ["-c", "echo escaped > /tmp/sandboxed-shell"], options)?;
/// while let Some(event) = child.next_event().await {
///     if let Event::Exit(status) = event {
///         assert!(!status.success());
///     }
/// }
/// assert!(!std::path::Path::new("/tmp/sandboxed-shell").exists());
///
/// // A directory opened to it, and only that one:
/// let sandbox = Sandbox::strict().allow_write(std::env::temp_dir());
/// # let _ = sandbox;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sandbox {
    read: Vec<PathBuf>,
    write: Vec<PathBuf>,
    exec: Vec<PathBuf>,
    network: bool,
    best_effort: bool,
}

impl Sandbox {
    /// The compute-only profile: nothing beyond the descriptors the child holds.
    pub fn strict() -> Sandbox {
        Sandbox::default()
    }

    /// Also lets the child read files and list directories beneath `path`.
    ///
    /// A program that does not link this crate needs this for what its runtime reads as it
    /// starts: for a Python script, the interpreter's installation (`sys.prefix`) and the
    /// script itself.
    pub fn allow_read(mut self, path: impl Into<PathBuf>) -> Sandbox {
        self.read.push(path.into());
        self
    }

    /// Also lets the child read, write, create and remove beneath `path`.
    pub fn allow_write(mut self, path: impl Into<PathBuf>) -> Sandbox {
        self.write.push(path.into());
        self
    }

    /// Also lets the child start `program` (fork and exec it), with read access to the
    /// system's shared libraries, which a dynamically linked program needs. The program, and
    /// any process the child starts, runs under the same sandbox: no filter or ruleset is
    /// ever lifted. With this, the child may create processes (not namespaces): bound them
    /// with [`Limits::processes`](crate::Limits::processes).
    pub fn allow_exec(mut self, program: impl Into<PathBuf>) -> Sandbox {
        self.exec.push(program.into());
        self
    }

    /// Also lets the child create sockets and use the network.
    pub fn allow_network(mut self) -> Sandbox {
        self.network = true;
        self
    }

    /// Apply what the kernel can enforce and skip the rest, instead of failing the fork.
    /// The child can see what holds with [`status`].
    pub fn best_effort(mut self) -> Sandbox {
        self.best_effort = true;
        self
    }

    /// What this machine's kernel would enforce of a sandbox, or why it cannot.
    ///
    /// # Examples
    ///
    /// ```
    /// let support = utility_process::Sandbox::support();
    /// println!("seccomp: {}, Landlock ABI: {}", support.seccomp, support.landlock_abi);
    /// ```
    pub fn support() -> Support {
        imp::support()
    }
}

/// What the kernel offers for sandboxing, as [`Sandbox::support`] finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Support {
    /// seccomp filters work, for an architecture the library has filters for.
    pub seccomp: bool,
    /// The Landlock ABI version (0: no Landlock).
    pub landlock_abi: u32,
}

/// A kernel feature a sandbox or limit needs and this machine lacks.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Missing {
    /// seccomp filtering (the kernel lacks `CONFIG_SECCOMP_FILTER`, or the library has no
    /// filter for this architecture).
    Seccomp,
    /// Landlock, or a recent enough ABI of it.
    Landlock {
        /// The ABI the kernel has (0: none).
        found: u32,
        /// The ABI the sandbox needs.
        needed: u32,
    },
    /// A resource limit, and why.
    Limit {
        /// Which limit.
        limit: crate::Limit,
        /// Why it cannot be enforced here.
        why: &'static str,
    },
    /// A Seatbelt sandbox on macOS: its launcher, `/usr/bin/sandbox-exec` (`sandbox-exec(1)`),
    /// which applies the profile before the program's first instruction, is missing or is not
    /// a root-owned executable, so the library refuses rather than start the child
    /// unconfined.
    Seatbelt,
    /// An AppContainer (Windows 8 and later), which every Windows sandbox that is not best
    /// effort is built on, and why there is none here (Wine has none, for one).
    AppContainer {
        /// Why not.
        why: &'static str,
    },
    /// The AppContainer cannot open the program (or its working directory), so Windows
    /// refused to start it: an AppContainer reaches only files whose access list grants it.
    /// Installers grant `ALL APPLICATION PACKAGES` (S-1-15-2-1) read and execute on the
    /// installation directory.
    AppContainerAccess {
        /// The program.
        path: PathBuf,
    },
    /// A path given to [`Sandbox::allow_read`] or [`Sandbox::allow_write`], on Windows: an
    /// AppContainer reaches only files whose access list grants it, and this library changes
    /// no access list (see `sandbox/windows.rs`). Grant `ALL APPLICATION PACKAGES` (or the
    /// container, `sandbox::app_container_name()`) access to the path instead, at
    /// installation.
    AppContainerPaths {
        /// The first such path.
        path: PathBuf,
    },
    /// [`Sandbox::allow_exec`] on Windows, unless best effort: nothing limits which programs
    /// an AppContainer child starts (they all run in the same container and job), so the list
    /// cannot be enforced.
    AppContainerExec,
    /// A layer of a Windows sandbox that the parent did not find in place when it checked the
    /// suspended child before its first instruction (its token, or its job's limits): the
    /// child was terminated without running.
    WindowsUnverified {
        /// What did not hold, and what was found instead.
        what: String,
    },
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Missing::Seccomp => f.write_str("seccomp filtering for this architecture"),
            Missing::Landlock { found: 0, needed } => {
                write!(f, "Landlock (ABI {needed} or later; the kernel has none)")
            }
            Missing::Landlock { found, needed } => {
                write!(f, "Landlock ABI {needed} (the kernel has ABI {found})")
            }
            Missing::Limit { limit, why } => write!(f, "a {limit} limit: {why}"),
            Missing::Seatbelt => f.write_str(
                "a Seatbelt sandbox (macOS): its launcher /usr/bin/sandbox-exec is missing or \
                 not a root-owned executable, so no child is started unconfined",
            ),
            Missing::AppContainer { why } => write!(f, "an AppContainer (Windows): {why}"),
            Missing::AppContainerAccess { path } => write!(
                f,
                "an AppContainer that can run {}: grant ALL APPLICATION PACKAGES (S-1-15-2-1) \
                 read and execute on its directory and on the working directory, as installers \
                 do (icacls DIR /grant *S-1-15-2-1:(OI)(CI)RX)",
                path.display()
            ),
            Missing::AppContainerPaths { path } => write!(
                f,
                "AppContainer access to {} (Windows): the library changes no access list; \
                 grant ALL APPLICATION PACKAGES (S-1-15-2-1) access to it at installation and \
                 leave it out of allow_read/allow_write",
                path.display()
            ),
            Missing::AppContainerExec => f.write_str(
                "a list of programs an AppContainer child may start (Windows cannot limit it; \
                 make the sandbox best effort to let it start any program inside its sandbox)",
            ),
            Missing::WindowsUnverified { what } => write!(
                f,
                "a Windows sandbox the parent could verify before the child ran: {what}; the \
                 child was terminated"
            ),
        }
    }
}

/// What is enforced on the current process, as [`status`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Enforcement {
    /// `no_new_privs` is set.
    pub no_new_privs: bool,
    /// The strict seccomp filter is installed.
    pub seccomp: bool,
    /// The Landlock ABI the rulesets were built for (0: no Landlock).
    pub landlock_abi: u32,
    /// Filesystem access is limited to the allowed paths.
    pub filesystem: bool,
    /// TCP bind and connect are denied (Landlock ABI 4).
    pub tcp: bool,
    /// Signals to processes outside the sandbox are denied (Landlock ABI 6).
    pub signals: bool,
    /// Abstract Unix sockets outside the sandbox are unreachable (Landlock ABI 6).
    pub abstract_sockets: bool,
    /// The child runs in user, IPC (and, without network, network) namespaces of its own:
    /// it holds no capability on the host, even if it runs as root.
    pub namespaces: bool,
    /// A Seatbelt sandbox holds this process (macOS): the kernel says so (`sandbox_check`).
    /// With it, `filesystem`, `signals` and (without network) `tcp` are Seatbelt's rules.
    pub seatbelt: bool,
    /// Windows: the process runs in an AppContainer, with no capability but the network ones
    /// [`Sandbox::allow_network`] adds: no network without them, no user files, no objects
    /// of other processes.
    pub app_container: bool,
    /// Windows: its integrity level is low (or lower): it can write nothing of medium
    /// integrity (the user's files and registry, other processes).
    pub low_integrity: bool,
    /// Windows: its job has the UI limits (no other desktop, display settings, logging off,
    /// global atoms, USER handles of outside processes, clipboard, system parameters).
    pub ui_limits: bool,
}

/// A system call, by number and name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Syscall {
    /// The number, on the child's architecture.
    pub number: u32,
    /// The name (`"openat"`), or `""` for a number the kernel never assigned.
    pub name: &'static str,
}

impl Syscall {
    /// The call with this number on this architecture (x86_64).
    ///
    /// # Examples
    ///
    /// ```
    /// use utility_process::sandbox::Syscall;
    /// assert_eq!(Syscall::from_raw(257).name, "openat");
    /// ```
    pub fn from_raw(number: u32) -> Syscall {
        let name = syscall_names::NAMES
            .get(number as usize)
            .copied()
            .unwrap_or("");
        Syscall { number, name }
    }
}

impl fmt::Display for Syscall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.name.is_empty() {
            write!(f, "system call {}", self.number)
        } else {
            write!(f, "{} (system call {})", self.name, self.number)
        }
    }
}

/// What is enforced on this process, if it was started as a sandboxed utility process.
///
/// `None` in a process that was not sandboxed by its parent (and in the parent itself).
///
/// # Examples
///
/// ```
/// // Not a sandboxed child: nothing to report.
/// assert!(utility_process::sandbox::status().is_none());
/// ```
pub fn status() -> Option<Enforcement> {
    #[cfg(windows)]
    if let Some(windows) = imp::status() {
        return Some(windows);
    }
    APPLIED.get().copied().flatten()
}

/// What stage 2 applied in this process: `Some(None)` when it was asked for no sandbox (only
/// limits).
static APPLIED: OnceLock<Option<Enforcement>> = OnceLock::new();

/// What the child's library must apply before `main` (stage 2), as it travels in [`ENV`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(windows, allow(dead_code))] // the second stage is Unix's
pub(crate) struct Policy {
    /// A sandbox, not only limits.
    pub sandbox: bool,
    pub read: Vec<PathBuf>,
    pub write: Vec<PathBuf>,
    pub exec: Vec<PathBuf>,
    pub network: bool,
    pub best_effort: bool,
    /// A memory limit is set: report aborts after failed allocations.
    pub memory_limited: bool,
}

impl Policy {
    /// `1;s=1;n=0;b=0;m=1;r=<hex>,<hex>;w=…;x=…`
    #[cfg(unix)]
    pub(crate) fn encode(&self) -> OsString {
        let flag = |b: bool| if b { '1' } else { '0' };
        let paths = |paths: &[PathBuf]| {
            paths
                .iter()
                .map(|p| {
                    p.as_os_str()
                        .as_bytes()
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect::<String>()
                })
                .collect::<Vec<_>>()
                .join(",")
        };
        OsString::from(format!(
            "1;s={};n={};b={};m={};r={};w={};x={}",
            flag(self.sandbox),
            flag(self.network),
            flag(self.best_effort),
            flag(self.memory_limited),
            paths(&self.read),
            paths(&self.write),
            paths(&self.exec),
        ))
    }

    #[cfg(unix)]
    pub(crate) fn decode(text: &[u8]) -> Option<Policy> {
        let text = std::str::from_utf8(text).ok()?;
        let mut fields = text.split(';');
        if fields.next()? != "1" {
            return None;
        }
        let mut policy = Policy::default();
        for field in fields {
            let (key, value) = field.split_once('=')?;
            let flag = || match value {
                "1" => Some(true),
                "0" => Some(false),
                _ => None,
            };
            let paths = || -> Option<Vec<PathBuf>> {
                value
                    .split(',')
                    .filter(|p| !p.is_empty())
                    .map(|hex| {
                        let bytes = (0..hex.len())
                            .step_by(2)
                            .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
                            .collect::<Option<Vec<u8>>>()?;
                        Some(PathBuf::from(OsString::from_vec(bytes)))
                    })
                    .collect()
            };
            match key {
                "s" => policy.sandbox = flag()?,
                "n" => policy.network = flag()?,
                "b" => policy.best_effort = flag()?,
                "m" => policy.memory_limited = flag()?,
                "r" => policy.read = paths()?,
                "w" => policy.write = paths()?,
                "x" => policy.exec = paths()?,
                _ => return None,
            }
        }
        Some(policy)
    }
}

/// Why a sandbox cannot be prepared.
#[derive(Debug)]
#[cfg_attr(windows, allow(dead_code))] // Windows refuses a sandbox before preparing one
pub(crate) enum PrepareError {
    /// A kernel feature is missing (and the sandbox is not best effort).
    Missing(Missing),
    /// A system call failed (an allowed path does not exist, say).
    Io(std::io::Error),
}

impl Sandbox {
    /// The stage-2 policy for the child.
    #[cfg_attr(windows, allow(dead_code))]
    pub(crate) fn policy(&self, memory_limited: bool) -> Policy {
        Policy {
            sandbox: true,
            read: self.read.clone(),
            write: self.write.clone(),
            exec: self.exec.clone(),
            network: self.network,
            best_effort: self.best_effort,
            memory_limited,
        }
    }
}

/// Run by the library's constructor in every process that links it: applies stage 2 when the
/// parent asked for it. On failure the child must not run unconfined: it reports and exits.
#[cfg(unix)]
pub(crate) fn apply_at_start() {
    let Some(text) = std::env::var_os(ENV) else {
        return;
    };
    // The constructor runs before `main`, on the only thread there is: nothing reads the
    // environment concurrently.
    std::env::remove_var(ENV);
    let Some(policy) = Policy::decode(text.as_bytes()) else {
        refuse_to_start(libc::EINVAL);
    };
    if let Err(e) = sys::install_reporters(policy.memory_limited) {
        refuse_to_start(e.raw_os_error().unwrap_or(libc::EIO));
    }
    if !policy.sandbox {
        let _ = APPLIED.set(None);
        return;
    }
    match imp::apply_strict(&policy) {
        Ok(enforced) => {
            let _ = APPLIED.set(Some(enforced));
        }
        Err(e) => refuse_to_start(e.raw_os_error().unwrap_or(libc::EIO)),
    }
}

/// Stage 2 failed: tell the parent (which reports `Error::SandboxNotApplied` with the errno),
/// and never run the program's code unconfined. Nothing is printed: the program's own
/// output is not the library's to write to, and no `tracing` subscriber exists before `main`.
#[cfg(unix)]
fn refuse_to_start(errno: i32) -> ! {
    sys::report_refusal(errno);
    // `_exit` skips atexit handlers and destructors: a process that must not run any more of
    // its own code.
    sys::exit_now(127)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(unix)]
    fn a_policy_survives_its_trip_through_the_environment() {
        let policy = Policy {
            sandbox: true,
            read: vec!["/data/in put".into(), "/ünïcode".into()],
            write: vec!["/tmp/x,y;z=1".into()],
            exec: vec![],
            network: true,
            best_effort: false,
            memory_limited: true,
        };
        let encoded = policy.encode();
        assert_eq!(Policy::decode(encoded.as_bytes()), Some(policy));
        assert_eq!(Policy::decode(b"2;s=1"), None);
        assert_eq!(Policy::decode(b"1;s=maybe"), None);
        assert_eq!(Policy::decode(b"1;r=zz"), None);
    }

    #[test]
    fn syscalls_are_named_by_number() {
        assert_eq!(
            Syscall::from_raw(257).to_string(),
            "openat (system call 257)"
        );
        assert_eq!(Syscall::from_raw(100_000).name, "");
    }
}
