//! The payload codec: MessagePack through serde.
//!
//! Structs are written as maps keyed by field name (not as arrays), so a child written in
//! another language reads them without knowing the Rust field order. Decoding is bounded by
//! `rmp-serde`'s nesting limit and by serde's cautious pre-allocation, so a hostile payload
//! cannot overflow the stack or make the receiver allocate more than the payload's own size.

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

/// How deeply arrays and maps may nest in a decoded payload.
///
/// `rmp-serde`'s own default (1024) overflows a 2 MiB thread stack in debug builds; 256 levels
/// is far beyond any real message and safe on the smallest stacks tokio and std hand out.
pub const MAX_DEPTH: usize = 256;

/// Decodes a MessagePack payload into a `T`.
///
/// # Errors
///
/// Returns [`Error::Decode`] when the bytes are not MessagePack, do not match `T`'s shape,
/// contain invalid UTF-8 where `T` wants a string, or nest deeper than [`MAX_DEPTH`].
pub fn decode_value<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, Error> {
    let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
    de.set_max_depth(MAX_DEPTH);
    T::deserialize(&mut de).map_err(Error::Decode)
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

    /// A self-describing sink, to decode any shape.
    mod serde_json_like {
        use serde::de::{Deserialize, Deserializer, IgnoredAny};

        pub struct Any;
        impl<'de> Deserialize<'de> for Any {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                IgnoredAny::deserialize(d).map(|_| Any)
            }
        }
    }
}
