//! Children in other languages (issue 13): a Rust parent and a Node.js or Python child through
//! this library, next to what those languages offer themselves for the same work.
//!
//! - **Node.js child** (`lang.node.*`): `fork("node/lang_worker.js", [ROLE])`, which runs
//!   `node --require <repo>/js/lib/bootstrap.cjs` with the addon (`crates/node`) built in
//!   release into this benchmark's target directory (a nested `cargo build`, as the
//!   integration tests do; `UTILITY_PROCESS_NODE_ADDON` names a ready one instead). The
//!   worker uses `process.parentPort`, as an Electron utility process would. Rows:
//!   - `lang.node.rtt`: the parent posts a 64-character `String` (`post_message`, MessagePack)
//!     and awaits the echo, which the worker makes with `postMessage(e.data)`; the parent on
//!     a tokio `current_thread` runtime, as `ours.rtt.serde.current_thread`. Floor `floor.rtt`.
//!   - `lang.node.stream.64`: an order (N) and then N 64-character strings as fast as
//!     `post_message` returns; the worker counts them and answers when it has all N (same N
//!     as `ours.stream.64`). Floor `floor.stream.64.each`.
//!
//!   Each is placed in the table right after its peer, `peers.node.rtt` and
//!   `peers.node.stream.64` (Node's own `child_process.fork`, Node parent and Node child), when
//!   that peer ran in the same phase, and a note gives the ratio of the two: the goal of
//!   issue 13 is a Node child through this library at least as fast as Node's own fork IPC.
//! - **Python child** (`lang.python.*`): the same two cases with
//!   `fork("python/lang_worker.py", [ROLE])` (python3, `PYTHONPATH=<repo>/python/src`), the
//!   worker reading with the blocking `recv` of `utility_process`.
//! - **Python's own** `multiprocessing.Pipe` (`peers.python.pipe.*`): `python/pipe.py` is
//!   both the measuring parent and the `multiprocessing.Process` child, so both ends are
//!   Python (as `peers.node.*` are Node); same message, same N, same floors. Each row follows
//!   its `lang.python.*` row, with the ratio in a note.
//!
//! The Node rows are skipped, with a note, when `node` cannot be run or the addon cannot be
//! built; the Python rows when `python3` cannot be run. `--only lang` runs the rows of this
//! module without their floors and peers; add `--only floor.rtt --only floor.stream.64
//! --only peers.node` for the ratios (the `peers.python.pipe.*` rows have `lang` in their
//! names, so they run with `--only lang`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tokio::runtime::Runtime;
use utility_process::{fork, Event, ForkOptions, UtilityProcess};

use crate::floor;
use crate::{stream_count, BoxError, Ctx, Kind, Placement, Result, Spec};

const NODE_WORKER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/node/lang_worker.js");
const PYTHON_WORKER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/python/lang_worker.py");
const PYTHON_PIPE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/python/pipe.py");
const BOOTSTRAP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../js/lib/bootstrap.cjs");
const PYTHON_SRC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../python/src");
const WORKSPACE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml");
const ADDON_VAR: &str = "UTILITY_PROCESS_NODE_ADDON";

/// The message of every row: a 64-character string.
const TEXT_LEN: usize = 64;

/// A child in another language: how to fork it.
#[derive(Debug, Clone, Copy)]
enum Lang<'a> {
    Node { addon: &'a Path },
    Python,
}

impl Lang<'_> {
    fn fork(self, role: &str) -> Result<UtilityProcess> {
        let (script, options) = match self {
            Lang::Node { addon } => (
                NODE_WORKER,
                ForkOptions::default()
                    .env(ADDON_VAR, addon)
                    .env("UTILITY_PROCESS_NODE_BOOTSTRAP", BOOTSTRAP),
            ),
            Lang::Python => (
                PYTHON_WORKER,
                ForkOptions::default().env("PYTHONPATH", PYTHON_SRC),
            ),
        };
        Ok(fork(script, [role], options)?)
    }
}

/// The rows of this module, in the order they run.
fn specs() -> [Spec; 6] {
    [
        Spec::new(
            "lang.node.rtt",
            "lang: round trip Rust parent ↔ Node.js child (process.parentPort), 64-char string",
            Kind::Time,
        )
        .floor(floor::RTT),
        Spec::new(
            "lang.node.stream.64",
            "lang: one-way stream Rust parent → Node.js child, 64-char strings",
            Kind::Rate { bytes: 64 },
        )
        .floor(floor::stream_each(64)),
        Spec::new(
            "lang.python.rtt",
            "lang: round trip Rust parent ↔ Python child (utility_process), 64-char string",
            Kind::Time,
        )
        .floor(floor::RTT),
        Spec::new(
            "peers.python.pipe.rtt",
            "Python: multiprocessing.Pipe round trip, 64-char string (lang peer)",
            Kind::Time,
        )
        .floor(floor::RTT),
        Spec::new(
            "lang.python.stream.64",
            "lang: one-way stream Rust parent → Python child, 64-char strings",
            Kind::Rate { bytes: 64 },
        )
        .floor(floor::stream_each(64)),
        Spec::new(
            "peers.python.pipe.stream.64",
            "Python: multiprocessing.Pipe one-way stream, 64-char strings (lang peer)",
            Kind::Rate { bytes: 64 },
        )
        .floor(floor::stream_each(64)),
    ]
}

/// Runs every case of this module.
pub fn run(ctx: &Ctx) {
    let [node_rtt, node_stream, python_rtt, pipe_rtt, python_stream, pipe_stream] = specs();

    // Only build the addon when a Node row is wanted.
    if ctx.wanted(&[node_rtt.clone(), node_stream.clone()]) {
        match node_addon(ctx) {
            Ok((version, addon)) => {
                if ctx.placement == Placement::Default {
                    ctx.note(format!(
                        "lang.node.*: Node.js {version}, addon {}",
                        addon.display()
                    ));
                }
                let lang = Lang::Node { addon: &addon };
                ctx.measure(node_rtt, || round_trips(ctx, lang));
                compare(
                    ctx,
                    "lang.node.rtt",
                    "peers.node.rtt",
                    "Node's own fork IPC",
                );
                ctx.measure(node_stream, || stream(ctx, lang));
                compare(
                    ctx,
                    "lang.node.stream.64",
                    "peers.node.stream.64",
                    "Node's own fork IPC",
                );
            }
            Err(why) => ctx.note(format!("the lang.node.* rows are skipped: {why}")),
        }
    }

    let python = [python_rtt, pipe_rtt, python_stream, pipe_stream];
    if ctx.wanted(&python) {
        let Some(version) = python_version() else {
            ctx.note(
                "python3 cannot be run: the lang.python.* and peers.python.* rows are skipped",
            );
            return;
        };
        if ctx.placement == Placement::Default {
            ctx.note(format!("lang.python.*, peers.python.*: Python {version}"));
        }
        let [python_rtt, pipe_rtt, python_stream, pipe_stream] = python;
        ctx.measure(python_rtt, || round_trips(ctx, Lang::Python));
        ctx.measure(pipe_rtt, || pipe(ctx, "rtt", crate::rtt_iters(ctx)));
        compare(
            ctx,
            "lang.python.rtt",
            "peers.python.pipe.rtt",
            "multiprocessing.Pipe",
        );
        ctx.measure(python_stream, || stream(ctx, Lang::Python));
        ctx.measure(pipe_stream, || pipe(ctx, "stream", stream_count(ctx, 64)));
        compare(
            ctx,
            "lang.python.stream.64",
            "peers.python.pipe.stream.64",
            "multiprocessing.Pipe",
        );
    }
}

/// Moves row `ours` of this phase right after row `peer` (so the table shows them side by
/// side) and notes how they compare, when both were measured.
fn compare(ctx: &Ctx, ours: &str, peer: &str, peer_name: &str) {
    let mut rows = ctx.rows.borrow_mut();
    let (Some(at), Some(peer_at)) = (
        rows.iter().rposition(|r| r.id == ours),
        rows.iter().position(|r| r.id == peer),
    ) else {
        return;
    };
    let row = rows.remove(at);
    let peer_at = if peer_at > at { peer_at - 1 } else { peer_at };
    let peer_row = &rows[peer_at];
    let (median, peer_median, kind) = (row.median, peer_row.median, row.kind);
    rows.insert(peer_at + 1, row);
    drop(rows);
    if !(median.is_finite() && peer_median.is_finite() && peer_median > 0.0) {
        return;
    }
    // Times: below 1× is faster; rates: above 1× is faster. Say it as "faster by".
    let speedup = match kind {
        Kind::Time => peer_median / median,
        _ => median / peer_median,
    };
    ctx.note(format!(
        "{ours} vs {peer} ({}): {} vs {}: through this library {:.2}× as fast as {peer_name} \
         ({})",
        ctx.placement.as_str(),
        crate::show(kind, median),
        crate::show(kind, peer_median),
        speedup,
        match speedup {
            s if s >= 1.05 => "faster",
            s if s > 0.95 => "within 5%: about as fast",
            _ => "slower",
        }
    ));
}

/// `python3 --version`'s number, or `None` when it cannot be run.
fn python_version() -> Option<String> {
    let output = Command::new("python3").arg("--version").output().ok()?;
    output.status.success().then(|| {
        String::from_utf8_lossy(&output.stdout)
            .trim()
            .trim_start_matches("Python ")
            .to_owned()
    })
}

/// Node's version and the addon (built once per phase), or why the Node rows cannot run.
fn node_addon(ctx: &Ctx) -> Result<(String, PathBuf), String> {
    static ADDON: OnceLock<Result<(String, PathBuf), String>> = OnceLock::new();
    ADDON
        .get_or_init(|| {
            let output = Command::new("node")
                .arg("--version")
                .output()
                .map_err(|e| format!("node cannot be run ({e})"))?;
            if !output.status.success() {
                return Err(format!("`node --version` ended with {}", output.status));
            }
            let version = String::from_utf8_lossy(&output.stdout).trim().to_owned();
            if !Path::new(BOOTSTRAP).is_file() {
                return Err(format!("no Node bootstrap at {BOOTSTRAP}"));
            }
            Ok((version, build_addon(ctx)?))
        })
        .clone()
}

/// `$UTILITY_PROCESS_NODE_ADDON`, or the addon built now in release into this executable's
/// target directory (`cargo build --release -p utility-process-node`).
fn build_addon(ctx: &Ctx) -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os(ADDON_VAR) {
        return Ok(PathBuf::from(path));
    }
    let target = crate::target_dir();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    if ctx.placement == Placement::Default {
        eprintln!(
            "  building the Node addon (cargo build --release -p utility-process-node) into {}",
            target.display()
        );
    }
    let started = Instant::now();
    let output = Command::new(cargo)
        .args([
            "build",
            "--quiet",
            "--release",
            "-p",
            "utility-process-node",
        ])
        .arg("--manifest-path")
        .arg(WORKSPACE)
        .env("CARGO_TARGET_DIR", &target)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cargo cannot be run to build the Node addon ({e})"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr.lines().rev().find(|l| !l.trim().is_empty());
        return Err(format!(
            "building the Node addon failed ({}): {}",
            output.status,
            last.unwrap_or("no output")
        ));
    }
    if started.elapsed() > Duration::from_secs(2) {
        eprintln!(
            "  built the Node addon in {:.0} s",
            started.elapsed().as_secs_f64()
        );
    }
    let addon = target.join("release/libutility_process_node.so");
    if addon.is_file() {
        Ok(addon)
    } else {
        Err(format!("the addon build left no {}", addon.display()))
    }
}

fn runtime() -> std::io::Result<Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// Waits for the child's next message (after its `Event::Spawn`).
async fn expect_message(child: &mut UtilityProcess) -> Result<utility_process::Message> {
    loop {
        match child.next_event().await {
            Some(Event::Spawn) => {}
            Some(Event::Message(message)) => return Ok(message),
            other => {
                return Err(format!(
                    "expected a message from {}, got {other:?}",
                    child.service_name()
                )
                .into())
            }
        }
    }
}

/// Kills the child and waits for its `Exit`; an `Event::Error` on the way fails the case.
async fn end(mut child: UtilityProcess) -> Result<()> {
    child.kill();
    while let Some(event) = child.next_event().await {
        match event {
            Event::Exit(_) => return Ok(()),
            Event::Error(e) => {
                return Err(format!(
                    "{} ended with an error after kill(): {e}",
                    child.service_name()
                )
                .into())
            }
            Event::Spawn | Event::Message(_) => {}
        }
    }
    Ok(())
}

/// Round trips of a 64-character string with an echoing child; seconds per round trip.
fn round_trips(ctx: &Ctx, lang: Lang<'_>) -> Result<Vec<f64>> {
    let iters = crate::rtt_iters(ctx);
    runtime()?.block_on(async {
        let mut child = lang.fork("echo")?;
        let text = "x".repeat(TEXT_LEN);
        let mut samples = Vec::new();
        for round in 0..=ctx.samples() {
            let started = Instant::now();
            for _ in 0..iters {
                child.post_message(&text)?;
                if expect_message(&mut child).await?.data::<&str>()? != text {
                    return Err("the echo differs from the ping".into());
                }
            }
            // Round 0 is the warm-up (and waits for the interpreter to start).
            if round > 0 {
                samples.push(started.elapsed().as_secs_f64() / f64::from(iters));
            }
        }
        end(child).await?;
        Ok(samples)
    })
}

/// A one-way stream of 64-character strings to a counting child; messages per second.
fn stream(ctx: &Ctx, lang: Lang<'_>) -> Result<Vec<f64>> {
    let count = stream_count(ctx, TEXT_LEN);
    let text = "x".repeat(TEXT_LEN);
    let (samples, queue_full) = runtime()?.block_on(async {
        let mut child = lang.fork("sink")?;
        crate::ours::expect_spawn(&mut child).await?;
        // The child counts characters.
        let rounds =
            crate::ours::stream_rounds(ctx, &mut child, count, count * TEXT_LEN as u64, |child| {
                child.post_message(&text)
            })
            .await?;
        end(child).await?;
        Ok::<_, BoxError>(rounds)
    })?;
    if queue_full > 0 {
        ctx.note(format!(
            "lang stream ({}): post_message returned QueueFull {queue_full} times; the parent \
             slept 100 µs and retried each time",
            ctx.placement.as_str()
        ));
    }
    Ok(samples)
}

/// Runs the `multiprocessing.Pipe` driver in `mode`; it prints a JSON array of samples.
fn pipe(ctx: &Ctx, mode: &str, iters: impl ToString) -> Result<Vec<f64>> {
    let output = Command::new("python3")
        .arg(PYTHON_PIPE)
        .args([mode, &ctx.samples().to_string(), &iters.to_string()])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()?;
    if !output.status.success() {
        return Err(format!("python3 pipe.py {mode} ended with {}", output.status).into());
    }
    serde_json::from_slice(&output.stdout)
        .map_err(|e| BoxError::from(format!("python3 pipe.py {mode} printed no samples: {e}")))
}
