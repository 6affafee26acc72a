//! The payload codec: MessagePack through serde.
//!
//! Structs are written as maps keyed by field name (not as arrays), so a child written in
//! another language reads them without knowing the Rust field order. A payload is exactly one
//! MessagePack value: bytes after it are refused.
//!
//! Decoding is bounded in stack and memory whatever the payload says: see [`decode_value`].

use serde::{Deserialize, Serialize};

use crate::Error;

/// Appends the MessagePack encoding of `value` to `out`.
///
/// # Errors
///
/// Returns [`Error::Encode`] when `value`'s `Serialize` implementation fails. `out` may then
/// hold a partial encoding after its original end; callers that care truncate it (the frame
/// encoder does).
pub fn encode_value<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) -> Result<(), Error> {
    rmp_serde::encode::write_named(out, value).map_err(Error::Encode)
}

/// Appends the MessagePack encoding of `value` to `out`, giving up as soon as the encoding
/// passes `cap` bytes, so that a value too large to send never costs more than `cap` bytes of
/// memory.
///
/// # Errors
///
/// [`Error::FrameTooLarge`] (with `len` the size reached, at least `cap + 1`) when the
/// encoding exceeds `cap`, and [`Error::Encode`] as [`encode_value`]. On error `out` is left
/// exactly as it was.
pub fn encode_value_capped<T: Serialize + ?Sized>(
    out: &mut Vec<u8>,
    value: &T,
    cap: usize,
) -> Result<(), Error> {
    let start = out.len();
    let mut writer = Capped { out, start, cap };
    let result = rmp_serde::encode::write_named(&mut writer, value);
    let written = writer.out.len() - start;
    match result {
        Ok(()) => Ok(()),
        Err(e) => {
            out.truncate(start);
            if written >= cap {
                Err(Error::FrameTooLarge {
                    len: written as u64 + 1,
                    max: u32::try_from(cap).unwrap_or(u32::MAX),
                })
            } else {
                Err(Error::Encode(e))
            }
        }
    }
}

/// A `Vec` writer that refuses to grow past `cap` bytes after `start`.
struct Capped<'a> {
    out: &'a mut Vec<u8>,
    start: usize,
    cap: usize,
}

impl std::io::Write for Capped<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.out.len() - self.start + buf.len() > self.cap {
            let room = self.cap - (self.out.len() - self.start);
            self.out.extend_from_slice(&buf[..room]);
            return Err(std::io::Error::new(
                std::io::ErrorKind::WriteZero,
                "message exceeds the size limit",
            ));
        }
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// How deeply arrays and maps may nest in a decoded payload: `MAX_DEPTH` levels decode, one
/// more is an [`Error::Decode`]. An ext value (a MessagePack timestamp, for one) counts as a
/// level too, so `[[nil]]` is 2 levels deep and `[[ext]]` 3.
///
/// `rmp-serde`'s own default (1024) overflows a 2 MiB thread stack in debug builds; 256 levels
/// is far beyond any real message and safe on the smallest stacks tokio and std hand out.
pub const MAX_DEPTH: usize = 256;

/// Decodes a MessagePack payload into a `T`. `T` may borrow from `bytes`.
///
/// The payload must be exactly one MessagePack value. Decoding is bounded in stack and
/// memory, whatever the payload says:
///
/// - **Stack**: nesting deeper than [`MAX_DEPTH`] is refused before it recurses further.
/// - **Pre-allocation**: a collection's announced length is only a hint. serde's own
///   collections (`Vec`, `HashMap`, `VecDeque`, ...) reserve at most **1 MiB** up front from
///   it (serde's `size_hint::cautious`), then grow as elements really arrive; strings and
///   byte arrays are borrowed or copied from the payload, never sized from an announced
///   length. So a hostile payload of a few bytes can make the receiver allocate up to 1 MiB
///   for each collection being decoded at the same time: at most [`MAX_DEPTH`] MiB for a `T`
///   that nests collections that deep, 1 MiB for a flat one. It is freed as soon as decoding
///   fails, which it does when the announced elements are not there.
/// - **The value itself** takes what `T` needs for the elements the payload really holds.
///   That can exceed the payload's size when an element is larger in memory than on the
///   wire (a `Vec<Option<[u8; 1024]>>` of `nil`s takes 1 KiB per payload byte), so the
///   receiver's choice of `T` bounds it, not this codec. A hand-written `Deserialize` that
///   reserves from a length hint is bounded only by what it does.
///
/// # Errors
///
/// Returns [`Error::Decode`] when the bytes are not MessagePack, do not match `T`'s shape,
/// contain invalid UTF-8 where `T` wants a string, or nest deeper than [`MAX_DEPTH`]; and
/// [`Error::TrailingBytes`] when `T` decodes but bytes follow the value.
pub fn decode_value<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, Error> {
    let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
    // rmp-serde counts this budget down on entering each level and fails when it reaches
    // zero, so MAX_DEPTH + 1 lets exactly MAX_DEPTH levels through.
    de.set_max_depth(MAX_DEPTH + 1);
    let value = T::deserialize(&mut de).map_err(Error::Decode)?;
    // rmp-serde does not tell where it stopped, so measure the value it has just read. `None`
    // (not a whole value) is only possible for a hand-written `Deserialize` that reads less
    // than a value: then none of the bytes count as read.
    let unread = bytes.len() - value_len(bytes).unwrap_or(0);
    if unread == 0 {
        Ok(value)
    } else {
        Err(Error::TrailingBytes { count: unread })
    }
}

/// The size of the MessagePack value at the front of `bytes`, or `None` when `bytes` does not
/// start with a whole value.
///
/// It reads headers only (the contents of strings, binaries and exts are stepped over at
/// once) and counts the values still to step over instead of recursing, so nesting costs it
/// no stack.
fn value_len(bytes: &[u8]) -> Option<usize> {
    let mut pos = 0;
    // Each pending value takes at least one byte, so `pending` stays at most the bytes left:
    // a count that could not fit is refused before it is added.
    let mut pending: usize = 1;
    while pending > 0 {
        pending -= 1;
        let marker = *bytes.get(pos)?;
        pos += 1;
        // (bytes to step over, values to add), after any length field.
        let (skip, values) = match marker {
            0x00..=0x7f | 0xc0 | 0xc2 | 0xc3 | 0xe0..=0xff => (0, 0),
            0x80..=0x8f => (0, 2 * usize::from(marker & 0x0f)),
            0x90..=0x9f => (0, usize::from(marker & 0x0f)),
            0xa0..=0xbf => (usize::from(marker & 0x1f), 0),
            0xc1 => return None,
            // bin 8/16/32 and str 8/16/32
            0xc4 | 0xd9 => (length(bytes, &mut pos, 1)?, 0),
            0xc5 | 0xda => (length(bytes, &mut pos, 2)?, 0),
            0xc6 | 0xdb => (length(bytes, &mut pos, 4)?, 0),
            // ext 8/16/32: the data and a type byte
            0xc7 => (length(bytes, &mut pos, 1)? + 1, 0),
            0xc8 => (length(bytes, &mut pos, 2)? + 1, 0),
            0xc9 => (length(bytes, &mut pos, 4)?.checked_add(1)?, 0),
            // numbers
            0xcc | 0xd0 => (1, 0),
            0xcd | 0xd1 => (2, 0),
            0xca | 0xce | 0xd2 => (4, 0),
            0xcb | 0xcf | 0xd3 => (8, 0),
            // fixext 1/2/4/8/16: a type byte and the data
            0xd4 => (2, 0),
            0xd5 => (3, 0),
            0xd6 => (5, 0),
            0xd7 => (9, 0),
            0xd8 => (17, 0),
            // array 16/32 and map 16/32
            0xdc => (0, length(bytes, &mut pos, 2)?),
            0xdd => (0, length(bytes, &mut pos, 4)?),
            0xde => (0, 2 * length(bytes, &mut pos, 2)?),
            0xdf => (0, length(bytes, &mut pos, 4)?.checked_mul(2)?),
        };
        pos = pos.checked_add(skip).filter(|&end| end <= bytes.len())?;
        pending = pending
            .checked_add(values)
            .filter(|&pending| pending <= bytes.len() - pos)?;
    }
    Some(pos)
}

/// Reads the big-endian length field of `width` bytes at `pos`, and moves `pos` past it.
fn length(bytes: &[u8], pos: &mut usize, width: usize) -> Option<usize> {
    let field = bytes.get(*pos..*pos + width)?;
    *pos += width;
    // Fits: at most 4 bytes, and usize has at least 32 bits on every target std supports.
    Some(field.iter().fold(0, |len, &b| len << 8 | usize::from(b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Task {
        id: u32,
        name: String,
    }

    #[test]
    fn structs_round_trip_as_named_maps() {
        let mut out = Vec::new();
        encode_value(
            &mut out,
            &Task {
                id: 7,
                name: "x".into(),
            },
        )
        .unwrap();
        // fixmap of two entries: field names travel with the values.
        assert_eq!(out[0], 0x82);
        assert_eq!(
            decode_value::<Task>(&out).unwrap(),
            Task {
                id: 7,
                name: "x".into()
            }
        );
    }

    #[test]
    fn capped_encoding_stops_at_the_cap_and_leaves_the_buffer_intact() {
        let mut out = b"head".to_vec();
        let big = vec![7u8; 1000];
        let err = encode_value_capped(&mut out, &big, 100).unwrap_err();
        assert!(matches!(err, Error::FrameTooLarge { len: 101, max: 100 }));
        assert_eq!(out, b"head");
        encode_value_capped(&mut out, &big, 2000).unwrap();
        assert_eq!(decode_value::<Vec<u8>>(&out[4..]).unwrap(), big);
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let bytes = vec![0x91u8; 1_000_000]; // a million nested one-element arrays
        assert!(decode_value::<serde_json_like::Any>(&bytes).is_err());
    }

    /// `depth` levels, alternately one-element arrays and one-entry maps `{nil: ...}`, around
    /// `leaf`.
    fn nested(depth: usize, leaf: &[u8]) -> Vec<u8> {
        let mut bytes = Vec::new();
        for level in 0..depth {
            if level % 2 == 0 {
                bytes.push(0x91);
            } else {
                bytes.extend_from_slice(&[0x81, 0xc0]);
            }
        }
        bytes.extend_from_slice(leaf);
        bytes
    }

    fn is_too_deep<T>(result: Result<T, Error>) -> bool {
        matches!(
            result,
            Err(Error::Decode(rmp_serde::decode::Error::DepthLimitExceeded))
        )
    }

    /// Run on a 2 MiB thread, the smallest stack std and tokio give a thread by default: this
    /// is what checks that `MAX_DEPTH` levels fit there in a debug build, with serde's own
    /// `IgnoredAny` and with a recursive user type.
    #[test]
    fn exactly_max_depth_levels_decode_and_one_more_fails_on_a_2_mib_stack() {
        std::thread::Builder::new()
            .stack_size(2 * 1024 * 1024)
            .spawn(|| {
                for depth in [0, 1, MAX_DEPTH - 1, MAX_DEPTH] {
                    let bytes = nested(depth, &[0xc0]);
                    decode_value::<serde_json_like::Any>(&bytes).unwrap();
                    let tree = decode_value::<serde_json_like::Tree>(&bytes).unwrap();
                    assert_eq!(tree.depth(), depth);
                }
                for depth in [MAX_DEPTH + 1, MAX_DEPTH + 2, 10 * MAX_DEPTH] {
                    let bytes = nested(depth, &[0xc0]);
                    assert!(is_too_deep(decode_value::<serde_json_like::Any>(&bytes)));
                    assert!(is_too_deep(decode_value::<serde_json_like::Tree>(&bytes)));
                }
                // An ext value is one more level.
                let ext = [0xd4, 0x01, 0x00];
                decode_value::<serde_json_like::Any>(&nested(MAX_DEPTH - 1, &ext)).unwrap();
                assert!(is_too_deep(decode_value::<serde_json_like::Any>(&nested(
                    MAX_DEPTH, &ext
                ))));
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn bytes_after_the_value_are_refused() {
        assert_eq!(decode_value::<String>(b"\xa2hi").unwrap(), "hi");
        assert_eq!(decode_value::<&str>(b"\xa2hi").unwrap(), "hi");
        assert!(matches!(
            decode_value::<String>(b"\xa2hi garbage"),
            Err(Error::TrailingBytes { count: 8 })
        ));
        assert!(matches!(
            decode_value::<serde_json_like::Any>(&[0xc0, 0xc0]),
            Err(Error::TrailingBytes { count: 1 })
        ));
        // What does not decode is a decoding error, whatever follows.
        assert!(matches!(
            decode_value::<u32>(b"\xa2hi garbage"),
            Err(Error::Decode(_))
        ));
        assert!(matches!(decode_value::<()>(&[]), Err(Error::Decode(_))));
    }

    /// Every kind of MessagePack value, by its first byte.
    fn one_of_each_kind() -> Vec<Vec<u8>> {
        let mut values: Vec<Vec<u8>> = vec![
            vec![0x00],
            vec![0x7f],
            vec![0xe0],
            vec![0xff],
            vec![0xc0],
            vec![0xc2],
            vec![0xc3],
            vec![0x80],
            vec![0x82, 0x01, 0x02, 0xa1, b'k', 0x90],
            vec![0x90],
            vec![0x93, 0x01, 0x92, 0xc0, 0xc0, 0x80],
            vec![0xa0],
            vec![0xa3, b'a', b'b', b'c'],
            vec![0xc4, 0x02, 1, 2],
            vec![0xc5, 0x00, 0x01, 9],
            vec![0xc6, 0, 0, 0, 0x03, 1, 2, 3],
            vec![0xd9, 0x01, b'x'],
            vec![0xda, 0x00, 0x00],
            vec![0xdb, 0, 0, 0, 0x02, b'x', b'y'],
            vec![0xc7, 0x01, 0x05, 0xaa],
            vec![0xc8, 0x00, 0x02, 0x05, 0xaa, 0xbb],
            vec![0xc9, 0, 0, 0, 0x00, 0x05],
            vec![0xca, 0, 0, 0, 0],
            vec![0xcb, 0, 0, 0, 0, 0, 0, 0, 0],
            vec![0xcc, 0xff],
            vec![0xcd, 0xff, 0xff],
            vec![0xce, 0xff, 0xff, 0xff, 0xff],
            vec![0xcf, 1, 2, 3, 4, 5, 6, 7, 8],
            vec![0xd0, 0x80],
            vec![0xd1, 0x80, 0x00],
            vec![0xd2, 0x80, 0, 0, 0],
            vec![0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0],
            vec![0xd4, 0x01, 0x00],
            vec![0xd5, 0x01, 0x00, 0x00],
            vec![0xd6, 0xff, 0, 0, 0, 0],
            vec![0xd7, 0xff, 0, 0, 0, 0, 0, 0, 0, 0],
            vec![0xd8, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            vec![0xdc, 0x00, 0x02, 0xc0, 0xc3],
            vec![0xdd, 0, 0, 0, 0x01, 0xc0],
            vec![0xde, 0x00, 0x01, 0xc0, 0x90],
            vec![0xdf, 0, 0, 0, 0x01, 0xa1, b'k', 0x91, 0x80],
        ];
        // Long enough for every length width, through rmp-serde's own encoder.
        for n in [31, 32, 255, 256, 65_535, 65_536] {
            let mut out = Vec::new();
            encode_value(&mut out, &"x".repeat(n)).unwrap();
            values.push(out);
            let mut out = Vec::new();
            encode_value(&mut out, &vec![true; n]).unwrap();
            values.push(out);
            let mut out = Vec::new();
            let map: std::collections::BTreeMap<u32, ()> = (0..n as u32).map(|k| (k, ())).collect();
            encode_value(&mut out, &map).unwrap();
            values.push(out);
        }
        values
    }

    /// How many bytes rmp-serde itself reads for one value at the front of `bytes`.
    fn read_by_rmp_serde(bytes: &[u8]) -> Option<usize> {
        let mut rest = bytes;
        let mut de = rmp_serde::Deserializer::new(&mut rest);
        de.set_max_depth(MAX_DEPTH + 1);
        serde::de::IgnoredAny::deserialize(&mut de).ok()?;
        Some(bytes.len() - rest.len())
    }

    #[test]
    fn value_len_measures_every_kind_of_value_as_rmp_serde_reads_it() {
        for value in one_of_each_kind() {
            let len = value.len();
            assert_eq!(value_len(&value), Some(len), "{:x?}", &value[..len.min(8)]);
            let mut longer = value.clone();
            longer.extend_from_slice(&[0xc0, 0x91]);
            assert_eq!(value_len(&longer), Some(len));
            assert_eq!(read_by_rmp_serde(&longer), Some(len));
            decode_value::<serde_json_like::Any>(&value).unwrap();
            assert!(matches!(
                decode_value::<serde_json_like::Any>(&longer),
                Err(Error::TrailingBytes { count: 2 })
            ));
            for end in (0..len).rev().take(10) {
                assert_eq!(value_len(&value[..end]), None, "{end} of {len}");
            }
        }
        assert_eq!(value_len(&[0xc1]), None);
        // Counts no byte could back are refused without arithmetic overflow.
        assert_eq!(value_len(&[0xdf, 0xff, 0xff, 0xff, 0xff]), None);
        assert_eq!(value_len(&[0xdd, 0xff, 0xff, 0xff, 0xff, 0xc0]), None);
        assert_eq!(value_len(&[0xc9, 0xff, 0xff, 0xff, 0xff, 0x01]), None);
        assert_eq!(value_len(&[0xdb, 0xff, 0xff, 0xff, 0xff]), None);
    }

    /// Self-describing sinks, to decode any shape.
    mod serde_json_like {
        use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

        pub struct Any;
        impl<'de> Deserialize<'de> for Any {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                IgnoredAny::deserialize(d).map(|_| Any)
            }
        }

        /// A recursive user type: every array and map is a node, anything else a leaf.
        pub enum Tree {
            Leaf,
            Node(Vec<Tree>),
        }

        impl Tree {
            /// How many nodes deep the tree goes.
            pub fn depth(&self) -> usize {
                match self {
                    Tree::Leaf => 0,
                    Tree::Node(children) => 1 + children.iter().map(Tree::depth).max().unwrap_or(0),
                }
            }
        }

        impl<'de> Deserialize<'de> for Tree {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct TreeVisitor;
                impl<'de> Visitor<'de> for TreeVisitor {
                    type Value = Tree;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str("nil, an array or a map")
                    }
                    fn visit_unit<E>(self) -> Result<Tree, E> {
                        Ok(Tree::Leaf)
                    }
                    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Tree, A::Error> {
                        let mut children = Vec::new();
                        while let Some(child) = seq.next_element()? {
                            children.push(child);
                        }
                        Ok(Tree::Node(children))
                    }
                    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Tree, A::Error> {
                        let mut children = Vec::new();
                        while let Some((key, value)) = map.next_entry()? {
                            children.push(key);
                            children.push(value);
                        }
                        Ok(Tree::Node(children))
                    }
                }
                d.deserialize_any(TreeVisitor)
            }
        }
    }
}
