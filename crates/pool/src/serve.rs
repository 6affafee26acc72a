//! The worker's side: [`serve`] and its variants read tasks from the parent port, run the
//! handler, and post the replies.
//!
//! A worker first says it is ready (or, when its initializer fails, why not): the pool
//! counts a worker that ends before that as a start failure, not a crash. Then each task
//! runs with a [`TaskContext`] whose token is set when the pool cancels the task.

use std::cell::RefCell;
use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt::Display;
use std::future::Future;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use serde::de::DeserializeOwned;
use serde::Serialize;
use utility_process::ParentPort;

use crate::frame::{self, Kind};
use crate::worker::{lock, STDERR_TAIL};
use crate::CancelToken;

/// What a handler learns about its task.
///
/// # Examples
///
/// A handler that computes looks at the flag between steps; one that awaits is stopped at
/// its next `.await` anyway:
///
/// ```
/// use utility_process_pool::TaskContext;
///
/// async fn sum_slowly(numbers: Vec<u64>, ctx: TaskContext) -> Result<u64, String> {
///     let mut sum = 0;
///     for chunk in numbers.chunks(1024) {
///         if ctx.is_cancelled() {
///             return Err(format!("task {} cancelled", ctx.id()));
///         }
///         sum += chunk.iter().sum::<u64>();
///     }
///     Ok(sum)
/// }
/// # let _ = sum_slowly;
/// ```
#[derive(Debug, Clone)]
pub struct TaskContext {
    id: u64,
    token: CancelToken,
}

impl TaskContext {
    /// The task's id, unique within its pool.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Whether the pool has cancelled the task (a cancellation or a deadline). A handler
    /// that computes should look now and then, and return early.
    pub fn is_cancelled(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Waits until the pool cancels the task.
    pub async fn cancelled(&self) {
        self.token.cancelled().await
    }

    /// The task's cancellation token, to hand to code that takes one.
    pub fn token(&self) -> &CancelToken {
        &self.token
    }
}

/// Why [`serve`] (or a variant) returned with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// Occurs when the initializer of [`serve_with_init`] or [`serve_blocking_with_init`]
    /// failed. The pool has been told (it reports the message in
    /// [`StartError::Init`](crate::StartError::Init)); return this from `main` or the entry
    /// point so that the worker exits.
    #[error("the worker's initializer failed: {0}")]
    Init(String),
    /// Occurs when the worker cannot post to its parent port (it could not say it is
    /// ready).
    #[error("cannot talk to the pool")]
    Port(#[source] utility_process::Error),
    /// Occurs when [`serve_blocking`]'s reader thread cannot be started.
    #[error("cannot start the thread that reads tasks")]
    Thread(#[source] std::io::Error),
}

/// Serves the pool on `port` with an async `handler`, until the parent goes away; then
/// returns `Ok(())`.
///
/// Tasks run concurrently, as local tasks on the current thread, as many at once as the
/// pool sends (see
/// [`PoolBuilder::concurrency_per_worker`](crate::PoolBuilder::concurrency_per_worker)).
/// When the pool cancels a task its token is set, and the handler's future is dropped at
/// its next `.await`: a handler that awaits stops by itself, one that computes should look
/// at [`TaskContext::is_cancelled`].
///
/// The handler's `Err` reaches the caller as
/// [`TaskError::Failed`](crate::TaskError::Failed), as text.
///
/// # Errors
///
/// [`ServeError::Port`] when the ready message cannot be posted.
///
/// # Panics
///
/// When a handler panics, the panic goes on out of `serve` (as in [`serve_blocking`]),
/// whichever task it happened in: the worker ends rather than serve on in an unknown
/// state. The core's panic hook has told the parent the panic's message and location, so
/// the task fails with [`TaskError::WorkerCrashed`](crate::TaskError::WorkerCrashed)
/// carrying them ([`utility_process::Error::Panicked`]); the other tasks on the worker
/// fail or are retried as in any crash, and the worker is replaced.
///
/// # Examples
///
/// See [`Pool`](crate::Pool) for a whole program; the entry point of a worker is:
///
/// ```
/// use utility_process::ParentPort;
/// use utility_process_pool::{serve, ServeError, TaskContext};
///
/// async fn resize(port: ParentPort) -> Result<(), ServeError> {
///     serve(port, |(w, h): (u32, u32), ctx: TaskContext| async move {
///         if ctx.is_cancelled() {
///             return Err("cancelled");
///         }
///         Ok(w / 2 * (h / 2))
///     })
///     .await
/// }
/// # let _ = resize;
/// ```
pub async fn serve<Req, Rep, E, F, Fut>(port: ParentPort, handler: F) -> Result<(), ServeError>
where
    Req: DeserializeOwned + 'static,
    Rep: Serialize + 'static,
    E: Display + 'static,
    F: Fn(Req, TaskContext) -> Fut + 'static,
    Fut: Future<Output = Result<Rep, E>> + 'static,
{
    serve_with_init(port, || async move { Ok::<_, Infallible>(handler) }).await
}

/// [`serve`], with an initializer that runs first and makes the handler (load a model,
/// open a database...). If it fails, the worker tells the pool why and the function
/// returns [`ServeError::Init`]: the pool counts a start failure and, after a few in a
/// row, trips its breaker with this message rather than start workers in a loop.
///
/// # Errors
///
/// [`ServeError::Init`] when `init` fails; [`ServeError::Port`] as [`serve`].
///
/// # Examples
///
/// ```
/// use utility_process::ParentPort;
/// use utility_process_pool::{serve_with_init, ServeError, TaskContext};
///
/// async fn lookup(port: ParentPort) -> Result<(), ServeError> {
///     serve_with_init(port, || async {
///         let table = std::fs::read_to_string("/etc/hostname").map_err(|e| e.to_string())?;
///         Ok::<_, String>(move |key: String, _ctx: TaskContext| {
///             let found = table.contains(&key);
///             async move { Ok::<_, String>(found) }
///         })
///     })
///     .await
/// }
/// # let _ = lookup;
/// ```
pub async fn serve_with_init<Req, Rep, E, F, Fut, I, IFut, IE>(
    port: ParentPort,
    init: I,
) -> Result<(), ServeError>
where
    Req: DeserializeOwned + 'static,
    Rep: Serialize + 'static,
    E: Display + 'static,
    F: Fn(Req, TaskContext) -> Fut + 'static,
    Fut: Future<Output = Result<Rep, E>> + 'static,
    I: FnOnce() -> IFut,
    IFut: Future<Output = Result<F, IE>>,
    IE: Display,
{
    let handler = match init().await {
        Ok(handler) => handler,
        Err(error) => return Err(init_failed(&port, &error)),
    };
    announce(&port)?;
    let handler = Rc::new(handler);
    let tokens: Rc<RefCell<HashMap<u64, CancelToken>>> = Rc::default();
    // Each task runs as a local task, which the runtime would let panic on its own: the
    // worker would live on and the task would never be answered. The tasks' handles come
    // here instead, and a panic is carried on out of `serve`, as in `serve_blocking`.
    let mut running = tokio::task::JoinSet::new();
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async {
            loop {
                let message = tokio::select! {
                    biased;
                    ended = running.join_next(), if !running.is_empty() => {
                        if let Some(Err(ended)) = ended {
                            if ended.is_panic() {
                                // The panic hook has already told the parent what and where.
                                std::panic::resume_unwind(ended.into_panic());
                            }
                        }
                        continue;
                    }
                    // Cancel safe: a message is never lost by dropping the future.
                    message = port.recv() => message,
                };
                let Some(message) = message else {
                    break;
                };
                let Some((kind, id, body)) = frame::parse(message.bytes()) else {
                    continue;
                };
                match kind {
                    Kind::Task => {
                        let request: Req = match utility_process_wire::decode_value(body) {
                            Ok(request) => request,
                            Err(error) => {
                                post_text(&port, Kind::BadRequest, id, &error);
                                continue;
                            }
                        };
                        let token = CancelToken::new();
                        tokens.borrow_mut().insert(id, token.clone());
                        let context = TaskContext {
                            id,
                            token: token.clone(),
                        };
                        let work = handler(request, context);
                        let (port, tokens) = (port.clone(), Rc::clone(&tokens));
                        running.spawn_local(async move {
                            let outcome = tokio::select! {
                                biased;
                                outcome = work => Some(outcome),
                                () = token.cancelled() => None,
                            };
                            tokens.borrow_mut().remove(&id);
                            answer(&port, id, outcome);
                        });
                    }
                    Kind::Cancel => {
                        if let Some(token) = tokens.borrow().get(&id) {
                            token.cancel();
                        }
                    }
                    _ => {}
                }
            }
        })
        .await;
    Ok(())
}

/// [`serve`] for workers without an async runtime: `handler` runs on the calling thread,
/// one task at a time, while a second thread reads the port (so that a cancellation reaches
/// the token while the handler runs).
///
/// With [`PoolBuilder::concurrency_per_worker`](crate::PoolBuilder::concurrency_per_worker)
/// above 1, the tasks sent meanwhile wait in the worker, and their run deadline counts from
/// when they were sent. A cancelled task that has not started yet is answered at once,
/// without running.
///
/// # Errors
///
/// As [`serve`], and [`ServeError::Thread`].
///
/// # Panics
///
/// When the handler panics, the panic goes on out of `serve_blocking` and the worker
/// ends: the task fails with [`TaskError::WorkerCrashed`](crate::TaskError::WorkerCrashed)
/// carrying the panic's message and location, as with [`serve`].
///
/// # Examples
///
/// ```
/// use utility_process::ParentPort;
/// use utility_process_pool::{serve_blocking, ServeError, TaskContext};
///
/// fn count_primes(port: ParentPort) -> Result<(), ServeError> {
///     serve_blocking(port, |below: u64, ctx: &TaskContext| {
///         let mut count = 0;
///         for n in 2..below {
///             if n % 1024 == 0 && ctx.is_cancelled() {
///                 return Err("cancelled");
///             }
///             count += (2..n).take_while(|d| d * d <= n).all(|d| n % d != 0) as u64;
///         }
///         Ok(count)
///     })
/// }
/// # let _ = count_primes;
/// ```
pub fn serve_blocking<Req, Rep, E, F>(port: ParentPort, handler: F) -> Result<(), ServeError>
where
    Req: DeserializeOwned,
    Rep: Serialize,
    E: Display,
    F: FnMut(Req, &TaskContext) -> Result<Rep, E>,
{
    serve_blocking_with_init(port, || Ok::<_, Infallible>(handler))
}

/// [`serve_blocking`], with an initializer, as [`serve_with_init`].
///
/// # Errors
///
/// As [`serve_with_init`], and [`ServeError::Thread`].
///
/// # Examples
///
/// ```
/// use utility_process::ParentPort;
/// use utility_process_pool::{serve_blocking_with_init, ServeError, TaskContext};
///
/// fn worker(port: ParentPort) -> Result<(), ServeError> {
///     serve_blocking_with_init(port, || {
///         let offset: u64 = std::env::var("OFFSET").unwrap_or("0".into()).parse()
///             .map_err(|e| format!("OFFSET: {e}"))?;
///         Ok::<_, String>(move |n: u64, _ctx: &TaskContext| Ok::<_, String>(n + offset))
///     })
/// }
/// # let _ = worker;
/// ```
pub fn serve_blocking_with_init<Req, Rep, E, F, I, IE>(
    port: ParentPort,
    init: I,
) -> Result<(), ServeError>
where
    Req: DeserializeOwned,
    Rep: Serialize,
    E: Display,
    F: FnMut(Req, &TaskContext) -> Result<Rep, E>,
    I: FnOnce() -> Result<F, IE>,
    IE: Display,
{
    let mut handler = match init() {
        Ok(handler) => handler,
        Err(error) => return Err(init_failed(&port, &error)),
    };
    announce(&port)?;
    let tokens: Arc<Mutex<HashMap<u64, CancelToken>>> = Arc::default();
    let (tasks, incoming) = std::sync::mpsc::channel();
    let reader = {
        let (port, tokens) = (port.clone(), Arc::clone(&tokens));
        std::thread::Builder::new()
            .name("pool-reader".into())
            .spawn(move || {
                while let Some(message) = port.recv_blocking() {
                    let Some((kind, id, _)) = frame::parse(message.bytes()) else {
                        continue;
                    };
                    match kind {
                        Kind::Task => {
                            let token = CancelToken::new();
                            lock(&tokens).insert(id, token.clone());
                            if tasks.send((id, message, token)).is_err() {
                                return;
                            }
                        }
                        Kind::Cancel => {
                            if let Some(token) = lock(&tokens).get(&id) {
                                token.cancel();
                            }
                        }
                        _ => {}
                    }
                }
            })
            .map_err(ServeError::Thread)?
    };
    for (id, message, token) in incoming {
        let body = &message.bytes()[frame::HEADER..];
        let outcome = if token.is_cancelled() {
            None
        } else {
            match utility_process_wire::decode_value::<Req>(body) {
                Ok(request) => {
                    let context = TaskContext { id, token };
                    Some(handler(request, &context))
                }
                Err(error) => {
                    lock(&tokens).remove(&id);
                    post_text(&port, Kind::BadRequest, id, &error);
                    continue;
                }
            }
        };
        lock(&tokens).remove(&id);
        answer(&port, id, outcome);
    }
    let _ = reader.join();
    Ok(())
}

/// Tells the pool the initializer failed, and makes the error to return.
fn init_failed(port: &ParentPort, error: &dyn Display) -> ServeError {
    let message = error.to_string();
    post_text(port, Kind::InitFailed, 0, &message);
    port.flush();
    ServeError::Init(message)
}

/// Tells the pool the worker is ready.
fn announce(port: &ParentPort) -> Result<(), ServeError> {
    port.post_bytes(&frame::with_bytes(Kind::Ready, 0, frame::PROTOCOL))
        .map_err(ServeError::Port)
}

/// Posts a task's outcome: its reply, its error, or that it stopped on cancellation.
fn answer<Rep: Serialize, E: Display>(port: &ParentPort, id: u64, outcome: Option<Result<Rep, E>>) {
    match outcome {
        None => {
            let _ = port.post_bytes(&frame::start(Kind::Cancelled, id));
        }
        Some(Ok(reply)) => match frame::with_value(Kind::Reply, id, &reply) {
            Ok(bytes) => {
                if let Err(error) = port.post_bytes(&bytes) {
                    // Too large, or the parent is gone (then this fails too, harmlessly).
                    post_text(
                        port,
                        Kind::Failed,
                        id,
                        &format!("cannot post the reply: {error}"),
                    );
                }
            }
            Err(error) => post_text(
                port,
                Kind::Failed,
                id,
                &format!("cannot encode the reply: {error}"),
            ),
        },
        Some(Err(error)) => post_text(port, Kind::Failed, id, &error),
    }
}

/// Posts a text message, cut to [`STDERR_TAIL`] bytes.
fn post_text(port: &ParentPort, kind: Kind, id: u64, text: &dyn Display) {
    let text = text.to_string();
    let text = frame::text(text.as_bytes(), STDERR_TAIL);
    let _ = port.post_bytes(&frame::with_bytes(kind, id, text.as_bytes()));
}
