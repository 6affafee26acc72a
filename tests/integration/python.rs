//! Python children built on the `utility_process` package (`python/`): every kind of value
//! both ways, order, ports (from the parent and from a Rust child), uncaught exceptions as
//! panics, exit codes, stdio, a hostile Python child, a pool of Python workers and a
//! supervised Python child. Each test skips, saying why, when Python 3 cannot be run.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use utility_process::unix::ExitStatusExt as _;
use utility_process::unix::Signal;
use utility_process::{
    fork, Error, Event, ForkOptions, Message, MessageChannel, Stdio, UtilityProcess, Violation,
};
use utility_process_pool::{Pool, TaskError, Worker};
use utility_process_supervisor::{Backoff, ChildSpec, Heartbeat, Supervisor, SupervisorOptions};
use utility_process_tests::{
    all_events, next_event, python_or_skip as python, Bin as Bytes, PortCommand, EVENT_TIMEOUT,
};

/// The Python test child (see its docstring for the modes).
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/children/python_child.py");
const PORTER: &str = env!("CARGO_BIN_EXE_porter");

/// A Python child, as a Rust parent starts one: `fork` of the script's path, which runs it
/// with Python 3 (here the interpreter the tests found, named with `ForkOptions::python`).
fn fork_python(python: &str, args: &[&str], options: ForkOptions) -> UtilityProcess {
    fork(SCRIPT, args, options.python(python))
        .unwrap_or_else(|e| panic!("cannot start {SCRIPT} with {python}: {e}"))
}

async fn expect_spawn(child: &mut UtilityProcess) {
    match next_event(child).await {
        Some(Event::Spawn) => {}
        other => panic!("expected Spawn, got {other:?}"),
    }
}

async fn expect_message(child: &mut UtilityProcess) -> Message {
    match next_event(child).await {
        Some(Event::Message(message)) => message,
        other => panic!("expected a message, got {other:?}"),
    }
}

// ---- the value mapping (docs/PROTOCOL.md, section 6) ----------------------------------------

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Unit;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Newtype(u32);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Variant {
    Plain,
    Wrapped(u32),
    Pair(u32, u32),
    Named { x: i32, y: i32 },
}

/// One field per row of the mapping table. `python_child.py values` writes the same value
/// from Python literals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Everything {
    u8: u8,
    u16: u16,
    u32: u32,
    u64: u64,
    i8: i8,
    i16: i16,
    i32: i32,
    i64: i64,
    f32: f32,
    f64: f64,
    int_as_f64: f64,
    flag: bool,
    text: String,
    ch: char,
    bytes: Bytes,
    list_of_u8: Vec<u8>,
    none: Option<u32>,
    some: Option<u32>,
    unit: (),
    tuple: (u32, String),
    unit_struct: Unit,
    newtype: Newtype,
    unit_variant: Variant,
    newtype_variant: Variant,
    tuple_variant: Variant,
    struct_variant: Variant,
    map: BTreeMap<String, u32>,
    int_keys: BTreeMap<u64, String>,
    nested: Vec<Vec<Option<bool>>>,
    u128: u128,
}

fn everything() -> Everything {
    Everything {
        u8: u8::MAX,
        u16: u16::MAX,
        u32: u32::MAX,
        u64: u64::MAX,
        i8: i8::MIN,
        i16: i16::MIN,
        i32: i32::MIN,
        i64: i64::MIN,
        f32: 1.5,
        f64: 0.1,
        int_as_f64: 3.0,
        flag: true,
        text: "héllo".into(),
        ch: 'é',
        bytes: Bytes(vec![0, 1, 255]),
        list_of_u8: vec![1, 2, 3],
        none: None,
        some: Some(7),
        unit: (),
        tuple: (1, "two".into()),
        unit_struct: Unit,
        newtype: Newtype(5),
        unit_variant: Variant::Plain,
        newtype_variant: Variant::Wrapped(9),
        tuple_variant: Variant::Pair(1, 2),
        struct_variant: Variant::Named { x: 1, y: -1 },
        map: [("a".to_owned(), 1), ("b".to_owned(), 2)].into(),
        int_keys: [(1, "one".to_owned()), (u64::MAX, "max".to_owned())].into(),
        nested: vec![vec![], vec![Some(true), None, Some(false)]],
        u128: 1 << 100,
    }
}

#[tokio::test]
async fn every_kind_of_value_round_trips_through_a_python_child() {
    let Some(python) = python("every_kind_of_value_round_trips_through_a_python_child") else {
        return;
    };
    let mut child = fork_python(&python, &["reencode"], ForkOptions::default());
    expect_spawn(&mut child).await;

    child.post_message(&everything()).unwrap();
    let back: Everything = expect_message(&mut child).await.data().unwrap();
    assert_eq!(back, everything());

    // Every integer width at its edges, one message each, decoded and re-encoded by Python.
    let unsigned = [
        0,
        127,
        128,
        255,
        256,
        65_535,
        65_536,
        (1 << 32) - 1,
        1 << 32,
        (1 << 53) + 1,
        u64::MAX,
    ];
    for n in unsigned {
        child.post_message(&n).unwrap();
        assert_eq!(expect_message(&mut child).await.data::<u64>().unwrap(), n);
    }
    let signed = [
        -1,
        -32,
        -33,
        -128,
        -129,
        -32_768,
        -32_769,
        i32::MIN as i64,
        i32::MIN as i64 - 1,
        -(1 << 53) - 1,
        i64::MIN,
        i64::MAX,
    ];
    for n in signed {
        child.post_message(&n).unwrap();
        assert_eq!(expect_message(&mut child).await.data::<i64>().unwrap(), n);
    }
    for x in [
        0.0,
        -0.0,
        f64::MIN_POSITIVE,
        f64::MAX,
        f64::INFINITY,
        1e-300,
    ] {
        child.post_message(&x).unwrap();
        let back = expect_message(&mut child).await.data::<f64>().unwrap();
        assert_eq!(back.to_bits(), x.to_bits());
    }
    // bin (Python `bytes`) reads into a serde_bytes-like type and into a plain `Vec<u8>` too
    // (rmp-serde reads bin as a sequence of u8), though a plain `Vec<u8>` writes an array of
    // integers, which Python reads as a list (section 6).
    child.post_message(&Bytes(vec![1, 2])).unwrap();
    let bin = expect_message(&mut child).await;
    assert_eq!(
        bin.bytes(),
        b"\xc4\x02\x01\x02",
        "Python writes bytes back as bin"
    );
    assert_eq!(bin.data::<Bytes>().unwrap(), Bytes(vec![1, 2]));
    assert_eq!(bin.data::<Vec<u8>>().unwrap(), vec![1, 2]);
    child.post_message(&vec![1u8, 2]).unwrap();
    let array = expect_message(&mut child).await;
    assert_eq!(
        array.bytes(),
        b"\x92\x01\x02",
        "a list comes back as an array"
    );
    // A raw post that is not MessagePack comes back as it was sent.
    let raw = b"\xc1 not MessagePack".to_vec();
    child.post_bytes(&raw).unwrap();
    assert_eq!(expect_message(&mut child).await.bytes(), &raw[..]);
    // Large values: more than one read or write on either side.
    let big = "x".repeat(3 * 1024 * 1024 + 7);
    child.post_message(&big).unwrap();
    assert_eq!(
        expect_message(&mut child).await.data::<String>().unwrap(),
        big
    );

    assert!(child.kill());
    assert!(matches!(
        all_events(&mut child).await.as_slice(),
        [Event::Exit(_)]
    ));
}

#[tokio::test]
async fn a_python_child_writes_every_kind_of_value_as_rust_reads_it() {
    let Some(python) = python("a_python_child_writes_every_kind_of_value_as_rust_reads_it") else {
        return;
    };
    let mut child = fork_python(&python, &["values"], ForkOptions::default());
    expect_spawn(&mut child).await;
    let from_python: Everything = expect_message(&mut child).await.data().unwrap();
    assert_eq!(from_python, everything());
    assert!(child.kill());
}

#[tokio::test]
async fn a_thousand_messages_come_back_from_a_python_child_in_order() {
    let Some(python) = python("a_thousand_messages_come_back_from_a_python_child_in_order") else {
        return;
    };
    let mut child = fork_python(&python, &["reencode"], ForkOptions::default());
    // Posted before the child runs: they wait in the socket, in order.
    for seq in 0..1000u64 {
        child
            .post_message(&(seq, "padding".repeat(seq as usize % 7)))
            .unwrap();
    }
    expect_spawn(&mut child).await;
    for seq in 0..1000u64 {
        let (got, _): (u64, String) = expect_message(&mut child).await.data().unwrap();
        assert_eq!(got, seq);
    }
    assert!(child.kill());
}

// ---- ports --------------------------------------------------------------------------------

/// Posts `seq` on `port` and expects it back.
async fn ping(port: &utility_process::MessagePort, seq: u64) {
    port.post_message(&seq).unwrap();
    let answer = tokio::time::timeout(EVENT_TIMEOUT, port.recv())
        .await
        .expect("an answer in time")
        .expect("the port is open");
    assert_eq!(answer.data::<u64>().unwrap(), seq);
}

#[tokio::test]
async fn a_port_sent_to_a_python_child_carries_messages_both_ways() {
    let Some(python) = python("a_port_sent_to_a_python_child_carries_messages_both_ways") else {
        return;
    };
    let mut child = fork_python(&python, &["ports"], ForkOptions::default());
    let MessageChannel { port1, port2 } = MessageChannel::new().unwrap();
    // Queued on port2 before it travels: the Python side reads them first.
    port1.post_message(&0u64).unwrap();
    child
        .post_message_with_ports(&"take it", vec![port2])
        .unwrap();
    expect_spawn(&mut child).await;
    assert_eq!(
        expect_message(&mut child).await.data::<String>().unwrap(),
        "ported"
    );
    let first = tokio::time::timeout(EVENT_TIMEOUT, port1.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.data::<u64>().unwrap(), 0);
    for seq in 1..=100 {
        ping(&port1, seq).await;
    }
    assert!(child.kill());
    // The child is gone: so is its end of the channel.
    let end = tokio::time::timeout(EVENT_TIMEOUT, port1.recv())
        .await
        .unwrap();
    assert!(end.is_none());
}

#[tokio::test]
async fn a_port_a_rust_child_forwards_reaches_a_python_child_and_works() {
    let Some(python) = python("a_port_a_rust_child_forwards_reaches_a_python_child_and_works")
    else {
        return;
    };
    let mut py = fork_python(&python, &["ports"], ForkOptions::default());
    let porter = fork(PORTER, Vec::<String>::new(), ForkOptions::default()).unwrap();
    let link = MessageChannel::new().unwrap();
    let work = MessageChannel::new().unwrap();
    // Python gets one end of the link; the Rust child posts `work.port2` over the other.
    py.post_message_with_ports(&"link", vec![link.port2])
        .unwrap();
    expect_spawn(&mut py).await;
    assert_eq!(
        expect_message(&mut py).await.data::<String>().unwrap(),
        "ported"
    );
    work.port1.post_message(&1u64).unwrap();
    porter
        .post_message_with_ports(&PortCommand::Forward, vec![link.port1, work.port2])
        .unwrap();
    let first = tokio::time::timeout(EVENT_TIMEOUT, work.port1.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.data::<u64>().unwrap(), 1);
    for seq in 2..=50 {
        ping(&work.port1, seq).await;
    }
    assert!(py.kill());
    assert!(porter.kill());
}

// ---- lifecycle ----------------------------------------------------------------------------

#[tokio::test]
async fn an_uncaught_python_exception_is_reported_as_a_panic_with_its_message_and_line() {
    let Some(python) =
        python("an_uncaught_python_exception_is_reported_as_a_panic_with_its_message_and_line")
    else {
        return;
    };
    let script = std::fs::read_to_string(SCRIPT).unwrap();
    let line = 1 + script
        .lines()
        .position(|l| l == "    raise ValueError(\"boom from python\")")
        .expect("the raise in boom()") as u32;
    let mut child = fork_python(
        &python,
        &["raise"],
        ForkOptions::default().stderr(Stdio::Ignore),
    );
    let events = all_events(&mut child).await;
    match events.as_slice() {
        [Event::Spawn, Event::Error(Error::Panicked { panic, .. }), Event::Exit(status)] => {
            assert_eq!(panic.message, "ValueError: boom from python");
            assert!(panic.location.file.ends_with("python_child.py"), "{panic}");
            assert_eq!(panic.location.line, line, "{panic}");
            assert_eq!(panic.location.column, 5, "1-based, at the `raise`: {panic}");
            assert_eq!(panic.thread.as_deref(), Some("MainThread"));
            assert_eq!(status.code(), Some(1));
        }
        other => panic!("expected Spawn, Panicked, Exit; got {other:?}"),
    }
}

#[tokio::test]
async fn a_python_childs_exit_code_is_reported_without_an_error() {
    let Some(python) = python("a_python_childs_exit_code_is_reported_without_an_error") else {
        return;
    };
    for code in [0, 3] {
        let mut child = fork_python(
            &python,
            &["exit", &code.to_string()],
            ForkOptions::default(),
        );
        match all_events(&mut child).await.as_slice() {
            [Event::Spawn, Event::Exit(status)] => assert_eq!(status.code(), Some(code)),
            other => panic!("exit {code}: expected Spawn, Exit; got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_python_childs_stdout_and_stderr_can_be_piped() {
    let Some(python) = python("a_python_childs_stdout_and_stderr_can_be_piped") else {
        return;
    };
    let mut child = fork_python(
        &python,
        &["stdio"],
        ForkOptions::default().stdio(Stdio::Pipe),
    );
    let mut stdout = child.take_stdout().expect("piped");
    let mut stderr = child.take_stderr().expect("piped");
    let (mut out, mut err) = (String::new(), String::new());
    let (events, _, _) = tokio::join!(
        all_events(&mut child),
        stdout.read_to_string(&mut out),
        stderr.read_to_string(&mut err)
    );
    assert_eq!(out, "to stdout from python\n");
    assert_eq!(err, "to stderr from python\n");
    assert!(matches!(events.as_slice(), [Event::Spawn, Event::Exit(s)] if s.code() == Some(0)));
}

#[tokio::test]
async fn a_python_child_that_sends_bad_frames_is_killed_for_a_protocol_violation() {
    let Some(python) =
        python("a_python_child_that_sends_bad_frames_is_killed_for_a_protocol_violation")
    else {
        return;
    };
    for bad in ["huge", "zero", "kind", "hello"] {
        let mut child = fork_python(&python, &["hostile", bad], ForkOptions::default());
        match all_events(&mut child).await.as_slice() {
            [Event::Spawn, Event::Error(Error::ProtocolViolation { violation, .. }), Event::Exit(status)] =>
            {
                match (bad, violation) {
                    ("hello", Violation::DuplicateHello) => {}
                    ("hello", other) => panic!("hello: expected DuplicateHello, got {other:?}"),
                    (_, Violation::Frame(_)) => {}
                    (_, other) => panic!("{bad}: expected a frame violation, got {other:?}"),
                }
                assert_eq!(status.signal(), Some(Signal::SIGKILL), "{bad}");
            }
            other => panic!("{bad}: expected Spawn, ProtocolViolation, Exit; got {other:?}"),
        }
    }
}

// ---- pool and supervisor ------------------------------------------------------------------

/// The request of the Python pool worker (`python_child.py pool`).
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Job {
    Double(u64),
    Crash,
    Fail(String),
    Sleep(u64),
}

#[tokio::test]
async fn a_pool_of_python_workers_answers_every_task_exactly_once_through_a_crash() {
    let Some(python) =
        python("a_pool_of_python_workers_answers_every_task_exactly_once_through_a_crash")
    else {
        return;
    };
    // The worker is the script itself: `fork` runs it with Python.
    let pool = Pool::<Job, u64>::builder(Worker::program(SCRIPT).args(["pool"]))
        .fork_options(ForkOptions::default().python(&python))
        .workers(2)
        .build()
        .unwrap();
    tokio::time::timeout(EVENT_TIMEOUT, pool.ready())
        .await
        .unwrap()
        .unwrap();
    let jobs: Vec<Job> = (0..20u64)
        .map(|n| match n {
            7 => Job::Crash,
            11 => Job::Fail("told to fail".into()),
            n if n % 5 == 0 => Job::Sleep(20),
            n => Job::Double(n),
        })
        .collect();
    let results = tokio::time::timeout(
        EVENT_TIMEOUT,
        futures_join_all(jobs.iter().map(|job| pool.run(job))),
    )
    .await
    .expect("every task answered in time");
    for (n, (job, result)) in jobs.iter().zip(&results).enumerate() {
        match (job, result) {
            (Job::Double(x), Ok(y)) => assert_eq!(*y, 2 * x),
            (Job::Sleep(_), Ok(0)) => {}
            (Job::Crash, Err(TaskError::WorkerCrashed(crash))) => {
                assert_eq!(crash.status.code(), Some(3), "{crash}")
            }
            (Job::Fail(_), Err(TaskError::Failed { message, .. })) => {
                assert_eq!(message, "ValueError: told to fail")
            }
            // A task on the crashed worker at the same time fails with it, never twice.
            (Job::Double(_) | Job::Sleep(_), Err(TaskError::WorkerCrashed(_))) => {}
            (job, result) => panic!("task {n} {job:?}: unexpected {result:?}"),
        }
    }
    // The crashed worker was replaced: the pool still answers.
    assert_eq!(pool.run(&Job::Double(21)).await.unwrap(), 42);
    pool.close().await;
}

/// `join_all` without the futures crate: polls them all, on this task, until each is done.
async fn futures_join_all<F: std::future::Future>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output> {
    let mut pending: Vec<_> = futures.map(Box::pin).enumerate().collect();
    let mut outputs: Vec<Option<F::Output>> = pending.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        pending.retain_mut(|(i, f)| match f.as_mut().poll(cx) {
            std::task::Poll::Ready(out) => {
                outputs[*i] = Some(out);
                false
            }
            std::task::Poll::Pending => true,
        });
        if pending.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    outputs.into_iter().map(Option::unwrap).collect()
}

#[tokio::test]
async fn a_supervised_python_child_attaches_answers_heartbeats_and_is_restarted_after_a_crash() {
    let Some(python) = python(
        "a_supervised_python_child_attaches_answers_heartbeats_and_is_restarted_after_a_crash",
    ) else {
        return;
    };
    let supervisor = Supervisor::new(SupervisorOptions::default());
    let mut events = supervisor.events();
    let spec = ChildSpec::program("py", &python)
        .args([SCRIPT, "supervised"])
        .heartbeat(Heartbeat::new(Duration::from_millis(100)).misses(3))
        .backoff(Backoff::new(
            Duration::from_millis(10),
            Duration::from_millis(50),
        ))
        .start_timeout(Duration::from_secs(10));
    let first = tokio::time::timeout(EVENT_TIMEOUT, supervisor.start_child(spec))
        .await
        .unwrap()
        .unwrap();
    // Ten heartbeat intervals: three unanswered in a row would have ended it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    supervisor.post_message("py", &41u64).await.unwrap();
    let reply = tokio::time::timeout(EVENT_TIMEOUT, supervisor.recv_message())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reply.message.data::<u64>().unwrap(), 42);
    assert_eq!(reply.pid, first, "the first life still answers");

    supervisor.post_message("py", &"crash").await.unwrap();
    let second = utility_process_tests::next_life_after_exit(&mut events, 3).await;
    assert_ne!(second, first, "a restart is a new process");
    supervisor.post_message("py", &1u64).await.unwrap();
    let reply = tokio::time::timeout(EVENT_TIMEOUT, supervisor.recv_message())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reply.message.data::<u64>().unwrap(), 2);
    supervisor.shutdown().await;
}
