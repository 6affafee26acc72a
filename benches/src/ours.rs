//! Ours: utility-process, through its public API only, as an application would use it.
//!
//! Every child is an entry point of this executable ([`entries`], registered by `main`'s
//! first line) started with `fork_entry`: the same binary the floor's raw children run, so
//! spawn times and memory compare like with like. Children are kept tiny: they echo, count,
//! or say hello, and nothing else.
//!
//! - **Round trip, parent ↔ child** (`ours.rtt.*`): the parent posts 64 B and waits for the
//!   echo with `next_event().await`, timed over thousands of round trips per sample. Five
//!   variants, from two message shapes, two parent runtimes and two kinds of child:
//!   - `serde`: a 64-character `String` posted with `post_message` (MessagePack, 66 B on the
//!     wire) that the child decodes with `data::<String>()` and posts back the same way;
//!   - `bytes`: 64 raw bytes with `post_bytes`, echoed with `post_bytes(message.bytes())`;
//!   - each of the two with the parent's future driven by `block_on` of a tokio
//!     `current_thread` runtime, and of a `multi_thread` runtime (what `#[tokio::main]`
//!     gives: the awaiting task runs on the calling thread, and readiness arrives through a
//!     worker's I/O driver);
//!   - `blocking child`: bytes, the parent on `current_thread`, the child an
//!     `Entry::blocking` that reads with `recv_blocking` — as blocking as the pair gets, since
//!     the parent has no blocking API (`next_event` is async).
//!
//!   Otherwise the child is an async entry (a `current_thread` runtime, as `Entry::new`
//!   makes). The floor is `floor.rtt`.
//! - **Both blocking** (`ours.rtt.bytes.blocking_both`): the parent with
//!   `next_event_blocking`, the child with `recv_blocking`: no async runtime on either side.
//! - **Low-latency mode** (`ours.rtt.low_latency*`): raw round trips with
//!   `set_low_latency(50 µs)` on both sides, and the CPU time (parent + child, from
//!   `/proc/<pid>/stat`, spinning included) spent per round trip.
//! - **Round trip, child ↔ child** (`ours.rtt.child_child`): the parent makes a
//!   `MessageChannel`, moves one port to an echoing child and the other to a pinging child;
//!   the pinger times its round trips itself (the parent is out of the path) and reports
//!   the per-sample averages in one message.
//! - **One-way stream, parent → child** (`ours.stream.<size>`): the parent posts an order
//!   (N, as a serde `u64`) and then N raw messages of 64 B, 1 KiB or 64 KiB as fast as
//!   `post_bytes` returns; the child counts them and posts back the byte total when it has
//!   all N. Timed from the order to the answer. N keeps the sample under the default queue
//!   limit (64 MiB), because the parent has no way to wait for room (see the note the case
//!   prints if `QueueFull` ever happens). Floor: `floor.stream.<size>.each`.
//! - **64 MiB payload** (`ours.payload.64mib`): one 64 MiB `post_bytes` (the default largest
//!   message), answered by its length: end-to-end GB/s, including the encoding copy into the
//!   send buffer and the receiver's buffer. Floor: `floor.memcpy`.
//! - **Spawn** (`ours.spawn.*`): `fork_entry` until `Event::Spawn` (the library reports it
//!   once the program runs, so this is the fork-and-exec itself; floor `floor.spawn.exec`),
//!   and until the first message the child posts as soon as its entry starts (floor
//!   `floor.spawn`). The `.sandboxed` rows do the same under `Sandbox::strict()` (best effort:
//!   on a kernel without Landlock ABI 6 they measure what it has).
//! - **Idle RSS** (`ours.rss.*`): `VmRSS` of a child idle in `recv` after its first message
//!   said it is connected, for an async entry (its tokio runtime included) and a blocking
//!   one. Floor: `floor.rss`.
//! - **N children** (`ours.concurrent.<n>`): N `fork_entry` echo children, each posted one
//!   ping at once; timed until every one has answered. Floor: `floor.spawn_n.<n>`.
//!
//! Children are ended with `kill()` and their `Exit` awaited outside the timed part; an
//! `Event::Error` there would be a library surprise and fails the case.

use std::time::{Duration, Instant};

use tokio::runtime::Runtime;
use utility_process::{
    fork_entry, Entry, Error, Event, ForkOptions, MessageChannel, ParentPort, Sandbox,
    UtilityProcess,
};

use crate::floor;
use crate::{size_name, stream_count, sys, BoxError, Ctx, Kind, Result, Spec, STREAM_SIZES};

pub(crate) const NO_ARGS: [&str; 0] = [];
pub(crate) const PAYLOAD_64MIB: usize = 64 << 20;

/// The entry points of this executable, for `main`'s `utility_process::init`.
pub fn entries() -> Vec<Entry> {
    vec![
        Entry::new("echo-serde", echo_serde),
        Entry::new("echo-bytes", echo_bytes),
        Entry::new("echo-spin", echo_spin),
        Entry::blocking("echo-blocking", echo_blocking),
        Entry::new("sink", sink),
        Entry::new("hello", hello),
        Entry::blocking("hello-blocking", hello_blocking),
        Entry::new("port-echo", port_echo),
        Entry::new("port-pinger", port_pinger),
    ]
}

// ---- the children --------------------------------------------------------------------------

async fn echo_serde(port: ParentPort) -> Result<(), Error> {
    while let Some(message) = port.recv().await {
        port.post_message(&message.data::<String>()?)?;
    }
    Ok(())
}

async fn echo_spin(port: ParentPort) -> Result<(), Error> {
    port.set_low_latency(Some(SPIN));
    echo_bytes(port).await
}

async fn echo_bytes(port: ParentPort) -> Result<(), Error> {
    while let Some(message) = port.recv().await {
        port.post_bytes(message.bytes())?;
    }
    Ok(())
}

fn echo_blocking(port: ParentPort) -> Result<(), Error> {
    while let Some(message) = port.recv_blocking() {
        port.post_bytes(message.bytes())?;
    }
    Ok(())
}

/// Reads an order (N), counts N messages, answers their byte total; again until the end.
async fn sink(port: ParentPort) -> Result<(), Error> {
    while let Some(order) = port.recv().await {
        let count: u64 = order.data()?;
        let mut bytes = 0u64;
        for _ in 0..count {
            match port.recv().await {
                Some(message) => bytes += message.len() as u64,
                None => return Ok(()),
            }
        }
        port.post_message(&bytes)?;
    }
    Ok(())
}

/// Says hello at once, then idles until the parent is gone.
async fn hello(port: ParentPort) -> Result<(), Error> {
    port.post_bytes(b"hello")?;
    while port.recv().await.is_some() {}
    Ok(())
}

fn hello_blocking(port: ParentPort) -> Result<(), Error> {
    port.post_bytes(b"hello")?;
    while port.recv_blocking().is_some() {}
    Ok(())
}

/// Echoes on the port its first message carries.
async fn port_echo(parent: ParentPort) -> Result<(), BoxError> {
    let Some(mut message) = parent.recv().await else {
        return Ok(());
    };
    let port = message
        .take_ports()
        .pop()
        .ok_or("port-echo: no port came")?;
    while let Some(message) = port.recv().await {
        port.post_bytes(message.bytes())?;
    }
    Ok(())
}

/// What the parent asks the pinger: round trips per sample, samples, warm-up round trips.
type PingOrder = (u32, u32, u32);

/// Times round trips through the port its first message carries; posts the per-sample means.
async fn port_pinger(parent: ParentPort) -> Result<(), BoxError> {
    let Some(mut message) = parent.recv().await else {
        return Ok(());
    };
    let (iters, samples, warmup): PingOrder = message.data()?;
    let port = message
        .take_ports()
        .pop()
        .ok_or("port-pinger: no port came")?;
    let ping = [b'x'; 64];
    let round_trip = async || -> Result<(), BoxError> {
        port.post_bytes(&ping)?;
        match port.recv().await {
            Some(m) if m.len() == ping.len() => Ok(()),
            Some(m) => Err(format!("port-pinger: echo of {} bytes", m.len()).into()),
            None => Err("port-pinger: the echo closed the port".into()),
        }
    };
    for _ in 0..warmup {
        round_trip().await?;
    }
    let mut means = Vec::with_capacity(samples as usize);
    for _ in 0..samples {
        let started = Instant::now();
        for _ in 0..iters {
            round_trip().await?;
        }
        means.push(started.elapsed().as_secs_f64() / f64::from(iters));
    }
    parent.post_message(&means)?;
    while parent.recv().await.is_some() {}
    Ok(())
}

// ---- the parent ----------------------------------------------------------------------------

/// The parent's tokio runtime flavour.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Flavor {
    CurrentThread,
    MultiThread,
}

impl Flavor {
    pub(crate) fn runtime(self) -> std::io::Result<Runtime> {
        match self {
            Flavor::CurrentThread => tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build(),
            Flavor::MultiThread => tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build(),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Flavor::CurrentThread => "current_thread",
            Flavor::MultiThread => "multi_thread",
        }
    }
}

/// What a round trip carries.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Shape {
    Serde,
    Bytes,
}

/// Runs every case of ours.
pub fn run(ctx: &Ctx) {
    for (shape, flavor, entry) in [
        (Shape::Serde, Flavor::CurrentThread, "echo-serde"),
        (Shape::Serde, Flavor::MultiThread, "echo-serde"),
        (Shape::Bytes, Flavor::CurrentThread, "echo-bytes"),
        (Shape::Bytes, Flavor::MultiThread, "echo-bytes"),
        (Shape::Bytes, Flavor::CurrentThread, "echo-blocking"),
    ] {
        let (shape_id, shape_name) = match shape {
            Shape::Serde => ("serde", "serde String"),
            Shape::Bytes => ("bytes", "raw bytes"),
        };
        let (id, case) = if entry == "echo-blocking" {
            (
                format!("ours.rtt.{shape_id}.{}.blocking_child", flavor.name()),
                format!(
                    "ours: round trip parent ↔ child, 64 B {shape_name}, parent {}, child blocking",
                    flavor.name()
                ),
            )
        } else {
            (
                format!("ours.rtt.{shape_id}.{}", flavor.name()),
                format!(
                    "ours: round trip parent ↔ child, 64 B {shape_name}, parent {}",
                    flavor.name()
                ),
            )
        };
        ctx.measure(Spec::new(id, case, Kind::Time).floor(floor::RTT), || {
            round_trips(ctx, flavor, entry, shape)
        });
    }
    ctx.measure(
        Spec::new(
            "ours.rtt.bytes.blocking_both",
            "ours: round trip parent ↔ child, 64 B raw bytes, both blocking (next_event_blocking, recv_blocking)",
            Kind::Time,
        )
        .floor(floor::RTT),
        || blocking_round_trips(ctx),
    );
    ctx.measure_many(
        vec![
            Spec::new(
                "ours.rtt.low_latency",
                "ours: round trip parent ↔ child, 64 B raw bytes, low-latency mode (spin ≤ 50 µs, both sides)",
                Kind::Time,
            )
            .floor(floor::RTT),
            Spec::new(
                "ours.rtt.low_latency.cpu",
                "ours: CPU time per round trip in low-latency mode (parent + child, spinning included)",
                Kind::Time,
            ),
        ],
        || low_latency(ctx),
    );
    ctx.measure(
        Spec::new(
            "ours.rtt.child_child",
            "ours: round trip child ↔ child over a transferred MessagePort, 64 B raw bytes",
            Kind::Time,
        )
        .floor(floor::RTT),
        || child_to_child(ctx),
    );
    for size in STREAM_SIZES {
        ctx.measure(
            Spec::new(
                format!("ours.stream.{size}"),
                format!("ours: one-way stream parent → child, {}", size_name(size)),
                Kind::Rate { bytes: size as u64 },
            )
            .floor(floor::stream_each(size)),
            || stream(ctx, size),
        );
    }
    ctx.measure(
        Spec::new(
            "ours.payload.64mib",
            "ours: 64 MiB payload parent → child through the port",
            Kind::Bandwidth,
        )
        .floor(floor::MEMCPY),
        || payload(ctx),
    );
    ctx.measure_many(
        vec![
            Spec::new(
                "ours.spawn.event",
                "ours: fork_entry until Event::Spawn (exec done)",
                Kind::Time,
            )
            .floor(floor::SPAWN_EXEC),
            Spec::new(
                "ours.spawn.first_message",
                "ours: fork_entry until the child's first message",
                Kind::Time,
            )
            .floor(floor::SPAWN),
        ],
        || spawn(ctx, ForkOptions::default),
    );
    ctx.measure_many(
        vec![
            Spec::new(
                "ours.spawn.event.sandboxed",
                "ours: fork_entry until Event::Spawn, strict sandbox",
                Kind::Time,
            )
            .floor(floor::SPAWN_EXEC),
            Spec::new(
                "ours.spawn.first_message.sandboxed",
                "ours: fork_entry until the child's first message, strict sandbox",
                Kind::Time,
            )
            .floor(floor::SPAWN),
        ],
        || {
            spawn(ctx, || {
                ForkOptions::default().sandbox(Sandbox::strict().best_effort())
            })
        },
    );
    for (entry, id, what) in [
        ("hello", "ours.rss.async", "async entry"),
        ("hello-blocking", "ours.rss.blocking", "blocking entry"),
    ] {
        ctx.measure(
            Spec::new(id, format!("ours: idle child RSS, {what}"), Kind::Memory).floor(floor::RSS),
            || idle_rss(ctx, entry),
        );
    }
    for n in floor::concurrent_counts(ctx) {
        ctx.measure(
            Spec::new(
                format!("ours.concurrent.{n}"),
                format!("ours: {n} concurrent children until all answered one ping"),
                Kind::Time,
            )
            .floor(floor::spawn_n(n)),
            || concurrent(ctx, n),
        );
    }
    if ctx.quick {
        ctx.note("--quick: the 1000-children rows are skipped");
    }
}

/// Waits for `Event::Spawn`, which must come first.
pub(crate) async fn expect_spawn(child: &mut UtilityProcess) -> Result<()> {
    match child.next_event().await {
        Some(Event::Spawn) => Ok(()),
        other => Err(format!("expected Event::Spawn, got {other:?}").into()),
    }
}

/// Waits for the child's next message.
pub(crate) async fn expect_message(child: &mut UtilityProcess) -> Result<utility_process::Message> {
    match child.next_event().await {
        Some(Event::Message(message)) => Ok(message),
        other => Err(format!(
            "expected a message from {}, got {other:?}",
            child.service_name()
        )
        .into()),
    }
}

/// Kills the child and waits for its `Exit`; any `Event::Error` on the way is a surprise.
pub(crate) async fn end(mut child: UtilityProcess) -> Result<()> {
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

fn round_trips(ctx: &Ctx, flavor: Flavor, entry: &str, shape: Shape) -> Result<Vec<f64>> {
    let iters = crate::rtt_iters(ctx);
    flavor.runtime()?.block_on(async {
        let mut child = fork_entry(entry, NO_ARGS, ForkOptions::default())?;
        expect_spawn(&mut child).await?;
        let text = "x".repeat(64);
        let bytes = [b'x'; 64];
        let mut samples = Vec::new();
        for round in 0..=ctx.samples() {
            let started = Instant::now();
            for _ in 0..iters {
                match shape {
                    Shape::Serde => child.post_message(&text)?,
                    Shape::Bytes => child.post_bytes(&bytes)?,
                }
                let echo = expect_message(&mut child).await?;
                let ok = match shape {
                    Shape::Serde => echo.data::<&str>()? == text,
                    Shape::Bytes => echo.bytes() == bytes,
                };
                if !ok {
                    return Err("the echo differs from the ping".into());
                }
            }
            // Round 0 is the warm-up.
            if round > 0 {
                samples.push(started.elapsed().as_secs_f64() / iters as f64);
            }
        }
        end(child).await?;
        Ok(samples)
    })
}

/// Round trips with no async runtime on either side.
fn blocking_round_trips(ctx: &Ctx) -> Result<Vec<f64>> {
    let iters = crate::rtt_iters(ctx);
    let mut child = fork_entry("echo-blocking", NO_ARGS, ForkOptions::default())?;
    let bytes = [b'x'; 64];
    let mut samples = Vec::new();
    for round in 0..=ctx.samples() {
        let started = Instant::now();
        for _ in 0..iters {
            child.post_bytes(&bytes)?;
            loop {
                match child.next_event_blocking() {
                    Some(Event::Message(echo)) if echo.bytes() == bytes => break,
                    Some(Event::Spawn) => {}
                    other => return Err(format!("unexpected {other:?}").into()),
                }
            }
        }
        if round > 0 {
            samples.push(started.elapsed().as_secs_f64() / iters as f64);
        }
    }
    child.kill();
    while let Some(event) = child.next_event_blocking() {
        if let Event::Error(error) = event {
            return Err(error.into());
        }
    }
    Ok(samples)
}

/// Round trips with low-latency mode on both sides, and the CPU time both processes spent
/// per round trip (from `/proc/<pid>/stat`, so spinning is counted).
fn low_latency(ctx: &Ctx) -> Result<Vec<Vec<f64>>> {
    let iters = crate::rtt_iters(ctx);
    Flavor::CurrentThread.runtime()?.block_on(async {
        let mut child = fork_entry("echo-spin", NO_ARGS, ForkOptions::default())?;
        child.set_low_latency(Some(SPIN));
        expect_spawn(&mut child).await?;
        let pid = child.pid().ok_or("the child has a pid")?;
        let bytes = [b'x'; 64];
        let (mut times, mut cpus) = (Vec::new(), Vec::new());
        for round in 0..=ctx.samples() {
            let cpu_before = cpu_seconds(std::process::id())? + cpu_seconds(pid)?;
            let started = Instant::now();
            for _ in 0..iters {
                child.post_bytes(&bytes)?;
                if expect_message(&mut child).await?.bytes() != bytes {
                    return Err("the echo differs from the ping".into());
                }
            }
            let elapsed = started.elapsed().as_secs_f64();
            let cpu = cpu_seconds(std::process::id())? + cpu_seconds(pid)? - cpu_before;
            if round > 0 {
                times.push(elapsed / iters as f64);
                cpus.push(cpu / iters as f64);
            }
        }
        end(child).await?;
        Ok(vec![times, cpus])
    })
}

/// How long low-latency children and parents spin at most.
const SPIN: Duration = Duration::from_micros(50);

/// CPU time (user + system) process `pid` has used, from `/proc/<pid>/stat`.
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after_name = stat.rsplit_once(')').ok_or("a malformed stat")?.1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 14 and 15 of stat (utime, stime), counted from the state (field 3) here.
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(ticks / per_second)
}

fn child_to_child(ctx: &Ctx) -> Result<Vec<f64>> {
    let iters = crate::rtt_iters(ctx);
    Flavor::CurrentThread.runtime()?.block_on(async {
        let echo = fork_entry("port-echo", NO_ARGS, ForkOptions::default())?;
        let mut pinger = fork_entry("port-pinger", NO_ARGS, ForkOptions::default())?;
        let MessageChannel { port1, port2 } = MessageChannel::new()?;
        echo.post_message_with_ports(&"echo on this", vec![port1])?;
        let order: PingOrder = (iters, ctx.samples() as u32, iters / 10);
        pinger.post_message_with_ports(&order, vec![port2])?;
        expect_spawn(&mut pinger).await?;
        let samples: Vec<f64> = expect_message(&mut pinger).await?.data()?;
        end(pinger).await?;
        end(echo).await?;
        Ok(samples)
    })
}

fn stream(ctx: &Ctx, size: usize) -> Result<Vec<f64>> {
    let count = stream_count(ctx, size);
    let payload = vec![b'x'; size];
    let (samples, queue_full) = Flavor::CurrentThread.runtime()?.block_on(async {
        let mut child = fork_entry("sink", NO_ARGS, ForkOptions::default())?;
        expect_spawn(&mut child).await?;
        let rounds = stream_rounds(ctx, &mut child, count, count * size as u64, |child| {
            child.post_bytes(&payload)
        })
        .await?;
        end(child).await?;
        Ok::<_, BoxError>(rounds)
    })?;
    if queue_full > 0 {
        ctx.note(format!(
            "ours.stream.{size} ({}): post_bytes returned QueueFull {queue_full} times; the \
             parent slept 100 µs and retried each time (there is no way to await room)",
            ctx.placement.as_str()
        ));
    }
    Ok(samples)
}

/// One-way throughput to a counting child, `ctx.samples()` rounds after a warm-up: each round
/// posts the order `count`, then `count` messages with `post` (backing off 100 µs whenever
/// the queue is full: there is no way to await room), then waits for the child's count,
/// which must be `expected`. Returns messages per second for each measured round, and how
/// many times the queue was full.
pub(crate) async fn stream_rounds(
    ctx: &Ctx,
    child: &mut UtilityProcess,
    count: u64,
    expected: u64,
    mut post: impl FnMut(&UtilityProcess) -> std::result::Result<(), Error>,
) -> Result<(Vec<f64>, u64)> {
    let mut queue_full = 0u64;
    let mut samples = Vec::new();
    for round in 0..=ctx.samples() {
        let started = Instant::now();
        child.post_message(&count)?;
        for _ in 0..count {
            loop {
                match post(child) {
                    Ok(()) => break,
                    Err(Error::QueueFull { .. }) => {
                        queue_full += 1;
                        tokio::time::sleep(Duration::from_micros(100)).await;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        let counted: u64 = expect_message(child).await?.data()?;
        let elapsed = started.elapsed().as_secs_f64();
        if counted != expected {
            return Err(format!("the child counted {counted}, not {expected}").into());
        }
        if round > 0 {
            samples.push(count as f64 / elapsed);
        }
    }
    Ok((samples, queue_full))
}

fn payload(ctx: &Ctx) -> Result<Vec<f64>> {
    let data = vec![0x5Au8; PAYLOAD_64MIB];
    Flavor::CurrentThread.runtime()?.block_on(async {
        let mut child = fork_entry("sink", NO_ARGS, ForkOptions::default())?;
        expect_spawn(&mut child).await?;
        let mut samples = Vec::new();
        for round in 0..=ctx.samples() {
            let started = Instant::now();
            child.post_message(&1u64)?;
            child.post_bytes(&data)?;
            let bytes: u64 = expect_message(&mut child).await?.data()?;
            let elapsed = started.elapsed().as_secs_f64();
            if bytes != PAYLOAD_64MIB as u64 {
                return Err(format!("the child received {bytes} bytes").into());
            }
            if round > 0 {
                samples.push(PAYLOAD_64MIB as f64 / elapsed);
            }
        }
        end(child).await?;
        Ok(samples)
    })
}

fn spawn(ctx: &Ctx, options: impl Fn() -> ForkOptions) -> Result<Vec<Vec<f64>>> {
    let reps = ctx.pick(5, 2);
    Flavor::CurrentThread.runtime()?.block_on(async {
        let (mut to_spawn, mut to_message) = (Vec::new(), Vec::new());
        for round in 0..=ctx.samples() {
            let (mut spawned, mut answered) = (0.0, 0.0);
            for _ in 0..reps {
                let started = Instant::now();
                let mut child = fork_entry("hello", NO_ARGS, options())?;
                expect_spawn(&mut child).await?;
                spawned += started.elapsed().as_secs_f64();
                expect_message(&mut child).await?;
                answered += started.elapsed().as_secs_f64();
                end(child).await?;
            }
            if round > 0 {
                to_spawn.push(spawned / reps as f64);
                to_message.push(answered / reps as f64);
            }
        }
        Ok(vec![to_spawn, to_message])
    })
}

fn idle_rss(ctx: &Ctx, entry: &str) -> Result<Vec<f64>> {
    Flavor::CurrentThread.runtime()?.block_on(async {
        let mut samples = Vec::new();
        for _ in 0..ctx.samples() {
            let mut child = fork_entry(entry, NO_ARGS, ForkOptions::default())?;
            expect_spawn(&mut child).await?;
            expect_message(&mut child).await?;
            let pid = child.pid().ok_or("no pid")?;
            samples.push(sys::vm_rss(pid)?);
            end(child).await?;
        }
        Ok(samples)
    })
}

fn concurrent(ctx: &Ctx, n: usize) -> Result<Vec<f64>> {
    let samples = if n >= 1000 {
        ctx.samples().min(5)
    } else {
        ctx.samples()
    };
    Flavor::CurrentThread.runtime()?.block_on(async {
        let mut out = Vec::new();
        for _ in 0..samples {
            let started = Instant::now();
            let mut children = Vec::with_capacity(n);
            for _ in 0..n {
                let child = fork_entry("echo-bytes", NO_ARGS, ForkOptions::default())?;
                child.post_bytes(b"ping")?;
                children.push(child);
            }
            for child in &mut children {
                expect_spawn(child).await?;
                expect_message(child).await?;
            }
            out.push(started.elapsed().as_secs_f64());
            for child in &children {
                child.kill();
            }
            for child in children {
                end(child).await?;
            }
        }
        Ok(out)
    })
}
