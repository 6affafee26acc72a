//! The pool's promises, one trial each. The test binary is also every worker: `main` calls
//! `utility_process::init` first (so `harness = false`, trials run by libtest-mimic), and
//! the entries below crash, hang, fail at start, answer slowly or never, on command.
//!
//! Each trial builds its own pool on a runtime of its own; trials run in parallel, so a
//! trial checks the processes of its own pool (by pid), never "all children".
//!
//! On Windows every trial runs: a crash is `std::process::abort`'s fast-fail exception
//! (`STATUS_STACK_BUFFER_OVERRUN`) where Unix has SIGABRT, a process is looked up with
//! `OpenProcess` where Unix reads `/proc`, and "a program that does not serve" is `cmd /c exit
//! 0` where Unix runs `true`. Unix-only trials: none.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use libtest_mimic::{Arguments, Failed, Trial};
use serde::{Deserialize, Serialize};
#[cfg(unix)]
use utility_process::unix::ExitStatusExt as _;
#[cfg(windows)]
use utility_process::windows::ExitStatusExt as _;
use utility_process::{init, Entry, ExitStatus, ForkOptions, ParentPort, Stdio};
use utility_process_pool::{
    serve, serve_blocking, serve_with_init, BuildError, CancelToken, Metrics, Pool, RunOptions,
    ServeError, StartError, StartFailure, Stop, TaskContext, TaskError, WhenFull, Worker,
};

/// Longest wait for anything that should "eventually" happen.
const EVENTUALLY: Duration = Duration::from_secs(20);

/// What the test workers do, on command.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Job {
    /// Answer the number.
    Echo(u64),
    /// Answer the worker's pid.
    Pid,
    /// Write `note` on stderr, then abort (SIGABRT on Unix, a fast-fail exception on Windows).
    Crash { note: String },
    /// Abort unless the file exists (and create it): crashes once, then succeeds.
    CrashUnlessMarked { marker: PathBuf, value: u64 },
    /// Sleep (an await: a cancellation drops it), then answer `value`.
    Sleep { ms: u64, value: u64 },
    /// Append a line to `file` (a visible side effect: one line per run), then sleep (an
    /// await) and answer `value`.
    AppendThenSleep { file: PathBuf, ms: u64, value: u64 },
    /// Hostile: post a reply to a task id it was not given (its own plus `offset`), then
    /// wait for the task's cancellation.
    AnswerAnotherTask { offset: u64 },
    /// Hostile: post a reply of `first` for its own task by hand, then answer `second`
    /// as usual: two answers to one task.
    AnswerTwice { first: u8, second: u64 },
    /// Wait for the task's cancellation, then answer 0.
    UntilCancelled,
    /// Block the worker's thread for ever: ignores cancellation.
    HangIgnoringCancel,
    /// Fail with this message.
    Fail(String),
    /// Panic with this message.
    Panic(String),
    /// Create a file in `dir`, wait until `dir` holds `count` files, answer the pid: tasks
    /// that can only all finish if they all run at once.
    Rendezvous { dir: PathBuf, count: usize },
}

async fn handle(job: Job, ctx: TaskContext) -> Result<u64, String> {
    match job {
        Job::Echo(n) => Ok(n),
        Job::Pid => Ok(u64::from(std::process::id())),
        Job::Crash { note } => {
            // More than a pipe holds: a pool that does not drain stdout would hang here.
            println!("{}", "x".repeat(200_000));
            eprintln!("{note}");
            std::process::abort()
        }
        Job::CrashUnlessMarked { marker, value } => {
            if std::fs::metadata(&marker).is_err() {
                std::fs::write(&marker, b"crashed once").map_err(|e| e.to_string())?;
                std::process::abort()
            }
            Ok(value)
        }
        Job::Sleep { ms, value } => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(value)
        }
        Job::AppendThenSleep { file, ms, value } => {
            use std::io::Write;
            let mut out = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&file)
                .map_err(|e| e.to_string())?;
            writeln!(out, "ran in {}", std::process::id()).map_err(|e| e.to_string())?;
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(value)
        }
        Job::AnswerAnotherTask { offset } => {
            post_forged_reply(ctx.id() + offset, 1)?;
            ctx.cancelled().await;
            Ok(0)
        }
        Job::AnswerTwice { first, second } => {
            post_forged_reply(ctx.id(), first)?;
            Ok(second)
        }
        Job::UntilCancelled => {
            ctx.cancelled().await;
            Ok(0)
        }
        Job::HangIgnoringCancel => loop {
            std::thread::sleep(Duration::from_secs(3600));
        },
        Job::Fail(message) => Err(message),
        Job::Panic(message) => panic!("{message}"),
        Job::Rendezvous { dir, count } => {
            std::fs::write(
                dir.join(format!("{}-{}", std::process::id(), ctx.id())),
                b"",
            )
            .map_err(|e| e.to_string())?;
            let deadline = tokio::time::Instant::now() + EVENTUALLY;
            while std::fs::read_dir(&dir).map_err(|e| e.to_string())?.count() < count {
                if tokio::time::Instant::now() > deadline {
                    return Err("the others never came".into());
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Ok(u64::from(std::process::id()))
        }
    }
}

/// Posts, by hand, the pool's reply frame for task `id` with the value `value` (below 128,
/// its MessagePack encoding is the one byte): kind `0x12`, the id little-endian, the body.
fn post_forged_reply(id: u64, value: u8) -> Result<(), String> {
    assert!(value < 0x80);
    let mut frame = vec![0x12];
    frame.extend_from_slice(&id.to_le_bytes());
    frame.push(value);
    let port = utility_process::parent_port().map_err(|e| e.to_string())?;
    port.post_bytes(&frame).map_err(|e| e.to_string())
}

async fn worker(port: ParentPort) -> Result<(), ServeError> {
    serve(port, handle).await
}

fn blocking_worker(port: ParentPort) -> Result<(), ServeError> {
    serve_blocking(port, |job: Job, ctx: &TaskContext| match job {
        Job::Echo(n) => Ok(n),
        Job::Panic(message) => panic!("{message}"),
        Job::UntilCancelled => {
            while !ctx.is_cancelled() {
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(0)
        }
        other => Err(format!("the blocking worker does not do {other:?}")),
    })
}

const INIT_FAILURE: &str = "the model file is missing";

async fn failing_init(port: ParentPort) -> Result<(), ServeError> {
    serve_with_init(port, || async {
        Err::<fn(Job, TaskContext) -> std::future::Ready<Result<u64, String>>, _>(INIT_FAILURE)
    })
    .await
}

const EARLY_DEATH: &str = "dies-before-ready marker";

fn dies_at_start(_port: ParentPort) -> Result<(), ServeError> {
    eprintln!("{EARLY_DEATH}");
    std::process::exit(3)
}

/// Posts something that is not the pool's ready message, then waits.
fn babbler(port: ParentPort) -> Result<(), utility_process::Error> {
    port.post_message(&"hello, I am not a pool worker")?;
    while port.recv_blocking().is_some() {}
    Ok(())
}

fn never_ready(_port: ParentPort) -> Result<(), ServeError> {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// The role of the process `parent_killed_leaves_no_pool_worker` kills.
const PARENT_ROLE: &str = "POOL_TEST_PARENT_DIR";

/// The trials, named after their functions.
macro_rules! trials {
    ($($name:ident),* $(,)?) => {
        vec![$(Trial::test(stringify!($name), $name)),*]
    };
}

fn main() {
    init([
        Entry::new("worker", worker),
        Entry::blocking("blocking_worker", blocking_worker),
        Entry::new("failing_init", failing_init),
        Entry::blocking("dies_at_start", dies_at_start),
        Entry::blocking("never_ready", never_ready),
        Entry::blocking("babbler", babbler),
    ]);
    if let Some(dir) = std::env::var_os(PARENT_ROLE) {
        pool_parent(Path::new(&dir));
    }
    let trials = trials![
        replies_come_back_to_the_task_that_asked,
        crash_fails_only_the_tasks_on_that_worker,
        retry_is_opt_in_per_task,
        a_task_that_keeps_crashing_is_failed_as_poison,
        failing_initializer_trips_the_breaker_not_a_respawn_loop,
        a_worker_that_dies_before_ready_reports_its_exit_and_stderr,
        a_worker_not_ready_in_time_is_a_start_failure,
        an_unknown_entry_point_is_a_start_failure_with_the_fork_error,
        a_program_that_does_not_serve_is_a_start_failure,
        a_worker_that_does_not_speak_the_protocol_is_a_start_failure,
        dropping_every_handle_ends_the_workers,
        a_full_queue_rejects_at_once_with_the_reject_policy,
        a_full_queue_makes_the_caller_wait_with_the_wait_policy,
        queue_run_and_total_deadlines_are_reported_apart,
        dropping_the_future_removes_a_queued_task_and_stops_a_running_one,
        a_cancel_token_removes_a_queued_task_and_stops_a_running_one_cooperatively,
        a_task_that_ignores_cancellation_has_its_worker_killed_after_the_grace,
        a_started_neighbour_of_a_task_killed_for_ignoring_cancellation_runs_once_and_fails,
        a_started_neighbour_of_a_task_killed_for_ignoring_cancellation_runs_again_with_retries,
        a_request_too_large_for_the_port_is_a_send_error_and_the_pool_goes_on,
        a_worker_that_answers_a_task_it_was_not_given_is_killed_and_its_task_resolves,
        a_worker_that_answers_a_task_twice_is_killed_and_the_task_resolves_once,
        close_finishes_running_and_queued_tasks_rejects_new_ones_and_leaves_no_worker,
        forced_close_cancels_queued_tasks_and_leaves_no_worker,
        parent_killed_leaves_no_pool_worker,
        a_worker_is_recycled_after_its_maximum_number_of_tasks,
        a_worker_is_recycled_once_it_reaches_its_maximum_age,
        workers_above_the_minimum_are_stopped_when_idle,
        without_prewarm_workers_start_with_the_first_task,
        several_tasks_run_at_once_on_one_worker_when_opted_in,
        a_reply_that_does_not_decode_is_an_error_and_the_worker_lives_on,
        a_handler_error_reaches_the_caller_and_the_worker_lives_on,
        a_panicking_async_handler_fails_its_task_as_a_crash_carrying_the_panic,
        a_panicking_blocking_handler_fails_its_task_as_a_crash_carrying_the_panic,
        a_request_that_cannot_be_encoded_is_an_error_at_once,
        metrics_show_queue_depth_busy_workers_and_times,
        metrics_count_a_task_before_its_caller_has_the_answer,
        metrics_show_the_ready_workers_once_ready_returns,
        worker_pids_are_the_live_workers_and_follow_replacements_and_close,
        the_blocking_worker_answers_and_stops_on_cancellation,
        build_refuses_contradictory_options_and_a_missing_runtime,
    ];
    libtest_mimic::run(&Arguments::from_args(), trials).exit();
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Runs a trial's body on a runtime of its own, failing it if it takes longer than a minute.
fn block_on<F>(body: F) -> Result<(), Failed>
where
    F: std::future::Future<Output = Result<(), Failed>>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failed::from(format!("runtime: {e}")))?;
    runtime.block_on(async {
        match tokio::time::timeout(Duration::from_secs(60), body).await {
            Ok(outcome) => outcome,
            Err(_) => Err("the trial did not finish within 60 s".into()),
        }
    })
}

/// As [`block_on`], on a runtime with two threads: the caller and the pool's dispatcher
/// run at the same time, so what the caller sees is not ordered by a single thread.
fn block_on_threads<F>(body: F) -> Result<(), Failed>
where
    F: std::future::Future<Output = Result<(), Failed>> + Send + 'static,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failed::from(format!("runtime: {e}")))?;
    runtime.block_on(async {
        match tokio::time::timeout(Duration::from_secs(60), tokio::spawn(body)).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(e)) => Err(format!("the trial panicked: {e}").into()),
            Err(_) => Err("the trial did not finish within 60 s".into()),
        }
    })
}

/// A builder for the `worker` entry with `n` workers.
fn pool(n: usize) -> utility_process_pool::PoolBuilder<Job, u64> {
    Pool::builder(Worker::entry("worker")).workers(n)
}

fn fail(what: impl std::fmt::Display) -> Failed {
    Failed::from(what.to_string())
}

/// Waits (at most [`EVENTUALLY`]) until the pool's metrics satisfy `condition`.
async fn until<Req, Rep>(
    pool: &Pool<Req, Rep>,
    what: &str,
    condition: impl Fn(&Metrics) -> bool,
) -> Result<Metrics, Failed> {
    let deadline = tokio::time::Instant::now() + EVENTUALLY;
    loop {
        let metrics = pool.metrics();
        if condition(&metrics) {
            return Ok(metrics);
        }
        if tokio::time::Instant::now() > deadline {
            return Err(fail(format!("never {what}: {metrics:?}")));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Starts a task in the background.
fn spawn(
    pool: &Pool<Job, u64>,
    job: Job,
    options: RunOptions,
) -> tokio::task::JoinHandle<Result<u64, TaskError>> {
    let pool = pool.clone();
    tokio::spawn(async move { pool.run_with(&job, options).await })
}

async fn join<T>(handle: tokio::task::JoinHandle<T>) -> Result<T, Failed> {
    match tokio::time::timeout(EVENTUALLY, handle).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(fail(format!("the task panicked: {e}"))),
        Err(_) => Err(fail("a task never ended")),
    }
}

/// A fresh, empty directory for this trial.
fn scratch(name: &str) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "upool-{}-{name}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a scratch directory");
    dir
}

/// The pids of the pool's `n` workers, found by running `n` tasks that meet.
async fn worker_pids(pool: &Pool<Job, u64>, n: usize) -> Result<Vec<u32>, Failed> {
    let dir = scratch("pids");
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            spawn(
                pool,
                Job::Rendezvous {
                    dir: dir.clone(),
                    count: n,
                },
                RunOptions::new(),
            )
        })
        .collect();
    let mut pids = Vec::new();
    for task in tasks {
        pids.push(join(task).await?.map_err(fail)? as u32);
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(pids)
}

/// The start failure `ready` ends with.
async fn start_failure(pool: &Pool<Job, u64>) -> Result<Arc<StartFailure>, Failed> {
    match pool.ready().await {
        Err(TaskError::WorkersFailing(failure)) => Ok(failure),
        other => Err(fail(format!("expected a start failure, got {other:?}"))),
    }
}

/// Whether process `pid` is gone: not running, not a zombie, reaped.
#[cfg(unix)]
fn is_gone(pid: u32) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists()
}

/// Whether process `pid` is gone: it has ended (Windows has no zombies to reap; a process
/// object outlives its process only while someone holds a handle to it).
#[cfg(windows)]
fn is_gone(pid: u32) -> bool {
    !win::running(pid)
}

/// Whether `status` is the end of a worker that aborted: SIGABRT on Unix.
#[cfg(unix)]
fn aborted(status: &ExitStatus) -> bool {
    status.signal().map(|s| s.as_raw()) == Some(libc::SIGABRT)
}

/// Whether `status` is the end of a worker that aborted: on Windows `std::process::abort` is
/// a fast fail, which ends the process with `STATUS_STACK_BUFFER_OVERRUN`.
#[cfg(windows)]
fn aborted(status: &ExitStatus) -> bool {
    status.exception() == Some(win::STATUS_STACK_BUFFER_OVERRUN)
}

/// How a crash report names an abort.
#[cfg(unix)]
const ABORT_NAME: &str = "SIGABRT";
#[cfg(windows)]
const ABORT_NAME: &str = "STATUS_STACK_BUFFER_OVERRUN";

async fn until_gone(pids: &[u32]) -> Result<(), Failed> {
    let deadline = tokio::time::Instant::now() + EVENTUALLY;
    while !pids.iter().all(|&pid| is_gone(pid)) {
        if tokio::time::Instant::now() > deadline {
            return Err(fail(format!("workers still alive: {pids:?}")));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// A task that holds one worker until the returned token is cancelled.
async fn hold(
    pool: &Pool<Job, u64>,
) -> Result<(CancelToken, tokio::task::JoinHandle<Result<u64, TaskError>>), Failed> {
    let before = pool.metrics().running;
    let token = CancelToken::new();
    let task = spawn(
        pool,
        Job::UntilCancelled,
        RunOptions::new().cancel(token.clone()),
    );
    until(pool, "running the holding task", |m| m.running > before).await?;
    Ok((token, task))
}

// ---------------------------------------------------------------------------------------------
// Replies
// ---------------------------------------------------------------------------------------------

fn replies_come_back_to_the_task_that_asked() -> Result<(), Failed> {
    block_on(async {
        let pool = pool(2).concurrency_per_worker(3).build()?;
        let tasks: Vec<_> = (0..60u64)
            .map(|i| {
                (
                    i,
                    spawn(
                        &pool,
                        Job::Sleep {
                            ms: i % 3,
                            value: i * 7,
                        },
                        RunOptions::new(),
                    ),
                )
            })
            .collect();
        for (i, task) in tasks {
            assert_eq!(join(task).await?.map_err(fail)?, i * 7);
        }
        pool.close().await;
        Ok(())
    })
}

fn a_handler_error_reaches_the_caller_and_the_worker_lives_on() -> Result<(), Failed> {
    block_on(async {
        let pool = pool(1).build()?;
        match pool.run(&Job::Fail("bad input".into())).await {
            Err(TaskError::Failed { message, pid, .. }) => {
                assert_eq!(message, "bad input");
                assert!(pid > 0);
            }
            other => return Err(fail(format!("expected Failed, got {other:?}"))),
        }
        assert_eq!(pool.run(&Job::Echo(5)).await?, 5);
        assert_eq!(pool.metrics().workers_started, 1);
        pool.close().await;
        Ok(())
    })
}

/// Runs a panicking task on a one-worker pool of `entry`: it must fail as a crash that
/// carries the panic's message, and the worker must be replaced.
async fn panic_is_a_crash(entry: &str) -> Result<(), Failed> {
    let pool = Pool::<Job, u64>::builder(Worker::entry(entry))
        .workers(1)
        .fork_options(ForkOptions::default().stderr(Stdio::Ignore))
        .build()?;
    let note = "handler panic: marker 91c2";
    let outcome = tokio::time::timeout(EVENTUALLY, pool.run(&Job::Panic(note.into())))
        .await
        .map_err(|_| fail("the panicking task never resolved"))?;
    match outcome {
        Err(TaskError::WorkerCrashed(crash)) => match crash.cause.as_deref() {
            Some(utility_process::Error::Panicked { panic, .. }) => {
                assert_eq!(panic.message, note);
                assert!(crash.to_string().contains(note), "{crash}");
            }
            other => {
                return Err(fail(format!(
                    "expected a panic as the cause, got {other:?}"
                )))
            }
        },
        other => return Err(fail(format!("expected WorkerCrashed, got {other:?}"))),
    }
    assert_eq!(pool.run(&Job::Echo(6)).await?, 6, "a replacement serves");
    assert_eq!(pool.metrics().workers_started, 2);
    pool.close().await;
    Ok(())
}

fn a_panicking_async_handler_fails_its_task_as_a_crash_carrying_the_panic() -> Result<(), Failed> {
    block_on(panic_is_a_crash("worker"))
}

fn a_panicking_blocking_handler_fails_its_task_as_a_crash_carrying_the_panic() -> Result<(), Failed>
{
    block_on(panic_is_a_crash("blocking_worker"))
}

fn a_reply_that_does_not_decode_is_an_error_and_the_worker_lives_on() -> Result<(), Failed> {
    block_on(async {
        let pool = Pool::<Job, String>::builder(Worker::entry("worker"))
            .workers(1)
            .build()?;
        for _ in 0..2 {
            match pool.run(&Job::Echo(1)).await {
                Err(TaskError::Decode { .. }) => {}
                other => return Err(fail(format!("expected Decode, got {other:?}"))),
            }
        }
        let m = pool.metrics();
        assert_eq!(m.workers_started, 1);
        assert_eq!(
            (m.completed, m.failed),
            (0, 2),
            "a reply that does not decode is a failure"
        );
        pool.close().await;
        Ok(())
    })
}

/// A request whose `Serialize` fails.
struct Unencodable;

impl Serialize for Unencodable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom(
            "this value refuses to be encoded",
        ))
    }
}

fn a_request_that_cannot_be_encoded_is_an_error_at_once() -> Result<(), Failed> {
    block_on(async {
        let pool = Pool::<Unencodable, u64>::builder(Worker::entry("worker"))
            .workers(1)
            .prewarm(false)
            .build()?;
        match pool.run(&Unencodable).await {
            Err(TaskError::Encode(_)) => {}
            other => return Err(fail(format!("expected Encode, got {other:?}"))),
        }
        assert_eq!(pool.metrics().workers_started, 0, "nothing was queued");
        pool.close().await;
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------------
// Crashes
// ---------------------------------------------------------------------------------------------

fn crash_fails_only_the_tasks_on_that_worker() -> Result<(), Failed> {
    block_on(async {
        let pool = pool(2)
            .fork_options(ForkOptions::default().stdio(Stdio::Pipe))
            .build()?;
        pool.ready().await.map_err(fail)?;
        let note = "about to crash: marker 7f3a".to_owned();
        let crash = spawn(&pool, Job::Crash { note: note.clone() }, RunOptions::new());
        let others: Vec<_> = (0..20)
            .map(|i| spawn(&pool, Job::Sleep { ms: 5, value: i }, RunOptions::new()))
            .collect();
        match join(crash).await? {
            Err(TaskError::WorkerCrashed(crash)) => {
                assert!(aborted(&crash.status), "{:?}", crash.status);
                let tail = crash.stderr_tail.clone().unwrap_or_default();
                assert!(tail.contains(&note), "stderr tail {tail:?} lacks the note");
                assert!(crash.to_string().contains(ABORT_NAME), "{crash}");
            }
            other => return Err(fail(format!("expected WorkerCrashed, got {other:?}"))),
        }
        for (i, task) in others.into_iter().enumerate() {
            assert_eq!(join(task).await?.map_err(fail)?, i as u64);
        }
        let metrics = until(&pool, "back to two ready workers", |m| {
            m.idle_workers == 2 && m.workers == 2
        })
        .await?;
        assert_eq!(metrics.workers_started, 3, "one replacement: {metrics:?}");
        assert_eq!(metrics.crashes, 1);
        pool.close().await;
        Ok(())
    })
}

fn retry_is_opt_in_per_task() -> Result<(), Failed> {
    block_on(async {
        let dir = scratch("retry");
        let pool = pool(1).build()?;
        let job = |name: &str| Job::CrashUnlessMarked {
            marker: dir.join(name),
            value: 11,
        };
        match pool.run(&job("no-retry")).await {
            Err(TaskError::WorkerCrashed(_)) => {}
            other => {
                return Err(fail(format!(
                    "without retries: expected WorkerCrashed, got {other:?}"
                )))
            }
        }
        let retried = pool
            .run_with(&job("retry"), RunOptions::new().retries(1))
            .await
            .map_err(fail)?;
        assert_eq!(retried, 11);
        assert_eq!(pool.metrics().crashes, 2);
        pool.close().await;
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    })
}

fn a_task_that_keeps_crashing_is_failed_as_poison() -> Result<(), Failed> {
    block_on(async {
        let pool = pool(1)
            .poison_after(2)
            .fork_options(ForkOptions::default().stdio(Stdio::Ignore))
            .build()?;
        let job = Job::Crash {
            note: "poison".into(),
        };
        match pool.run_with(&job, RunOptions::new().retries(100)).await {
            Err(TaskError::Poisoned { crashes, last }) => {
                assert_eq!(crashes, 2);
                assert!(aborted(&last.status), "{:?}", last.status);
            }
            other => return Err(fail(format!("expected Poisoned, got {other:?}"))),
        }
        assert_eq!(pool.metrics().crashes, 2);
        assert_eq!(pool.run(&Job::Echo(3)).await?, 3, "the pool still works");
        pool.close().await;
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------------
// Start failures
// ---------------------------------------------------------------------------------------------

fn failing_initializer_trips_the_breaker_not_a_respawn_loop() -> Result<(), Failed> {
    block_on(async {
        let pool = Pool::<Job, u64>::builder(Worker::entry("failing_init"))
            .workers(2)
            .fork_options(ForkOptions::default().stderr(Stdio::Ignore))
            .breaker(3, Duration::from_secs(60))
            .build()?;
        let failure = start_failure(&pool).await?;
        assert!(failure.failures >= 3, "{failure}");
        match &failure.reason {
            StartError::Init { message, .. } => assert_eq!(message, INIT_FAILURE),
            other => return Err(fail(format!("expected Init, got {other:?}"))),
        }
        match pool.run(&Job::Echo(1)).await {
            Err(TaskError::WorkersFailing(f)) => {
                assert!(f.to_string().contains(INIT_FAILURE), "{f}")
            }
            other => return Err(fail(format!("expected WorkersFailing, got {other:?}"))),
        }
        // While the breaker is open, nothing is started: the count stays put.
        let tripped = until(&pool, "no worker left", |m| m.workers == 0).await?;
        assert!(tripped.breaker_open);
        assert!(
            tripped.workers_started <= 4,
            "at most the threshold plus one more in flight: {tripped:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(pool.metrics().workers_started, tripped.workers_started);
        pool.close().await;
        Ok(())
    })
}

fn a_worker_that_dies_before_ready_reports_its_exit_and_stderr() -> Result<(), Failed> {
    block_on(async {
        let pool = Pool::<Job, u64>::builder(Worker::entry("dies_at_start"))
            .workers(1)
            .fork_options(ForkOptions::default().stderr(Stdio::Pipe))
            .breaker(1, Duration::from_secs(60))
            .build()?;
        let failure = start_failure(&pool).await?;
        match &failure.reason {
            StartError::Exited {
                status,
                stderr_tail,
                ..
            } => {
                assert_eq!(status.code(), Some(3));
                let tail = stderr_tail.clone().unwrap_or_default();
                assert!(tail.contains(EARLY_DEATH), "{tail:?}");
            }
            other => return Err(fail(format!("expected Exited, got {other:?}"))),
        }
        assert!(failure.to_string().contains(EARLY_DEATH), "{failure}");
        pool.close().await;
        Ok(())
    })
}

fn a_worker_not_ready_in_time_is_a_start_failure() -> Result<(), Failed> {
    block_on(async {
        let pool = Pool::<Job, u64>::builder(Worker::entry("never_ready"))
            .workers(1)
            .start_timeout(Duration::from_millis(300))
            .fork_options(ForkOptions::default().kill_grace(Duration::from_millis(100)))
            .breaker(1, Duration::from_secs(60))
            .build()?;
        let failure = start_failure(&pool).await?;
        assert!(
            matches!(failure.reason, StartError::NotReady { .. }),
            "{failure:?}"
        );
        pool.close().await;
        assert_eq!(pool.metrics().workers, 0);
        Ok(())
    })
}

fn an_unknown_entry_point_is_a_start_failure_with_the_fork_error() -> Result<(), Failed> {
    block_on(async {
        let pool = Pool::<Job, u64>::builder(Worker::entry("no-such-entry"))
            .workers(1)
            .build()?;
        let failure = start_failure(&pool).await?;
        match &failure.reason {
            StartError::Fork(error) => {
                assert!(error.to_string().contains("no-such-entry"), "{error}")
            }
            other => return Err(fail(format!("expected Fork, got {other:?}"))),
        }
        assert_eq!(
            failure.failures,
            utility_process_pool::DEFAULT_BREAKER_THRESHOLD
        );
        pool.close().await;
        Ok(())
    })
}

fn a_program_that_does_not_serve_is_a_start_failure() -> Result<(), Failed> {
    block_on(async {
        let pool = Pool::<Job, u64>::builder(exits_at_once())
            .workers(1)
            .breaker(2, Duration::from_secs(60))
            .build()?;
        let failure = start_failure(&pool).await?;
        match &failure.reason {
            StartError::Exited { status, .. } => assert_eq!(status.code(), Some(0)),
            other => return Err(fail(format!("expected Exited, got {other:?}"))),
        }
        assert_eq!(pool.metrics().workers_started, 2);
        pool.close().await;
        Ok(())
    })
}

/// A program that exits 0 at once, without a word to its parent.
#[cfg(unix)]
fn exits_at_once() -> Worker {
    Worker::program("true")
}

/// A program that exits 0 at once, without a word to its parent.
#[cfg(windows)]
fn exits_at_once() -> Worker {
    let shell = std::env::var_os("COMSPEC").unwrap_or_else(|| "cmd.exe".into());
    Worker::program(shell).args(["/c", "exit 0"])
}

fn a_worker_that_does_not_speak_the_protocol_is_a_start_failure() -> Result<(), Failed> {
    block_on(async {
        let pool = Pool::<Job, u64>::builder(Worker::entry("babbler"))
            .workers(1)
            .breaker(1, Duration::from_secs(60))
            .build()?;
        let failure = start_failure(&pool).await?;
        match &failure.reason {
            StartError::Protocol { what, .. } => {
                assert!(what.contains("not a pool frame"), "{what}")
            }
            other => return Err(fail(format!("expected Protocol, got {other:?}"))),
        }
        pool.close().await;
        Ok(())
    })
}

fn dropping_every_handle_ends_the_workers() -> Result<(), Failed> {
    block_on(async {
        let pool = pool(2).build()?;
        pool.ready().await.map_err(fail)?;
        let pids = worker_pids(&pool, 2).await?;
        let copy = pool.clone();
        drop(pool);
        drop(copy);
        until_gone(&pids).await
    })
}

// ---------------------------------------------------------------------------------------------
// The queue
// ---------------------------------------------------------------------------------------------

fn a_full_queue_rejects_at_once_with_the_reject_policy() -> Result<(), Failed> {
    block_on(async {
        let pool = pool(1)
            .queue_capacity(1)
            .when_full(WhenFull::Reject)
            .build()?;
        let (token, held) = hold(&pool).await?;
        let queued = spawn(&pool, Job::Echo(1), RunOptions::new());
        until(&pool, "one task queued", |m| m.queued == 1).await?;
        match pool.run(&Job::Echo(2)).await {
            Err(TaskError::QueueFull { capacity: 1, .. }) => {}
            other => return Err(fail(format!("expected QueueFull, got {other:?}"))),
        }
        token.cancel();
        assert!(matches!(
            join(held).await?,
            Err(TaskError::Cancelled { .. })
        ));
        assert_eq!(join(queued).await?.map_err(fail)?, 1);
        pool.close().await;
        Ok(())
    })
}

fn a_full_queue_makes_the_caller_wait_with_the_wait_policy() -> Result<(), Failed> {
    block_on(async {
        let pool = pool(1)
            .queue_capacity(1)
            .when_full(WhenFull::Wait)
            .build()?;
        let (token, held) = hold(&pool).await?;
        let queued = spawn(&pool, Job::Echo(1), RunOptions::new());
        until(&pool, "one task queued", |m| m.queued == 1).await?;
        let mut waiting = spawn(&pool, Job::Echo(2), RunOptions::new());
        // The worker is held: the third task cannot finish, it waits for room.
        assert!(
            tokio::time::timeout(Duration::from_millis(200), &mut waiting)
                .await
                .is_err()
        );
        assert_eq!(pool.metrics().queued, 1, "the waiting task is not queued");
        token.cancel();
        let _ = join(held).await?;
        assert_eq!(join(queued).await?.map_err(fail)?, 1);
        assert_eq!(join(waiting).await?.map_err(fail)?, 2);
        pool.close().await;
        Ok(())
    })
}

fn queue_run_and_total_deadlines_are_reported_apart() -> Result<(), Failed> {
    block_on(async {
        let limit = Duration::from_millis(200);
        let pool = pool(1).cancel_grace(Duration::from_millis(300)).build()?;
        pool.ready().await.map_err(fail)?;

        let (token, held) = hold(&pool).await?;
        match pool
            .run_with(&Job::Echo(1), RunOptions::new().queue_timeout(limit))
            .await
        {
            Err(TaskError::QueueTimeout { limit: l, waited }) => {
                assert_eq!(l, limit);
                assert!(waited >= limit);
            }
            other => return Err(fail(format!("expected QueueTimeout, got {other:?}"))),
        }
        token.cancel();
        let _ = join(held).await?;

        let sleepy = Job::Sleep {
            ms: 60_000,
            value: 0,
        };
        match pool
            .run_with(&sleepy, RunOptions::new().run_timeout(limit))
            .await
        {
            Err(TaskError::RunTimeout {
                limit: l,
                ran,
                stop,
                ..
            }) => {
                assert_eq!(l, limit);
                assert!(ran >= limit);
                assert_eq!(stop, Stop::Cooperatively);
            }
            other => return Err(fail(format!("expected RunTimeout, got {other:?}"))),
        }
        match pool
            .run_with(
                &Job::HangIgnoringCancel,
                RunOptions::new().run_timeout(limit),
            )
            .await
        {
            Err(TaskError::RunTimeout { stop, .. }) => {
                assert!(matches!(stop, Stop::Killed { .. }), "{stop:?}")
            }
            other => return Err(fail(format!("expected RunTimeout, got {other:?}"))),
        }
        match pool
            .run_with(&sleepy, RunOptions::new().total_timeout(limit))
            .await
        {
            Err(TaskError::TotalTimeout {
                limit: l,
                ran,
                stop,
                ..
            }) => {
                assert_eq!(l, limit);
                assert!(ran.is_some());
                assert_eq!(stop, Some(Stop::Cooperatively));
            }
            other => return Err(fail(format!("expected TotalTimeout, got {other:?}"))),
        }
        assert_eq!(pool.run(&Job::Echo(9)).await?, 9, "the pool still works");
        assert_eq!(pool.metrics().workers_started, 2, "one worker was killed");
        pool.close().await;
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------------
// Cancellation
// ---------------------------------------------------------------------------------------------

fn dropping_the_future_removes_a_queued_task_and_stops_a_running_one() -> Result<(), Failed> {
    block_on(async {
        let pool = pool(1).build()?;
        let (token, held) = hold(&pool).await?;
        let dropped =
            tokio::time::timeout(Duration::from_millis(100), pool.run(&Job::Echo(5))).await;
        assert!(
            dropped.is_err(),
            "the worker is held: the task cannot have run"
        );
        until(&pool, "the dropped task removed", |m| {
            m.queued == 0 && m.failed == 1
        })
        .await?;
        token.cancel();
        let _ = join(held).await?;

        let sleepy = Job::Sleep {
            ms: 60_000,
            value: 0,
        };
        let dropped = tokio::time::timeout(Duration::from_millis(200), pool.run(&sleepy)).await;
        assert!(dropped.is_err());
        let metrics = until(&pool, "the dropped running task stopped", |m| {
            m.running == 0 && m.idle_workers == 1
        })
        .await?;
        assert_eq!(
            metrics.workers_started, 1,
            "it stopped cooperatively: no kill"
        );
        assert_eq!(pool.run(&Job::Echo(6)).await?, 6);
        pool.close().await;
        Ok(())
    })
}

fn a_cancel_token_removes_a_queued_task_and_stops_a_running_one_cooperatively() -> Result<(), Failed>
{
    block_on(async {
        let pool = pool(1).build()?;
        let (token, held) = hold(&pool).await?;
        let queued_token = CancelToken::new();
        let queued = spawn(
            &pool,
            Job::Echo(1),
            RunOptions::new().cancel(queued_token.clone()),
        );
        until(&pool, "one task queued", |m| m.queued == 1).await?;
        queued_token.cancel();
        match join(queued).await? {
            Err(TaskError::Cancelled {
                stop: None,
                ran: None,
                ..
            }) => {}
            other => return Err(fail(format!("expected a queued cancel, got {other:?}"))),
        }
        token.cancel();
        match join(held).await? {
            Err(TaskError::Cancelled {
                stop: Some(Stop::Cooperatively),
                ran: Some(_),
                ..
            }) => {}
            other => {
                return Err(fail(format!(
                    "expected a cooperative cancel, got {other:?}"
                )))
            }
        }
        assert_eq!(pool.metrics().workers_started, 1);
        pool.close().await;
        Ok(())
    })
}

fn a_task_that_ignores_cancellation_has_its_worker_killed_after_the_grace() -> Result<(), Failed> {
    block_on(async {
        let pool = pool(1).cancel_grace(Duration::from_millis(300)).build()?;
        pool.ready().await.map_err(fail)?;
        let pid = worker_pids(&pool, 1).await?[0];
        let token = CancelToken::new();
        let task = spawn(
            &pool,
            Job::HangIgnoringCancel,
            RunOptions::new().cancel(token.clone()),
        );
        until(&pool, "running", |m| m.running == 1).await?;
        token.cancel();
        match join(task).await? {
            Err(TaskError::Cancelled {
                stop: Some(Stop::Killed { grace }),
                ..
            }) => assert_eq!(grace, Duration::from_millis(300)),
            other => return Err(fail(format!("expected a kill, got {other:?}"))),
        }
        until_gone(&[pid]).await?;
        until(&pool, "a replacement ready", |m| m.idle_workers == 1).await?;
        assert_eq!(pool.run(&Job::Echo(4)).await?, 4);
        pool.close().await;
        Ok(())
    })
}

/// How many times `file` says its task ran.
fn runs(file: &Path) -> usize {
    std::fs::read_to_string(file).map_or(0, |text| text.lines().count())
}

/// On a one-worker pool with two slots: a neighbour task starts (and says so in a file), then
/// a task that ignores its cancellation joins it, is cancelled, and has the worker killed
/// under both. Returns the neighbour's outcome and how many times it ran.
async fn neighbour_of_a_killed_task(
    options: RunOptions,
) -> Result<(Result<u64, TaskError>, usize, Metrics), Failed> {
    let dir = scratch("neighbour");
    let file = dir.join("runs");
    let pool = pool(1)
        .concurrency_per_worker(2)
        .cancel_grace(Duration::from_millis(300))
        .build()?;
    pool.ready().await.map_err(fail)?;
    let neighbour = spawn(
        &pool,
        Job::AppendThenSleep {
            file: file.clone(),
            ms: 500,
            value: 21,
        },
        options,
    );
    let deadline = tokio::time::Instant::now() + EVENTUALLY;
    while runs(&file) == 0 {
        if tokio::time::Instant::now() > deadline {
            return Err(fail("the neighbour never started"));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let token = CancelToken::new();
    // Sent to the same worker, whose thread it blocks: the neighbour cannot finish there.
    let hang = spawn(
        &pool,
        Job::HangIgnoringCancel,
        RunOptions::new().cancel(token.clone()),
    );
    until(&pool, "both on the worker", |m| m.running == 2).await?;
    token.cancel();
    match join(hang).await? {
        Err(TaskError::Cancelled {
            stop: Some(Stop::Killed { .. }),
            ..
        }) => {}
        other => return Err(fail(format!("expected a kill, got {other:?}"))),
    }
    let outcome = join(neighbour).await?;
    // Time for a second run to show, had it been started.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ran = runs(&file);
    let metrics = pool.metrics();
    pool.close().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok((outcome, ran, metrics))
}

fn a_started_neighbour_of_a_task_killed_for_ignoring_cancellation_runs_once_and_fails(
) -> Result<(), Failed> {
    block_on(async {
        let (outcome, ran, metrics) = neighbour_of_a_killed_task(RunOptions::new()).await?;
        assert_eq!(ran, 1, "without retries the neighbour ran {ran} times");
        match outcome {
            Err(TaskError::WorkerCrashed(crash)) => assert!(
                crash.to_string().contains("ignored its cancellation"),
                "the error says why its worker was killed: {crash}"
            ),
            other => return Err(fail(format!("expected WorkerCrashed, got {other:?}"))),
        }
        assert_eq!(
            metrics.crashes, 0,
            "the neighbour is not blamed: {metrics:?}"
        );
        Ok(())
    })
}

fn a_started_neighbour_of_a_task_killed_for_ignoring_cancellation_runs_again_with_retries(
) -> Result<(), Failed> {
    block_on(async {
        let (outcome, ran, metrics) =
            neighbour_of_a_killed_task(RunOptions::new().retries(1)).await?;
        assert_eq!(outcome.map_err(fail)?, 21, "it ran again, elsewhere");
        assert_eq!(ran, 2);
        assert_eq!(metrics.crashes, 0, "not blamed: {metrics:?}");
        assert_eq!(metrics.workers_started, 2);
        Ok(())
    })
}

fn a_request_too_large_for_the_port_is_a_send_error_and_the_pool_goes_on() -> Result<(), Failed> {
    block_on(async {
        let pool = pool(1)
            .fork_options(ForkOptions::default().max_message_size(1024))
            .build()?;
        match pool.run(&Job::Fail("x".repeat(4096))).await {
            Err(TaskError::Send { source, .. }) => assert!(
                matches!(*source, utility_process::Error::MessageTooLarge { .. }),
                "{source}"
            ),
            other => return Err(fail(format!("expected Send, got {other:?}"))),
        }
        assert_eq!(pool.run(&Job::Echo(2)).await?, 2);
        assert_eq!(pool.metrics().workers_started, 1);
        pool.close().await;
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------------
// Hostile workers
// ---------------------------------------------------------------------------------------------

fn a_worker_that_answers_a_task_it_was_not_given_is_killed_and_its_task_resolves(
) -> Result<(), Failed> {
    block_on(async {
        let pool = pool(1).build()?;
        pool.ready().await.map_err(fail)?;
        let pid = worker_pids(&pool, 1).await?[0];
        let outcome = tokio::time::timeout(
            EVENTUALLY,
            pool.run(&Job::AnswerAnotherTask { offset: 1_000_000 }),
        )
        .await
        .map_err(|_| fail("the task on the lying worker never resolved"))?;
        match outcome {
            Err(TaskError::WorkerCrashed(crash)) => {
                assert_eq!(crash.pid, pid);
                assert!(
                    crash.to_string().contains("broke the pool protocol"),
                    "{crash}"
                );
            }
            other => return Err(fail(format!("expected WorkerCrashed, got {other:?}"))),
        }
        until_gone(&[pid]).await?;
        assert_eq!(pool.run(&Job::Echo(9)).await?, 9, "a replacement serves");
        pool.close().await;
        Ok(())
    })
}

fn a_worker_that_answers_a_task_twice_is_killed_and_the_task_resolves_once() -> Result<(), Failed> {
    block_on(async {
        let pool = pool(1).build()?;
        pool.ready().await.map_err(fail)?;
        let pid = worker_pids(&pool, 1).await?[0];
        let job = Job::AnswerTwice {
            first: 5,
            second: 6,
        };
        assert_eq!(pool.run(&job).await?, 5, "the first answer is the one");
        until_gone(&[pid]).await?;
        let m = until(&pool, "a replacement ready", |m| m.idle_workers == 1).await?;
        assert_eq!((m.completed, m.failed), (2, 0), "counted once: {m:?}");
        assert_eq!(m.workers_started, 2);
        assert_eq!(pool.run(&Job::Echo(9)).await?, 9);
        pool.close().await;
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------------
// Closing, and the parent's death
// ---------------------------------------------------------------------------------------------

fn close_finishes_running_and_queued_tasks_rejects_new_ones_and_leaves_no_worker(
) -> Result<(), Failed> {
    block_on(async {
        let pool = pool(2).build()?;
        pool.ready().await.map_err(fail)?;
        let pids = worker_pids(&pool, 2).await?;
        let tasks: Vec<_> = (0..5)
            .map(|i| spawn(&pool, Job::Sleep { ms: 100, value: i }, RunOptions::new()))
            .collect();
        until(&pool, "tasks running", |m| m.running == 2).await?;
        let closing = {
            let pool = pool.clone();
            tokio::spawn(async move { pool.close().await })
        };
        // `close` marks the pool closed before its first await: once the closing task has
        // run, a new task is refused, while the running ones still finish.
        tokio::task::yield_now().await;
        match pool.run(&Job::Echo(1)).await {
            Err(TaskError::Closed { .. }) => {}
            other => return Err(fail(format!("expected Closed, got {other:?}"))),
        }
        join(closing).await?;
        for (i, task) in tasks.into_iter().enumerate() {
            assert_eq!(join(task).await?.map_err(fail)?, i as u64);
        }
        assert_eq!(pool.metrics().workers, 0);
        for pid in pids {
            assert!(is_gone(pid), "worker {pid} is still there after close");
        }
        Ok(())
    })
}

fn forced_close_cancels_queued_tasks_and_leaves_no_worker() -> Result<(), Failed> {
    block_on(async {
        let pool = pool(1).cancel_grace(Duration::from_millis(200)).build()?;
        pool.ready().await.map_err(fail)?;
        let pids = worker_pids(&pool, 1).await?;
        let running = spawn(&pool, Job::HangIgnoringCancel, RunOptions::new());
        until(&pool, "running", |m| m.running == 1).await?;
        let queued: Vec<_> = (0..3)
            .map(|i| spawn(&pool, Job::Echo(i), RunOptions::new()))
            .collect();
        until(&pool, "queued", |m| m.queued == 3).await?;
        pool.close_now().await;
        match join(running).await? {
            Err(TaskError::Cancelled {
                stop: Some(Stop::Killed { .. }),
                ..
            }) => {}
            other => return Err(fail(format!("expected a killed task, got {other:?}"))),
        }
        for task in queued {
            match join(task).await? {
                Err(TaskError::Cancelled { stop: None, .. }) => {}
                other => return Err(fail(format!("expected a removed task, got {other:?}"))),
            }
        }
        assert_eq!(pool.metrics().workers, 0);
        for pid in pids {
            assert!(is_gone(pid), "worker {pid} is still there after close_now");
        }
        Ok(())
    })
}

/// The process `parent_killed_leaves_no_pool_worker` kills: builds a pool of two, writes its
/// workers' pids to `dir/pids`, and waits to be killed.
fn pool_parent(dir: &Path) -> ! {
    let outcome: Result<(), Failed> = block_on(async {
        let pool = pool(2).build()?;
        pool.ready().await.map_err(fail)?;
        let pids = worker_pids(&pool, 2).await?;
        let text: Vec<String> = pids.iter().map(u32::to_string).collect();
        std::fs::write(dir.join("pids.tmp"), text.join(" ")).map_err(fail)?;
        std::fs::rename(dir.join("pids.tmp"), dir.join("pids")).map_err(fail)?;
        std::future::pending::<()>().await;
        Ok(())
    });
    eprintln!("pool parent: {outcome:?}");
    std::process::exit(1)
}

fn parent_killed_leaves_no_pool_worker() -> Result<(), Failed> {
    let dir = scratch("parent");
    let mut parent = std::process::Command::new(std::env::current_exe().map_err(fail)?)
        .env(PARENT_ROLE, &dir)
        .stdin(std::process::Stdio::null())
        .spawn()
        .map_err(fail)?;
    let started = std::time::Instant::now();
    let pids = loop {
        if let Ok(text) = std::fs::read_to_string(dir.join("pids")) {
            break text
                .split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok())
                .collect::<Vec<_>>();
        }
        if started.elapsed() > EVENTUALLY || parent.try_wait().map_err(fail)?.is_some() {
            let _ = parent.kill();
            let _ = parent.wait();
            return Err(fail("the pool parent never reported its workers"));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(pids.len(), 2);
    assert!(
        pids.iter().all(|&pid| !is_gone(pid)),
        "workers {pids:?} are running"
    );
    parent.kill().map_err(fail)?; // SIGKILL or TerminateProcess: no destructor, no close
    parent.wait().map_err(fail)?;
    let killed = std::time::Instant::now();
    // The workers are the pool parent's children: once it is gone they are reparented, and
    // whoever reaps them then (init or a subreaper) may take a moment; "alive" is a process
    // that is not a zombie. On Windows the parent's death closes the workers' job objects,
    // whose kill-on-close ends them.
    while pids.iter().any(|&pid| alive(pid)) {
        if killed.elapsed() > EVENTUALLY {
            return Err(fail(format!("workers {pids:?} outlived their parent")));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Whether a process with this pid exists and is not a zombie.
#[cfg(windows)]
fn alive(pid: u32) -> bool {
    win::running(pid)
}

/// Whether a process with this pid exists and is not a zombie.
#[cfg(unix)]
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

// ---------------------------------------------------------------------------------------------
// Sizing
// ---------------------------------------------------------------------------------------------

fn a_worker_is_recycled_after_its_maximum_number_of_tasks() -> Result<(), Failed> {
    block_on(async {
        let pool = pool(1).max_tasks_per_worker(2).build()?;
        let mut pids = Vec::new();
        for _ in 0..4 {
            pids.push(pool.run(&Job::Pid).await?);
        }
        assert_eq!(pids[0], pids[1]);
        assert_eq!(pids[2], pids[3]);
        assert_ne!(pids[1], pids[2], "the worker was replaced after two tasks");
        until_gone(&[pids[0] as u32]).await?;
        pool.close().await;
        Ok(())
    })
}

fn a_worker_is_recycled_once_it_reaches_its_maximum_age() -> Result<(), Failed> {
    block_on(async {
        let pool = pool(1).max_worker_age(Duration::from_millis(300)).build()?;
        let first = pool.run(&Job::Pid).await?;
        until_gone(&[first as u32]).await?;
        let second = pool.run(&Job::Pid).await?;
        assert_ne!(first, second);
        pool.close().await;
        Ok(())
    })
}

fn workers_above_the_minimum_are_stopped_when_idle() -> Result<(), Failed> {
    block_on(async {
        let pool = pool(1)
            .min_workers(1)
            .max_workers(3)
            .idle_timeout(Duration::from_millis(300))
            .build()?;
        let pids = worker_pids(&pool, 3).await?;
        let mut distinct = pids.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(
            distinct.len(),
            3,
            "three tasks that meet need three workers"
        );
        let metrics = until(&pool, "back to the minimum", |m| m.workers == 1).await?;
        assert_eq!(metrics.idle_workers, 1);
        pool.close().await;
        Ok(())
    })
}

fn without_prewarm_workers_start_with_the_first_task() -> Result<(), Failed> {
    block_on(async {
        let pool = pool(2).prewarm(false).build()?;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(pool.metrics().workers_started, 0);
        assert_eq!(pool.run(&Job::Echo(1)).await?, 1);
        assert!(pool.metrics().workers_started >= 1);
        pool.close().await;
        Ok(())
    })
}

fn several_tasks_run_at_once_on_one_worker_when_opted_in() -> Result<(), Failed> {
    block_on(async {
        let pool = pool(1).concurrency_per_worker(2).build()?;
        let pids = worker_pids(&pool, 2).await?;
        assert_eq!(pids[0], pids[1], "both ran on the one worker, at once");
        pool.close().await;
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------------
// Metrics, the blocking worker, the builder
// ---------------------------------------------------------------------------------------------

fn metrics_show_queue_depth_busy_workers_and_times() -> Result<(), Failed> {
    block_on(async {
        let pool = pool(1).build()?;
        let (token, held) = hold(&pool).await?;
        let queued: Vec<_> = (0..2)
            .map(|i| spawn(&pool, Job::Echo(i), RunOptions::new()))
            .collect();
        let busy = until(&pool, "two queued", |m| m.queued == 2).await?;
        assert_eq!(
            (busy.busy_workers, busy.idle_workers, busy.running),
            (1, 0, 1)
        );
        token.cancel();
        let _ = join(held).await?;
        for task in queued {
            join(task).await?.map_err(fail)?;
        }
        let done = until(&pool, "idle", |m| m.idle_workers == 1).await?;
        assert_eq!((done.completed, done.failed, done.queued), (2, 1, 0));
        assert_eq!(done.wait.count, 3);
        assert_eq!(done.run.count, 3);
        assert!(done.wait.max > Duration::ZERO && done.run.max > Duration::ZERO);
        assert!(done.wait.mean() <= done.wait.max);
        pool.close().await;
        Ok(())
    })
}

fn metrics_count_a_task_before_its_caller_has_the_answer() -> Result<(), Failed> {
    block_on_threads(async {
        let pool = pool(1).build()?;
        pool.ready().await.map_err(fail)?;
        let n = 300u64;
        for i in 0..n {
            let failing = i % 3 == 0;
            let job = if failing {
                Job::Fail("no".into())
            } else {
                Job::Echo(i)
            };
            let outcome = pool.run(&job).await;
            assert_eq!(outcome.is_err(), failing, "{outcome:?}");
            let m = pool.metrics();
            assert_eq!(
                m.completed + m.failed,
                i + 1,
                "task {i} is counted once its caller has its answer: {m:?}"
            );
            assert_eq!(m.running, 0, "task {i} is no longer running: {m:?}");
            assert_eq!(m.run.count, i + 1, "{m:?}");
        }
        let m = pool.metrics();
        assert_eq!((m.completed, m.failed), (n - n.div_ceil(3), n.div_ceil(3)));
        pool.close().await;
        Ok(())
    })
}

fn metrics_show_the_ready_workers_once_ready_returns() -> Result<(), Failed> {
    block_on_threads(async {
        let pool = pool(1).build()?;
        // Many callers wait at once: the first ones answered look while the pool is still
        // answering the others.
        let waiting: Vec<_> = (0..1000)
            .map(|_| {
                let pool = pool.clone();
                tokio::spawn(async move {
                    pool.ready().await?;
                    Ok::<_, TaskError>(pool.metrics())
                })
            })
            .collect();
        for waiter in waiting {
            let m = join(waiter).await?.map_err(fail)?;
            assert_eq!((m.idle_workers, m.starting_workers), (1, 0), "{m:?}");
        }
        pool.close().await;
        Ok(())
    })
}

fn worker_pids_are_the_live_workers_and_follow_replacements_and_close() -> Result<(), Failed> {
    block_on(async {
        let pool = pool(2)
            .fork_options(ForkOptions::default().stdio(Stdio::Ignore))
            .build()?;
        pool.ready().await.map_err(fail)?;
        let mut seen = worker_pids(&pool, 2).await?;
        seen.sort_unstable();
        let listed = pool.worker_pids();
        assert_eq!(listed, seen, "the pids the workers report");
        let crash = Job::Crash {
            note: "pids".into(),
        };
        let _ = pool.run(&crash).await;
        until(&pool, "a replacement ready", |m| m.idle_workers == 2).await?;
        let after = pool.worker_pids();
        assert_eq!(after.len(), 2, "{after:?}");
        let gone: Vec<u32> = listed
            .iter()
            .copied()
            .filter(|p| !after.contains(p))
            .collect();
        assert_eq!(
            gone.len(),
            1,
            "one worker replaced: {listed:?} then {after:?}"
        );
        until_gone(&gone).await?;
        let mut seen = worker_pids(&pool, 2).await?;
        seen.sort_unstable();
        assert_eq!(pool.worker_pids(), seen);
        pool.close().await;
        assert_eq!(pool.worker_pids(), Vec::<u32>::new(), "none after close");
        until_gone(&after).await?;
        Ok(())
    })
}

fn the_blocking_worker_answers_and_stops_on_cancellation() -> Result<(), Failed> {
    block_on(async {
        let pool = Pool::<Job, u64>::builder(Worker::entry("blocking_worker"))
            .workers(1)
            .build()?;
        assert_eq!(pool.run(&Job::Echo(8)).await?, 8);
        let (token, held) = hold(&pool).await?;
        token.cancel();
        match join(held).await? {
            Err(TaskError::Cancelled {
                stop: Some(Stop::Cooperatively),
                ..
            }) => {}
            other => {
                return Err(fail(format!(
                    "expected a cooperative cancel, got {other:?}"
                )))
            }
        }
        match pool.run(&Job::Pid).await {
            Err(TaskError::Failed { message, .. }) => assert!(message.contains("Pid"), "{message}"),
            other => return Err(fail(format!("expected Failed, got {other:?}"))),
        }
        assert_eq!(pool.metrics().workers_started, 1);
        pool.close().await;
        Ok(())
    })
}

fn build_refuses_contradictory_options_and_a_missing_runtime() -> Result<(), Failed> {
    match pool(1).build() {
        Err(BuildError::NoRuntime) => {}
        other => return Err(fail(format!("expected NoRuntime, got {other:?}"))),
    }
    block_on(async {
        let refused = pool(1).min_workers(3).max_workers(2).build();
        assert!(
            matches!(
                refused,
                Err(BuildError::Invalid {
                    option: "min_workers",
                    ..
                })
            ),
            "{refused:?}"
        );
        let refused = pool(1).concurrency_per_worker(0).build();
        assert!(
            matches!(refused, Err(BuildError::Invalid { .. })),
            "{refused:?}"
        );
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------------
// Windows: processes by pid
// ---------------------------------------------------------------------------------------------

#[cfg(windows)]
mod win {
    use windows_sys::Win32::Foundation::{CloseHandle, WAIT_TIMEOUT};
    use windows_sys::Win32::System::Threading::{
        OpenProcess, WaitForSingleObject, PROCESS_SYNCHRONIZE,
    };

    /// The status `std::process::abort` (a fast fail) ends a process with.
    pub(crate) const STATUS_STACK_BUFFER_OVERRUN: u32 = 0xC000_0409;

    /// Whether process `pid` is running: it can be opened and has not ended. A pid no process
    /// has (any more) cannot be opened.
    pub(crate) fn running(pid: u32) -> bool {
        // SAFETY: OpenProcess takes no pointers; a null result is checked below.
        let process = unsafe { OpenProcess(PROCESS_SYNCHRONIZE, 0, pid) };
        if process.is_null() {
            return false;
        }
        // SAFETY: `process` is a handle we just opened with SYNCHRONIZE access; a zero
        // timeout only polls it.
        let running = unsafe { WaitForSingleObject(process, 0) } == WAIT_TIMEOUT;
        // SAFETY: `process` is ours and closed once.
        unsafe { CloseHandle(process) };
        running
    }
}
