//! A misbehaving child ends only its own channel: every byte from a child is treated as
//! written by an adversary. A child that breaks the protocol gets `Event::Error` naming the
//! violation, is killed (SIGKILL), and a healthy child forked alongside keeps answering.
//!
//! The attacks are the modes of `children/hostile.rs`, which speaks the wire by hand.
//! Tests that measure this process's memory, descriptors or children run through
//! [`in_own_process`].

use std::time::{Duration, Instant};

use utility_process::unix::ExitStatusExt as _;
use utility_process::unix::Signal;
use utility_process::{fork, Error, Event, ForkOptions, Stdio, UtilityProcess, Violation};
use utility_process_tests::{
    all_events, describe_fds, fd_count, hostile_payloads, in_own_process, next_event, proc_status,
    zombie_children, Any, Ping,
};
use utility_process_wire::Error as WireError;

const HOSTILE: &str = env!("CARGO_BIN_EXE_hostile");
const ECHO: &str = env!("CARGO_BIN_EXE_echo");
const CRASH: &str = env!("CARGO_BIN_EXE_crash");

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn hostile(args: &[&str], options: ForkOptions) -> UtilityProcess {
    fork(
        HOSTILE,
        args,
        options.service_name(format!("hostile {}", args.join(" "))),
    )
    .expect("fork hostile")
}

/// A well-behaved echo child that runs beside a hostile one, to show it is unaffected.
struct Bystander {
    child: UtilityProcess,
    seq: u64,
}

impl Bystander {
    async fn start() -> Bystander {
        let mut child = fork(ECHO, [] as [&str; 0], ForkOptions::default()).expect("fork echo");
        match next_event(&mut child).await {
            Some(Event::Spawn) => {}
            other => panic!("expected the bystander's Spawn, got {other:?}"),
        }
        let mut bystander = Bystander { child, seq: 0 };
        bystander.answers().await;
        bystander
    }

    /// Posts a ping and checks that it comes back.
    async fn answers(&mut self) {
        self.seq += 1;
        let ping = Ping {
            seq: self.seq,
            body: "still fine?".into(),
        };
        self.child
            .post_message(&ping)
            .expect("post to the bystander");
        match next_event(&mut self.child).await {
            Some(Event::Message(message)) => assert_eq!(message.data::<Ping>().unwrap(), ping),
            other => panic!("the bystander did not answer: {other:?}"),
        }
    }
}

/// Runs the hostile child in `mode` beside a bystander, and checks the whole story: Spawn, a
/// protocol violation naming the child that `expected` accepts, Exit by SIGKILL; the child
/// gone; a post to it `Closed`; the bystander still answering.
async fn violation(args: &[&str], options: ForkOptions, expected: impl Fn(&Violation) -> bool) {
    let mut bystander = Bystander::start().await;
    let mut child = hostile(args, options);
    let pid = child.pid().expect("a pid");
    let events = all_events(&mut child).await;
    match events.as_slice() {
        [Event::Spawn, Event::Error(Error::ProtocolViolation {
            service_name,
            pid: reported,
            violation,
        }), Event::Exit(status)] => {
            assert!(
                expected(violation),
                "{args:?}: unexpected violation {violation:?}"
            );
            assert_eq!(*reported, pid, "{args:?}");
            assert_eq!(*service_name, format!("hostile {}", args.join(" ")));
            assert_eq!(status.signal(), Some(Signal::SIGKILL), "{args:?}: {status}");
        }
        other => panic!("{args:?}: expected Spawn, ProtocolViolation, Exit; got {other:?}"),
    }
    assert!(
        !utility_process_tests::is_alive(pid),
        "{args:?}: the child lives on"
    );
    assert!(
        matches!(child.post_message("anyone?"), Err(Error::Closed { .. })),
        "{args:?}: a post to the killed child does not fail with Closed"
    );
    bystander.answers().await;
}

fn frame_error(check: impl Fn(&WireError) -> bool) -> impl Fn(&Violation) -> bool {
    move |violation| matches!(violation, Violation::Frame(e) if check(e))
}

/// A `Violation::Descriptors` whose reason mentions `why` (a few distinctive words, so that the
/// test fails if another check than the one meant caught the attack).
fn descriptors(why: &'static str) -> impl Fn(&Violation) -> bool {
    move |violation| matches!(violation, Violation::Descriptors(reason) if reason.contains(why))
}

fn default() -> ForkOptions {
    ForkOptions::default()
}

// ---------------------------------------------------------------------------------------------
// Bad frames
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_length_prefix_of_0xffffffff_is_refused_before_anything_is_allocated() {
    violation(
        &["huge-length"],
        default(),
        frame_error(|e| {
            matches!(
                e,
                WireError::FrameTooLarge {
                    len: 0xffff_ffff,
                    ..
                }
            )
        }),
    )
    .await;
}

#[tokio::test]
async fn a_length_prefix_one_over_the_limit_is_a_violation() {
    let options = default().max_message_size(100_000);
    let max = 100_000 + 4096;
    violation(&["max-plus-one"], options, frame_error(|e| {
        matches!(e, WireError::FrameTooLarge { len, max: m } if *len == max as u64 + 1 && *m == max)
    }))
    .await;
}

#[tokio::test]
async fn a_length_prefix_of_zero_is_a_violation() {
    violation(
        &["zero-length"],
        default(),
        frame_error(|e| matches!(e, WireError::EmptyFrame)),
    )
    .await;
}

#[tokio::test]
async fn a_message_without_a_body_is_a_violation() {
    violation(
        &["empty-message"],
        default(),
        frame_error(|e| matches!(e, WireError::EmptyMessage)),
    )
    .await;
}

#[tokio::test]
async fn an_unknown_frame_kind_is_a_violation() {
    violation(
        &["unknown-kind"],
        default(),
        frame_error(|e| matches!(e, WireError::UnknownKind(0x7f))),
    )
    .await;
}

#[tokio::test]
async fn a_message_before_the_hello_is_a_violation() {
    violation(&["no-hello"], default(), |v| {
        matches!(v, Violation::MissingHello)
    })
    .await;
}

#[tokio::test]
async fn a_second_hello_is_a_violation() {
    violation(&["second-hello"], default(), |v| {
        matches!(v, Violation::DuplicateHello)
    })
    .await;
}

#[tokio::test]
async fn a_malformed_hello_is_a_violation() {
    for mode in ["short-hello", "bad-magic", "bad-flags"] {
        violation(
            &[mode],
            default(),
            frame_error(|e| matches!(e, WireError::BadHello(_))),
        )
        .await;
    }
}

#[tokio::test]
async fn a_hello_of_another_protocol_version_is_a_violation() {
    violation(
        &["bad-version"],
        default(),
        frame_error(|e| {
            matches!(
                e,
                WireError::UnsupportedVersion {
                    found: 2,
                    expected: 1
                }
            )
        }),
    )
    .await;
}

#[tokio::test]
async fn an_attachment_list_cut_short_is_a_violation() {
    violation(
        &["truncated-attachments"],
        default(),
        frame_error(|e| matches!(e, WireError::TruncatedAttachments { count: 5 })),
    )
    .await;
}

#[tokio::test]
async fn an_unknown_attachment_kind_is_a_violation() {
    violation(
        &["unknown-attachment"],
        default(),
        frame_error(|e| matches!(e, WireError::UnknownAttachment(0x09))),
    )
    .await;
}

#[tokio::test]
async fn more_attachments_than_the_kernel_can_pass_is_a_violation() {
    violation(
        &["too-many-attachments"],
        default(),
        frame_error(|e| matches!(e, WireError::TooManyAttachments { count: 254 })),
    )
    .await;
}

#[tokio::test]
async fn a_panic_report_that_is_not_messagepack_is_a_violation() {
    violation(
        &["bad-panic"],
        default(),
        frame_error(|e| matches!(e, WireError::BadPanicReport(_))),
    )
    .await;
}

#[tokio::test]
async fn a_panic_report_with_bytes_after_it_is_a_violation() {
    violation(
        &["panic-trailing-bytes"],
        default(),
        frame_error(|e| matches!(e, WireError::TrailingBytes { count: 1 })),
    )
    .await;
}

#[tokio::test]
async fn a_payload_over_the_message_limit_is_a_violation_even_when_the_frame_fits() {
    let options = default().max_message_size(1024);
    violation(
        &["payload-over-limit"],
        options,
        frame_error(|e| matches!(e, WireError::FrameTooLarge { max: 1024, .. })),
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// Bad descriptors
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn descriptors_on_a_message_without_attachments_are_a_violation_once_the_next_frame_comes() {
    let mut bystander = Bystander::start().await;
    let mut child = hostile(&["fds-without-attachment-then-message"], default());
    let events = all_events(&mut child).await;
    // Today the message that brought the descriptors is delivered first (without them); the
    // frame after it is refused. See the ignored test below for the stricter behaviour.
    let ending: Vec<&Event> = events
        .iter()
        .filter(|e| !matches!(e, Event::Spawn | Event::Message(_)))
        .collect();
    let messages = events
        .iter()
        .filter(|e| matches!(e, Event::Message(_)))
        .count();
    assert!(messages <= 1, "{events:?}");
    match ending.as_slice() {
        [Event::Error(Error::ProtocolViolation { violation, .. }), Event::Exit(status)] => {
            assert!(descriptors("no message claims")(violation), "{violation:?}");
            assert_eq!(status.signal(), Some(Signal::SIGKILL));
        }
        other => panic!("expected ProtocolViolation, Exit; got {other:?}"),
    }
    bystander.answers().await;
}

/// The protocol makes a batch of descriptors that no frame claims a violation; a message
/// without attachments whose first byte brings descriptors does not claim them. Today the
/// parent only notices when the next frame arrives, so a child that then stays silent has
/// its message delivered and the descriptors held.
#[tokio::test]
async fn descriptors_on_a_message_without_attachments_are_a_violation_at_once() {
    violation(
        &["fds-without-attachment"],
        default(),
        descriptors("no message claims"),
    )
    .await;
}

#[tokio::test]
async fn more_descriptors_than_the_message_declares_is_a_violation() {
    violation(
        &["more-fds-than-declared"],
        default(),
        descriptors("miscounted"),
    )
    .await;
}

#[tokio::test]
async fn fewer_descriptors_than_the_message_declares_is_a_violation() {
    violation(
        &["fewer-fds-than-declared"],
        default(),
        descriptors("miscounted"),
    )
    .await;
}

#[tokio::test]
async fn descriptors_that_come_after_a_messages_first_byte_are_a_violation() {
    violation(
        &["fds-on-a-later-byte"],
        default(),
        descriptors("miscounted"),
    )
    .await;
}

#[tokio::test]
async fn a_port_that_is_a_pipe_or_a_file_is_a_violation() {
    violation(&["port-is-a-pipe"], default(), descriptors("stream socket")).await;
    violation(&["port-is-a-file"], default(), descriptors("stream socket")).await;
}

#[tokio::test]
async fn a_port_that_is_a_datagram_or_seqpacket_socket_is_a_violation() {
    violation(
        &["port-is-a-datagram-socket"],
        default(),
        descriptors("stream socket"),
    )
    .await;
    violation(
        &["port-is-a-seqpacket-socket"],
        default(),
        descriptors("stream socket"),
    )
    .await;
}

#[tokio::test]
async fn a_flood_of_descriptors_that_no_frame_claims_is_a_violation() {
    violation(
        &["fd-flood"],
        default(),
        descriptors("more descriptors arrived"),
    )
    .await;
}

/// A port a child sent is a channel to whoever holds its other end, not to the child: bad
/// frames on it close that port (and are logged on stderr); the parent port and the child
/// carry on.
#[tokio::test]
async fn a_port_from_a_child_that_breaks_the_protocol_or_leads_nowhere_reads_as_closed_and_says_why(
) {
    for mode in ["port-then-garbage", "port-is-a-listening-socket"] {
        let mut child = hostile(&[mode], default());
        match next_event(&mut child).await {
            Some(Event::Spawn) => {}
            other => panic!("{mode}: expected Spawn, got {other:?}"),
        }
        let port = match next_event(&mut child).await {
            Some(Event::Message(mut message)) => {
                let mut ports = message.take_ports();
                assert_eq!(ports.len(), 1, "{mode}");
                ports.remove(0)
            }
            other => panic!("{mode}: expected the message with the port, got {other:?}"),
        };
        let received = tokio::time::timeout(utility_process_tests::EVENT_TIMEOUT, port.recv())
            .await
            .unwrap_or_else(|_| panic!("{mode}: recv on the port hangs"));
        assert!(received.is_none(), "{mode}: {received:?}");
        // Why it closed is the owner's to read, not printed.
        match (mode, port.violation()) {
            ("port-then-garbage", Some(Violation::Frame(WireError::FrameTooLarge { .. }))) => {}
            ("port-is-a-listening-socket", Some(Violation::Read(_))) => {}
            (_, other) => panic!("{mode}: violation() is {other:?}"),
        }
        assert!(
            matches!(port.post_message("anyone?"), Err(Error::Closed { .. })),
            "{mode}: a post on the closed port does not fail with Closed"
        );
        child.post_message("ping").unwrap();
        match next_event(&mut child).await {
            Some(Event::Message(message)) => {
                assert_eq!(message.data::<&str>().unwrap(), "pong", "{mode}")
            }
            other => panic!("{mode}: expected \"pong\", got {other:?}"),
        }
        assert!(child.kill());
        match all_events(&mut child).await.as_slice() {
            [Event::Exit(status)] => assert_eq!(status.signal(), Some(Signal::SIGTERM)),
            other => panic!("{mode}: expected Exit alone (no error); got {other:?}"),
        }
    }
}

#[test]
fn descriptors_the_parent_has_no_room_for_are_a_violation_not_a_leak() {
    in_own_process(
        module_path!(),
        "descriptors_the_parent_has_no_room_for_are_a_violation_not_a_leak",
        || async {
            let mut bystander = Bystander::start().await;
            // Warm up (the library's thread, the runtime), then leave this process room for
            // only a few more descriptors: the kernel installs what fits of the child's 200,
            // and flags the rest as lost (MSG_CTRUNC).
            let mut warm_up = hostile(&["sleep"], default());
            warm_up.kill();
            all_events(&mut warm_up).await;
            let baseline = fd_count();
            let mut child = hostile(&["many-fds", "200"], default());
            match next_event(&mut child).await {
                Some(Event::Spawn) => {}
                other => panic!("expected Spawn, got {other:?}"),
            }
            set_fd_limit(baseline as u64 + 40);
            let events = all_events(&mut child).await;
            set_fd_limit(u64::MAX);
            match events.as_slice() {
                [Event::Error(Error::ProtocolViolation {
                    violation: Violation::Descriptors(why),
                    ..
                }), Event::Exit(status)] => {
                    assert!(why.contains("MSG_CTRUNC"), "{why}");
                    assert_eq!(status.signal(), Some(Signal::SIGKILL));
                }
                other => panic!("expected ProtocolViolation, Exit; got {other:?}"),
            }
            // The descriptors that were installed are closed again, as are the child's own.
            drop(child);
            wait_for_fds(baseline).await;
            bystander.answers().await;
        },
    );
}

/// Sets this process's soft descriptor limit (`u64::MAX`: back to the hard limit).
fn set_fd_limit(soft: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into `limit`.
    let got = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    assert_eq!(got, 0, "getrlimit");
    limit.rlim_cur = soft.min(limit.rlim_max);
    // SAFETY: setrlimit reads one valid rlimit.
    let set = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
    assert_eq!(set, 0, "setrlimit");
}

async fn wait_for_fds(baseline: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while fd_count() > baseline && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        fd_count() <= baseline,
        "descriptors not back to the baseline of {baseline}:\n{}",
        describe_fds()
    );
}

/// A port that arrives with a *prefix* (messages its previous holder had read) is read to the
/// prefix's end when the parent hands it on. A hostile child can make that end never come:
/// handing the port on must still finish, with the parent's memory bounded. Today
/// `Endpoint::hand_over` (transport.rs) reads the prefix for as long as bytes keep coming,
/// into an unbounded buffer, on the posting thread: the post never returns and memory grows
/// at the child's pace.
#[test]
fn handing_on_a_port_whose_prefix_never_ends_finishes_with_bounded_memory() {
    in_own_process(
        module_path!(),
        "handing_on_a_port_whose_prefix_never_ends_finishes_with_bounded_memory",
        || async {
            let mut child = hostile(&["endless-prefix"], default());
            match next_event(&mut child).await {
                Some(Event::Spawn) => {}
                other => panic!("expected Spawn, got {other:?}"),
            }
            let ports = match next_event(&mut child).await {
                Some(Event::Message(mut message)) => message.take_ports(),
                other => panic!("expected the message with the port, got {other:?}"),
            };
            assert_eq!(ports.len(), 1);
            let before = proc_status("VmRSS");
            let channel = utility_process::MessageChannel::new().unwrap();
            let (done_tx, done_rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let posted = channel.port1.post_message_with_ports(&"onward", ports);
                let _ = done_tx.send(posted.map_err(|e| e.to_string()));
            });
            let posted = done_rx.recv_timeout(utility_process_tests::EVENT_TIMEOUT);
            let grown = proc_status("VmRSS").saturating_sub(before);
            assert!(
                posted.is_ok(),
                "handing the port on did not finish within {:?} (resident memory grew by {grown} KiB)",
                utility_process_tests::EVENT_TIMEOUT
            );
            assert!(grown < 64 * 1024, "resident memory grew by {grown} KiB");
        },
    );
}

// ---------------------------------------------------------------------------------------------
// Hostile payloads: the user's decode error, not a violation
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn hostile_messagepack_payloads_fail_to_decode_and_the_port_stays_usable() {
    let mut child = hostile(&["bad-payloads"], default());
    match next_event(&mut child).await {
        Some(Event::Spawn) => {}
        other => panic!("expected Spawn, got {other:?}"),
    }
    for (what, sent) in hostile_payloads() {
        let message = match next_event(&mut child).await {
            Some(Event::Message(message)) => message,
            other => panic!("{what}: expected the message, got {other:?}"),
        };
        assert_eq!(
            message.bytes(),
            sent.as_slice(),
            "{what}: the bytes pass through as sent"
        );
        // Decoded on this test's thread (a 2 MiB stack): a million levels would overflow it
        // if the depth were not limited.
        let decoded = match what {
            "wrong type" => message.data::<u64>().map(Any::UInt),
            // `deserialize_any` hands a str that is not UTF-8 over as bytes; a String refuses it.
            "bad UTF-8" => message.data::<String>().map(Any::Str),
            _ => message.data::<Any>(),
        };
        match decoded {
            Err(Error::Decode(_)) => {}
            other => panic!("{what}: expected Err(Decode), got {other:?}"),
        }
    }
    match next_event(&mut child).await {
        Some(Event::Message(message)) => {
            assert_eq!(message.data::<String>().unwrap(), "still here")
        }
        other => panic!("expected \"still here\", got {other:?}"),
    }
    // Both directions still work.
    child.post_message("ping").unwrap();
    match next_event(&mut child).await {
        Some(Event::Message(message)) => assert_eq!(message.data::<&str>().unwrap(), "pong"),
        other => panic!("expected \"pong\", got {other:?}"),
    }
    assert!(child.kill());
    match all_events(&mut child).await.as_slice() {
        [Event::Exit(status)] => assert_eq!(status.signal(), Some(Signal::SIGTERM)),
        other => panic!("expected Exit alone (no error); got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// A child that stops half-way
// ---------------------------------------------------------------------------------------------

/// The child is gone before the parent reads its garbage: the violation is still reported,
/// and the exit is the child's own (or the parent's SIGKILL, if that landed first).
#[tokio::test]
async fn garbage_from_a_child_that_has_already_exited_is_still_a_violation() {
    let mut bystander = Bystander::start().await;
    let mut child = hostile(&["garbage-then-exit"], default());
    match all_events(&mut child).await.as_slice() {
        [Event::Spawn, Event::Error(Error::ProtocolViolation {
            violation:
                Violation::Frame(WireError::FrameTooLarge {
                    len: 0xffff_ffff, ..
                }),
            ..
        }), Event::Exit(status)] => assert!(
            status.code() == Some(0) || status.signal() == Some(Signal::SIGKILL),
            "{status}"
        ),
        other => panic!("expected Spawn, ProtocolViolation, Exit; got {other:?}"),
    }
    bystander.answers().await;
}

#[tokio::test]
async fn a_frame_cut_short_by_the_childs_exit_is_never_delivered() {
    let mut bystander = Bystander::start().await;
    let mut child = hostile(&["truncated-then-exit"], default());
    match all_events(&mut child).await.as_slice() {
        [Event::Spawn, Event::Exit(status)] => assert_eq!(status.code(), Some(0)),
        other => panic!("expected Spawn, Exit (no message); got {other:?}"),
    }
    bystander.answers().await;
}

/// A living child that closes its end of the port in the middle of a frame has sent a
/// truncated frame: once its kill grace period has passed and it still lives, that is
/// [`Violation::CutShort`] (a child that dies mid-send is not blamed).
#[tokio::test]
async fn a_frame_cut_short_by_end_of_file_from_a_living_child_is_a_violation() {
    violation(&["truncated-then-shutdown"], default(), |v| {
        matches!(v, Violation::CutShort)
    })
    .await;
}

#[tokio::test]
async fn a_child_dying_in_the_middle_of_a_large_message_delivers_none_of_it_and_nothing_hangs() {
    let mut bystander = Bystander::start().await;
    let mut child = hostile(&["dies-mid-large-message"], default());
    // Work the parent had queued for it: it can never be delivered.
    child.post_bytes(&vec![7u8; 1 << 20]).unwrap();
    match all_events(&mut child).await.as_slice() {
        [Event::Spawn, Event::Error(Error::Crashed {
            status: crashed, ..
        }), Event::Exit(status)] => {
            assert_eq!(crashed.signal(), Some(Signal::SIGKILL));
            assert_eq!(status.signal(), Some(Signal::SIGKILL));
        }
        other => panic!("expected Spawn, Crashed, Exit (no message); got {other:?}"),
    }
    assert!(matches!(
        child.post_bytes(b"more"),
        Err(Error::Closed { .. })
    ));
    assert!(matches!(
        child.send(&"more").await,
        Err(Error::Closed { .. })
    ));
    bystander.answers().await;
}

// ---------------------------------------------------------------------------------------------
// Memory stays bounded
// ---------------------------------------------------------------------------------------------

#[test]
fn huge_length_prefixes_raise_the_parents_peak_memory_by_nothing_like_their_size() {
    in_own_process(
        module_path!(),
        "huge_length_prefixes_raise_the_parents_peak_memory_by_nothing_like_their_size",
        || async {
            let mut warm_up = Bystander::start().await;
            warm_up.answers().await;
            let before = proc_status("VmHWM");
            for _ in 0..5 {
                for mode in ["huge-length", "max-plus-one"] {
                    let mut child = hostile(&[mode], default());
                    let events = all_events(&mut child).await;
                    assert!(
                        matches!(
                            events.as_slice(),
                            [
                                Event::Spawn,
                                Event::Error(Error::ProtocolViolation { .. }),
                                Event::Exit(_)
                            ]
                        ),
                        "{mode}: {events:?}"
                    );
                }
            }
            // The announced frames were 4 GiB and 64 MiB: a receiver that made room for either
            // before checking would have touched far more than this.
            let grown = proc_status("VmHWM").saturating_sub(before);
            assert!(
                grown < 16 * 1024,
                "peak resident memory grew by {grown} KiB"
            );
        },
    );
}

#[test]
fn a_child_flooding_the_parent_is_held_back_by_the_socket_not_buffered() {
    in_own_process(
        module_path!(),
        "a_child_flooding_the_parent_is_held_back_by_the_socket_not_buffered",
        || async {
            let mut child = hostile(&["flood"], default());
            let pid = child.pid().unwrap();
            match next_event(&mut child).await {
                Some(Event::Spawn) => {}
                other => panic!("expected Spawn, got {other:?}"),
            }
            // Read a little, so that the flood is under way.
            let mut expected = 0u64;
            let take = |child_events: Option<Event>, expected: &mut u64| match child_events {
                Some(Event::Message(message)) => {
                    let seq = u64::from_le_bytes(message.bytes()[..8].try_into().unwrap());
                    assert_eq!(seq, *expected, "messages lost or reordered");
                    *expected += 1;
                }
                other => panic!("expected a message, got {other:?}"),
            };
            for _ in 0..100 {
                take(next_event(&mut child).await, &mut expected);
            }
            let before = proc_status("VmRSS");
            // Now the parent reads nothing. The child writes as fast as the socket takes it:
            // it soon blocks in its write, and nothing piles up in the parent.
            let blocked = || {
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
                let state = stat
                    .rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().next())
                    .map(str::to_owned);
                state.as_deref() == Some("S")
            };
            let deadline = Instant::now() + utility_process_tests::EVENT_TIMEOUT;
            let mut seen = 0;
            // Seen asleep ten times in a row, 50 ms apart: blocked, not between two writes.
            while seen < 10 {
                assert!(
                    Instant::now() < deadline,
                    "the flooding child never blocked"
                );
                seen = if blocked() { seen + 1 } else { 0 };
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let grown = proc_status("VmRSS").saturating_sub(before);
            assert!(
                grown < 8 * 1024,
                "resident memory grew by {grown} KiB while not reading"
            );
            // And reading again finds every message, in order.
            for _ in 0..1000 {
                take(next_event(&mut child).await, &mut expected);
            }
            assert!(child.kill());
            let mut tail = Vec::new();
            while let Some(event) = next_event(&mut child).await {
                match event {
                    Event::Message(_) => {}
                    other => tail.push(other),
                }
            }
            match tail.as_slice() {
                [Event::Exit(status)] => assert_eq!(status.signal(), Some(Signal::SIGTERM)),
                other => panic!("expected Exit alone; got {other:?}"),
            }
        },
    );
}

#[tokio::test]
async fn a_child_posting_to_a_parent_that_does_not_read_gets_queue_full_and_send_waits() {
    let options = ForkOptions::default().stdout(Stdio::Pipe);
    let mut child = fork(HOSTILE, ["post-until-full"], options).expect("fork");
    let stdout = child.take_stdout().expect("a stdout pipe");
    // The parent reads nothing from the port until the child says its queue is full.
    let mut line = String::new();
    let mut stdout = tokio::io::BufReader::new(stdout);
    tokio::time::timeout(
        utility_process_tests::EVENT_TIMEOUT,
        tokio::io::AsyncBufReadExt::read_line(&mut stdout, &mut line),
    )
    .await
    .expect("the child fills its queue")
    .expect("read the child's stdout");
    let fields: Vec<usize> = line
        .split_whitespace()
        .skip(1)
        .map(|n| n.parse().unwrap())
        .collect();
    let [posted, queued, limit] = fields[..] else {
        panic!("expected `full COUNT QUEUED LIMIT`, got {line:?}");
    };
    assert!(queued >= limit && queued < limit + 2 * 65_536, "{line}");
    // Then every message comes, in order: the posted ones, the 16 sent after waiting, "done".
    match next_event(&mut child).await {
        Some(Event::Spawn) => {}
        other => panic!("expected Spawn, got {other:?}"),
    }
    for seq in 0..posted as u64 + 16 {
        match next_event(&mut child).await {
            Some(Event::Message(message)) => {
                assert_eq!(message.bytes()[..8], seq.to_le_bytes(), "message {seq}");
                assert_eq!(message.len(), 65_536);
            }
            other => panic!("expected message {seq} of {posted} + 16, got {other:?}"),
        }
    }
    match next_event(&mut child).await {
        Some(Event::Message(message)) => assert_eq!(message.data::<&str>().unwrap(), "done"),
        other => panic!("expected \"done\", got {other:?}"),
    }
    assert!(child.kill());
    match all_events(&mut child).await.as_slice() {
        [Event::Exit(status)] => assert_eq!(status.signal(), Some(Signal::SIGTERM)),
        other => panic!("expected Exit; got {other:?}"),
    }
}

#[tokio::test]
async fn posting_on_a_port_whose_peer_never_reads_fails_with_queue_full_and_loses_nothing() {
    let channel = utility_process::MessageChannel::new().unwrap();
    let (sender, receiver) = (channel.port1, channel.port2);
    let chunk = vec![0u8; 64 * 1024];
    let mut posted = 0u64;
    let (queued, limit) = loop {
        let mut message = chunk.clone();
        message[..8].copy_from_slice(&posted.to_le_bytes());
        match sender.post_bytes(&message) {
            Ok(()) => posted += 1,
            Err(Error::QueueFull { queued, limit, .. }) => break (queued, limit),
            Err(other) => panic!("after {posted} posts: expected QueueFull, got {other:?}"),
        }
        assert!(
            posted < 1 << 20,
            "no QueueFull after {posted} posts of 64 KiB"
        );
    };
    assert!(
        queued >= limit && queued < limit + 2 * chunk.len(),
        "{queued} of {limit}"
    );
    // Refused again while nobody reads, however small the message.
    assert!(matches!(
        sender.post_bytes(b"x"),
        Err(Error::QueueFull { .. })
    ));
    receiver.start();
    for seq in 0..posted {
        let message = tokio::time::timeout(utility_process_tests::EVENT_TIMEOUT, receiver.recv())
            .await
            .expect("a message within the timeout")
            .expect("the port is open");
        assert_eq!(message.bytes()[..8], seq.to_le_bytes(), "message {seq}");
    }
}

#[tokio::test]
async fn a_child_whose_stdout_nobody_reads_blocks_itself_not_the_parent() {
    let options = ForkOptions::default().stdout(Stdio::Pipe);
    let mut child = fork(HOSTILE, ["stdout-flood"], options).expect("fork");
    let stdout = child.take_stdout().expect("a stdout pipe");
    match next_event(&mut child).await {
        Some(Event::Spawn) => {}
        other => panic!("expected Spawn, got {other:?}"),
    }
    // The pipe fills at once and the child's writer blocks; its port keeps answering.
    for seq in 0..200u64 {
        child.post_bytes(&seq.to_le_bytes()).unwrap();
        match next_event(&mut child).await {
            Some(Event::Message(message)) => assert_eq!(message.bytes(), seq.to_le_bytes()),
            other => panic!("expected the echo of {seq}, got {other:?}"),
        }
    }
    // Closing our end makes the child's writes fail (EPIPE): it is not stuck for ever.
    drop(stdout);
    child.post_bytes(b"after").unwrap();
    match next_event(&mut child).await {
        Some(Event::Message(message)) => assert_eq!(message.bytes(), b"after"),
        other => panic!("expected the echo, got {other:?}"),
    }
    assert!(child.kill());
    match all_events(&mut child).await.as_slice() {
        [Event::Exit(status)] => assert_eq!(status.signal(), Some(Signal::SIGTERM)),
        other => panic!("expected Exit; got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Lifecycle under stress
// ---------------------------------------------------------------------------------------------

async fn echo_round_trip(child: &mut UtilityProcess, seq: u64) {
    child.post_bytes(&seq.to_le_bytes()).expect("post");
    match next_event(child).await {
        Some(Event::Message(message)) => assert_eq!(message.bytes(), seq.to_le_bytes()),
        other => panic!("expected echo {seq}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_storm_loses_no_message_and_raises_no_error() {
    const STOPS: u32 = 200;
    let mut child = fork(ECHO, [] as [&str; 0], ForkOptions::default()).expect("fork echo");
    let pid = child.pid().unwrap() as libc::pid_t;
    match next_event(&mut child).await {
        Some(Event::Spawn) => {}
        other => panic!("expected Spawn, got {other:?}"),
    }
    let storm = std::thread::spawn(move || {
        for _ in 0..STOPS {
            // SAFETY: kill only sends signals. `pid` is our child, alive until the test kills
            // it after this thread has ended, so the pid cannot have been reused.
            unsafe {
                libc::kill(pid, libc::SIGSTOP);
                libc::kill(pid, libc::SIGCHLD);
                libc::kill(libc::getpid(), libc::SIGCHLD);
            }
            std::thread::sleep(Duration::from_micros(300));
            // SAFETY: as above.
            unsafe { libc::kill(pid, libc::SIGCONT) };
            std::thread::sleep(Duration::from_micros(300));
        }
    });
    // Round trips all through the storm, and some after it.
    let mut seq = 0u64;
    while !storm.is_finished() {
        seq += 1;
        echo_round_trip(&mut child, seq).await;
    }
    storm.join().unwrap();
    for _ in 0..100 {
        seq += 1;
        echo_round_trip(&mut child, seq).await;
    }
    assert!(child.kill());
    match all_events(&mut child).await.as_slice() {
        [Event::Exit(status)] => assert_eq!(status.signal(), Some(Signal::SIGTERM), "{status}"),
        other => panic!("expected Exit alone (no error); got {other:?}"),
    }
}

#[test]
fn a_thousand_fork_kill_cycles_leave_no_zombie_descriptor_or_thread() {
    in_own_process(
        module_path!(),
        "a_thousand_fork_kill_cycles_leave_no_zombie_descriptor_or_thread",
        || async {
            let cycle = |n: usize| async move {
                let children: Vec<UtilityProcess> = (0..n)
                    .map(|_| {
                        fork(
                            CRASH,
                            ["sleep"],
                            ForkOptions::default().stderr(Stdio::Ignore),
                        )
                        .expect("fork")
                    })
                    .collect();
                for mut child in children {
                    assert!(child.kill() || child.pid().is_none());
                    let events = all_events(&mut child).await;
                    match events.as_slice() {
                        [Event::Spawn, Event::Exit(status)] => {
                            assert_eq!(status.signal(), Some(Signal::SIGTERM), "{status}")
                        }
                        other => panic!("expected Spawn, Exit; got {other:?}"),
                    }
                }
            };
            cycle(10).await;
            // The library's thread lets go of a child's pidfd just after publishing its exit:
            // the baseline is taken once none is left.
            let deadline = Instant::now() + Duration::from_secs(10);
            while describe_fds().contains("pidfd") && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let fds = fd_count();
            let threads = proc_status("Threads");
            for _ in 0..100 {
                cycle(10).await;
            }
            assert!(
                zombie_children().is_empty(),
                "zombies: {:?}",
                zombie_children()
            );
            wait_for_fds(fds).await;
            assert_eq!(fd_count(), fds, "{}", describe_fds());
            assert!(
                proc_status("Threads") <= threads,
                "threads not back to the baseline of {threads}: {}",
                proc_status("Threads")
            );
        },
    );
}

// ---------------------------------------------------------------------------------------------
// The report pipe of a child under limits (issue 11, item 2)
// ---------------------------------------------------------------------------------------------

/// Limits alone give a child its report pipe (descriptor 4).
fn limited() -> ForkOptions {
    ForkOptions::default().limits(utility_process::Limits::new().cpu_time(Duration::from_secs(600)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_that_floods_its_report_pipe_is_killed_while_forks_and_other_children_go_on() {
    let mut bystander = Bystander::start().await;
    let mut child = hostile(
        &["flood-reports"],
        ForkOptions::default().limits(utility_process::Limits::new().memory(1 << 30)),
    );
    // While it floods, the library's thread still forks, reaps and reports for others.
    for _ in 0..5 {
        let started = Instant::now();
        let mut other = fork(CRASH, ["exit", "3"], ForkOptions::default()).expect("fork");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "fork took {:?}",
            started.elapsed()
        );
        let events = all_events(&mut other).await;
        assert!(
            matches!(events.last(), Some(Event::Exit(s)) if s.code() == Some(3)),
            "{events:?}"
        );
        bystander.answers().await;
    }
    let events = all_events(&mut child).await;
    match events.as_slice() {
        [Event::Spawn, Event::Error(Error::ProtocolViolation {
            violation: Violation::Reports(why),
            ..
        }), Event::Exit(status)] => {
            assert!(why.contains("flooded"), "{why}");
            assert_eq!(status.signal(), Some(Signal::SIGKILL), "{status}");
        }
        other => panic!("expected Spawn, ProtocolViolation(Reports), Exit; got {other:?}"),
    }
}

#[tokio::test]
async fn a_child_that_reports_what_its_confinement_cannot_produce_is_a_protocol_violation() {
    // No sandbox, so no call can have been denied.
    violation(
        &["impossible-report"],
        limited(),
        |v| matches!(v, Violation::Reports(why) if why.contains("cannot produce")),
    )
    .await;
}

#[tokio::test]
async fn a_child_that_garbles_its_report_pipe_is_a_protocol_violation() {
    violation(
        &["garble-reports"],
        limited(),
        |v| matches!(v, Violation::Reports(why) if why.contains("does not define")),
    )
    .await;
}
