//! Tests of `channel.rs` (kept in their own file for length). Cross-process behaviour is
//! tested in `tests/child_process.rs` with the `channel_child` program.

use super::*;
use std::sync::Arc;
use windows_sys::Win32::System::Threading::{GetCurrentProcess, SetEvent};

/// Runs `f` with a limit, so that a deadlock fails the test instead of hanging it.
fn within<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(f()).ok());
    rx.recv_timeout(Duration::from_secs(secs))
        .expect("the test finished in time")
}

/// Receives until `n` bytes arrived (or end of stream), waiting between tries.
fn recv_exactly(ch: &Channel, n: usize) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut handles = Vec::new();
    while buf.len() < n {
        let want = n - buf.len();
        match ch.recv(&mut buf, want, &mut handles) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                assert!(ch
                    .wait(Interest::Readable, Some(Duration::from_secs(10)))
                    .unwrap());
            }
            Err(e) => panic!("recv: {e}"),
        }
    }
    buf
}

/// Sends all of `bytes`, waiting for writability between tries.
fn send_all(ch: &Channel, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        match ch.send(bytes, &[]) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                assert!(ch
                    .wait(Interest::Writable, Some(Duration::from_secs(10)))
                    .unwrap());
            }
            Err(e) => panic!("send: {e}"),
        }
    }
}

/// Writes raw bytes (e.g. a hostile header) into the pipe, bypassing the chunk encoder.
fn write_raw(ch: &Channel, bytes: &[u8]) {
    let mut w = lock(&ch.writer);
    w.op.buf = bytes.to_vec();
    if w.op.start_write(ch.raw()).unwrap() {
        w.op.finish(ch.raw(), None).unwrap();
    }
}

/// The current process as a "child" for the broker: both ends of a pair in this process, one
/// sending as a parent does (`Broker::Child`), the other receiving as a child does.
fn brokered_pair() -> (Channel, Channel) {
    let (parent, child) = Channel::pair().unwrap();
    // SAFETY: the pseudo handle of the current process needs no closing.
    let me = unsafe { BorrowedHandle::borrow_raw(GetCurrentProcess()) };
    parent.set_broker(Broker::Child(Arc::new(handle::duplicate(me).unwrap())));
    child.set_broker(Broker::Parent);
    (parent, child)
}

/// Whether `event` is signalled now.
fn is_set(event: &OwnedHandle) -> bool {
    handle::wait_for(event.as_handle(), Some(Duration::ZERO)).unwrap()
}

#[test]
fn bytes_round_trip_both_ways() {
    let (a, b) = Channel::pair().unwrap();
    assert_eq!(a.send(b"ping", &[]).unwrap(), 4);
    assert_eq!(recv_exactly(&b, 4), b"ping");
    assert_eq!(b.send(b"pong!", &[]).unwrap(), 5);
    assert_eq!(recv_exactly(&a, 5), b"pong!");
}

#[test]
fn recv_with_nothing_there_is_would_block() {
    let (a, _b) = Channel::pair().unwrap();
    let err = a.recv(&mut Vec::new(), 16, &mut Vec::new()).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
}

#[test]
fn sixty_four_mib_cross_intact_while_both_sides_send_at_once() {
    let total: usize = 64 << 20;
    let pattern = |i: usize| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1];
    within(300, move || {
        let (a, b) = Channel::pair().unwrap();
        let (a, b) = (Arc::new(a), Arc::new(b));
        let sender = |ch: Arc<Channel>| {
            std::thread::spawn(move || {
                let data: Vec<u8> = (0..4 << 20).map(pattern).collect();
                let mut sent = 0;
                while sent < total {
                    let at = sent % data.len();
                    let end = (at + (total - sent)).min(data.len());
                    send_all(&ch, &data[at..end]);
                    sent += end - at;
                }
            })
        };
        let receiver = |ch: Arc<Channel>| {
            std::thread::spawn(move || {
                let mut got = 0;
                let mut buf = Vec::with_capacity(256 << 10);
                while got < total {
                    buf.clear();
                    match ch.recv(&mut buf, 256 << 10, &mut Vec::new()) {
                        Ok(0) => panic!("end of stream after {got} bytes"),
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            ch.wait(Interest::Readable, Some(Duration::from_secs(10)))
                                .unwrap();
                        }
                        Err(e) => panic!("recv: {e}"),
                    }
                    for (k, &byte) in buf.iter().enumerate() {
                        assert_eq!(byte, pattern((got + k) % (4 << 20)), "byte {}", got + k);
                    }
                    got += buf.len();
                }
            })
        };
        let threads = [
            sender(a.clone()),
            sender(b.clone()),
            receiver(a),
            receiver(b),
        ];
        for t in threads {
            t.join().unwrap();
        }
    });
}

#[test]
fn send_never_blocks_when_the_peer_is_not_reading_and_writable_follows_reading() {
    let (a, b) = Channel::pair().unwrap();
    let big = vec![7u8; 4 << 20];
    let mut sent = 0;
    let err = loop {
        match a.send(&big, &[]) {
            Ok(n) => sent += n,
            Err(e) => break e,
        }
        assert!(
            sent <= 2 * MAX_PAYLOAD,
            "send took more than its cap while the peer slept"
        );
    };
    assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    assert!(!a
        .wait(Interest::Writable, Some(Duration::from_millis(50)))
        .unwrap());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let b = Arc::new(b);
    let reader = b.clone();
    let drained = std::thread::spawn(move || recv_exactly(&reader, sent).len());
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), a.writable())
            .await
            .expect("writable after the peer read");
    });
    assert!(a.send(b"more", &[]).is_ok());
    assert_eq!(drained.join().unwrap(), sent);
}

#[test]
fn end_of_stream_comes_after_all_data_once_the_peer_drops() {
    let (a, b) = Channel::pair().unwrap();
    a.send(b"last words", &[]).unwrap();
    let big = vec![1u8; MAX_PAYLOAD];
    // Still in flight when `a` is dropped: the linger thread must deliver it.
    while a.send(&big, &[]).is_err() {
        a.wait(Interest::Writable, None).unwrap();
    }
    drop(a);
    let got = within(30, move || {
        let data = recv_exactly(&b, 10 + MAX_PAYLOAD);
        // The linger thread lets go of the pipe once its write is read: end of stream follows.
        let end = loop {
            match b.recv(&mut Vec::new(), 16, &mut Vec::new()) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert!(b
                        .wait(Interest::Readable, Some(Duration::from_secs(10)))
                        .unwrap());
                }
                other => break other,
            }
        };
        (data, end.map_err(|e| e.kind()))
    });
    assert_eq!(&got.0[..10], b"last words");
    assert_eq!(got.0.len(), 10 + MAX_PAYLOAD);
    assert_eq!(got.1, Ok(0));
}

#[test]
fn shutdown_ends_the_peers_stream_after_what_was_sent_and_fails_later_sends() {
    let (a, b) = Channel::pair().unwrap();
    a.send(b"bye", &[]).unwrap();
    a.shutdown();
    assert_eq!(
        a.send(b"x", &[]).unwrap_err().kind(),
        io::ErrorKind::BrokenPipe
    );
    assert_eq!(recv_exactly(&b, 3), b"bye");
    assert_eq!(b.recv(&mut Vec::new(), 16, &mut Vec::new()).unwrap(), 0);
    assert_eq!(b.recv(&mut Vec::new(), 16, &mut Vec::new()).unwrap(), 0);
}

#[test]
fn after_shutdown_the_peer_may_still_send_and_we_still_read() {
    let (a, b) = Channel::pair().unwrap();
    a.shutdown();
    assert_eq!(b.recv(&mut Vec::new(), 16, &mut Vec::new()).unwrap(), 0);
    assert_eq!(
        b.send(b"late", &[]).unwrap(),
        4,
        "a half close leaves the way back open"
    );
    assert_eq!(recv_exactly(&a, 4), b"late");
}

#[test]
fn close_ends_the_peers_stream_and_refuses_what_it_sends_after_reading_it() {
    let (a, b) = Channel::pair().unwrap();
    a.send(b"bye", &[]).unwrap();
    a.close();
    assert_eq!(recv_exactly(&b, 3), b"bye");
    assert_eq!(b.recv(&mut Vec::new(), 16, &mut Vec::new()).unwrap(), 0);
    assert_eq!(
        b.send(b"x", &[]).unwrap_err().kind(),
        io::ErrorKind::BrokenPipe,
        "nobody reads a closed port"
    );
}

#[test]
fn readable_wakes_a_task_on_a_current_thread_runtime_when_the_peer_writes() {
    let (a, b) = Channel::pair().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        a.send(b"wake", &[]).unwrap();
        a
    });
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), b.readable())
            .await
            .expect("woken");
    });
    assert_eq!(recv_exactly(&b, 4), b"wake");
    drop(writer.join().unwrap());
}

#[test]
fn a_dropped_readable_future_leaves_the_channel_usable() {
    let (a, b) = Channel::pair().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        for _ in 0..3 {
            let timed_out = tokio::time::timeout(Duration::from_millis(20), b.readable()).await;
            assert!(timed_out.is_err(), "nothing was written yet");
        }
        a.send(b"late", &[]).unwrap();
        tokio::time::timeout(Duration::from_secs(10), b.readable())
            .await
            .expect("woken");
    });
    assert_eq!(recv_exactly(&b, 4), b"late");
    drop(b);
    drop(a);
}

#[test]
fn wait_times_out_without_data_and_returns_true_with_it() {
    let (a, b) = Channel::pair().unwrap();
    let start = Instant::now();
    assert!(!b
        .wait(Interest::Readable, Some(Duration::from_millis(100)))
        .unwrap());
    assert!(start.elapsed() >= Duration::from_millis(90));
    assert!(a.wait(Interest::Writable, Some(Duration::ZERO)).unwrap());
    a.send(b"x", &[]).unwrap();
    assert!(b
        .wait(Interest::Readable, Some(Duration::from_secs(10)))
        .unwrap());
}

#[test]
fn handles_arrive_with_the_first_byte_of_their_send_and_not_earlier_or_later() {
    let (parent, child) = brokered_pair();
    let (e1, e2, e3) = (
        handle::event().unwrap(),
        handle::event().unwrap(),
        handle::event().unwrap(),
    );
    parent.send(b"plain", &[]).unwrap();
    child
        .wait(Interest::Readable, Some(Duration::from_secs(5)))
        .unwrap();
    parent
        .wait(Interest::Writable, Some(Duration::from_secs(5)))
        .unwrap();
    parent.send(b"ab", &[e1.as_handle()]).unwrap();
    parent
        .wait(Interest::Writable, Some(Duration::from_secs(5)))
        .unwrap();
    parent
        .send(b"cd", &[e2.as_handle(), e3.as_handle()])
        .unwrap();
    parent
        .wait(Interest::Writable, Some(Duration::from_secs(5)))
        .unwrap();
    let (mut buf, mut handles) = (Vec::new(), Vec::new());
    // Everything has arrived, yet each receive stops before the next attachment.
    assert_eq!(child.recv(&mut buf, 100, &mut handles).unwrap(), 5);
    assert!(handles.is_empty());
    assert_eq!(child.recv(&mut buf, 1, &mut handles).unwrap(), 1);
    assert_eq!(handles.len(), 1, "the handle comes with the first byte");
    assert_eq!(child.recv(&mut buf, 100, &mut handles).unwrap(), 1);
    assert_eq!(handles.len(), 1, "and not again with the second");
    assert_eq!(child.recv(&mut buf, 100, &mut handles).unwrap(), 2);
    assert_eq!(buf, b"plainabcd");
    assert_eq!(handles.len(), 3);
    // They are the same objects: signalling through a received handle sets the original.
    for (received, original) in handles.iter().zip([&e1, &e2, &e3]) {
        // SAFETY: a received, open event handle.
        unsafe { SetEvent(received.as_raw_handle()) };
        assert!(is_set(original));
    }
}

#[test]
fn a_made_up_handle_value_from_a_child_is_invalid_data_and_kills_reading() {
    let (parent, child) = brokered_pair();
    let own = handle::event().unwrap();
    // A child naming one handle it owns and one it does not.
    let exported = Broker::Parent.export(&[own.as_handle()]).unwrap();
    let mut chunk = Vec::new();
    chunk::encode(&mut chunk, b"forged", &[exported.values()[0], 0x7fff_fff0]);
    exported.sent();
    write_raw(&child, &chunk);
    parent
        .wait(Interest::Readable, Some(Duration::from_secs(5)))
        .unwrap();
    let mut handles = Vec::new();
    let err = parent.recv(&mut Vec::new(), 100, &mut handles).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert!(handles.is_empty());
    // (Handle counts are checked across processes in tests/child_process.rs: here other tests
    // open and close handles in the same process at the same time.)
    assert_eq!(
        parent
            .recv(&mut Vec::new(), 100, &mut handles)
            .unwrap_err()
            .kind(),
        io::ErrorKind::InvalidData
    );
}

#[test]
fn broker_none_refuses_to_send_handles_and_refuses_chunks_that_carry_them() {
    let (a, b) = Channel::pair().unwrap();
    let event = handle::event().unwrap();
    assert_eq!(
        a.send(b"x", &[event.as_handle()]).unwrap_err().kind(),
        io::ErrorKind::Unsupported
    );
    let mut chunk = Vec::new();
    chunk::encode(&mut chunk, b"x", &[0x40]);
    write_raw(&a, &chunk);
    b.wait(Interest::Readable, Some(Duration::from_secs(5)))
        .unwrap();
    assert_eq!(
        b.recv(&mut Vec::new(), 8, &mut Vec::new())
            .unwrap_err()
            .kind(),
        io::ErrorKind::InvalidData
    );
}

#[test]
fn hostile_headers_are_invalid_data() {
    for (len, count) in [(1u32, 254u32), (MAX_PAYLOAD as u32 + 1, 0), (0, 3)] {
        let (a, b) = brokered_pair();
        let mut raw = len.to_le_bytes().to_vec();
        raw.extend_from_slice(&count.to_le_bytes());
        write_raw(&a, &raw);
        b.wait(Interest::Readable, Some(Duration::from_secs(5)))
            .unwrap();
        let err = b.recv(&mut Vec::new(), 8, &mut Vec::new()).unwrap_err();
        assert_eq!(
            err.kind(),
            io::ErrorKind::InvalidData,
            "len {len} count {count}"
        );
    }
}

#[test]
fn too_many_handles_or_handles_without_bytes_are_invalid_input() {
    let (parent, _child) = brokered_pair();
    let event = handle::event().unwrap();
    let many = vec![event.as_handle(); MAX_HANDLES + 1];
    assert_eq!(
        parent.send(b"x", &many).unwrap_err().kind(),
        io::ErrorKind::InvalidInput
    );
    assert_eq!(
        parent.send(b"", &many[..1]).unwrap_err().kind(),
        io::ErrorKind::InvalidInput
    );
}

#[test]
fn from_handle_refuses_what_is_not_a_pipe() {
    let event = handle::event().unwrap();
    assert!(!is_channel(event.as_handle()));
    let err = Channel::from_handle(event, Broker::None).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
}

/// What the transport does with a port it sends away: finish the current chunk, then hand
/// the handle (here: a duplicate) to the next holder and drop this end.
fn hand_over(b: Channel) -> (OwnedHandle, Vec<u8>) {
    let rest = b
        .drain_current_chunk(Instant::now() + Duration::from_secs(5))
        .unwrap();
    let pipe = handle::duplicate(b.as_handle()).unwrap();
    (pipe, rest)
}

#[test]
fn a_port_handed_over_mid_chunk_passes_the_rest_on_and_the_next_holder_continues_exactly() {
    let (a, b) = Channel::pair().unwrap();
    a.send(b"0123456789", &[]).unwrap();
    a.wait(Interest::Writable, Some(Duration::from_secs(5)))
        .unwrap();
    a.send(b"abc", &[]).unwrap();
    let mut buf = Vec::new();
    b.wait(Interest::Readable, Some(Duration::from_secs(5)))
        .unwrap();
    assert_eq!(b.recv(&mut buf, 4, &mut Vec::new()).unwrap(), 4);
    assert!(
        b.wait(Interest::Readable, Some(Duration::ZERO)).unwrap(),
        "the rest is there"
    );
    let (pipe, rest) = hand_over(b);
    assert_eq!(buf, b"0123");
    assert_eq!(rest, b"456789");
    let next = Channel::from_handle(pipe, Broker::None).unwrap();
    assert_eq!(recv_exactly(&next, 3), b"abc");
    next.send(b"back", &[]).unwrap();
    assert_eq!(recv_exactly(&a, 4), b"back");
}

#[test]
fn a_port_handed_over_with_an_idle_zero_read_loses_nothing() {
    let (a, b) = Channel::pair().unwrap();
    assert!(!b
        .wait(Interest::Readable, Some(Duration::from_millis(10)))
        .unwrap());
    let (pipe, rest) = hand_over(b);
    assert!(rest.is_empty());
    a.send(b"after", &[]).unwrap();
    let next = Channel::from_handle(pipe, Broker::None).unwrap();
    assert_eq!(recv_exactly(&next, 5), b"after");
}

#[test]
fn channel_is_send_sync_and_debug() {
    fn assert_send_sync<T: Send + Sync + fmt::Debug>() {}
    assert_send_sync::<Channel>();
    let (a, _b) = Channel::pair().unwrap();
    assert!(format!("{a:?}").starts_with("Channel"));
}

#[test]
fn a_child_gives_up_its_handles_and_the_parent_takes_them() {
    let (parent, child) = brokered_pair();
    let event = handle::event().unwrap();
    child.send(b"yours", &[event.as_handle()]).unwrap();
    parent
        .wait(Interest::Readable, Some(Duration::from_secs(5)))
        .unwrap();
    let (mut buf, mut handles) = (Vec::new(), Vec::new());
    assert_eq!(parent.recv(&mut buf, 100, &mut handles).unwrap(), 5);
    assert_eq!(handles.len(), 1);
    // SAFETY: a received, open event handle.
    unsafe { SetEvent(handles[0].as_raw_handle()) };
    assert!(is_set(&event));
}

#[test]
fn shutdown_while_a_write_is_in_flight_ends_the_stream_behind_it() {
    let (a, b) = Channel::pair().unwrap();
    let big = vec![3u8; MAX_PAYLOAD];
    assert_eq!(a.send(&big, &[]).unwrap(), MAX_PAYLOAD);
    assert!(
        !a.wait(Interest::Writable, Some(Duration::ZERO)).unwrap(),
        "still in flight"
    );
    a.shutdown();
    let b = within(30, move || {
        assert_eq!(recv_exactly(&b, MAX_PAYLOAD).len(), MAX_PAYLOAD);
        b
    });
    assert!(b
        .wait(Interest::Readable, Some(Duration::from_secs(5)))
        .unwrap());
    assert_eq!(b.recv(&mut Vec::new(), 16, &mut Vec::new()).unwrap(), 0);
}

#[test]
fn a_header_that_arrives_in_pieces_is_put_together() {
    let (a, b) = brokered_pair();
    let event = handle::event().unwrap();
    let exported = Broker::Child(match &*lock(&a.broker) {
        Broker::Child(me) => me.clone(),
        _ => unreachable!(),
    })
    .export(&[event.as_handle()])
    .unwrap();
    let mut chunk = Vec::new();
    chunk::encode(&mut chunk, b"split", exported.values());
    exported.sent();
    write_raw(&a, &chunk[..3]);
    b.wait(Interest::Readable, Some(Duration::from_secs(5)))
        .unwrap();
    let (mut buf, mut handles) = (Vec::new(), Vec::new());
    let err = b.recv(&mut buf, 100, &mut handles).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    // Nothing more there: the readiness wait must now sleep, not spin.
    assert!(!b
        .wait(Interest::Readable, Some(Duration::from_millis(50)))
        .unwrap());
    write_raw(&a, &chunk[3..12]);
    b.wait(Interest::Readable, Some(Duration::from_secs(5)))
        .unwrap();
    assert_eq!(
        b.recv(&mut buf, 100, &mut handles).unwrap_err().kind(),
        io::ErrorKind::WouldBlock
    );
    write_raw(&a, &chunk[12..]);
    b.wait(Interest::Readable, Some(Duration::from_secs(5)))
        .unwrap();
    assert_eq!(b.recv(&mut buf, 100, &mut handles).unwrap(), 5);
    assert_eq!(buf, b"split");
    assert_eq!(handles.len(), 1);
}
