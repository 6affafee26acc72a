//! Same-binary entry points: one executable that is both the parent and its workers.
//!
//! This is how Electron and Chromium ship: the browser relaunches its own executable with
//! `--type=utility`. Here an application lists its entry points once, by name, in a call to
//! [`init`] at the top of `main`; [`fork_entry`] relaunches the current executable
//! (`/proc/self/exe`) with the entry's name in the environment, and in the child [`init`]
//! finds it, runs the entry with its [`ParentPort`], and ends the process with the entry's
//! outcome. No second binary, no build script, no proc-macro: entries are looked up by name,
//! never by an address handed over on the command line.
//!
//! # What runs in the child
//!
//! The child is a fresh run of the same program: everything `main` does *before* calling
//! [`init`] runs again in every worker — which is why `init` belongs on the first line.
//! Static initialisers run as they would in any process. `init` never returns in a worker:
//!
//! | the entry... | the process | the parent sees |
//! | --- | --- | --- |
//! | returns `Ok(())` | exits 0, after flushing its port | `Exit` with code 0 |
//! | returns `Err(e)` | prints `e` on stderr, exits 1 | `Exit` with code 1 |
//! | panics | the panic is reported, then it exits 101 | `Error::Panicked` (message and location), then `Exit` |
//!
//! # Inside `cargo test`
//!
//! The test harness owns `main` (mitsuhiko/procspawn#36): a test binary relaunched as a
//! worker would run the tests again instead of the entry. Give the test target its own
//! `main` with `harness = false` in `Cargo.toml`, call [`init`] first, then run the tests —
//! by hand or with a crate such as `libtest-mimic`. This repository's
//! `tests/entry_points.rs` does exactly that.

use std::error::Error as StdError;
use std::ffi::OsStr;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::OnceLock;

use crate::error::SpawnStep;
use crate::{fork, parent_port, Error, ForkOptions, ParentPort, UtilityProcess};

/// The variable that tells a relaunched executable which entry to run.
pub(crate) const ENV_ENTRY: &str = "UTILITY_PROCESS_ENTRY";

type BoxError = Box<dyn StdError + Send + Sync>;
type Outcome = Pin<Box<dyn Future<Output = Result<(), BoxError>>>>;

enum Body {
    Async(Box<dyn Fn(ParentPort) -> Outcome + Send + Sync>),
    Blocking(Box<dyn Fn(ParentPort) -> Result<(), BoxError> + Send + Sync>),
}

/// A named entry point, for [`init`].
pub struct Entry {
    name: &'static str,
    body: Body,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry").field("name", &self.name).finish()
    }
}

impl Entry {
    /// An entry point that is an async function of its parent port. It runs on a
    /// current-thread tokio runtime.
    pub fn new<F, Fut, E>(name: &'static str, body: F) -> Entry
    where
        F: Fn(ParentPort) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + 'static,
        E: Into<BoxError>,
    {
        Entry {
            name,
            body: Body::Async(Box::new(move |port| {
                let future = body(port);
                Box::pin(async move { future.await.map_err(Into::into) })
            })),
        }
    }

    /// An entry point that is a plain function, for workers that need no async runtime
    /// (they receive with [`ParentPort::recv_blocking`]).
    pub fn blocking<F, E>(name: &'static str, body: F) -> Entry
    where
        F: Fn(ParentPort) -> Result<(), E> + Send + Sync + 'static,
        E: Into<BoxError>,
    {
        Entry {
            name,
            body: Body::Blocking(Box::new(move |port| body(port).map_err(Into::into))),
        }
    }

    /// The entry's name.
    pub fn name(&self) -> &'static str {
        self.name
    }
}

static REGISTERED: OnceLock<Vec<&'static str>> = OnceLock::new();

/// Registers the program's entry points; in a worker, runs the one it was started for and
/// ends the process. Call it first thing in `main`.
///
/// In a process started by [`fork_entry`], `init` runs the named entry and never returns (see
/// the module documentation for the exit status). In any other process it records the
/// names, so that [`fork_entry`] can refuse unknown ones, and returns at once.
///
/// # Examples
///
/// ```
/// use utility_process::{fork_entry, init, Entry, Event, ForkOptions, ParentPort};
///
/// async fn doubler(port: ParentPort) -> Result<(), utility_process::Error> {
///     while let Some(message) = port.recv().await {
///         port.post_message(&(2 * message.data::<u64>()?))?;
///     }
///     Ok(())
/// }
///
/// fn main() -> Result<(), Box<dyn std::error::Error>> {
///     init([Entry::new("doubler", doubler)]);
///
///     tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
///         let mut worker = fork_entry("doubler", [] as [&str; 0], ForkOptions::default())?;
///         worker.post_message(&21u64)?;
///         while let Some(event) = worker.next_event().await {
///             if let Event::Message(message) = event {
///                 assert_eq!(message.data::<u64>()?, 42);
///                 worker.kill();
///             }
///         }
///         Ok(())
///     })
/// }
/// ```
pub fn init<I>(entries: I)
where
    I: IntoIterator<Item = Entry>,
{
    crate::sys::confine::keep_constructor();
    let entries: Vec<Entry> = entries.into_iter().collect();
    let Some(wanted) = std::env::var_os(ENV_ENTRY) else {
        let _ = REGISTERED.set(entries.iter().map(|e| e.name).collect());
        return;
    };
    std::env::remove_var(ENV_ENTRY);
    let wanted = wanted.to_string_lossy().into_owned();
    // Nothing is printed: what went wrong goes to the parent (a FAILURE report, which it
    // turns into `Error::EntryFailed`) and to this process's `tracing` subscriber, if any.
    let port = match parent_port() {
        Ok(port) => port,
        Err(e) => {
            // No port: there is no parent to tell.
            tracing::error!(entry = %wanted, error = %e, "entry point: no parent port");
            std::process::exit(127);
        }
    };
    let Some(entry) = entries.into_iter().find(|e| e.name == wanted) else {
        let message = format!("this program has no entry point named {wanted:?}");
        tracing::error!(entry = %wanted, "{message}");
        port.report_failure(message);
        std::process::exit(127);
    };
    let outcome = match entry.body {
        Body::Blocking(body) => body(port),
        Body::Async(body) => match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime.block_on(body(port)),
            Err(e) => Err(e.into()),
        },
    };
    match outcome {
        // `exit` runs the library's exit handler, which writes out the port's queue.
        Ok(()) => std::process::exit(0),
        Err(e) => {
            tracing::error!(entry = %wanted, error = %e, "entry point failed");
            // The port moved into the entry point; `parent_port` hands out the same one.
            if let Ok(port) = parent_port() {
                port.report_failure(e.to_string());
            }
            std::process::exit(1);
        }
    }
}

/// Starts the current executable as a utility process running the entry point `name`.
///
/// The child's service name defaults to `name`; `args` become its arguments after the
/// service name, and every option of [`fork`] applies.
///
/// # Errors
///
/// [`Error::Spawn`] with [`SpawnStep::Lookup`] when [`init`] was called in this process and
/// no entry point has that name; otherwise as [`fork`].
pub fn fork_entry<I, S>(name: &str, args: I, options: ForkOptions) -> Result<UtilityProcess, Error>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let options = ForkOptions {
        service_name: Some(
            options
                .service_name
                .clone()
                .unwrap_or_else(|| name.to_owned()),
        ),
        ..options
    }
    .env(ENV_ENTRY, name);
    let exe = std::env::current_exe().map_err(|source| Error::Spawn {
        program: Path::new("/proc/self/exe").to_path_buf(),
        service_name: name.to_owned(),
        step: SpawnStep::Lookup,
        source,
    })?;
    if let Some(known) = REGISTERED.get() {
        if !known.contains(&name) {
            return Err(Error::Spawn {
                program: exe,
                service_name: name.to_owned(),
                step: SpawnStep::Lookup,
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!(
                        "no entry point named {name:?} (registered: {})",
                        known.join(", ")
                    ),
                ),
            });
        }
    }
    fork(exe, args, options)
}
