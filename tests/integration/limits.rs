//! Resource limits: a child that reaches one is stopped and the parent is told which limit,
//! while the parent and the other children carry on. And the sandbox and limit tests, once
//! more as an unprivileged user.

use std::time::Duration;

use tokio::io::AsyncReadExt;
use utility_process::sandbox::Missing;
use utility_process::unix::ExitStatusExt as _;
use utility_process::{fork, Error, Event, ForkOptions, Limit, Limits, Stdio, UtilityProcess};
use utility_process_tests::{all_events, ended_by_limit, still_answers};

fn hog(mode: &str, limits: Limits) -> UtilityProcess {
    fork(
        env!("CARGO_BIN_EXE_hog"),
        [mode],
        ForkOptions::default().limits(limits),
    )
    .expect("fork hog")
}

/// The child ends with `LimitExceeded { limit }` then an exit by `signal`.
async fn expect_limit(child: UtilityProcess, limit: Limit, signal: i32) {
    let status = ended_by_limit(child, limit).await;
    assert_eq!(
        status.signal().map(|s| s.as_raw()),
        Some(signal),
        "{status}"
    );
}

fn echo() -> UtilityProcess {
    fork(
        env!("CARGO_BIN_EXE_echo"),
        [] as [&str; 0],
        ForkOptions::default(),
    )
    .expect("fork echo")
}

#[tokio::test]
async fn a_memory_hog_is_stopped_and_reported_as_memory_while_others_carry_on() {
    let mut bystander = echo();
    let child = hog("memory", Limits::new().memory(256 << 20));
    expect_limit(child, Limit::Memory, libc::SIGABRT).await;
    still_answers(&mut bystander).await;
}

#[tokio::test]
async fn the_memory_limit_is_reported_when_a_large_allocation_fails_with_backtraces_on() {
    // RUST_BACKTRACE=1 makes the child print a backtrace between the failed allocation and
    // its abort, which changes errno; the allocation asks for far more than is left.
    let child = fork(
        env!("CARGO_BIN_EXE_hog"),
        ["memory-at-once"],
        ForkOptions::default()
            .limits(Limits::new().memory(256 << 20))
            .env("RUST_BACKTRACE", "1")
            .stderr(Stdio::Ignore),
    )
    .expect("fork hog");
    expect_limit(child, Limit::Memory, libc::SIGABRT).await;
}

#[tokio::test]
async fn a_memory_limited_childs_piped_stderr_still_reaches_the_application() {
    let mut child = fork(
        env!("CARGO_BIN_EXE_hog"),
        ["memory-at-once"],
        ForkOptions::default()
            .limits(Limits::new().memory(256 << 20))
            .stderr(Stdio::Pipe),
    )
    .expect("fork hog");
    let mut stderr = child.take_stderr().expect("piped");
    let mut said = String::new();
    stderr.read_to_string(&mut said).await.expect("stderr");
    assert!(said.contains("memory allocation of"), "{said}");
    expect_limit(child, Limit::Memory, libc::SIGABRT).await;
}

#[tokio::test]
async fn memory_cannot_hide_from_the_limit_in_a_memfd_under_the_sandbox() {
    let support = utility_process::Sandbox::support();
    if !support.seccomp || support.landlock_abi < utility_process::sandbox::LANDLOCK_ABI_NEEDED {
        eprintln!("memory_cannot_hide_from_the_limit_in_a_memfd: skipped, no strict sandbox here: {support:?}");
        return;
    }
    let mut child = fork(
        env!("CARGO_BIN_EXE_hog"),
        ["memfd"],
        ForkOptions::default()
            .limits(Limits::new().memory(64 << 20))
            .sandbox(utility_process::Sandbox::strict()),
    )
    .expect("fork hog");
    let events = all_events(&mut child).await;
    let held = events.iter().find_map(|e| match e {
        Event::Message(m) => Some(m.data::<(u64, i32)>().expect("(MiB, errno)")),
        _ => None,
    });
    assert_eq!(held, Some((0, libc::EPERM)), "{events:?}");
    assert!(
        events.iter().any(|e| matches!(
            e,
            Event::Error(Error::SandboxViolation { syscall: Some(call), .. }) if call.name == "memfd_create"
        )),
        "{events:?}"
    );
}

#[tokio::test]
async fn a_cpu_hog_is_stopped_by_sigxcpu_and_reported_as_cpu_time() {
    let mut bystander = echo();
    let child = hog("cpu", Limits::new().cpu_time(Duration::from_secs(1)));
    expect_limit(child, Limit::CpuTime, libc::SIGXCPU).await;
    still_answers(&mut bystander).await;
}

#[tokio::test]
async fn a_cpu_hog_that_ignores_sigxcpu_is_killed_at_the_hard_limit_and_reported_as_cpu_time() {
    let child = hog(
        "cpu-ignoring-sigxcpu",
        Limits::new().cpu_time(Duration::from_millis(500)),
    );
    expect_limit(child, Limit::CpuTime, libc::SIGKILL).await;
}

#[tokio::test]
async fn a_file_past_its_size_limit_is_reported_as_file_size() {
    let child = hog("file-size", Limits::new().file_size(1 << 20));
    expect_limit(child, Limit::FileSize, libc::SIGXFSZ).await;
}

#[tokio::test]
async fn the_open_files_limit_refuses_the_descriptor_past_it() {
    let mut child = hog("open-files", Limits::new().open_files(16));
    let events = all_events(&mut child).await;
    let (opened, errno): (u64, i32) = events
        .iter()
        .find_map(|e| match e {
            Event::Message(m) => Some(m.data().expect("(count, errno)")),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no report: {events:?}"));
    assert_eq!(errno, libc::EMFILE);
    // stdio, the port, the report pipe and the library's own few descriptors come first.
    assert!((1..16).contains(&opened), "opened {opened}");
    assert!(
        matches!(events.last(), Some(Event::Exit(s)) if s.success()),
        "{events:?}"
    );
}

#[tokio::test]
async fn limits_hold_from_the_programs_first_instruction() {
    // A program that reads its limits at once sees them: they were set before exec.
    let options = ForkOptions::default()
        .stdout(Stdio::Pipe)
        .limits(Limits::new().open_files(42).file_size(1 << 20));
    let mut child = fork("cat", ["/proc/self/limits"], options).expect("fork cat");
    let mut stdout = child.take_stdout().expect("piped");
    let events = all_events(&mut child).await;
    let mut out = String::new();
    stdout.read_to_string(&mut out).await.expect("read");
    let limit = |name: &str| {
        out.lines()
            .find(|l| l.starts_with(name))
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .unwrap_or_else(|| panic!("no {name} in {out} ({events:?})"))
    };
    assert_eq!(limit("Max open files")[3..5], ["42", "42"]);
    assert_eq!(limit("Max file size")[3..5], ["1048576", "1048576"]);
    // The parent's own limits are untouched.
    let mut own = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills `own`, a valid rlimit.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut own) };
    assert_ne!(own.rlim_cur, 42);
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[tokio::test]
async fn a_fork_bomb_is_held_at_the_process_limit() {
    let limits = Limits::new().processes(32);
    if matches!(
        Limits::backend(Limit::Processes),
        utility_process::Backend::Unavailable(_)
    ) {
        // Root: RLIMIT_NPROC would not bind the child, so the fork is refused, not run
        // unlimited; best effort runs it without that limit.
        match fork(
            env!("CARGO_BIN_EXE_hog"),
            ["processes"],
            ForkOptions::default().limits(limits.clone()),
        ) {
            Err(Error::Unenforceable {
                missing:
                    Missing::Limit {
                        limit: Limit::Processes,
                        ..
                    },
                ..
            }) => {}
            other => panic!("expected Unenforceable, got {other:?}"),
        }
        let best_effort = fork(
            env!("CARGO_BIN_EXE_echo"),
            [] as [&str; 0],
            ForkOptions::default().limits(limits.best_effort()),
        );
        assert!(best_effort.is_ok(), "{best_effort:?}");
        eprintln!(
            "a_fork_bomb_is_held_at_the_process_limit: as root only the refusal is checked; \
             the bomb itself runs in the unprivileged re-run"
        );
        return;
    }
    let mut child = hog("processes", limits);
    let events = all_events(&mut child).await;
    let (forked, errno): (u64, i32) = events
        .iter()
        .find_map(|e| match e {
            Event::Message(m) => Some(m.data().expect("(count, errno)")),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no report: {events:?}"));
    assert_eq!(errno, libc::EAGAIN, "forked {forked}");
    assert!(forked < 32, "forked {forked} under a limit of 32");
}

/// Where the sandbox and limit tests run again, as `nobody`.
const RERUN: &str = "UTILITY_PROCESS_TESTS_UNPRIVILEGED";

#[test]
fn sandbox_and_limit_tests_pass_as_an_unprivileged_user() {
    if std::env::var_os(RERUN).is_some() {
        return; // The re-run itself.
    }
    if !is_root() {
        eprintln!("sandbox_and_limit_tests_pass_as_an_unprivileged_user: already unprivileged; the other tests are the proof");
        return;
    }
    let nobody = 65534;
    let me = std::env::current_exe().expect("the test binary");
    let readable = std::process::Command::new("/bin/sh")
        .args(["-c", "test -x \"$0\""])
        .arg(&me)
        .uid(nobody)
        .gid(nobody)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !readable {
        eprintln!(
            "sandbox_and_limit_tests_pass_as_an_unprivileged_user: skipped, user nobody \
             cannot run {} (a directory on the way is closed to others)",
            me.display()
        );
        return;
    }
    let output = std::process::Command::new(&me)
        .args(["sandbox::", "limits::", "--test-threads=1"])
        .env(RERUN, "1")
        .current_dir("/")
        .uid(nobody)
        .gid(nobody)
        .output()
        .expect("run the tests as nobody");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "as nobody:\n{text}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // The re-run really ran the tests (not zero of them).
    assert!(text.contains("sandbox::every_escape_fails"), "{text}");
}

use std::os::unix::process::CommandExt;
