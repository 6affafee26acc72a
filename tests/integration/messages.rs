use utility_process::{fork, Event, ForkOptions};
use utility_process_tests::{next_event, Ping};

const ECHO: &str = env!("CARGO_BIN_EXE_echo");

#[tokio::test]
async fn echo_round_trip() {
    let mut child = fork(ECHO, [] as [&str; 0], ForkOptions::default()).unwrap();
    assert!(matches!(next_event(&mut child).await, Some(Event::Spawn)));
    child
        .post_message(&Ping {
            seq: 1,
            body: "hi".into(),
        })
        .unwrap();
    match next_event(&mut child).await {
        Some(Event::Message(m)) => assert_eq!(m.data::<Ping>().unwrap().seq, 1),
        other => panic!("{other:?}"),
    }
    assert!(child.kill());
    match next_event(&mut child).await {
        Some(Event::Exit(status)) => assert!(status.signal().is_some(), "{status}"),
        other => panic!("{other:?}"),
    }
}
