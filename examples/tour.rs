//! A narrated tour of utility-process: everything that works, end to end.
//!
//! ```text
//! cargo run --release --example tour
//! RUST_LOG=utility_process=debug cargo run --release --example tour   # and the library's story
//! ```
//!
//! The tour is its own worker: `main` registers named entry points with
//! `utility_process::init`, and the parent starts them with `fork_entry`, which relaunches
//! this same executable into the entry — the way Electron and Chromium ship one binary.

use std::error::Error as StdError;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, BufReader};
use utility_process::unix::ExitStatusExt as _;
use utility_process::{
    fork, fork_entry, init, Entry, Error, Event, ForkOptions, Limits, MessageChannel, ParentPort,
    Sandbox, SharedBuffer, Stdio, UtilityProcess,
};
use utility_process_pool::{serve, Pool, ServeError, TaskContext, TaskError, Worker};
use utility_process_supervisor::{
    child, ChildSpec, Heartbeat, Supervisor, SupervisorEvent, SupervisorOptions,
};

/// What the parent asks a worker to do.
#[derive(Debug, Serialize, Deserialize)]
enum Task {
    /// Count the primes below a bound: a stand-in for CPU-heavy work.
    CountPrimes { below: u64 },
    /// Print a line on stdout.
    Print { line: String },
}

/// What a worker answers.
#[derive(Debug, Serialize, Deserialize)]
enum Reply {
    Primes {
        below: u64,
        count: u64,
        micros: u128,
    },
    Printed,
}

/// What the pinging worker is asked to do with the port it is given.
#[derive(Debug, Serialize, Deserialize)]
struct PingOrder {
    count: u32,
}

fn main() -> Result<(), Box<dyn StdError>> {
    // The library never prints: it reports through `tracing`. RUST_LOG chooses what to see
    // (nothing by default); workers inherit it, so their events show too.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::builder()
                .with_default_directive(tracing_subscriber::filter::LevelFilter::OFF.into())
                .from_env_lossy(),
        )
        .with_writer(std::io::stderr)
        .init();
    // Then, in a worker, this runs the entry and never returns.
    init([
        Entry::blocking("compute", compute),
        Entry::blocking("doomed", |_port| -> Result<(), Error> {
            panic!("the input file is corrupt")
        }),
        Entry::blocking("crasher", |_port| -> Result<(), Error> {
            std::process::abort()
        }),
        Entry::new("port-echo", port_echo),
        Entry::blocking("summer", summer),
        Entry::new("pinger", pinger),
        Entry::blocking("untrusted", untrusted),
        Entry::new("pool-worker", pool_worker),
        Entry::new("supervised", supervised),
    ]);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(tour())
}

// ---- the parent ------------------------------------------------------------------------

async fn tour() -> Result<(), Box<dyn StdError>> {
    println!("utility-process tour — parent pid {}\n", std::process::id());

    chapter("1. Fork a worker (this same executable, relaunched into the entry point \"compute\")");
    let started = Instant::now();
    let mut worker = fork_entry(
        "compute",
        [] as [&str; 0],
        ForkOptions::default()
            .service_name("tour-compute")
            .stdout(Stdio::Pipe),
    )?;
    expect_spawn(&mut worker).await?;
    println!(
        "   spawned {:?} as pid {} in {:?} (fork returns as soon as the program runs)",
        worker.service_name(),
        worker.pid().unwrap_or_default(),
        started.elapsed()
    );
    let stdout = worker.take_stdout().ok_or("stdout was piped")?;
    let mut stdout = BufReader::new(stdout).lines();

    chapter("2. Exchange structured messages");
    // Posted before the worker has even connected: queued, never lost, delivered in order.
    for below in [10_000, 100_000, 1_000_000] {
        worker.post_message(&Task::CountPrimes { below })?;
    }
    for _ in 0..3 {
        match reply(&mut worker).await? {
            Reply::Primes {
                below,
                count,
                micros,
            } => println!("   {count} primes below {below} (the worker took {micros} µs)"),
            other => return Err(format!("unexpected reply {other:?}").into()),
        }
    }
    let rounds = 2_000;
    let started = Instant::now();
    for _ in 0..rounds {
        worker.post_bytes(b"ping")?;
        // The worker answers raw bytes with the same bytes: no serde on either side.
        match worker.next_event().await {
            Some(Event::Message(m)) if m.bytes() == b"ping" => {}
            other => return Err(format!("unexpected event {other:?}").into()),
        }
    }
    println!(
        "   {rounds} raw round trips: {:.1} µs each",
        started.elapsed().as_secs_f64() * 1e6 / rounds as f64
    );

    chapter("3. The worker's stdout, piped to the parent");
    worker.post_message(&Task::Print {
        line: "hello from the worker's stdout".into(),
    })?;
    reply(&mut worker).await?;
    let line = stdout.next_line().await?.unwrap_or_default();
    println!("   read from the pipe: {line:?}");

    chapter("4. A worker panics: the parent hears why, and carries on");
    let mut doomed = fork_entry(
        "doomed",
        [] as [&str; 0],
        ForkOptions::default()
            .service_name("tour-doomed")
            .stderr(Stdio::Ignore),
    )?;
    while let Some(event) = doomed.next_event().await {
        match event {
            Event::Spawn => println!("   spawned tour-doomed"),
            Event::Error(Error::Panicked { panic, .. }) => {
                println!("   error event: panicked with {:?}", panic.message);
                println!("               at {}", panic.location);
            }
            Event::Error(other) => println!("   error event: {other}"),
            Event::Exit(status) => println!("   exit event: {status}"),
            Event::Message(_) => {}
        }
    }
    worker.post_message(&Task::CountPrimes { below: 1000 })?;
    if let Reply::Primes { count, .. } = reply(&mut worker).await? {
        println!("   the first worker still answers: {count} primes below 1000");
    }

    chapter("5. A worker crashes with a signal");
    let mut crasher = fork_entry(
        "crasher",
        [] as [&str; 0],
        ForkOptions::default().service_name("tour-crasher"),
    )?;
    while let Some(event) = crasher.next_event().await {
        match event {
            Event::Error(error) => println!("   error event: {error}"),
            Event::Exit(status) => println!(
                "   exit event: {status} (code {:?}, signal {:?})",
                status.code(),
                status.signal().and_then(|s| s.name())
            ),
            _ => {}
        }
    }

    chapter("6. Two workers talk directly through a port the parent hands over");
    let echo = fork_entry("port-echo", [] as [&str; 0], ForkOptions::default())?;
    let mut pinger = fork_entry("pinger", [] as [&str; 0], ForkOptions::default())?;
    let MessageChannel { port1, port2 } = MessageChannel::new()?;
    // Each end moves to its worker: the parent keeps nothing and relays nothing.
    echo.post_message_with_ports(&"echo on this", vec![port1])?;
    pinger.post_message_with_ports(&PingOrder { count: 10_000 }, vec![port2])?;
    expect_spawn(&mut pinger).await?;
    match pinger.next_event().await {
        Some(Event::Message(m)) => println!("   {}", m.data::<String>()?),
        other => return Err(format!("unexpected event {other:?}").into()),
    }
    echo.kill();
    pinger.kill();

    chapter("7. Hand a worker 64 MiB without copying it: a shared buffer");
    let mut summer = fork_entry("summer", [] as [&str; 0], ForkOptions::default())?;
    let mut frame = SharedBuffer::new(64 << 20)?;
    if let Some(bytes) = frame.as_mut_slice() {
        bytes.fill(1); // the producer fills it in place
    }
    let frame = frame.freeze()?; // read-only from now on, in every process
    let started = Instant::now();
    summer.post_message_with_transfer(&"sum this", vec![frame.into()])?;
    expect_spawn(&mut summer).await?;
    match summer.next_event().await {
        Some(Event::Message(m)) => println!(
            "   the worker summed {} bytes it never copied, {:?} after the post",
            m.data::<u64>()?,
            started.elapsed()
        ),
        other => return Err(format!("unexpected event {other:?}").into()),
    }
    summer.kill();

    chapter("8. Untrusted work: a sandboxed worker under a memory limit");
    let options = ForkOptions::default()
        // best_effort: on a kernel without Landlock ABI 6 the tour still runs, with less.
        .sandbox(Sandbox::strict().best_effort())
        .limits(Limits::new().memory(256 << 20));
    let mut untrusted = fork_entry("untrusted", [] as [&str; 0], options)?;
    expect_spawn(&mut untrusted).await?;
    for attempt in [
        "status",
        "read /etc/passwd",
        "connect to 1.1.1.1:53",
        "count primes",
        "hoard memory",
    ] {
        untrusted.post_message(attempt)?;
        loop {
            match untrusted.next_event().await {
                Some(Event::Message(m)) => {
                    println!("   {attempt:<24} → {}", m.data::<String>()?);
                    break;
                }
                Some(Event::Error(e)) => println!("   {:<24}   (parent) {e}", ""),
                Some(Event::Exit(status)) => {
                    println!("   {attempt:<24} → the worker ended: {status}");
                    break;
                }
                other => return Err(format!("unexpected event {other:?}").into()),
            }
        }
    }

    chapter("9. A pool of two runs through a crash");
    pool_chapter().await?;

    supervision_chapter().await?;

    chapter("11. Workers in JavaScript and Python, talking to each other directly");
    other_languages_chapter().await?;

    chapter("12. Kill");
    println!("   kill() → {}", worker.kill());
    while let Some(event) = worker.next_event().await {
        if let Event::Exit(status) = event {
            println!("   exit event: {status} — asked for, so no error event");
        }
    }
    println!(
        "   pid() is now {:?}; kill() again → {}",
        worker.pid(),
        worker.kill()
    );
    match worker.post_message(&Task::CountPrimes { below: 10 }) {
        Err(e) => println!("   posting now is an error, not a panic: {e}"),
        Ok(()) => return Err("posting to an exited worker succeeded".into()),
    }

    println!("\nThe tour is over: every worker has exited and been reaped.");
    Ok(())
}

/// The repository's own folders, for the scripts and the packages the tour uses.
const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

/// An Electron worker script and a Python worker, a port between them, and a pool of Python
/// workers through a crash. Skipped, saying why, where Node.js or Python is missing.
async fn other_languages_chapter() -> Result<(), Box<dyn StdError>> {
    let has = |program: &str| {
        std::process::Command::new(program)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !has("python3") {
        println!("   skipped: python3 is not on PATH");
        return Ok(());
    }
    // The packages from this repository, as an application would have them installed.
    let python_env = |options: ForkOptions| options.env("PYTHONPATH", format!("{REPO}/python/src"));
    let mut python = fork(
        format!("{REPO}/examples/workers/python_worker.py"),
        [] as [&str; 0],
        python_env(ForkOptions::default()),
    )?;
    expect_spawn(&mut python).await?;
    match node_addon() {
        Err(why) => println!("   the JavaScript half is skipped: {why}"),
        Ok(addon) => {
            let mut js = fork(
                format!("{REPO}/examples/workers/electron_worker.js"),
                [] as [&str; 0],
                ForkOptions::default()
                    .env(
                        "UTILITY_PROCESS_NODE_BOOTSTRAP",
                        format!("{REPO}/js/lib/bootstrap.cjs"),
                    )
                    .env("UTILITY_PROCESS_NODE_ADDON", addon),
            )?;
            expect_spawn(&mut js).await?;
            println!(
                "   forked electron_worker.js (pid {:?}, node) and python_worker.py (pid {:?})",
                js.pid(),
                python.pid()
            );
            let MessageChannel { port1, port2 } = MessageChannel::new()?;
            js.post_message_with_ports(&"meet the Python worker", vec![port1])?;
            python.post_message_with_ports(&"meet the JavaScript worker", vec![port2])?;
            let event = tokio::time::timeout(Duration::from_secs(30), js.next_event()).await?;
            match event {
                Some(Event::Message(message)) => println!("   {}", message.data::<String>()?),
                other => return Err(format!("the JS worker: {other:?}").into()),
            }
            js.kill();
        }
    }
    python.kill();

    let pool = Pool::<u64, u64>::builder(Worker::program(format!(
        "{REPO}/examples/workers/python_pool_worker.py"
    )))
    .fork_options(python_env(ForkOptions::default()))
    .workers(2)
    .build()?;
    let results = run_all(&pool, [2, 3, 13, 4, 5]).await;
    for (n, result) in [2, 3, 13, 4, 5].iter().zip(results) {
        match result {
            Ok(square) => println!("   a Python worker squared {n}: {square}"),
            Err(TaskError::WorkerCrashed(crash)) => {
                println!(
                    "   the task {n} crashed its Python worker: {}",
                    crash.status
                )
            }
            Err(other) => return Err(other.into()),
        }
    }
    let metrics = pool.metrics();
    println!(
        "   every task answered once: {} completed, {} failed; workers started: {}",
        metrics.completed, metrics.failed, metrics.workers_started
    );
    pool.close().await;
    Ok(())
}

/// Runs the tasks at once on the pool, answers in the tasks' order.
async fn run_all<const N: usize>(
    pool: &Pool<u64, u64>,
    tasks: [u64; N],
) -> Vec<Result<u64, TaskError>> {
    let mut set = tokio::task::JoinSet::new();
    for (i, n) in tasks.into_iter().enumerate() {
        let pool = pool.clone();
        set.spawn(async move { (i, pool.run(&n).await) });
    }
    let mut results: Vec<Option<Result<u64, TaskError>>> = (0..N).map(|_| None).collect();
    while let Some(Ok((i, result))) = set.join_next().await {
        results[i] = Some(result);
    }
    results.into_iter().flatten().collect()
}

/// The Node addon (`crates/node`), built once with cargo into this tour's target directory.
fn node_addon() -> Result<std::path::PathBuf, String> {
    let node = std::process::Command::new("node").arg("--version").output();
    if !node.is_ok_and(|o| o.status.success()) {
        return Err("node is not on PATH".into());
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    // target/<profile>/examples/tour
    let profile_dir = exe.ancestors().nth(2).ok_or("no target directory")?;
    let target = profile_dir.parent().ok_or("no target directory")?;
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    println!("   (building the Node addon with cargo, once)");
    let mut build = std::process::Command::new(cargo);
    build
        .args([
            "build",
            "--quiet",
            "-p",
            "utility-process-node",
            "--manifest-path",
        ])
        .arg(format!("{REPO}/Cargo.toml"))
        .env("CARGO_TARGET_DIR", target);
    if release {
        build.arg("--release");
    }
    let status = build.status().map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!("building the addon failed: {status}"));
    }
    Ok(profile_dir.join("libutility_process_node.so"))
}

fn chapter(title: &str) {
    println!("\n{title}");
}

async fn expect_spawn(worker: &mut UtilityProcess) -> Result<(), Box<dyn StdError>> {
    match worker.next_event().await {
        Some(Event::Spawn) => Ok(()),
        other => Err(format!("expected Spawn, got {other:?}").into()),
    }
}

async fn reply(worker: &mut UtilityProcess) -> Result<Reply, Box<dyn StdError>> {
    let event = tokio::time::timeout(Duration::from_secs(30), worker.next_event()).await?;
    match event {
        Some(Event::Message(message)) => Ok(message.data()?),
        other => Err(format!("expected a reply, got {other:?}").into()),
    }
}

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

/// Answers greetings; on "hang" it spins without ever yielding, so it cannot answer its
/// supervisor's heartbeats either (they are answered from this same runtime thread).
async fn supervised(port: ParentPort) -> Result<(), Box<dyn StdError + Send + Sync>> {
    let link = child::attach(&port).await?;
    link.ready()?;
    while let Some(message) = port.recv().await {
        match message.data::<String>()?.as_str() {
            "hang" => loop {
                std::hint::spin_loop()
            },
            greeting => port.post_message(&format!(
                "{greeting} (restarts so far: {})",
                link.restarts()
            ))?,
        }
    }
    Ok(())
}

async fn supervision_chapter() -> Result<(), Box<dyn StdError>> {
    chapter("10. A supervised worker hangs: missed heartbeats, a kill, a restart");
    let supervisor = Supervisor::new(SupervisorOptions::default());
    let mut events = supervisor.events();
    let spec = ChildSpec::entry("tour-supervised", "supervised")
        .heartbeat(Heartbeat::new(Duration::from_millis(200)).misses(3));
    let pid = supervisor.start_child(spec).await?;
    println!("   ready as pid {pid}; told to hang in a busy loop");
    supervisor.post_message("tour-supervised", "hang").await?;
    let hung_at = Instant::now();
    loop {
        let event = tokio::time::timeout(Duration::from_secs(30), events.recv()).await?;
        match event.ok_or("the supervisor is gone")? {
            SupervisorEvent::HeartbeatMissed {
                missed, allowed, ..
            } => {
                println!("   heartbeat missed ({missed} of {allowed} allowed)")
            }
            SupervisorEvent::Exited { reason, status, .. } => {
                let (status, after) = (status.ok_or("no status")?, hung_at.elapsed());
                println!("   {after:.1?} after the hang, pid {pid} ended: {reason} ({status})")
            }
            SupervisorEvent::Restarting { attempt, delay, .. } => {
                println!("   restart #{attempt} in {delay:.0?}")
            }
            SupervisorEvent::Ready { pid: new, .. } if new != pid => {
                println!("   ready again as pid {new}");
                break;
            }
            _ => {}
        }
    }
    supervisor.post_message("tour-supervised", "hello").await?;
    let reply = supervisor.recv_message().await.ok_or("no reply")?;
    println!("   it answers: {}", reply.message.data::<String>()?);
    supervisor.shutdown().await;
    println!("   shut down: SIGTERM, reaped");
    Ok(())
}

// ---- the workers -----------------------------------------------------------------------

/// A compute worker needs no async runtime: the blocking receive is enough.
fn compute(port: ParentPort) -> Result<(), Box<dyn StdError + Send + Sync>> {
    while let Some(message) = port.recv_blocking() {
        if message.bytes() == b"ping" {
            port.post_bytes(b"ping")?;
            continue;
        }
        match message.data::<Task>()? {
            Task::CountPrimes { below } => {
                let started = Instant::now();
                let count = count_primes(below);
                port.post_message(&Reply::Primes {
                    below,
                    count,
                    micros: started.elapsed().as_micros(),
                })?;
            }
            Task::Print { line } => {
                println!("{line}");
                port.post_message(&Reply::Printed)?;
            }
        }
    }
    Ok(())
}

/// Echoes everything that arrives on the port its parent sends it.
async fn port_echo(parent: ParentPort) -> Result<(), Error> {
    let Some(mut message) = parent.recv().await else {
        return Ok(());
    };
    for port in message.take_ports() {
        while let Some(message) = port.recv().await {
            port.post_bytes(message.bytes())?;
        }
    }
    Ok(())
}

/// Sums the bytes of every shared buffer its parent sends it.
fn summer(parent: ParentPort) -> Result<(), Error> {
    while let Some(mut message) = parent.recv_blocking() {
        let sum: u64 = message
            .take_buffers()
            .iter()
            .map(|buffer| buffer.iter().map(|&b| u64::from(b)).sum::<u64>())
            .sum();
        parent.post_message(&sum)?;
    }
    Ok(())
}

/// Pings through the port its parent sends it, and reports the round-trip time.
async fn pinger(parent: ParentPort) -> Result<(), Error> {
    let Some(mut message) = parent.recv().await else {
        return Ok(());
    };
    let order: PingOrder = message.data()?;
    let Some(port) = message.take_ports().pop() else {
        parent.post_message(&"the order came without a port")?;
        return Ok(());
    };
    let started = Instant::now();
    for _ in 0..order.count {
        port.post_bytes(b"ping")?;
        if port.recv().await.is_none() {
            break;
        }
    }
    let micros = started.elapsed().as_secs_f64() * 1e6 / f64::from(order.count);
    parent.post_message(&format!(
        "{} round trips worker ↔ worker, straight through the port: {micros:.1} µs each",
        order.count
    ))?;
    Ok(())
}

/// Runs under `Sandbox::strict()`: tries what untrusted code might, and says what happened.
fn untrusted(port: ParentPort) -> Result<(), Error> {
    while let Some(message) = port.recv_blocking() {
        let attempt: String = message.data()?;
        let outcome = match attempt.as_str() {
            "status" => format!("{:?}", utility_process::sandbox::status()),
            "read /etc/passwd" => match std::fs::read_to_string("/etc/passwd") {
                Ok(text) => format!("read {} bytes", text.len()),
                Err(e) => format!("refused: {e}"),
            },
            "connect to 1.1.1.1:53" => match std::net::TcpStream::connect("1.1.1.1:53") {
                Ok(_) => "connected".to_owned(),
                Err(e) => format!("refused: {e}"),
            },
            "count primes" => format!("{} primes below 100,000", count_primes(100_000)),
            _ => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1; 1 << 20]);
                }
            }
        };
        port.post_message(&outcome)?;
    }
    Ok(())
}

fn count_primes(below: u64) -> u64 {
    let n = below as usize;
    let mut composite = vec![false; n.max(2)];
    let mut count = 0;
    for i in 2..n {
        if !composite[i] {
            count += 1;
            let mut j = i * i;
            while j < n {
                composite[j] = true;
                j += i;
            }
        }
    }
    count
}
