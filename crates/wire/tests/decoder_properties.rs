//! Properties of the wire format that must hold for *any* input: the frame decoder, the frame
//! encoder and the payload codec are fed random and half-valid bytes, and random frames are
//! sent through a simulated receive buffer that fills chunk by chunk.
//!
//! Every property here is also a fuzz target's invariant (`fuzz/fuzz_targets/`); these run in
//! `cargo test` and stay well under a few seconds in debug builds.
//!
//! `read_by_rmp_serde` is the oracle for where a payload's value ends: rmp-serde reading from
//! an `io::Read`, which leaves the unread bytes behind.

use std::collections::BTreeMap;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize, Serializer};
use utility_process_wire::{
    decode_value, encode_value, Attachment, Decoded, Error, FailureReport, Frame, FrameDecoder,
    FrameEncoder, Hello, PanicReport, ATTACHMENT_LEN, DEFAULT_MAX_FRAME_LEN, HEADER_LEN,
    MAX_ATTACHMENTS, MAX_DEPTH, MIN_FRAME_LEN,
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
    Failure(FailureReport),
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
            Frame::Failure(report) => Sent::Failure(report.clone()),
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
            Sent::Failure(report) => encoder.failure(out, report),
        }
    }
}

/// The little-endian length field at the front of `buf`.
fn length_field(buf: &[u8]) -> u32 {
    u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]])
}

/// Limits from the degenerate to the largest, weighted towards small ones that real frames
/// cross. Those under `MIN_FRAME_LEN`, zero included, are raised to it.
fn limit() -> impl Strategy<Value = u32> {
    prop_oneof![
        1 => 0u32..MIN_FRAME_LEN,
        4 => 0u32..=64,
        4 => 0u32..=4096,
        1 => Just(DEFAULT_MAX_FRAME_LEN),
        1 => Just(u32::MAX),
        1 => any::<u32>(),
    ]
}

/// The limit an encoder or decoder built with `limit` enforces.
fn effective(limit: u32) -> u32 {
    limit.max(MIN_FRAME_LEN)
}

/// Channel ids: any, with the extremes and a few small ones often.
fn channel() -> impl Strategy<Value = u64> {
    prop_oneof![
        2 => any::<u64>(),
        1 => 0u64..4,
        1 => Just(u64::MAX),
    ]
}

/// Either kind of attachment, on a random channel.
fn attachment() -> impl Strategy<Value = Attachment> {
    (any::<bool>(), channel()).prop_map(|(prefix, channel)| {
        if prefix {
            Attachment::PortWithPrefix { channel }
        } else {
            Attachment::Port { channel }
        }
    })
}

fn channel_of(attachment: Attachment) -> u64 {
    match attachment {
        Attachment::Port { channel } | Attachment::PortWithPrefix { channel } => channel,
        other => unreachable!("a new kind of attachment: {other:?}"),
    }
}

/// The descriptors that travel with `attachments`.
fn fds(attachments: &[Attachment]) -> usize {
    attachments.iter().map(|a| a.fd_count()).sum()
}

/// `count` attachments of kinds and channels drawn from `seed`, or fewer when `max_fds` runs
/// out first (a `PortWithPrefix` that would overshoot becomes a `Port`).
///
/// Long lists come from one seed and a small generator (splitmix64), not from one proptest
/// value per attachment: that keeps lists of hundreds cheap in a debug build. The seed also
/// picks how often a port is prefixed, from never to always.
fn seeded_attachments(count: usize, max_fds: usize, seed: u64) -> Vec<Attachment> {
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let prefixed_in_4 = next() % 5; // 0 to 4 in 4
    let mut left = max_fds;
    let mut chosen = Vec::new();
    while chosen.len() < count && left > 0 {
        let r = next();
        let channel = match r % 4 {
            0 => r >> 62,
            1 => u64::MAX,
            _ => next(),
        };
        let attachment = if (r >> 8) % 4 < prefixed_in_4 && left >= 2 {
            Attachment::PortWithPrefix { channel }
        } else {
            Attachment::Port { channel }
        };
        left -= attachment.fd_count();
        chosen.push(attachment);
    }
    chosen
}

/// Attachments of random kinds and channels that carry exactly `fds` descriptors in total.
fn attachments_with_fds(
    fds: impl Strategy<Value = usize>,
) -> impl Strategy<Value = Vec<Attachment>> {
    (fds, any::<u64>()).prop_map(|(fds, seed)| seeded_attachments(usize::MAX, fds, seed))
}

/// `count` attachments of random kinds and channels.
fn attachments_of_count(
    count: impl Strategy<Value = usize>,
) -> impl Strategy<Value = Vec<Attachment>> {
    (count, any::<u64>()).prop_map(|(count, seed)| seeded_attachments(count, usize::MAX, seed))
}

/// A MESSAGE frame written by hand from `docs/PROTOCOL.md`, independently of the encoder:
/// the length, the kind, the count, 9 bytes per attachment (kind `0x01` or `0x02`, then the
/// channel id as a little-endian `u64`) and the payload.
fn message_bytes(attachments: &[Attachment], payload: &[u8]) -> Vec<u8> {
    let len = 2 + ATTACHMENT_LEN * attachments.len() + payload.len();
    let mut out = (len as u32).to_le_bytes().to_vec();
    out.push(0x02);
    out.push(u8::try_from(attachments.len()).expect("at most 255 attachments"));
    for &attachment in attachments {
        out.push(match attachment {
            Attachment::Port { .. } => 0x01,
            Attachment::PortWithPrefix { .. } => 0x02,
            other => unreachable!("a new kind of attachment: {other:?}"),
        });
        out.extend_from_slice(&channel_of(attachment).to_le_bytes());
    }
    out.extend_from_slice(payload);
    out
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

/// A MESSAGE with 0 to 3 attachments of either kind, a PANIC or FAILURE report, or (rarely) a
/// HELLO.
fn sent_frame() -> impl Strategy<Value = Sent> {
    prop_oneof![
        6 => (vec(attachment(), 0..=3), vec(any::<u8>(), 0..200)).prop_map(|(attachments, payload)| Sent::Message {
            attachments,
            payload,
        }),
        2 => panic_report().prop_map(Sent::Panic),
        1 => "\\PC{0,40}".prop_map(|message| Sent::Failure(FailureReport { message })),
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
        prop_assert_eq!(decoder.max_frame_len(), effective(limit));
        check_decode(&decoder, &buf)?;
        // Every prefix is what a transport sees while the bytes trickle in.
        for end in 0..buf.len().min(40) {
            check_decode(&decoder, &buf[..end])?;
        }
    }

    #[test]
    fn the_plain_message_fast_path_agrees_with_the_full_decoder(
        buf in decoder_input(),
        limit in limit(),
    ) {
        // Whatever the receiver's fast path accepts, the full decoder decodes as the same
        // message without attachments, from the same bytes, consuming as many.
        let decoder = FrameDecoder::new(limit);
        if let Some((payload, consumed)) = decoder.plain_message(&buf) {
            match decoder.decode(&buf) {
                Ok(Decoded::Frame { frame: Frame::Message { attachments, payload: full }, consumed: n }) => {
                    prop_assert!(attachments.is_empty());
                    prop_assert_eq!(full, &buf[payload]);
                    prop_assert_eq!(n, consumed);
                }
                other => prop_assert!(false, "fast path accepted, decode said {:?}", other),
            }
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
        (limit, len) in prop_oneof![0u32..=64, 0u32..u32::MAX].prop_flat_map(|limit| {
            (Just(limit), (effective(limit) + 1)..=u32::MAX)
        }),
        tail in vec(any::<u8>(), 0..16),
    ) {
        let mut buf = len.to_le_bytes().to_vec();
        buf.extend_from_slice(&tail);
        for end in 4..=buf.len() {
            let result = FrameDecoder::new(limit).decode(&buf[..end]);
            prop_assert!(
                matches!(result, Err(Error::FrameTooLarge { len: l, max }) if l == u64::from(len) && max == effective(limit)),
                "{:?}", result
            );
        }
    }

    #[test]
    fn a_limit_under_the_minimum_acts_exactly_as_the_minimum(
        limit in 0u32..MIN_FRAME_LEN,
        buf in decoder_input(),
        frame in sent_frame(),
    ) {
        let small = FrameDecoder::new(limit);
        let minimum = FrameDecoder::new(MIN_FRAME_LEN);
        prop_assert_eq!(small.max_frame_len(), MIN_FRAME_LEN);
        prop_assert_eq!(FrameEncoder::new(limit).max_frame_len(), MIN_FRAME_LEN);
        for end in 0..=buf.len() {
            prop_assert_eq!(
                format!("{:?}", small.decode(&buf[..end])),
                format!("{:?}", minimum.decode(&buf[..end]))
            );
        }
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let built = frame.encode(&FrameEncoder::new(limit), &mut a);
        let built_at_minimum = frame.encode(&FrameEncoder::new(MIN_FRAME_LEN), &mut b);
        prop_assert_eq!(format!("{:?}", built), format!("{:?}", built_at_minimum));
        prop_assert_eq!(a, b);
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

/// How many bytes rmp-serde itself reads for one value at the front of `bytes`, with the
/// same depth budget as `decode_value` (`None` when it cannot read one).
fn read_by_rmp_serde(bytes: &[u8]) -> Option<usize> {
    let mut rest = bytes;
    let mut de = rmp_serde::Deserializer::new(&mut rest);
    de.set_max_depth(MAX_DEPTH + 1);
    IgnoredAny::deserialize(&mut de).ok()?;
    Some(bytes.len() - rest.len())
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
            prop_assert!(matches!(err, Error::Decode(_) | Error::TrailingBytes { .. }), "{:?}", err);
        }
        if let Err(err) = &as_any {
            prop_assert!(matches!(err, Error::Decode(_) | Error::TrailingBytes { .. }), "{:?}", err);
        }
        // A payload that is a valid struct is, first of all, valid MessagePack.
        if as_struct.is_ok() {
            prop_assert!(as_any.is_ok());
        }
        // A struct that decodes has the same extent as the value that holds it.
        if let Err(Error::TrailingBytes { count }) = as_struct {
            prop_assert!(
                matches!(as_any, Err(Error::TrailingBytes { count: c }) if c == count),
                "{:?}", as_any
            );
        }
    }

    #[test]
    fn a_payload_is_accepted_exactly_when_rmp_serde_reads_one_value_and_nothing_after_it(
        bytes in payload_input(),
    ) {
        let result = decode_value::<IgnoredAny>(&bytes);
        match read_by_rmp_serde(&bytes) {
            None => prop_assert!(matches!(result, Err(Error::Decode(_))), "{:?}", result),
            Some(read) if read == bytes.len() => prop_assert!(result.is_ok(), "{:?}", result),
            Some(read) => prop_assert!(
                matches!(result, Err(Error::TrailingBytes { count }) if count == bytes.len() - read),
                "read {} of {}: {:?}", read, bytes.len(), result
            ),
        }
    }

    #[test]
    fn structs_round_trip_through_the_payload_codec(value in small()) {
        let mut bytes = Vec::new();
        encode_value(&mut bytes, &value).unwrap();
        prop_assert_eq!(decode_value::<Small>(&bytes).unwrap(), value);
        prop_assert!(decode_value::<IgnoredAny>(&bytes).is_ok());
    }

    #[test]
    fn bytes_after_an_encoded_value_are_refused_and_counted(
        value in small(),
        tail in vec(any::<u8>(), 1..32),
    ) {
        let mut bytes = Vec::new();
        encode_value(&mut bytes, &value).unwrap();
        bytes.extend_from_slice(&tail);
        let as_struct = decode_value::<Small>(&bytes);
        prop_assert!(
            matches!(as_struct, Err(Error::TrailingBytes { count }) if count == tail.len()),
            "{:?}", as_struct
        );
        let as_any = decode_value::<IgnoredAny>(&bytes);
        prop_assert!(
            matches!(as_any, Err(Error::TrailingBytes { count }) if count == tail.len()),
            "{:?}", as_any
        );
    }
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn nesting_past_max_depth_is_an_error_not_a_stack_overflow(
        depth in prop_oneof![0usize..1200, (MAX_DEPTH - 3)..=(MAX_DEPTH + 3)],
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
        if depth <= MAX_DEPTH {
            prop_assert!(result.is_ok(), "depth {}: {:?}", depth, result);
        } else {
            prop_assert!(
                matches!(result, Err(Error::Decode(rmp_serde::decode::Error::DepthLimitExceeded))),
                "depth {}: {:?}", depth, result
            );
        }
    }
}

/// A MESSAGE's length field: the kind byte, the count byte, the attachments and the payload.
fn message_len(attachments: usize, payload: usize) -> u64 {
    (2 + ATTACHMENT_LEN * attachments + payload) as u64
}

proptest! {
    #![proptest_config(config(1000))]

    #[test]
    fn the_encoder_builds_messages_that_the_decoder_with_the_same_limit_accepts(
        prefix in vec(any::<u8>(), 0..16),
        attachments in prop_oneof![
            3 => vec(attachment(), 0..=3),
            1 => attachments_with_fds(0usize..=MAX_ATTACHMENTS),
            1 => attachments_with_fds(Just(MAX_ATTACHMENTS)),
        ],
        payload in vec(any::<u8>(), 0..600),
        slack in prop_oneof![Just(0u32), 0u32..64, Just(u32::MAX)],
    ) {
        prop_assert!(fds(&attachments) <= MAX_ATTACHMENTS);
        let len = message_len(attachments.len(), payload.len()) as u32;
        let limit = len.saturating_add(slack);
        let expected_bytes = message_bytes(&attachments, &payload);
        let sent = Sent::Message { attachments, payload };
        let mut out = prefix.clone();
        sent.encode(&FrameEncoder::new(limit), &mut out).unwrap();

        prop_assert_eq!(&out[..prefix.len()], &prefix[..]);
        let frame_bytes = &out[prefix.len()..];
        prop_assert_eq!(length_field(frame_bytes), len);
        prop_assert_eq!(frame_bytes, &expected_bytes[..]);
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
        attachments in vec(attachment(), 0..=3),
        payload in vec(any::<u8>(), 0..600),
        shortfall in 1u64..700,
    ) {
        let len = message_len(attachments.len(), payload.len());
        let limit = len.saturating_sub(shortfall) as u32;
        let sent = Sent::Message { attachments, payload };
        let mut out = prefix.clone();
        let result = sent.encode(&FrameEncoder::new(limit), &mut out);
        if len > u64::from(effective(limit)) {
            prop_assert!(
                matches!(result, Err(Error::FrameTooLarge { len: l, max }) if l == len && max == effective(limit)),
                "{:?}", result
            );
            prop_assert_eq!(out, prefix);
        } else {
            // Only under a limit raised to MIN_FRAME_LEN: then the frame fits after all.
            prop_assert!(limit < MIN_FRAME_LEN);
            prop_assert!(result.is_ok(), "{:?}", result);
            match FrameDecoder::new(limit).decode(&out[prefix.len()..]) {
                Ok(Decoded::Frame { frame, .. }) => prop_assert_eq!(Sent::from_frame(&frame), sent),
                other => prop_assert!(false, "{:?}", other),
            }
        }
    }

    #[test]
    fn the_encoder_refuses_more_than_max_attachment_descriptors_and_leaves_the_buffer_unchanged(
        prefix in vec(any::<u8>(), 0..16),
        attachments in prop_oneof![
            3 => attachments_with_fds((MAX_ATTACHMENTS + 1)..=(MAX_ATTACHMENTS + 300)),
            1 => attachments_with_fds(Just(MAX_ATTACHMENTS + 1)),
        ],
        limit in limit(),
    ) {
        let descriptors = fds(&attachments);
        prop_assert!(descriptors > MAX_ATTACHMENTS);
        let mut out = prefix.clone();
        let result = FrameEncoder::new(limit).message_with_attachments(
            &mut out,
            &attachments,
            |p| {
                p.push(0xc0);
                Ok(())
            },
        );
        prop_assert!(
            matches!(result, Err(Error::TooManyAttachments { count }) if count == descriptors),
            "{:?}", result
        );
        prop_assert_eq!(out, prefix);
    }

    #[test]
    fn the_decoder_accepts_at_most_max_attachment_descriptors_counting_a_prefixed_port_as_two(
        attachments in prop_oneof![
            attachments_of_count(120usize..=255),
            // Around the limit: 253 descriptors, then one more (a Port or a prefix).
            (attachments_with_fds(Just(MAX_ATTACHMENTS)), attachment()).prop_map(|(mut a, last)| {
                a.push(last);
                a
            }),
            attachments_with_fds(Just(MAX_ATTACHMENTS)),
        ],
        payload in vec(any::<u8>(), 0..8),
    ) {
        let descriptors = fds(&attachments);
        let bytes = message_bytes(&attachments, &payload);
        let result = FrameDecoder::new(u32::MAX).decode(&bytes);
        if descriptors <= MAX_ATTACHMENTS {
            match result {
                Ok(Decoded::Frame { frame, consumed }) => {
                    prop_assert_eq!(consumed, bytes.len());
                    if let Frame::Message { attachments: got, .. } = &frame {
                        prop_assert_eq!(got.len(), attachments.len());
                        prop_assert_eq!(got.fd_count(), descriptors);
                    }
                    prop_assert_eq!(
                        Sent::from_frame(&frame),
                        Sent::Message { attachments, payload }
                    );
                }
                other => prop_assert!(false, "{} descriptors: {:?}", descriptors, other),
            }
        } else {
            prop_assert!(
                matches!(result, Err(Error::TooManyAttachments { count }) if count == descriptors),
                "{} descriptors: {:?}", descriptors, result
            );
        }
    }

    #[test]
    fn a_payload_that_fails_to_encode_leaves_the_buffer_unchanged(
        prefix in vec(any::<u8>(), 0..16),
        attachments in vec(attachment(), 0..=3),
        written in 0usize..100,
        limit in limit(),
    ) {
        let mut out = prefix.clone();
        let result = FrameEncoder::new(limit).message_with_attachments(
            &mut out,
            &attachments,
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
        if len <= u64::from(effective(limit)) {
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
                matches!(result, Err(Error::FrameTooLarge { len: l, max }) if l == len && max == effective(limit)),
                "{:?}", result
            );
            prop_assert_eq!(out, prefix);
        }
    }

    #[test]
    fn a_hello_is_built_and_decodes_under_any_limit(
        prefix in vec(any::<u8>(), 0..16),
        announced in any::<u32>(),
        limit in prop_oneof![0u32..=20, any::<u32>()],
    ) {
        // Limits under MIN_FRAME_LEN are raised to it, so even 0 holds the 13-byte HELLO.
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
