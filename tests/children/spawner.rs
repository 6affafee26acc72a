//! A parent in its own right: forks the `grandparent` child (whose path is `argv[1]`), prints
//! `child=<pid> grandchild=<pid>` on stdout once both run, then waits to be killed.

use std::io::Write;

use utility_process::{fork, Event, ForkOptions, Stdio};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let program = std::env::args()
        .nth(1)
        .expect("the grandparent child's path");
    let mut child = fork(
        &program,
        [] as [&str; 0],
        ForkOptions::default().stdout(Stdio::Ignore),
    )
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
