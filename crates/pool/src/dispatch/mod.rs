//! The dispatcher: the one task that owns every task and every worker of a [`Pool`](crate::Pool).
//!
//! # One owner, one way out
//!
//! A pool is one tokio task, the *dispatcher*, that owns all its state: the queue, the
//! tasks, the workers, the timers, the breaker. Handles (`pool.rs`) talk to it through a channel
//! ([`Cmd`]); each worker's task (`worker.rs`) reports through another ([`WorkerEvent`]).
//! Nothing else changes the state, so there are no locks around it and no races between a
//! reply and a crash, a timeout and a cancel: the dispatcher sees them one after the other.
//!
//! Every task ends in [`Dispatcher::finish`], which removes it from the table before it
//! answers: a task that is no longer in the table cannot be answered again, so each task
//! resolves exactly once.
//!
//! # Timers
//!
//! Deadlines, grace periods, start timeouts, idle and age limits and the breaker's waits are
//! entries in one ordered map, keyed by instant; the dispatcher sleeps until the first. A
//! task removes its own timers when it ends, so the map holds only live deadlines.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use utility_process::Message;

use crate::frame::{self, Kind};
use crate::metrics::{Metrics, Timings};
use crate::options::{Config, RunOptions};
use crate::worker::{lock, ToWorker, WorkerEvent, WorkerId};
use crate::{StartError, StartFailure, TaskError};

mod timers;
mod workers;

/// A reply, before it is decoded (by the caller, not the dispatcher).
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) message: Message,
    pub(crate) service_name: Arc<str>,
    pub(crate) pid: u32,
}

pub(crate) type Reply = oneshot::Sender<Result<Answer, TaskError>>;

/// What a handle asks the dispatcher.
#[derive(Debug)]
pub(crate) enum Cmd {
    Submit {
        id: u64,
        frame: Arc<Vec<u8>>,
        options: RunOptions,
        reply: Reply,
        room: OwnedSemaphorePermit,
        submitted: Instant,
    },
    /// Cancel the task (a token).
    Cancel { id: u64 },
    /// Nobody waits for the task any more (its future was dropped): cancel it.
    Abandon { id: u64 },
    /// Wait until the minimum number of workers is ready.
    Ready {
        done: oneshot::Sender<Result<(), Arc<StartFailure>>>,
    },
    Close {
        force: bool,
        done: oneshot::Sender<()>,
    },
}

/// What the dispatcher shows the handles: published after every change, and before any
/// answer a caller can see.
#[derive(Debug, Default)]
pub(crate) struct Published {
    pub(crate) metrics: Metrics,
    /// The pids of the worker processes the pool has and has not reaped, in order.
    pub(crate) worker_pids: Vec<u32>,
}

/// Starts the dispatcher of a new pool on `runtime`.
pub(crate) fn spawn(
    config: Config,
    runtime: tokio::runtime::Handle,
    commands: mpsc::UnboundedReceiver<Cmd>,
    metrics: Arc<Mutex<Published>>,
    room: Arc<Semaphore>,
) {
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let dispatcher = Dispatcher {
        config,
        runtime: runtime.clone(),
        events_tx,
        tasks: HashMap::new(),
        queue: VecDeque::new(),
        workers: HashMap::new(),
        next_worker: 1,
        timers: BTreeMap::new(),
        next_timer: 0,
        breaker: Breaker::default(),
        closing: None,
        close_waiters: Vec::new(),
        ready_waiters: Vec::new(),
        metrics,
        totals: Totals::default(),
        room,
    };
    runtime.spawn(dispatcher.run(commands, events_rx));
}

/// Why a running task is being stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopReason {
    Cancel,
    RunTimeout,
    TotalTimeout,
}

#[derive(Debug)]
enum TaskState {
    Queued {
        /// Its place in the queue, given back when it leaves the queue.
        _room: Option<OwnedSemaphorePermit>,
    },
    Running {
        worker: WorkerId,
        started: Instant,
        /// Set once the task is being stopped: why, and since when.
        stopping: Option<StopReason>,
    },
}

#[derive(Debug)]
struct Task {
    reply: Reply,
    frame: Arc<Vec<u8>>,
    options: RunOptions,
    submitted: Instant,
    /// Time spent queued before its (last) start.
    waited: Duration,
    state: TaskState,
    /// Workers that crashed under it (for [`PoolBuilder::poison_after`](crate::PoolBuilder::poison_after)).
    crashes: u32,
    /// Times it was put back in the queue after it had been handed to a worker (for
    /// [`RunOptions::retries`]).
    reruns: u32,
    timers: TaskTimers,
    /// The span of the task's life, from submission to its answer.
    span: tracing::Span,
}

#[derive(Debug, Default)]
struct TaskTimers {
    queue: Option<TimerKey>,
    run: Option<TimerKey>,
    total: Option<TimerKey>,
    grace: Option<TimerKey>,
}

impl TaskTimers {
    fn all(&mut self) -> impl Iterator<Item = TimerKey> {
        [
            self.queue.take(),
            self.run.take(),
            self.total.take(),
            self.grace.take(),
        ]
        .into_iter()
        .flatten()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WorkerState {
    /// Forked; not ready yet.
    Starting,
    Ready,
    /// Told to end (or ending on its own); waiting for its `Ended`.
    Ending,
}

/// Why the pool ended a worker, if it did.
#[derive(Debug, Clone)]
enum EndedBy {
    /// Idle, recycled, too old, closing: its tasks (if any) are not to blame.
    Retired,
    /// Killed because task `task` on it ignored its cancellation for `grace`.
    GraceExpired { task: u64, grace: Duration },
    /// Killed before it was ready: this is why.
    StartFailed(StartError),
}

#[derive(Debug)]
struct WorkerSlot {
    tx: mpsc::UnboundedSender<ToWorker>,
    pid: Option<u32>,
    service_name: Arc<str>,
    state: WorkerState,
    running: HashSet<u64>,
    forked: Instant,
    answered: u64,
    /// No new tasks: it ends when its current ones are done.
    retiring: bool,
    idle_since: Option<Instant>,
    /// An idle timer is pending for it (at most one is).
    idle_timer: bool,
    ended_by: Option<EndedBy>,
    /// It said it was ready.
    ready: bool,
    /// What its initializer said when it failed.
    init_error: Option<String>,
    /// How it broke the pool's protocol, when it did (and was killed for it).
    breach: Option<String>,
}

type TimerKey = (Instant, u64);

#[derive(Debug, Clone, Copy)]
enum Timer {
    Queue(u64),
    Run(u64),
    Total(u64),
    Grace(u64),
    StartTimeout(WorkerId),
    Idle(WorkerId),
    MaxAge(WorkerId),
    /// Look again whether workers may be started (after a backoff, or the breaker's cooldown).
    Wake,
}

/// The start-failure breaker.
#[derive(Debug, Default)]
struct Breaker {
    /// Start failures in a row.
    failures: u32,
    /// No start before this instant (a backoff, or the open breaker's cooldown).
    not_before: Option<Instant>,
    /// Tripped: set when `failures` reaches the threshold, cleared by a worker that gets ready.
    open: Option<Arc<StartFailure>>,
}

#[derive(Debug)]
struct Closing {
    force: bool,
}

/// Counters kept for [`Metrics`].
#[derive(Debug, Default)]
struct Totals {
    completed: u64,
    failed: u64,
    crashes: u64,
    start_failures: u64,
    workers_started: u64,
    wait: Timings,
    run: Timings,
}

struct Dispatcher {
    config: Config,
    runtime: tokio::runtime::Handle,
    events_tx: mpsc::UnboundedSender<(WorkerId, WorkerEvent)>,
    tasks: HashMap<u64, Task>,
    queue: VecDeque<u64>,
    workers: HashMap<WorkerId, WorkerSlot>,
    next_worker: WorkerId,
    timers: BTreeMap<TimerKey, Timer>,
    next_timer: u64,
    breaker: Breaker,
    closing: Option<Closing>,
    close_waiters: Vec<oneshot::Sender<()>>,
    ready_waiters: Vec<oneshot::Sender<Result<(), Arc<StartFailure>>>>,
    metrics: Arc<Mutex<Published>>,
    totals: Totals,
    room: Arc<Semaphore>,
}

impl Dispatcher {
    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Cmd>,
        mut events: mpsc::UnboundedReceiver<(WorkerId, WorkerEvent)>,
    ) {
        let mut handles_open = true;
        self.pump();
        loop {
            let next_timer = self.timers.keys().next().map(|(at, _)| *at);
            tokio::select! {
                biased;
                event = events.recv() => {
                    // The dispatcher holds a sender: the channel never closes.
                    if let Some((worker, event)) = event {
                        self.on_worker_event(worker, event);
                    }
                }
                command = commands.recv(), if handles_open => match command {
                    Some(command) => self.on_command(command),
                    None => {
                        // Every handle is gone: nobody can submit or wait any more.
                        handles_open = false;
                        self.begin_close(true);
                    }
                },
                () = sleep_until(next_timer), if next_timer.is_some() => self.on_timers(),
            }
            self.pump();
            if self.closing.is_some() && self.workers.is_empty() && self.tasks.is_empty() {
                for waiter in self.close_waiters.drain(..) {
                    let _ = waiter.send(());
                }
                if !handles_open {
                    return;
                }
            }
        }
    }

    // ---- commands ----

    fn on_command(&mut self, command: Cmd) {
        match command {
            Cmd::Submit {
                id,
                frame,
                options,
                reply,
                room,
                submitted,
            } => self.on_submit(id, frame, options, reply, room, submitted),
            Cmd::Cancel { id } | Cmd::Abandon { id } => self.cancel(id, StopReason::Cancel),
            Cmd::Ready { done } => {
                if self.closing.is_some() {
                    // Dropped, `done` tells the caller the pool is closed.
                } else if let Some(failure) = &self.breaker.open {
                    let _ = done.send(Err(Arc::clone(failure)));
                } else {
                    self.ready_waiters.push(done);
                }
            }
            Cmd::Close { force, done } => {
                self.close_waiters.push(done);
                self.begin_close(force);
            }
        }
    }

    fn on_submit(
        &mut self,
        id: u64,
        frame: Arc<Vec<u8>>,
        options: RunOptions,
        reply: Reply,
        room: OwnedSemaphorePermit,
        submitted: Instant,
    ) {
        let span = tracing::debug_span!("pool_task", pool = %self.config.service_name, task = id);
        tracing::trace!(parent: &span, "queued");
        let mut task = Task {
            reply,
            frame,
            options,
            submitted,
            waited: Duration::ZERO,
            state: TaskState::Queued { _room: Some(room) },
            crashes: 0,
            reruns: 0,
            timers: TaskTimers::default(),
            span,
        };
        let refusal = if self.closing.is_some() {
            Some(TaskError::Closed {
                service_name: self.config.service_name.clone(),
            })
        } else {
            self.breaker_blocks().map(TaskError::WorkersFailing)
        };
        if let Some(error) = refusal {
            // Refused at the door; still answered by `finish`, like every task.
            self.tasks.insert(id, task);
            return self.finish(id, Err(error));
        }
        if let Some(limit) = task.options.queue_timeout {
            task.timers.queue = Some(self.add_timer(submitted + limit, Timer::Queue(id)));
        }
        if let Some(limit) = task.options.total_timeout {
            task.timers.total = Some(self.add_timer(submitted + limit, Timer::Total(id)));
        }
        self.tasks.insert(id, task);
        self.queue.push_back(id);
    }

    /// The breaker's failure, when it is open, its cooldown is not over, and no worker is
    /// ready to take tasks.
    fn breaker_blocks(&self) -> Option<Arc<StartFailure>> {
        let failure = self.breaker.open.as_ref()?;
        let cooling = self.breaker.not_before.is_some_and(|t| Instant::now() < t);
        let any_ready = self
            .workers
            .values()
            .any(|w| w.state == WorkerState::Ready && !w.retiring);
        (cooling && !any_ready).then(|| Arc::clone(failure))
    }

    /// Cancels task `id`, or stops it for a deadline: removed when queued, stopped
    /// cooperatively (then killed) when running.
    fn cancel(&mut self, id: u64, reason: StopReason) {
        let Some(task) = self.tasks.get_mut(&id) else {
            return;
        };
        match &mut task.state {
            TaskState::Queued { .. } => {
                let waited = task.submitted.elapsed();
                let error = match reason {
                    StopReason::Cancel => TaskError::Cancelled {
                        waited,
                        ran: None,
                        stop: None,
                    },
                    StopReason::TotalTimeout | StopReason::RunTimeout => TaskError::TotalTimeout {
                        limit: task.options.total_timeout.unwrap_or_default(),
                        waited,
                        ran: None,
                        stop: None,
                    },
                };
                self.queue.retain(|queued| *queued != id);
                self.finish(id, Err(error));
            }
            TaskState::Running {
                worker, stopping, ..
            } => {
                if stopping.is_some() {
                    return;
                }
                *stopping = Some(reason);
                let worker = *worker;
                let at = Instant::now() + self.config.cancel_grace;
                let key = self.add_timer(at, Timer::Grace(id));
                if let Some(task) = self.tasks.get_mut(&id) {
                    task.timers.grace = Some(key);
                }
                if let Some(slot) = self.workers.get(&worker) {
                    let frame = Arc::new(frame::start(Kind::Cancel, id));
                    let _ = slot.tx.send(ToWorker::Post { task: id, frame });
                }
            }
        }
    }

    fn begin_close(&mut self, force: bool) {
        let already_forced = self.closing.as_ref().is_some_and(|c| c.force);
        self.closing = Some(Closing {
            force: force || already_forced,
        });
        self.room.close();
        // Dropped, a waiter's `ready` says the pool is closed.
        self.ready_waiters.clear();
        if force && !already_forced {
            let ids: Vec<u64> = self.tasks.keys().copied().collect();
            for id in ids {
                self.cancel(id, StopReason::Cancel);
            }
        }
    }

    // ---- the one way out ----

    /// Ends task `id` with `outcome`: removes it (and its timers) and answers its caller.
    /// The only place a task is answered.
    fn finish(&mut self, id: u64, outcome: Result<Answer, TaskError>) {
        let Some(mut task) = self.tasks.remove(&id) else {
            return;
        };
        for key in task.timers.all() {
            self.timers.remove(&key);
        }
        if let TaskState::Running {
            worker, started, ..
        } = task.state
        {
            self.totals.run.add(started.elapsed());
            if let Some(slot) = self.workers.get_mut(&worker) {
                slot.running.remove(&id);
            }
        }
        match &outcome {
            Ok(_) => {
                self.totals.completed += 1;
                tracing::debug!(parent: &task.span, "completed");
            }
            Err(error) => {
                self.totals.failed += 1;
                tracing::debug!(parent: &task.span, error = %error, "failed");
            }
        }
        // The caller may look at the metrics as soon as it has its answer: they say so first.
        self.publish();
        let _ = task.reply.send(outcome);
    }

    // ---- dispatch and sizing ----

    /// Gives queued tasks to free workers, starts or ends workers as needed, publishes the
    /// metrics, and answers `ready` waiters.
    fn pump(&mut self) {
        self.dispatch();
        self.size();
        self.dispatch();
        if self.closing.is_some() && self.tasks.is_empty() {
            let ids: Vec<WorkerId> = self.workers.keys().copied().collect();
            for id in ids {
                self.end_worker(id, EndedBy::Retired);
            }
        }
        let ready = self
            .workers
            .values()
            .filter(|w| w.state == WorkerState::Ready)
            .count();
        let dormant = !self.config.prewarm && self.totals.workers_started == 0;
        let wanted = if dormant { 0 } else { self.config.min_workers };
        // Published before `ready` returns, so that its caller sees the ready workers.
        self.publish();
        if ready >= wanted {
            for waiter in self.ready_waiters.drain(..) {
                let _ = waiter.send(Ok(()));
            }
        }
    }

    fn dispatch(&mut self) {
        while let Some(&id) = self.queue.front() {
            let concurrency = self.config.concurrency;
            let free = self
                .workers
                .iter()
                .filter(|(_, w)| {
                    w.state == WorkerState::Ready && !w.retiring && w.running.len() < concurrency
                })
                .min_by_key(|(wid, w)| (w.running.len(), **wid))
                .map(|(wid, _)| *wid);
            let Some(worker) = free else {
                return;
            };
            self.queue.pop_front();
            let now = Instant::now();
            let Some(task) = self.tasks.get_mut(&id) else {
                continue;
            };
            task.waited = now - task.submitted;
            self.totals.wait.add(task.waited);
            // Leaving the queue gives its place back (dropping the permit).
            task.state = TaskState::Running {
                worker,
                started: now,
                stopping: None,
            };
            let queue_timer = task.timers.queue.take();
            let frame = Arc::clone(&task.frame);
            let run_timeout = task.options.run_timeout;
            if let Some(key) = queue_timer {
                self.timers.remove(&key);
            }
            if let Some(limit) = run_timeout {
                let key = self.add_timer(now + limit, Timer::Run(id));
                if let Some(task) = self.tasks.get_mut(&id) {
                    task.timers.run = Some(key);
                }
            }
            let Some(slot) = self.workers.get_mut(&worker) else {
                continue;
            };
            slot.running.insert(id);
            slot.idle_since = None;
            if let Some(task) = self.tasks.get(&id) {
                tracing::debug!(parent: &task.span, worker = slot.pid, "started on a worker");
            }
            if slot.tx.send(ToWorker::Post { task: id, frame }).is_err() {
                // Its task has returned (the worker has ended, its `Ended` is on the way):
                // the task never reached it.
                self.unreachable(worker);
                self.requeue(id);
            }
        }
    }

    /// Starts workers for the minimum and for waiting tasks, within the maximum and what
    /// the breaker allows.
    fn size(&mut self) {
        let now = Instant::now();
        let allowed = self.breaker.not_before.is_none_or(|t| now >= t);
        if !allowed {
            return;
        }
        let starting = self
            .workers
            .values()
            .filter(|w| w.state == WorkerState::Starting)
            .count();
        let live = self.live_workers();
        let concurrency = self.config.concurrency;
        let for_queue = self
            .queue
            .len()
            .div_ceil(concurrency)
            .saturating_sub(starting);
        let for_min = if self.closing.is_some()
            || (!self.config.prewarm && self.totals.workers_started == 0)
        {
            0
        } else {
            self.config.min_workers.saturating_sub(live)
        };
        let mut wanted = for_queue
            .max(for_min)
            .min(self.config.max_workers.saturating_sub(live));
        if self.breaker.open.is_some() {
            // Half open: one start at a time until one gets ready.
            wanted = wanted.min(1usize.saturating_sub(starting));
        }
        for _ in 0..wanted {
            self.fork_worker();
            if self.breaker.not_before.is_some_and(|t| Instant::now() < t) {
                break;
            }
        }
    }

    fn publish(&self) {
        let mut published = lock(&self.metrics);
        let workers = self.workers.values();
        published.worker_pids.clear();
        published
            .worker_pids
            .extend(workers.clone().filter_map(|w| w.pid));
        published.worker_pids.sort_unstable();
        published.metrics = Metrics {
            queued: self.queue.len(),
            running: self.workers.values().map(|w| w.running.len()).sum(),
            workers: self.workers.len(),
            starting_workers: workers
                .clone()
                .filter(|w| w.state == WorkerState::Starting)
                .count(),
            busy_workers: workers
                .clone()
                .filter(|w| w.state == WorkerState::Ready && !w.running.is_empty())
                .count(),
            idle_workers: workers
                .filter(|w| w.state == WorkerState::Ready && w.running.is_empty())
                .count(),
            completed: self.totals.completed,
            failed: self.totals.failed,
            crashes: self.totals.crashes,
            workers_started: self.totals.workers_started,
            start_failures: self.totals.start_failures,
            breaker_open: self.breaker.open.is_some(),
            wait: self.totals.wait,
            run: self.totals.run,
        };
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
