//! The dispatcher's timers: one ordered map of instants, for deadlines, grace periods,
//! start timeouts, idle and age limits, and the breaker's waits.

use tokio::time::Instant;

use super::{Dispatcher, EndedBy, StopReason, TaskState, Timer, TimerKey, WorkerState};
use crate::worker::ToWorker;
use crate::{StartError, Stop, TaskError};

impl Dispatcher {
    pub(super) fn add_timer(&mut self, at: Instant, timer: Timer) -> TimerKey {
        let key = (at, self.next_timer);
        self.next_timer += 1;
        self.timers.insert(key, timer);
        key
    }

    pub(super) fn on_timers(&mut self) {
        let now = Instant::now();
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let timer = entry.remove();
            self.on_timer(timer, now);
        }
    }

    pub(super) fn on_timer(&mut self, timer: Timer, now: Instant) {
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
                    tracing::warn!(
                        pool = %self.config.service_name,
                        task = id,
                        grace = ?grace,
                        "a task ignored its cancellation: killing its worker"
                    );
                    self.end_worker(worker, EndedBy::GraceExpired { task: id, grace });
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
                let above_minimum = self.live_workers() > self.config.min_workers;
                let Some(slot) = self.workers.get_mut(&worker) else {
                    return;
                };
                slot.idle_timer = false;
                let idle = slot.state == WorkerState::Ready && slot.running.is_empty();
                match slot.idle_since {
                    Some(since) if idle && above_minimum => {
                        if now >= since + idle_timeout {
                            self.end_worker(worker, EndedBy::Retired);
                        } else {
                            // Busy for a while since the timer was set: wait out the rest.
                            self.arm_idle_timer(worker, since + idle_timeout);
                        }
                    }
                    // Busy now (the next idle moment arms it again), or needed for the minimum.
                    _ => {}
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
}
