//! The pool: `utility-process-pool` against the pools users would pick instead.
//!
//! Every pool runs the same trivial task, `n ↦ n + 1` on a `u64`, so that what is measured
//! is the pool itself: handing a task to a worker, and its answer back.
//!
//! - **Dispatch overhead per trivial task** (`pool.dispatch.*`): one worker, tasks run one
//!   after the other (each awaited before the next), timed over hundreds per sample: the
//!   latency a pool adds to a call. Floor: `floor.rtt`, the raw socket round trip — a
//!   process pool cannot do better than one round trip per task.
//!   - `ours`: `Pool::<u64, u64>::run` on a one-worker pool of this executable's
//!     `pool-worker` entry (`utility_process_pool::serve`), the parent on a tokio
//!     `current_thread` runtime.
//!   - `procspawn`: procspawn 1.0.1's `Pool::new(1)`, `spawn(n, |n| n + 1).join()`.
//!   - `piscina`: Node's piscina, one worker *thread* (`node/pool.js`): a thread pool, so no
//!     process boundary at all — the comparison says what isolation costs. Installed with
//!     `npm install` in `benches/node` when `node_modules` is missing; skipped with a note
//!     when node or npm is not there, or the install fails.
//! - **Throughput** (`pool.throughput.<n>`): tasks per second with N = 1, 2, 4 workers and
//!   64 tasks in flight (64 callers, each running its share one after the other), so
//!   every worker always has a task waiting. On this 2-core machine N = 4 oversubscribes
//!   the CPUs; the row shows what that costs. No floor.

use std::convert::Infallible;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use utility_process::{Entry, ParentPort};
use utility_process_pool::{serve, Pool, ServeError, TaskContext, Worker};

use crate::{floor, sample, BoxError, Ctx, Kind, Result, Spec};

/// The Node.js script and its directory.
const NODE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/node");

/// Tasks in flight in the throughput rows.
const IN_FLIGHT: usize = 64;

/// The pool's worker, for `main`'s `init`.
pub fn entries() -> Vec<Entry> {
    vec![Entry::new("pool-worker", pool_worker)]
}

async fn pool_worker(port: ParentPort) -> Result<(), ServeError> {
    serve(port, |n: u64, _ctx: TaskContext| async move {
        Ok::<_, Infallible>(n + 1)
    })
    .await
}

/// Runs every pool case.
pub fn run(ctx: &Ctx) {
    ctx.measure(
        Spec::new(
            "pool.dispatch.ours",
            "pool: dispatch overhead per trivial task, utility-process-pool (1 worker)",
            Kind::Time,
        )
        .floor(floor::RTT),
        || ours_dispatch(ctx),
    );
    ctx.measure(
        Spec::new(
            "pool.dispatch.procspawn",
            "pool: dispatch overhead per trivial task, procspawn Pool (1 process)",
            Kind::Time,
        )
        .floor(floor::RTT),
        || procspawn_dispatch(ctx),
    );
    match piscina_ready(ctx) {
        Ok(()) => ctx.measure(
            Spec::new(
                "pool.dispatch.piscina",
                "pool: dispatch overhead per trivial task, Node piscina (1 thread, no process)",
                Kind::Time,
            )
            .floor(floor::RTT),
            || piscina_dispatch(ctx),
        ),
        Err(why) => {
            if ctx.placement == crate::Placement::Default {
                ctx.note(format!("the piscina row is skipped: {why}"));
            }
        }
    }
    for workers in [1, 2, 4] {
        ctx.measure(
            Spec::new(
                format!("pool.throughput.{workers}"),
                format!(
                    "pool: trivial tasks per second, {workers} worker(s), {IN_FLIGHT} in flight"
                ),
                Kind::Rate { bytes: 8 },
            ),
            || ours_throughput(ctx, workers),
        );
    }
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// Tasks per dispatch sample.
fn dispatch_iters(ctx: &Ctx) -> u32 {
    ctx.pick(2_000, 300)
}

fn ours_dispatch(ctx: &Ctx) -> Result<Vec<f64>> {
    let iters = dispatch_iters(ctx);
    runtime()?.block_on(async {
        let pool = Pool::<u64, u64>::builder(Worker::entry("pool-worker"))
            .workers(1)
            .build()?;
        pool.ready().await?;
        let mut samples = Vec::new();
        for round in 0..=ctx.samples() {
            let started = Instant::now();
            for n in 0..u64::from(iters) {
                if pool.run(&n).await? != n + 1 {
                    return Err(BoxError::from("the pool answered the wrong value"));
                }
            }
            if round > 0 {
                samples.push(started.elapsed().as_secs_f64() / f64::from(iters));
            }
        }
        pool.close().await;
        Ok(samples)
    })
}

fn procspawn_dispatch(ctx: &Ctx) -> Result<Vec<f64>> {
    let iters = dispatch_iters(ctx);
    let pool = procspawn::Pool::new(1).map_err(|e| format!("procspawn: {e}"))?;
    let samples = sample(ctx, 1, || {
        let started = Instant::now();
        for n in 0..u64::from(iters) {
            let answer = pool
                .spawn(n, |n: u64| n + 1)
                .join()
                .map_err(|e| format!("procspawn: {e}"))?;
            if answer != n + 1 {
                return Err("procspawn answered the wrong value".into());
            }
        }
        Ok(started.elapsed().as_secs_f64() / f64::from(iters))
    });
    pool.shutdown();
    samples
}

/// Makes sure piscina can run: node is there, and `node_modules` (installed with npm if it
/// is missing). `Err` says why not.
fn piscina_ready(ctx: &Ctx) -> Result<(), String> {
    let node = Command::new("node").arg("--version").output();
    if !node.is_ok_and(|o| o.status.success()) {
        return Err("node is not on PATH".into());
    }
    if Path::new(NODE_DIR).join("node_modules/piscina").is_dir() {
        return Ok(());
    }
    if ctx.placement != crate::Placement::Default {
        return Err("piscina was not installed by the first phase".into());
    }
    eprintln!("  installing piscina with npm in {NODE_DIR} ...");
    let install = Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(NODE_DIR)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status();
    match install {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(format!("npm install ended with {status}")),
        Err(e) => Err(format!("npm cannot run: {e}")),
    }
}

fn piscina_dispatch(ctx: &Ctx) -> Result<Vec<f64>> {
    let output = Command::new("node")
        .arg(Path::new(NODE_DIR).join("pool.js"))
        .args([
            "driver",
            "dispatch",
            &ctx.samples().to_string(),
            &dispatch_iters(ctx).to_string(),
        ])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()?;
    if !output.status.success() {
        return Err(format!("node pool.js ended with {}", output.status).into());
    }
    serde_json::from_slice(&output.stdout)
        .map_err(|e| BoxError::from(format!("node pool.js printed no samples: {e}")))
}

fn ours_throughput(ctx: &Ctx, workers: usize) -> Result<Vec<f64>> {
    let tasks = ctx.pick(20_000, 2_000);
    runtime()?.block_on(async {
        let pool = Pool::<u64, u64>::builder(Worker::entry("pool-worker"))
            .workers(workers)
            .build()?;
        pool.ready().await?;
        let mut samples = Vec::new();
        for round in 0..=ctx.samples() {
            let started = Instant::now();
            let mut callers = tokio::task::JoinSet::new();
            for caller in 0..IN_FLIGHT {
                let pool = pool.clone();
                callers.spawn(async move {
                    let mut n = caller as u64;
                    while n < tasks as u64 {
                        if pool.run(&n).await? != n + 1 {
                            return Err(BoxError::from("the pool answered the wrong value"));
                        }
                        n += IN_FLIGHT as u64;
                    }
                    Ok(())
                });
            }
            while let Some(done) = callers.join_next().await {
                done??;
            }
            if round > 0 {
                samples.push(tasks as f64 / started.elapsed().as_secs_f64());
            }
        }
        pool.close().await;
        Ok(samples)
    })
}
