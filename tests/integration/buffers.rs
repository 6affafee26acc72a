#[cfg(unix)]
use utility_process::unix::ExitStatusExt as _;
#[cfg(unix)]
use utility_process::Event;
use utility_process::{fork, BufferPool, ForkOptions, SharedBuffer, UtilityProcess};
#[cfg(unix)]
use utility_process_tests::all_events;
use utility_process_tests::{next_message, Ask, Seen};

const BUFFERS: &str = env!("CARGO_BIN_EXE_buffers");

fn child() -> UtilityProcess {
    fork(BUFFERS, [] as [&str; 0], ForkOptions::default()).expect("the buffers child starts")
}

/// The buffers child in one of its modes (see `children/buffers.rs`).
fn child_in(mode: &str) -> UtilityProcess {
    fork(BUFFERS, [mode], ForkOptions::default()).expect("the buffers child starts")
}

/// Sends the pool's buffer of `len` bytes to be filled with `byte`, and returns what comes
/// back.
async fn lend(child: &mut UtilityProcess, buffer: SharedBuffer, byte: u8) -> Vec<SharedBuffer> {
    child
        .post_message_with_transfer(&Ask::FillAndReturn { byte }, vec![buffer.into()])
        .unwrap();
    let mut message = next_message(child).await;
    assert_eq!(message.data::<String>().unwrap(), "filled");
    message.take_buffers()
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
    let seen: Vec<Seen> = next_message(&mut child).await.data().unwrap();
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
    let mut message = next_message(&mut child).await;
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
    let mut message = next_message(&mut child).await;
    assert_eq!(message.data::<String>().unwrap(), "made");
    let buffers = message.take_buffers();
    assert_eq!(buffers.len(), 1);
    assert!(buffers[0].is_read_only());
    assert_eq!(buffers[0].len(), 12345);
    assert!(buffers[0].iter().all(|&b| b == 9));
}

#[cfg(unix)]
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
        let events = all_events(&mut child).await;
        match events.as_slice() {
            [Event::Spawn, Event::Error(utility_process::Error::ProtocolViolation {
                violation: utility_process::Violation::Descriptors(_),
                ..
            }), Event::Exit(status)] => {
                assert_eq!(
                    status.signal(),
                    Some(utility_process::unix::Signal::SIGKILL),
                    "{mode}"
                )
            }
            other => panic!("{mode}: expected Spawn, a descriptor violation, Exit; got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_pooled_buffer_goes_to_the_child_and_back_and_is_reused_where_it_is_mapped() {
    let mut child = child_in("pool");
    let pool = BufferPool::new();
    let len = 8 << 20;
    let mut buffer = pool.take(len).unwrap();
    buffer.as_mut_slice().unwrap().fill(3);
    let address = buffer.as_ptr();
    for byte in [7, 8] {
        let back = lend(&mut child, buffer, byte).await;
        assert_eq!(pool.lent(), 1, "parked while away");
        for buffer in back {
            pool.put(buffer)
                .expect("the pool takes back its own buffer");
        }
        assert_eq!((pool.lent(), pool.idle()), (0, 1));
        buffer = pool.take(len).unwrap();
        assert_eq!(pool.idle(), 0);
        assert_eq!(buffer.as_ptr(), address, "reused where it was mapped");
        assert!(buffer.iter().all(|&b| b == byte), "with the child's writes");
    }
}

#[tokio::test]
async fn a_pool_takes_back_only_its_own_buffers_not_one_a_child_made() {
    let mut child = child_in("forge");
    let pool = BufferPool::new();
    let back = lend(&mut child, pool.take(1 << 16).unwrap(), 5).await;
    assert_eq!(back.len(), 1);
    assert!(
        back[0].iter().all(|&b| b == 5),
        "the child's own buffer came"
    );
    for buffer in back {
        assert!(
            pool.put(buffer).is_err(),
            "a child's memfd must not enter the pool"
        );
    }
    assert_eq!(pool.idle(), 0);
}

/// What a pool cannot promise, stated in `buffer_pool.rs` and the README: a child that kept a
/// hold of a buffer it was lent can still write to it when the pool reuses it. What holds
/// even then: the buffer cannot be frozen, so no frozen buffer can change (on Linux because
/// another process maps it writable, on Windows and macOS because it was lent at all).
#[tokio::test]
async fn a_child_that_keeps_a_lent_buffer_still_writes_to_it_and_it_cannot_be_frozen() {
    let mut child = child_in("keep-map");
    let pool = BufferPool::new();
    let len = 1 << 16;
    for buffer in lend(&mut child, pool.take(len).unwrap(), 7).await {
        pool.put(buffer).unwrap();
    }
    let mut reused = pool.take(len).unwrap();
    reused.as_mut_slice().unwrap().fill(1);
    child.post_message(&Ask::Make { len, byte: 9 }).unwrap();
    assert_eq!(
        next_message(&mut child).await.data::<String>().unwrap(),
        "scribbled"
    );
    assert!(
        reused.iter().all(|&b| b == 9),
        "the kept mapping writes into the reused buffer"
    );
    assert!(
        reused.freeze().is_err(),
        "a buffer another process maps writable must not be returned frozen"
    );
}

/// Linux only: elsewhere no seal binds the child's descriptor, so a buffer lent to a child
/// cannot be frozen at all (the test above).
#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_child_that_kept_only_the_descriptor_cannot_change_a_buffer_frozen_since() {
    let mut child = child_in("keep-fd");
    let pool = BufferPool::new();
    let len = 1 << 16;
    for buffer in lend(&mut child, pool.take(len).unwrap(), 7).await {
        pool.put(buffer).unwrap();
    }
    let mut reused = pool.take(len).unwrap();
    reused.as_mut_slice().unwrap().fill(1);
    let frozen = reused
        .freeze()
        .expect("no other writable mapping: the seal holds");
    child.post_message(&Ask::Make { len, byte: 9 }).unwrap();
    assert_eq!(
        next_message(&mut child).await.data::<String>().unwrap(),
        "refused"
    );
    assert!(
        frozen.iter().all(|&b| b == 1),
        "a frozen buffer never changes"
    );
}
