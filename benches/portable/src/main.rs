//! Round trips through the OS's plainest pipe and through a utility process's port, side by
//! side, in one run, on whatever OS runs it: the benchmark that also builds for Windows (the
//! main one, `benches/`, measures Linux against its peers and its kernel's floors).
//!
//! ```text
//! cargo run --release -p bench-portable            # Linux
//! .ci/cross --bench                                # Windows, under Wine
//! ```
//!
//! - **floor**: this program started again with its stdin and stdout as anonymous pipes
//!   (`std::process::Command`), echoing what it reads: the OS's own pipe, nothing of ours.
//! - **ours**: a utility process (`fork_entry`) echoing each message through its parent port,
//!   with the blocking API, so that no async runtime's wake-up is measured.
//!
//! Each case runs `ROUNDS` round trips of a payload, after a warm-up, and reports the median of
//! `RUNS` runs. Under Wine absolute times say little about Windows: read the ratios.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use utility_process::{fork_entry, init, Entry, Event, ForkOptions, ParentPort};

/// Round trips per run.
const ROUNDS: usize = 2_000;
/// Runs per case (the median is reported).
const RUNS: usize = 5;
/// The payloads measured, in bytes.
const SIZES: [usize; 2] = [64, 64 * 1024];

fn main() {
    init([Entry::new("echo", echo)]);
    if std::env::args().nth(1).as_deref() == Some("--pipe-echo") {
        pipe_echo();
        return;
    }
    println!("| case | payload | µs per round trip | ratio to the floor |");
    println!("| --- | ---: | ---: | ---: |");
    for size in SIZES {
        let floor = median(|| floor_round_trips(size));
        let ours = median(|| ours_round_trips(size));
        let per = |d: Duration| d.as_secs_f64() * 1e6 / ROUNDS as f64;
        println!("| floor: OS pipe | {size} B | {:.1} | 1.00 |", per(floor));
        println!(
            "| ours: parent port | {size} B | {:.1} | {:.2} |",
            per(ours),
            ours.as_secs_f64() / floor.as_secs_f64()
        );
    }
}

/// The median duration of `RUNS` runs of `run`.
fn median(mut run: impl FnMut() -> Duration) -> Duration {
    let mut times: Vec<Duration> = (0..RUNS).map(|_| run()).collect();
    times.sort();
    times[RUNS / 2]
}

/// `ROUNDS` round trips of `size` bytes through this program's own stdin and stdout pipes.
fn floor_round_trips(size: usize) -> Duration {
    let exe = std::env::current_exe().expect("the benchmark's own path");
    let mut child = Command::new(exe)
        .arg("--pipe-echo")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the pipe echo starts");
    let mut to = child.stdin.take().expect("piped stdin");
    let mut from = child.stdout.take().expect("piped stdout");
    let message = vec![7u8; size];
    let mut answer = vec![0u8; size];
    let mut round = |to: &mut std::process::ChildStdin| {
        to.write_all(&message).expect("the echo reads");
        from.read_exact(&mut answer).expect("the echo answers");
    };
    for _ in 0..ROUNDS / 10 {
        round(&mut to);
    }
    let start = Instant::now();
    for _ in 0..ROUNDS {
        round(&mut to);
    }
    let elapsed = start.elapsed();
    drop(to);
    child.wait().expect("the echo ends");
    elapsed
}

/// The floor's child: echoes stdin to stdout until end-of-file.
fn pipe_echo() {
    let mut input = std::io::stdin().lock();
    let mut output = std::io::stdout().lock();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match input.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if output
                    .write_all(&buf[..n])
                    .and_then(|()| output.flush())
                    .is_err()
                {
                    return;
                }
            }
        }
    }
}

/// `ROUNDS` round trips of `size` bytes through a utility process's parent port.
fn ours_round_trips(size: usize) -> Duration {
    let mut child =
        fork_entry("echo", [] as [&str; 0], ForkOptions::default()).expect("the echo entry starts");
    let message = vec![7u8; size];
    let round = |child: &mut utility_process::UtilityProcess| {
        child.post_bytes(&message).expect("the child is there");
        loop {
            match child.next_event_blocking() {
                Some(Event::Message(answer)) => {
                    assert_eq!(answer.bytes().len(), size);
                    return;
                }
                Some(Event::Spawn) => {}
                other => panic!("the echo ended: {other:?}"),
            }
        }
    };
    for _ in 0..ROUNDS / 10 {
        round(&mut child);
    }
    let start = Instant::now();
    for _ in 0..ROUNDS {
        round(&mut child);
    }
    let elapsed = start.elapsed();
    child.kill();
    while child.next_event_blocking().is_some() {}
    elapsed
}

/// The utility process: answers every message with its own bytes, until the parent leaves.
async fn echo(port: ParentPort) -> Result<(), utility_process::Error> {
    while let Some(message) = port.recv_blocking() {
        port.post_bytes(message.bytes())?;
    }
    Ok(())
}
