//! The dispatcher's side of its workers: their events and messages, their ends (crash or
//! retirement, and what that means for their tasks), start failures and the breaker,
//! forking new ones.

use std::collections::HashSet;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::time::Instant;
use utility_process::{ExitStatus, Message};

use super::{Answer, Dispatcher, EndedBy, StopReason, TaskState, Timer, WorkerSlot, WorkerState};
use crate::frame::{self, Kind};
use crate::options::{Worker, RESTART_BACKOFF};
use crate::worker::{self, ToWorker, WorkerEvent, WorkerId};
use crate::{Crash, StartError, StartFailure, Stop, TaskError};

impl Dispatcher {
    pub(super) fn on_worker_event(&mut self, id: WorkerId, event: WorkerEvent) {
        match event {
            WorkerEvent::Spawned { pid } => {
                if let Some(slot) = self.workers.get_mut(&id) {
                    slot.pid = Some(pid);
                }
            }
            WorkerEvent::Message(message) => self.on_message(id, message),
            WorkerEvent::Unsent { task } => self.on_unsent(id, task),
            WorkerEvent::PostFailed { task, error } => self.on_post_failed(id, task, error),
            WorkerEvent::Ended {
                status,
                cause,
                stderr_tail,
            } => self.on_ended(id, status, cause, stderr_tail),
        }
    }

    /// The frame for `task` never reached `worker`, which has ended: the task never started
    /// there, and goes back to the queue.
    fn on_unsent(&mut self, worker: WorkerId, task: u64) {
        if self.running_unstopped_on(task, worker) {
            self.requeue(task);
        }
    }

    /// Whether `task` runs on `worker` and is not being stopped.
    fn running_unstopped_on(&self, task: u64, worker: WorkerId) -> bool {
        self.tasks.get(&task).is_some_and(|entry| {
            matches!(entry.state, TaskState::Running { worker: on, stopping: None, .. } if on == worker)
        })
    }

    /// `worker` cannot be handed tasks any more (its port is closed): no new task goes to it,
    /// and it is ended.
    pub(super) fn unreachable(&mut self, worker: WorkerId) {
        if let Some(slot) = self.workers.get_mut(&worker) {
            if slot.state != WorkerState::Ending {
                slot.state = WorkerState::Ending;
                let _ = slot.tx.send(ToWorker::Kill);
            }
        }
    }

    /// A frame for `task` could not be posted to `worker`.
    fn on_post_failed(&mut self, worker: WorkerId, task: u64, error: Arc<utility_process::Error>) {
        if !self.running_unstopped_on(task, worker) {
            // A cancel that could not be posted (the grace period or the worker's end
            // settles the task), or a task that has moved on.
            return;
        }
        let Some(slot) = self.workers.get(&worker) else {
            return;
        };
        if matches!(*error, utility_process::Error::Closed { .. }) {
            // The worker's port closed before it could be handed the task: the task never
            // reached it, and no other task will.
            self.unreachable(worker);
            return self.requeue(task);
        }
        let error = TaskError::Send {
            service_name: slot.service_name.to_string(),
            pid: slot.pid.unwrap_or(0),
            source: error,
        };
        self.finish(task, Err(error));
        self.became_idle(worker);
    }

    pub(super) fn on_message(&mut self, worker: WorkerId, message: Message) {
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
                    tracing::debug!(pool = %self.config.service_name, worker = slot.pid, "worker ready");
                    if self.breaker.open.is_some() {
                        tracing::info!(pool = %self.config.service_name, "breaker closed: a worker got ready");
                    }
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
        if !matches!(
            kind,
            Kind::Reply | Kind::Failed | Kind::BadRequest | Kind::Cancelled
        ) {
            return self.breach(worker, format!("{kind:?} after ready"));
        }
        let Some(task) = self.tasks.get(&id) else {
            if slot.state == WorkerState::Ending {
                // A late answer to a task that ended when the pool gave up on the worker
                // (a grace period that ran out): harmless, the worker is on its way out.
                return;
            }
            // A task ends on a live worker only with that worker's answer: this worker
            // answers a task it was never given, or answers one twice.
            return self.breach(
                worker,
                format!("an answer to task {id}, which it does not run"),
            );
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
            // Not answers: refused above.
            (None, other) => return self.breach(worker, format!("{other:?} for task {id}")),
        };
        self.finish(id, outcome);
        self.became_idle(worker);
    }

    /// The error for a task stopped for `reason`, which stopped as `stop`.
    pub(super) fn stop_error(
        &self,
        id: u64,
        reason: StopReason,
        started: Instant,
        stop: Stop,
    ) -> TaskError {
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
    pub(super) fn breach(&mut self, worker: WorkerId, what: String) {
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
    pub(super) fn became_idle(&mut self, worker: WorkerId) {
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
        let armed = slot.idle_timer;
        if !armed && self.live_workers() > self.config.min_workers {
            self.arm_idle_timer(worker, now + self.config.idle_timeout);
        }
    }

    /// Arms the worker's one idle timer.
    pub(super) fn arm_idle_timer(&mut self, worker: WorkerId, at: Instant) {
        if let Some(slot) = self.workers.get_mut(&worker) {
            slot.idle_timer = true;
            self.add_timer(at, Timer::Idle(worker));
        }
    }

    pub(super) fn end_worker(&mut self, worker: WorkerId, why: EndedBy) {
        if let Some(slot) = self.workers.get_mut(&worker) {
            if slot.state == WorkerState::Ending {
                return;
            }
            slot.state = WorkerState::Ending;
            slot.ended_by.get_or_insert(why);
            let _ = slot.tx.send(ToWorker::Kill);
        }
    }

    pub(super) fn on_ended(
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
        // What the core could not know: why the pool killed it, when it did.
        let killed_for = match (&slot.ended_by, slot.breach) {
            (_, Some(what)) => Some(what),
            (Some(EndedBy::GraceExpired { task, grace }), None) => Some(format!(
                "task {task} on it ignored its cancellation for {grace:?}"
            )),
            (Some(EndedBy::Retired), None) => Some("the pool retired it".to_owned()),
            _ => None,
        };
        let not_to_blame = matches!(
            slot.ended_by,
            Some(EndedBy::Retired | EndedBy::GraceExpired { .. })
        );
        let cause = cause.or_else(|| {
            killed_for.map(|what| {
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
        if !slot.running.is_empty() {
            tracing::warn!(
                pool = %self.config.service_name,
                worker = pid,
                status = %crash.status,
                tasks = slot.running.len(),
                "worker ended under its tasks"
            );
        }
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
            // The task was handed to the worker: it may have started, and may not be safe to
            // run twice. It runs again only if its caller asked for retries.
            let mut error = None;
            if !not_to_blame {
                self.totals.crashes += 1;
                task.crashes += 1;
                if task.crashes >= self.config.poison_after {
                    tracing::warn!(parent: &task.span, crashes = task.crashes, "poisoned: it crashed too many workers");
                    error = Some(TaskError::Poisoned {
                        crashes: task.crashes,
                        last: Box::new(crash.clone()),
                    });
                }
            }
            if error.is_none() && task.reruns >= task.options.retries.unwrap_or(0) {
                error = Some(TaskError::WorkerCrashed(Box::new(crash.clone())));
            }
            match error {
                Some(error) => self.finish(id, Err(error)),
                None => {
                    task.reruns += 1;
                    tracing::debug!(parent: &task.span, rerun = task.reruns, "retried after its worker ended");
                    self.requeue(id);
                }
            }
        }
    }

    /// Puts a task that was running back at the front of the queue.
    pub(super) fn requeue(&mut self, id: u64) {
        let Some(task) = self.tasks.get_mut(&id) else {
            return;
        };
        if let TaskState::Running {
            started, worker, ..
        } = task.state
        {
            self.totals.run.add(started.elapsed());
            if let Some(slot) = self.workers.get_mut(&worker) {
                slot.running.remove(&id);
            }
        }
        task.state = TaskState::Queued { _room: None };
        let run_timer = task.timers.run.take();
        if let Some(key) = run_timer {
            self.timers.remove(&key);
        }
        self.queue.push_front(id);
    }

    pub(super) fn start_failed(&mut self, reason: StartError) {
        self.totals.start_failures += 1;
        let breaker = &mut self.breaker;
        breaker.failures += 1;
        let failure = Arc::new(StartFailure {
            service_name: self.config.service_name.clone(),
            failures: breaker.failures,
            reason,
        });
        let now = Instant::now();
        tracing::warn!(
            pool = %self.config.service_name,
            failures = breaker.failures,
            reason = %failure.reason,
            "a worker failed to start"
        );
        let wait = if breaker.failures >= self.config.breaker_threshold {
            if breaker.open.is_none() {
                tracing::error!(
                    pool = %self.config.service_name,
                    cooldown = ?self.config.breaker_cooldown,
                    "breaker open: workers keep failing to start"
                );
            }
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
            self.publish();
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

    pub(super) fn live_workers(&self) -> usize {
        self.workers
            .values()
            .filter(|w| w.state != WorkerState::Ending && !w.retiring)
            .count()
    }

    pub(super) fn fork_worker(&mut self) {
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
        tracing::debug!(pool = %self.config.service_name, worker = child.pid(), "worker forked");
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
                idle_timer: false,
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
}
