//! [`ForkOptions`] and [`Stdio`]: how a child is started. Every default is documented here.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The default grace period between `kill()`'s SIGTERM and its SIGKILL.
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(2);

/// The default largest message, in bytes (64 MiB).
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 64 * 1024 * 1024;

/// What a child's stdout or stderr is connected to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Stdio {
    /// The parent's own stream, as Electron does by default.
    #[default]
    Inherit,
    /// A pipe the parent reads with [`UtilityProcess::take_stdout`] or
    /// [`take_stderr`](crate::UtilityProcess::take_stderr).
    ///
    /// [`UtilityProcess::take_stdout`]: crate::UtilityProcess::take_stdout
    Pipe,
    /// `/dev/null`.
    Ignore,
}

/// How to start a utility process: a builder for [`fork`](crate::fork).
///
/// | option | default |
/// | --- | --- |
/// | [`service_name`](Self::service_name) | the program's file name |
/// | [`cwd`](Self::cwd) | the parent's working directory |
/// | [`env`](Self::env) | the parent's environment |
/// | [`stdout`](Self::stdout), [`stderr`](Self::stderr) | [`Stdio::Inherit`] (stdin is always `/dev/null`) |
/// | [`kill_grace`](Self::kill_grace) | [`DEFAULT_KILL_GRACE`] (2 s) |
/// | [`max_message_size`](Self::max_message_size) | [`DEFAULT_MAX_MESSAGE_SIZE`] (64 MiB), both directions |
/// | [`max_queued_bytes`](Self::max_queued_bytes) | 64 MiB waiting to be written to the child |
/// | [`node`](Self::node), [`python`](Self::python) | `node`, `python3` on the child's `PATH`, for a `.js`/`.mjs`/`.cjs` or `.py` program |
///
/// # Examples
///
/// ```
/// use utility_process::{ForkOptions, Stdio};
///
/// let options = ForkOptions::default()
///     .service_name("image-decoder")
///     .cwd("/tmp")
///     .env("RUST_LOG", "debug")
///     .env_remove("HOME")
///     .stdio(Stdio::Pipe);
/// ```
#[derive(Debug, Clone)]
pub struct ForkOptions {
    pub(crate) service_name: Option<String>,
    pub(crate) cwd: Option<PathBuf>,
    pub(crate) env_clear: bool,
    /// `Some(value)` sets, `None` removes.
    pub(crate) env: BTreeMap<OsString, Option<OsString>>,
    pub(crate) stdout: Stdio,
    pub(crate) stderr: Stdio,
    pub(crate) kill_grace: Duration,
    pub(crate) max_message_size: usize,
    pub(crate) max_queued_bytes: usize,
    pub(crate) limits: crate::Limits,
    pub(crate) sandbox: Option<crate::Sandbox>,
    pub(crate) node: Option<PathBuf>,
    pub(crate) python: Option<PathBuf>,
}

impl Default for ForkOptions {
    fn default() -> Self {
        ForkOptions {
            service_name: None,
            cwd: None,
            env_clear: false,
            env: BTreeMap::new(),
            stdout: Stdio::Inherit,
            stderr: Stdio::Inherit,
            kill_grace: DEFAULT_KILL_GRACE,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            max_queued_bytes: DEFAULT_MAX_MESSAGE_SIZE,
            limits: crate::Limits::new(),
            sandbox: None,
            node: None,
            python: None,
        }
    }
}

impl ForkOptions {
    /// Names the child. The name is its `argv[0]` (what `ps` shows), its process name (what
    /// `top` shows, cut to 15 bytes, set when a Rust child calls
    /// [`parent_port`](crate::parent_port)), and appears in every error about it.
    pub fn service_name(mut self, name: impl Into<String>) -> Self {
        self.service_name = Some(name.into());
        self
    }

    /// Runs the child in `dir`. A relative program path is still resolved against the
    /// parent's working directory.
    pub fn cwd(mut self, dir: impl AsRef<Path>) -> Self {
        self.cwd = Some(dir.as_ref().to_path_buf());
        self
    }

    /// Sets an environment variable for the child.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env.insert(
            key.as_ref().to_os_string(),
            Some(value.as_ref().to_os_string()),
        );
        self
    }

    /// Removes an environment variable from the child's environment.
    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Self {
        self.env.insert(key.as_ref().to_os_string(), None);
        self
    }

    /// Starts the child with an empty environment (plus what is set after this call, and the
    /// library's own `UTILITY_PROCESS_*` variables).
    pub fn env_clear(mut self) -> Self {
        self.env_clear = true;
        self.env.clear();
        self
    }

    /// Connects both stdout and stderr.
    pub fn stdio(self, stdio: Stdio) -> Self {
        self.stdout(stdio).stderr(stdio)
    }

    /// Connects stdout.
    pub fn stdout(mut self, stdio: Stdio) -> Self {
        self.stdout = stdio;
        self
    }

    /// Connects stderr.
    pub fn stderr(mut self, stdio: Stdio) -> Self {
        self.stderr = stdio;
        self
    }

    /// How long `kill()` (and dropping the handle) waits after SIGTERM before SIGKILL.
    pub fn kill_grace(mut self, grace: Duration) -> Self {
        self.kill_grace = grace;
        self
    }

    /// The largest message, in bytes, either side may send on the parent port. A larger post
    /// is an error at `post_message`; a larger frame from the child is a protocol violation.
    /// At most `u32::MAX - 4096`.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// How many bytes may wait to be written to the child (because it is not reading) before
    /// `post_message` fails with [`Error::QueueFull`](crate::Error::QueueFull).
    pub fn max_queued_bytes(mut self, bytes: usize) -> Self {
        self.max_queued_bytes = bytes;
        self
    }

    /// Resource limits for the child, applied before its program runs. See [`Limits`].
    ///
    /// [`Limits`]: crate::Limits
    pub fn limits(mut self, limits: crate::Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Runs the child in a sandbox. See [`Sandbox`] for what each profile allows and how it
    /// is enforced.
    ///
    /// [`Sandbox`]: crate::Sandbox
    pub fn sandbox(mut self, sandbox: crate::Sandbox) -> Self {
        self.sandbox = Some(sandbox);
        self
    }

    /// The Node.js that runs a JavaScript child (a program ending in `.js`, `.mjs` or
    /// `.cjs`), instead of `node` on the child's `PATH`.
    pub fn node(mut self, interpreter: impl AsRef<Path>) -> Self {
        self.node = Some(interpreter.as_ref().to_path_buf());
        self
    }

    /// The Python that runs a Python child (a program ending in `.py`), instead of `python3`
    /// on the child's `PATH`.
    pub fn python(mut self, interpreter: impl AsRef<Path>) -> Self {
        self.python = Some(interpreter.as_ref().to_path_buf());
        self
    }
}
