//! What a child is started with: stdout and stderr, stdin, cwd, environment, arguments, and
//! its names. The `inspect` child reports what it sees.

use std::collections::BTreeMap;
use std::ffi::OsString;
#[cfg(unix)]
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

use tokio::io::{AsyncRead, AsyncReadExt};
use utility_process::{fork, Event, ForkOptions, Stdio, UtilityProcess};
use utility_process_tests::{ended_by_kill, next_event, Report, Written, EVENT_TIMEOUT};

/// What the child reports for a standard stream that leads nowhere.
const NULL_DEVICE: &str = if cfg!(windows) { "NUL" } else { "/dev/null" };

const INSPECT: &str = env!("CARGO_BIN_EXE_inspect");
/// The default service name of `INSPECT`: its file name (without `.exe` on Windows).
const INSPECT_NAME: &str = "inspect";

// ---- helpers ---------------------------------------------------------------------------------

/// Waits for Spawn, then for the child's one report.
async fn report(child: &mut UtilityProcess) -> Report {
    match next_event(child).await {
        Some(Event::Spawn) => {}
        other => panic!("expected Spawn, got {other:?}"),
    }
    match next_event(child).await {
        Some(Event::Message(message)) => message.data().expect("a Report"),
        other => panic!("expected the report, got {other:?}"),
    }
}

/// Kills a reporting child (which waits for its port to close) and checks the end.
async fn finish(child: &mut UtilityProcess) {
    assert!(child.kill());
    match next_event(child).await {
        Some(Event::Exit(status)) => assert!(ended_by_kill(&status), "{status}"),
        other => panic!("expected Exit, got {other:?}"),
    }
    assert!(next_event(child).await.is_none());
}

/// Every event until the end: the messages, then the exit code (no Error allowed).
async fn messages_until_exit(child: &mut UtilityProcess) -> (Vec<utility_process::Message>, i32) {
    match next_event(child).await {
        Some(Event::Spawn) => {}
        other => panic!("expected Spawn, got {other:?}"),
    }
    let mut messages = Vec::new();
    loop {
        match next_event(child).await {
            Some(Event::Message(message)) => messages.push(message),
            Some(Event::Exit(status)) => {
                assert!(next_event(child).await.is_none());
                return (messages, status.code().expect("an exit code"));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Everything a stream gives until end-of-file, or a panic after the event timeout.
async fn read_all(mut stream: impl AsyncRead + Unpin) -> Vec<u8> {
    let mut out = Vec::new();
    tokio::time::timeout(EVENT_TIMEOUT, stream.read_to_end(&mut out))
        .await
        .expect("the stream ends")
        .expect("the stream reads");
    out
}

#[cfg(unix)]
fn proc_cmdline(pid: u32) -> Vec<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    raw.split(|&b| b == 0)
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect::<Vec<_>>()
        .split_last()
        .map(|(_, args)| args.to_vec()) // the last NUL leaves an empty piece
        .unwrap_or_default()
}

#[cfg(unix)]
fn proc_comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap()
        .trim_end_matches('\n')
        .to_owned()
}

/// The path with links resolved; on Windows without the `\\?\` prefix `canonicalize` adds,
/// as the child's `current_dir` has none.
fn canonical(path: &std::path::Path) -> PathBuf {
    let path = path.canonicalize().unwrap();
    match path.to_str().and_then(|p| p.strip_prefix(r"\\?\")) {
        Some(plain) if cfg!(windows) => PathBuf::from(plain),
        _ => path,
    }
}

fn no_library_variables(env: &BTreeMap<String, String>) {
    let leaked: Vec<_> = env
        .keys()
        .filter(|k| k.starts_with("UTILITY_PROCESS_"))
        .collect();
    assert!(
        leaked.is_empty(),
        "parent_port() should remove {leaked:?} from the environment"
    );
}

// ---- stdout and stderr -----------------------------------------------------------------------

#[tokio::test]
async fn stdout_and_stderr_pipes_carry_the_exact_bytes() {
    // Windows arguments are UTF-16: no bytes that are not UTF-8 there.
    #[cfg(unix)]
    let mut out =
        b"first line\n\nthird line, then a partial one: \xff\xfe\x01 no newline ".to_vec();
    #[cfg(windows)]
    let mut out = b"first line\n\nthird line, then a partial one: \x01 no newline ".to_vec();
    out.extend_from_slice("ünïcode ✓".as_bytes());
    let err = b"an error line\nand a partial".to_vec();
    #[cfg(unix)]
    let arg = |bytes: &[u8]| OsString::from_vec(bytes.to_vec());
    #[cfg(windows)]
    let arg = |bytes: &[u8]| OsString::from(String::from_utf8(bytes.to_vec()).unwrap());
    let mut child = fork(
        INSPECT,
        [OsString::from("--output"), arg(&out), arg(&err)],
        ForkOptions::default().stdio(Stdio::Pipe),
    )
    .unwrap();
    let stdout = child.take_stdout().expect("stdout is a pipe");
    let stderr = child.take_stderr().expect("stderr is a pipe");
    assert!(child.take_stdout().is_none(), "taken once");
    assert!(child.take_stderr().is_none(), "taken once");

    let ((messages, code), got_out, got_err) = tokio::join!(
        messages_until_exit(&mut child),
        read_all(stdout),
        read_all(stderr)
    );
    assert_eq!(code, 0);
    assert_eq!(messages.len(), 1);
    let written: Written = messages[0].data().unwrap();
    assert_eq!(written.stdout_error, None);
    assert_eq!(written.stderr_error, None);
    assert!(written.fds[1].starts_with("pipe"), "{:?}", written.fds);
    assert!(written.fds[2].starts_with("pipe"), "{:?}", written.fds);
    // Windows names no pipe: that they are two is seen in the bytes below.
    #[cfg(unix)]
    assert_ne!(
        written.fds[1], written.fds[2],
        "stdout and stderr share a pipe"
    );
    assert_eq!(
        String::from_utf8_lossy(&got_out),
        String::from_utf8_lossy(&out)
    );
    assert_eq!(got_out, out);
    assert_eq!(got_err, err);
}

#[tokio::test]
async fn a_stdout_pipe_carries_more_than_the_pipe_buffer() {
    const LEN: usize = 1024 * 1024 + 17;
    let mut child = fork(
        INSPECT,
        ["--spew".to_owned(), LEN.to_string()],
        ForkOptions::default().stdout(Stdio::Pipe),
    )
    .unwrap();
    let stdout = child.take_stdout().expect("stdout is a pipe");
    assert!(child.take_stderr().is_none(), "stderr was left inherited");
    let ((messages, code), got) = tokio::join!(messages_until_exit(&mut child), read_all(stdout));
    assert_eq!(code, 0);
    assert!(messages.is_empty());
    assert_eq!(got.len(), LEN);
    assert!(
        got.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8),
        "the bytes differ"
    );
}

#[tokio::test]
async fn ignore_sends_output_to_dev_null() {
    let mut child = fork(
        INSPECT,
        ["--output", "to nowhere\npartial", "also nowhere"],
        ForkOptions::default().stdio(Stdio::Ignore),
    )
    .unwrap();
    assert!(child.take_stdout().is_none());
    assert!(child.take_stderr().is_none());
    let (messages, code) = messages_until_exit(&mut child).await;
    assert_eq!(code, 0);
    let written: Written = messages[0].data().unwrap();
    assert_eq!(written.stdout_error, None, "writing to stdout failed");
    assert_eq!(written.stderr_error, None, "writing to stderr failed");
    assert_eq!(written.fds[1], NULL_DEVICE);
    assert_eq!(written.fds[2], NULL_DEVICE);
}

#[tokio::test]
async fn take_stdout_is_none_for_inherit() {
    let mut child = fork(INSPECT, ["inherit"], ForkOptions::default()).unwrap();
    assert!(child.take_stdout().is_none());
    assert!(child.take_stderr().is_none());
    let report = report(&mut child).await;
    // The child writes where this process writes.
    let ours = [1, 2].map(utility_process_tests::std_stream);
    assert!(!ours.iter().any(|s| s.starts_with("error")), "{ours:?}");
    assert_eq!(report.fds[1], ours[0], "stdout is not inherited");
    assert_eq!(report.fds[2], ours[1], "stderr is not inherited");
    finish(&mut child).await;
}

#[tokio::test]
async fn stdin_is_dev_null() {
    for stdio in [Stdio::Inherit, Stdio::Pipe, Stdio::Ignore] {
        let mut child = fork(INSPECT, ["stdin"], ForkOptions::default().stdio(stdio)).unwrap();
        let report = report(&mut child).await;
        assert_eq!(report.fds[0], NULL_DEVICE, "with {stdio:?}");
        assert!(
            report.stdin_eof,
            "stdin does not read end-of-file at once, with {stdio:?}"
        );
        finish(&mut child).await;
    }
}

// ---- cwd, env, args --------------------------------------------------------------------------

#[tokio::test]
async fn cwd_env_and_args_reach_the_child() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("a cwd with spaces ✓");
    std::fs::create_dir_all(&dir).unwrap();
    let dir = canonical(&dir);
    assert!(
        std::env::var_os("PATH").is_some(),
        "the test needs PATH in its own environment"
    );
    let args = [
        "plain",
        "with spaces  and  more",
        "",
        "ünïcødé ✓ 🦀",
        "--looks=like-a-flag",
        "quotes \" ' and $HOME and *",
        "new\nline",
    ];
    let before: BTreeMap<String, String> = std::env::vars().collect();
    let mut child = fork(
        INSPECT,
        args,
        ForkOptions::default()
            .cwd(&dir)
            .env("UP_TEST_VALUE", "spaces and ünïcode = ✓")
            .env("UP_TEST_EMPTY", "")
            .env("UP_TEST_GONE", "set, then removed")
            .env_remove("UP_TEST_GONE")
            .env_remove("PATH"),
    )
    .unwrap();
    let report = report(&mut child).await;
    let after: BTreeMap<String, String> = std::env::vars().collect();

    assert_eq!(report.args, args);
    assert_eq!(PathBuf::from(&report.cwd), dir);
    assert_eq!(
        report.env.get("UP_TEST_VALUE").map(String::as_str),
        Some("spaces and ünïcode = ✓")
    );
    assert_eq!(
        report.env.get("UP_TEST_EMPTY").map(String::as_str),
        Some("")
    );
    assert!(!report.env.contains_key("UP_TEST_GONE"));
    assert!(
        !report.env.contains_key("PATH"),
        "env_remove(\"PATH\") did not remove it"
    );
    no_library_variables(&report.env);
    // Everything else is inherited (skipping what another test changed meanwhile).
    for (key, value) in &before {
        if key == "PATH" || after.get(key) != Some(value) {
            continue;
        }
        assert_eq!(report.env.get(key), Some(value), "{key} was not inherited");
    }
    finish(&mut child).await;
}

#[tokio::test]
async fn env_clear_leaves_only_what_was_set() {
    let mut child = fork(
        INSPECT,
        ["env"],
        ForkOptions::default()
            .env("BEFORE_CLEAR", "forgotten")
            .env_clear()
            .env("ONLY", "this")
            .env("AND", "that"),
    )
    .unwrap();
    let mut report = report(&mut child).await;
    // Wine puts its own variables (WINE*) and the system's (SystemRoot, SystemDrive) into
    // every process it starts.
    if utility_process_tests::under_wine() {
        report.env.retain(|key, _| {
            !key.starts_with("WINE") && key != "SystemRoot" && key != "SystemDrive"
        });
    }
    let expected: BTreeMap<String, String> = [("ONLY", "this"), ("AND", "that")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    assert_eq!(report.env, expected);
    finish(&mut child).await;
}

// ---- names -----------------------------------------------------------------------------------

/// Windows: the service name is the startup title (`STARTUPINFOW.lpTitle`, whole) and
/// `parent_port().service_name()`; `argv[0]` stays the program's path.
#[cfg(windows)]
#[tokio::test]
async fn the_service_name_is_argv0_and_the_process_name() {
    for name in [
        "image-decoder-worker-7",
        "tiny",
        "with space ✓✓✓✓",
        "worker-✓✓✓✓",
    ] {
        let mut child = fork(
            INSPECT,
            ["names", "second"],
            ForkOptions::default().service_name(name),
        )
        .unwrap();
        assert_eq!(child.service_name(), name);
        let pid = child.pid().expect("running");
        let report = report(&mut child).await;
        assert_eq!(report.pid, pid);
        assert!(
            report.argv0.ends_with("inspect.exe"),
            "argv[0] is {:?}",
            report.argv0
        );
        assert_eq!(report.args, ["names", "second"]);
        assert_eq!(report.service_name, name);
        assert_eq!(report.comm, name, "the child's startup title");
        no_library_variables(&report.env);
        finish(&mut child).await;
    }
}

#[cfg(unix)]
#[tokio::test]
async fn the_service_name_is_argv0_and_the_process_name() {
    // (service name, the process name the kernel keeps: 15 bytes, cut at a character boundary)
    let names = [
        ("image-decoder-worker-7", "image-decoder-w"),
        ("tiny", "tiny"),
        ("exactly-15-byte", "exactly-15-byte"),
        ("with space ✓✓✓✓", "with space ✓"),
        ("worker-✓✓✓✓", "worker-✓✓"),
    ];
    for (name, comm) in names {
        let mut child = fork(
            INSPECT,
            ["names", "second"],
            ForkOptions::default().service_name(name),
        )
        .unwrap();
        assert_eq!(child.service_name(), name);
        let pid = child.pid().expect("running");
        // argv[0] is the service name from the start (exec has happened when fork returns).
        assert_eq!(proc_cmdline(pid), [name, "names", "second"]);

        let report = report(&mut child).await;
        assert_eq!(report.pid, pid);
        assert_eq!(report.argv0, name);
        assert_eq!(report.args, ["names", "second"]);
        assert_eq!(report.service_name, name);
        assert_eq!(report.comm, comm, "the child's own /proc/self/comm");
        // parent_port() has returned: the name is set for everyone to see.
        assert_eq!(proc_comm(pid), comm, "/proc/{pid}/comm");
        no_library_variables(&report.env);
        finish(&mut child).await;
    }
}

/// Windows: the default service name is the program's file name, without `.exe`.
#[cfg(windows)]
#[tokio::test]
async fn the_default_service_name_is_the_programs_file_name() {
    let mut child = fork(INSPECT, ["default"], ForkOptions::default()).unwrap();
    assert_eq!(child.service_name(), INSPECT_NAME);
    let report = report(&mut child).await;
    assert_eq!(report.service_name, INSPECT_NAME);
    assert_eq!(report.comm, INSPECT_NAME);
    finish(&mut child).await;
}

#[cfg(unix)]
#[tokio::test]
async fn the_default_service_name_is_the_programs_file_name() {
    let mut child = fork(INSPECT, ["default"], ForkOptions::default()).unwrap();
    assert_eq!(child.service_name(), "inspect");
    let pid = child.pid().expect("running");
    assert_eq!(proc_cmdline(pid), ["inspect", "default"]);
    let report = report(&mut child).await;
    assert_eq!(report.argv0, "inspect");
    assert_eq!(report.service_name, "inspect");
    assert_eq!(report.comm, "inspect");
    assert_eq!(proc_comm(pid), "inspect");
    finish(&mut child).await;
}

// ---- finding the program ---------------------------------------------------------------------

#[tokio::test]
async fn a_relative_program_path_is_resolved_against_the_parents_cwd_not_the_childs() {
    let here = std::env::current_dir().unwrap();
    // `../` up to the root, then the absolute path without its `/`.
    let up = "../".repeat(here.components().count().saturating_sub(1));
    let relative = PathBuf::from(format!("{up}{}", INSPECT.trim_start_matches('/')));
    assert!(relative.is_relative());
    let elsewhere = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("relative-program-cwd")
        .join("deeper");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let elsewhere = canonical(&elsewhere);

    let mut child = fork(
        &relative,
        ["relative"],
        ForkOptions::default().cwd(&elsewhere),
    )
    .unwrap();
    assert_eq!(child.service_name(), INSPECT_NAME);
    let report = report(&mut child).await;
    #[cfg(unix)]
    assert_eq!(report.argv0, "inspect");
    assert_eq!(PathBuf::from(&report.cwd), elsewhere);
    finish(&mut child).await;
}

#[tokio::test]
async fn a_bare_program_name_is_found_on_the_childs_path() {
    let dir = PathBuf::from(INSPECT).parent().unwrap().to_owned();
    let separator = if cfg!(windows) { ';' } else { ':' };
    let path = format!("/nonexistent-dir{separator}{}", dir.display());
    let mut child = fork(
        "inspect",
        ["bare"],
        ForkOptions::default().env("PATH", &path),
    )
    .unwrap();
    assert_eq!(child.service_name(), "inspect");
    let report = report(&mut child).await;
    assert_eq!(report.args, ["bare"]);
    assert_eq!(report.env.get("PATH"), Some(&path));
    finish(&mut child).await;
}
