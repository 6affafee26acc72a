//! [`Pool`]: the handle users hold. Every state change happens in the dispatcher
//! (`dispatch.rs`); the handle only encodes a request, waits for room in the queue, hands the
//! task over, and decodes the answer.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::time::Instant;

use crate::dispatch::{self, Cmd, Published};
use crate::frame::{self, Kind};
use crate::metrics::Metrics;
use crate::options::{Config, PoolBuilder, RunOptions, WhenFull, Worker};
use crate::worker::lock;
use crate::TaskError;

/// A pool of utility processes that run tasks: requests of type `Req`, answered with
/// replies of type `Rep`.
///
/// Cloning is cheap: clones share the pool. The workers end when the pool is
/// [closed](Self::close), or when the last clone is dropped (then as by
/// [`close_now`](Self::close_now)), or with the parent process.
///
/// # Examples
///
/// ```
/// use utility_process::{init, Entry, ParentPort};
/// use utility_process_pool::{serve, Pool, TaskContext, Worker};
///
/// async fn square(port: ParentPort) -> Result<(), utility_process_pool::ServeError> {
///     serve(port, |n: u64, _ctx: TaskContext| async move { Ok::<_, String>(n * n) }).await
/// }
///
/// fn main() -> Result<(), Box<dyn std::error::Error>> {
///     init([Entry::new("square", square)]);
///     tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
///         let pool = Pool::<u64, u64>::builder(Worker::entry("square")).workers(2).build()?;
///         assert_eq!(pool.run(&7).await?, 49);
///         pool.close().await;
///         Ok(())
///     })
/// }
/// ```
pub struct Pool<Req, Rep> {
    shared: Arc<Shared>,
    _types: PhantomData<fn(&Req) -> Rep>,
}

impl<Req, Rep> std::fmt::Debug for Pool<Req, Rep> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("service_name", &self.shared.service_name)
            .field("closed", &self.shared.closed.load(Ordering::SeqCst))
            .finish()
    }
}

impl<Req, Rep> Clone for Pool<Req, Rep> {
    fn clone(&self) -> Self {
        Pool {
            shared: Arc::clone(&self.shared),
            _types: PhantomData,
        }
    }
}

/// What the handles share.
#[derive(Debug)]
struct Shared {
    commands: mpsc::UnboundedSender<Cmd>,
    /// One permit per free place in the queue.
    room: Arc<Semaphore>,
    closed: AtomicBool,
    next_id: AtomicU64,
    service_name: String,
    when_full: WhenFull,
    queue_capacity: usize,
    defaults: RunOptions,
    metrics: Arc<Mutex<Published>>,
    /// Replies that did not decode: the dispatcher counted them completed, their callers
    /// got [`TaskError::Decode`].
    undecodable: AtomicU64,
}

impl<Req, Rep> Pool<Req, Rep> {
    /// A builder for a pool whose workers run `worker`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use utility_process_pool::{Pool, Worker, WhenFull};
    ///
    /// let builder = Pool::<String, String>::builder(Worker::program("my-worker").args(["--fast"]))
    ///     .min_workers(1)
    ///     .max_workers(4)
    ///     .queue_capacity(100)
    ///     .when_full(WhenFull::Reject)
    ///     .max_tasks_per_worker(1000)
    ///     .idle_timeout(Duration::from_secs(10));
    /// # drop(builder);
    /// ```
    pub fn builder(worker: Worker) -> PoolBuilder<Req, Rep> {
        PoolBuilder::new(worker)
    }

    pub(crate) fn start(config: Config, runtime: tokio::runtime::Handle) -> Self {
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let metrics = Arc::new(Mutex::new(Published::default()));
        let room = Arc::new(Semaphore::new(config.queue_capacity));
        let shared = Arc::new(Shared {
            commands,
            room: Arc::clone(&room),
            closed: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
            service_name: config.service_name.clone(),
            when_full: config.when_full,
            queue_capacity: config.queue_capacity,
            defaults: config.defaults.clone(),
            metrics: Arc::clone(&metrics),
            undecodable: AtomicU64::new(0),
        });
        dispatch::spawn(config, runtime, commands_rx, metrics, room);
        Pool {
            shared,
            _types: PhantomData,
        }
    }

    /// Waits until the pool's minimum number of workers are ready (at once when the minimum
    /// is 0, or without [`prewarm`](PoolBuilder::prewarm) before the first task).
    ///
    /// # Errors
    ///
    /// [`TaskError::WorkersFailing`] with the start failure that tripped the breaker, when
    /// workers fail before they are ready; [`TaskError::Closed`] when the pool is closed.
    pub async fn ready(&self) -> Result<(), TaskError> {
        let closed = || TaskError::Closed {
            service_name: self.shared.service_name.clone(),
        };
        let (done, answer) = oneshot::channel();
        if self.shared.closed.load(Ordering::SeqCst)
            || self.shared.commands.send(Cmd::Ready { done }).is_err()
        {
            return Err(closed());
        }
        match answer.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(failure)) => Err(TaskError::WorkersFailing(failure)),
            Err(_) => Err(closed()),
        }
    }

    /// Stops taking tasks, lets every queued and running task finish, then ends every
    /// worker. Returns when no worker is left. [`run`](Self::run) fails with
    /// [`TaskError::Closed`] from the moment `close` is called.
    ///
    /// It waits as long as the tasks take: a task without a deadline whose handler never
    /// returns holds it for ever. Give tasks deadlines, or follow with
    /// [`close_now`](Self::close_now) (from another task, or after a timeout).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// # use utility_process_pool::{Pool, Worker};
    /// # async fn example(pool: Pool<u64, u64>) {
    /// if tokio::time::timeout(Duration::from_secs(10), pool.close()).await.is_err() {
    ///     pool.close_now().await; // cancels what is left
    /// }
    /// # }
    /// ```
    pub async fn close(&self) {
        self.close_with(false).await;
    }

    /// Stops taking tasks and cancels every task: queued ones fail with
    /// [`TaskError::Cancelled`] at once, running ones are cancelled cooperatively and their
    /// workers killed after the grace period. Returns when no worker is left.
    pub async fn close_now(&self) {
        self.close_with(true).await;
    }

    async fn close_with(&self, force: bool) {
        self.shared.closed.store(true, Ordering::SeqCst);
        self.shared.room.close();
        let (done, finished) = oneshot::channel();
        if self
            .shared
            .commands
            .send(Cmd::Close { force, done })
            .is_ok()
        {
            let _ = finished.await;
        }
    }

    /// A snapshot of the pool's gauges and counters.
    ///
    /// It is up to date with what the caller has seen: once [`run`](Self::run) has returned,
    /// its task is counted (in `completed` or `failed`) and no longer `running`; once
    /// [`ready`](Self::ready) has returned, its workers show as ready.
    pub fn metrics(&self) -> Metrics {
        let mut metrics = lock(&self.shared.metrics).metrics.clone();
        // Counted before the caller decodes: a reply that did not decode is a failure.
        let undecodable = self.shared.undecodable.load(Ordering::SeqCst);
        metrics.completed = metrics.completed.saturating_sub(undecodable);
        metrics.failed += undecodable;
        metrics
    }

    /// The pids of the pool's worker processes, in ascending order: every worker it has
    /// started and not yet reaped — starting, ready or ending. Like
    /// [`metrics`](Self::metrics), it is up to date with what the caller has seen (once
    /// [`ready`](Self::ready) returns, the ready workers are there; once [`close`](Self::close)
    /// returns, none is).
    ///
    /// A pid is only a number: the process may end (and, once reaped, its pid be reused)
    /// right after the call. Use it to watch or account for the workers (`/proc/<pid>`,
    /// cgroups, logs), not to signal them.
    ///
    /// # Examples
    ///
    /// ```
    /// use utility_process::{init, Entry, ParentPort};
    /// use utility_process_pool::{serve, Pool, TaskContext, Worker};
    ///
    /// async fn pid(port: ParentPort) -> Result<(), utility_process_pool::ServeError> {
    ///     serve(port, |(): (), _ctx: TaskContext| async { Ok::<_, String>(std::process::id()) })
    ///         .await
    /// }
    ///
    /// fn main() -> Result<(), Box<dyn std::error::Error>> {
    ///     init([Entry::new("pid", pid)]);
    ///     tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
    ///         let pool = Pool::<(), u32>::builder(Worker::entry("pid")).workers(2).build()?;
    ///         pool.ready().await?;
    ///         let pids = pool.worker_pids();
    ///         assert_eq!(pids.len(), 2);
    ///         assert!(pids.contains(&pool.run(&()).await?));
    ///         pool.close().await;
    ///         assert!(pool.worker_pids().is_empty());
    ///         Ok(())
    ///     })
    /// }
    /// ```
    pub fn worker_pids(&self) -> Vec<u32> {
        lock(&self.shared.metrics).worker_pids.clone()
    }
}

impl<Req, Rep> Pool<Req, Rep>
where
    Req: Serialize,
    Rep: DeserializeOwned,
{
    /// Runs `request` on a worker and returns its reply, with the pool's default options.
    ///
    /// # Errors
    ///
    /// A [`TaskError`]: see [`run_with`](Self::run_with).
    ///
    /// # Cancel safety
    ///
    /// Dropping the future cancels the task: a queued one is removed, a running one is
    /// cancelled cooperatively (its worker is killed if it does not stop within the grace
    /// period).
    pub async fn run(&self, request: &Req) -> Result<Rep, TaskError> {
        self.run_with(request, RunOptions::default()).await
    }

    /// Runs `request` on a worker with these options (deadlines, retries, a cancellation
    /// token) and returns its reply.
    ///
    /// # Errors
    ///
    /// [`TaskError::Closed`] after [`close`](Self::close); [`TaskError::QueueFull`] when the
    /// queue is full and the policy is [`WhenFull::Reject`]; [`TaskError::Encode`] when
    /// `request` cannot be encoded; then, once queued, any other [`TaskError`]: a crash of
    /// its worker, a deadline, a cancellation, the handler's own error, a reply that does not
    /// decode.
    ///
    /// # Cancel safety
    ///
    /// As [`run`](Self::run).
    pub async fn run_with(&self, request: &Req, options: RunOptions) -> Result<Rep, TaskError> {
        let shared = &self.shared;
        let closed = || TaskError::Closed {
            service_name: shared.service_name.clone(),
        };
        if shared.closed.load(Ordering::SeqCst) {
            return Err(closed());
        }
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        let frame = frame::with_value(Kind::Task, id, request)
            .map_err(|e| TaskError::Encode(Arc::new(e)))?;
        let room = match shared.when_full {
            WhenFull::Reject => match Arc::clone(&shared.room).try_acquire_owned() {
                Ok(permit) => permit,
                Err(tokio::sync::TryAcquireError::NoPermits) => {
                    tracing::warn!(
                        pool = %shared.service_name,
                        capacity = shared.queue_capacity,
                        "queue full: task refused"
                    );
                    return Err(TaskError::QueueFull {
                        service_name: shared.service_name.clone(),
                        capacity: shared.queue_capacity,
                    });
                }
                Err(tokio::sync::TryAcquireError::Closed) => return Err(closed()),
            },
            WhenFull::Wait => Arc::clone(&shared.room)
                .acquire_owned()
                .await
                .map_err(|_| closed())?,
        };
        let cancel = options.cancel.clone();
        let (reply, answer) = oneshot::channel();
        let submit = Cmd::Submit {
            id,
            frame: Arc::new(frame),
            options: options.or(&shared.defaults),
            reply,
            room,
            submitted: Instant::now(),
        };
        if shared.commands.send(submit).is_err() {
            return Err(closed());
        }
        let mut guard = AbandonOnDrop {
            shared,
            id,
            armed: true,
        };
        let mut answer = answer;
        let outcome = match cancel {
            Some(token) => {
                tokio::select! {
                    outcome = &mut answer => outcome,
                    () = token.cancelled() => {
                        let _ = shared.commands.send(Cmd::Cancel { id });
                        answer.await
                    }
                }
            }
            None => answer.await,
        };
        guard.armed = false;
        let answer = outcome.map_err(|_| closed())??;
        let body = &answer.message.bytes()[frame::HEADER..];
        utility_process_wire::decode_value(body).map_err(|source| {
            shared.undecodable.fetch_add(1, Ordering::SeqCst);
            TaskError::Decode {
                service_name: answer.service_name.to_string(),
                pid: answer.pid,
                source: Arc::new(source),
            }
        })
    }
}

/// Tells the dispatcher when a `run` future is dropped before its answer.
struct AbandonOnDrop<'a> {
    shared: &'a Shared,
    id: u64,
    armed: bool,
}

impl Drop for AbandonOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed {
            let _ = self.shared.commands.send(Cmd::Abandon { id: self.id });
        }
    }
}
