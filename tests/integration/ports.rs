use utility_process::{fork, Event, ForkOptions, MessageChannel};
use utility_process_tests::{next_event, PortCommand, PortReply};

const PORTER: &str = env!("CARGO_BIN_EXE_porter");

fn porter() -> utility_process::UtilityProcess {
    fork(PORTER, [] as [&str; 0], ForkOptions::default()).expect("porter starts")
}

async fn reply(child: &mut utility_process::UtilityProcess) -> utility_process::Message {
    loop {
        match next_event(child).await {
            Some(Event::Message(message)) => return message,
            Some(Event::Spawn) => continue,
            other => panic!("expected a message, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_port_sent_to_a_child_keeps_working_there() {
    let mut child = porter();
    let MessageChannel { port1, port2 } = MessageChannel::new().unwrap();
    child
        .post_message_with_ports(&PortCommand::Echo, vec![port2])
        .unwrap();
    for i in 0..100u32 {
        port1.post_message(&i).unwrap();
        let echoed = port1.recv().await.expect("the child echoes");
        assert_eq!(echoed.data::<u32>().unwrap(), i);
    }
    drop(child);
}

#[tokio::test]
async fn two_children_talk_directly_through_a_port_the_parent_introduced() {
    let mut a = porter();
    let mut b = porter();
    let MessageChannel { port1, port2 } = MessageChannel::new().unwrap();
    a.post_message_with_ports(&PortCommand::Echo, vec![port1]).unwrap();
    b.post_message_with_ports(&PortCommand::Ping { count: 1000 }, vec![port2])
        .unwrap();
    let done = reply(&mut b).await;
    assert_eq!(done.data::<PortReply>().unwrap(), PortReply::Pinged { count: 1000 });
}

#[tokio::test]
async fn messages_queued_on_a_port_travel_with_it() {
    let mut child = porter();
    let MessageChannel { port1, port2 } = MessageChannel::new().unwrap();
    // Some of these are read by port2 in this process before it travels (one recv pulls them
    // all into its buffer), the rest are still in the socket.
    for i in 0..50u32 {
        port1.post_message(&i).unwrap();
    }
    let first = port2.recv().await.unwrap();
    assert_eq!(first.data::<u32>().unwrap(), 0);
    child
        .post_message_with_ports(&PortCommand::Collect { count: 99 }, vec![port2])
        .unwrap();
    for i in 50..100u32 {
        port1.post_message(&i).unwrap();
    }
    let got = reply(&mut child).await.data::<PortReply>().unwrap();
    let PortReply::Received { messages } = got else { panic!("{got:?}") };
    let numbers: Vec<u32> = messages
        .iter()
        .map(|m| utility_process::Message::from_value(&0u32).map(|_| m).unwrap())
        .map(|bytes| rmp_decode_u32(bytes))
        .collect();
    assert_eq!(numbers, (1..100).collect::<Vec<_>>());
}

fn rmp_decode_u32(bytes: &[u8]) -> u32 {
    // MessagePack positive fixint / uint8 / uint16 / uint32.
    match bytes {
        [b] if *b < 0x80 => u32::from(*b),
        [0xcc, b] => u32::from(*b),
        [0xcd, a, b] => u32::from(u16::from_be_bytes([*a, *b])),
        [0xce, a, b, c, d] => u32::from_be_bytes([*a, *b, *c, *d]),
        other => panic!("not a u32: {other:?}"),
    }
}
