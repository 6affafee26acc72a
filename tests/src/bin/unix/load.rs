//! The load test: not a timed test, a program that puts the library under load and reports.
//!
//! ```text
//! cargo run --release -p utility-process-tests --bin load -- [CHILDREN [MESSAGES [CRASHES [CYCLES]]]]
//! ```
//!
//! Defaults: 1,000 children × 1,000 messages, 200 crashing children, 10,000 fork/kill cycles.
//!
//! 1. **Talk**: `CHILDREN` echo children run at once; each is sent `MESSAGES` numbered messages
//!    (at most 64 unanswered at a time) and must echo every one, in order.
//! 2. **Crash storm**, while they talk: once half the talkers are forked, `CRASHES` children
//!    that segfault at once; each must give exactly `Error::Crashed` (SIGSEGV) then `Exit`.
//! 3. **Fork/kill cycles**: `CYCLES` children started and killed, 50 at a time; each must give
//!    exactly `Spawn`, `Exit` (SIGTERM).
//!
//! It prints messages lost (must be 0), the parent's peak resident memory (`VmHWM`), its
//! descriptors, threads and zombie children before and after, and the duration of each phase;
//! it exits with code 1 if a message was lost, an event was wrong, or descriptors, threads or
//! zombies are not back at the baseline.
//!
//! The program raises its soft `RLIMIT_NOFILE` to the hard limit first: each running child
//! costs the parent two descriptors (its port and its pidfd), so 1,000 children and their
//! crashing neighbours need more than the usual soft limit of 1,024.
//!
//! The children are this same program, relaunched into its entry points (`echo`, `crash`):
//! nothing else needs to be built first.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use utility_process::unix::ExitStatusExt as _;
use utility_process::unix::Signal;
use utility_process::{
    fork_entry, init, Entry, Error, Event, ForkOptions, ParentPort, Stdio, UtilityProcess,
};
use utility_process_tests::{fd_count, proc_status, zombie_children};

/// How many messages a talker leaves unanswered at most.
const WINDOW: u64 = 64;
/// How long any one event may take before the run counts it as a hang.
const EVENT_TIMEOUT: Duration = Duration::from_secs(120);

/// The echo child: sends every message back.
async fn echo(port: ParentPort) -> Result<(), Error> {
    while let Some(message) = port.recv().await {
        port.post_bytes(message.bytes())?;
    }
    Ok(())
}

/// The crashing child, in the mode its first argument names: `return`, `segv` (dies of
/// SIGSEGV) or `sleep` (until it is killed).
fn crash(_port: ParentPort) -> Result<(), Error> {
    match std::env::args().nth(1).as_deref() {
        Some("segv") => {
            // SAFETY: back to the default disposition (std's handler only looks for stack
            // overflows), then raised: no code of ours runs.
            unsafe {
                libc::signal(libc::SIGSEGV, libc::SIG_DFL);
                libc::raise(libc::SIGSEGV);
            }
            unreachable!("SIGSEGV ends the process")
        }
        Some("sleep") => loop {
            std::thread::sleep(Duration::from_secs(3600));
        },
        _ => Ok(()),
    }
}

pub fn main() {
    init([Entry::new("echo", echo), Entry::blocking("crash", crash)]);
    let mut args = std::env::args().skip(1).map(|a| {
        a.parse::<u64>()
            .unwrap_or_else(|_| panic!("arguments are numbers: CHILDREN MESSAGES CRASHES CYCLES"))
    });
    let children = args.next().unwrap_or(1000);
    let messages = args.next().unwrap_or(1000);
    let crashes = args.next().unwrap_or(200);
    let cycles = args.next().unwrap_or(10_000);

    let (soft, hard) = raise_fd_limit();
    println!("RLIMIT_NOFILE: soft limit raised from {soft} to the hard limit {hard}");

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let ok = runtime.block_on(run(children, messages, crashes, cycles));
    std::process::exit(if ok { 0 } else { 1 });
}

async fn run(children: u64, messages: u64, crashes: u64, cycles: u64) -> bool {
    // Warm up: the library's thread and guardian exist from the first fork on.
    let mut warm = fork_entry("crash", ["return"], ForkOptions::default()).expect("fork");
    while next(&mut warm).await.is_some() {}
    drop(warm);
    settle().await;
    let fds_before = fd_count();
    let threads_before = proc_status("Threads");
    let rss_before = proc_status("VmRSS");
    println!("before: {fds_before} descriptors, {threads_before} threads, VmRSS {rss_before} KiB");

    let mut ok = true;

    // 1 and 2: talkers, and a crash storm in the middle of their talk.
    let started = Instant::now();
    let received = Arc::new(AtomicU64::new(0));
    let mut talkers = Vec::new();
    let mut storm = Vec::new();
    let mut storm_started = started;
    let mut echoed_at_storm = 0;
    for id in 0..children {
        let child = fork_entry("echo", [] as [&str; 0], ForkOptions::default())
            .unwrap_or_else(|e| panic!("fork echo #{id}: {e}"));
        talkers.push(tokio::spawn(talk(
            child,
            id,
            messages,
            Arc::clone(&received),
        )));
        if id == children / 2 {
            // Half the talkers are under way: crash a crowd at once in their midst.
            storm_started = Instant::now();
            echoed_at_storm = received.load(Ordering::Relaxed);
            storm = (0..crashes)
                .map(|_| {
                    let child = fork_entry(
                        "crash",
                        ["segv"],
                        ForkOptions::default().stderr(Stdio::Ignore),
                    )
                    .expect("fork crash");
                    tokio::spawn(crash_ends(child))
                })
                .collect();
        }
    }
    let forked = started.elapsed();
    let mut crashed_well = 0;
    for crashing in storm {
        match crashing.await.expect("crash task") {
            Ok(()) => crashed_well += 1,
            Err(problem) => {
                ok = false;
                eprintln!("crash storm: {problem}");
            }
        }
    }
    let storm_took = storm_started.elapsed();
    let echoed_during_storm = received.load(Ordering::Relaxed) - echoed_at_storm;
    let mut talk_problems = 0;
    for talker in talkers {
        if let Err(problem) = talker.await.expect("talk task") {
            talk_problems += 1;
            if talk_problems <= 10 {
                eprintln!("talk: {problem}");
            }
        }
    }
    let talk_took = started.elapsed();
    let expected = children * messages;
    let got = received.load(Ordering::Relaxed);
    let lost = expected - got.min(expected);
    ok &= lost == 0 && talk_problems == 0;
    println!(
        "talk: {children} children × {messages} messages = {expected} round trips in {:.1} s \
         ({forked:.1?} to fork them all); echoed back {got}; messages lost: {lost}; \
         children with a problem: {talk_problems}",
        talk_took.as_secs_f64()
    );
    println!(
        "crash storm: {crashed_well} of {crashes} children gave Error(Crashed SIGSEGV) then Exit, \
         all within {storm_took:.1?}; it began after {echoed_at_storm} echoes, and {echoed_during_storm} \
         more came back while it lasted"
    );
    println!(
        "peak VmHWM after talk and storm: {} KiB",
        proc_status("VmHWM")
    );

    // 3: fork/kill cycles.
    let started = Instant::now();
    let mut cycled = 0;
    let mut cycle_problems = 0;
    while cycled < cycles {
        let batch = (cycles - cycled).min(50);
        let children: Vec<UtilityProcess> = (0..batch)
            .map(|_| {
                fork_entry(
                    "crash",
                    ["sleep"],
                    ForkOptions::default().stderr(Stdio::Ignore),
                )
                .expect("fork crash")
            })
            .collect();
        for mut child in children {
            child.kill();
            if let Err(problem) = killed_ends(&mut child).await {
                cycle_problems += 1;
                if cycle_problems <= 10 {
                    eprintln!("cycle: {problem}");
                }
            }
        }
        cycled += batch;
    }
    ok &= cycle_problems == 0;
    println!(
        "fork/kill: {cycles} cycles in {:.1} s, {cycle_problems} with wrong events",
        started.elapsed().as_secs_f64()
    );

    settle().await;
    let fds_after = fd_count();
    let threads_after = proc_status("Threads");
    let zombies = zombie_children();
    println!(
        "after: {fds_after} descriptors (before {fds_before}), {threads_after} threads \
         (before {threads_before}), {} zombies, VmRSS {} KiB, peak VmHWM {} KiB",
        zombies.len(),
        proc_status("VmRSS"),
        proc_status("VmHWM")
    );
    ok &= fds_after == fds_before && threads_after <= threads_before && zombies.is_empty();
    println!("{}", if ok { "RESULT: ok" } else { "RESULT: FAILED" });
    ok
}

/// One talker: `messages` numbered messages to its echo child, each echoed in order; then the
/// child is killed and must end with `Exit` alone.
async fn talk(
    mut child: UtilityProcess,
    id: u64,
    messages: u64,
    received: Arc<AtomicU64>,
) -> Result<(), String> {
    let body = |seq: u64| {
        let mut bytes = id.to_le_bytes().to_vec();
        bytes.extend_from_slice(&seq.to_le_bytes());
        bytes
    };
    let (mut sent, mut got) = (0, 0);
    while got < messages {
        while sent < messages && sent - got < WINDOW {
            child
                .post_bytes(&body(sent))
                .map_err(|e| format!("child #{id}: post {sent}: {e}"))?;
            sent += 1;
        }
        match next(&mut child).await {
            Some(Event::Spawn) => {}
            Some(Event::Message(message)) if message.bytes() == body(got) => {
                got += 1;
                received.fetch_add(1, Ordering::Relaxed);
            }
            other => return Err(format!("child #{id}: expected echo {got}, got {other:?}")),
        }
    }
    child.kill();
    killed_ends(&mut child)
        .await
        .map_err(|e| format!("child #{id}: {e}"))
}

/// A child told to segfault must give `Spawn`, `Error(Crashed SIGSEGV)`, `Exit`.
async fn crash_ends(mut child: UtilityProcess) -> Result<(), String> {
    let mut events = Vec::new();
    while let Some(event) = next(&mut child).await {
        events.push(event);
    }
    match events.as_slice() {
        [Event::Spawn, Event::Error(Error::Crashed {
            status: crashed, ..
        }), Event::Exit(status)]
            if crashed.signal() == Some(Signal::SIGSEGV)
                && status.signal() == Some(Signal::SIGSEGV) =>
        {
            Ok(())
        }
        other => Err(format!("expected Spawn, Crashed, Exit; got {other:?}")),
    }
}

/// After `kill()`: what is left must be `Exit` by SIGTERM (after `Spawn`, if not yet seen).
async fn killed_ends(child: &mut UtilityProcess) -> Result<(), String> {
    let mut events = Vec::new();
    while let Some(event) = next(child).await {
        events.push(event);
    }
    match events.as_slice() {
        [Event::Exit(status)] | [Event::Spawn, Event::Exit(status)]
            if status.signal() == Some(Signal::SIGTERM) =>
        {
            Ok(())
        }
        other => Err(format!("expected Exit by SIGTERM; got {other:?}")),
    }
}

/// The next event; a hang past [`EVENT_TIMEOUT`] ends the run.
async fn next(child: &mut UtilityProcess) -> Option<Event> {
    match tokio::time::timeout(EVENT_TIMEOUT, child.next_event()).await {
        Ok(event) => event,
        Err(_) => {
            eprintln!(
                "no event from {} within {EVENT_TIMEOUT:?}: a hang",
                child.service_name()
            );
            std::process::exit(1);
        }
    }
}

/// Waits until the library's thread has let go of every ended child's pidfd.
async fn settle() {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline && pidfds() > 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn pidfds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|dir| {
            dir.flatten()
                .filter(|e| {
                    std::fs::read_link(e.path())
                        .is_ok_and(|t| t.as_os_str() == "anon_inode:[pidfd]")
                })
                .count()
        })
        .unwrap_or(0)
}

/// Raises the soft descriptor limit to the hard one; returns both as they were.
fn raise_fd_limit() -> (u64, u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into `limit`.
    let got = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    assert_eq!(got, 0, "getrlimit");
    let before = limit.rlim_cur;
    limit.rlim_cur = limit.rlim_max;
    // SAFETY: setrlimit reads one valid rlimit.
    let set = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
    assert_eq!(set, 0, "setrlimit");
    (before, limit.rlim_max)
}
