//! Frames built with `FrameEncoder` from fuzz-chosen parameters decode back identically.
//!
//! The input picks a limit, a list of frames to append to one send buffer (raw MESSAGEs,
//! MESSAGEs whose payload is an encoded value, MESSAGEs whose payload fails to encode, PANIC
//! reports and HELLOs) and the sizes of the chunks in which the receiver gets the buffer.
//! Invariants:
//! - the encoder builds exactly the frames that fit the limit and carry at most
//!   `MAX_ATTACHMENTS` attachments, and refuses the others with the right error and the buffer
//!   exactly as it was;
//! - the receiver, decoding from the front of a buffer that grows chunk by chunk, gets every
//!   built frame back, equal and in order, with nothing left over, under the same limit;
//! - a value payload decodes back to the value.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use serde::{Deserialize, Serialize, Serializer};
use utility_process_wire::{
    decode_value, encode_value, Attachment, Decoded, Error, Frame, FrameDecoder, FrameEncoder,
    Hello, PanicReport, DEFAULT_MAX_FRAME_LEN, MAX_ATTACHMENTS,
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

#[derive(Debug, Arbitrary)]
enum Op {
    Hello(u32),
    Raw {
        attachments: u8,
        payload: Vec<u8>,
    },
    Value {
        attachments: u8,
        value: Small,
    },
    Failing {
        attachments: u8,
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

/// Mostly 0 to 3 attachments; sometimes 250 to 257, around `MAX_ATTACHMENTS`.
fn attachment_count(selector: u8) -> usize {
    if selector < 192 {
        usize::from(selector % 4)
    } else {
        250 + usize::from(selector - 192) % 8
    }
}

/// Checks the outcome of one MESSAGE, returning whether it was built.
fn check_message(
    result: Result<(), Error>,
    out: &[u8],
    before: &[u8],
    count: usize,
    len: u64,
    limit: u32,
) -> bool {
    if count > MAX_ATTACHMENTS {
        assert!(
            matches!(result, Err(Error::TooManyAttachments { count: c }) if c == count),
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
    let limit = match input.limit {
        Limit::Small(l) => u32::from(l),
        Limit::Default => DEFAULT_MAX_FRAME_LEN,
        Limit::Max => u32::MAX,
        Limit::Any(l) => l,
    };
    let encoder = FrameEncoder::new(limit);
    let mut out = Vec::new();
    let mut expected = Vec::new();

    for op in input.ops {
        let before = out.clone();
        match op {
            Op::Hello(announced) => {
                // `FrameEncoder::hello` does not check its limit: a 13-byte HELLO under a
                // smaller limit would be built and then refused by the decoder.
                if limit < 13 {
                    continue;
                }
                let hello = Hello::new(announced);
                encoder.hello(&mut out, &hello);
                assert_eq!(out.len(), before.len() + 17);
                expected.push(Expected::Hello(hello));
            }
            Op::Raw {
                attachments,
                payload,
            } => {
                let count = attachment_count(attachments);
                let kinds = vec![Attachment::Port; count];
                let result = encoder.message_with_attachments(&mut out, &kinds, |p| {
                    p.extend_from_slice(&payload);
                    Ok(())
                });
                let len = (2 + count + payload.len()) as u64;
                if check_message(result, &out, &before, count, len, limit) {
                    expected.push(Expected::Message {
                        attachments: kinds,
                        payload,
                        value: None,
                    });
                }
            }
            Op::Value { attachments, value } => {
                let count = attachment_count(attachments);
                let kinds = vec![Attachment::Port; count];
                let mut payload = Vec::new();
                encode_value(&mut payload, &value).expect("a plain struct encodes");
                let result =
                    encoder.message_with_attachments(&mut out, &kinds, |p| encode_value(p, &value));
                let len = (2 + count + payload.len()) as u64;
                if check_message(result, &out, &before, count, len, limit) {
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
                let count = attachment_count(attachments);
                let kinds = vec![Attachment::Port; count];
                let result = encoder.message_with_attachments(&mut out, &kinds, |p| {
                    encode_value(p, &FailsAfter(usize::from(written)))
                });
                if count > MAX_ATTACHMENTS {
                    assert!(
                        matches!(result, Err(Error::TooManyAttachments { .. })),
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
    let decoder = FrameDecoder::new(limit);
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
