//! Frames built with `FrameEncoder` from fuzz-chosen parameters decode back identically.
//!
//! The input picks a limit, a list of frames to append to one send buffer (raw MESSAGEs,
//! MESSAGEs whose payload is an encoded value, MESSAGEs whose payload fails to encode, PANIC
//! reports and HELLOs) and the sizes of the chunks in which the receiver gets the buffer.
//! MESSAGEs carry attachments of both kinds (`Port`, one descriptor, and `PortWithPrefix`,
//! two) on fuzz-chosen channel ids: a few listed one by one, or many around the
//! `MAX_ATTACHMENTS` descriptors limit.
//! Invariants:
//! - the limit in force is the one asked for, raised to `MIN_FRAME_LEN`; a HELLO is always
//!   built;
//! - the encoder builds exactly the frames that fit the limit and carry at most
//!   `MAX_ATTACHMENTS` descriptors, and refuses the others with the right error (the
//!   descriptor count, a `PortWithPrefix` counting two) and the buffer exactly as it was;
//! - a built MESSAGE is byte for byte the one written by hand from `docs/PROTOCOL.md`; one
//!   refused for its size decodes, written by hand, under no limit; one refused for its
//!   descriptors is refused by the decoder too, with the same count;
//! - the receiver, decoding from the front of a buffer that grows chunk by chunk, gets every
//!   built frame back, equal (attachment kinds and channel ids included) and in order, with
//!   nothing left over, under the same limit;
//! - a value payload decodes back to the value.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use serde::{Deserialize, Serialize, Serializer};
use utility_process_wire::{
    decode_value, encode_value, Attachment, Decoded, Error, Frame, FrameDecoder, FrameEncoder,
    Hello, PanicReport, ATTACHMENT_LEN, DEFAULT_MAX_FRAME_LEN, MAX_ATTACHMENTS, MIN_FRAME_LEN,
};

#[derive(Debug, Clone, PartialEq, Arbitrary, Serialize, Deserialize)]
struct Small {
    name: String,
    values: Vec<u32>,
    flag: Option<u8>,
    tags: Vec<(String, i64)>,
}

#[derive(Debug, Arbitrary)]
enum Limit {
    Small(u16),
    Default,
    Max,
    Any(u32),
}

/// The attachments of one MESSAGE.
#[derive(Debug, Arbitrary)]
enum Attachments {
    /// A few, each chosen: `true` for a `PortWithPrefix`, and its channel id.
    Listed(Vec<(bool, u64)>),
    /// 120 to 259 (`count % 140 + 120`) attachments, the first `prefixed` of them (at most
    /// all) `PortWithPrefix`, on channels `channel`, `channel + 1`, ...: from 120 to 518
    /// descriptors, across the `MAX_ATTACHMENTS` limit.
    Many {
        count: u8,
        prefixed: u16,
        channel: u64,
    },
}

impl Attachments {
    fn build(&self) -> Vec<Attachment> {
        match self {
            Attachments::Listed(list) => list
                .iter()
                .map(|&(prefixed, channel)| attachment(prefixed, channel))
                .collect(),
            &Attachments::Many {
                count,
                prefixed,
                channel,
            } => {
                let count = 120 + usize::from(count) % 140;
                (0..count)
                    .map(|i| attachment(i < usize::from(prefixed), channel.wrapping_add(i as u64)))
                    .collect()
            }
        }
    }
}

fn attachment(prefixed: bool, channel: u64) -> Attachment {
    if prefixed {
        Attachment::PortWithPrefix { channel }
    } else {
        Attachment::Port { channel }
    }
}

#[derive(Debug, Arbitrary)]
enum Op {
    Hello(u32),
    Raw {
        attachments: Attachments,
        payload: Vec<u8>,
    },
    Value {
        attachments: Attachments,
        value: Small,
    },
    Failing {
        attachments: Attachments,
        written: u8,
    },
    Panic {
        message: String,
        file: String,
        line: u32,
        column: u32,
        thread: Option<String>,
    },
}

#[derive(Debug, Arbitrary)]
struct Input {
    limit: Limit,
    ops: Vec<Op>,
    chunks: Vec<u8>,
}

/// What the receiver must get back.
#[derive(Debug, PartialEq)]
enum Expected {
    Hello(Hello),
    Message {
        attachments: Vec<Attachment>,
        payload: Vec<u8>,
        value: Option<Small>,
    },
    Panic(PanicReport),
}

/// A `Serialize` that writes part of a sequence and then fails.
struct FailsAfter(usize);

impl Serialize for FailsAfter {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{Error as _, SerializeSeq};
        let mut seq = serializer.serialize_seq(Some(self.0 + 1))?;
        for i in 0..self.0 {
            seq.serialize_element(&i)?;
        }
        Err(S::Error::custom("this value cannot be encoded"))
    }
}

/// The descriptors that travel with `attachments`: one per `Port`, two per `PortWithPrefix`.
fn fds(attachments: &[Attachment]) -> usize {
    attachments
        .iter()
        .map(|a| match a {
            Attachment::Port { .. } => 1,
            Attachment::PortWithPrefix { .. } => 2,
            other => unreachable!("a new kind of attachment: {other:?}"),
        })
        .sum()
}

/// A MESSAGE's length field: kind, count, 9 bytes per attachment, payload.
fn message_len(attachments: &[Attachment], payload: usize) -> u64 {
    (2 + ATTACHMENT_LEN * attachments.len() + payload) as u64
}

/// A MESSAGE frame written by hand from `docs/PROTOCOL.md`, independently of the encoder
/// (the kind byte `0x01` or `0x02` and the channel id as a little-endian `u64` for each
/// attachment), or `None` when there are too many attachments for the count byte.
fn message_bytes(attachments: &[Attachment], payload: &[u8]) -> Option<Vec<u8>> {
    let count = u8::try_from(attachments.len()).ok()?;
    let len = message_len(attachments, payload.len());
    let mut out = u32::try_from(len).ok()?.to_le_bytes().to_vec();
    out.push(0x02);
    out.push(count);
    for attachment in attachments {
        let (kind, channel) = match *attachment {
            Attachment::Port { channel } => (0x01, channel),
            Attachment::PortWithPrefix { channel } => (0x02, channel),
            other => unreachable!("a new kind of attachment: {other:?}"),
        };
        out.push(kind);
        out.extend_from_slice(&channel.to_le_bytes());
    }
    out.extend_from_slice(payload);
    Some(out)
}

/// Holds a MESSAGE against the one written by hand: the encoder's bytes (`built`) when it
/// built the frame; otherwise the decoder's verdict, under no size limit, on the hand-written
/// frame: refused for more than `MAX_ATTACHMENTS` descriptors, else decoded to the same
/// attachments and payload.
fn check_against_hand_written(attachments: &[Attachment], payload: &[u8], built: Option<&[u8]>) {
    let Some(hand) = message_bytes(attachments, payload) else {
        assert!(
            built.is_none(),
            "a MESSAGE of {} attachments",
            attachments.len()
        );
        return;
    };
    if let Some(built) = built {
        assert_eq!(built, &hand[..], "the encoder writes the documented bytes");
        return;
    }
    let descriptors = fds(attachments);
    match FrameDecoder::new(u32::MAX).decode(&hand) {
        Err(Error::TooManyAttachments { count }) => {
            assert!(descriptors > MAX_ATTACHMENTS);
            assert_eq!(count, descriptors);
        }
        Ok(Decoded::Frame {
            frame:
                Frame::Message {
                    attachments: got,
                    payload: got_payload,
                },
            consumed,
        }) => {
            assert!(
                descriptors <= MAX_ATTACHMENTS,
                "{descriptors} descriptors accepted"
            );
            assert_eq!(consumed, hand.len());
            assert_eq!(got.iter().collect::<Vec<_>>(), attachments);
            assert_eq!(got.fd_count(), descriptors);
            assert_eq!(got_payload, payload);
        }
        other => panic!("a hand-written MESSAGE decodes to {other:?}"),
    }
}

/// Checks the outcome of one MESSAGE, returning whether it was built.
fn check_message(
    result: Result<(), Error>,
    out: &[u8],
    before: &[u8],
    attachments: &[Attachment],
    len: u64,
    limit: u32,
) -> bool {
    let fds = fds(attachments);
    if fds > MAX_ATTACHMENTS {
        assert!(
            matches!(result, Err(Error::TooManyAttachments { count }) if count == fds),
            "{result:?}"
        );
        assert_eq!(out, before);
        false
    } else if len > u64::from(limit) {
        assert!(
            matches!(result, Err(Error::FrameTooLarge { len: l, max }) if l == len && max == limit),
            "{result:?}"
        );
        assert_eq!(out, before);
        false
    } else {
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(&out[..before.len()], before);
        assert_eq!(out.len() as u64, before.len() as u64 + 4 + len);
        true
    }
}

fuzz_target!(|input: Input| {
    let asked = match input.limit {
        Limit::Small(l) => u32::from(l),
        Limit::Default => DEFAULT_MAX_FRAME_LEN,
        Limit::Max => u32::MAX,
        Limit::Any(l) => l,
    };
    let encoder = FrameEncoder::new(asked);
    let limit = asked.max(MIN_FRAME_LEN);
    assert_eq!(encoder.max_frame_len(), limit);
    let mut out = Vec::new();
    let mut expected = Vec::new();

    for op in input.ops {
        let before = out.clone();
        match op {
            Op::Hello(announced) => {
                // 13 bytes: within any limit, MIN_FRAME_LEN being the smallest.
                let hello = Hello::new(announced);
                encoder.hello(&mut out, &hello);
                assert_eq!(out.len(), before.len() + 17);
                expected.push(Expected::Hello(hello));
            }
            Op::Raw {
                attachments,
                payload,
            } => {
                let kinds = attachments.build();
                let result = encoder.message_with_attachments(&mut out, &kinds, |p| {
                    p.extend_from_slice(&payload);
                    Ok(())
                });
                let len = message_len(&kinds, payload.len());
                let built = check_message(result, &out, &before, &kinds, len, limit);
                check_against_hand_written(&kinds, &payload, built.then(|| &out[before.len()..]));
                if built {
                    expected.push(Expected::Message {
                        attachments: kinds,
                        payload,
                        value: None,
                    });
                }
            }
            Op::Value { attachments, value } => {
                let kinds = attachments.build();
                let mut payload = Vec::new();
                encode_value(&mut payload, &value).expect("a plain struct encodes");
                let result =
                    encoder.message_with_attachments(&mut out, &kinds, |p| encode_value(p, &value));
                let len = message_len(&kinds, payload.len());
                let built = check_message(result, &out, &before, &kinds, len, limit);
                check_against_hand_written(&kinds, &payload, built.then(|| &out[before.len()..]));
                if built {
                    expected.push(Expected::Message {
                        attachments: kinds,
                        payload,
                        value: Some(value),
                    });
                }
            }
            Op::Failing {
                attachments,
                written,
            } => {
                let kinds = attachments.build();
                let result = encoder.message_with_attachments(&mut out, &kinds, |p| {
                    encode_value(p, &FailsAfter(usize::from(written)))
                });
                let fds = fds(&kinds);
                if fds > MAX_ATTACHMENTS {
                    assert!(
                        matches!(result, Err(Error::TooManyAttachments { count }) if count == fds),
                        "{result:?}"
                    );
                } else {
                    assert!(matches!(result, Err(Error::Encode(_))), "{result:?}");
                }
                assert_eq!(out, before);
            }
            Op::Panic {
                message,
                file,
                line,
                column,
                thread,
            } => {
                let report = PanicReport {
                    message,
                    file,
                    line,
                    column,
                    thread,
                };
                let mut body = Vec::new();
                encode_value(&mut body, &report).expect("a panic report encodes");
                let len = 1 + body.len() as u64;
                let result = encoder.panic(&mut out, &report);
                if len <= u64::from(limit) {
                    assert!(result.is_ok(), "{result:?}");
                    assert_eq!(&out[..before.len()], &before[..]);
                    assert_eq!(out.len() as u64, before.len() as u64 + 4 + len);
                    expected.push(Expected::Panic(report));
                } else {
                    assert!(
                        matches!(result, Err(Error::FrameTooLarge { len: l, max }) if l == len && max == limit),
                        "{result:?}"
                    );
                    assert_eq!(out, before);
                }
            }
        }
    }

    // The receiver: the buffer arrives in chunks; whole frames are taken off its front.
    let decoder = FrameDecoder::new(asked);
    assert_eq!(decoder.max_frame_len(), limit);
    let chunks: Vec<usize> = if input.chunks.is_empty() {
        vec![out.len().max(1)]
    } else {
        input.chunks.iter().map(|&c| usize::from(c) + 1).collect()
    };
    let mut received = 0;
    let mut recv_buf: Vec<u8> = Vec::new();
    let mut pos = 0;
    for &chunk in chunks.iter().cycle() {
        if pos == out.len() {
            break;
        }
        let end = (pos + chunk).min(out.len());
        recv_buf.extend_from_slice(&out[pos..end]);
        pos = end;
        loop {
            match decoder.decode(&recv_buf) {
                Ok(Decoded::Frame { frame, consumed }) => {
                    assert!(consumed <= recv_buf.len());
                    let want = expected
                        .get(received)
                        .unwrap_or_else(|| panic!("an extra frame {frame:?}"));
                    match (frame, want) {
                        (Frame::Hello(got), Expected::Hello(want)) => assert_eq!(&got, want),
                        (
                            Frame::Message {
                                attachments,
                                payload,
                            },
                            Expected::Message {
                                attachments: want_attachments,
                                payload: want_payload,
                                value,
                            },
                        ) => {
                            assert_eq!(&attachments.iter().collect::<Vec<_>>(), want_attachments);
                            assert_eq!(payload, &want_payload[..]);
                            if let Some(value) = value {
                                assert_eq!(&decode_value::<Small>(payload).unwrap(), value);
                            }
                        }
                        (Frame::Panic(got), Expected::Panic(want)) => assert_eq!(&got, want),
                        (got, want) => panic!("got {got:?}, expected {want:?}"),
                    }
                    received += 1;
                    recv_buf.drain(..consumed);
                }
                Ok(Decoded::Incomplete { needed }) => {
                    assert!(needed > recv_buf.len());
                    assert!(needed <= 4 + limit as usize);
                    break;
                }
                Err(err) => panic!("a frame the encoder built is refused: {err}"),
            }
        }
    }
    assert_eq!(received, expected.len(), "frames lost");
    assert!(recv_buf.is_empty(), "{} bytes left over", recv_buf.len());
});
