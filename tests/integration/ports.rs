//! Message channels, ports sent between processes, child-to-child talk.
//!
//! Most tests use the `porter` child (see `PortCommand`), which does one thing with the ports
//! each message brings: echo on them, send them back, ping through them, collect from them,
//! forward them, post on them, close them or hold them.
//!
//! The test that counts this process's descriptors runs in a process of its own (see
//! [`in_own_process`]): the other tests' ports and children come and go meanwhile.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use utility_process::{
    fork, Error, Event, ForkOptions, Message, MessageChannel, MessagePort, UtilityProcess,
};
#[cfg(unix)]
use utility_process_tests::FdFlags;
use utility_process_tests::{
    continue_process, describe_fds, ended_by_kill, fd_count, in_own_process, next_event, pattern,
    stop_process, Numbered, PortCommand, PortReply, EVENT_TIMEOUT,
};

const PORTER: &str = env!("CARGO_BIN_EXE_porter");

/// How long a test waits for something that should happen promptly (descriptors to be
/// closed) before it fails.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn porter() -> UtilityProcess {
    fork(PORTER, [] as [&str; 0], ForkOptions::default()).expect("porter starts")
}

fn channel() -> (MessagePort, MessagePort) {
    let MessageChannel { port1, port2 } = MessageChannel::new().expect("a channel");
    (port1, port2)
}

/// The child's next message, skipping its Spawn; anything else fails the test.
async fn message_from(child: &mut UtilityProcess) -> Message {
    loop {
        match next_event(child).await {
            Some(Event::Message(message)) => return message,
            Some(Event::Spawn) => continue,
            other => panic!(
                "expected a message from {}, got {other:?}",
                child.service_name()
            ),
        }
    }
}

/// The child's next message, as a `PortReply`.
async fn reply_from(child: &mut UtilityProcess) -> PortReply {
    message_from(child)
        .await
        .data()
        .expect("a PortReply from the porter")
}

/// Kills the child and reads its events to the end: it must not have failed on its own.
async fn end(mut child: UtilityProcess) {
    child.kill();
    loop {
        match next_event(&mut child).await {
            Some(Event::Exit(_)) => break,
            Some(Event::Spawn | Event::Message(_)) => {}
            Some(Event::Error(error)) => panic!("{} failed: {error}", child.service_name()),
            None => panic!("{} ended without Exit", child.service_name()),
        }
    }
    assert!(next_event(&mut child).await.is_none());
}

/// The next message on `port`, which must come within the timeout.
async fn recv(port: &MessagePort, what: &str) -> Message {
    match tokio::time::timeout(EVENT_TIMEOUT, port.recv()).await {
        Ok(Some(message)) => message,
        Ok(None) => panic!("{what}: the port closed instead of delivering a message"),
        Err(_) => panic!("{what}: no message within {EVENT_TIMEOUT:?}"),
    }
}

/// `port`'s `recv` must return `None` (its other end is gone) within the timeout.
async fn expect_closed(port: &MessagePort, what: &str) {
    match tokio::time::timeout(EVENT_TIMEOUT, port.recv()).await {
        Ok(None) => {}
        Ok(Some(message)) => panic!(
            "{what}: expected the close, got a message of {:?}",
            message.bytes()
        ),
        Err(_) => panic!("{what}: the other end's close not seen within {EVENT_TIMEOUT:?}"),
    }
}

fn numbered(seq: u64, padding: usize) -> Numbered {
    Numbered {
        seq,
        // Varied, so that frames straddle read boundaries at many different places.
        padding: "·".repeat(padding),
    }
}

/// The sequence number of a `Numbered` message.
fn seq_of(message: &Message) -> u64 {
    message.data::<Numbered>().expect("a Numbered message").seq
}

/// Asserts that `got` is exactly `expected`, reporting the first difference rather than two
/// long lists.
fn assert_sequence(got: &[u64], expected: impl IntoIterator<Item = u64>, what: &str) {
    let expected: Vec<u64> = expected.into_iter().collect();
    if let Some(at) = got.iter().zip(&expected).position(|(g, e)| g != e) {
        panic!(
            "{what}: message {at} is {} where {} was expected (around it: {:?})",
            got[at],
            expected[at],
            &got[at.saturating_sub(3)..(at + 4).min(got.len())]
        );
    }
    assert_eq!(
        got.len(),
        expected.len(),
        "{what}: {} messages where {} were expected (last got: {:?})",
        got.len(),
        expected.len(),
        got.last()
    );
}

/// A raw payload that is not valid MessagePack (0xc1 is never used), so that raw bytes that
/// went through a codec would not come back the same.
fn raw(i: u64) -> Vec<u8> {
    let mut bytes = vec![0xc1];
    bytes.extend_from_slice(&i.to_le_bytes());
    bytes.extend(std::iter::repeat_n(i as u8, (i % 23) as usize));
    bytes
}

// ---------------------------------------------------------------------------------------------
// Within one process
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_channel_works_within_one_process() {
    let (port1, port2) = channel();
    // Values and raw bytes interleaved, both ways, all posted before any is read.
    for i in 0..1000u64 {
        if i % 2 == 0 {
            port1.post_message(&numbered(i, (i % 37) as usize)).unwrap();
            port2.post_message(&numbered(i, (i % 41) as usize)).unwrap();
        } else {
            port1.post_bytes(&raw(i)).unwrap();
            port2.post_bytes(&raw(i)).unwrap();
        }
    }
    for (name, port) in [("port2", &port2), ("port1", &port1)] {
        for i in 0..1000u64 {
            let message = recv(port, name).await;
            assert_eq!(message.port_count(), 0);
            if i % 2 == 0 {
                assert_eq!(seq_of(&message), i, "{name}: message {i}");
            } else {
                assert_eq!(message.bytes(), raw(i), "{name}: message {i}");
            }
        }
    }
    // Nothing more: the next thing port2 sees is port1's end.
    drop(port1);
    expect_closed(&port2, "port2 after port1 was dropped").await;
}

#[tokio::test]
async fn messages_queue_until_the_port_is_started_and_arrive_in_order() {
    let (port1, port2) = channel();
    // Never started: the messages wait.
    for i in 0..100 {
        port1.post_message(&numbered(i, 10)).unwrap();
    }
    port2.start();
    for i in 0..100 {
        assert_eq!(seq_of(&recv(&port2, "after start").await), i);
    }

    // Paused: recv waits, with messages queued, until another task starts the port again.
    port2.pause();
    for i in 100..200 {
        port1.post_message(&numbered(i, 10)).unwrap();
    }
    let waiting = port2.recv();
    tokio::pin!(waiting);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut waiting)
            .await
            .is_err(),
        "recv delivered a message while the port was paused"
    );
    let (delivered, ()) = tokio::join!(
        async {
            tokio::time::timeout(EVENT_TIMEOUT, &mut waiting)
                .await
                .expect("recv resumes once the port is started")
        },
        async { port2.start() }
    );
    assert_eq!(seq_of(&delivered.expect("a message")), 100);
    for i in 101..200 {
        assert_eq!(seq_of(&recv(&port2, "after resuming").await), i);
    }
}

// ---------------------------------------------------------------------------------------------
// Ports between processes
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_port_sent_to_a_child_keeps_working_there() {
    let child = porter();
    let (port1, port2) = channel();
    child
        .post_message_with_ports(&PortCommand::Echo, vec![port2])
        .unwrap();
    for i in 0..100u64 {
        if i % 2 == 0 {
            port1.post_message(&numbered(i, i as usize)).unwrap();
            assert_eq!(seq_of(&recv(&port1, "echo").await), i);
        } else {
            port1.post_bytes(&raw(i)).unwrap();
            assert_eq!(recv(&port1, "echo").await.bytes(), raw(i));
        }
    }
    // Larger than a socket buffer: written in pieces, both ways.
    let big: Vec<u8> = (0..4 << 20).map(|i: u32| (i % 251) as u8).collect();
    port1.post_bytes(&big).unwrap();
    assert!(recv(&port1, "big echo").await.bytes() == big.as_slice());
    end(child).await;
}

#[tokio::test]
async fn a_port_comes_back_from_a_child() {
    let mut child = porter();
    let (port1, port2) = channel();
    // These wait in port2's socket through both trips.
    for i in 0..3 {
        port1.post_message(&numbered(i, 5)).unwrap();
    }
    child
        .post_message_with_ports(&PortCommand::Bounce, vec![port2])
        .unwrap();
    let mut bounced = message_from(&mut child).await;
    assert_eq!(bounced.data::<String>().unwrap(), "bounced");
    assert_eq!(bounced.port_count(), 1);
    let port2 = bounced.take_ports().pop().expect("the port came back");
    assert_eq!(bounced.port_count(), 0);
    assert!(bounced.take_ports().is_empty(), "ports are handed out once");

    for i in 0..3 {
        assert_eq!(seq_of(&recv(&port2, "queued before the trip").await), i);
    }
    for i in 3..50 {
        port1.post_message(&numbered(i, 5)).unwrap();
        assert_eq!(seq_of(&recv(&port2, "port1 to port2").await), i);
        port2.post_bytes(&raw(i)).unwrap();
        assert_eq!(recv(&port1, "port2 to port1").await.bytes(), raw(i));
    }
    end(child).await;
}

#[tokio::test]
async fn two_children_talk_directly_through_a_port_the_parent_introduced() {
    let a = porter();
    let mut b = porter();
    let (port1, port2) = channel();
    a.post_message_with_ports(&PortCommand::Echo, vec![port1])
        .unwrap();
    b.post_message_with_ports(&PortCommand::Ping { count: 1000 }, vec![port2])
        .unwrap();
    // The parent holds neither end now, and reads nothing but b's final report.
    assert_eq!(reply_from(&mut b).await, PortReply::Pinged { count: 1000 });
    end(a).await;
    end(b).await;
}

/// Windows: ports travel only over a child's parent port, where the parent brokers their
/// handles; so the hops go through the parent: to child `a`, back (its bounce), to child `b`.
/// A message still waiting in the port's buffer travels with it each time.
/// The end of both three-hop tests: the three messages posted on `port1` while its peer was
/// travelling come back in order, then 96 more round trips, and the two children end.
async fn echoed_after_three_hops(port1: &MessagePort, a: UtilityProcess, b: UtilityProcess) {
    for i in 1..4 {
        assert_eq!(seq_of(&recv(port1, "echoed after three hops").await), i);
    }
    for i in 4..100 {
        port1.post_message(&numbered(i, 3)).unwrap();
        assert_eq!(seq_of(&recv(port1, "echoed by b").await), i);
    }
    end(a).await;
    end(b).await;
}

#[cfg(windows)]
#[tokio::test]
async fn a_port_travels_three_hops() {
    let mut a = porter();
    let b = porter();
    let (port1, port2) = channel();
    // Read one, so that the next one waits in port2's buffer and travels as a prefix.
    port1.post_message(&numbered(0, 3)).unwrap();
    port1.post_message(&numbered(1, 3)).unwrap();
    assert_eq!(seq_of(&recv(&port2, "before the hops").await), 0);

    a.post_message_with_ports(&PortCommand::Bounce, vec![port2])
        .unwrap();
    port1.post_message(&numbered(2, 3)).unwrap();
    let port2 = message_from(&mut a)
        .await
        .take_ports()
        .pop()
        .expect("port2 back from a");
    b.post_message_with_ports(&PortCommand::Echo, vec![port2])
        .unwrap();
    port1.post_message(&numbered(3, 3)).unwrap();
    echoed_after_three_hops(&port1, a, b).await;
}

/// Windows: a port made by `MessageChannel` (or received) carries messages only. Attaching a
/// port or a shared buffer to a message on one is `Error::Io` (`Unsupported`), nothing is
/// sent, and the port goes on working.
#[cfg(windows)]
#[tokio::test]
async fn attachments_on_a_message_channel_port_are_refused_and_the_port_goes_on() {
    let (port1, port2) = channel();
    let (_keep, attached) = channel();
    match port1.post_message_with_ports(&"with a port", vec![attached]) {
        Err(Error::Io { source, .. }) => {
            assert_eq!(source.kind(), std::io::ErrorKind::Unsupported, "{source}")
        }
        other => panic!("expected Error::Io(Unsupported), got {other:?}"),
    }
    let buffer = utility_process::SharedBuffer::new(4096).expect("a buffer");
    match port1.post_message_with_transfer(&"with a buffer", vec![buffer.into()]) {
        Err(Error::Io { source, .. }) => {
            assert_eq!(source.kind(), std::io::ErrorKind::Unsupported, "{source}")
        }
        other => panic!("expected Error::Io(Unsupported), got {other:?}"),
    }
    port1.post_message(&numbered(5, 0)).unwrap();
    let message = recv(&port2, "after the refused posts").await;
    assert_eq!(message.port_count(), 0);
    assert_eq!(seq_of(&message), 5);
}

#[cfg(unix)]
#[tokio::test]
async fn a_port_travels_three_hops() {
    let a = porter();
    let b = porter();
    let (port1, port2) = channel();
    let (link_a, link_b) = channel();
    b.post_message_with_ports(&PortCommand::EchoArrivals, vec![link_b])
        .unwrap();

    // Read one, so that the next one waits in port2's buffer and travels as a prefix.
    port1.post_message(&numbered(0, 3)).unwrap();
    port1.post_message(&numbered(1, 3)).unwrap();
    assert_eq!(seq_of(&recv(&port2, "before the hops").await), 0);

    // Hop 1: over another channel, within this process.
    let (hop1, hop2) = channel();
    hop1.post_message_with_ports(&"hop 1", vec![port2]).unwrap();
    let mut carried = recv(&hop2, "hop 1").await;
    let port2 = carried.take_ports().pop().expect("port2 after hop 1");
    port1.post_message(&numbered(2, 3)).unwrap();

    // Hop 2: to child a, over its parent port; hop 3: a forwards it to b over the link,
    // and b echoes on it.
    a.post_message_with_ports(&PortCommand::Forward, vec![link_a, port2])
        .unwrap();
    port1.post_message(&numbered(3, 3)).unwrap();

    echoed_after_three_hops(&port1, a, b).await;
}

#[tokio::test]
async fn messages_queued_before_transfer_arrive_after_it() {
    let mut child = porter();

    // Messages for the port that travels: some in its buffer, one split between its buffer
    // and its socket, some in its socket, some posted after it left.
    let (port1, port2) = channel();
    for i in 0..50 {
        // Message 40 is larger than one read: the read that buffers 1..40 stops inside it.
        let padding = if i == 40 { 300 * 1024 } else { 100 };
        port1.post_message(&numbered(i, padding)).unwrap();
    }
    // One recv reads from the socket and delivers the first: 1..40 (and the start of 40)
    // stay buffered.
    assert_eq!(seq_of(&recv(&port2, "first").await), 0);
    for i in 50..100 {
        port1.post_message(&numbered(i, 100)).unwrap();
    }
    child
        .post_message_with_ports(&PortCommand::CollectNumbers { count: 149 }, vec![port2])
        .unwrap();
    for i in 100..150 {
        port1.post_message(&numbered(i, 100)).unwrap();
    }
    match reply_from(&mut child).await {
        PortReply::Numbers { numbers } => {
            assert_sequence(&numbers, 1..150, "messages received by the new holder")
        }
        other => panic!("expected Numbers, got {other:?}"),
    }

    // Messages posted by the port that travels, while its peer does not read: far more than
    // a socket holds, so most wait in the port's own queue when it leaves. They reach the
    // peer before anything the new holder posts.
    let (peer, traveller) = channel();
    for i in 0..64 {
        traveller.post_message(&numbered(i, 16 * 1024)).unwrap();
    }
    child
        .post_message_with_ports(
            &PortCommand::PostNumbers {
                from: 64,
                count: 64,
            },
            vec![traveller],
        )
        .unwrap();
    let mut got = Vec::new();
    for _ in 0..128 {
        got.push(seq_of(
            &recv(&peer, "from the old and the new holder").await,
        ));
    }
    assert_sequence(
        &got,
        0..128,
        "messages posted before and after the transfer",
    );
    // The child dropped the port after posting.
    expect_closed(&peer, "after the new holder dropped the port").await;
    end(child).await;
}

#[cfg(unix)]
#[tokio::test]
async fn a_message_with_ports_buffered_by_a_port_that_travels_still_brings_its_ports() {
    let child = porter();
    let (port1, port2) = channel();
    let (q1, q2) = channel();
    port1.post_message(&numbered(0, 0)).unwrap();
    port1
        .post_message_with_ports(&"carrying q2", vec![q2])
        .unwrap();
    port1.post_message(&numbered(2, 0)).unwrap();
    // One recv reads all three and delivers the first: the one carrying q2 (and q2's
    // descriptor) waits in port2's buffer when port2 leaves.
    assert_eq!(seq_of(&recv(&port2, "the first").await), 0);
    child
        .post_message_with_ports(&PortCommand::EchoArrivals, vec![port2])
        .unwrap();
    // The child takes q2 out of the buffered message and echoes on it.
    q1.post_message(&numbered(7, 0)).unwrap();
    assert_eq!(
        seq_of(&recv(&q1, "echo on the port that was buffered").await),
        7
    );
    // And a port sent after the transfer arrives too.
    let (r1, r2) = channel();
    port1
        .post_message_with_ports(&"carrying r2", vec![r2])
        .unwrap();
    r1.post_message(&numbered(8, 0)).unwrap();
    assert_eq!(seq_of(&recv(&r1, "echo on a port sent after").await), 8);
    end(child).await;
}

#[cfg(unix)]
#[tokio::test]
async fn a_message_with_ports_cut_short_by_a_read_still_brings_them_when_its_port_travels() {
    // A fresh port reads up to 64 KiB at a time. A first message just short of that makes
    // the first read stop inside the next one, which carries a port: its descriptor came
    // with its first byte, so it is already in the port's buffer when the port travels.
    // Shifting the first message's size by `cut` moves where the read stops: through the
    // next message's length field, its kind, its attachments, its payload.
    for cut in 0..64usize {
        let what = format!("cut {cut}");
        let (port1, port2) = channel();
        let (q1, q2) = channel();
        port1.post_bytes(&vec![7u8; 65536 - 2 - cut]).unwrap();
        port1.post_message_with_ports(&"carrier", vec![q2]).unwrap();
        port1.post_message(&"after").unwrap();
        assert_eq!(recv(&port2, &what).await.len(), 65536 - 2 - cut);

        let (hop1, hop2) = channel();
        hop1.post_message_with_ports(&"hop", vec![port2]).unwrap();
        let port2 = recv(&hop2, &what)
            .await
            .take_ports()
            .pop()
            .expect("port2 after the hop");
        let mut carrier = recv(&port2, &what).await;
        assert_eq!(carrier.data::<String>().unwrap(), "carrier", "{what}");
        let q2 = carrier
            .take_ports()
            .pop()
            .unwrap_or_else(|| panic!("{what}: the carrier lost its port"));
        assert_eq!(
            recv(&port2, &what).await.data::<String>().unwrap(),
            "after",
            "{what}"
        );
        q1.post_message(&numbered(cut as u64, 0)).unwrap();
        assert_eq!(seq_of(&recv(&q2, &what).await), cut as u64);
    }
}

// ---------------------------------------------------------------------------------------------
// Closing
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_large_message_half_read_when_its_port_travels_arrives_whole() {
    // port2 has read part of a 16 MiB message when it is sent away: that part travels in a
    // prefix larger than one socket buffer, which the library writes in the background.
    let len = 16 << 20;
    // The scenario needs the sender stopped before it has written the whole message; on a
    // loaded machine it sometimes finishes first (the message then arrives whole, which is
    // right but tests nothing): try again with a fresh sender, a few times.
    let mut attempt = 0;
    let (sender, port2, pid) = loop {
        attempt += 1;
        let mut sender = porter();
        let (port1, port2) = channel();
        sender
            .post_message_with_ports(&PortCommand::PostPattern { len }, vec![port1])
            .unwrap();
        assert_eq!(reply_from(&mut sender).await, PortReply::Posted);
        // The sender has written what its socket holds and waits to write the rest: stop it,
        // so that port2 can read only a part.
        let pid = sender.pid().expect("the sender runs");
        // Our own child, which is alive (it just answered).
        stop_process(pid);
        let early = tokio::time::timeout(std::time::Duration::from_millis(50), port2.recv()).await;
        if early.is_err() {
            break (sender, port2, pid);
        }
        assert!(
            attempt < 5,
            "the whole message arrived from a stopped sender {attempt} times"
        );
        continue_process(pid);
        end(sender).await;
    };
    let mut collector = porter();
    collector
        .post_message_with_ports(&PortCommand::Collect { count: 1 }, vec![port2])
        .unwrap();
    continue_process(pid);
    match reply_from(&mut collector).await {
        PortReply::Received { messages } => {
            assert_eq!(messages.len(), 1);
            assert!(
                messages[0] == pattern(len),
                "the 16 MiB message changed on its way"
            );
        }
        other => panic!("expected Received, got {other:?}"),
    }
    end(sender).await;
    end(collector).await;
}

#[tokio::test]
async fn closing_a_port_is_seen_by_the_far_end() {
    // Both ends here.
    let (port1, port2) = channel();
    port1.close();
    expect_closed(&port2, "port2 after port1.close()").await;
    assert!(
        matches!(port2.post_message(&1u8), Err(Error::Closed { .. })),
        "posting to a closed port's peer"
    );
    assert!(matches!(port2.post_bytes(b"x"), Err(Error::Closed { .. })));
    assert!(
        matches!(port1.post_message(&1u8), Err(Error::Closed { .. })),
        "posting on the closed port itself"
    );

    // The far end in a child: it stops collecting when it sees the close.
    let mut child = porter();
    let (port1, port2) = channel();
    child
        .post_message_with_ports(&PortCommand::CollectNumbers { count: 1000 }, vec![port2])
        .unwrap();
    for i in 0..3 {
        port1.post_message(&numbered(i, 0)).unwrap();
    }
    port1.close();
    match reply_from(&mut child).await {
        PortReply::Numbers { numbers } => assert!(
            numbers.len() <= 3 && numbers.iter().copied().eq(0..numbers.len() as u64),
            "{numbers:?}"
        ),
        other => panic!("expected Numbers, got {other:?}"),
    }
    end(child).await;
}

#[cfg(unix)]
#[tokio::test]
async fn closing_a_port_closes_the_ports_in_the_messages_it_had_not_read() {
    // Read into the port's buffer, not delivered.
    let (port1, port2) = channel();
    let (kept, sent) = channel();
    port2.post_message(&"first").unwrap();
    port2
        .post_message_with_ports(&"buffered", vec![sent])
        .unwrap();
    recv(&port1, "the first").await;
    port1.close();
    expect_closed(&kept, "the port in a buffered message dropped by close()").await;

    // Still in the socket: the port never read it.
    let (port1, port2) = channel();
    let (kept, sent) = channel();
    port2
        .post_message_with_ports(&"never read", vec![sent])
        .unwrap();
    port1.close();
    expect_closed(&kept, "the port in an unread message dropped by close()").await;
    // The closed port itself is still alive here: only close() can have closed `sent`.
    assert!(matches!(
        port1.post_message(&1u8),
        Err(Error::Closed { .. })
    ));
}

#[tokio::test]
async fn posting_to_a_port_whose_peer_is_closed_is_an_error() {
    // The peer dropped in this process.
    let (port1, port2) = channel();
    drop(port2);
    assert!(matches!(
        port1.post_message(&"anyone?"),
        Err(Error::Closed { .. })
    ));
    assert!(matches!(
        port1.post_bytes(b"anyone?"),
        Err(Error::Closed { .. })
    ));
    // A port attached to a failed post is closed, and its own peer sees that.
    let (keep, attached) = channel();
    assert!(matches!(
        port1.post_message_with_ports(&"with a port", vec![attached]),
        Err(Error::Closed { .. })
    ));
    expect_closed(&keep, "the peer of a port attached to a failed post").await;

    // The peer dropped in a child, never started there.
    let mut child = porter();
    let (port1, port2) = channel();
    child
        .post_message_with_ports(&PortCommand::Close, vec![port2])
        .unwrap();
    assert_eq!(reply_from(&mut child).await, PortReply::Closed { count: 1 });
    assert!(matches!(
        port1.post_message(&"anyone?"),
        Err(Error::Closed { .. })
    ));
    end(child).await;
}

#[tokio::test]
async fn the_far_end_process_killed_makes_recv_return_none() {
    let mut child = porter();
    let (port1, port2) = channel();
    child
        .post_message_with_ports(&PortCommand::Echo, vec![port2])
        .unwrap();
    port1.post_message(&numbered(7, 0)).unwrap();
    assert_eq!(seq_of(&recv(&port1, "echo").await), 7);

    assert!(child.kill());
    expect_closed(&port1, "port1 after the child holding port2 was killed").await;
    assert!(matches!(
        port1.post_message(&"anyone?"),
        Err(Error::Closed { .. })
    ));
    loop {
        match next_event(&mut child).await {
            Some(Event::Exit(status)) => {
                assert!(ended_by_kill(&status), "{status}");
                break;
            }
            Some(Event::Spawn) => {}
            other => panic!("expected Exit, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_port_sent_over_its_own_peer_is_an_error() {
    let (port1, port2) = channel();
    let (other_kept, other_sent) = channel();
    let result = port1.post_message_with_ports(&"yourself", vec![other_sent, port2]);
    assert!(
        matches!(result, Err(Error::PortOverItsPeer)),
        "got {result:?}"
    );
    // Every port of the failed post is closed.
    expect_closed(&port1, "port1, whose peer was refused").await;
    expect_closed(
        &other_kept,
        "the peer of the other port of the refused post",
    )
    .await;

    // A port that has travelled is still its peer's other end.
    let mut child = porter();
    let (port1, port2) = channel();
    child
        .post_message_with_ports(&PortCommand::Bounce, vec![port2])
        .unwrap();
    let port2 = message_from(&mut child)
        .await
        .take_ports()
        .pop()
        .expect("the port came back");
    let result = port2.post_message_with_ports(&"yourself", vec![port1]);
    assert!(
        matches!(result, Err(Error::PortOverItsPeer)),
        "after a round trip: got {result:?}"
    );
    expect_closed(&port2, "port2, whose peer was refused").await;
    end(child).await;
}

#[cfg(unix)]
#[tokio::test]
async fn a_message_whose_ports_are_never_taken_closes_them() {
    // Within this process.
    let (carrier1, carrier2) = channel();
    let (kept, sent) = channel();
    carrier1
        .post_message_with_ports(&"take me", vec![sent])
        .unwrap();
    let message = recv(&carrier2, "the carrying message").await;
    assert_eq!(message.port_count(), 1);
    drop(message);
    expect_closed(&kept, "after the message was dropped with its port").await;
    assert!(matches!(kept.post_message(&1u8), Err(Error::Closed { .. })));

    // Read only as bytes.
    let (kept, sent) = channel();
    carrier1
        .post_message_with_ports(&"take me", vec![sent])
        .unwrap();
    let bytes = recv(&carrier2, "the carrying message").await.into_bytes();
    assert!(!bytes.is_empty());
    expect_closed(&kept, "after the message was turned into bytes").await;

    // A message from a child, as an event.
    let mut child = porter();
    let (kept, sent) = channel();
    child
        .post_message_with_ports(&PortCommand::Bounce, vec![sent])
        .unwrap();
    let message = message_from(&mut child).await;
    assert_eq!(message.port_count(), 1);
    drop(message);
    expect_closed(&kept, "after the child's message was dropped with its port").await;
    end(child).await;
}

#[tokio::test]
async fn a_dropped_unstarted_port_closes_and_the_far_end_sees_it() {
    let (port1, port2) = channel();
    // Messages port2 never reads, and messages it posted before it was dropped.
    for i in 0..5 {
        port1.post_message(&numbered(i, 0)).unwrap();
    }
    // More than the socket holds: most of these wait in port2's queue when it is dropped.
    for i in 0..3 {
        port2.post_message(&numbered(100 + i, 0)).unwrap();
        port2.post_message(&numbered(200 + i, 300 * 1024)).unwrap();
    }
    drop(port2);
    for i in 0..3 {
        assert_eq!(
            seq_of(&recv(&port1, "posted before the drop").await),
            100 + i
        );
        assert_eq!(
            seq_of(&recv(&port1, "posted before the drop").await),
            200 + i
        );
    }
    expect_closed(&port1, "after port2 was dropped").await;
    assert!(matches!(
        port1.post_message(&1u8),
        Err(Error::Closed { .. })
    ));
}

// ---------------------------------------------------------------------------------------------
// Limits and descriptors
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn too_many_ports_in_one_message_is_an_error() {
    let mut child = porter();

    // 254 ports.
    let (kept, sent): (Vec<_>, Vec<_>) = (0..254).map(|_| channel()).unzip();
    let result = child.post_message_with_ports(&PortCommand::Bounce, sent);
    assert!(
        matches!(
            result,
            Err(Error::TooManyPorts {
                count: 254,
                max: 253
            })
        ),
        "got {result:?}"
    );
    for port in &kept {
        expect_closed(port, "the peer of a port of the refused message").await;
    }

    // 127 ports that each need two descriptors (they carry unread messages): 254.
    let (carrier1, carrier2) = channel();
    let mut kept = Vec::new();
    let mut sent = Vec::new();
    for _ in 0..127 {
        let (port1, port2) = channel();
        port1.post_message(&numbered(0, 0)).unwrap();
        port1.post_message(&numbered(1, 0)).unwrap();
        port1.flush();
        assert_eq!(seq_of(&recv(&port2, "the first").await), 0);
        kept.push(port1);
        sent.push(port2);
    }
    let result = carrier1.post_message_with_ports(&"too many", sent);
    assert!(
        matches!(
            result,
            Err(Error::TooManyPorts {
                count: 254,
                max: 253
            })
        ),
        "got {result:?}"
    );
    for port in &kept {
        expect_closed(port, "the peer of a port of the refused message").await;
    }
    drop(carrier1);
    expect_closed(&carrier2, "nothing was sent").await;

    // 253 go to the child and come back, and every one still works.
    let (kept, sent): (Vec<_>, Vec<_>) = (0..253).map(|_| channel()).unzip();
    child
        .post_message_with_ports(&PortCommand::Bounce, sent)
        .unwrap();
    let mut bounced = message_from(&mut child).await;
    assert_eq!(bounced.port_count(), 253);
    let returned = bounced.take_ports();
    for (i, (port1, port2)) in kept.iter().zip(&returned).enumerate() {
        port1.post_message(&numbered(i as u64, 0)).unwrap();
        assert_eq!(
            seq_of(&recv(port2, "through a returned port").await),
            i as u64
        );
        port2.post_message(&numbered(i as u64, 1)).unwrap();
        assert_eq!(
            seq_of(&recv(port1, "back through a returned port").await),
            i as u64
        );
    }
    end(child).await;
}

#[cfg(unix)]
#[tokio::test]
async fn received_port_descriptors_are_close_on_exec() {
    let mut child = porter();
    child.post_message(&PortCommand::FdFlags).unwrap();
    let PortReply::FdFlags { fds: before } = reply_from(&mut child).await else {
        panic!("expected FdFlags")
    };

    // Two ports over the parent port, one of them with a prefix (two descriptors).
    let (plain1, plain2) = channel();
    let (prefixed1, prefixed2) = channel();
    prefixed1.post_message(&numbered(0, 0)).unwrap();
    prefixed1.post_message(&numbered(1, 0)).unwrap();
    prefixed1.flush();
    assert_eq!(seq_of(&recv(&prefixed2, "the first").await), 0);
    child
        .post_message_with_ports(&PortCommand::Hold, vec![plain2, prefixed2])
        .unwrap();
    // A link, and a port that arrives over that link rather than over the parent port.
    let (link1, link2) = channel();
    child
        .post_message_with_ports(&PortCommand::EchoArrivals, vec![link2])
        .unwrap();
    let (nested1, nested2) = channel();
    link1
        .post_message_with_ports(&"echo on this", vec![nested2])
        .unwrap();
    nested1.post_message(&numbered(9, 0)).unwrap();
    assert_eq!(
        seq_of(&recv(&nested1, "echo over the nested port").await),
        9
    );

    child.post_message(&PortCommand::FdFlags).unwrap();
    let PortReply::FdFlags { fds: after } = reply_from(&mut child).await else {
        panic!("expected FdFlags")
    };
    let new_sockets: Vec<&FdFlags> = after
        .iter()
        .filter(|fd| !before.contains(fd) && fd.target.starts_with("socket:"))
        .collect();
    assert_eq!(
        new_sockets.len(),
        5,
        "expected the child to hold 5 new sockets (2 ports, a prefix, a link, a nested port); \
         before: {before:?}, after: {after:?}"
    );
    for fd in &new_sockets {
        assert!(
            fd.is_cloexec(),
            "received descriptor {} ({}) lacks O_CLOEXEC: flags {:o}",
            fd.fd,
            fd.target,
            fd.flags
        );
    }
    drop((plain1, prefixed1, link1, nested1));
    end(child).await;
}

#[test]
fn a_thousand_ports_created_sent_and_dropped_leave_the_fd_count_at_baseline() {
    in_own_process(
        module_path!(),
        "a_thousand_ports_created_sent_and_dropped_leave_the_fd_count_at_baseline",
        a_thousand_ports_leave_nothing_behind,
    );
}

/// Sends `port2` to `holder` or `bouncer`, after reading one message on it when `prefixed`.
async fn send_away(
    port1: &MessagePort,
    port2: MessagePort,
    prefixed: bool,
    to: &UtilityProcess,
    command: &PortCommand,
) {
    if prefixed {
        port1.post_message(&numbered(0, 0)).unwrap();
        port1.post_message(&numbered(1, 0)).unwrap();
        // Both in the socket before port2 reads (a burst of posts may otherwise still be on
        // its way): the read takes both, delivers the first and keeps the second.
        port1.flush();
        assert_eq!(seq_of(&recv(&port2, "read before sending").await), 0);
    }
    to.post_message_with_ports(command, vec![port2]).unwrap();
}

async fn a_thousand_ports_leave_nothing_behind() {
    // Warm up: the library's thread, its guardian, one child's whole life, a port held, a
    // port with a prefix bounced back.
    let mut warm = porter();
    let (held1, held2) = channel();
    send_away(&held1, held2, false, &warm, &PortCommand::Hold).await;
    let (bounced1, bounced2) = channel();
    send_away(&bounced1, bounced2, true, &warm, &PortCommand::Bounce).await;
    let back = message_from(&mut warm).await.take_ports().pop().unwrap();
    assert_eq!(seq_of(&recv(&back, "after the bounce").await), 1);
    drop((held1, bounced1, back));
    end(warm).await;
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    while describe_fds().contains("pidfd") {
        assert!(
            Instant::now() < deadline,
            "the warm-up child's pidfd stays open"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let baseline = fd_count();
    let baseline_fds = describe_fds();

    #[cfg_attr(windows, expect(unused_mut, reason = "only Unix asks the holder"))]
    let mut holder = porter();
    let mut bouncer = porter();
    let mut kept = Vec::new();
    let mut returned = Vec::new();
    #[cfg(unix)]
    let mut held = Vec::new();
    for batch in 0..10u32 {
        for i in batch * 100..(batch + 1) * 100 {
            let (port1, port2) = channel();
            let prefixed = i % 3 == 0;
            if i % 2 == 0 {
                send_away(&port1, port2, prefixed, &holder, &PortCommand::Hold).await;
            } else {
                send_away(&port1, port2, prefixed, &bouncer, &PortCommand::Bounce).await;
            }
            kept.push((i, port1));
        }
        // Both children catch up before the next batch, so that neither direction's queue
        // fills up (a port's queue holds a bounded number of descriptors).
        while returned.len() < (batch as usize + 1) * 50 {
            returned.extend(message_from(&mut bouncer).await.take_ports());
        }
        #[cfg(unix)]
        {
            holder.post_message(&PortCommand::Fds).unwrap();
            let PortReply::Fds { fds } = reply_from(&mut holder).await else {
                panic!("expected Fds")
            };
            held = fds;
        }
    }
    // Every bounced port still works.
    for ((i, port1), port2) in kept.iter().filter(|(i, _)| i % 2 == 1).zip(&returned) {
        if i % 3 == 0 {
            assert_eq!(seq_of(&recv(port2, "queued before the bounce").await), 1);
        }
        port1.post_message(&numbered(u64::from(*i), 0)).unwrap();
        assert_eq!(seq_of(&recv(port2, "bounced port").await), u64::from(*i));
    }
    // The holder holds its 500 ports, a third of them with a prefix.
    #[cfg(unix)]
    assert!(
        held.len() >= 500 + 500 / 3,
        "the holder holds {} descriptors",
        held.len()
    );

    drop(kept);
    drop(returned);
    end(holder).await;
    end(bouncer).await;

    let deadline = Instant::now() + SETTLE_TIMEOUT;
    while fd_count() != baseline && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        fd_count(),
        baseline,
        "descriptors not back to the baseline after a thousand ports:\n--- baseline\n\
         {baseline_fds}--- now\n{}",
        describe_fds()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ports_keep_order_under_load_while_transferred_mid_stream() {
    /// The sender posts at least this many, and goes on for this many after the transfer.
    const AT_LEAST: u64 = 20_000;
    const AFTER_TRANSFER: u64 = 2_000;
    /// How many the parent reads before it sends its port away.
    const READ_HERE: u64 = 500;

    let mut child = porter();
    let (port1, port2) = channel();
    let transferred = Arc::new(AtomicBool::new(false));
    let sender = std::thread::spawn({
        let transferred = Arc::clone(&transferred);
        move || {
            let mut seq = 0u64;
            let mut stop_at = None;
            let deadline = Instant::now() + EVENT_TIMEOUT;
            loop {
                if stop_at.is_none() && transferred.load(Ordering::SeqCst) {
                    stop_at = Some((seq + AFTER_TRANSFER).max(AT_LEAST));
                }
                if stop_at.is_some_and(|stop| seq >= stop) {
                    break;
                }
                match port1.post_message(&numbered(seq, (seq % 97) as usize)) {
                    Ok(()) => seq += 1,
                    // Nothing was queued: try again once the reader has caught up a little.
                    Err(Error::QueueFull { .. }) => {
                        assert!(Instant::now() < deadline, "the queue never drains");
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err(e) => panic!("post {seq}: {e}"),
                }
            }
            // Dropping the port writes everything queued, then closes it: the child's
            // collecting ends.
            seq
        }
    });

    for i in 0..READ_HERE {
        assert_eq!(seq_of(&recv(&port2, "read before the transfer").await), i);
    }
    child
        .post_message_with_ports(
            &PortCommand::CollectNumbers { count: usize::MAX },
            vec![port2],
        )
        .unwrap();
    transferred.store(true, Ordering::SeqCst);
    let total = sender.join().expect("the sender thread");
    assert!(total >= AT_LEAST);

    match reply_from(&mut child).await {
        PortReply::Numbers { numbers } => assert_sequence(
            &numbers,
            READ_HERE..total,
            "messages the child received after the transfer",
        ),
        other => panic!("expected Numbers, got {other:?}"),
    }
    end(child).await;
}
