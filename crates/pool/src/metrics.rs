//! [`Metrics`]: what a pool is doing, and has done.

use std::time::Duration;

/// A snapshot of a pool, from [`Pool::metrics`](crate::Pool::metrics). Gauges say what is
/// true now; counters and timings add up since the pool was built. A task is counted before
/// its caller has its answer, so a snapshot taken after [`Pool::run`](crate::Pool::run)
/// returns includes it.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use utility_process_pool::Metrics;
///
/// let metrics = Metrics::default();
/// assert_eq!(metrics.queued, 0);
/// assert_eq!(metrics.wait.mean(), Duration::ZERO);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Metrics {
    /// Tasks waiting for a worker (the queue depth).
    pub queued: usize,
    /// Tasks running on workers.
    pub running: usize,
    /// Workers alive, in any state.
    pub workers: usize,
    /// Workers started but not ready yet.
    pub starting_workers: usize,
    /// Ready workers running at least one task.
    pub busy_workers: usize,
    /// Ready workers running nothing.
    pub idle_workers: usize,
    /// Tasks answered with a reply that decoded.
    pub completed: u64,
    /// Tasks ended with an error (any [`TaskError`](crate::TaskError)).
    pub failed: u64,
    /// Times a worker ended under a task it was running.
    pub crashes: u64,
    /// Workers forked.
    pub workers_started: u64,
    /// Workers that failed before they were ready.
    pub start_failures: u64,
    /// Whether the start-failure breaker is open.
    pub breaker_open: bool,
    /// Time tasks waited in the queue before they started.
    pub wait: Timings,
    /// Time tasks ran on workers.
    pub run: Timings,
}

/// How many durations, their sum and the longest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timings {
    /// How many.
    pub count: u64,
    /// Their sum.
    pub total: Duration,
    /// The longest.
    pub max: Duration,
}

impl Timings {
    /// The mean, or zero when there is none.
    pub fn mean(&self) -> Duration {
        match u32::try_from(self.count) {
            Ok(0) => Duration::ZERO,
            Ok(n) => self.total / n,
            Err(_) => Duration::from_secs_f64(self.total.as_secs_f64() / self.count as f64),
        }
    }

    pub(crate) fn add(&mut self, d: Duration) {
        self.count += 1;
        self.total += d;
        self.max = self.max.max(d);
    }
}
