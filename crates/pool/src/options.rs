//! [`Worker`], [`PoolBuilder`], [`WhenFull`] and [`RunOptions`]: what a pool runs and how.
//! Every default is documented here, once.

use std::ffi::OsString;
use std::marker::PhantomData;
use std::path::PathBuf;
use std::time::Duration;

use utility_process::ForkOptions;

use crate::{BuildError, CancelToken, Pool};

/// Default for [`PoolBuilder::queue_capacity`].
pub const DEFAULT_QUEUE_CAPACITY: usize = 1024;
/// Default for [`PoolBuilder::poison_after`].
pub const DEFAULT_POISON_AFTER: u32 = 3;
/// Default for [`PoolBuilder::cancel_grace`].
pub const DEFAULT_CANCEL_GRACE: Duration = Duration::from_secs(2);
/// Default for [`PoolBuilder::start_timeout`].
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(30);
/// Default for [`PoolBuilder::idle_timeout`].
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default number of consecutive start failures that trips the breaker
/// ([`PoolBuilder::breaker`]).
pub const DEFAULT_BREAKER_THRESHOLD: u32 = 3;
/// Default time the breaker stays open before it lets one start through
/// ([`PoolBuilder::breaker`]).
pub const DEFAULT_BREAKER_COOLDOWN: Duration = Duration::from_secs(5);
/// The wait after the first start failure; it doubles with each further failure, up to the
/// breaker's cooldown.
pub const RESTART_BACKOFF: Duration = Duration::from_millis(100);

/// The program a pool's workers run.
///
/// # Examples
///
/// ```
/// use utility_process_pool::Worker;
///
/// let same_binary = Worker::entry("resizer");            // this executable, relaunched
/// let other = Worker::program("/usr/local/bin/resizer").args(["--quality", "80"]);
/// assert!(matches!(other, Worker::Program { ref args, .. } if args.len() == 2));
/// # let _ = same_binary;
/// ```
#[derive(Debug, Clone)]
pub enum Worker {
    /// A same-binary entry point, started with [`utility_process::fork_entry`]. The program
    /// must call [`utility_process::init`] with an entry of that name whose body calls
    /// [`serve`](crate::serve) (or a variant).
    Entry {
        /// The entry point's name.
        name: String,
        /// Its arguments.
        args: Vec<OsString>,
    },
    /// A separate program, started with [`utility_process::fork`]; its `main` calls
    /// [`serve`](crate::serve) (or a variant) on its parent port.
    Program {
        /// The program.
        program: PathBuf,
        /// Its arguments.
        args: Vec<OsString>,
    },
}

impl Worker {
    /// The entry point `name` of this executable.
    pub fn entry(name: impl Into<String>) -> Worker {
        Worker::Entry {
            name: name.into(),
            args: Vec::new(),
        }
    }

    /// The program at `program` (a bare name is looked up on `PATH`).
    pub fn program(program: impl Into<PathBuf>) -> Worker {
        Worker::Program {
            program: program.into(),
            args: Vec::new(),
        }
    }

    /// The same worker with these arguments.
    pub fn args<I, S>(mut self, new: I) -> Worker
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        let new: Vec<OsString> = new.into_iter().map(Into::into).collect();
        match &mut self {
            Worker::Entry { args, .. } | Worker::Program { args, .. } => *args = new,
        }
        self
    }

    /// The name errors use when the options set none: the entry's name or the program's
    /// file name.
    pub(crate) fn default_name(&self) -> String {
        match self {
            Worker::Entry { name, .. } => name.clone(),
            Worker::Program { program, .. } => program
                .file_name()
                .unwrap_or(program.as_os_str())
                .to_string_lossy()
                .into_owned(),
        }
    }
}

/// What [`Pool::run`] does when the queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WhenFull {
    /// Wait for room (back-pressure). The default.
    #[default]
    Wait,
    /// Fail at once with [`TaskError::QueueFull`](crate::TaskError::QueueFull).
    Reject,
}

/// Per-task options for [`Pool::run_with`]. A deadline left unset falls back to the pool's
/// default ([`PoolBuilder::default_run_options`]); by default there is none.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use utility_process_pool::{CancelToken, RunOptions};
///
/// let token = CancelToken::new();
/// let options = RunOptions::new()
///     .queue_timeout(Duration::from_secs(1))   // give up if no worker takes it within 1 s
///     .run_timeout(Duration::from_secs(10))    // stop it after 10 s on a worker
///     .retries(2)                              // run it again if its worker crashes
///     .cancel(token.clone());                  // token.cancel() stops it
/// # drop(options);
/// ```
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub(crate) queue_timeout: Option<Duration>,
    pub(crate) run_timeout: Option<Duration>,
    pub(crate) total_timeout: Option<Duration>,
    pub(crate) retries: Option<u32>,
    pub(crate) cancel: Option<CancelToken>,
}

impl RunOptions {
    /// No deadline, no retry, no token.
    pub fn new() -> RunOptions {
        RunOptions::default()
    }

    /// The longest the task may wait in the queue before a worker takes it; past it, it
    /// fails with [`TaskError::QueueTimeout`](crate::TaskError::QueueTimeout) and never runs.
    pub fn queue_timeout(mut self, limit: Duration) -> Self {
        self.queue_timeout = Some(limit);
        self
    }

    /// The longest the task may run on a worker; past it, it is cancelled (see
    /// [`PoolBuilder::cancel_grace`]) and fails with
    /// [`TaskError::RunTimeout`](crate::TaskError::RunTimeout).
    pub fn run_timeout(mut self, limit: Duration) -> Self {
        self.run_timeout = Some(limit);
        self
    }

    /// The longest the task may take from submission to answer, queue and run together;
    /// past it, it fails with [`TaskError::TotalTimeout`](crate::TaskError::TotalTimeout).
    pub fn total_timeout(mut self, limit: Duration) -> Self {
        self.total_timeout = Some(limit);
        self
    }

    /// Run the task again, on another worker, when its worker ends under it — a crash, or a
    /// kill because another task on the same worker ignored its cancellation — at most
    /// `retries` times, and never past [`PoolBuilder::poison_after`] crashes. Off (0) by
    /// default: a task may not be safe to run twice, so a task that was handed to a worker
    /// runs again only when its caller asks for it here. A task that never reached a worker
    /// (its worker ended before it could be handed over) goes back to the queue whatever
    /// this says.
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = Some(retries);
        self
    }

    /// Cancel the task when `token` is cancelled: a queued task is removed, a running one
    /// is cancelled cooperatively and its worker killed after the grace period.
    pub fn cancel(mut self, token: CancelToken) -> Self {
        self.cancel = Some(token);
        self
    }

    /// These options, with the unset ones taken from `defaults`.
    pub(crate) fn or(mut self, defaults: &RunOptions) -> RunOptions {
        self.queue_timeout = self.queue_timeout.or(defaults.queue_timeout);
        self.run_timeout = self.run_timeout.or(defaults.run_timeout);
        self.total_timeout = self.total_timeout.or(defaults.total_timeout);
        self.retries = self.retries.or(defaults.retries);
        self
    }
}

/// How a pool is made: [`Pool::builder`], the options, then [`build`](Self::build).
#[derive(Debug)]
pub struct PoolBuilder<Req, Rep> {
    pub(crate) config: Config,
    pub(crate) _types: PhantomData<fn(&Req) -> Rep>,
}

/// Everything a builder sets.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) worker: Worker,
    pub(crate) fork_options: ForkOptions,
    pub(crate) service_name: String,
    /// Whether `service_name` was set (and so is passed on to the fork options).
    pub(crate) explicit_name: bool,
    pub(crate) min_workers: usize,
    pub(crate) max_workers: usize,
    pub(crate) prewarm: bool,
    pub(crate) idle_timeout: Duration,
    pub(crate) max_tasks_per_worker: Option<u64>,
    pub(crate) max_worker_age: Option<Duration>,
    pub(crate) concurrency: usize,
    pub(crate) queue_capacity: usize,
    pub(crate) when_full: WhenFull,
    pub(crate) poison_after: u32,
    pub(crate) cancel_grace: Duration,
    pub(crate) start_timeout: Duration,
    pub(crate) breaker_threshold: u32,
    pub(crate) breaker_cooldown: Duration,
    pub(crate) defaults: RunOptions,
}

impl<Req, Rep> PoolBuilder<Req, Rep> {
    pub(crate) fn new(worker: Worker) -> Self {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        PoolBuilder {
            config: Config {
                service_name: worker.default_name(),
                explicit_name: false,
                worker,
                fork_options: ForkOptions::default(),
                min_workers: n,
                max_workers: n,
                prewarm: true,
                idle_timeout: DEFAULT_IDLE_TIMEOUT,
                max_tasks_per_worker: None,
                max_worker_age: None,
                concurrency: 1,
                queue_capacity: DEFAULT_QUEUE_CAPACITY,
                when_full: WhenFull::Wait,
                poison_after: DEFAULT_POISON_AFTER,
                cancel_grace: DEFAULT_CANCEL_GRACE,
                start_timeout: DEFAULT_START_TIMEOUT,
                breaker_threshold: DEFAULT_BREAKER_THRESHOLD,
                breaker_cooldown: DEFAULT_BREAKER_COOLDOWN,
                defaults: RunOptions::default(),
            },
            _types: PhantomData,
        }
    }

    /// How every worker is started (stdio, cwd, env, kill grace...). Pipe stderr
    /// ([`utility_process::Stdio::Pipe`]) to get the tail of a crashed worker's stderr in
    /// its error; the pool reads the pipe, so it never fills. A piped stdout is read and
    /// discarded (nobody else could read it): prefer `Inherit` or `Ignore` for stdout.
    pub fn fork_options(mut self, options: ForkOptions) -> Self {
        self.config.fork_options = options;
        self
    }

    /// The name of the pool and of its workers, in `ps` and in errors. Default: the entry's
    /// name or the program's file name.
    pub fn service_name(mut self, name: impl Into<String>) -> Self {
        self.config.service_name = name.into();
        self.config.explicit_name = true;
        self
    }

    /// Exactly `n` workers: [`min_workers`](Self::min_workers) and
    /// [`max_workers`](Self::max_workers) both `n`. Default: the number of CPUs.
    pub fn workers(mut self, n: usize) -> Self {
        self.config.min_workers = n;
        self.config.max_workers = n;
        self
    }

    /// Workers kept even when idle. Default: the number of CPUs.
    pub fn min_workers(mut self, n: usize) -> Self {
        self.config.min_workers = n;
        self
    }

    /// Workers started at most, when tasks wait. Default: the number of CPUs.
    pub fn max_workers(mut self, n: usize) -> Self {
        self.config.max_workers = n;
        self
    }

    /// Start the minimum number of workers at once (`true`, the default), or only when the
    /// first tasks come.
    pub fn prewarm(mut self, prewarm: bool) -> Self {
        self.config.prewarm = prewarm;
        self
    }

    /// How long a worker above the minimum may stay idle before it is stopped. Default:
    /// 30 s.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.config.idle_timeout = timeout;
        self
    }

    /// Replace a worker after it has answered `tasks` tasks (against slow leaks). Default:
    /// never.
    pub fn max_tasks_per_worker(mut self, tasks: u64) -> Self {
        self.config.max_tasks_per_worker = Some(tasks);
        self
    }

    /// Replace a worker once it is this old, after its current tasks. Default: never.
    pub fn max_worker_age(mut self, age: Duration) -> Self {
        self.config.max_worker_age = Some(age);
        self
    }

    /// Tasks one worker runs at once. Default: 1. More than one suits workers whose
    /// handlers wait (I/O) rather than compute; a crash then fails every task on the worker,
    /// and so does the kill of a worker whose task ignored its cancellation (unless the tasks
    /// opted into [`RunOptions::retries`]).
    pub fn concurrency_per_worker(mut self, tasks: usize) -> Self {
        self.config.concurrency = tasks;
        self
    }

    /// Tasks that may wait for a worker. Default: 1,024.
    pub fn queue_capacity(mut self, tasks: usize) -> Self {
        self.config.queue_capacity = tasks;
        self
    }

    /// What [`Pool::run`] does when the queue is full. Default: [`WhenFull::Wait`].
    pub fn when_full(mut self, policy: WhenFull) -> Self {
        self.config.when_full = policy;
        self
    }

    /// A task that has crashed this many workers fails with
    /// [`TaskError::Poisoned`](crate::TaskError::Poisoned), whatever its retries. Default: 3.
    pub fn poison_after(mut self, crashes: u32) -> Self {
        self.config.poison_after = crashes;
        self
    }

    /// How long a cancelled (or timed-out) running task has to answer before its worker is
    /// killed. Default: 2 s.
    pub fn cancel_grace(mut self, grace: Duration) -> Self {
        self.config.cancel_grace = grace;
        self
    }

    /// How long a new worker has to say it is ready before it is killed and counted as a
    /// start failure. Default: 30 s.
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.config.start_timeout = timeout;
        self
    }

    /// The start-failure breaker: after `threshold` workers in a row fail before they are
    /// ready, no worker is started for `cooldown` (tasks that have no worker fail with
    /// [`TaskError::WorkersFailing`](crate::TaskError::WorkersFailing)); then one start is
    /// tried. Between failures below the threshold the pool waits 100 ms, doubling. Default:
    /// 3 failures, 5 s.
    pub fn breaker(mut self, threshold: u32, cooldown: Duration) -> Self {
        self.config.breaker_threshold = threshold;
        self.config.breaker_cooldown = cooldown;
        self
    }

    /// Deadlines and retries for tasks that do not set their own. Default: none.
    pub fn default_run_options(mut self, options: RunOptions) -> Self {
        self.config.defaults = RunOptions {
            cancel: None,
            ..options
        };
        self
    }

    /// Builds the pool and, with [`prewarm`](Self::prewarm), starts its minimum workers. It
    /// does not wait for them: [`Pool::ready`] does.
    ///
    /// # Errors
    ///
    /// [`BuildError::NoRuntime`] outside a tokio runtime; [`BuildError::Invalid`] when
    /// `max_workers` is 0 or below `min_workers`, or `concurrency_per_worker`,
    /// `queue_capacity`, `poison_after` or the breaker's threshold is 0.
    pub fn build(self) -> Result<Pool<Req, Rep>, BuildError> {
        let c = &self.config;
        let invalid = |option, reason: &str| {
            Err(BuildError::Invalid {
                option,
                reason: reason.to_owned(),
            })
        };
        if c.max_workers == 0 {
            return invalid("max_workers", "a pool needs at least one worker");
        }
        if c.min_workers > c.max_workers {
            return Err(BuildError::Invalid {
                option: "min_workers",
                reason: format!("{} is above max_workers ({})", c.min_workers, c.max_workers),
            });
        }
        for (option, value) in [
            ("concurrency_per_worker", c.concurrency),
            ("queue_capacity", c.queue_capacity),
            ("poison_after", c.poison_after as usize),
            ("breaker threshold", c.breaker_threshold as usize),
        ] {
            if value == 0 {
                return invalid(option, "must be at least 1");
            }
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| BuildError::NoRuntime)?;
        Ok(Pool::start(self.config, runtime))
    }
}
