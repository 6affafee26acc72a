use std::sync::mpsc;

use super::*;

/// The raw other end of a channel, written byte by byte as a peer process would.
struct Peer(Channel);

impl Peer {
    fn write_all(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            match self.0.send(bytes, &[]) {
                Ok(n) => bytes = &bytes[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.0.wait(sys::Interest::Writable, None)?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// A receiving endpoint and the raw channel that feeds it.
fn receiver() -> (Arc<Endpoint>, Peer) {
    let (ours, theirs) = Channel::pair().unwrap();
    let endpoint = Endpoint::new(ours, Limits::default_channel(), 0);
    (endpoint, Peer(theirs))
}

/// `count` MESSAGE frames, the i-th carrying `len` bytes of value `i % 251`.
fn frames(count: usize, len: usize) -> Vec<u8> {
    let encoder = FrameEncoder::new(Limits::default_channel().max_frame_len);
    let mut out = Vec::new();
    for i in 0..count {
        encoder
            .message(&mut out, |p| {
                p.resize(p.len() + len, (i % 251) as u8);
                Ok(())
            })
            .unwrap();
    }
    out
}

fn payload(incoming: Option<Incoming>) -> Payload {
    match incoming {
        Some(Incoming::Message { payload, .. }) => payload,
        other => panic!("expected a message, got {other:?}"),
    }
}

#[test]
fn messages_kept_alive_keep_their_bytes_while_later_ones_are_read() {
    let (endpoint, mut peer) = receiver();
    // 3,000 frames of 64 B in one write: the first read takes a buffer full of them.
    let count = 3000;
    peer.write_all(&frames(count, 64)).unwrap();
    let mut kept = Vec::new();
    for _ in 0..count {
        kept.push(payload(endpoint.recv_blocking().unwrap()));
    }
    assert!(
        kept.iter().any(|p| matches!(p.data, Data::Shared(_))),
        "small messages read together share their buffer"
    );
    for (i, payload) in kept.iter().enumerate() {
        assert_eq!(payload.bytes(), &[(i % 251) as u8; 64][..], "message {i}");
    }
    let last = kept.pop().unwrap();
    assert_eq!(last.into_vec(), vec![((count - 1) % 251) as u8; 64]);
}

#[test]
fn a_dropped_large_message_lends_its_buffer_to_the_next_one() {
    let (endpoint, peer) = receiver();
    let len = 2 * HUGE_RESERVE;
    let writer = std::thread::spawn(move || {
        let mut peer = peer;
        peer.write_all(&frames(3, len)).unwrap();
        peer
    });
    let first = payload(endpoint.recv_blocking().unwrap());
    assert_eq!(first.bytes(), &vec![0; len][..]);
    drop(first);
    assert!(
        lock(&endpoint.spare.slot).buf.is_some(),
        "kept as the spare"
    );

    let second = payload(endpoint.recv_blocking().unwrap());
    assert!(
        lock(&endpoint.spare.slot).buf.is_none(),
        "the spare was used"
    );
    assert_eq!(second.bytes(), &vec![1; len][..]);
    // A message turned into bytes keeps its buffer.
    assert_eq!(second.into_vec(), vec![1; len]);
    assert!(lock(&endpoint.spare.slot).buf.is_none());

    let third = payload(endpoint.recv_blocking().unwrap());
    assert_eq!(third.bytes(), &vec![2; len][..]);
    drop(third);
    drop(writer.join().unwrap());
    // An unused spare goes back to the allocator (after SPARE_IDLE; generous here).
    let deadline = Instant::now() + Duration::from_secs(60);
    while lock(&endpoint.spare.slot).buf.is_some() {
        assert!(Instant::now() < deadline, "the spare was never released");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn large_and_small_messages_read_together_all_arrive_intact() {
    let (endpoint, peer) = receiver();
    // Sizes around READ_CHUNK, so that reads end inside frames and frames share reads.
    let sizes = [
        70_000, 10, 65_000, 100_000, 3, 64, 200_000, 65_536, 1, 80_000,
    ];
    let mut bytes = Vec::new();
    let encoder = FrameEncoder::new(Limits::default_channel().max_frame_len);
    for (i, &len) in sizes.iter().enumerate() {
        encoder
            .message(&mut bytes, |p| {
                p.resize(p.len() + len, i as u8);
                Ok(())
            })
            .unwrap();
    }
    let writer = std::thread::spawn(move || {
        let mut peer = peer;
        // In uneven pieces, each written whole.
        for piece in bytes.chunks(47_000) {
            peer.write_all(piece).unwrap();
        }
        peer
    });
    let mut kept = Vec::new();
    for _ in sizes {
        kept.push(payload(endpoint.recv_blocking().unwrap()));
    }
    for (i, (got, &len)) in kept.iter().zip(&sizes).enumerate() {
        assert_eq!(got.bytes(), &vec![i as u8; len][..], "message {i}");
    }
    drop(writer.join().unwrap());
    assert!(endpoint.recv_blocking().unwrap().is_none(), "then the end");
}

#[test]
fn a_large_send_buffer_is_kept_for_the_next_burst_then_given_back() {
    let (ours, theirs) = Channel::pair().unwrap();
    let sender = Endpoint::new(ours, Limits::default_channel(), 0);
    let receiver = Endpoint::new(theirs, Limits::default_channel(), 0);
    let len = 2 * KEEP_CAPACITY;
    sender
        .send_frame(
            |encoder, buf| {
                encoder.message(buf, |p| {
                    p.resize(p.len() + len, 7);
                    Ok(())
                })
            },
            Vec::new(),
        )
        .map_err(|e| format!("{e:?}"))
        .unwrap();
    // The flusher writes it all while it is read.
    assert_eq!(
        payload(receiver.recv_blocking().unwrap()).bytes().len(),
        len
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while !sender.is_drained() {
        assert!(Instant::now() < deadline, "the send queue never drained");
        std::thread::sleep(Duration::from_millis(5));
    }
    // Kept, then given back once no post comes (after SPARE_IDLE; generous here).
    while lock(&sender.outbound).buf.capacity() > KEEP_CAPACITY {
        assert!(
            Instant::now() < deadline,
            "the send buffer was never given back"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!lock(&sender.outbound).release_armed);
}

#[test]
fn closing_ends_a_blocking_receive_from_another_thread() {
    let (endpoint, _peer) = receiver();
    let (done, finished) = mpsc::channel();
    let waiting = Arc::clone(&endpoint);
    std::thread::spawn(move || {
        let received = waiting.recv_blocking();
        done.send(received.map(|r| r.is_none()).unwrap_or(false))
            .unwrap();
    });
    // Whether the receive is already waiting or not, the close must end it (from a thread
    // of its own: a close that waited for the receive would hang this test).
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        endpoint.close();
    });
    let ended = finished
        .recv_timeout(Duration::from_secs(60))
        .expect("the blocking receive never returned");
    assert!(ended, "it reports the end of the port");
}

#[test]
fn a_blocking_receive_waits_for_the_rest_of_a_frame() {
    let (endpoint, mut peer) = receiver();
    let bytes = frames(1, 100_000);
    let tail = bytes[10..].to_vec();
    peer.write_all(&bytes[..10]).unwrap();
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        peer.write_all(&tail).unwrap();
        peer
    });
    let got = payload(endpoint.recv_blocking().unwrap());
    assert_eq!(got.bytes(), &vec![0; 100_000][..]);
    let peer = writer.join().unwrap();
    drop(peer);
    assert!(endpoint.recv_blocking().unwrap().is_none(), "then the end");
}
