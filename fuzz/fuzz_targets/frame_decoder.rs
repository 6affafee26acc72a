//! The input is what a peer wrote into the socket: the receive side takes whole frames off
//! the front of it, one after the other, as the transport does, until the bytes run out or a
//! frame is refused (a protocol violation closes the channel).
//!
//! The first byte picks the decoder's limit, so that small limits are crossed too; the rest
//! is the stream. Invariants, beyond "no panic, no abort, no huge allocation":
//! - a decoded frame covers `4 + len` bytes, with `HEADER_LEN <= consumed <= remaining` and
//!   `len <= limit`; the same bytes decode the same without what follows them, and one byte
//!   short they are `Incomplete { needed: consumed }`;
//! - `Incomplete { needed }` has `remaining < needed <= 4 + limit`, and `needed` is exactly
//!   `4 + len` once the length field is in;
//! - nothing is refused before the 4 length bytes are in;
//! - HELLO and MESSAGE frames are canonical: re-encoding what was decoded, with an encoder of
//!   the same limit, gives back the very same bytes; a PANIC report re-encodes and decodes
//!   to an equal report;
//! - a MESSAGE payload decodes (or fails cleanly) as `IgnoredAny` and as a small struct, and
//!   a payload that is a valid struct is valid MessagePack.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::de::IgnoredAny;
use serde::Deserialize;
use utility_process_wire::{
    decode_value, Attachment, Decoded, Frame, FrameDecoder, FrameEncoder, Hello, PanicReport,
    DEFAULT_MAX_FRAME_LEN, HEADER_LEN,
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
}

fn owned(frame: &Frame<'_>) -> Owned {
    match frame {
        Frame::Hello(hello) => Owned::Hello(*hello),
        Frame::Message {
            attachments,
            payload,
        } => Owned::Message(attachments.iter().collect(), payload.to_vec()),
        Frame::Panic(report) => Owned::Panic(report.clone()),
    }
}

fn limit_for(selector: u8) -> u32 {
    match selector >> 6 {
        0 => u32::from(selector & 0x3f) + 1, // 1..=64: crossed by small frames
        1 => 13 + u32::from(selector & 0x3f) * 64, // 13..=4045
        2 => DEFAULT_MAX_FRAME_LEN,
        _ => u32::MAX,
    }
}

fn length_field(buf: &[u8]) -> usize {
    u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize
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
            let mut out = Vec::new();
            encoder
                .message_with_attachments(&mut out, &kinds, |p| {
                    p.extend_from_slice(payload);
                    Ok(())
                })
                .expect("a decoded MESSAGE re-encodes under the same limit");
            assert_eq!(out, bytes, "a MESSAGE is canonical");

            let as_any = decode_value::<IgnoredAny>(payload);
            let as_struct = decode_value::<Small>(payload);
            if as_struct.is_ok() {
                assert!(as_any.is_ok(), "a valid struct is valid MessagePack");
            }
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
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, stream)) = data.split_first() else {
        return;
    };
    let limit = limit_for(selector);
    let decoder = FrameDecoder::new(limit);
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
            Err(_) => {
                assert!(rest.len() >= 4, "refused before the length was in");
                break;
            }
        }
    }
});
