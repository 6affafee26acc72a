//! The wire format of `utility-process`, as pure functions over bytes.
//!
//! A channel carries **frames**: a little-endian `u32` length, a kind byte, and a body. The
//! first frame each side writes on a parent port is a [`Hello`]; after it come
//! [`MESSAGE`](FrameKind::Message) frames (attachments, then an opaque payload) and, from a
//! child, [`PANIC`](FrameKind::Panic) and [`FAILURE`](FrameKind::Failure) reports.
//! `docs/PROTOCOL.md` in the repository is the normative description, precise enough to
//! write a child in another language.
//!
//! This crate does no I/O and holds no `unsafe`: everything here is a function from bytes to
//! values (or to an [`Error`]), so it can be fuzzed and property-tested on its own. Every
//! frame length read from a peer is checked against a limit *before* anything is allocated
//! for it; what decoding a payload may allocate is bounded as [`decode_value`] describes.
//!
//! ```
//! use utility_process_wire::{Decoded, FrameDecoder, FrameEncoder, Frame};
//!
//! let mut out = Vec::new();
//! FrameEncoder::new(1024).message(&mut out, |payload| {
//!     payload.extend_from_slice(b"hello");
//!     Ok(())
//! })?;
//!
//! let decoder = FrameDecoder::new(1024);
//! match decoder.decode(&out)? {
//!     Decoded::Frame { frame: Frame::Message { payload, attachments }, consumed } => {
//!         assert_eq!(payload, b"hello");
//!         assert!(attachments.is_empty());
//!         assert_eq!(consumed, out.len());
//!     }
//!     other => panic!("unexpected {other:?}"),
//! }
//! # Ok::<(), utility_process_wire::Error>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod codec;
mod envelope;
mod error;
mod frame;

pub use codec::{decode_value, encode_value, encode_value_capped, MAX_DEPTH};
pub use envelope::{
    Attachment, Attachments, FailureReport, Frame, FrameKind, Hello, PanicReport, ATTACHMENT_LEN,
    MAGIC, MAX_ATTACHMENTS, VERSION,
};
pub use error::Error;
pub use frame::{
    Decoded, FrameDecoder, FrameEncoder, DEFAULT_MAX_FRAME_LEN, ENVELOPE_ROOM, HEADER_LEN,
    MIN_FRAME_LEN,
};
