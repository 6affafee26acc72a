//! The input is what a peer wrote into the socket: the receive side takes whole frames off
//! the front of it, one after the other, as the transport does, until the bytes run out or a
//! frame is refused (a protocol violation closes the channel).
//!
//! The first byte picks the decoder's limit, so that small limits (below `MIN_FRAME_LEN` too)
//! are crossed; the rest is the stream. Invariants, beyond "no panic, no abort, no huge
//! allocation":
//! - the decoder's limit is the one asked for, raised to `MIN_FRAME_LEN`;
//! - a decoded frame covers `4 + len` bytes, with `HEADER_LEN <= consumed <= remaining` and
//!   `len <= limit`; the same bytes decode the same without what follows them, and one byte
//!   short they are `Incomplete { needed: consumed }`;
//! - `Incomplete { needed }` has `remaining < needed <= 4 + limit`, and `needed` is exactly
//!   `4 + len` once the length field is in;
//! - nothing is refused before the 4 length bytes are in; a length of zero is `EmptyFrame`,
//!   one over the limit `FrameTooLarge`, and a MESSAGE with an empty body `EmptyMessage`;
//! - HELLO and MESSAGE frames are canonical: re-encoding what was decoded (attachment kinds
//!   and channel ids included), with an encoder of the same limit, gives back the very same
//!   bytes; a MESSAGE carries at most `MAX_ATTACHMENTS` descriptors; a PANIC report
//!   re-encodes and decodes to an equal report;
//! - a MESSAGE payload decodes (or fails cleanly) as `IgnoredAny` and as a small struct; a
//!   payload that is a valid struct is valid MessagePack; `decode_value::<IgnoredAny>`
//!   accepts exactly the payloads that rmp-serde reads as one value with nothing after it,
//!   and otherwise counts the bytes after the value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::de::IgnoredAny;
use serde::Deserialize;
use utility_process_wire::{
    FailureReport,
    decode_value, Attachment, Decoded, Error, Frame, FrameDecoder, FrameEncoder, Hello,
    PanicReport, DEFAULT_MAX_FRAME_LEN, HEADER_LEN, MAX_ATTACHMENTS, MAX_DEPTH, MIN_FRAME_LEN,
};

/// A small struct of the kind users post.
#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct Small {
    name: String,
    values: Vec<u32>,
    flag: Option<u8>,
}

/// An owned copy of a frame, to compare two decodings.
#[derive(Debug, PartialEq)]
enum Owned {
    Hello(Hello),
    Message(Vec<Attachment>, Vec<u8>),
    Panic(PanicReport),
    Failure(FailureReport),
}

fn owned(frame: &Frame<'_>) -> Owned {
    match frame {
        Frame::Hello(hello) => Owned::Hello(*hello),
        Frame::Message {
            attachments,
            payload,
        } => Owned::Message(attachments.iter().collect(), payload.to_vec()),
        Frame::Panic(report) => Owned::Panic(report.clone()),
        Frame::Failure(report) => Owned::Failure(report.clone()),
    }
}

fn limit_for(selector: u8) -> u32 {
    match selector >> 6 {
        0 => u32::from(selector & 0x3f), // 0..=63: crossed by small frames, raised to 16
        1 => 13 + u32::from(selector & 0x3f) * 64, // 13..=4045
        2 => DEFAULT_MAX_FRAME_LEN,
        _ => u32::MAX,
    }
}

fn length_field(buf: &[u8]) -> usize {
    u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize
}

/// How many bytes rmp-serde itself reads for one value at the front of `bytes`, with the
/// depth budget `decode_value` gives it (`None` when it cannot read one): the oracle for
/// where a payload's value ends.
fn read_by_rmp_serde(bytes: &[u8]) -> Option<usize> {
    let mut rest = bytes;
    let mut de = rmp_serde::Deserializer::new(&mut rest);
    de.set_max_depth(MAX_DEPTH + 1);
    IgnoredAny::deserialize(&mut de).ok()?;
    Some(bytes.len() - rest.len())
}

fn check_payload(payload: &[u8]) {
    let as_any = decode_value::<IgnoredAny>(payload);
    let as_struct = decode_value::<Small>(payload);
    if as_struct.is_ok() {
        assert!(as_any.is_ok(), "a valid struct is valid MessagePack");
    }
    if let Err(Error::TrailingBytes { count }) = as_struct {
        assert!(
            matches!(as_any, Err(Error::TrailingBytes { count: c }) if c == count),
            "a struct and the value holding it end at the same byte: {as_any:?}"
        );
    }
    match read_by_rmp_serde(payload) {
        None => assert!(matches!(as_any, Err(Error::Decode(_))), "{as_any:?}"),
        Some(read) if read == payload.len() => assert!(as_any.is_ok(), "{as_any:?}"),
        Some(read) => assert!(
            matches!(as_any, Err(Error::TrailingBytes { count }) if count == payload.len() - read),
            "read {read} of {}: {as_any:?}",
            payload.len()
        ),
    }
}

fn check_frame(decoder: &FrameDecoder, frame: &Frame<'_>, bytes: &[u8]) {
    let limit = decoder.max_frame_len();
    let encoder = FrameEncoder::new(limit);
    match frame {
        Frame::Hello(hello) => {
            let mut out = Vec::new();
            encoder.hello(&mut out, hello);
            assert_eq!(out, bytes, "a HELLO is canonical");
        }
        Frame::Message {
            attachments,
            payload,
        } => {
            let kinds: Vec<Attachment> = attachments.iter().collect();
            assert_eq!(kinds.len(), attachments.len());
            assert_eq!(attachments.is_empty(), kinds.is_empty());
            let fds: usize = kinds.iter().map(|a| a.fd_count()).sum();
            assert_eq!(attachments.fd_count(), fds);
            assert!(fds <= MAX_ATTACHMENTS, "{fds} descriptors");
            let mut out = Vec::new();
            encoder
                .message_with_attachments(&mut out, &kinds, |p| {
                    p.extend_from_slice(payload);
                    Ok(())
                })
                .expect("a decoded MESSAGE re-encodes under the same limit");
            assert_eq!(out, bytes, "a MESSAGE is canonical");
            check_payload(payload);
        }
        Frame::Panic(report) => {
            let mut out = Vec::new();
            FrameEncoder::new(u32::MAX)
                .panic(&mut out, report)
                .expect("a decoded PANIC report re-encodes");
            match FrameDecoder::new(u32::MAX).decode(&out) {
                Ok(Decoded::Frame {
                    frame: Frame::Panic(again),
                    consumed,
                }) => {
                    assert_eq!(consumed, out.len());
                    assert_eq!(&again, report);
                }
                other => panic!("a re-encoded PANIC report decodes to {other:?}"),
            }
        }
        Frame::Failure(report) => {
            let mut out = Vec::new();
            FrameEncoder::new(u32::MAX)
                .failure(&mut out, report)
                .expect("a decoded FAILURE report re-encodes");
            match FrameDecoder::new(u32::MAX).decode(&out) {
                Ok(Decoded::Frame {
                    frame: Frame::Failure(again),
                    consumed,
                }) => {
                    assert_eq!(consumed, out.len());
                    assert_eq!(&again, report);
                }
                other => panic!("a re-encoded FAILURE report decodes to {other:?}"),
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, stream)) = data.split_first() else {
        return;
    };
    let decoder = FrameDecoder::new(limit_for(selector));
    let limit = decoder.max_frame_len();
    assert_eq!(limit, limit_for(selector).max(MIN_FRAME_LEN));
    let mut rest = stream;
    loop {
        match decoder.decode(rest) {
            Ok(Decoded::Frame { frame, consumed }) => {
                assert!(consumed >= HEADER_LEN, "consumed {consumed}");
                assert!(
                    consumed <= rest.len(),
                    "consumed {consumed} of {}",
                    rest.len()
                );
                assert_eq!(consumed, 4 + length_field(rest));
                assert!(consumed - 4 <= limit as usize);

                let bytes = &rest[..consumed];
                match decoder.decode(bytes) {
                    Ok(Decoded::Frame {
                        frame: alone,
                        consumed: again,
                    }) => {
                        assert_eq!(again, consumed);
                        assert_eq!(owned(&alone), owned(&frame));
                    }
                    other => panic!("the frame alone decodes to {other:?}"),
                }
                match decoder.decode(&bytes[..consumed - 1]) {
                    Ok(Decoded::Incomplete { needed }) => assert_eq!(needed, consumed),
                    other => panic!("one byte short, the frame decodes to {other:?}"),
                }
                check_frame(&decoder, &frame, bytes);
                rest = &rest[consumed..];
            }
            Ok(Decoded::Incomplete { needed }) => {
                assert!(needed > rest.len(), "needed {needed} with {}", rest.len());
                assert!(needed <= 4 + limit as usize, "needed {needed} over {limit}");
                if rest.len() >= 4 {
                    assert_eq!(needed, 4 + length_field(rest));
                } else {
                    assert_eq!(needed, HEADER_LEN);
                }
                break;
            }
            Err(err) => {
                assert!(rest.len() >= 4, "refused before the length was in");
                let len = length_field(rest);
                if len == 0 {
                    assert!(matches!(err, Error::EmptyFrame), "{err:?}");
                } else if len > limit as usize {
                    assert!(
                        matches!(err, Error::FrameTooLarge { len: l, max } if l == len as u64 && max == limit),
                        "{err:?}"
                    );
                } else if len == 1 && rest[4] == 0x02 {
                    assert!(matches!(err, Error::EmptyMessage), "{err:?}");
                }
                break;
            }
        }
    }
});
