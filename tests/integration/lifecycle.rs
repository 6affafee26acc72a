//! Spawn, exit and error events, kill, no orphans, no zombies, no stray descriptors.
//!
//! Tests that count this process's descriptors or children, or that open a descriptor
//! without `O_CLOEXEC`, cannot share the process with the other tests, whose children and
//! descriptors come and go at the same time. They run through [`in_own_process`]: the test
//! binary runs itself again with only that test selected.

use std::io::BufRead;
use std::time::{Duration, Instant};

#[cfg(unix)]
use utility_process::unix::Signal;
#[cfg(unix)]
use utility_process::unix::{ExitStatusExt as _, UtilityProcessExt as _};
#[cfg(windows)]
use utility_process::windows::ExitStatusExt as _;
use utility_process::UtilityProcess;
use utility_process::{fork, Error, Event, ExitStatus, ForkOptions, SpawnStep, Stdio};
use utility_process_tests::{
    all_events, describe_fds, fd_count, in_own_process, is_alive, kill_pid, next_event,
    EVENT_TIMEOUT,
};

const CRASH: &str = env!("CARGO_BIN_EXE_crash");
const GRANDPARENT: &str = env!("CARGO_BIN_EXE_grandparent");
const SPAWNER: &str = env!("CARGO_BIN_EXE_spawner");

/// How long a test waits for something that should happen promptly (a process to vanish, a
/// descriptor to be closed) before it fails.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Starts the `crash` child in `mode` (with its arguments). Its stderr is dropped: several
/// modes panic on purpose, and the panic reaches the test through the events anyway.
fn crash(mode: &[&str]) -> UtilityProcess {
    fork(CRASH, mode, ForkOptions::default().stderr(Stdio::Ignore)).expect("fork crash")
}

/// Waits for the Spawn event, which must be the first.
async fn expect_spawn(child: &mut UtilityProcess) {
    match next_event(child).await {
        Some(Event::Spawn) => {}
        other => panic!("expected Spawn first, got {other:?}"),
    }
}

/// Waits for a message and decodes it as `T`.
async fn expect_message<T: serde::de::DeserializeOwned>(child: &mut UtilityProcess) -> T {
    match next_event(child).await {
        Some(Event::Message(message)) => message.data().expect("a message of the expected type"),
        other => panic!("expected a message, got {other:?}"),
    }
}

/// Windows: what a status is when the parent ended the child by terminating its job (after
/// `kill`'s grace period, or by `kill_now`): exit code 1, no exception.
#[cfg(windows)]
fn assert_terminated(status: &ExitStatus) {
    assert_eq!(status.code(), Some(1), "{status}");
    assert_eq!(status.exception(), None, "{status}");
    assert!(!status.success(), "{status}");
}

/// Windows: the status of an unhandled exception `code`: no exit code.
#[cfg(windows)]
fn assert_exception(status: &ExitStatus, code: u32) {
    assert_eq!(status.exception(), Some(code), "{status}");
    assert_eq!(status.code(), None, "{status}");
    assert!(!status.success(), "{status}");
}

/// `STATUS_ACCESS_VIOLATION`: a write through a null pointer.
#[cfg(windows)]
const ACCESS_VIOLATION: u32 = 0xC000_0005;
/// `STATUS_STACK_BUFFER_OVERRUN`: how `__fastfail`, so Rust's `abort`, ends a process.
#[cfg(windows)]
const FAST_FAIL: u32 = 0xC000_0409;

#[cfg(unix)]
/// Asserts that `status` is "killed by `signal`", with no exit code.
fn assert_signalled(status: &ExitStatus, signal: Signal) {
    assert_eq!(status.signal(), Some(signal), "{status}");
    assert_eq!(status.code(), None, "{status}");
    assert!(!status.success(), "{status}");
}

/// Polls `condition` until it holds, failing after `timeout`.
async fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "not within {timeout:?}: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A child process of this process, as `/proc/<pid>/stat` describes it.
#[cfg(unix)]
#[derive(Debug)]
#[expect(
    dead_code,
    reason = "the fields are read through Debug, in failure messages"
)]
struct ProcEntry {
    pid: u32,
    state: String,
    comm: String,
}

#[cfg(unix)]
/// Every process whose parent is this process, zombies included.
fn children_of_this_process() -> Vec<ProcEntry> {
    children_of(std::process::id())
}

#[cfg(unix)]
/// Every process whose parent is `me`, zombies included.
fn children_of(me: u32) -> Vec<ProcEntry> {
    let mut children = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        // It may have vanished since the listing.
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let mut rest = stat[close + 1..].split_whitespace();
        let (Some(state), Some(ppid)) = (rest.next(), rest.next()) else {
            continue;
        };
        if ppid.parse::<u32>().ok() == Some(me) {
            children.push(ProcEntry {
                pid,
                state: state.to_owned(),
                comm: stat[open + 1..close].to_owned(),
            });
        }
    }
    children
}

#[cfg(unix)]
/// This process's children that are zombies (ended, not reaped).
fn zombie_children() -> Vec<ProcEntry> {
    children_of_this_process()
        .into_iter()
        .filter(|child| child.state == "Z")
        .collect()
}

#[cfg(unix)]
/// This process's children other than the library's guardian (see `sys/unix/guardian.rs`),
/// which lives as long as this process.
fn children_besides_the_guardian() -> Vec<ProcEntry> {
    children_of_this_process()
        .into_iter()
        .filter(|child| !(child.comm == "up-guardian" && child.state != "Z"))
        .collect()
}

/// Windows: every process whose parent is this process.
#[cfg(windows)]
fn children_of_this_process() -> Vec<(u32, String)> {
    utility_process_tests::children_of(std::process::id())
}

/// Windows has no guardian: every child.
#[cfg(windows)]
fn children_besides_the_guardian() -> Vec<(u32, String)> {
    children_of_this_process()
}

/// Forks one child that returns at once and waits for its clean exit.
async fn run_one_child_to_a_clean_exit() {
    let mut child = crash(&["return"]);
    let events = all_events(&mut child).await;
    assert!(
        matches!(events.last(), Some(Event::Exit(status)) if status.success()),
        "{events:?}"
    );
}

/// Windows: forks one child and waits for its end, so that the library's permanent resources
/// exist; then returns this process's handle count, the baseline for later checks.
#[cfg(windows)]
async fn warm_up_and_count_fds() -> usize {
    run_one_child_to_a_clean_exit().await;
    wait_until("the warm-up child is gone", SETTLE_TIMEOUT, || {
        children_besides_the_guardian().is_empty()
    })
    .await;
    // The library's thread lets go of the child's process and job handles just after it
    // publishes the exit.
    tokio::time::sleep(Duration::from_millis(200)).await;
    fd_count()
}

#[cfg(unix)]
/// Forks one child and waits for its end, so that the library's permanent resources (its
/// thread, its runtime, its guardian and the descriptor to it) exist; then returns this
/// process's descriptor count, the baseline for later checks.
///
/// The library's thread lets go of its share of a child (its pidfd) just after the exit is
/// published, so the count is taken once no pidfd is left: no child is running now.
async fn warm_up_and_count_fds() -> usize {
    run_one_child_to_a_clean_exit().await;
    wait_until(
        "the warm-up child's pidfd is closed",
        SETTLE_TIMEOUT,
        || !describe_fds().contains("pidfd"),
    )
    .await;
    // The guardian names itself just after it is forked; on a loaded machine that can come
    // after the warm-up child has ended, and until then it looks like any child.
    wait_until("the guardian has its name", SETTLE_TIMEOUT, || {
        children_besides_the_guardian().is_empty()
    })
    .await;
    fd_count()
}

// ---------------------------------------------------------------------------------------------
// Events and exit statuses
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn spawn_is_the_first_event_and_comes_exactly_once() {
    // The child posts at once, so its message could overtake Spawn if the order were loose.
    let mut child = crash(&["post-and-return"]);
    let events = all_events(&mut child).await;
    match events.as_slice() {
        [Event::Spawn, Event::Message(message), Event::Exit(status)] => {
            assert_eq!(message.data::<String>().unwrap(), "hello");
            assert!(status.success(), "{status}");
        }
        other => panic!("expected Spawn, the message, Exit; got {other:?}"),
    }
    assert!(child.next_event().await.is_none(), "an event after the end");
}

#[tokio::test]
async fn pid_is_some_after_spawn_and_none_after_exit() {
    let mut child = crash(&["sleep"]);
    expect_spawn(&mut child).await;
    let pid = child.pid().expect("a pid after Spawn");
    assert!(is_alive(pid), "pid {pid} is not a live process");
    assert!(child.kill());
    match all_events(&mut child).await.as_slice() {
        [Event::Exit(_)] => {}
        other => panic!("expected only Exit; got {other:?}"),
    }
    assert_eq!(child.pid(), None);
}

#[tokio::test]
async fn clean_return_exits_with_code_zero_and_no_error() {
    let mut child = crash(&["return"]);
    match all_events(&mut child).await.as_slice() {
        [Event::Spawn, Event::Exit(status)] => {
            assert_eq!(status.code(), Some(0), "{status}");
            #[cfg(unix)]
            assert_eq!(status.signal(), None, "{status}");
            assert!(status.success(), "{status}");
        }
        other => panic!("expected Spawn, Exit; got {other:?}"),
    }
}

#[tokio::test]
async fn exit_code_two_is_reported_as_code_not_signal() {
    let mut child = crash(&["exit", "2"]);
    match all_events(&mut child).await.as_slice() {
        [Event::Spawn, Event::Exit(status)] => {
            assert_eq!(status.code(), Some(2), "{status}");
            #[cfg(unix)]
            assert_eq!(status.signal(), None, "{status}");
            assert!(!status.success(), "{status}");
        }
        other => panic!("expected Spawn, Exit (no Error); got {other:?}"),
    }
}

/// A segfault (an access violation on Windows) is a crash: an error carrying the status, then
/// the exit.
#[tokio::test]
async fn crash_by_segfault_reports_error_then_exit_with_the_signal() {
    let mut child = crash(&["segv"]);
    match all_events(&mut child).await.as_slice() {
        [Event::Spawn, Event::Error(Error::Crashed {
            service_name,
            pid,
            status: crashed,
        }), Event::Exit(status)] => {
            assert_eq!(crashed, status, "the error carries the exit status");
            assert_ne!(*pid, 0);
            // The default service name is the program's file name (without `.exe`).
            assert_eq!(service_name, "crash");
            #[cfg(unix)]
            assert_signalled(status, Signal::SIGSEGV);
            #[cfg(windows)]
            assert_exception(status, ACCESS_VIOLATION);
        }
        other => panic!("expected Spawn, Error(Crashed), Exit; got {other:?}"),
    }
}

#[tokio::test]
async fn panic_reports_message_and_location_before_exit() {
    let mut child = crash(&["panic"]);
    match all_events(&mut child).await.as_slice() {
        [Event::Spawn, Event::Error(error), Event::Exit(status)] => {
            let Error::Panicked { pid, panic, .. } = error else {
                panic!("expected Error::Panicked, got {error:?}")
            };
            assert_ne!(*pid, 0);
            assert_eq!(panic.message, "deliberate panic");
            assert!(
                panic.location.file.ends_with("crash.rs"),
                "{}",
                panic.location
            );
            assert!(panic.location.line > 0, "{}", panic.location);
            assert_eq!(panic.thread.as_deref(), Some("main"));
            assert!(error.to_string().contains("deliberate panic"), "{error}");
            assert_eq!(status.code(), Some(101), "{status}");
            #[cfg(unix)]
            assert_eq!(status.signal(), None, "{status}");
        }
        other => panic!("expected Spawn, Error(Panicked), Exit; got {other:?}"),
    }
}

#[tokio::test]
async fn caught_panic_is_not_an_error() {
    let mut child = crash(&["caught-panic"]);
    match all_events(&mut child).await.as_slice() {
        [Event::Spawn, Event::Exit(status)] => assert!(status.success(), "{status}"),
        other => panic!("expected Spawn, Exit (no Error); got {other:?}"),
    }
}

#[tokio::test]
async fn abort_after_panic_reports_the_panic() {
    let mut child = crash(&["panic-then-abort"]);
    match all_events(&mut child).await.as_slice() {
        [Event::Spawn, Event::Error(Error::Panicked { panic, .. }), Event::Exit(status)] => {
            assert_eq!(panic.message, "deliberate panic");
            assert!(
                panic.location.file.ends_with("crash.rs"),
                "{}",
                panic.location
            );
            #[cfg(unix)]
            assert_signalled(status, Signal::SIGABRT);
            // Rust's abort is a __fastfail on Windows.
            #[cfg(windows)]
            assert_exception(status, FAST_FAIL);
        }
        other => panic!("expected Spawn, Error(Panicked), Exit; got {other:?}"),
    }
}

#[tokio::test]
async fn abort_without_a_panic_is_a_crash() {
    let mut child = crash(&["abort"]);
    match all_events(&mut child).await.as_slice() {
        [Event::Spawn, Event::Error(Error::Crashed {
            status: crashed, ..
        }), Event::Exit(status)] => {
            #[cfg(unix)]
            assert_eq!(crashed.signal(), Some(Signal::SIGABRT));
            #[cfg(unix)]
            assert_signalled(status, Signal::SIGABRT);
            #[cfg(windows)]
            assert_eq!(crashed.exception(), Some(FAST_FAIL), "{crashed}");
            #[cfg(windows)]
            assert_exception(status, FAST_FAIL);
        }
        other => panic!("expected Spawn, Error(Crashed), Exit; got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Failing to start
// ---------------------------------------------------------------------------------------------

/// The error of a fork that must fail, and a check that it left no child and no descriptor.
fn fork_error(program: &str, options: ForkOptions, fds_before: usize) -> Error {
    let result = fork(program, [] as [&str; 0], options);
    let error = match result {
        Err(error) => error,
        Ok(child) => panic!("fork of {program} succeeded: {child:?}"),
    };
    assert_eq!(
        children_besides_the_guardian().len(),
        0,
        "a child is left after the failed fork of {program}: {:?}",
        children_of_this_process()
    );
    assert_eq!(
        fd_count(),
        fds_before,
        "descriptors leaked by the failed fork of {program}: {}",
        describe_fds()
    );
    error
}

#[test]
fn missing_program_is_an_error_at_once_naming_the_path() {
    in_own_process(
        module_path!(),
        "missing_program_is_an_error_at_once_naming_the_path",
        failed_forks_are_errors_that_leave_nothing_behind,
    );
}

async fn failed_forks_are_errors_that_leave_nothing_behind() {
    let fds = warm_up_and_count_fds().await;
    assert_eq!(children_besides_the_guardian().len(), 0);
    let scratch = std::env::temp_dir().join(format!("up-lifecycle-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap();

    // A path that does not exist.
    let missing = scratch.join("no-such-program");
    let missing = missing.to_str().unwrap();
    let error = fork_error(missing, ForkOptions::default(), fds);
    let Error::Spawn {
        program,
        step,
        source,
        ..
    } = &error
    else {
        panic!("expected Error::Spawn, got {error:?}")
    };
    assert_eq!(program.to_str(), Some(missing));
    assert_eq!(*step, SpawnStep::Exec, "{error}");
    assert_eq!(source.kind(), std::io::ErrorKind::NotFound, "{error}");
    assert!(error.to_string().contains(missing), "{error}");

    // A bare name that is nowhere on PATH.
    let bare = "utility-process-no-such-program";
    let error = fork_error(bare, ForkOptions::default(), fds);
    let Error::Spawn { step, .. } = &error else {
        panic!("expected Error::Spawn, got {error:?}")
    };
    assert_eq!(*step, SpawnStep::Lookup, "{error}");
    assert!(error.to_string().contains(bare), "{error}");

    // A file that is not executable (on Windows: not a program, though named like one).
    let plain = scratch.join(if cfg!(windows) {
        "not-executable.exe"
    } else {
        "not-executable"
    });
    // Not a script on Windows: Wine would start a `#!` file as a Unix program.
    let text = if cfg!(windows) {
        "this is not a program\r\n"
    } else {
        "#!/bin/sh\nexit 0\n"
    };
    std::fs::write(&plain, text).unwrap();
    let plain = plain.to_str().unwrap();
    let error = fork_error(plain, ForkOptions::default(), fds);
    let Error::Spawn { step, source, .. } = &error else {
        panic!("expected Error::Spawn, got {error:?}")
    };
    assert_eq!(*step, SpawnStep::Exec, "{error}");
    #[cfg(unix)]
    assert_eq!(
        source.kind(),
        std::io::ErrorKind::PermissionDenied,
        "{error}"
    );
    #[cfg(windows)]
    assert_ne!(source.kind(), std::io::ErrorKind::NotFound, "{error}");
    assert!(error.to_string().contains(plain), "{error}");

    // A working directory that does not exist.
    let nowhere = scratch.join("no-such-directory");
    let error = fork_error(CRASH, ForkOptions::default().cwd(&nowhere), fds);
    let Error::Spawn { step, .. } = &error else {
        panic!("expected Error::Spawn, got {error:?}")
    };
    assert_eq!(*step, SpawnStep::Chdir(nowhere.clone()), "{error}");
    assert!(error.to_string().contains(CRASH), "{error}");
    let display = error.to_string();
    assert!(display.contains(nowhere.to_str().unwrap()), "{display}");

    std::fs::remove_dir_all(&scratch).unwrap();
    #[cfg(unix)]
    assert_eq!(zombie_children().len(), 0, "{:?}", zombie_children());
}

// ---------------------------------------------------------------------------------------------
// Kill
// ---------------------------------------------------------------------------------------------

/// Windows: `kill` asks through the port. A child that reads it (here `echo`) sees it close
/// and returns from `main`; one that does not (`crash sleep`) has its job terminated after
/// the grace period. Neither end is an error.
#[cfg(windows)]
#[tokio::test]
async fn kill_ends_the_child_and_exit_reports_sigterm() {
    let mut child = fork(
        env!("CARGO_BIN_EXE_echo"),
        [] as [&str; 0],
        ForkOptions::default(),
    )
    .expect("fork echo");
    expect_spawn(&mut child).await;
    assert!(child.kill());
    match all_events(&mut child).await.as_slice() {
        [Event::Exit(status)] => assert!(status.success(), "{status}"),
        other => panic!("expected only Exit (no Error: the parent asked); got {other:?}"),
    }
    let mut child = crash(&["sleep"]);
    expect_spawn(&mut child).await;
    assert!(child.kill());
    match all_events(&mut child).await.as_slice() {
        [Event::Exit(status)] => assert_terminated(status),
        other => panic!("expected only Exit (no Error: the parent asked); got {other:?}"),
    }
}

#[cfg(unix)]
#[tokio::test]
async fn kill_ends_the_child_and_exit_reports_sigterm() {
    let mut child = crash(&["sleep"]);
    expect_spawn(&mut child).await;
    assert!(child.kill());
    match all_events(&mut child).await.as_slice() {
        [Event::Exit(status)] => assert_signalled(status, Signal::SIGTERM),
        other => panic!("expected only Exit (no Error: the parent asked); got {other:?}"),
    }
}

/// Windows: an endless grace period never terminates the job; a child that reads its port
/// still ends when asked.
#[cfg(windows)]
#[tokio::test]
async fn kill_with_an_endless_grace_period_sends_sigterm_and_does_not_panic() {
    let options = ForkOptions::default()
        .stderr(Stdio::Ignore)
        .kill_grace(std::time::Duration::MAX);
    let mut child = fork(env!("CARGO_BIN_EXE_echo"), [] as [&str; 0], options).expect("fork echo");
    expect_spawn(&mut child).await;
    assert!(child.kill());
    match all_events(&mut child).await.as_slice() {
        [Event::Exit(status)] => assert!(status.success(), "{status}"),
        other => panic!("expected only Exit; got {other:?}"),
    }
}

#[cfg(unix)]
#[tokio::test]
async fn kill_with_an_endless_grace_period_sends_sigterm_and_does_not_panic() {
    let options = ForkOptions::default()
        .stderr(Stdio::Ignore)
        .kill_grace(std::time::Duration::MAX);
    let mut child = fork(CRASH, ["sleep"], options).expect("fork crash");
    expect_spawn(&mut child).await;
    assert!(child.kill());
    match all_events(&mut child).await.as_slice() {
        [Event::Exit(status)] => assert_signalled(status, Signal::SIGTERM),
        other => panic!("expected only Exit; got {other:?}"),
    }
}

#[cfg(unix)]
#[tokio::test]
async fn a_signal_the_parent_sent_is_not_a_crash_but_one_it_did_not_send_is() {
    let mut child = crash(&["sleep"]);
    expect_spawn(&mut child).await;
    assert!(child.signal(Signal::from_raw(libc::SIGUSR1)));
    match all_events(&mut child).await.as_slice() {
        [Event::Exit(status)] => assert_signalled(status, Signal::from_raw(libc::SIGUSR1)),
        other => panic!("expected only Exit (the parent asked); got {other:?}"),
    }
    // The same signal from elsewhere is a crash.
    let mut child = crash(&["sleep"]);
    expect_spawn(&mut child).await;
    let pid = child.pid().expect("running") as libc::pid_t;
    // SAFETY: our own unreaped child: the pid cannot have been reused.
    unsafe { libc::kill(pid, libc::SIGUSR1) };
    let events = all_events(&mut child).await;
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Error(Error::Crashed { .. }))),
        "{events:?}"
    );
}

#[tokio::test]
async fn kill_after_exit_returns_false() {
    let mut child = crash(&["return"]);
    let events = all_events(&mut child).await;
    assert!(matches!(events.last(), Some(Event::Exit(_))), "{events:?}");
    assert!(!child.kill());
}

#[tokio::test]
async fn sigkill_follows_sigterm_after_the_grace_period() {
    let mut child = fork(
        CRASH,
        ["ignore-term"],
        ForkOptions::default().kill_grace(Duration::from_millis(300)),
    )
    .unwrap();
    expect_spawn(&mut child).await;
    // Only now is SIGTERM ignored.
    assert_eq!(expect_message::<String>(&mut child).await, "ready");
    assert!(child.kill());
    match all_events(&mut child).await.as_slice() {
        #[cfg(unix)]
        [Event::Exit(status)] => assert_signalled(status, Signal::SIGKILL),
        // Windows: `ignore-term` does not read its port; its job is terminated.
        #[cfg(windows)]
        [Event::Exit(status)] => assert_terminated(status),
        other => panic!("expected only Exit (no Error: the parent asked); got {other:?}"),
    }
}

#[tokio::test]
async fn kill_now_ends_at_once_a_child_that_ignores_the_polite_request() {
    // An endless grace period: only an end without one can stop this child in time.
    let mut child = fork(
        CRASH,
        ["ignore-term"],
        ForkOptions::default().kill_grace(Duration::MAX),
    )
    .unwrap();
    expect_spawn(&mut child).await;
    assert_eq!(expect_message::<String>(&mut child).await, "ready");
    assert!(child.kill(), "the polite request is sent");
    assert!(child.kill_now());
    match all_events(&mut child).await.as_slice() {
        #[cfg(unix)]
        [Event::Exit(status)] => assert_signalled(status, Signal::SIGKILL),
        #[cfg(windows)]
        [Event::Exit(status)] => assert_terminated(status),
        other => panic!("expected only Exit (no Error: the parent asked); got {other:?}"),
    }
    assert!(!child.kill_now(), "an ended child is not ended twice");
}

/// Windows: a `TerminateProcess` from elsewhere leaves only the code it chose, which cannot be
/// told from the child's own `exit` (see `sys/windows/exit.rs`): with code 1 it is an exit
/// with code 1, not a crash. The pid in the status is the child's own.
#[cfg(windows)]
#[tokio::test]
async fn external_sigkill_is_reported_as_crash() {
    let mut child = crash(&["sleep"]);
    expect_spawn(&mut child).await;
    let pid = child.pid().unwrap();
    assert!(kill_pid(pid), "TerminateProcess");
    match all_events(&mut child).await.as_slice() {
        [Event::Exit(status)] => assert_terminated(status),
        other => panic!("expected Exit; got {other:?}"),
    }
}

#[cfg(unix)]
#[tokio::test]
async fn external_sigkill_is_reported_as_crash() {
    let mut child = crash(&["sleep"]);
    expect_spawn(&mut child).await;
    let pid = child.pid().unwrap();
    // SAFETY: kill has no memory effects; `pid` is our child, not yet reaped (it is asleep),
    // so the number cannot name another process.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) }, 0);
    match all_events(&mut child).await.as_slice() {
        [Event::Error(Error::Crashed {
            status: crashed,
            pid: crashed_pid,
            ..
        }), Event::Exit(status)] => {
            assert_eq!(crashed.signal(), Some(Signal::SIGKILL));
            assert_eq!(*crashed_pid, pid);
            assert_signalled(status, Signal::SIGKILL);
        }
        other => panic!("expected Error(Crashed), Exit; got {other:?}"),
    }
}

#[tokio::test]
async fn post_after_exit_is_an_error_not_a_panic() {
    let mut child = crash(&["return"]);
    let events = all_events(&mut child).await;
    assert!(matches!(events.last(), Some(Event::Exit(_))), "{events:?}");
    match child.post_message(&42u32) {
        Err(error @ Error::Closed { .. }) => {
            assert!(error.to_string().contains("crash"), "{error}")
        }
        other => panic!("expected Error::Closed, got {other:?}"),
    }
    match child.post_bytes(b"raw") {
        Err(Error::Closed { .. }) => {}
        other => panic!("expected Error::Closed, got {other:?}"),
    }
}

#[tokio::test]
async fn dropping_the_handle_kills_the_child() {
    let mut child = crash(&["sleep"]);
    expect_spawn(&mut child).await;
    let pid = child.pid().unwrap();
    drop(child);
    wait_until(
        &format!("the dropped child {pid} ends"),
        SETTLE_TIMEOUT,
        || !is_alive(pid),
    )
    .await;
}

#[tokio::test]
async fn detached_child_outlives_its_handle() {
    let mut child = crash(&["ready-then-sleep"]);
    expect_spawn(&mut child).await;
    // Connected: whatever happens to the child now is the handle's doing, not the connection's.
    assert_eq!(expect_message::<String>(&mut child).await, "ready");
    let pid = child.pid().unwrap();
    child.detach();
    // Long enough for a kill on drop to have taken effect, had there been one.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let alive = is_alive(pid);
    // Clean up first. The library reaps the child only once it has ended (and holds its
    // handle on Windows), so the pid is ours.
    kill_pid(pid);
    wait_until(
        &format!("the detached child {pid} ends"),
        SETTLE_TIMEOUT,
        || !is_alive(pid),
    )
    .await;
    assert!(alive, "the detached child {pid} did not outlive its handle");
}

#[cfg(unix)]
#[tokio::test]
async fn detached_child_can_still_connect_after_its_handle_is_gone() {
    // The child waits until the parent's end of the port is closed, then calls
    // `parent_port()`: it should get a port that reads as closed, not an error.
    let mut child = fork(
        CRASH,
        ["connect-after-parent-closes"],
        ForkOptions::default().service_name("late-connector"),
    )
    .unwrap();
    expect_spawn(&mut child).await;
    let pid = child.pid().unwrap();
    child.detach();
    // It renames itself once every check has passed; it dies if one fails.
    let comm = || std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    wait_until(
        &format!("the late connector {pid} connects or dies"),
        SETTLE_TIMEOUT,
        || !is_alive(pid) || comm().trim_end() == "connected-ok",
    )
    .await;
    let connected = is_alive(pid) && comm().trim_end() == "connected-ok";
    if connected {
        // SAFETY: kill has no memory effects, and `pid` names our live, unreaped child.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        wait_until(
            &format!("the late connector {pid} ends"),
            SETTLE_TIMEOUT,
            || !is_alive(pid),
        )
        .await;
    }
    assert!(
        connected,
        "the child could not connect once its detached handle was gone \
         (parent_port() failed; see its panic message above)"
    );
}

#[tokio::test]
async fn kill_takes_the_grandchild_too() {
    let mut child = fork(GRANDPARENT, [] as [&str; 0], ForkOptions::default()).unwrap();
    expect_spawn(&mut child).await;
    let grandchild: u32 = expect_message(&mut child).await;
    assert!(
        is_alive(grandchild),
        "the grandchild {grandchild} is not running"
    );
    assert!(child.kill());
    match all_events(&mut child).await.as_slice() {
        #[cfg(unix)]
        [Event::Exit(status)] => assert_signalled(status, Signal::SIGTERM),
        // Windows: the child reads its port, sees it close and returns; its job goes with it.
        #[cfg(windows)]
        [Event::Exit(status)] => assert!(status.success(), "{status}"),
        other => panic!("expected only Exit; got {other:?}"),
    }
    wait_until(
        &format!("the grandchild {grandchild} ends"),
        SETTLE_TIMEOUT,
        || !is_alive(grandchild),
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// The parent's death
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parent_killed_with_sigkill_takes_child_and_grandchild_within_one_second() {
    parent_killed_with_sigkill_takes(&[]).await;
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_that_clears_its_parent_death_signal_and_leaves_its_group_still_dies_with_its_parent(
) {
    parent_killed_with_sigkill_takes(&["escape"]).await;
}

/// Starts the `spawner`, which forks the `grandparent` child in `mode`; SIGKILLs the spawner;
/// checks that the child and the grandchild it reported are gone within a second.
async fn parent_killed_with_sigkill_takes(mode: &[&str]) {
    let mut spawner = std::process::Command::new(SPAWNER)
        .arg(GRANDPARENT)
        .args(mode)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start the spawner");
    let stdout = spawner.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = match rx.recv_timeout(EVENT_TIMEOUT) {
        Ok(line) => line,
        Err(_) => {
            let _ = spawner.kill();
            let _ = spawner.wait();
            panic!("the spawner printed nothing within {EVENT_TIMEOUT:?}");
        }
    };
    let pid_of = |key: &str| -> u32 {
        line.split_whitespace()
            .find_map(|field| field.strip_prefix(key)?.strip_prefix('='))
            .and_then(|pid| pid.parse().ok())
            .unwrap_or_else(|| panic!("no {key}=<pid> in the spawner's line {line:?}"))
    };
    let (child, grandchild) = (pid_of("child"), pid_of("grandchild"));
    assert!(is_alive(child), "the child {child} is not running");
    assert!(
        is_alive(grandchild),
        "the grandchild {grandchild} is not running"
    );

    spawner.kill().expect("SIGKILL the spawner");
    let killed = Instant::now();
    let bound = Duration::from_secs(1);
    while (is_alive(child) || is_alive(grandchild)) && killed.elapsed() < bound {
        std::thread::sleep(Duration::from_millis(5));
    }
    let (child_alive, grandchild_alive) = (is_alive(child), is_alive(grandchild));
    spawner.wait().expect("reap the spawner");
    assert!(
        !child_alive && !grandchild_alive,
        "{bound:?} after the spawner's SIGKILL: child {child} alive: {child_alive}, \
         grandchild {grandchild} alive: {grandchild_alive}"
    );
}

// ---------------------------------------------------------------------------------------------
// Many children, and what they inherit
// ---------------------------------------------------------------------------------------------

#[test]
fn two_hundred_children_leave_no_zombie_and_no_descriptor() {
    in_own_process(
        module_path!(),
        "two_hundred_children_leave_no_zombie_and_no_descriptor",
        two_hundred_children_leave_nothing_behind,
    );
}

async fn two_hundred_children_leave_nothing_behind() {
    let fds = warm_up_and_count_fds().await;
    #[cfg(unix)]
    assert_eq!(zombie_children().len(), 0, "{:?}", zombie_children());

    for _batch in 0..10 {
        let batch: Vec<UtilityProcess> = (0..20).map(|_| crash(&["exit", "0"])).collect();
        for mut child in batch {
            match all_events(&mut child).await.as_slice() {
                [Event::Spawn, Event::Exit(status)] => assert!(status.success(), "{status}"),
                other => panic!("expected Spawn, Exit; got {other:?}"),
            }
        }
    }

    // Every Exit is published after its child was reaped: no waiting here.
    #[cfg(unix)]
    let zombies = zombie_children();
    #[cfg(unix)]
    assert!(zombies.is_empty(), "zombies: {zombies:?}");
    let children = children_besides_the_guardian();
    assert!(children.is_empty(), "children left: {children:?}");
    // The library's thread drops its share of each child (the pidfd) just after publishing
    // the exit: allow it a moment.
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    while fd_count() != fds && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        fd_count(),
        fds,
        "descriptors not back to the baseline after 200 children:\n{}",
        describe_fds()
    );
}

#[cfg(unix)]
#[test]
fn child_holds_only_stdio_and_its_port() {
    in_own_process(
        module_path!(),
        "child_holds_only_stdio_and_its_port",
        || async {
            // A descriptor this process opens without O_CLOEXEC: a plain fork and exec would pass
            // it on to the child.
            // SAFETY: open with a valid NUL-terminated path; the result is checked below.
            let stray = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY) };
            assert!(stray >= 0, "open /dev/null");

            let mut child = fork(GRANDPARENT, ["fds"], ForkOptions::default()).unwrap();
            expect_spawn(&mut child).await;
            let inherited: Vec<i32> = expect_message(&mut child).await;
            assert_eq!(inherited, [0, 1, 2, 3], "the stray descriptor was {stray}");
            match all_events(&mut child).await.as_slice() {
                [Event::Exit(status)] => assert!(status.success(), "{status}"),
                other => panic!("expected Exit; got {other:?}"),
            }

            // SAFETY: `stray` is the descriptor opened above, owned by nothing else.
            unsafe { libc::close(stray) };
        },
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_children_exiting_together_give_fifty_exits() {
    let children: Vec<UtilityProcess> = (0..50).map(|_| crash(&["exit-when-told"])).collect();
    // Each waits for its message; posting them all in a row makes them end together.
    for child in &children {
        child.post_message("go").unwrap();
    }
    let mut tasks = tokio::task::JoinSet::new();
    for mut child in children {
        tasks.spawn(async move { all_events(&mut child).await });
    }
    let mut exits = 0;
    while let Some(events) = tasks.join_next().await {
        match events.expect("a task").as_slice() {
            [Event::Spawn, Event::Exit(status)] => {
                assert!(status.success(), "{status}");
                exits += 1;
            }
            other => panic!("expected Spawn, Exit; got {other:?}"),
        }
    }
    assert_eq!(exits, 50);
}

// ---------------------------------------------------------------------------------------------
// Living beside the application
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_child_forked_from_a_short_lived_thread_outlives_that_thread() {
    // PR_SET_PDEATHSIG fires when the *thread* that forked exits: the library forks from its
    // own long-lived thread, so a caller's thread may come and go.
    let mut child = std::thread::spawn(|| crash(&["ready-then-sleep"]))
        .join()
        .expect("the forking thread");
    expect_spawn(&mut child).await;
    let ready: String = expect_message(&mut child).await;
    assert_eq!(ready, "ready");
    let pid = child.pid().expect("a pid");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        is_alive(pid),
        "the child died with the thread that forked it"
    );
    assert!(child.kill());
    let events = all_events(&mut child).await;
    #[cfg(unix)]
    assert!(
        matches!(events.as_slice(), [Event::Exit(status)] if status.signal() == Some(Signal::SIGTERM)),
        "{events:?}"
    );
    #[cfg(windows)]
    assert!(
        matches!(events.as_slice(), [Event::Exit(status)] if status.code() == Some(1)),
        "{events:?}"
    );
}

#[cfg(unix)]
#[tokio::test]
async fn the_library_never_reaps_a_child_it_did_not_start() {
    let mut own = std::process::Command::new("sleep")
        .arg("0.3")
        .spawn()
        .expect("sleep runs");
    let mut children: Vec<UtilityProcess> = (0..20).map(|_| crash(&["return"])).collect();
    for child in &mut children {
        let events = all_events(child).await;
        assert!(matches!(events.last(), Some(Event::Exit(_))), "{events:?}");
    }
    let status = own.wait().expect("our own child is still ours to reap");
    assert!(status.success(), "{status}");
}

#[cfg(unix)]
#[test]
fn a_blocked_sigterm_in_the_parent_does_not_reach_the_child() {
    in_own_process(
        module_path!(),
        "a_blocked_sigterm_in_the_parent_does_not_reach_the_child",
        || async {
            // Block SIGTERM in this thread before the library's thread exists: that thread,
            // and every child forked from it, would inherit the mask if the library did not
            // reset it (std children inherit it since rust-lang/rust#101077).
            // SAFETY: sigset operations on a local set; pthread_sigmask on this thread.
            unsafe {
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, libc::SIGTERM);
                libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            }
            let mut child = fork(
                CRASH,
                ["ready-then-sleep"],
                ForkOptions::default()
                    .stderr(Stdio::Ignore)
                    .kill_grace(Duration::from_secs(60)),
            )
            .expect("fork crash");
            expect_spawn(&mut child).await;
            let _ready: String = expect_message(&mut child).await;
            assert!(child.kill());
            match all_events(&mut child).await.as_slice() {
                // SIGKILL would only come after the 60 s grace period, past the event timeout.
                [Event::Exit(status)] => assert_signalled(status, Signal::SIGTERM),
                other => panic!("expected Exit by SIGTERM; got {other:?}"),
            }
        },
    );
}

#[cfg(unix)]
#[test]
fn posting_to_a_closed_peer_never_raises_sigpipe() {
    in_own_process(
        module_path!(),
        "posting_to_a_closed_peer_never_raises_sigpipe",
        || async {
            // Rust ignores SIGPIPE by default; a host application (or a C caller) may not.
            // SAFETY: resets one signal's disposition in this process.
            unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
            let utility_process::MessageChannel { port1, port2 } =
                utility_process::MessageChannel::new().expect("a channel");
            drop(port2);
            for _ in 0..3 {
                assert!(matches!(
                    port1.post_bytes(b"anyone?"),
                    Err(Error::Closed { .. })
                ));
            }
            // Still here: a SIGPIPE would have killed this process.
        },
    );
}

#[tokio::test]
async fn a_child_that_only_uses_its_port_starts_no_process_of_its_own() {
    // A burst of posts makes the child's library start its own thread (to flush); the
    // guardian process comes only with a child's first fork.
    let mut child = fork(
        env!("CARGO_BIN_EXE_echo"),
        [] as [&str; 0],
        ForkOptions::default(),
    )
    .expect("fork echo");
    expect_spawn(&mut child).await;
    for i in 0..2000u32 {
        child.post_message(&i).unwrap();
    }
    for i in 0..2000u32 {
        let echoed: u32 = expect_message(&mut child).await;
        assert_eq!(echoed, i);
    }
    let pid = child.pid().expect("running");
    #[cfg(unix)]
    let theirs = children_of(pid);
    #[cfg(windows)]
    let theirs = utility_process_tests::children_of(pid);
    assert!(theirs.is_empty(), "the child started processes: {theirs:?}");
    assert!(child.kill());
}
