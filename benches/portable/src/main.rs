//! Round trips through the OS's plainest pipe and through a utility process's port, and shared
//! buffers against memcpy, side by side, in one run, on whatever OS runs it: the benchmark that
//! also builds for Windows (the main one, `benches/`, measures Linux against its peers and its
//! kernel's floors).
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
//!
//! A second table puts 64 MiB `SharedBuffer`s end to end against a memcpy of 64 MiB: *first
//! use* (`SharedBuffer::new`, filled, frozen, posted; the child adopts it, reads every byte and
//! answers) and *reused* (`BufferPool::take`, filled, posted writable; the child adopts it into
//! its pool, reads it and sends it back with its answer; `put` back), each `BUFFERS` times a
//! run, as the main benchmark's `ours.shared` rows do on Linux.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use utility_process::{
    fork_entry, init, BufferPool, Entry, Event, ForkOptions, Message, ParentPort, SharedBuffer,
    Transferable, UtilityProcess,
};

/// Round trips per run.
const ROUNDS: usize = 2_000;
/// Runs per case (the median is reported).
const RUNS: usize = 5;
/// The payloads measured, in bytes.
const SIZES: [usize; 2] = [64, 64 * 1024];
/// The shared buffers' size.
const BUFFER: usize = 64 << 20;
/// Buffers per run of a shared-buffer case.
const BUFFERS: usize = 8;

fn main() {
    init([
        Entry::new("echo", echo),
        Entry::new("buffer-sink", buffer_sink),
    ]);
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
    println!();
    println!("| case | GB/s | ratio to memcpy |");
    println!("| --- | ---: | ---: |");
    let memcpy = median(memcpy);
    let rate = |d: Duration| (BUFFERS * BUFFER) as f64 / d.as_secs_f64() / 1e9;
    println!("| floor: memcpy 64 MiB | {:.2} | 1.00 |", rate(memcpy));
    for (case, reuse) in [("first use", false), ("reused", true)] {
        let ours = median(|| shared_buffers(reuse));
        println!(
            "| ours: SharedBuffer 64 MiB end to end, {case} | {:.2} | {:.2} |",
            rate(ours),
            memcpy.as_secs_f64() / ours.as_secs_f64()
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

/// `BUFFERS` copies of 64 MiB between two buffers, both touched first.
fn memcpy() -> Duration {
    let source = vec![0xA5u8; BUFFER];
    let mut target = vec![0u8; BUFFER];
    target.copy_from_slice(&source); // touched before the clock: no page faults timed
    let start = Instant::now();
    for _ in 0..BUFFERS {
        target.copy_from_slice(std::hint::black_box(&source));
        std::hint::black_box(&mut target);
    }
    start.elapsed()
}

/// `BUFFERS` shared buffers of 64 MiB end to end (see the module docs), after one untimed.
fn shared_buffers(reuse: bool) -> Duration {
    let mut child = fork_entry("buffer-sink", [] as [&str; 0], ForkOptions::default())
        .expect("the sink entry starts");
    let pool = BufferPool::new();
    let mut round = |byte: u8| {
        let mut buffer = if reuse {
            pool.take(BUFFER)
        } else {
            SharedBuffer::new(BUFFER)
        }
        .expect("memory for a buffer");
        buffer
            .as_mut_slice()
            .expect("a new buffer is writable")
            .fill(byte);
        if !reuse {
            buffer = buffer.freeze().expect("a new buffer freezes");
        }
        child
            .post_message_with_transfer(&(), vec![buffer.into()])
            .expect("the child is there");
        let mut answer = next_message(&mut child);
        for back in answer.take_buffers() {
            pool.put(back).expect("the pool takes back its own buffer");
        }
        let sum: u64 = answer.data().expect("the sum");
        assert_eq!(sum, word_sum(&[byte; 8]) * (BUFFER / 8) as u64);
    };
    round(1);
    let start = Instant::now();
    for byte in 0..BUFFERS {
        round(byte as u8 + 2);
    }
    let elapsed = start.elapsed();
    child.kill();
    while child.next_event_blocking().is_some() {}
    elapsed
}

/// The next message from `child`.
fn next_message(child: &mut UtilityProcess) -> Message {
    loop {
        match child.next_event_blocking() {
            Some(Event::Message(message)) => return message,
            Some(Event::Spawn) => {}
            other => panic!("the sink ended: {other:?}"),
        }
    }
}

/// The utility process that reads shared buffers: adopts each into a pool, sums every byte
/// (as 64-bit words, which the compiler vectorises), answers with the sum and sends back the
/// writable ones.
async fn buffer_sink(port: ParentPort) -> Result<(), utility_process::Error> {
    let pool = BufferPool::new();
    while let Some(mut message) = port.recv_blocking() {
        let buffers: Vec<_> = message
            .take_buffers()
            .into_iter()
            .map(|b| pool.adopt(b))
            .collect();
        let sum: u64 = buffers.iter().map(|b| word_sum(b)).sum();
        let back = buffers
            .into_iter()
            .filter(|b| !b.is_read_only())
            .map(Transferable::from)
            .collect();
        port.post_message_with_transfer(&sum, back)?;
    }
    Ok(())
}

/// The sum of `bytes` read as little-endian 64-bit words (a multiple of 8 bytes long).
fn word_sum(bytes: &[u8]) -> u64 {
    bytes
        .chunks_exact(8)
        .map(|word| u64::from_le_bytes(word.try_into().expect("eight bytes")))
        .fold(0, u64::wrapping_add)
}

/// The utility process: answers every message with its own bytes, until the parent leaves.
async fn echo(port: ParentPort) -> Result<(), utility_process::Error> {
    while let Some(message) = port.recv_blocking() {
        port.post_bytes(message.bytes())?;
    }
    Ok(())
}
