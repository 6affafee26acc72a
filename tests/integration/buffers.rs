use utility_process::{fork, Event, ForkOptions, Message, SharedBuffer, UtilityProcess};
use utility_process_tests::{next_event, Ask, Seen};

const BUFFERS: &str = env!("CARGO_BIN_EXE_buffers");

fn child() -> UtilityProcess {
    fork(BUFFERS, [] as [&str; 0], ForkOptions::default()).expect("the buffers child starts")
}

async fn reply(child: &mut UtilityProcess) -> Message {
    loop {
        match next_event(child).await {
            Some(Event::Message(message)) => return message,
            Some(Event::Spawn) => continue,
            other => panic!("expected a message, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_buffer_filled_in_place_arrives_without_a_copy_and_read_only_when_frozen() {
    let mut child = child();
    let len = 8 << 20;
    let mut buffer = SharedBuffer::new(len).unwrap();
    buffer.as_mut_slice().unwrap().fill(3);
    let frozen = buffer.freeze().unwrap();
    let writable = SharedBuffer::from_slice(&[1, 2, 3]).unwrap();
    child
        .post_message_with_transfer(&Ask::Inspect, vec![frozen.into(), writable.into()])
        .unwrap();
    let seen: Vec<Seen> = reply(&mut child).await.data().unwrap();
    assert_eq!(
        seen,
        vec![
            Seen {
                len,
                read_only: true,
                sum: 3 * len as u64
            },
            Seen {
                len: 3,
                read_only: false,
                sum: 6
            },
        ]
    );
}

#[tokio::test]
async fn a_writable_buffer_written_by_the_child_comes_back_with_its_writes() {
    let mut child = child();
    let buffer = SharedBuffer::new(1 << 20).unwrap();
    child
        .post_message_with_transfer(&Ask::FillAndReturn { byte: 7 }, vec![buffer.into()])
        .unwrap();
    let mut message = reply(&mut child).await;
    let buffers = message.take_buffers();
    assert_eq!(buffers.len(), 1);
    assert!(buffers[0].iter().all(|&b| b == 7));
}

#[tokio::test]
async fn a_child_can_send_a_frozen_buffer_to_its_parent() {
    let mut child = child();
    child
        .post_message(&Ask::Make {
            len: 12345,
            byte: 9,
        })
        .unwrap();
    let mut message = reply(&mut child).await;
    assert_eq!(message.data::<String>().unwrap(), "made");
    let buffers = message.take_buffers();
    assert_eq!(buffers.len(), 1);
    assert!(buffers[0].is_read_only());
    assert_eq!(buffers[0].len(), 12345);
    assert!(buffers[0].iter().all(|&b| b == 9));
}

#[tokio::test]
async fn a_shared_buffer_that_lies_about_itself_is_a_protocol_violation() {
    const BAD_BUFFER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/children/bad_buffer.py");
    for mode in ["pipe", "size", "unsealed", "writable"] {
        let mut child = match fork("python3", [BAD_BUFFER, mode], ForkOptions::default()) {
            Ok(child) => child,
            Err(utility_process::Error::Spawn {
                step: utility_process::SpawnStep::Lookup,
                ..
            }) => {
                eprintln!("skipped: python3 is not on PATH");
                return;
            }
            Err(other) => panic!("cannot start python3 {BAD_BUFFER}: {other}"),
        };
        let mut events = Vec::new();
        while let Some(event) = next_event(&mut child).await {
            events.push(event);
        }
        match events.as_slice() {
            [Event::Spawn, Event::Error(utility_process::Error::ProtocolViolation {
                violation: utility_process::Violation::Descriptors(_),
                ..
            }), Event::Exit(status)] => {
                assert_eq!(
                    status.signal(),
                    Some(utility_process::Signal::SIGKILL),
                    "{mode}"
                )
            }
            other => panic!("{mode}: expected Spawn, a descriptor violation, Exit; got {other:?}"),
        }
    }
}
