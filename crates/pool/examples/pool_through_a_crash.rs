//! A pool runs through a crash: one task kills its worker, the others get their answers,
//! the worker is replaced, the pool keeps its size. (The chapter `TOUR_CHAPTER.md` offers
//! to `examples/tour.rs`, runnable on its own.)
//!
//! ```text
//! cargo run -p utility-process-pool --example pool_through_a_crash
//! ```

use std::error::Error as StdError;

use serde::{Deserialize, Serialize};
use utility_process::{init, Entry, ForkOptions, ParentPort, Stdio};
use utility_process_pool::{serve, Pool, ServeError, TaskContext, TaskError, Worker};

/// What the pool's workers do.
#[derive(Debug, Serialize, Deserialize)]
enum PoolJob {
    /// Count the primes below a bound.
    CountPrimes { below: u64 },
    /// Die on the spot (SIGABRT), after a last word on stderr.
    Crash,
}

/// The pool's worker: an entry point of this executable that serves tasks.
async fn pool_worker(port: ParentPort) -> Result<(), ServeError> {
    serve(port, |job: PoolJob, ctx: TaskContext| async move {
        match job {
            PoolJob::CountPrimes { below } => {
                let mut count = 0u64;
                for n in 2..below {
                    if ctx.is_cancelled() {
                        return Err("cancelled");
                    }
                    count += u64::from((2..n).take_while(|d| d * d <= n).all(|d| n % d != 0));
                }
                Ok(count)
            }
            PoolJob::Crash => {
                eprintln!("worker {}: giving up on purpose", std::process::id());
                std::process::abort()
            }
        }
    })
    .await
}

/// The chapter: a pool of two, seven tasks, one of which crashes its worker.
async fn pool_chapter() -> Result<(), Box<dyn StdError>> {
    let pool = Pool::<PoolJob, u64>::builder(Worker::entry("pool-worker"))
        .workers(2)
        .fork_options(ForkOptions::default().stderr(Stdio::Pipe)) // crash reports carry stderr
        .build()?;
    pool.ready().await?;
    let mut tasks = tokio::task::JoinSet::new();
    for below in [10_000, 20_000, 30_000, 40_000, 50_000, 60_000] {
        let pool = pool.clone();
        tasks.spawn(async move { (below, pool.run(&PoolJob::CountPrimes { below }).await) });
    }
    let crash = pool.run(&PoolJob::Crash).await;
    match crash {
        Err(TaskError::WorkerCrashed(crash)) => println!("   the crashing task: {crash}"),
        other => println!("   the crashing task, unexpectedly: {other:?}"),
    }
    while let Some(joined) = tasks.join_next().await {
        let (below, answer) = joined?;
        println!("   primes below {below}: {}", answer?);
    }
    let metrics = pool.metrics();
    println!(
        "   {} workers now ({} started in all, {} crash); every other task answered",
        metrics.workers, metrics.workers_started, metrics.crashes
    );
    pool.close().await;
    println!("   closed: {} workers left", pool.metrics().workers);
    Ok(())
}

fn main() -> Result<(), Box<dyn StdError>> {
    init([Entry::new("pool-worker", pool_worker)]);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(pool_chapter())
}
