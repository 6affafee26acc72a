//! The input is a message payload as a hostile child would send it: arbitrary bytes that the
//! user decodes with `Message::data::<T>()`, that is `decode_value::<T>`. Beyond "no panic, no
//! stack overflow, no huge allocation" (run with `-malloc_limit_mb=8`: no single allocation
//! may exceed 8 MiB, however large the lengths the payload announces):
//! - into `Any`, a recursive value decoded through `deserialize_any` (what a receiver that
//!   accepts anything uses): a value that decodes nests at most `MAX_DEPTH` levels, re-encodes,
//!   and decodes again to the same value; bytes the codec refuses are `Decode` or
//!   `TrailingBytes`, nothing else;
//! - into `Typed`, a struct with the shapes users post (strings borrowed and owned, an enum,
//!   a map, options, a tuple, a char): no panic, and a success re-encodes and decodes equal.
#![no_main]

use std::collections::BTreeMap;
use std::fmt;

use libfuzzer_sys::fuzz_target;
use serde::de::{Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};
use utility_process_wire::{decode_value, encode_value, Error, MAX_DEPTH};

/// Any MessagePack value. Floats compare by their bits, so NaN equals itself.
#[derive(Debug, Clone)]
enum Any {
    Nil,
    Bool(bool),
    Int(i64),
    UInt(u64),
    F32(f32),
    F64(f64),
    Str(String),
    Bytes(Vec<u8>),
    Array(Vec<Any>),
    Map(Vec<(Any, Any)>),
}

impl PartialEq for Any {
    fn eq(&self, other: &Any) -> bool {
        use Any::*;
        match (self, other) {
            (Nil, Nil) => true,
            (Bool(a), Bool(b)) => a == b,
            (Int(a), Int(b)) => a == b,
            (UInt(a), UInt(b)) => a == b,
            // rmp-serde writes non-negative integers as unsigned.
            (Int(a), UInt(b)) | (UInt(b), Int(a)) => u64::try_from(*a) == Ok(*b),
            (F32(a), F32(b)) => a.to_bits() == b.to_bits(),
            (F64(a), F64(b)) => a.to_bits() == b.to_bits(),
            (Str(a), Str(b)) => a == b,
            (Bytes(a), Bytes(b)) => a == b,
            (Array(a), Array(b)) => a == b,
            (Map(a), Map(b)) => a == b,
            _ => false,
        }
    }
}

impl Any {
    fn depth(&self) -> usize {
        match self {
            Any::Array(items) => 1 + items.iter().map(Any::depth).max().unwrap_or(0),
            Any::Map(entries) => {
                1 + entries
                    .iter()
                    .map(|(k, v)| k.depth().max(v.depth()))
                    .max()
                    .unwrap_or(0)
            }
            _ => 0,
        }
    }
}

impl<'de> Deserialize<'de> for Any {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Any, D::Error> {
        deserializer.deserialize_any(AnyVisitor)
    }
}

struct AnyVisitor;

impl<'de> Visitor<'de> for AnyVisitor {
    type Value = Any;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any value")
    }
    fn visit_unit<E>(self) -> Result<Any, E> {
        Ok(Any::Nil)
    }
    fn visit_none<E>(self) -> Result<Any, E> {
        Ok(Any::Nil)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Any, D::Error> {
        Any::deserialize(d)
    }
    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Any, D::Error> {
        Any::deserialize(d)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Any, E> {
        Ok(Any::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Any, E> {
        Ok(Any::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Any, E> {
        Ok(Any::UInt(v))
    }
    fn visit_f32<E>(self, v: f32) -> Result<Any, E> {
        Ok(Any::F32(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Any, E> {
        Ok(Any::F64(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Any, E> {
        Ok(Any::Str(v.to_owned()))
    }
    fn visit_bytes<E>(self, v: &[u8]) -> Result<Any, E> {
        Ok(Any::Bytes(v.to_vec()))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Any, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Any::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Any, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry()? {
            entries.push(entry);
        }
        Ok(Any::Map(entries))
    }
}

impl Serialize for Any {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Any::Nil => s.serialize_unit(),
            Any::Bool(v) => s.serialize_bool(*v),
            Any::Int(v) => s.serialize_i64(*v),
            Any::UInt(v) => s.serialize_u64(*v),
            Any::F32(v) => s.serialize_f32(*v),
            Any::F64(v) => s.serialize_f64(*v),
            Any::Str(v) => s.serialize_str(v),
            Any::Bytes(v) => s.serialize_bytes(v),
            Any::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Any::Map(entries) => {
                let mut map = s.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

/// The shapes users post.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Typed<'a> {
    name: &'a str,
    owned: String,
    kind: Kind,
    tags: BTreeMap<String, Vec<Option<i32>>>,
    pair: (u8, char),
    nested: Option<Box<Typed<'a>>>,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum Kind {
    Unit,
    Newtype(u64),
    Tuple(i16, bool),
    Struct { x: u32, y: Vec<u16> },
}

fuzz_target!(|payload: &[u8]| {
    match decode_value::<Any>(payload) {
        Ok(value) => {
            assert!(value.depth() <= MAX_DEPTH, "{} levels decoded", value.depth());
            let mut again = Vec::new();
            encode_value(&mut again, &value).expect("a decoded value re-encodes");
            let back: Any = decode_value(&again).expect("a re-encoded value decodes");
            assert_eq!(back, value);
        }
        Err(Error::Decode(_) | Error::TrailingBytes { .. }) => {}
        Err(other) => panic!("unexpected error kind {other:?}"),
    }
    if let Ok(value) = decode_value::<Typed<'_>>(payload) {
        let mut again = Vec::new();
        encode_value(&mut again, &value).expect("a decoded value re-encodes");
        let back: Typed<'_> = decode_value(&again).expect("a re-encoded value decodes");
        assert_eq!(back, value);
    }
});
