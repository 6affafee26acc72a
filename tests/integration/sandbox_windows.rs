//! The sandbox on Windows: not there yet, so a child that asks for one is never started
//! (`Error::Unenforceable` with `Missing::WindowsToken`), best effort or not. The Unix module
//! (`sandbox.rs`) has the seccomp and Landlock tests.

use utility_process::sandbox::Missing;
use utility_process::{fork, Error, ForkOptions, Sandbox};
use utility_process_tests::children_of;

#[test]
fn a_sandboxed_child_is_refused_and_never_started() {
    for sandbox in [Sandbox::strict(), Sandbox::strict().best_effort()] {
        let result = fork(
            env!("CARGO_BIN_EXE_echo"),
            [] as [&str; 0],
            ForkOptions::default().sandbox(sandbox),
        );
        match result {
            Err(
                error @ Error::Unenforceable {
                    missing: Missing::WindowsToken,
                    ..
                },
            ) => assert!(error.to_string().contains("echo"), "{error}"),
            other => panic!("expected Unenforceable(WindowsToken), got {other:?}"),
        }
    }
    let echoes: Vec<_> = children_of(std::process::id())
        .into_iter()
        .filter(|(_, name)| name.starts_with("echo"))
        .collect();
    assert!(echoes.is_empty(), "a refused child runs: {echoes:?}");
}
