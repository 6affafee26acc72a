//! The child's side: [`attach`] (first thing in a supervised child), then
//! [`Supervised::ready`].
//!
//! A supervisor's first message on the parent port carries the child's end of a control
//! channel. [`attach`] takes that message (and nothing else: the user's messages stay on the
//! parent port, in order, for the child's own loop), starts a task on the child's tokio
//! runtime that answers heartbeats and health probes on the control channel, and returns a
//! [`Supervised`] handle whose [`ready`](Supervised::ready) tells the supervisor the child has
//! started.
//!
//! # What a heartbeat answer proves
//!
//! The answering task is an ordinary task on the runtime `attach` was called from: it runs
//! only when the thread(s) of that runtime come back to the scheduler. On a current-thread
//! runtime (the one [`Entry::new`](utility_process::Entry::new) provides) an answer proves the
//! child's code is not stopped, not spinning without `.await`, and not blocked in a system call
//! or a lock. It does not prove that a task waiting for something that never comes makes
//! progress: an application [`Probe`](crate::Probe) can check that. A child that does its work
//! on blocking threads or a multi-thread runtime proves less; see [`Heartbeat`](crate::Heartbeat).
//!
//! A child without a runtime uses [`attach_blocking`] instead and calls [`Supervised::alive`]
//! from its loop: nothing answers on its behalf, so a heartbeat proves that the loop goes round.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use utility_process::{Message, MessagePort, ParentPort};

use crate::error::AttachError;
use crate::protocol::{Hello, Reply, Request, MAGIC, VERSION};

type ProbeFn = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// A supervised child's link to its supervisor, from [`attach`].
#[derive(Debug, Clone)]
pub struct Supervised {
    control: Arc<MessagePort>,
    restarts: u32,
}

impl Supervised {
    /// Tells the supervisor the child has started: the start timeout stops, heartbeats and
    /// probes begin, and the supervisor's `start_child` returns. Calling it again does
    /// nothing more.
    ///
    /// # Errors
    ///
    /// [`utility_process::Error::Closed`] when the supervisor is gone.
    pub fn ready(&self) -> Result<(), utility_process::Error> {
        self.control.post_message(&Reply::Ready)
    }

    /// A sign of life from the child's own loop: the heartbeat in force until the next one
    /// counts as answered. A child attached with [`attach_blocking`] must call it at least
    /// once per heartbeat interval (systemd's `WATCHDOG=1`); it then proves that the loop
    /// calling it goes round. Any child may call it; it never blocks.
    ///
    /// # Errors
    ///
    /// [`utility_process::Error::Closed`] when the supervisor is gone.
    pub fn alive(&self) -> Result<(), utility_process::Error> {
        self.control.post_message(&Reply::Alive)
    }

    /// How many times the supervisor had restarted this service before this start (0 on the
    /// first start): a child may, say, skip a cache warm-up that crashed last time.
    pub fn restarts(&self) -> u32 {
        self.restarts
    }
}

/// Takes the supervisor's control channel and starts answering its heartbeats. Call it first
/// in a supervised child, from inside the child's tokio runtime, before reading the parent
/// port.
///
/// # Errors
///
/// - [`AttachError::NotAUtilityProcess`] when the program was not started by
///   `utility_process::fork`;
/// - [`AttachError::ParentGone`] when the parent closed the port before its first message;
/// - [`AttachError::NotSupervised`] when the first message is not the supervisor's (it is
///   handed back), or comes from a supervisor of another version;
/// - [`AttachError::NoRuntime`] outside a tokio runtime.
///
/// # Examples
///
/// A supervised entry point, and a supervisor that starts it:
///
/// ```
/// use utility_process::{init, Entry, ParentPort};
/// use utility_process_supervisor::{child, ChildSpec, Supervisor, SupervisorOptions};
///
/// async fn worker(port: ParentPort) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
///     let supervised = child::attach(&port).await?;
///     supervised.ready()?;
///     while let Some(message) = port.recv().await {
///         port.post_message(&(message.data::<u32>()? + 1))?;
///     }
///     Ok(())
/// }
///
/// fn main() -> Result<(), Box<dyn std::error::Error>> {
///     init([Entry::new("worker", worker)]);
///     let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
///     runtime.block_on(async {
///         let supervisor = Supervisor::new(SupervisorOptions::default());
///         supervisor.start_child(ChildSpec::entry("adder", "worker")).await?;
///         supervisor.post_message("adder", &41u32).await?;
///         let reply = supervisor.recv_message().await.expect("a reply");
///         assert_eq!(reply.message.data::<u32>()?, 42);
///         supervisor.shutdown().await;
///         Ok(())
///     })
/// }
/// ```
pub async fn attach(port: &ParentPort) -> Result<Supervised, AttachError> {
    attach_inner(port, None).await
}

/// As [`attach`], with an application-level health probe: the supervisor's
/// [`Probe`](crate::Probe) calls `probe` (on the child's runtime, between its tasks), and
/// `Err(words)` — or a panic — makes the supervisor stop and restart the child, reporting the
/// words in [`ProbeFailure::Unhealthy`](crate::ProbeFailure::Unhealthy).
///
/// # Errors
///
/// As [`attach`].
///
/// # Examples
///
/// ```
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use std::sync::Arc;
/// use utility_process::ParentPort;
/// use utility_process_supervisor::child;
///
/// async fn worker(port: ParentPort) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
///     let backlog = Arc::new(AtomicUsize::new(0));
///     let watched = Arc::clone(&backlog);
///     let supervised = child::attach_with_probe(&port, move || {
///         match watched.load(Ordering::Relaxed) {
///             n if n > 10_000 => Err(format!("backlog of {n} jobs")),
///             _ => Ok(()),
///         }
///     })
///     .await?;
///     supervised.ready()?;
///     while let Some(_job) = port.recv().await {
///         backlog.fetch_add(1, Ordering::Relaxed);
///     }
///     Ok(())
/// }
/// # fn main() {} // `attach`'s example shows a supervisor starting a worker.
/// ```
pub async fn attach_with_probe<F>(port: &ParentPort, probe: F) -> Result<Supervised, AttachError>
where
    F: Fn() -> Result<(), String> + Send + Sync + 'static,
{
    attach_inner(port, Some(Arc::new(probe))).await
}

/// [`attach`] for a child without an async runtime (an [`Entry::blocking`] worker, a compute
/// loop): takes the control channel with a blocking receive. Nothing answers heartbeats on
/// the child's behalf: if its spec has a [`Heartbeat`](crate::Heartbeat), the child calls
/// [`Supervised::alive`] from its loop at least once per interval, and a loop that stops
/// going round — hung, stopped, deadlocked, or just waiting too long for work — is declared
/// hung. Health probes are not answered (a [`Probe`](crate::Probe) on such a child fails).
///
/// [`Entry::blocking`]: utility_process::Entry::blocking
///
/// # Errors
///
/// As [`attach`], except [`AttachError::NoRuntime`].
///
/// # Examples
///
/// ```
/// use utility_process::ParentPort;
/// use utility_process_supervisor::child;
///
/// fn crunch(port: ParentPort) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
///     let supervised = child::attach_blocking(&port)?;
///     supervised.ready()?;
///     for chunk in 0..1_000u64 {
///         std::hint::black_box(chunk * chunk); // a slice of work, well under the interval
///         supervised.alive()?;
///     }
///     Ok(())
/// }
/// # fn main() {} // `attach`'s example shows a supervisor starting a worker.
/// ```
pub fn attach_blocking(port: &ParentPort) -> Result<Supervised, AttachError> {
    let first = port.recv_blocking().ok_or(AttachError::ParentGone)?;
    let (control, restarts) = take_control(first)?;
    let _ = control.post_message(&Reply::Attached { answers: false });
    Ok(Supervised {
        control: Arc::new(control),
        restarts,
    })
}

/// Checks that `first` is the supervisor's hello and takes its control port.
fn take_control(mut first: Message) -> Result<(MessagePort, u32), AttachError> {
    let hello = match first.data::<Hello>() {
        Ok(hello) if hello.magic == MAGIC => hello,
        _ => {
            return Err(AttachError::NotSupervised {
                first,
                version: None,
            })
        }
    };
    if hello.version != VERSION || first.port_count() != 1 {
        return Err(AttachError::NotSupervised {
            first,
            version: Some(hello.version),
        });
    }
    match first.take_ports().pop() {
        Some(control) => Ok((control, hello.restarts)),
        None => Err(AttachError::NotSupervised {
            first,
            version: Some(hello.version),
        }),
    }
}

async fn attach_inner(
    port: &ParentPort,
    probe: Option<ProbeFn>,
) -> Result<Supervised, AttachError> {
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| AttachError::NoRuntime)?;
    let first = port.recv().await.ok_or(AttachError::ParentGone)?;
    let (control, restarts) = take_control(first)?;
    let control = Arc::new(control);
    // The supervisor learns the child took the channel; a parent already gone shows later,
    // when the parent port's `recv` returns `None`.
    let _ = control.post_message(&Reply::Attached { answers: true });
    runtime.spawn(answer(Arc::clone(&control), probe));
    Ok(Supervised { control, restarts })
}

/// The answering task: heartbeats and probes, until the supervisor closes the channel.
async fn answer(control: Arc<MessagePort>, probe: Option<ProbeFn>) {
    while let Some(message) = control.recv().await {
        let reply = match message.data::<Request>() {
            Ok(Request::Ping(n)) => Reply::Pong(n),
            Ok(Request::Probe(n)) => {
                let verdict = match &probe {
                    None => Ok(()),
                    Some(probe) => catch_unwind(AssertUnwindSafe(|| probe()))
                        .unwrap_or_else(|_| Err("the health probe panicked".to_owned())),
                };
                Reply::Probe(n, verdict)
            }
            // Only the supervisor holds the other end; a request we do not know comes from a
            // newer one, and silence is the answer it expects from an older child.
            Err(_) => continue,
        };
        if control.post_message(&reply).is_err() {
            return;
        }
    }
}
