//! Resource limits on Windows: the child's job object enforces memory and CPU time; a limit
//! it cannot enforce (open files, file size) is refused before the child starts, unless the
//! limits are best effort. The Unix module (`limits.rs`) has the rlimit and cgroup tests.

use std::time::Duration;

use utility_process::sandbox::Missing;
use utility_process::windows::ExitStatusExt as _;
use utility_process::{fork, Error, Event, ForkOptions, Limit, Limits, Stdio, UtilityProcess};
use utility_process_tests::{all_events, ended_by_limit, skip_under_wine, still_answers};

fn hog(mode: &str, limits: Limits) -> UtilityProcess {
    fork(
        env!("CARGO_BIN_EXE_hog"),
        [mode],
        ForkOptions::default().limits(limits).stderr(Stdio::Ignore),
    )
    .expect("fork hog")
}

/// The child ends with `LimitExceeded { limit }` and then an Exit that is not a success.
async fn expect_limit(child: UtilityProcess, limit: Limit) {
    let status = ended_by_limit(child, limit).await;
    assert!(!status.success(), "{status}");
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
    if skip_under_wine(
        "a_memory_hog_is_stopped_and_reported_as_memory_while_others_carry_on",
        "Wine's job objects do not enforce JOB_OBJECT_LIMIT_PROCESS_MEMORY (the hog never stops)",
    ) {
        return;
    }
    let mut bystander = echo();
    let child = hog("memory", Limits::new().memory(256 << 20));
    expect_limit(child, Limit::Memory).await;
    still_answers(&mut bystander).await;
}

#[tokio::test]
async fn a_cpu_hog_is_stopped_by_sigxcpu_and_reported_as_cpu_time() {
    if skip_under_wine(
        "a_cpu_hog_is_stopped_by_sigxcpu_and_reported_as_cpu_time",
        "Wine's job objects do not enforce JOB_OBJECT_LIMIT_PROCESS_TIME (the hog never stops)",
    ) {
        return;
    }
    let mut bystander = echo();
    let child = hog("cpu", Limits::new().cpu_time(Duration::from_secs(1)));
    expect_limit(child, Limit::CpuTime).await;
    still_answers(&mut bystander).await;
}

#[tokio::test]
async fn a_limit_windows_cannot_enforce_is_refused_unless_best_effort() {
    for (limits, limit) in [
        (Limits::new().open_files(64), Limit::OpenFiles),
        (Limits::new().file_size(1 << 20), Limit::FileSize),
    ] {
        match fork(
            env!("CARGO_BIN_EXE_hog"),
            ["open-files"],
            ForkOptions::default().limits(limits.clone()),
        ) {
            Err(Error::Unenforceable {
                missing: Missing::Limit { limit: missing, .. },
                ..
            }) => assert_eq!(missing, limit),
            other => panic!("expected Unenforceable for {limit:?}, got {other:?}"),
        }
        // Best effort: the child starts without that limit and runs as usual.
        let mut child = fork(
            env!("CARGO_BIN_EXE_echo"),
            [] as [&str; 0],
            ForkOptions::default().limits(limits.best_effort()),
        )
        .expect("a best-effort limit starts the child");
        still_answers(&mut child).await;
        assert!(child.kill());
        match all_events(&mut child).await.as_slice() {
            [Event::Exit(status)] => {
                assert!(status.success(), "{status}");
                assert_eq!(status.exception(), None, "{status}");
            }
            other => panic!("expected Exit; got {other:?}"),
        }
    }
}
