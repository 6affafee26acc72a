//! Messages both ways: values and raw bytes, order, sizes, limits, queueing, exit flushing,
//! the blocking API, and a child written in Python from `docs/PROTOCOL.md` alone.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
#[cfg(unix)]
use utility_process::unix::ExitStatusExt as _;
#[cfg(unix)]
use utility_process::SpawnStep;
use utility_process::{fork, Error, Event, ForkOptions, Message, Stdio, UtilityProcess};
use utility_process_tests::{continue_process, ended_by_kill, next_event, stop_process, Ping};

const ECHO: &str = env!("CARGO_BIN_EXE_echo");
const INSPECT: &str = env!("CARGO_BIN_EXE_inspect");
const SENDER: &str = env!("CARGO_BIN_EXE_sender");
#[cfg(unix)]
const ECHO_PY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/children/echo.py");

const NO_ARGS: [&str; 0] = [];

// ---- helpers ---------------------------------------------------------------------------------

fn echo(args: &[&str]) -> UtilityProcess {
    fork(ECHO, args, ForkOptions::default()).expect("echo starts")
}

async fn expect_spawn(child: &mut UtilityProcess) {
    match next_event(child).await {
        Some(Event::Spawn) => {}
        other => panic!(
            "expected Spawn from {}, got {other:?}",
            child.service_name()
        ),
    }
}

async fn expect_message(child: &mut UtilityProcess) -> Message {
    match next_event(child).await {
        Some(Event::Message(message)) => message,
        other => panic!(
            "expected a message from {}, got {other:?}",
            child.service_name()
        ),
    }
}

/// Kills the child and checks that its end is reported as Exit alone (no Error: the parent
/// asked for it), then nothing.
async fn kill_and_expect_exit(child: &mut UtilityProcess) {
    assert!(child.kill(), "{} was still running", child.service_name());
    match next_event(child).await {
        Some(Event::Exit(status)) => assert!(ended_by_kill(&status), "{status}"),
        other => panic!("expected Exit after kill, got {other:?}"),
    }
    assert!(next_event(child).await.is_none());
}

/// `len` deterministic bytes that look random (xorshift64*), so that a shifted, dropped or
/// repeated chunk cannot go unnoticed.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The byte `sender` puts at offset `i >= 8` of message `seq` (mirrors `children/sender.rs`).
fn sender_pattern(seq: u64, i: usize) -> u8 {
    (seq as usize).wrapping_mul(31).wrapping_add(i) as u8
}

/// Starts `sender COUNT SIZE` and checks that every message arrives, in order and intact,
/// followed by a clean exit.
async fn all_messages_arrive_before_exit(count: u64, size: usize) {
    let mut child = fork(
        SENDER,
        [count.to_string(), size.to_string()],
        ForkOptions::default(),
    )
    .unwrap();
    expect_spawn(&mut child).await;
    let mut received = 0u64;
    loop {
        match next_event(&mut child).await {
            Some(Event::Message(message)) => {
                let bytes = message.bytes();
                assert_eq!(bytes.len(), size, "message {received} has the wrong size");
                let seq = u64::from_le_bytes(bytes[..8].try_into().unwrap());
                assert_eq!(seq, received, "messages out of order or lost");
                let intact = bytes
                    .iter()
                    .enumerate()
                    .skip(8)
                    .all(|(i, &b)| b == sender_pattern(seq, i));
                assert!(intact, "message {seq} of {size} bytes is corrupted");
                received += 1;
            }
            Some(Event::Exit(status)) => {
                assert_eq!(status.code(), Some(0), "{status}");
                break;
            }
            other => panic!("after {received} of {count} messages: unexpected {other:?}"),
        }
    }
    assert_eq!(received, count, "messages lost at exit");
    assert!(next_event(&mut child).await.is_none());
    assert!(
        matches!(child.post_bytes(b"too late"), Err(Error::Closed { .. })),
        "posting after Exit must be Err(Closed)"
    );
}

// ---- values and bytes ------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Shape {
    Point,
    Circle(f64),
    Pair(i32, i32),
    Rect { width: u32, height: u32 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Everything {
    unit: (),
    flag: bool,
    small: u8,
    big: u64,
    negative: i64,
    float: f64,
    text: String,
    empty_text: String,
    bytes: Vec<u8>,
    missing: Option<u32>,
    present: Option<String>,
    shapes: Vec<Shape>,
    map: BTreeMap<String, Vec<i16>>,
    tuple: (char, u16, String),
    nested: Vec<Vec<Option<bool>>>,
}

fn everything() -> Everything {
    Everything {
        unit: (),
        flag: true,
        small: 255,
        big: u64::MAX,
        negative: i64::MIN,
        float: -1.5e300,
        text: "héllo, wörld ✓ 🦀 \0 \n \u{7f}".into(),
        empty_text: String::new(),
        bytes: (0..=255).collect(),
        missing: None,
        present: Some("here".into()),
        shapes: vec![
            Shape::Point,
            Shape::Circle(0.25),
            Shape::Pair(-1, i32::MAX),
            Shape::Rect {
                width: 640,
                height: 480,
            },
        ],
        map: [
            ("a".to_owned(), vec![1, -2, 3]),
            ("".to_owned(), vec![]),
            ("ключ".to_owned(), vec![i16::MIN, i16::MAX]),
        ]
        .into_iter()
        .collect(),
        tuple: ('✓', 7, "x".into()),
        nested: vec![vec![], vec![None, Some(true), Some(false)]],
    }
}

#[tokio::test]
async fn a_serde_value_round_trips_through_echo() {
    let mut child = echo(&[]);
    expect_spawn(&mut child).await;
    let value = everything();
    child.post_message(&value).unwrap();
    child.post_message("a bare string").unwrap();
    child.post_message(&Shape::Point).unwrap();
    child.post_message(&(1u8, "two", [3.0f32])).unwrap();

    let message = expect_message(&mut child).await;
    assert_eq!(message.data::<Everything>().unwrap(), value);
    // The bytes are exactly what encoding the value here gives.
    assert_eq!(
        message.bytes(),
        Message::from_value(&value).unwrap().bytes(),
        "the echo changed the bytes"
    );
    // Borrowing decode.
    let message = expect_message(&mut child).await;
    assert_eq!(message.data::<&str>().unwrap(), "a bare string");
    assert_eq!(
        expect_message(&mut child).await.data::<Shape>().unwrap(),
        Shape::Point
    );
    assert_eq!(
        expect_message(&mut child)
            .await
            .data::<(u8, String, Vec<f32>)>()
            .unwrap(),
        (1, "two".to_owned(), vec![3.0])
    );
    kill_and_expect_exit(&mut child).await;
}

#[tokio::test]
async fn raw_bytes_round_trip_byte_exact_including_an_empty_message() {
    let mut child = echo(&[]);
    expect_spawn(&mut child).await;
    let payloads: Vec<Vec<u8>> = vec![
        vec![],
        vec![0],
        (0..=255).collect(),
        // Not MessagePack (0xc1 is never used): raw bytes are not looked at.
        vec![0xc1, 0xc1, 0xff],
        // A whole frame header inside a payload must not confuse anyone.
        vec![0x0d, 0, 0, 0, 0x01, b'U', b'P', b'R', b'C', 1, 0, 0, 0],
        vec![],
        noise(100_000, 7),
        vec![],
    ];
    for payload in &payloads {
        child.post_bytes(payload).unwrap();
    }
    for (i, payload) in payloads.iter().enumerate() {
        let message = expect_message(&mut child).await;
        assert_eq!(message.len(), payload.len(), "message {i}: length");
        assert_eq!(message.is_empty(), payload.is_empty(), "message {i}");
        assert!(message.bytes() == &payload[..], "message {i}: bytes differ");
        assert!(
            message.into_bytes() == *payload,
            "message {i}: into_bytes differs"
        );
    }
    kill_and_expect_exit(&mut child).await;
}

#[tokio::test]
async fn messages_posted_before_spawn_are_delivered_in_order() {
    let mut child = echo(&[]);
    for seq in 0..3 {
        child
            .post_message(&Ping {
                seq,
                body: format!("early {seq}"),
            })
            .unwrap();
    }
    expect_spawn(&mut child).await;
    for seq in 0..3 {
        let ping: Ping = expect_message(&mut child).await.data().unwrap();
        assert_eq!(
            ping,
            Ping {
                seq,
                body: format!("early {seq}")
            }
        );
    }
    kill_and_expect_exit(&mut child).await;
}

#[tokio::test]
async fn ten_thousand_messages_arrive_in_order() {
    const COUNT: u64 = 10_000;
    let mut child = echo(&[]);
    expect_spawn(&mut child).await;
    for seq in 0..COUNT {
        child
            .post_message(&Ping {
                seq,
                body: "x".repeat((seq % 64) as usize),
            })
            .unwrap();
    }
    for seq in 0..COUNT {
        let ping: Ping = expect_message(&mut child).await.data().unwrap();
        assert_eq!(ping.seq, seq, "out of order");
        assert_eq!(ping.body.len(), (seq % 64) as usize);
    }
    kill_and_expect_exit(&mut child).await;
}

#[tokio::test]
async fn a_sixteen_mebibyte_message_arrives_intact() {
    let payload = noise(16 * 1024 * 1024, 0x5eed);
    let mut child = echo(&[]);
    expect_spawn(&mut child).await;
    child.post_bytes(&payload).unwrap();
    // And a small one behind it: the big one must not swallow or shift it.
    child.post_bytes(b"after").unwrap();
    let message = expect_message(&mut child).await;
    assert_eq!(message.len(), payload.len());
    assert!(
        message.bytes() == &payload[..],
        "the 16 MiB message differs"
    );
    assert_eq!(expect_message(&mut child).await.bytes(), b"after");
    kill_and_expect_exit(&mut child).await;
}

// ---- limits ----------------------------------------------------------------------------------

#[tokio::test]
async fn a_message_over_max_message_size_is_refused_at_post_and_nothing_is_sent() {
    const MAX: usize = 1024;
    let mut child = fork(ECHO, NO_ARGS, ForkOptions::default().max_message_size(MAX)).unwrap();
    expect_spawn(&mut child).await;

    match child.post_bytes(&[0xee; MAX + 1]) {
        Err(Error::MessageTooLarge { size, max }) => {
            assert_eq!(max, MAX as u64);
            assert!(size > MAX as u64, "size {size}");
        }
        other => panic!("expected MessageTooLarge, got {other:?}"),
    }
    match child.post_message(&"y".repeat(2 * MAX)) {
        Err(Error::MessageTooLarge { size, max }) => {
            assert_eq!(max, MAX as u64);
            assert!(size > MAX as u64, "size {size}");
        }
        other => panic!("expected MessageTooLarge, got {other:?}"),
    }

    // Exactly the limit is allowed, both ways: the child's limit is the parent's.
    let at_limit = noise(MAX, 3);
    child.post_bytes(&at_limit).unwrap();
    child
        .post_message(&Ping {
            seq: 1,
            body: "small".into(),
        })
        .unwrap();
    // The refused messages never reached the child: the first echo is the one at the limit.
    let message = expect_message(&mut child).await;
    assert!(
        message.bytes() == &at_limit[..],
        "expected the message at the limit first"
    );
    assert_eq!(
        expect_message(&mut child).await.data::<Ping>().unwrap(),
        Ping {
            seq: 1,
            body: "small".into()
        }
    );
    kill_and_expect_exit(&mut child).await;
}

#[tokio::test]
async fn a_child_posting_over_the_parents_limit_gets_message_too_large() {
    // `sender` expects its post to succeed, so the refusal shows as its panic.
    let mut child = fork(
        SENDER,
        ["1", "2048"],
        // The panic is reported through the port; keep its printout out of the test's output.
        ForkOptions::default()
            .max_message_size(1024)
            .stderr(Stdio::Ignore),
    )
    .unwrap();
    expect_spawn(&mut child).await;
    match next_event(&mut child).await {
        Some(Event::Error(Error::Panicked { panic, .. })) => {
            assert!(
                panic.message.contains("MessageTooLarge"),
                "panic message: {}",
                panic.message
            );
        }
        other => panic!("expected the sender's panic, got {other:?}"),
    }
    match next_event(&mut child).await {
        Some(Event::Exit(status)) => assert!(!status.success(), "{status}"),
        other => panic!("expected Exit, got {other:?}"),
    }
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)] // only its shape matters
struct WrongType {
    seq: String,
    missing: Vec<u8>,
}

#[tokio::test]
async fn a_decode_error_in_the_users_type_is_err_decode_and_the_port_stays_usable() {
    let mut child = echo(&[]);
    expect_spawn(&mut child).await;
    let ping = Ping {
        seq: 9,
        body: "nine".into(),
    };
    child.post_message(&ping).unwrap();
    child.post_bytes(&[0xc1]).unwrap(); // never valid MessagePack
    child.post_bytes(&[]).unwrap();

    let message = expect_message(&mut child).await;
    assert!(matches!(message.data::<WrongType>(), Err(Error::Decode(_))));
    assert!(matches!(message.data::<u64>(), Err(Error::Decode(_))));
    assert!(matches!(
        message.data::<Vec<String>>(),
        Err(Error::Decode(_))
    ));
    // The message itself is untouched by a failed decode.
    assert_eq!(message.data::<Ping>().unwrap(), ping);
    let invalid = expect_message(&mut child).await;
    assert!(matches!(invalid.data::<Ping>(), Err(Error::Decode(_))));
    assert!(matches!(invalid.data::<()>(), Err(Error::Decode(_))));
    let empty = expect_message(&mut child).await;
    assert!(matches!(empty.data::<Ping>(), Err(Error::Decode(_))));

    // The port goes on.
    child.post_message(&ping).unwrap();
    assert_eq!(
        expect_message(&mut child).await.data::<Ping>().unwrap(),
        ping
    );
    kill_and_expect_exit(&mut child).await;
}

/// The CPU time this thread spends waiting `wait_ms` for an event from `child`, which sends
/// none.
async fn idle_cpu_micros(child: &mut UtilityProcess, wait_ms: u64) -> i64 {
    #[cfg(windows)]
    let cpu = || {
        use windows_sys::Win32::Foundation::FILETIME;
        use windows_sys::Win32::System::Threading::{GetCurrentThread, GetThreadTimes};
        let zero = FILETIME {
            dwLowDateTime: 0,
            dwHighDateTime: 0,
        };
        let [mut created, mut exited, mut kernel, mut user] = [zero; 4];
        // SAFETY: the pseudo-handle of this thread and four locals to fill.
        let ok = unsafe {
            GetThreadTimes(
                GetCurrentThread(),
                &mut created,
                &mut exited,
                &mut kernel,
                &mut user,
            )
        };
        assert_ne!(ok, 0, "GetThreadTimes");
        // In units of 100 ns.
        let micros = |t: FILETIME| {
            ((u64::from(t.dwHighDateTime) << 32 | u64::from(t.dwLowDateTime)) / 10) as i64
        };
        micros(kernel) + micros(user)
    };
    #[cfg(unix)]
    let cpu = || {
        // This thread's CPU time (`clock_gettime(2)`, CLOCK_THREAD_CPUTIME_ID: Linux and
        // macOS both have it). SAFETY: clock_gettime fills the zeroed struct we own.
        let time = unsafe {
            let mut time: libc::timespec = std::mem::zeroed();
            libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut time);
            time
        };
        time.tv_sec * 1_000_000 + time.tv_nsec / 1_000
    };
    let before = cpu();
    let wait = std::time::Duration::from_millis(wait_ms);
    let idle = tokio::time::timeout(wait, child.next_event()).await;
    assert!(idle.is_err(), "an event came from an idle child: {idle:?}");
    cpu() - before
}

#[tokio::test(flavor = "current_thread")]
async fn low_latency_mode_round_trips_in_order_and_parks_when_idle() {
    let mut child = echo(&[]);
    child.set_low_latency(Some(std::time::Duration::from_micros(200)));
    expect_spawn(&mut child).await;
    for seq in 0..1000u64 {
        child
            .post_message(&Ping {
                seq,
                body: String::new(),
            })
            .unwrap();
        assert_eq!(
            expect_message(&mut child).await.data::<Ping>().unwrap().seq,
            seq
        );
    }
    // Idle waits, with a spin budget of 150 ms: one shorter than the budget spins through it
    // (where spinning is on), one much longer spins for the budget and then parks.
    child.set_low_latency(Some(std::time::Duration::from_millis(150)));
    let short = idle_cpu_micros(&mut child, 100).await;
    let long = idle_cpu_micros(&mut child, 1000).await;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if utility_process_tests::skip_under_wine(
        "low_latency_mode_round_trips_in_order_and_parks_when_idle (its CPU-time checks)",
        "Wine's GetThreadTimes counts CPU time in whole scheduler ticks, too coarse for a \
         100 ms spin",
    ) {
    } else if cpus > 1 {
        assert!(
            short >= 50_000,
            "a 100 ms wait used {short} µs of CPU: it did not spin"
        );
        assert!(
            long < 600_000,
            "a 1 s wait used {long} µs of CPU: it did not park"
        );
    } else {
        // On one CPU the mode does not spin at all (it would only keep the peer off it).
        eprintln!(
            "low_latency_mode: one CPU here, so the mode must not spin: checking that instead"
        );
        assert!(
            short < 50_000 && long < 50_000,
            "spun on one CPU: {short} µs, {long} µs"
        );
    }
    kill_and_expect_exit(&mut child).await;
}

#[tokio::test]
async fn send_waits_for_room_where_post_would_fail_and_loses_nothing() {
    const LIMIT: usize = 256 * 1024;
    const CHUNK: usize = 64 * 1024;
    let mut child = fork(
        ECHO,
        NO_ARGS,
        ForkOptions::default().max_queued_bytes(LIMIT),
    )
    .unwrap();
    expect_spawn(&mut child).await;
    // Connected and echoing: then stopped, so that nothing more is read.
    child.post_bytes(b"hello").unwrap();
    assert_eq!(expect_message(&mut child).await.bytes(), b"hello");
    let pid = child.pid().expect("running");
    // Our own child, alive (it just answered).
    stop_process(pid);
    let mut posted: Vec<u8> = Vec::new();
    loop {
        let seq = posted.len() as u8;
        match child.post_bytes(&vec![seq; CHUNK]) {
            Ok(()) => posted.push(seq),
            Err(Error::QueueFull { .. }) => break,
            Err(other) => panic!("{other}"),
        }
        assert!(posted.len() < 1000, "the queue never filled");
    }
    let last = posted.len() as u8;
    {
        let pending = tokio::time::timeout(
            std::time::Duration::from_millis(200),
            child.send_bytes(&vec![last; CHUNK]),
        )
        .await;
        assert!(
            pending.is_err(),
            "send completed while the child could not read"
        );
    }
    continue_process(pid);
    // The cancelled send queued nothing; this one waits for room and then goes.
    child.send_bytes(&vec![last; CHUNK]).await.unwrap();
    posted.push(last);
    for &seq in &posted {
        let message = expect_message(&mut child).await;
        assert_eq!(message.len(), CHUNK);
        assert!(
            message.bytes().iter().all(|&b| b == seq),
            "message {seq} changed or out of order"
        );
    }
    kill_and_expect_exit(&mut child).await;
}

#[tokio::test]
async fn posting_to_a_child_that_never_reads_fails_with_queue_full_without_growing() {
    const LIMIT: usize = 1024 * 1024;
    const CHUNK: usize = 64 * 1024;
    // Far more than the limit plus any socket buffer: posting must fail long before this.
    const MAX_POSTS: usize = 2048;
    let mut child = fork(
        INSPECT,
        ["--never-read"],
        ForkOptions::default().max_queued_bytes(LIMIT),
    )
    .unwrap();
    expect_spawn(&mut child).await;
    let chunk = noise(CHUNK, 11);

    let mut accepted = 0usize;
    let first_refusal = loop {
        assert!(
            accepted < MAX_POSTS,
            "{accepted} posts of {CHUNK} bytes accepted by a child that never reads"
        );
        match child.post_bytes(&chunk) {
            Ok(()) => accepted += 1,
            Err(Error::QueueFull { queued, limit, .. }) => break (queued, limit),
            Err(other) => panic!("after {accepted} posts: expected QueueFull, got {other:?}"),
        }
    };
    let (queued, limit) = first_refusal;
    eprintln!("QueueFull after {accepted} posts of {CHUNK} bytes, {queued} bytes queued");
    assert_eq!(limit, LIMIT);
    assert!(queued >= LIMIT, "refused with only {queued} bytes queued");
    // At most one message past the limit is accepted (the check is before the append).
    assert!(
        queued < LIMIT + CHUNK + 64,
        "{queued} bytes queued, limit {LIMIT}"
    );
    // What is not queued sits in the kernel's socket buffer, which is bounded too (a socket's
    // send buffer is at most twice `wmem_max`).
    let wmem_max: usize = std::fs::read_to_string("/proc/sys/net/core/wmem_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(8 * 1024 * 1024);
    let in_flight = accepted * CHUNK;
    assert!(
        in_flight <= queued + 2 * wmem_max + CHUNK,
        "{accepted} posts accepted ({in_flight} bytes) but only {queued} queued"
    );

    // Refused posts queue nothing: the count stays put however often we try, for any size.
    for _ in 0..200 {
        match child.post_bytes(&chunk) {
            Err(Error::QueueFull { queued: now, .. }) => assert_eq!(now, queued),
            other => panic!("expected QueueFull again, got {other:?}"),
        }
    }
    match child.post_message(&Ping {
        seq: 0,
        body: String::new(),
    }) {
        Err(Error::QueueFull { queued: now, .. }) => assert_eq!(now, queued),
        other => panic!("expected QueueFull for a small message too, got {other:?}"),
    }

    kill_and_expect_exit(&mut child).await;
}

// ---- exit --------------------------------------------------------------------------------------

#[tokio::test]
async fn messages_sent_just_before_exit_are_all_delivered_before_exit() {
    // Many small ones, then a few larger than any socket buffer.
    all_messages_arrive_before_exit(1000, 1024).await;
    all_messages_arrive_before_exit(3, 4 * 1024 * 1024).await;
}

// ---- other children --------------------------------------------------------------------------

#[tokio::test]
async fn the_blocking_api_child_round_trips() {
    let mut child = echo(&["--blocking"]);
    child
        .post_message(&Ping {
            seq: 0,
            body: "before spawn".into(),
        })
        .unwrap();
    expect_spawn(&mut child).await;
    let value = everything();
    child.post_message(&value).unwrap();
    let big = noise(3 * 1024 * 1024, 5);
    child.post_bytes(&big).unwrap();
    child.post_bytes(&[]).unwrap();
    for seq in 1..=100 {
        child
            .post_message(&Ping {
                seq,
                body: String::new(),
            })
            .unwrap();
    }

    assert_eq!(
        expect_message(&mut child).await.data::<Ping>().unwrap(),
        Ping {
            seq: 0,
            body: "before spawn".into()
        }
    );
    assert_eq!(
        expect_message(&mut child)
            .await
            .data::<Everything>()
            .unwrap(),
        value
    );
    assert!(expect_message(&mut child).await.bytes() == &big[..]);
    assert!(expect_message(&mut child).await.is_empty());
    for seq in 1..=100 {
        assert_eq!(
            expect_message(&mut child).await.data::<Ping>().unwrap().seq,
            seq
        );
    }
    kill_and_expect_exit(&mut child).await;
}

#[cfg(unix)]
#[tokio::test]
async fn the_python_child_round_trips_serde_values_and_raw_bytes() {
    let mut child = match fork("python3", [ECHO_PY], ForkOptions::default()) {
        Ok(child) => child,
        Err(Error::Spawn {
            step: SpawnStep::Lookup,
            ..
        }) => {
            eprintln!("skipped: python3 is not on PATH");
            return;
        }
        Err(other) => panic!("cannot start python3 {ECHO_PY}: {other}"),
    };
    assert_eq!(child.service_name(), "python3");
    child
        .post_message(&Ping {
            seq: 0,
            body: "before spawn".into(),
        })
        .unwrap();
    expect_spawn(&mut child).await;

    let value = everything();
    child.post_message(&value).unwrap();
    child
        .post_message(&Shape::Rect {
            width: 1,
            height: 2,
        })
        .unwrap();
    let raw: Vec<Vec<u8>> = vec![
        vec![],
        (0..=255).collect(),
        noise(1024 * 1024 + 3, 13), // larger than one read or write
        vec![0],
    ];
    for payload in &raw {
        child.post_bytes(payload).unwrap();
    }

    assert_eq!(
        expect_message(&mut child).await.data::<Ping>().unwrap(),
        Ping {
            seq: 0,
            body: "before spawn".into()
        }
    );
    assert_eq!(
        expect_message(&mut child)
            .await
            .data::<Everything>()
            .unwrap(),
        value
    );
    assert_eq!(
        expect_message(&mut child).await.data::<Shape>().unwrap(),
        Shape::Rect {
            width: 1,
            height: 2
        }
    );
    for (i, payload) in raw.iter().enumerate() {
        let message = expect_message(&mut child).await;
        assert!(message.bytes() == &payload[..], "raw message {i} differs");
    }
    kill_and_expect_exit(&mut child).await;
}

// ---- robustness ------------------------------------------------------------------------------

/// Serializes as its number, or fails (`Fail`) or panics (`Bomb`) halfway through a value.
enum Part {
    Fine(u32),
    Fail,
    Bomb,
}

impl Serialize for Part {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Part::Fine(n) => serializer.serialize_u32(*n),
            Part::Fail => Err(serde::ser::Error::custom("this part refuses to be encoded")),
            Part::Bomb => panic!("this part blows up while being encoded"),
        }
    }
}

#[tokio::test]
async fn a_value_that_fails_to_encode_is_err_encode_and_nothing_is_sent() {
    let mut child = echo(&[]);
    expect_spawn(&mut child).await;
    // Some of the value is encoded before the failure: none of it may reach the socket.
    let value = vec![Part::Fine(1), Part::Fine(2), Part::Fail];
    assert!(matches!(child.post_message(&value), Err(Error::Encode(_))));
    child.post_message(&[1u32, 2]).unwrap();
    assert_eq!(
        expect_message(&mut child).await.data::<Vec<u32>>().unwrap(),
        [1, 2],
        "the half-encoded value leaked into the stream"
    );
    kill_and_expect_exit(&mut child).await;
}

#[tokio::test]
async fn a_serialize_impl_that_panics_leaves_the_port_intact() {
    let mut child = echo(&[]);
    expect_spawn(&mut child).await;
    let value = vec![Part::Fine(1), Part::Fine(2), Part::Bomb];
    let posted =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| child.post_message(&value)));
    assert!(posted.is_err(), "the panic should reach the caller");
    child.post_message(&[3u32, 4]).unwrap();
    assert_eq!(
        expect_message(&mut child).await.data::<Vec<u32>>().unwrap(),
        [3, 4],
        "the half-encoded value leaked into the stream"
    );
    kill_and_expect_exit(&mut child).await;
}

#[tokio::test]
async fn messages_posted_from_many_threads_arrive_whole_and_in_each_threads_order() {
    const THREADS: u8 = 4;
    const PER_THREAD: u32 = 300;
    // Sizes from 5 bytes to ~24 KiB: socket-sized writes, partial writes and queueing mix.
    fn message(thread: u8, seq: u32) -> Vec<u8> {
        let len = 5 + (seq as usize * 7919 + thread as usize * 104_729) % 24_000;
        let mut bytes = vec![thread];
        bytes.extend_from_slice(&seq.to_le_bytes());
        bytes.extend((5..len).map(|i| (i as u32 ^ seq ^ u32::from(thread)) as u8));
        bytes
    }
    let mut child = echo(&[]);
    expect_spawn(&mut child).await;
    std::thread::scope(|scope| {
        for thread in 0..THREADS {
            let child = &child;
            scope.spawn(move || {
                for seq in 0..PER_THREAD {
                    child.post_bytes(&message(thread, seq)).unwrap();
                }
            });
        }
    });
    let mut next = [0u32; THREADS as usize];
    for _ in 0..u32::from(THREADS) * PER_THREAD {
        let message_bytes = expect_message(&mut child).await.into_bytes();
        let thread = message_bytes[0];
        let seq = u32::from_le_bytes(message_bytes[1..5].try_into().unwrap());
        assert_eq!(
            seq, next[thread as usize],
            "thread {thread}'s messages out of order"
        );
        assert!(
            message_bytes == message(thread, seq),
            "message {seq} of thread {thread} is corrupted"
        );
        next[thread as usize] += 1;
    }
    kill_and_expect_exit(&mut child).await;
}

#[tokio::test]
async fn next_event_is_cancel_safe_and_loses_no_message() {
    // Batches of one 8 MiB message (more than the socket holds, so `next_event` usually waits
    // in the middle of its frame) and three small ones. Every `next_event` is polled once and
    // dropped whenever it is not ready at once: always before each batch (nothing is in
    // flight, so it has to wait), and whenever a frame is only partly there.
    const BATCHES: u64 = 5;
    let mut child = echo(&[]);
    expect_spawn(&mut child).await;
    let mut cancelled = 0u64;
    let mut received = 0u64;
    for batch in 0..BATCHES {
        let payloads: Vec<Vec<u8>> = (0..4)
            .map(|i| {
                let seq = batch * 4 + i;
                let len = if i == 0 { 8 << 20 } else { 100 };
                let mut bytes = seq.to_le_bytes().to_vec();
                bytes.extend(noise(len, seq + 1));
                bytes
            })
            .collect();
        let cancelled_before = cancelled;
        // Nothing is in flight: this receive has to wait, and is dropped.
        tokio::select! {
            biased;
            event = child.next_event() => panic!("an event out of nowhere: {event:?}"),
            () = std::future::ready(()) => cancelled += 1,
        }
        for payload in &payloads {
            child.post_bytes(payload).unwrap();
        }
        let mut got = 0;
        let deadline = tokio::time::Instant::now() + utility_process_tests::EVENT_TIMEOUT;
        while got < payloads.len() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "only {received} messages"
            );
            tokio::select! {
                biased;
                event = child.next_event() => match event {
                    Some(Event::Message(message)) => {
                        assert!(
                            message.bytes() == &payloads[got][..],
                            "message {received} is wrong after {cancelled} cancellations"
                        );
                        got += 1;
                        received += 1;
                    }
                    other => panic!("unexpected {other:?}"),
                },
                () = std::future::ready(()) => {
                    cancelled += 1;
                    tokio::task::yield_now().await;
                }
            }
        }
        assert!(
            cancelled > cancelled_before,
            "batch {batch}: no receive was dropped"
        );
    }
    eprintln!("{cancelled} next_event futures were dropped along the way");
    kill_and_expect_exit(&mut child).await;
}

#[test]
fn the_blocking_event_loop_gives_the_same_events_without_a_runtime() {
    // No tokio runtime anywhere in this test.
    let mut child = echo(&[]);
    assert!(matches!(child.next_event_blocking(), Some(Event::Spawn)));
    for seq in 0..200 {
        child
            .post_message(&Ping {
                seq,
                body: String::new(),
            })
            .unwrap();
        match child.next_event_blocking() {
            Some(Event::Message(message)) => assert_eq!(message.data::<Ping>().unwrap().seq, seq),
            other => panic!("expected the echo of {seq}, got {other:?}"),
        }
    }
    assert!(child.kill());
    match child.next_event_blocking() {
        #[cfg(unix)]
        Some(Event::Exit(status)) => {
            assert_eq!(
                status.signal(),
                Some(utility_process::unix::Signal::SIGTERM)
            )
        }
        // Windows: `echo` returns once `kill` closes its port.
        #[cfg(windows)]
        Some(Event::Exit(status)) => assert!(status.success(), "{status}"),
        other => panic!("expected Exit, got {other:?}"),
    }
    assert!(child.next_event_blocking().is_none());

    // Everything a child sends before it exits comes before its Exit, as with next_event.
    let mut sender = fork(SENDER, ["500", "1024"], ForkOptions::default()).unwrap();
    assert!(matches!(sender.next_event_blocking(), Some(Event::Spawn)));
    let mut received = 0u64;
    loop {
        match sender.next_event_blocking() {
            Some(Event::Message(message)) => {
                let seq = u64::from_le_bytes(message.bytes()[..8].try_into().unwrap());
                assert_eq!(seq, received, "messages out of order or lost");
                received += 1;
            }
            Some(Event::Exit(status)) => {
                assert!(status.success(), "{status}");
                break;
            }
            other => panic!("after {received} messages: unexpected {other:?}"),
        }
    }
    assert_eq!(received, 500);
    assert!(sender.next_event_blocking().is_none());
}
