//! The side-by-side benchmark: utility-process against the physical floor and against the
//! tools a user would pick instead, in one run, one table.
//!
//! ```text
//! cargo run --release -p bench              # the full run: a few minutes on 2 cores
//! cargo run --release -p bench -- --quick   # a smoke run, well under 30 s
//! cargo run --release -p bench -- --json out.json --only rtt
//! ```
//!
//! # What a run does
//!
//! Every number is only meaningful next to the number it should be compared with, so every
//! row of the table names its *floor*: the same work done with nothing but system calls
//! (`floor.rs`). Our rows (`ours.rs`; shared buffers in `shared.rs`) and the peers' rows
//! (`peers.rs`: ipc-channel, procspawn, Node.js) are printed with the ratio of their median to
//! that floor's median, measured in the same run on the same machine.
//!
//! Each case runs twice, in two *placements*:
//!
//! - `default`: the scheduler puts the processes wherever it likes (on this 2-core machine,
//!   usually parent and child on different cores, so a message crosses cores and wakes an
//!   idle one — in a virtual machine, where an idle virtual CPU is halted and its wake-up goes
//!   through the host, that alone can make a round trip several times slower than pinned);
//! - `pinned`: the benchmark pins itself to CPU 0 with `sched_setaffinity` before it starts a
//!   single thread or child, and every thread and child inherits that: all processes share one
//!   core, so a round trip is two context switches and no cross-core wake-up.
//!
//! A placement is a *phase*: a fresh process of this same binary (`--phase default` or
//! `--phase pinned`), so that the pinned phase really is pinned from its first instruction
//! (affinity is per thread, and the library's own thread, which forks every child, must be
//! created after the pin) and so that neither phase inherits the other's warm caches, its
//! allocator state, or the library's guardian. The runner (this module, without `--phase`)
//! starts the two phases one after the other, collects their rows (JSON, through a file),
//! pairs them, computes the ratios, prints the markdown table and writes the JSON.
//!
//! # Samples
//!
//! A case is measured `samples` times (9, or 3 with `--quick`) after an unrecorded warm-up;
//! each sample is itself an average over many operations where one operation is short (a
//! round trip is timed over thousands). The table gives the median, the minimum and the
//! maximum of the samples: the spread says how far to trust the median.
//!
//! # Units
//!
//! Times are per operation. Rates are messages per second and decimal megabytes per second
//! of payload (1 MB = 10^6 B; the framing is not counted). Bandwidth is decimal gigabytes
//! per second. Memory is MiB of resident set (`VmRSS`).
//!
//! # The executable is its own children
//!
//! `main` first hands the process to whichever child role it was started for, before it
//! parses a single argument: utility-process entry points (`utility_process::init`),
//! procspawn's children (`procspawn::init`), ipc-channel's child (`--ipc-child`) and the
//! floor's raw children (`--floor-child`). Only the parent gets to the argument parser.
//!
//! # A shared machine
//!
//! Other processes skew every number (on a 2-core machine one busy neighbour takes half of
//! it). The runner samples how busy the CPUs are in the second before and after the run; each
//! phase watches `/proc` while it runs (`load`) and adds up the CPU time of every process
//! that is not part of the benchmark. A case during which others used more than 5% of the
//! CPUs is measured again once the machine is quiet (three attempts at most, the least
//! disturbed kept; a phase waits 90 s at most in all, 5 s with `--quick`); a row still
//! disturbed is marked ⚠ in the table (and so is a ratio whose floor was) and listed under
//! it, and the JSON has each row's share of foreign CPU time.
//!
//! # A case that hangs
//!
//! A watchdog thread ends the phase when one case runs far past its budget, naming the case,
//! so that a hang in the library shows up as a clear failure rather than a stuck run.

mod floor;
mod lang;
mod ours;
mod peers;
mod pool;
mod raw_shm;
mod shared;

use std::cell::RefCell;
use std::error::Error as StdError;
use std::fmt::Write as _;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Any error a case can end with.
pub type BoxError = Box<dyn StdError + Send + Sync>;
/// A case's result.
pub type Result<T, E = BoxError> = std::result::Result<T, E>;

fn main() {
    // Child roles first: in a child, each of these runs the child and never returns.
    utility_process::init(
        ours::entries()
            .into_iter()
            .chain(shared::entries())
            .chain(pool::entries()),
    );
    procspawn::init();
    peers::ipc_child_main_if_asked();
    floor::child_main_if_asked();

    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("bench: {e}\n\n{USAGE}");
            std::process::exit(2);
        }
    };
    let code = match args.phase {
        Some(placement) => run_phase(&args, placement),
        None => run_all(&args),
    };
    std::process::exit(code);
}

const USAGE: &str = "usage: bench [--quick] [--json PATH] [--only SUBSTRING]

  --quick        a short smoke run (3 samples, fewer iterations, no 1000-children case)
  --json PATH    where to write the results (default: the target directory's bench.json)
  --only TEXT    run only the cases whose id or name contains TEXT; repeat it to add
                 more (a ratio needs its floor row: `--only payload --only floor.memcpy`)";

/// The command line.
#[derive(Debug, Clone, Default)]
struct Args {
    quick: bool,
    json: Option<PathBuf>,
    only: Vec<String>,
    /// Internal: run one placement and write its rows to `out`.
    phase: Option<Placement>,
    out: Option<PathBuf>,
}

impl Args {
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
        let mut parsed = Args::default();
        while let Some(arg) = args.next() {
            let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
            match arg.as_str() {
                "--quick" => parsed.quick = true,
                "--json" => parsed.json = Some(value("--json")?.into()),
                "--only" => parsed.only.push(value("--only")?),
                "--phase" => {
                    parsed.phase = Some(match value("--phase")?.as_str() {
                        "default" => Placement::Default,
                        "pinned" => Placement::Pinned,
                        other => return Err(format!("unknown phase {other:?}")),
                    })
                }
                "--out" => parsed.out = Some(value("--out")?.into()),
                "-h" | "--help" => {
                    println!("{USAGE}");
                    std::process::exit(0);
                }
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        Ok(parsed)
    }
}

/// Where the processes of a phase may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    /// Wherever the scheduler puts them.
    Default,
    /// All on CPU 0.
    Pinned,
}

impl Placement {
    fn as_str(self) -> &'static str {
        match self {
            Placement::Default => "default",
            Placement::Pinned => "pinned",
        }
    }
}

/// What a row's samples measure.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Kind {
    /// Seconds per operation.
    Time,
    /// Messages per second, each carrying `bytes` bytes of payload.
    Rate {
        /// Payload bytes per message.
        bytes: u64,
    },
    /// Bytes per second.
    Bandwidth,
    /// Bytes.
    Memory,
}

/// One row of the table: one case in one placement.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    /// A stable key, e.g. `ours.rtt.bytes.current_thread`.
    pub id: String,
    /// `floor`, `ours` or `peers`.
    pub group: String,
    /// What the table calls it.
    pub case: String,
    pub placement: Placement,
    #[serde(flatten)]
    pub kind: Kind,
    /// In the kind's unit: seconds, messages per second, bytes per second, bytes.
    pub samples: Vec<f64>,
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// For rates: the median in payload bytes per second.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub median_bytes_per_second: Option<f64>,
    /// The id of the floor row this one is compared with (same placement).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub floor: Option<String>,
    /// This row's median divided by the floor's median.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub ratio: Option<f64>,
    /// Why the case has no numbers.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
    /// The share of the machine's CPU time (all CPUs) that other processes — not this
    /// benchmark, its children, or the kernel's threads — used while the case ran.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub foreign_cpu: Option<f64>,
    /// How many times the case was measured (more than once when others disturbed it).
    #[serde(default)]
    pub attempts: u32,
}

/// Above this share of foreign CPU time during a case, it is measured again, and its row is
/// marked as disturbed if every attempt was.
const DISTURBED: f64 = 0.05;

/// How many times a disturbed case is measured at most.
const ATTEMPTS: u32 = 3;

/// What a case will produce: one row.
#[derive(Debug, Clone)]
pub struct Spec {
    pub id: String,
    pub case: String,
    pub kind: Kind,
    pub floor: Option<String>,
}

impl Spec {
    pub fn new(id: impl Into<String>, case: impl Into<String>, kind: Kind) -> Spec {
        Spec {
            id: id.into(),
            case: case.into(),
            kind,
            floor: None,
        }
    }

    /// Compares this row with the floor row `id`.
    pub fn floor(mut self, id: impl Into<String>) -> Spec {
        self.floor = Some(id.into());
        self
    }
}

/// What a phase carries from case to case.
#[derive(Debug)]
pub struct Ctx {
    pub quick: bool,
    pub placement: Placement,
    only: Vec<String>,
    rows: RefCell<Vec<Row>>,
    notes: RefCell<Vec<String>>,
    /// The case running now, and since when: for the watchdog.
    current: Arc<Mutex<Option<(String, Instant)>>>,
    /// Who else uses the CPUs.
    load: Arc<load::Monitor>,
    /// How long the phase may still wait for a busy machine to quiet down before a retry.
    quiet_budget: RefCell<Duration>,
}

impl Ctx {
    /// Samples per case.
    pub fn samples(&self) -> usize {
        if self.quick {
            3
        } else {
            9
        }
    }

    /// `full` in a full run, `quick` in a quick one.
    pub fn pick<T>(&self, full: T, quick: T) -> T {
        if self.quick {
            quick
        } else {
            full
        }
    }

    /// Records a note for the report (said once, whatever the placement).
    pub fn note(&self, note: impl Into<String>) {
        let note = note.into();
        eprintln!("  note: {note}");
        self.notes.borrow_mut().push(note);
    }

    /// Waits (within the phase's waiting budget) until the machine is quiet: less than 5%
    /// busy over half a second. Between cases nothing of ours runs, so what is busy is others.
    fn wait_for_quiet(&self) {
        let mut budget = self.quiet_budget.borrow_mut();
        let started = Instant::now();
        while *budget > Duration::ZERO {
            let busy = sys::cpu_busy(Duration::from_millis(500));
            let waited = started.elapsed();
            *budget = budget.saturating_sub(waited);
            if busy.is_none_or(|b| b < DISTURBED) {
                break;
            }
        }
        let waited = started.elapsed();
        if waited > Duration::from_millis(600) {
            eprintln!(
                "    waited {:.1} s for the machine to quiet down",
                waited.as_secs_f64()
            );
        }
    }

    /// Whether `--only` lets this case run.
    fn wanted(&self, specs: &[Spec]) -> bool {
        self.only.is_empty()
            || specs.iter().any(|s| {
                self.only
                    .iter()
                    .any(|only| s.id.contains(only.as_str()) || s.case.contains(only.as_str()))
            })
    }

    /// Runs a case that produces one row.
    pub fn measure(&self, spec: Spec, mut case: impl FnMut() -> Result<Vec<f64>>) {
        self.measure_many(vec![spec], || case().map(|samples| vec![samples]));
    }

    /// Runs a case that produces several rows at once (one list of samples per spec).
    ///
    /// A case during which other processes took more than [`DISTURBED`] of the CPUs is
    /// measured again, up to [`ATTEMPTS`] times in all; the least disturbed attempt is kept.
    pub fn measure_many(&self, specs: Vec<Spec>, mut case: impl FnMut() -> Result<Vec<Vec<f64>>>) {
        if !self.wanted(&specs) {
            return;
        }
        let names = specs
            .iter()
            .map(|s| s.id.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        eprintln!("[{}] {names} ...", self.placement.as_str());
        // The share of foreign CPU time, how long it took, what it measured.
        type Attempt = (f64, Duration, Result<Vec<Vec<f64>>>);
        let mut best: Option<Attempt> = None;
        let mut attempts = 0;
        while attempts < ATTEMPTS {
            attempts += 1;
            *lock(&self.current) = Some((names.clone(), Instant::now()));
            let foreign_before = self.load.foreign_seconds();
            let started = Instant::now();
            let outcome = case();
            let took = started.elapsed();
            let foreign_seconds = self.load.foreign_seconds() - foreign_before;
            // A tick or two (10 ms each) is the resolution of the kernel's accounting, and
            // what the machine's own agents use now and then: not a disturbance.
            let foreign = if foreign_seconds < 2.5 * load::tick() {
                0.0
            } else {
                foreign_seconds / (took.as_secs_f64() * load::online_cpus() as f64)
            };
            *lock(&self.current) = None;
            let failed = outcome.is_err();
            if best.as_ref().is_none_or(|(least, ..)| foreign < *least) {
                best = Some((foreign, took, outcome));
            }
            if failed || foreign <= DISTURBED {
                break;
            }
            eprintln!(
                "    disturbed: other processes used {:.0}% of the CPUs meanwhile{}",
                foreign * 100.0,
                if attempts < ATTEMPTS {
                    "; measuring again once they are quiet"
                } else {
                    ""
                }
            );
            if attempts < ATTEMPTS {
                self.wait_for_quiet();
            }
        }
        let Some((foreign, took, outcome)) = best else {
            return;
        };
        let mut rows = self.rows.borrow_mut();
        let make_row = |spec, samples, error| Row {
            foreign_cpu: Some(foreign),
            attempts,
            ..make_row(spec, self.placement, samples, error)
        };
        match outcome {
            Ok(all) if all.len() == specs.len() && all.iter().all(|s| !s.is_empty()) => {
                for (spec, samples) in specs.into_iter().zip(all) {
                    let row = make_row(spec, samples, None);
                    eprintln!(
                        "    {}: median {} (min {}, max {}) [{:.1} s]",
                        row.id,
                        show(row.kind, row.median),
                        show(row.kind, row.min),
                        show(row.kind, row.max),
                        took.as_secs_f64()
                    );
                    rows.push(row);
                }
            }
            Ok(_) => {
                for spec in specs {
                    rows.push(make_row(spec, Vec::new(), Some("no samples".into())));
                }
            }
            Err(e) => {
                eprintln!("    FAILED after {:.1} s: {e}", took.as_secs_f64());
                for spec in specs {
                    rows.push(make_row(spec, Vec::new(), Some(e.to_string())));
                }
            }
        }
    }
}

fn make_row(spec: Spec, placement: Placement, mut samples: Vec<f64>, error: Option<String>) -> Row {
    samples.retain(|s| s.is_finite());
    let mut sorted = samples.clone();
    sorted.sort_by(f64::total_cmp);
    let (median, min, max) = if sorted.is_empty() {
        (f64::NAN, f64::NAN, f64::NAN)
    } else {
        let n = sorted.len();
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        };
        (median, sorted[0], sorted[n - 1])
    };
    Row {
        group: spec.id.split('.').next().unwrap_or("").to_owned(),
        id: spec.id,
        case: spec.case,
        placement,
        kind: spec.kind,
        samples,
        median,
        min,
        max,
        median_bytes_per_second: match spec.kind {
            Kind::Rate { bytes } if median.is_finite() => Some(median * bytes as f64),
            _ => None,
        },
        floor: spec.floor,
        ratio: None,
        error,
        foreign_cpu: None,
        attempts: 1,
    }
}

/// Runs `op` `ctx.samples()` times after `warmup` unrecorded runs; each run returns a sample.
pub fn sample(ctx: &Ctx, warmup: usize, mut op: impl FnMut() -> Result<f64>) -> Result<Vec<f64>> {
    for _ in 0..warmup {
        op()?;
    }
    (0..ctx.samples()).map(|_| op()).collect()
}

/// How many round trips each sample of a round-trip case times (every implementation alike).
pub fn rtt_iters(ctx: &Ctx) -> u32 {
    ctx.pick(5_000, 1_000)
}

/// How many messages a one-way stream of `size`-byte messages sends per sample: 13 to 52 MB
/// in a full run, kept below the library's default queue limit (64 MiB) so that a parent
/// that posts faster than the child reads never meets `QueueFull`.
pub fn stream_count(ctx: &Ctx, size: usize) -> u64 {
    match size {
        0..=64 => ctx.pick(200_000, 20_000),
        65..=1024 => ctx.pick(50_000, 4_000),
        _ => ctx.pick(800, 64),
    }
}

/// The payload sizes of the one-way streams.
pub const STREAM_SIZES: [usize; 3] = [64, 1024, 64 * 1024];

/// `64 B`, `1 KiB`, `64 KiB`.
pub fn size_name(size: usize) -> String {
    match size {
        s if s >= 1 << 20 && s % (1 << 20) == 0 => format!("{} MiB", s >> 20),
        s if s >= 1 << 10 && s % (1 << 10) == 0 => format!("{} KiB", s >> 10),
        s => format!("{s} B"),
    }
}

// ---- a phase -----------------------------------------------------------------------------

/// Runs every case in one placement and writes the rows to `--out`.
fn run_phase(args: &Args, placement: Placement) -> i32 {
    if placement == Placement::Pinned {
        // Before any thread or child exists: everything after inherits the mask.
        let threads = sys::thread_count();
        if let Err(e) = sys::pin_to_cpu0() {
            eprintln!("bench: cannot pin to CPU 0: {e}");
            return 1;
        }
        if threads != Some(1) {
            eprintln!("bench: warning: {threads:?} threads when pinning; only this one is pinned");
        }
    }
    let ctx = Ctx {
        quick: args.quick,
        placement,
        only: args.only.clone(),
        rows: RefCell::new(Vec::new()),
        notes: RefCell::new(Vec::new()),
        current: Arc::new(Mutex::new(None)),
        load: load::Monitor::start(),
        quiet_budget: RefCell::new(Duration::from_secs(if args.quick { 5 } else { 90 })),
    };
    start_watchdog(
        Arc::clone(&ctx.current),
        Duration::from_secs(if args.quick { 60 } else { 240 }),
    );

    floor::run(&ctx);
    ours::run(&ctx);
    shared::run(&ctx);
    peers::run(&ctx);
    lang::run(&ctx);
    pool::run(&ctx);

    let phase = PhaseOutput {
        placement,
        affinity: sys::affinity_list(),
        rows: ctx.rows.into_inner(),
        notes: ctx.notes.into_inner(),
    };
    let Some(out) = &args.out else {
        eprintln!("bench: --phase needs --out");
        return 2;
    };
    match serde_json::to_vec(&phase)
        .map_err(BoxError::from)
        .and_then(|json| std::fs::write(out, json).map_err(BoxError::from))
    {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("bench: writing {}: {e}", out.display());
            1
        }
    }
}

/// What a phase hands back to the runner.
#[derive(Debug, Serialize, Deserialize)]
struct PhaseOutput {
    placement: Placement,
    /// The CPUs the phase ran on, as the kernel saw them at the end.
    affinity: Option<Vec<usize>>,
    rows: Vec<Row>,
    notes: Vec<String>,
}

/// Ends the process when a case runs past `limit`, saying which.
fn start_watchdog(current: Arc<Mutex<Option<(String, Instant)>>>, limit: Duration) {
    std::thread::Builder::new()
        .name("bench-watchdog".into())
        .spawn(move || loop {
            std::thread::sleep(Duration::from_millis(500));
            if let Some((case, since)) = &*lock(&current) {
                if since.elapsed() > limit {
                    eprintln!(
                        "bench: HANG: {case} has run for {:.0} s (limit {:.0} s); ending the phase",
                        since.elapsed().as_secs_f64(),
                        limit.as_secs_f64()
                    );
                    std::process::exit(3);
                }
            }
        })
        .expect("cannot start the watchdog thread");
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

// ---- the runner --------------------------------------------------------------------------

/// The results file.
#[derive(Debug, Serialize)]
struct Report {
    machine: Machine,
    quick: bool,
    only: Vec<String>,
    seconds: f64,
    phases: Vec<PhaseSummary>,
    rows: Vec<Row>,
    notes: Vec<String>,
}

#[derive(Debug, Serialize)]
struct PhaseSummary {
    placement: Placement,
    affinity: Option<Vec<usize>>,
    seconds: f64,
    exit_code: Option<i32>,
}

#[derive(Debug, Serialize)]
struct Machine {
    nproc: usize,
    model_name: String,
    kernel: String,
    /// How busy the CPUs were (0–1, all CPUs together) in the second before the run, and in
    /// the second after it: anything else running skews every row.
    busy_before: Option<f64>,
    busy_after: Option<f64>,
    /// The commit of the source measured (`-dirty` when the work tree had changes).
    commit: Option<String>,
}

impl Machine {
    fn read() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        Machine {
            nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
            model_name: cpuinfo
                .lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|l| l.trim_start_matches([' ', '\t', ':']).trim().to_owned())
                .unwrap_or_else(|| "unknown".into()),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|k| k.trim().to_owned())
                .unwrap_or_else(|_| "unknown".into()),
            busy_before: sys::cpu_busy(Duration::from_secs(1)),
            busy_after: None,
            commit: commit(),
        }
    }
}

/// `git rev-parse --short HEAD` of the source tree, `-dirty` if it has changes.
fn commit() -> Option<String> {
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(env!("CARGO_MANIFEST_DIR"))
            .args(args)
            .stderr(std::process::Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let head = git(&["rev-parse", "--short", "HEAD"])?;
    let dirty = git(&["status", "--porcelain"]).is_some_and(|s| !s.is_empty());
    Some(if dirty { format!("{head}-dirty") } else { head })
}

/// A warning when something else keeps the machine busy.
fn busy_warning(when: &str, busy: Option<f64>) -> Option<String> {
    let busy = busy?;
    (busy > 0.1).then(|| {
        format!(
            "WARNING: the CPUs were {:.0}% busy {when} the run, with none of it ours: other \
             processes were running, and every row is skewed by them",
            busy * 100.0
        )
    })
}

/// Runs both phases, then prints and writes the report.
fn run_all(args: &Args) -> i32 {
    let started = Instant::now();
    let machine = Machine::read();
    let mut machine = machine;
    println!(
        "# utility-process benchmark{}\n\nmachine: nproc {} · {} · Linux {} · source {}\n",
        if args.quick { " (--quick)" } else { "" },
        machine.nproc,
        machine.model_name,
        machine.kernel,
        machine.commit.as_deref().unwrap_or("?")
    );
    let mut notes = Vec::new();
    if let Some(warning) = busy_warning("in the second before", machine.busy_before) {
        eprintln!("bench: {warning}");
        notes.push(warning);
    }
    let target = target_dir();
    let json_path = args
        .json
        .clone()
        .unwrap_or_else(|| target.join("bench.json"));
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("bench: cannot find the executable: {e}");
            return 1;
        }
    };

    let mut rows = Vec::new();
    let mut phases = Vec::new();
    let mut failed = false;
    for placement in [Placement::Default, Placement::Pinned] {
        let out = target.join(format!("bench-phase-{}.json", placement.as_str()));
        let _ = std::fs::remove_file(&out);
        let mut command = Command::new(&exe);
        command
            .args(["--phase", placement.as_str(), "--out"])
            .arg(&out);
        if args.quick {
            command.arg("--quick");
        }
        for only in &args.only {
            command.args(["--only", only]);
        }
        let phase_started = Instant::now();
        let status = command.status();
        let seconds = phase_started.elapsed().as_secs_f64();
        let exit_code = status.as_ref().ok().and_then(|s| s.code());
        let output = std::fs::read(&out)
            .map_err(BoxError::from)
            .and_then(|bytes| {
                serde_json::from_slice::<PhaseOutput>(&bytes).map_err(BoxError::from)
            });
        let _ = std::fs::remove_file(&out);
        match output {
            Ok(phase) if status.as_ref().is_ok_and(|s| s.success()) => {
                rows.extend(phase.rows);
                for note in phase.notes {
                    if !notes.contains(&note) {
                        notes.push(note);
                    }
                }
                phases.push(PhaseSummary {
                    placement,
                    affinity: phase.affinity,
                    seconds,
                    exit_code,
                });
            }
            other => {
                failed = true;
                let why = match (&status, other) {
                    (Err(e), _) => format!("could not start: {e}"),
                    (Ok(s), _) if !s.success() => format!("ended with {s}"),
                    (_, Err(e)) => format!("left no results: {e}"),
                    _ => "failed".to_owned(),
                };
                notes.push(format!(
                    "the {} phase {why}; its rows are missing",
                    placement.as_str()
                ));
                phases.push(PhaseSummary {
                    placement,
                    affinity: None,
                    seconds,
                    exit_code,
                });
            }
        }
    }

    let disturbed: Vec<String> = rows
        .iter()
        .filter_map(|r| {
            let f = r.foreign_cpu.filter(|&f| f > DISTURBED)?;
            Some(format!(
                "{} ({}, {:.0}%)",
                r.id,
                r.placement.as_str(),
                f * 100.0
            ))
        })
        .collect();
    if !disturbed.is_empty() {
        notes.push(format!(
            "⚠ other processes used more than {:.0}% of the CPUs while these cases ran, so \
             their numbers are skewed: {}",
            DISTURBED * 100.0,
            disturbed.join(", ")
        ));
    }
    machine.busy_after = sys::cpu_busy(Duration::from_secs(1));
    if let Some(warning) = busy_warning("in the second after", machine.busy_after) {
        notes.push(warning);
    }
    rows = pair_rows(rows);
    let seconds = started.elapsed().as_secs_f64();
    println!("{}", table(&rows));
    println!("Ratio: the median ÷ the floor's median in the same placement. For times and memory above 1× is slower or bigger than the floor; for rates and bandwidth below 1× is slower. ⚠: other processes used more than 5% of the CPUs while the row (or, on a ratio, its floor) was measured.\n");
    for phase in &phases {
        println!(
            "- phase {}: {:.1} s, CPUs {}",
            phase.placement.as_str(),
            phase.seconds,
            phase
                .affinity
                .as_ref()
                .map_or("?".to_owned(), |cpus| format!("{cpus:?}"))
        );
    }
    for note in &notes {
        println!("- {note}");
    }
    println!("\ntotal: {seconds:.1} s; results: {}", json_path.display());

    let report = Report {
        machine,
        quick: args.quick,
        only: args.only.clone(),
        seconds,
        phases,
        rows,
        notes,
    };
    let written = json_path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .map_err(BoxError::from)
        .and_then(|()| serde_json::to_vec_pretty(&report).map_err(BoxError::from))
        .and_then(|json| std::fs::write(&json_path, json).map_err(BoxError::from));
    if let Err(e) = written {
        eprintln!("bench: writing {}: {e}", json_path.display());
        return 1;
    }
    i32::from(failed)
}

/// The directory this executable was built in (`target/`), where results go by default.
fn target_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent()?.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("target"))
}

/// Orders rows case by case (each case's placements side by side) and computes the ratios.
fn pair_rows(rows: Vec<Row>) -> Vec<Row> {
    let mut order: Vec<String> = Vec::new();
    for row in &rows {
        if !order.contains(&row.id) {
            order.push(row.id.clone());
        }
    }
    let mut paired = rows.clone();
    for row in &mut paired {
        if let Some(floor) = &row.floor {
            row.ratio = rows
                .iter()
                .find(|f| &f.id == floor && f.placement == row.placement)
                .map(|f| row.median / f.median)
                .filter(|r| r.is_finite());
        }
    }
    paired.sort_by_key(|row| {
        (
            order.iter().position(|id| id == &row.id),
            row.placement == Placement::Pinned,
        )
    });
    paired
}

/// Whether other processes took more than their share of the CPUs while `row` ran.
fn disturbed(row: &Row) -> bool {
    row.foreign_cpu.is_some_and(|f| f > DISTURBED)
}

/// The markdown table.
fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| case | placement | median | min | max | floor | ratio |\n| --- | --- | ---: | ---: | ---: | --- | ---: |\n",
    );
    for row in rows {
        let floor_disturbed = row.floor.as_ref().is_some_and(|id| {
            rows.iter()
                .any(|f| &f.id == id && f.placement == row.placement && disturbed(f))
        });
        let (median, min, max) = match &row.error {
            Some(e) => (
                format!("error: {}", e.replace('|', "/")),
                "—".into(),
                "—".into(),
            ),
            None => (
                format!(
                    "{}{}",
                    show(row.kind, row.median),
                    if disturbed(row) { " ⚠" } else { "" }
                ),
                show(row.kind, row.min),
                show(row.kind, row.max),
            ),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            row.case,
            row.placement.as_str(),
            median,
            min,
            max,
            row.floor.as_deref().unwrap_or("—"),
            row.ratio.map_or("—".to_owned(), |r| format!(
                "{}×{}",
                sig3(r),
                if disturbed(row) || floor_disturbed {
                    " ⚠"
                } else {
                    ""
                }
            )),
        );
    }
    out
}

/// A value in its kind's unit, to three significant digits.
fn show(kind: Kind, value: f64) -> String {
    if !value.is_finite() {
        return "—".into();
    }
    match kind {
        Kind::Time => {
            let (v, unit) = if value >= 1.0 {
                (value, "s")
            } else if value >= 1e-3 {
                (value * 1e3, "ms")
            } else if value >= 1e-6 {
                (value * 1e6, "µs")
            } else {
                (value * 1e9, "ns")
            };
            format!("{} {unit}", sig3(v))
        }
        Kind::Rate { bytes } => {
            let (v, unit) = if value >= 1e6 {
                (value / 1e6, "M msg/s")
            } else if value >= 1e3 {
                (value / 1e3, "k msg/s")
            } else {
                (value, "msg/s")
            };
            format!(
                "{} {unit} · {} MB/s",
                sig3(v),
                sig3(value * bytes as f64 / 1e6)
            )
        }
        Kind::Bandwidth => format!("{} GB/s", sig3(value / 1e9)),
        Kind::Memory => format!("{} MiB", sig3(value / (1024.0 * 1024.0))),
    }
}

/// Three significant digits, without an exponent.
fn sig3(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

// ---- other processes ----------------------------------------------------------------------

/// Who else uses the CPUs: the benchmark shares its machine, and a busy neighbour skews
/// every number. A thread scans `/proc` every 300 ms (and once more at each case's start and
/// end) and adds up the CPU time of every user-space process that is not this phase or one
/// of its descendants. Processes born and gone between two scans are missed.
pub mod load {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    #[derive(Debug)]
    pub struct Monitor {
        state: Mutex<State>,
    }

    #[derive(Debug)]
    struct State {
        root: u32,
        /// When the monitor started, in clock ticks since boot.
        since: u64,
        /// CPU ticks last seen, per (pid, start time).
        seen: HashMap<(u32, u64), u64>,
        foreign_ticks: u64,
    }

    /// One line of `/proc/<pid>/stat`.
    struct Stat {
        pid: u32,
        ppid: u32,
        ticks: u64,
        start: u64,
    }

    pub fn online_cpus() -> usize {
        // SAFETY: sysconf only reads a system setting.
        let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
        usize::try_from(n).unwrap_or(1).max(1)
    }

    /// The resolution of the kernel's CPU time accounting, in seconds.
    pub fn tick() -> f64 {
        1.0 / ticks_per_second()
    }

    fn ticks_per_second() -> f64 {
        // SAFETY: as above.
        let n = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        if n > 0 {
            n as f64
        } else {
            100.0
        }
    }

    fn stat(pid: u32) -> Option<Stat> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name may hold spaces and parentheses: fields start after the last ')'.
        let rest = &text[text.rfind(')')? + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let num = |i: usize| fields.get(i)?.parse::<u64>().ok();
        Some(Stat {
            pid,
            ppid: num(1)? as u32,
            ticks: num(11)? + num(12)?,
            start: num(19)?,
        })
    }

    impl Monitor {
        /// Starts watching, with this process as the root of "ours".
        pub fn start() -> Arc<Monitor> {
            let uptime = std::fs::read_to_string("/proc/uptime").unwrap_or_default();
            let since = uptime
                .split_whitespace()
                .next()
                .and_then(|s| s.parse::<f64>().ok())
                .map_or(0, |s| (s * ticks_per_second()) as u64);
            let monitor = Arc::new(Monitor {
                state: Mutex::new(State {
                    root: std::process::id(),
                    since,
                    seen: HashMap::new(),
                    foreign_ticks: 0,
                }),
            });
            monitor.scan();
            let background = Arc::clone(&monitor);
            let _ = std::thread::Builder::new()
                .name("bench-load".into())
                .spawn(move || loop {
                    std::thread::sleep(Duration::from_millis(300));
                    background.scan();
                });
            monitor
        }

        /// CPU seconds other processes have used since the monitor started.
        pub fn foreign_seconds(&self) -> f64 {
            self.scan();
            super::lock(&self.state).foreign_ticks as f64 / ticks_per_second()
        }

        fn scan(&self) {
            let stats: Vec<Stat> = std::fs::read_dir("/proc")
                .into_iter()
                .flatten()
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
                .filter_map(stat)
                .collect();
            let parents: HashMap<u32, u32> = stats.iter().map(|s| (s.pid, s.ppid)).collect();
            let mut state = super::lock(&self.state);
            let root = state.root;
            let ours = |mut pid: u32| {
                for _ in 0..64 {
                    if pid == root {
                        return true;
                    }
                    match parents.get(&pid) {
                        Some(&parent) if parent > 1 => pid = parent,
                        _ => return false,
                    }
                }
                false
            };
            for s in &stats {
                // Kernel threads (kthreadd, pid 2, and its children) work for everyone.
                if s.pid == 2 || s.ppid == 2 || ours(s.pid) {
                    continue;
                }
                let baseline = if s.start >= state.since { 0 } else { s.ticks };
                let last = state
                    .seen
                    .insert((s.pid, s.start), s.ticks)
                    .unwrap_or(baseline);
                state.foreign_ticks += s.ticks.saturating_sub(last);
            }
        }
    }
}

// ---- system calls ------------------------------------------------------------------------

/// The few system calls the benchmark makes itself.
pub mod sys {
    use super::*;

    /// Pins the calling thread (and so every thread and process it starts later) to CPU 0.
    pub fn pin_to_cpu0() -> std::io::Result<()> {
        // SAFETY: cpu_set_t is plain data; all-zero is the empty set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: CPU 0 is within the set's bounds.
        unsafe { libc::CPU_SET(0, &mut set) };
        // SAFETY: `set` is a valid cpu_set_t of the size we pass; pid 0 is the calling thread.
        let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }

    /// The CPUs the calling thread may run on.
    pub fn affinity_list() -> Option<Vec<usize>> {
        // SAFETY: as in `pin_to_cpu0`.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a valid, writable cpu_set_t of the size we pass.
        let rc = unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) };
        if rc != 0 {
            return None;
        }
        Some(
            (0..libc::CPU_SETSIZE as usize)
                // SAFETY: every index is below CPU_SETSIZE.
                .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
                .collect(),
        )
    }

    /// The share of all CPUs' time spent busy (not idle, not waiting for I/O) over `span`.
    pub fn cpu_busy(span: Duration) -> Option<f64> {
        fn read() -> Option<(u64, u64)> {
            let stat = std::fs::read_to_string("/proc/stat").ok()?;
            let fields: Vec<u64> = stat
                .lines()
                .next()?
                .strip_prefix("cpu ")?
                .split_whitespace()
                .filter_map(|f| f.parse().ok())
                .collect();
            let total: u64 = fields.iter().take(8).sum();
            let idle = fields.get(3)? + fields.get(4)?;
            Some((total, idle))
        }
        let (total0, idle0) = read()?;
        std::thread::sleep(span);
        let (total1, idle1) = read()?;
        let total = total1.checked_sub(total0)?;
        (total > 0).then(|| 1.0 - (idle1 - idle0) as f64 / total as f64)
    }

    /// The number of threads of this process.
    pub fn thread_count() -> Option<usize> {
        std::fs::read_dir("/proc/self/task").ok().map(|d| d.count())
    }

    /// Makes `fd` survive (`true`) or not survive (`false`) an `exec`.
    pub fn set_inheritable(fd: BorrowedFd<'_>, inheritable: bool) -> std::io::Result<()> {
        let raw = fd.as_raw_fd();
        // SAFETY: F_GETFD on a descriptor we borrow, so open for the call.
        let flags = unsafe { libc::fcntl(raw, libc::F_GETFD) };
        if flags < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let flags = if inheritable {
            flags & !libc::FD_CLOEXEC
        } else {
            flags | libc::FD_CLOEXEC
        };
        // SAFETY: as above; F_SETFD only changes the descriptor's flags.
        if unsafe { libc::fcntl(raw, libc::F_SETFD, flags) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// A process's resident set size, in bytes, from `/proc/<pid>/status`.
    pub fn vm_rss(pid: u32) -> Result<f64> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| format!("no VmRSS in /proc/{pid}/status"))?;
        Ok(kib * 1024.0)
    }
}
