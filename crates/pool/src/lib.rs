//! A pool of utility processes that runs tasks: Python's `ProcessPoolExecutor` or Node's
//! piscina, on [`utility_process`], without their known failures.
//!
//! The parent builds a [`Pool`] of N workers — an entry point of its own executable
//! ([`Worker::entry`]) or another program ([`Worker::program`]) — and calls
//! [`Pool::run`]: the request travels to a free worker, the reply comes back, correlated by
//! id. The worker calls [`serve`] (or [`serve_blocking`], or a `_with_init` variant) with
//! its handler.
//!
//! ```
//! use utility_process::{init, Entry, ParentPort};
//! use utility_process_pool::{serve, Pool, TaskContext, TaskError, Worker};
//!
//! async fn word_count(port: ParentPort) -> Result<(), utility_process_pool::ServeError> {
//!     serve(port, |text: String, _ctx: TaskContext| async move {
//!         Ok::<_, String>(text.split_whitespace().count())
//!     })
//!     .await
//! }
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     init([Entry::new("word-count", word_count)]); // first: in a worker, this runs it
//!     tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
//!         let pool = Pool::<String, usize>::builder(Worker::entry("word-count"))
//!             .workers(2)
//!             .build()?;
//!         let n = pool.run(&"one two three".to_owned()).await?;
//!         assert_eq!(n, 3);
//!         pool.close().await;
//!         assert!(matches!(pool.run(&"late".to_owned()).await, Err(TaskError::Closed { .. })));
//!         Ok(())
//!     })
//! }
//! ```
//!
//! # Promises
//!
//! - **Every task resolves exactly once**, with its reply or a [`TaskError`] saying what
//!   happened: the worker crashed (exit status, signal or panic — a handler's panic ends its
//!   worker, with [`serve`] as with [`serve_blocking`] — and the tail of its stderr when
//!   piped), a deadline passed, it was cancelled, the queue was full, the pool was closed,
//!   the handler failed, the reply did not decode. A worker that answers a task it does not
//!   run, or answers twice, is killed for breaking the protocol.
//! - **A crash fails only the tasks on that worker**; the worker is replaced and the pool
//!   keeps its size. A task that was handed to a worker runs again only when its caller
//!   opted in ([`RunOptions::retries`]): it may not be safe to run twice. Only a task that
//!   never reached a worker goes back to the queue on its own. A task that has crashed
//!   [`PoolBuilder::poison_after`] workers is failed as [`TaskError::Poisoned`] instead of
//!   retried for ever.
//! - **What you see is current**: [`Pool::metrics`] and [`Pool::worker_pids`] are updated
//!   before a task's answer reaches its caller and before [`Pool::ready`] returns.
//! - **Deadlines are kept apart**: time in the queue, time running, total — each with its
//!   own error. A cancelled (or timed-out) running task gets a cooperative cancellation
//!   first; if it does not answer within the grace period its worker is killed. The error
//!   says which ([`Stop`]).
//! - **A bounded queue**: [`WhenFull::Wait`] for back-pressure, [`WhenFull::Reject`] to fail
//!   at once.
//! - **No respawn loop**: a worker that fails before it is ready (missing program, failing
//!   initializer, crash in `main`) is retried after a growing wait; a few failures in a row
//!   trip a breaker that carries the worker's own error ([`TaskError::WorkersFailing`]).
//! - **Nothing left behind**: [`Pool::close`] and [`Pool::close_now`] return when no
//!   worker is alive, and the workers are the core's children, so the core's guardian ends
//!   them if the parent is killed.
//!
//! # Modules
//!
//! - `pool` — [`Pool`], the handle.
//! - `dispatch` — the dispatcher: the one task that owns all state.
//! - `worker` — the parent's side of one worker: owns its process, relays its events.
//! - `serve` — the worker's side: [`serve`] and its variants, [`TaskContext`].
//! - `frame` — the pool's small protocol over the parent port (documented there).
//! - `options`, `error`, `metrics`, `cancel` — the types users configure and receive.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod cancel;
mod dispatch;
mod error;
mod frame;
mod metrics;
mod options;
mod pool;
mod serve;
mod worker;

pub use cancel::CancelToken;
pub use error::{BuildError, Crash, StartError, StartFailure, Stop, TaskError};
pub use metrics::{Metrics, Timings};
pub use options::{
    PoolBuilder, RunOptions, WhenFull, Worker, DEFAULT_BREAKER_COOLDOWN, DEFAULT_BREAKER_THRESHOLD,
    DEFAULT_CANCEL_GRACE, DEFAULT_IDLE_TIMEOUT, DEFAULT_POISON_AFTER, DEFAULT_QUEUE_CAPACITY,
    DEFAULT_START_TIMEOUT, RESTART_BACKOFF,
};
pub use pool::Pool;
pub use serve::{
    serve, serve_blocking, serve_blocking_with_init, serve_with_init, ServeError, TaskContext,
};
