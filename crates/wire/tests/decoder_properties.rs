//! Properties of the wire format that must hold for *any* input: the frame decoder, the frame
//! encoder and the payload codec are fed random and half-valid bytes, and random frames are
//! sent through a simulated receive buffer that fills chunk by chunk.
//!
//! Every property here is also a fuzz target's invariant (`fuzz/fuzz_targets/`); these run in
//! `cargo test` and stay well under a few seconds in debug builds.

use std::collections::BTreeMap;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize, Serializer};
use utility_process_wire::{
    decode_value, encode_value, Attachment, Decoded, Error, Frame, FrameDecoder, FrameEncoder,
    Hello, PanicReport, DEFAULT_MAX_FRAME_LEN, HEADER_LEN, MAX_ATTACHMENTS, MAX_DEPTH,
};

/// Cases per property. Shrinking keeps failures readable; failures are not persisted to a
/// regressions file (proptest prints the minimal input, which is what a bug report needs).
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// An owned copy of a decoded frame, to compare with what was sent.
#[derive(Debug, Clone, PartialEq)]
enum Sent {
    Hello(Hello),
    Message {
        attachments: Vec<Attachment>,
        payload: Vec<u8>,
    },
    Panic(PanicReport),
}

impl Sent {
    fn from_frame(frame: &Frame<'_>) -> Sent {
        match frame {
            Frame::Hello(hello) => Sent::Hello(*hello),
            Frame::Message {
                attachments,
                payload,
            } => Sent::Message {
                attachments: attachments.iter().collect(),
                payload: payload.to_vec(),
            },
            Frame::Panic(report) => Sent::Panic(report.clone()),
        }
    }

    fn encode(&self, encoder: &FrameEncoder, out: &mut Vec<u8>) -> Result<(), Error> {
        match self {
            Sent::Hello(hello) => {
                encoder.hello(out, hello);
                Ok(())
            }
            Sent::Message {
                attachments,
                payload,
            } => encoder.message_with_attachments(out, attachments, |p| {
                p.extend_from_slice(payload);
                Ok(())
            }),
            Sent::Panic(report) => encoder.panic(out, report),
        }
    }
}

/// The little-endian length field at the front of `buf`.
fn length_field(buf: &[u8]) -> u32 {
    u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]])
}

/// Limits from the degenerate to the largest, weighted towards small ones that real frames
/// cross. Zero is left out: see `fewer_than_four_bytes_always_ask_for_a_whole_header`.
fn limit() -> impl Strategy<Value = u32> {
    prop_oneof![
        4 => 1u32..=64,
        4 => 1u32..=4096,
        1 => Just(DEFAULT_MAX_FRAME_LEN),
        1 => Just(u32::MAX),
        1 => any::<u32>().prop_map(|l| l.max(1)),
    ]
}

fn panic_report() -> impl Strategy<Value = PanicReport> {
    (
        "\\PC{0,40}",
        "[a-z/_.]{0,30}",
        any::<u32>(),
        any::<u32>(),
        proptest::option::of("\\PC{0,12}"),
    )
        .prop_map(|(message, file, line, column, thread)| PanicReport {
            message,
            file,
            line,
            column,
            thread,
        })
}

/// A MESSAGE with 0 to 3 port attachments, a PANIC report, or (rarely) a HELLO.
fn sent_frame() -> impl Strategy<Value = Sent> {
    prop_oneof![
        6 => (0usize..=3, vec(any::<u8>(), 0..200)).prop_map(|(n, payload)| Sent::Message {
            attachments: vec![Attachment::Port; n],
            payload,
        }),
        2 => panic_report().prop_map(Sent::Panic),
        1 => any::<u32>().prop_map(|l| Sent::Hello(Hello::new(l))),
    ]
}

/// Edits applied to otherwise valid bytes, so that inputs get past the first checks.
#[derive(Debug, Clone)]
enum Edit {
    Set(Index, u8),
    Truncate(Index),
    Insert(Index, u8),
    Append(Vec<u8>),
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    vec(
        prop_oneof![
            4 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Edit::Set(i, b)),
            1 => any::<Index>().prop_map(Edit::Truncate),
            1 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Edit::Insert(i, b)),
            1 => vec(any::<u8>(), 1..8).prop_map(Edit::Append),
        ],
        0..4,
    )
}

fn apply(mut bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for edit in edits {
        match edit {
            Edit::Set(i, b) if !bytes.is_empty() => {
                let i = i.index(bytes.len());
                bytes[i] = *b;
            }
            Edit::Truncate(i) if !bytes.is_empty() => {
                let i = i.index(bytes.len());
                bytes.truncate(i);
            }
            Edit::Insert(i, b) => {
                let i = i.index(bytes.len() + 1);
                bytes.insert(i, *b);
            }
            Edit::Append(tail) => bytes.extend_from_slice(tail),
            _ => {}
        }
    }
    bytes
}

/// Bytes for the decoder: pure noise, a length field with a random kind and body, or a valid
/// frame with a few bytes edited.
fn decoder_input() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        vec(any::<u8>(), 0..64),
        (0u32..300, 0u8..=4, vec(any::<u8>(), 0..300)).prop_map(|(len, kind, body)| {
            let mut buf = len.to_le_bytes().to_vec();
            buf.push(kind);
            buf.extend_from_slice(&body);
            buf
        }),
        (vec(sent_frame(), 1..3), edits()).prop_map(|(frames, edits)| {
            let encoder = FrameEncoder::new(u32::MAX);
            let mut buf = Vec::new();
            for frame in &frames {
                frame.encode(&encoder, &mut buf).unwrap();
            }
            apply(buf, &edits)
        }),
    ]
}

/// The decoder's answer for `buf`, checked against every rule a transport relies on.
fn check_decode(decoder: &FrameDecoder, buf: &[u8]) -> Result<(), TestCaseError> {
    let limit = decoder.max_frame_len() as usize;
    match decoder.decode(buf) {
        Ok(Decoded::Frame { consumed, .. }) => {
            prop_assert!(
                consumed <= buf.len(),
                "consumed {consumed} of {}",
                buf.len()
            );
            prop_assert!(consumed >= HEADER_LEN);
            prop_assert_eq!(consumed, 4 + length_field(buf) as usize);
            prop_assert!(consumed <= 4 + limit);
        }
        Ok(Decoded::Incomplete { needed }) => {
            prop_assert!(needed > buf.len(), "needed {needed} with {} in", buf.len());
            prop_assert!(needed <= 4 + limit, "needed {needed} over limit {limit}");
            if buf.len() >= 4 {
                prop_assert_eq!(needed, 4 + length_field(buf) as usize);
            }
        }
        Err(err) => prop_assert!(buf.len() >= 4, "error {err} before the length was in"),
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn any_bytes_decode_to_a_frame_an_error_or_a_bounded_request_for_more(
        buf in decoder_input(),
        limit in limit(),
    ) {
        let decoder = FrameDecoder::new(limit);
        check_decode(&decoder, &buf)?;
        // Every prefix is what a transport sees while the bytes trickle in.
        for end in 0..buf.len().min(40) {
            check_decode(&decoder, &buf[..end])?;
        }
    }

    #[test]
    fn bytes_after_a_whole_frame_do_not_change_how_it_decodes(
        buf in decoder_input(),
        tail in vec(any::<u8>(), 1..32),
        limit in limit(),
    ) {
        let decoder = FrameDecoder::new(limit);
        let Ok(Decoded::Frame { frame, consumed }) = decoder.decode(&buf) else {
            return Ok(());
        };
        let alone = Sent::from_frame(&frame);
        let mut longer = buf[..consumed].to_vec();
        longer.extend_from_slice(&tail);
        match decoder.decode(&longer) {
            Ok(Decoded::Frame { frame, consumed: again }) => {
                prop_assert_eq!(again, consumed);
                prop_assert_eq!(Sent::from_frame(&frame), alone);
            }
            other => prop_assert!(false, "with a tail: {:?}", other),
        }
    }

    #[test]
    fn fewer_than_four_bytes_always_ask_for_a_whole_header(
        buf in vec(any::<u8>(), 0..4),
        limit in limit(),
    ) {
        let result = FrameDecoder::new(limit).decode(&buf);
        prop_assert!(
            matches!(result, Ok(Decoded::Incomplete { needed: HEADER_LEN })),
            "{:?}",
            result
        );
    }

    #[test]
    fn a_length_over_the_limit_is_refused_as_soon_as_its_four_bytes_are_in(
        (limit, len) in (0u32..u32::MAX).prop_flat_map(|limit| (Just(limit), (limit + 1)..=u32::MAX)),
        tail in vec(any::<u8>(), 0..16),
    ) {
        let mut buf = len.to_le_bytes().to_vec();
        buf.extend_from_slice(&tail);
        for end in 4..=buf.len() {
            let result = FrameDecoder::new(limit).decode(&buf[..end]);
            prop_assert!(
                matches!(result, Err(Error::FrameTooLarge { len: l, max }) if l == u64::from(len) && max == limit),
                "{:?}", result
            );
        }
    }

    #[test]
    fn a_zero_length_is_refused_as_soon_as_its_four_bytes_are_in(
        tail in vec(any::<u8>(), 0..16),
        limit in limit(),
    ) {
        let mut buf = vec![0, 0, 0, 0];
        buf.extend_from_slice(&tail);
        let result = FrameDecoder::new(limit).decode(&buf);
        prop_assert!(matches!(result, Err(Error::EmptyFrame)), "{:?}", result);
    }
}

proptest! {
    #![proptest_config(config(1000))]

    #[test]
    fn frames_written_back_to_back_decode_identically_however_the_stream_is_split(
        frames in vec(sent_frame(), 0..12),
        chunks in vec(1usize..=97, 1..24),
    ) {
        let limit = DEFAULT_MAX_FRAME_LEN;
        let encoder = FrameEncoder::new(limit);
        let decoder = FrameDecoder::new(limit);

        let mut stream = Vec::new();
        let mut sizes = Vec::new();
        for frame in &frames {
            let before = stream.len();
            frame.encode(&encoder, &mut stream).unwrap();
            sizes.push(stream.len() - before);
        }

        // The transport: append each chunk as it arrives, then take every whole frame off
        // the front of the receive buffer.
        let mut received = Vec::new();
        let mut recv_buf: Vec<u8> = Vec::new();
        let mut pos = 0;
        for &chunk in chunks.iter().cycle() {
            if pos == stream.len() {
                break;
            }
            let end = (pos + chunk).min(stream.len());
            recv_buf.extend_from_slice(&stream[pos..end]);
            pos = end;
            loop {
                match decoder.decode(&recv_buf) {
                    Ok(Decoded::Frame { frame, consumed }) => {
                        prop_assert!(consumed <= recv_buf.len());
                        prop_assert_eq!(consumed, sizes[received.len()]);
                        received.push(Sent::from_frame(&frame));
                        recv_buf.drain(..consumed);
                    }
                    Ok(Decoded::Incomplete { needed }) => {
                        prop_assert!(needed > recv_buf.len());
                        prop_assert!(needed <= 4 + limit as usize);
                        if recv_buf.len() >= 4 {
                            // Once the length is in, `needed` is exactly the next frame.
                            prop_assert_eq!(needed, sizes[received.len()]);
                        } else if let Some(&next) = sizes.get(received.len()) {
                            prop_assert!(needed <= next);
                        }
                        break;
                    }
                    Err(err) => prop_assert!(false, "decoding failed: {}", err),
                }
            }
        }
        prop_assert!(recv_buf.is_empty(), "{} bytes left over", recv_buf.len());
        prop_assert_eq!(received, frames);
    }
}

/// A small struct of the kind users post.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Small {
    name: String,
    values: Vec<u32>,
    flag: Option<u8>,
}

fn small() -> impl Strategy<Value = Small> {
    ("\\PC{0,16}", vec(any::<u32>(), 0..8), any::<Option<u8>>())
        .prop_map(|(name, values, flag)| Small { name, values, flag })
}

type Nested = (
    Vec<Small>,
    BTreeMap<String, Vec<Option<i64>>>,
    (bool, f64, Vec<u8>),
);

/// Payload bytes: noise, or MessagePack of several shapes with a few bytes edited.
fn payload_input() -> impl Strategy<Value = Vec<u8>> {
    let nested = (
        vec(small(), 0..3),
        proptest::collection::btree_map("\\PC{0,8}", vec(any::<Option<i64>>(), 0..4), 0..4),
        any::<(bool, f64, Vec<u8>)>(),
    );
    prop_oneof![
        2 => vec(any::<u8>(), 0..128),
        3 => (small(), edits()).prop_map(|(value, edits)| {
            let mut bytes = Vec::new();
            encode_value(&mut bytes, &value).unwrap();
            apply(bytes, &edits)
        }),
        2 => (nested, edits()).prop_map(|(value, edits): (Nested, _)| {
            let mut bytes = Vec::new();
            encode_value(&mut bytes, &value).unwrap();
            apply(bytes, &edits)
        }),
    ]
}

/// A `Serialize` that writes part of a sequence and then fails, as a user type may.
#[derive(Debug)]
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

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn any_payload_decodes_as_a_struct_and_as_ignored_any_without_panicking(
        bytes in payload_input(),
    ) {
        let as_struct = decode_value::<Small>(&bytes);
        let as_any = decode_value::<IgnoredAny>(&bytes);
        if let Err(err) = &as_struct {
            prop_assert!(matches!(err, Error::Decode(_)), "{:?}", err);
        }
        if let Err(err) = &as_any {
            prop_assert!(matches!(err, Error::Decode(_)), "{:?}", err);
        }
        // A payload that is a valid struct is, first of all, valid MessagePack.
        if as_struct.is_ok() {
            prop_assert!(as_any.is_ok());
        }
    }

    #[test]
    fn structs_round_trip_through_the_payload_codec(value in small()) {
        let mut bytes = Vec::new();
        encode_value(&mut bytes, &value).unwrap();
        prop_assert_eq!(decode_value::<Small>(&bytes).unwrap(), value);
        prop_assert!(decode_value::<IgnoredAny>(&bytes).is_ok());
    }
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn nesting_past_max_depth_is_an_error_not_a_stack_overflow(
        depth in 0usize..1200,
        maps in any::<u64>(),
    ) {
        // One-element arrays and one-entry maps {nil: ...}, nested, around a nil; bit
        // `level % 64` of `maps` says which container each level is.
        let mut bytes = Vec::with_capacity(2 * depth + 1);
        for level in 0..depth {
            if maps >> (level % 64) & 1 == 1 {
                bytes.extend_from_slice(&[0x81, 0xc0]);
            } else {
                bytes.push(0x91);
            }
        }
        bytes.push(0xc0);
        let result = decode_value::<IgnoredAny>(&bytes);
        if depth < MAX_DEPTH {
            prop_assert!(result.is_ok(), "depth {}: {:?}", depth, result);
        } else if depth > MAX_DEPTH {
            prop_assert!(matches!(result, Err(Error::Decode(_))), "depth {}: {:?}", depth, result);
        }
    }
}

/// A MESSAGE's length field: the kind byte, the count byte, the attachments and the payload.
fn message_len(attachments: usize, payload: usize) -> u64 {
    (2 + attachments + payload) as u64
}

proptest! {
    #![proptest_config(config(1000))]

    #[test]
    fn the_encoder_builds_messages_that_the_decoder_with_the_same_limit_accepts(
        prefix in vec(any::<u8>(), 0..16),
        attachments in prop_oneof![3 => 0usize..=3, 1 => 0usize..=MAX_ATTACHMENTS],
        payload in vec(any::<u8>(), 0..600),
        slack in prop_oneof![Just(0u32), 0u32..64, Just(u32::MAX)],
    ) {
        let len = message_len(attachments, payload.len()) as u32;
        let limit = len.saturating_add(slack);
        let sent = Sent::Message { attachments: vec![Attachment::Port; attachments], payload };
        let mut out = prefix.clone();
        sent.encode(&FrameEncoder::new(limit), &mut out).unwrap();

        prop_assert_eq!(&out[..prefix.len()], &prefix[..]);
        let frame_bytes = &out[prefix.len()..];
        prop_assert_eq!(length_field(frame_bytes), len);
        match FrameDecoder::new(limit).decode(frame_bytes) {
            Ok(Decoded::Frame { frame, consumed }) => {
                prop_assert_eq!(consumed, frame_bytes.len());
                prop_assert_eq!(Sent::from_frame(&frame), sent);
            }
            other => prop_assert!(false, "{:?}", other),
        }
    }

    #[test]
    fn the_encoder_refuses_messages_over_the_limit_and_leaves_the_buffer_unchanged(
        prefix in vec(any::<u8>(), 0..16),
        attachments in 0usize..=3,
        payload in vec(any::<u8>(), 0..600),
        shortfall in 1u64..700,
    ) {
        let len = message_len(attachments, payload.len());
        let limit = len.saturating_sub(shortfall) as u32;
        let sent = Sent::Message { attachments: vec![Attachment::Port; attachments], payload };
        let mut out = prefix.clone();
        let result = sent.encode(&FrameEncoder::new(limit), &mut out);
        prop_assert!(
            matches!(result, Err(Error::FrameTooLarge { len: l, max }) if l == len && max == limit),
            "{:?}", result
        );
        prop_assert_eq!(out, prefix);
    }

    #[test]
    fn the_encoder_refuses_more_than_max_attachments_and_leaves_the_buffer_unchanged(
        prefix in vec(any::<u8>(), 0..16),
        attachments in (MAX_ATTACHMENTS + 1)..=(MAX_ATTACHMENTS + 300),
        limit in limit(),
    ) {
        let mut out = prefix.clone();
        let result = FrameEncoder::new(limit).message_with_attachments(
            &mut out,
            &vec![Attachment::Port; attachments],
            |p| {
                p.push(0xc0);
                Ok(())
            },
        );
        prop_assert!(
            matches!(result, Err(Error::TooManyAttachments { count }) if count == attachments),
            "{:?}", result
        );
        prop_assert_eq!(out, prefix);
    }

    #[test]
    fn a_payload_that_fails_to_encode_leaves_the_buffer_unchanged(
        prefix in vec(any::<u8>(), 0..16),
        attachments in 0usize..=3,
        written in 0usize..100,
        limit in limit(),
    ) {
        let mut out = prefix.clone();
        let result = FrameEncoder::new(limit).message_with_attachments(
            &mut out,
            &vec![Attachment::Port; attachments],
            |p| encode_value(p, &FailsAfter(written)),
        );
        prop_assert!(matches!(result, Err(Error::Encode(_))), "{:?}", result);
        prop_assert_eq!(out, prefix);
    }

    #[test]
    fn the_encoder_builds_a_panic_report_within_the_limit_or_refuses_it_leaving_the_buffer_unchanged(
        prefix in vec(any::<u8>(), 0..16),
        report in panic_report(),
        limit in prop_oneof![1u32..=200, limit()],
    ) {
        let mut body = Vec::new();
        encode_value(&mut body, &report).unwrap();
        let len = 1 + body.len() as u64;

        let mut out = prefix.clone();
        let result = FrameEncoder::new(limit).panic(&mut out, &report);
        if len <= u64::from(limit) {
            prop_assert!(result.is_ok(), "{:?}", result);
            let frame_bytes = &out[prefix.len()..];
            match FrameDecoder::new(limit).decode(frame_bytes) {
                Ok(Decoded::Frame { frame: Frame::Panic(decoded), consumed }) => {
                    prop_assert_eq!(consumed, frame_bytes.len());
                    prop_assert_eq!(decoded, report);
                }
                other => prop_assert!(false, "{:?}", other),
            }
        } else {
            prop_assert!(
                matches!(result, Err(Error::FrameTooLarge { len: l, max }) if l == len && max == limit),
                "{:?}", result
            );
            prop_assert_eq!(out, prefix);
        }
    }

    #[test]
    fn a_hello_decodes_under_any_limit_that_holds_its_twelve_byte_body(
        prefix in vec(any::<u8>(), 0..16),
        announced in any::<u32>(),
        limit in 13u32..=u32::MAX,
    ) {
        // Limits under 13 are left out: `FrameEncoder::hello` does not check its limit.
        let hello = Hello::new(announced);
        let mut out = prefix.clone();
        FrameEncoder::new(limit).hello(&mut out, &hello);
        let frame_bytes = &out[prefix.len()..];
        prop_assert_eq!(frame_bytes.len(), 17);
        match FrameDecoder::new(limit).decode(frame_bytes) {
            Ok(Decoded::Frame { frame: Frame::Hello(decoded), consumed: 17 }) => {
                prop_assert_eq!(decoded, hello);
            }
            other => prop_assert!(false, "{:?}", other),
        }
    }
}
