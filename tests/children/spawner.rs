//! A parent in its own right: forks the `grandparent` child (whose path is `argv[1]`, and whose
//! mode, if any, is `argv[2]`), prints
//! `child=<pid> grandchild=<pid>` on stdout once both run, then waits to be killed.

use std::io::Write;

use utility_process::{fork, Event, ForkOptions, Sandbox, Stdio};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    if std::env::args().nth(1).as_deref() == Some("--python-sandboxed") {
        return python_sandboxed().await;
    }
    let program = std::env::args()
        .nth(1)
        .expect("the grandparent child's path");
    let mode: Vec<String> = std::env::args().skip(2).collect();
    let mut child = fork(&program, mode, ForkOptions::default().stdout(Stdio::Ignore))
        .expect("fork the grandparent child");
    assert!(matches!(child.next_event().await, Some(Event::Spawn)));
    let pid = child.pid().expect("running");
    let grandchild: u32 = match child.next_event().await {
        Some(Event::Message(message)) => message.data().expect("a pid"),
        other => panic!("expected the grandchild's pid, got {other:?}"),
    };
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "child={pid} grandchild={grandchild}").unwrap();
    stdout.flush().unwrap();
    drop(stdout);
    // `child` stays in scope, so the handle (whose drop would kill the child) lives until
    // someone kills this process.
    std::future::pending::<()>().await;
}

/// `spawner --python-sandboxed PYTHON PROGRAM`: runs `PYTHON -c PROGRAM` under the strict
/// sandbox (reading allowed everywhere, writing nowhere) with this process's own stdout and
/// stderr (`Stdio::Inherit`), and exits once it has.
async fn python_sandboxed() {
    let args: Vec<String> = std::env::args().skip(2).collect();
    let [python, program] = &args[..] else {
        panic!("spawner --python-sandboxed PYTHON PROGRAM");
    };
    let sandbox = Sandbox::strict().allow_read("/");
    let mut child = fork(
        python,
        ["-c", program],
        ForkOptions::default().sandbox(sandbox),
    )
    .expect("fork python");
    while let Some(event) = child.next_event().await {
        if let Event::Exit(status) = event {
            assert!(status.success(), "{status}");
        }
    }
}
