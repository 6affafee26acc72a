//! JS workers written for Electron's `utilityProcess`, run unchanged by a Rust parent through
//! the `utility-process` npm package (`js/`) and its addon (`crates/node`).
//!
//! Each test forks `tests/children/node_*.{js,mjs,cjs}` as a Rust parent does (`fork` of the
//! script's path, which runs `node --require <bootstrap> <script>`), with
//! `UTILITY_PROCESS_NODE_ADDON` naming the addon, which the first test to need it builds
//! (`cargo build -p utility-process-node`, into this test's own target directory) unless the
//! variable is already set. Every test skips, saying why, when `node` is not on `PATH`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use utility_process::unix::ExitStatusExt as _;
use utility_process::{
    fork, Error, Event, ForkOptions, Message, MessageChannel, MessagePort, SharedBuffer, Stdio,
    Transferable, UtilityProcess,
};
use utility_process_tests::{next_event, Bin as Bytes, PortCommand, EVENT_TIMEOUT};

const PORTER: &str = env!("CARGO_BIN_EXE_porter");
const CHILDREN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/children");
const BOOTSTRAP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../js/lib/bootstrap.cjs");
const ADDON_VAR: &str = "UTILITY_PROCESS_NODE_ADDON";

// ---- helpers ---------------------------------------------------------------------------------

/// The addon to load: `$UTILITY_PROCESS_NODE_ADDON`, or one built now with cargo.
fn addon() -> &'static Path {
    static ADDON: OnceLock<PathBuf> = OnceLock::new();
    ADDON.get_or_init(|| {
        if let Some(path) = std::env::var_os(ADDON_VAR) {
            return PathBuf::from(path);
        }
        // This binary is <target>/<profile>/deps/integration-<hash>.
        let exe = std::env::current_exe().expect("the test binary's path");
        let target = exe
            .ancestors()
            .nth(3)
            .expect("the test binary lives in <target>/<profile>/deps")
            .to_owned();
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "build",
                "--quiet",
                "-p",
                "utility-process-node",
                "--manifest-path",
            ])
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml"))
            .env("CARGO_TARGET_DIR", &target)
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building the Node addon failed: {status}");
        target.join("debug/libutility_process_node.so")
    })
}

/// Whether `node` can be run; prints why a test skips when it cannot.
fn node_available(test: &str) -> bool {
    static NODE: OnceLock<bool> = OnceLock::new();
    let found = *NODE.get_or_init(|| {
        Command::new("node")
            .arg("--version")
            .output()
            .is_ok_and(|out| out.status.success())
    });
    if !found {
        eprintln!("skipped {test}: node is not on PATH");
    }
    found
}

/// A JS worker, as a Rust parent starts one: `fork` of the script's path, which runs it with
/// `node` and the npm package's bootstrap (named here by its variable, since the test
/// children have no `node_modules` of their own).
fn worker(script: &str, args: &[&str], options: ForkOptions) -> UtilityProcess {
    let script = format!("{CHILDREN}/{script}");
    let options = options
        .env(ADDON_VAR, addon())
        .env("UTILITY_PROCESS_NODE_BOOTSTRAP", BOOTSTRAP);
    fork(&script, args, options).expect("node starts")
}

async fn expect_message(child: &mut UtilityProcess) -> Message {
    loop {
        match next_event(child).await {
            Some(Event::Spawn) => continue,
            Some(Event::Message(message)) => return message,
            other => panic!("expected a message from the JS worker, got {other:?}"),
        }
    }
}

async fn expect_data<T: for<'de> Deserialize<'de>>(child: &mut UtilityProcess) -> T {
    let message = expect_message(child).await;
    message
        .data()
        .unwrap_or_else(|e| panic!("{e}: {:02x?}", message.bytes()))
}

async fn recv_data<T: for<'de> Deserialize<'de>>(port: &MessagePort) -> T {
    let message = tokio::time::timeout(EVENT_TIMEOUT, port.recv())
        .await
        .expect("a message on the port in time")
        .expect("the port is open");
    message.data().expect("a value")
}

/// Kills the child and checks that the end is reported as an Exit alone.
async fn kill(child: &mut UtilityProcess) {
    assert!(child.kill(), "the child was still running");
    loop {
        match next_event(child).await {
            Some(Event::Spawn) => {}
            Some(Event::Exit(status)) => break assert!(status.signal().is_some(), "{status}"),
            other => panic!("expected Exit after kill, got {other:?}"),
        }
    }
}

/// The line of `script` (1-based) holding `marker`.
fn line_of(script: &str, marker: &str) -> u32 {
    let text = std::fs::read_to_string(format!("{CHILDREN}/{script}")).expect("the script");
    let index = text
        .lines()
        .position(|line| line.contains(marker))
        .expect("the marker is in the script");
    index as u32 + 1
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Shape {
    Dot,
    Circle(f64),
    Rect { w: u32, h: u32 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Inner {
    name: String,
    tags: Vec<String>,
}

/// One of each kind of value serde and MessagePack have.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Everything {
    yes: bool,
    no: bool,
    small: u8,
    word: u16,
    dword: u32,
    just_past_u32: u64,
    past_2_53: u64,
    max_u64: u64,
    min_i64: i64,
    minus_one: i8,
    minus_big: i32,
    half: f64,
    whole_float: f64,
    tiny: f64,
    quarter32: f32,
    text: String,
    unicode: String,
    long_text: String,
    empty: String,
    letter: char,
    bytes: Bytes,
    empty_bytes: Bytes,
    numbers: Vec<i64>,
    nothing: Option<u32>,
    something: Option<u32>,
    unit: (),
    pair: (u8, String),
    inner: Inner,
    nested: Vec<Vec<Inner>>,
    by_name: HashMap<String, u32>,
    by_number: BTreeMap<u32, String>,
    shapes: Vec<Shape>,
}

fn everything() -> Everything {
    Everything {
        yes: true,
        no: false,
        small: 200,
        word: 60_000,
        dword: 4_000_000_000,
        just_past_u32: 1 << 32,
        past_2_53: (1 << 53) + 1,
        max_u64: u64::MAX,
        min_i64: i64::MIN,
        minus_one: -1,
        minus_big: -2_000_000_000,
        half: 0.5,
        whole_float: 2.0,
        tiny: 1e-300,
        quarter32: 0.25,
        text: "hello".into(),
        unicode: "héllo wörld ✓ 🦀".into(),
        long_text: "x".repeat(70_000),
        empty: String::new(),
        letter: 'ß',
        bytes: Bytes((0..=255).collect()),
        empty_bytes: Bytes(Vec::new()),
        numbers: vec![0, -1, 127, 128, -33, 65_536, -(1 << 40), 1 << 53],
        nothing: None,
        something: Some(7),
        unit: (),
        pair: (9, "nine".into()),
        inner: Inner {
            name: "inner".into(),
            tags: vec!["a".into(), "b".into()],
        },
        nested: vec![
            vec![],
            vec![Inner {
                name: "deep".into(),
                tags: vec![],
            }],
        ],
        by_name: [("one".to_owned(), 1), ("two".to_owned(), 2)].into(),
        by_number: [(1, "one".to_owned()), (1_000_000, "million".to_owned())].into(),
        shapes: vec![Shape::Dot, Shape::Circle(1.5), Shape::Rect { w: 3, h: 4 }],
    }
}

// ---- tests -----------------------------------------------------------------------------------

#[tokio::test]
async fn an_electron_style_worker_round_trips_structured_data_of_every_kind() {
    if !node_available("an_electron_style_worker_round_trips_structured_data_of_every_kind") {
        return;
    }
    let mut child = worker("node_echo.js", &[], ForkOptions::default());
    let value = everything();
    child.post_message(&value).unwrap();
    let echoed: Everything = expect_data(&mut child).await;
    assert_eq!(echoed, value);

    // Bare values too, and raw bytes that are no MessagePack: they arrive as a Buffer, which
    // goes back as bin.
    child.post_message(&u64::MAX).unwrap();
    assert_eq!(expect_data::<u64>(&mut child).await, u64::MAX);
    child.post_message(&"just a string").unwrap();
    assert_eq!(expect_data::<String>(&mut child).await, "just a string");
    child.post_bytes(b"\xc1 raw, not MessagePack").unwrap();
    assert_eq!(
        expect_data::<Bytes>(&mut child).await,
        Bytes(b"\xc1 raw, not MessagePack".to_vec())
    );
    kill(&mut child).await;
}

#[tokio::test]
async fn a_js_worker_answers_1000_messages_in_order() {
    if !node_available("a_js_worker_answers_1000_messages_in_order") {
        return;
    }
    let mut child = worker("node_echo.js", &[], ForkOptions::default());
    for seq in 0..1000u32 {
        child
            .post_message(&(seq, "x".repeat(seq as usize % 100)))
            .unwrap();
    }
    for seq in 0..1000u32 {
        let (got, padding): (u32, String) = expect_data(&mut child).await;
        assert_eq!(got, seq);
        assert_eq!(padding.len(), seq as usize % 100);
    }
    kill(&mut child).await;
}

#[tokio::test]
async fn messages_posted_before_the_listener_exists_wait_in_order() {
    if !node_available("messages_posted_before_the_listener_exists_wait_in_order") {
        return;
    }
    let mut child = worker("node_late.cjs", &[], ForkOptions::default());
    // Some before the worker even runs, the rest once it says it has no listener.
    for seq in 0..10u32 {
        child.post_message(&seq).unwrap();
    }
    assert_eq!(expect_data::<String>(&mut child).await, "no listener yet");
    for seq in 10..100u32 {
        child.post_message(&seq).unwrap();
    }
    #[derive(Deserialize)]
    struct Answer {
        data: u32,
        #[serde(rename = "onceCalls")]
        once_calls: u32,
    }
    for seq in 0..100u32 {
        let answer: Answer = expect_data(&mut child).await;
        assert_eq!(answer.data, seq);
        assert_eq!(
            answer.once_calls, 1,
            "the once listener ran once, for the first"
        );
    }
    kill(&mut child).await;
}

#[tokio::test]
async fn a_port_received_by_a_js_worker_works_both_ways() {
    if !node_available("a_port_received_by_a_js_worker_works_both_ways") {
        return;
    }
    let mut child = worker("node_ports.cjs", &[], ForkOptions::default());
    let MessageChannel { port1, port2 } = MessageChannel::new().unwrap();
    #[derive(Serialize)]
    struct Cmd {
        cmd: &'static str,
    }
    child
        .post_message_with_ports(&Cmd { cmd: "echo-port" }, vec![port2])
        .unwrap();
    // The worker speaks first, then echoes.
    assert_eq!(recv_data::<String>(&port1).await, "hello from js");
    for seq in 0..50u32 {
        port1.post_message(&(seq, "through the port")).unwrap();
        let (got, text): (u32, String) = recv_data(&port1).await;
        assert_eq!((got, text.as_str()), (seq, "through the port"));
    }
    // Closing our end is seen by the worker's port as 'close'.
    port1.close();
    assert_eq!(expect_data::<String>(&mut child).await, "closed");
    kill(&mut child).await;
}

#[tokio::test]
async fn a_port_made_by_a_js_worker_reaches_a_rust_child_and_comes_back_to_the_parent() {
    if !node_available(
        "a_port_made_by_a_js_worker_reaches_a_rust_child_and_comes_back_to_the_parent",
    ) {
        return;
    }
    #[derive(Serialize)]
    struct Cmd {
        cmd: &'static str,
    }
    let mut js = worker("node_ports.cjs", &[], ForkOptions::default());
    js.post_message(&Cmd { cmd: "make-port" }).unwrap();
    let mut message = expect_message(&mut js).await;
    assert_eq!(message.data::<String>().unwrap(), "your port");
    let ports = message.take_ports();
    assert_eq!(ports.len(), 1, "the JS worker's port2 arrived");

    // JS -> parent -> Rust child, which sends it straight back -> parent.
    let mut rust = fork(PORTER, [] as [&str; 0], ForkOptions::default()).unwrap();
    rust.post_message_with_ports(&PortCommand::Bounce, ports)
        .unwrap();
    let mut bounced = expect_message(&mut rust).await;
    assert_eq!(bounced.data::<String>().unwrap(), "bounced");
    let port = bounced.take_ports().pop().expect("the port came back");

    // The port still leads to the JS worker, which echoes on its port1.
    for seq in 0..20u32 {
        port.post_message(&seq).unwrap();
        assert_eq!(recv_data::<u32>(&port).await, seq);
    }
    kill(&mut rust).await;
    kill(&mut js).await;
}

#[tokio::test]
async fn a_port_passed_from_a_js_worker_to_a_rust_child_carries_their_talk_directly() {
    if !node_available("a_port_passed_from_a_js_worker_to_a_rust_child_carries_their_talk_directly")
    {
        return;
    }
    // The JS worker pings through a port whose other end it sends (via a link the parent
    // gave it) to a Rust child that echoes: JS <-> Rust child, the parent out of the path.
    let mut js = worker("node_ports.cjs", &[], ForkOptions::default());
    let mut rust = fork(PORTER, [] as [&str; 0], ForkOptions::default()).unwrap();
    let link = MessageChannel::new().unwrap();
    rust.post_message_with_ports(&PortCommand::EchoArrivals, vec![link.port2])
        .unwrap();
    let talk = MessageChannel::new().unwrap();
    #[derive(Serialize)]
    struct Cmd {
        cmd: &'static str,
    }
    // The worker forwards talk.port2 to the Rust child over the link...
    js.post_message_with_ports(&Cmd { cmd: "forward" }, vec![link.port1, talk.port2])
        .unwrap();
    // ...then pings over talk.port1, which it gets next.
    #[derive(Serialize)]
    struct Ping {
        cmd: &'static str,
        count: u32,
    }
    js.post_message_with_ports(
        &Ping {
            cmd: "ping",
            count: 100,
        },
        vec![talk.port1],
    )
    .unwrap();
    #[derive(Deserialize)]
    struct Pinged {
        pinged: u32,
    }
    assert_eq!(expect_data::<Pinged>(&mut js).await.pinged, 100);
    kill(&mut rust).await;
    kill(&mut js).await;
}

#[tokio::test]
async fn shared_buffers_reach_a_js_worker_as_buffers() {
    if !node_available("shared_buffers_reach_a_js_worker_as_buffers") {
        return;
    }
    let mut child = worker("node_ports.cjs", &[], ForkOptions::default());
    let bytes: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    let writable = SharedBuffer::from_slice(&bytes).unwrap();
    let read_only = SharedBuffer::from_slice(&bytes[..1000])
        .unwrap()
        .freeze()
        .unwrap();
    #[derive(Serialize)]
    struct Cmd {
        cmd: &'static str,
    }
    child
        .post_message_with_transfer(
            &Cmd { cmd: "buffers" },
            vec![
                Transferable::Buffer(writable),
                Transferable::Buffer(read_only),
            ],
        )
        .unwrap();
    #[derive(Debug, PartialEq, Deserialize)]
    struct Seen {
        length: usize,
        sum: u64,
    }
    let sum = |b: &[u8]| b.iter().map(|&x| u64::from(x)).sum::<u64>();
    let seen: Vec<Seen> = expect_data(&mut child).await;
    assert_eq!(
        seen,
        [
            Seen {
                length: bytes.len(),
                sum: sum(&bytes)
            },
            Seen {
                length: 1000,
                sum: sum(&bytes[..1000])
            }
        ]
    );
    // The worker then writes into both: into the shared mapping, and into its copy of the
    // read-only one (a write into the read-only mapping itself would have crashed it).
    child.post_message(&Cmd { cmd: "buffers" }).unwrap();
    assert_eq!(expect_data::<Vec<Seen>>(&mut child).await, []);
    kill(&mut child).await;
}

/// Expects an `Error::Panicked` with `message` at `script`:`line`, then a failed Exit.
async fn expect_panic(child: &mut UtilityProcess, message: &str, script: &str, line: u32) {
    match next_event(child).await {
        Some(Event::Error(Error::Panicked { panic, .. })) => {
            assert!(
                panic.message.contains(message),
                "the report names the error: {panic}"
            );
            assert!(
                panic.location.file.ends_with(script),
                "the report names the script: {panic}"
            );
            assert_eq!(panic.location.line, line, "{panic}");
            assert!(panic.location.column > 0, "{panic}");
        }
        other => panic!("expected Error::Panicked, got {other:?}"),
    }
    match next_event(child).await {
        Some(Event::Exit(status)) => assert_eq!(status.code(), Some(1), "{status}"),
        other => panic!("expected Exit after the error, got {other:?}"),
    }
    assert!(next_event(child).await.is_none());
}

#[tokio::test]
async fn an_uncaught_exception_is_an_error_with_its_message_and_location_then_exit() {
    if !node_available("an_uncaught_exception_is_an_error_with_its_message_and_location_then_exit")
    {
        return;
    }
    let mut child = worker("node_crash.cjs", &["throw"], ForkOptions::default());
    child.post_message(&"go").unwrap();
    assert!(matches!(next_event(&mut child).await, Some(Event::Spawn)));
    let line = line_of("node_crash.cjs", "TOP THROW HERE");
    expect_panic(
        &mut child,
        "TypeError: boom from js",
        "node_crash.cjs",
        line,
    )
    .await;
}

#[tokio::test]
async fn an_unhandled_rejection_is_an_error_with_its_message_and_location_then_exit() {
    if !node_available("an_unhandled_rejection_is_an_error_with_its_message_and_location_then_exit")
    {
        return;
    }
    let mut child = worker("node_crash.cjs", &["reject"], ForkOptions::default());
    child.post_message(&"go").unwrap();
    assert!(matches!(next_event(&mut child).await, Some(Event::Spawn)));
    let line = line_of("node_crash.cjs", "REJECT HERE");
    expect_panic(
        &mut child,
        "RangeError: rejected from js",
        "node_crash.cjs",
        line,
    )
    .await;
}

#[tokio::test]
async fn an_exception_in_a_port_listener_is_an_error_with_its_location_too() {
    if !node_available("an_exception_in_a_port_listener_is_an_error_with_its_location_too") {
        return;
    }
    let mut child = worker("node_crash.cjs", &["port"], ForkOptions::default());
    let MessageChannel { port1, port2 } = MessageChannel::new().unwrap();
    child.post_message_with_ports(&"go", vec![port2]).unwrap();
    port1.post_message(&"trigger").unwrap();
    assert!(matches!(next_event(&mut child).await, Some(Event::Spawn)));
    let line = line_of("node_crash.cjs", "PORT THROW HERE");
    expect_panic(&mut child, "Error: boom on a port", "node_crash.cjs", line).await;
}

#[tokio::test]
async fn process_exit_3_is_exit_code_3_with_no_error() {
    if !node_available("process_exit_3_is_exit_code_3_with_no_error") {
        return;
    }
    let mut child = worker("node_crash.cjs", &["exit3"], ForkOptions::default());
    child.post_message(&"go").unwrap();
    assert_eq!(expect_data::<String>(&mut child).await, "bye");
    match next_event(&mut child).await {
        Some(Event::Exit(status)) => assert_eq!(status.code(), Some(3), "{status}"),
        other => panic!("expected Exit(3) and no error, got {other:?}"),
    }
    assert!(next_event(&mut child).await.is_none());
}

#[tokio::test]
async fn a_js_workers_stdout_and_stderr_can_be_piped() {
    if !node_available("a_js_workers_stdout_and_stderr_can_be_piped") {
        return;
    }
    let mut child = worker(
        "node_crash.cjs",
        &["stdio"],
        ForkOptions::default()
            .stdout(Stdio::Pipe)
            .stderr(Stdio::Pipe),
    );
    let mut stdout = child.take_stdout().expect("stdout is piped");
    let mut stderr = child.take_stderr().expect("stderr is piped");
    child.post_message(&"go").unwrap();
    // Without a 'message' listener nothing keeps the worker alive: it ends by itself.
    loop {
        match next_event(&mut child).await {
            Some(Event::Spawn) => {}
            Some(Event::Exit(status)) => {
                assert_eq!(status.code(), Some(0), "{status}");
                break;
            }
            other => panic!("expected Exit(0), got {other:?}"),
        }
    }
    let (mut out, mut err) = (String::new(), String::new());
    stdout.read_to_string(&mut out).await.unwrap();
    stderr.read_to_string(&mut err).await.unwrap();
    assert_eq!(out, "hello on stdout\n");
    assert_eq!(err, "hello on stderr\n");
}

#[tokio::test]
async fn es_module_and_commonjs_workers_both_run_unchanged() {
    if !node_available("es_module_and_commonjs_workers_both_run_unchanged") {
        return;
    }
    #[derive(Debug, PartialEq, Deserialize)]
    struct Tagged {
        kind: String,
        data: (u32, String),
    }
    for (script, kind) in [("node_echo.mjs", "esm"), ("node_echo.cjs", "cjs")] {
        let mut child = worker(script, &[], ForkOptions::default());
        child.post_message(&(7u32, "seven")).unwrap();
        let tagged: Tagged = expect_data(&mut child).await;
        assert_eq!(
            tagged,
            Tagged {
                kind: kind.into(),
                data: (7, "seven".into())
            },
            "{script}"
        );
        kill(&mut child).await;
    }
}

#[tokio::test]
async fn a_hostile_js_worker_writing_garbage_to_its_port_is_killed_for_a_protocol_violation() {
    if !node_available(
        "a_hostile_js_worker_writing_garbage_to_its_port_is_killed_for_a_protocol_violation",
    ) {
        return;
    }
    let mut child = worker("node_crash.cjs", &["garbage"], ForkOptions::default());
    child.post_message(&"go").unwrap();
    assert!(matches!(next_event(&mut child).await, Some(Event::Spawn)));
    match next_event(&mut child).await {
        Some(Event::Error(Error::ProtocolViolation { violation, .. })) => {
            eprintln!("the violation: {violation}");
        }
        other => panic!("expected a ProtocolViolation, got {other:?}"),
    }
    match next_event(&mut child).await {
        Some(Event::Exit(status)) => assert!(status.signal().is_some(), "killed: {status}"),
        other => panic!("expected Exit after the violation, got {other:?}"),
    }
}

#[tokio::test]
async fn a_script_whose_interpreter_or_bootstrap_is_missing_is_an_error_at_fork_that_says_how_to_fix_it(
) {
    let script = format!("{CHILDREN}/node_echo.js");
    match fork(
        &script,
        [] as [&str; 0],
        ForkOptions::default().node("/nonexistent/node"),
    ) {
        Err(Error::MissingInterpreter {
            interpreter,
            how_to_fix,
            service_name,
            ..
        }) => {
            assert_eq!(interpreter, "node");
            assert!(how_to_fix.contains("ForkOptions::node"), "{how_to_fix}");
            assert_eq!(service_name, "node_echo.js");
        }
        other => panic!("expected MissingInterpreter, got {other:?}"),
    }
    match fork(
        "model.py",
        [] as [&str; 0],
        ForkOptions::default().python("/nonexistent/python"),
    ) {
        Err(Error::MissingInterpreter { interpreter, .. }) => assert_eq!(interpreter, "python3"),
        other => panic!("expected MissingInterpreter, got {other:?}"),
    }
    if !node_available("a_script_whose_interpreter_or_bootstrap_is_missing") {
        return;
    }
    // No bootstrap named, and no node_modules above the script.
    let lonely = std::env::temp_dir().join(format!("up-lonely-{}.js", std::process::id()));
    std::fs::write(&lonely, "").unwrap();
    let result = fork(
        &lonely,
        [] as [&str; 0],
        ForkOptions::default().env_remove("UTILITY_PROCESS_NODE_BOOTSTRAP"),
    );
    let _ = std::fs::remove_file(&lonely);
    match result {
        Err(error @ Error::MissingInterpreter { .. }) => {
            assert!(
                error.to_string().contains("npm install utility-process"),
                "{error}"
            )
        }
        other => panic!("expected MissingInterpreter, got {other:?}"),
    }
}

// ---- the pool's and the supervisor's JS sides (`utility-process/pool`, `/supervisor`) -------

use std::time::Duration;

use utility_process_pool::{Pool, TaskError, Worker};
use utility_process_supervisor::{
    Backoff, ChildSpec, ExitReason, Heartbeat, Supervisor, SupervisorEvent, SupervisorOptions,
};

/// The jobs `tests/children/node_pool.js` knows.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Job {
    Double(u64),
    Crash,
    Fail(String),
    Sleep(u64),
}

/// The options a pool or a supervisor forks JS children with: the addon, the bootstrap.
fn node_options() -> ForkOptions {
    ForkOptions::default()
        .env(ADDON_VAR, addon())
        .env("UTILITY_PROCESS_NODE_BOOTSTRAP", BOOTSTRAP)
}

/// A pool of `tests/children/node_pool.js` workers in `mode`.
fn node_pool(mode: &str, workers: usize) -> Pool<Job, u64> {
    Pool::<Job, u64>::builder(Worker::program(format!("{CHILDREN}/node_pool.js")).args([mode]))
        .fork_options(node_options())
        .workers(workers)
        .build()
        .unwrap()
}

/// Awaits every future, polling them all on this task, in order of the input.
async fn join_all<F: std::future::Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
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
async fn a_pool_of_node_workers_answers_every_task_exactly_once_through_a_crash() {
    if !node_available("a_pool_of_node_workers_answers_every_task_exactly_once_through_a_crash") {
        return;
    }
    let pool = node_pool("jobs", 2);
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
        join_all(jobs.iter().map(|job| pool.run(job))),
    )
    .await
    .expect("every task answered in time");
    let mut crashed = 0;
    for (n, (job, result)) in jobs.iter().zip(&results).enumerate() {
        match (job, result) {
            (Job::Double(x), Ok(y)) => assert_eq!(*y, 2 * x),
            (Job::Sleep(_), Ok(0)) => {}
            (Job::Crash, Err(TaskError::WorkerCrashed(crash))) => {
                crashed += 1;
                assert_eq!(crash.status.code(), Some(3), "{crash}")
            }
            (Job::Fail(_), Err(TaskError::Failed { message, .. })) => {
                assert_eq!(message, "Error: told to fail")
            }
            // A task on the crashed worker at the same time fails with it, never twice.
            (Job::Double(_) | Job::Sleep(_), Err(TaskError::WorkerCrashed(_))) => {}
            (job, result) => panic!("task {n} {job:?}: unexpected {result:?}"),
        }
    }
    assert_eq!(crashed, 1, "the crashing task failed as a crash");
    // The crashed worker was replaced: the pool still answers, on every worker.
    let doubles: Vec<Job> = (0..4u64).map(Job::Double).collect();
    let again = join_all(doubles.iter().map(|job| pool.run(job))).await;
    for (n, result) in again.into_iter().enumerate() {
        assert_eq!(result.unwrap(), 2 * n as u64);
    }
    pool.close().await;
}

/// What `tests/children/node_supervised.js` answers to a number.
#[derive(Debug, Deserialize)]
struct Answer {
    value: u64,
    restarts: u32,
}

#[tokio::test]
async fn a_supervised_node_child_attaches_answers_heartbeats_and_is_restarted_after_a_crash() {
    if !node_available(
        "a_supervised_node_child_attaches_answers_heartbeats_and_is_restarted_after_a_crash",
    ) {
        return;
    }
    let supervisor = Supervisor::new(SupervisorOptions::default());
    let mut events = supervisor.events();
    let spec = ChildSpec::program("js", format!("{CHILDREN}/node_supervised.js"))
        .options(node_options())
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
    supervisor.post_message("js", &41u64).await.unwrap();
    let reply = tokio::time::timeout(EVENT_TIMEOUT, supervisor.recv_message())
        .await
        .unwrap()
        .unwrap();
    let answer: Answer = reply.message.data().unwrap();
    assert_eq!((answer.value, answer.restarts), (42, 0));
    assert_eq!(reply.pid, first, "the first life still answers");

    supervisor.post_message("js", &"crash").await.unwrap();
    let second = utility_process_tests::next_life_after_exit(&mut events, 3).await;
    assert_ne!(second, first, "a restart is a new process");
    supervisor.post_message("js", &1u64).await.unwrap();
    let reply = tokio::time::timeout(EVENT_TIMEOUT, supervisor.recv_message())
        .await
        .unwrap()
        .unwrap();
    let answer: Answer = reply.message.data().unwrap();
    assert_eq!((answer.value, answer.restarts), (2, 1));
    supervisor.shutdown().await;
}

#[tokio::test]
async fn a_node_worker_whose_init_throws_is_a_start_failure_with_its_message() {
    if !node_available("a_node_worker_whose_init_throws_is_a_start_failure_with_its_message") {
        return;
    }
    let pool = Pool::<Job, u64>::builder(
        Worker::program(format!("{CHILDREN}/node_pool.js")).args(["init-fail"]),
    )
    .fork_options(node_options().stderr(Stdio::Ignore))
    .workers(1)
    .breaker(2, Duration::from_secs(60))
    .build()
    .unwrap();
    match tokio::time::timeout(EVENT_TIMEOUT, pool.ready())
        .await
        .unwrap()
    {
        Err(TaskError::WorkersFailing(failure)) => match &failure.reason {
            utility_process_pool::StartError::Init { message, .. } => {
                assert_eq!(message, "Error: no model file")
            }
            other => panic!("expected StartError::Init, got {other:?}"),
        },
        other => panic!("expected WorkersFailing, got {other:?}"),
    }
    pool.close_now().await;
}

#[tokio::test]
async fn a_node_task_past_its_deadline_stops_cooperatively_and_its_worker_lives_on() {
    if !node_available("a_node_task_past_its_deadline_stops_cooperatively_and_its_worker_lives_on")
    {
        return;
    }
    let pool = node_pool("jobs", 1);
    tokio::time::timeout(EVENT_TIMEOUT, pool.ready())
        .await
        .unwrap()
        .unwrap();
    let options =
        utility_process_pool::RunOptions::default().run_timeout(Duration::from_millis(200));
    match tokio::time::timeout(EVENT_TIMEOUT, pool.run_with(&Job::Sleep(60_000), options))
        .await
        .unwrap()
    {
        Err(TaskError::RunTimeout { stop, .. }) => {
            assert_eq!(stop, utility_process_pool::Stop::Cooperatively)
        }
        other => panic!("expected RunTimeout, got {other:?}"),
    }
    assert_eq!(pool.run(&Job::Double(4)).await.unwrap(), 8);
    assert_eq!(pool.metrics().crashes, 0, "the worker was not killed");
    pool.close().await;
}

/// The supervised JS child, checked every 100 ms, restarted after 10 ms.
fn supervised_spec() -> ChildSpec {
    ChildSpec::program("js", format!("{CHILDREN}/node_supervised.js"))
        .options(node_options())
        .heartbeat(Heartbeat::new(Duration::from_millis(100)).misses(3))
        .backoff(Backoff::new(
            Duration::from_millis(10),
            Duration::from_millis(50),
        ))
        .start_timeout(Duration::from_secs(10))
}

/// The events until the second life is ready; the reason the first one ended.
async fn until_restarted(
    events: &mut utility_process_supervisor::Events,
) -> (ExitReason, Vec<SupervisorEvent>) {
    let mut seen = Vec::new();
    let mut reason = None;
    loop {
        let event = tokio::time::timeout(EVENT_TIMEOUT, events.recv())
            .await
            .unwrap_or_else(|_| panic!("no restart; events: {seen:#?}"))
            .expect("the supervisor is running");
        match &event {
            SupervisorEvent::Exited { reason: r, .. } if reason.is_none() => {
                reason = Some(r.clone())
            }
            SupervisorEvent::Ready { restarts: 1, .. } => break,
            _ => {}
        }
        seen.push(event);
    }
    (reason.expect("the first life ended"), seen)
}

#[tokio::test]
async fn a_supervised_node_child_whose_event_loop_blocks_is_declared_hung_and_restarted() {
    if !node_available(
        "a_supervised_node_child_whose_event_loop_blocks_is_declared_hung_and_restarted",
    ) {
        return;
    }
    let supervisor = Supervisor::new(SupervisorOptions::default());
    let mut events = supervisor.events();
    let first = tokio::time::timeout(EVENT_TIMEOUT, supervisor.start_child(supervised_spec()))
        .await
        .unwrap()
        .unwrap();
    // While its loop turns, its heartbeats are answered: the first life lives on.
    tokio::time::sleep(Duration::from_secs(1)).await;
    supervisor.post_message("js", &41u64).await.unwrap();
    let reply = tokio::time::timeout(EVENT_TIMEOUT, supervisor.recv_message())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reply.pid, first, "the first life still answers");
    supervisor.post_message("js", &"block").await.unwrap();
    let (reason, seen) = until_restarted(&mut events).await;
    assert!(
        matches!(reason, ExitReason::HeartbeatMissed { missed, .. } if missed >= 3),
        "{reason:?}; events: {seen:#?}"
    );
    supervisor.shutdown().await;
}

#[tokio::test]
async fn a_supervised_node_childs_failing_probe_restarts_it_with_the_probes_words() {
    if !node_available("a_supervised_node_childs_failing_probe_restarts_it_with_the_probes_words") {
        return;
    }
    let supervisor = Supervisor::new(SupervisorOptions::default());
    let mut events = supervisor.events();
    let spec = supervised_spec().probe(utility_process_supervisor::Probe::new(
        Duration::from_millis(100),
    ));
    tokio::time::timeout(EVENT_TIMEOUT, supervisor.start_child(spec))
        .await
        .unwrap()
        .unwrap();
    // Healthy for a while: ten probes pass.
    tokio::time::sleep(Duration::from_secs(1)).await;
    supervisor.post_message("js", &"sick").await.unwrap();
    let (reason, seen) = until_restarted(&mut events).await;
    assert!(
        matches!(
            &reason,
            ExitReason::ProbeFailed(utility_process_supervisor::ProbeFailure::Unhealthy(words))
                if words == "told to be sick"
        ),
        "{reason:?}; events: {seen:#?}"
    );
    supervisor.shutdown().await;
}
