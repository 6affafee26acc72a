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
use utility_process::{ExitStatus, Message};

use crate::frame::{self, Kind};
use crate::metrics::{Metrics, Timings};
use crate::options::{Config, RunOptions, Worker, RESTART_BACKOFF};
use crate::worker::{self, lock, ToWorker, WorkerEvent, WorkerId};
use crate::{Crash, StartError, StartFailure, Stop, TaskError};

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

/// Starts the dispatcher of a new pool on `runtime`.
pub(crate) fn spawn(
    config: Config,
    runtime: tokio::runtime::Handle,
    commands: mpsc::UnboundedReceiver<Cmd>,
    metrics: Arc<Mutex<Metrics>>,
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
    crashes: u32,
    timers: TaskTimers,
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
    /// Killed because a task on it ignored its cancellation.
    GraceExpired,
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
    metrics: Arc<Mutex<Metrics>>,
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
                if let Some(failure) = &self.breaker.open {
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
        let mut task = Task {
            reply,
            frame,
            options,
            submitted,
            waited: Duration::ZERO,
            state: TaskState::Queued { _room: Some(room) },
            crashes: 0,
            timers: TaskTimers::default(),
        };
        if self.closing.is_some() {
            let _ = task.reply.send(Err(TaskError::Closed {
                service_name: self.config.service_name.clone(),
            }));
            return;
        }
        if let Some(failure) = self.breaker_blocks() {
            self.totals.failed += 1;
            let _ = task.reply.send(Err(TaskError::WorkersFailing(failure)));
            return;
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
            Ok(_) => self.totals.completed += 1,
            Err(_) => self.totals.failed += 1,
        }
        let _ = task.reply.send(outcome);
    }

    // ---- workers ----

    fn on_worker_event(&mut self, id: WorkerId, event: WorkerEvent) {
        match event {
            WorkerEvent::Spawned { pid } => {
                if let Some(slot) = self.workers.get_mut(&id) {
                    slot.pid = Some(pid);
                }
            }
            WorkerEvent::Message(message) => self.on_message(id, message),
            WorkerEvent::PostFailed { task, error } => {
                if task == 0 || !self.tasks.contains_key(&task) {
                    return;
                }
                let Some(slot) = self.workers.get(&id) else {
                    return;
                };
                // The worker is gone (its end follows) or cannot take the frame: the task
                // is not to blame for a crash, but cannot run there either.
                let error = TaskError::Send {
                    service_name: slot.service_name.to_string(),
                    pid: slot.pid.unwrap_or(0),
                    source: error,
                };
                self.finish(task, Err(error));
            }
            WorkerEvent::Ended {
                status,
                cause,
                stderr_tail,
            } => self.on_ended(id, status, cause, stderr_tail),
        }
    }

    fn on_message(&mut self, worker: WorkerId, message: Message) {
        let Some(slot) = self.workers.get_mut(&worker) else {
            return;
        };
        let pid = slot.pid.unwrap_or(0);
        let parsed = frame::parse(message.bytes()).map(|(kind, id, body)| (kind, id, body.len()));
        let Some((kind, id, _)) = parsed else {
            let what = format!(
                "a message of {} bytes that is not a pool frame",
                message.len()
            );
            return self.breach(worker, what);
        };
        if slot.state == WorkerState::Starting {
            let body = &message.bytes()[frame::HEADER..];
            match kind {
                Kind::Ready if body == frame::PROTOCOL => {
                    slot.state = WorkerState::Ready;
                    slot.ready = true;
                    // The pool may start workers again; the count of failures in a row
                    // ends only with a task answered (a worker that gets ready and then
                    // dies idle is no success).
                    self.breaker.open = None;
                    self.breaker.not_before = None;
                    self.became_idle(worker);
                    if let Some(age) = self.config.max_worker_age {
                        let at = self.workers[&worker].forked + age;
                        self.add_timer(at, Timer::MaxAge(worker));
                    }
                }
                Kind::InitFailed => {
                    slot.init_error = Some(frame::text(body, worker::STDERR_TAIL));
                }
                _ => {
                    let what = format!("{kind:?} before ready ({} bytes)", body.len());
                    self.breach(worker, what);
                }
            }
            return;
        }
        let Some(task) = self.tasks.get(&id) else {
            // A late answer to a task that has already ended (a stop that was reported).
            return;
        };
        let TaskState::Running {
            worker: on,
            started,
            stopping,
        } = task.state
        else {
            return self.breach(worker, format!("an answer to queued task {id}"));
        };
        if on != worker {
            return self.breach(worker, format!("an answer to task {id} of another worker"));
        }
        let service_name = Arc::clone(&slot.service_name);
        slot.answered += 1;
        self.breaker.failures = 0;
        if self
            .config
            .max_tasks_per_worker
            .is_some_and(|max| slot.answered >= max)
        {
            slot.retiring = true;
        }
        let outcome = match (stopping, kind) {
            (Some(reason), _) => Err(self.stop_error(id, reason, started, Stop::Cooperatively)),
            (None, Kind::Reply) => Ok(Answer {
                message,
                service_name,
                pid,
            }),
            (None, Kind::Failed) => Err(TaskError::Failed {
                service_name: service_name.to_string(),
                pid,
                message: frame::text(&message.bytes()[frame::HEADER..], worker::STDERR_TAIL),
            }),
            (None, Kind::BadRequest) => Err(TaskError::BadRequest {
                service_name: service_name.to_string(),
                pid,
                message: frame::text(&message.bytes()[frame::HEADER..], worker::STDERR_TAIL),
            }),
            // The worker stopped a task nobody cancelled.
            (None, Kind::Cancelled) => Err(TaskError::Failed {
                service_name: service_name.to_string(),
                pid,
                message: "the worker cancelled the task by itself".into(),
            }),
            (None, other) => return self.breach(worker, format!("{other:?} for task {id}")),
        };
        self.finish(id, outcome);
        self.became_idle(worker);
    }

    /// The error for a task stopped for `reason`, which stopped as `stop`.
    fn stop_error(&self, id: u64, reason: StopReason, started: Instant, stop: Stop) -> TaskError {
        let task = &self.tasks[&id];
        let waited = task.waited;
        let ran = started.elapsed();
        match reason {
            StopReason::Cancel => TaskError::Cancelled {
                waited,
                ran: Some(ran),
                stop: Some(stop),
            },
            StopReason::RunTimeout => TaskError::RunTimeout {
                limit: task.options.run_timeout.unwrap_or_default(),
                waited,
                ran,
                stop,
            },
            StopReason::TotalTimeout => TaskError::TotalTimeout {
                limit: task.options.total_timeout.unwrap_or_default(),
                waited,
                ran: Some(ran),
                stop: Some(stop),
            },
        }
    }

    /// The worker broke the pool's protocol: kill it. Its tasks are failed as crashed when
    /// it ends, with the violation as the cause.
    fn breach(&mut self, worker: WorkerId, what: String) {
        let Some(slot) = self.workers.get_mut(&worker) else {
            return;
        };
        if slot.state == WorkerState::Starting {
            slot.ended_by = Some(EndedBy::StartFailed(StartError::Protocol {
                pid: slot.pid.unwrap_or(0),
                what,
            }));
        } else {
            slot.breach = Some(format!("broke the pool protocol: sent {what}"));
        }
        slot.state = WorkerState::Ending;
        let _ = slot.tx.send(ToWorker::Kill);
    }

    /// Marks the worker idle if it runs nothing; arms its idle timer when it is above the
    /// minimum; ends it if it is retiring.
    fn became_idle(&mut self, worker: WorkerId) {
        let Some(slot) = self.workers.get_mut(&worker) else {
            return;
        };
        if slot.state != WorkerState::Ready || !slot.running.is_empty() {
            return;
        }
        if slot.retiring {
            return self.end_worker(worker, EndedBy::Retired);
        }
        let now = Instant::now();
        slot.idle_since = Some(now);
        let idle_timeout = self.config.idle_timeout;
        if self.live_workers() > self.config.min_workers {
            self.add_timer(now + idle_timeout, Timer::Idle(worker));
        }
    }

    fn end_worker(&mut self, worker: WorkerId, why: EndedBy) {
        if let Some(slot) = self.workers.get_mut(&worker) {
            if slot.state == WorkerState::Ending {
                return;
            }
            slot.state = WorkerState::Ending;
            slot.ended_by.get_or_insert(why);
            let _ = slot.tx.send(ToWorker::Kill);
        }
    }

    fn on_ended(
        &mut self,
        worker: WorkerId,
        status: ExitStatus,
        cause: Option<Arc<utility_process::Error>>,
        stderr_tail: Option<String>,
    ) {
        let Some(slot) = self.workers.remove(&worker) else {
            return;
        };
        let pid = slot.pid.unwrap_or(0);
        if !slot.ready {
            if matches!(slot.ended_by, Some(EndedBy::Retired)) {
                // Ended while starting because the pool is closing: no failure.
                return;
            }
            let reason = match (slot.ended_by, slot.init_error) {
                (Some(EndedBy::StartFailed(reason)), _) => reason,
                (_, Some(message)) => StartError::Init { pid, message },
                _ => StartError::Exited {
                    pid,
                    status,
                    cause,
                    stderr_tail,
                },
            };
            return self.start_failed(reason);
        }
        if slot.ended_by.is_none() && slot.running.is_empty() && slot.answered == 0 {
            // Ready, then dead before its first task: as good as a start failure.
            return self.start_failed(StartError::Exited {
                pid,
                status,
                cause,
                stderr_tail,
            });
        }
        let retired = matches!(
            slot.ended_by,
            Some(EndedBy::Retired | EndedBy::GraceExpired)
        );
        let cause = cause.or_else(|| {
            // A protocol breach is the cause the core cannot know.
            slot.breach.map(|what| {
                Arc::new(utility_process::Error::Io {
                    context: "the worker was killed",
                    source: std::io::Error::other(what),
                })
            })
        });
        let crash = Crash {
            service_name: slot.service_name.to_string(),
            pid,
            status,
            cause,
            stderr_tail,
        };
        let mut ids: Vec<u64> = slot.running.into_iter().collect();
        ids.sort_unstable();
        for id in ids.into_iter().rev() {
            let Some(task) = self.tasks.get_mut(&id) else {
                continue;
            };
            let TaskState::Running {
                started, stopping, ..
            } = task.state
            else {
                continue;
            };
            if let Some(reason) = stopping {
                let error = self.stop_error(id, reason, started, Stop::WorkerEnded);
                self.finish(id, Err(error));
                continue;
            }
            if retired {
                // Not its fault: back to the front of the queue.
                self.requeue(id);
                continue;
            }
            self.totals.crashes += 1;
            task.crashes += 1;
            let retries = task.options.retries.unwrap_or(0);
            let error = if task.crashes >= self.config.poison_after {
                Some(TaskError::Poisoned {
                    crashes: task.crashes,
                    last: Box::new(crash.clone()),
                })
            } else if task.crashes <= retries {
                None
            } else {
                Some(TaskError::WorkerCrashed(Box::new(crash.clone())))
            };
            match error {
                Some(error) => self.finish(id, Err(error)),
                None => self.requeue(id),
            }
        }
    }

    /// Puts a task that was running back at the front of the queue.
    fn requeue(&mut self, id: u64) {
        let Some(task) = self.tasks.get_mut(&id) else {
            return;
        };
        if let TaskState::Running { started, .. } = task.state {
            self.totals.run.add(started.elapsed());
        }
        task.state = TaskState::Queued { _room: None };
        let run_timer = task.timers.run.take();
        if let Some(key) = run_timer {
            self.timers.remove(&key);
        }
        self.queue.push_front(id);
    }

    fn start_failed(&mut self, reason: StartError) {
        self.totals.start_failures += 1;
        let breaker = &mut self.breaker;
        breaker.failures += 1;
        let failure = Arc::new(StartFailure {
            service_name: self.config.service_name.clone(),
            failures: breaker.failures,
            reason,
        });
        let now = Instant::now();
        let wait = if breaker.failures >= self.config.breaker_threshold {
            breaker.open = Some(Arc::clone(&failure));
            self.config.breaker_cooldown
        } else {
            RESTART_BACKOFF
                .saturating_mul(1 << (breaker.failures - 1).min(16))
                .min(self.config.breaker_cooldown)
        };
        breaker.not_before = Some(now + wait);
        self.add_timer(now + wait, Timer::Wake);
        if self.breaker.open.is_some() {
            for waiter in self.ready_waiters.drain(..) {
                let _ = waiter.send(Err(Arc::clone(&failure)));
            }
            if self.breaker_blocks().is_some() {
                // No worker can take the queued tasks: fail them now rather than let them
                // wait for a worker that will not come.
                let queued: Vec<u64> = self.queue.drain(..).collect();
                for id in queued {
                    self.finish(id, Err(TaskError::WorkersFailing(Arc::clone(&failure))));
                }
            }
        }
    }

    fn live_workers(&self) -> usize {
        self.workers
            .values()
            .filter(|w| w.state != WorkerState::Ending && !w.retiring)
            .count()
    }

    fn fork_worker(&mut self) {
        let id = self.next_worker;
        self.next_worker += 1;
        let mut options = self.config.fork_options.clone();
        if self.config.explicit_name {
            options = options.service_name(self.config.service_name.clone());
        }
        let forked = match &self.config.worker {
            Worker::Entry { name, args } => utility_process::fork_entry(name, args, options),
            Worker::Program { program, args } => utility_process::fork(program, args, options),
        };
        let child = match forked {
            Ok(child) => child,
            Err(error) => return self.start_failed(StartError::Fork(Arc::new(error))),
        };
        self.totals.workers_started += 1;
        let (tx, rx) = mpsc::unbounded_channel();
        let service_name: Arc<str> = child.service_name().into();
        let now = Instant::now();
        self.workers.insert(
            id,
            WorkerSlot {
                tx,
                pid: child.pid(),
                service_name,
                state: WorkerState::Starting,
                running: HashSet::new(),
                forked: now,
                answered: 0,
                retiring: false,
                idle_since: None,
                ended_by: None,
                ready: false,
                init_error: None,
                breach: None,
            },
        );
        self.add_timer(now + self.config.start_timeout, Timer::StartTimeout(id));
        self.runtime
            .spawn(worker::drive(id, child, rx, self.events_tx.clone()));
    }

    // ---- timers ----

    fn add_timer(&mut self, at: Instant, timer: Timer) -> TimerKey {
        let key = (at, self.next_timer);
        self.next_timer += 1;
        self.timers.insert(key, timer);
        key
    }

    fn on_timers(&mut self) {
        let now = Instant::now();
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let timer = entry.remove();
            self.on_timer(timer, now);
        }
    }

    fn on_timer(&mut self, timer: Timer, now: Instant) {
        match timer {
            Timer::Queue(id) => {
                if let Some(task) = self.tasks.get_mut(&id) {
                    task.timers.queue = None;
                    if matches!(task.state, TaskState::Queued { .. }) {
                        let error = TaskError::QueueTimeout {
                            limit: task.options.queue_timeout.unwrap_or_default(),
                            waited: now - task.submitted,
                        };
                        self.queue.retain(|queued| *queued != id);
                        self.finish(id, Err(error));
                    }
                }
            }
            Timer::Run(id) => {
                if let Some(task) = self.tasks.get_mut(&id) {
                    task.timers.run = None;
                    self.cancel(id, StopReason::RunTimeout);
                }
            }
            Timer::Total(id) => {
                if let Some(task) = self.tasks.get_mut(&id) {
                    task.timers.total = None;
                    self.cancel(id, StopReason::TotalTimeout);
                }
            }
            Timer::Grace(id) => {
                let Some(task) = self.tasks.get_mut(&id) else {
                    return;
                };
                task.timers.grace = None;
                if let TaskState::Running {
                    worker,
                    started,
                    stopping: Some(reason),
                } = task.state
                {
                    let grace = self.config.cancel_grace;
                    let error = self.stop_error(id, reason, started, Stop::Killed { grace });
                    self.finish(id, Err(error));
                    self.end_worker(worker, EndedBy::GraceExpired);
                }
            }
            Timer::StartTimeout(worker) => {
                if let Some(slot) = self.workers.get_mut(&worker) {
                    if slot.state == WorkerState::Starting {
                        slot.ended_by = Some(EndedBy::StartFailed(StartError::NotReady {
                            pid: slot.pid.unwrap_or(0),
                            limit: self.config.start_timeout,
                        }));
                        slot.state = WorkerState::Ending;
                        let _ = slot.tx.send(ToWorker::Kill);
                    }
                }
            }
            Timer::Idle(worker) => {
                let idle_timeout = self.config.idle_timeout;
                let live = self.live_workers();
                if let Some(slot) = self.workers.get(&worker) {
                    let idle_long = slot
                        .idle_since
                        .is_some_and(|since| now >= since + idle_timeout);
                    if slot.state == WorkerState::Ready
                        && slot.running.is_empty()
                        && idle_long
                        && live > self.config.min_workers
                    {
                        self.end_worker(worker, EndedBy::Retired);
                    }
                }
            }
            Timer::MaxAge(worker) => {
                if let Some(slot) = self.workers.get_mut(&worker) {
                    slot.retiring = true;
                }
                self.became_idle(worker);
            }
            Timer::Wake => {}
        }
    }

    // ---- dispatch and sizing ----

    /// Gives queued tasks to free workers, starts or ends workers as needed, answers
    /// `ready` waiters, and publishes the metrics.
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
        if ready >= wanted {
            for waiter in self.ready_waiters.drain(..) {
                let _ = waiter.send(Ok(()));
            }
        }
        self.publish();
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
            let _ = slot.tx.send(ToWorker::Post { task: id, frame });
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
        let mut metrics = lock(&self.metrics);
        let workers = self.workers.values();
        *metrics = Metrics {
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
