//! Frames: a little-endian `u32` length, a kind byte, a body.
//!
//! [`FrameDecoder`] looks at the front of a receive buffer and says whether a whole frame is
//! there, how many bytes it still needs, or why the bytes are not a frame. It checks the
//! announced length against its limit before the caller could allocate anything for it, so a
//! peer that announces 4 GiB costs nothing. [`FrameEncoder`] appends frames to a send buffer in
//! place — no intermediate allocation — and refuses, leaving the buffer as it was, any frame
//! over its limit.
//!
//! Both take a limit on the length field, raised to at least [`MIN_FRAME_LEN`].

use crate::envelope::{
    Attachment, FailureReport, Frame, FrameKind, Hello, PanicReport, HELLO_LEN, MAX_ATTACHMENTS,
};
use crate::Error;

/// Bytes before a frame's body: the `u32` length and the kind byte.
pub const HEADER_LEN: usize = 5;

/// Room a frame limit keeps above the payload limit, for the kind byte and the envelope.
pub const ENVELOPE_ROOM: u32 = 4096;

/// The default limit on a frame's length field: room for a 64 MiB payload and its envelope.
pub const DEFAULT_MAX_FRAME_LEN: u32 = 64 * 1024 * 1024 + ENVELOPE_ROOM;

/// The smallest limit on a frame's length field: [`FrameDecoder::new`] and
/// [`FrameEncoder::new`] raise any smaller limit to this one.
///
/// A `HELLO` (a length field of 13) always fits, so every encoder can write the handshake
/// and every decoder can read it; and a decoder's request for more bytes,
/// [`Decoded::Incomplete`], never exceeds `4 +` its limit, even before the length field is in
/// (when it asks for [`HEADER_LEN`] bytes).
pub const MIN_FRAME_LEN: u32 = 16;

/// The length field of a `HELLO`: the kind byte and the body.
const HELLO_FRAME_LEN: u32 = 1 + HELLO_LEN as u32;

// The two promises above.
const _: () = assert!(HELLO_FRAME_LEN <= MIN_FRAME_LEN);
const _: () = assert!(HEADER_LEN as u32 <= 4 + MIN_FRAME_LEN);

/// What [`FrameDecoder::decode`] found at the front of a buffer.
#[derive(Debug)]
pub enum Decoded<'a> {
    /// A whole frame, and the number of bytes it took from the front of the buffer.
    Frame {
        /// The frame, borrowing from the buffer.
        frame: Frame<'a>,
        /// How many bytes of the buffer the frame covered.
        consumed: usize,
    },
    /// Not yet a whole frame: the buffer must hold at least `needed` bytes before a frame can
    /// be decoded. Once the length field is in, `needed` is the exact size of the frame.
    Incomplete {
        /// The number of bytes, from the front of the buffer, needed to go on.
        needed: usize,
    },
}

/// Decodes frames from the front of a buffer, enforcing a maximum frame length.
///
/// The decoder holds no buffer of its own: the transport owns the bytes and asks, after each
/// read, what the front of its buffer holds. That keeps it free of I/O and easy to fuzz.
#[derive(Debug, Clone, Copy)]
pub struct FrameDecoder {
    max_frame_len: u32,
}

impl FrameDecoder {
    /// A decoder that refuses frames whose length field exceeds `max_frame_len`, or
    /// [`MIN_FRAME_LEN`] if that is larger.
    pub fn new(max_frame_len: u32) -> Self {
        FrameDecoder {
            max_frame_len: max_frame_len.max(MIN_FRAME_LEN),
        }
    }

    /// The largest length field this decoder accepts (at least [`MIN_FRAME_LEN`]).
    pub fn max_frame_len(&self) -> u32 {
        self.max_frame_len
    }

    /// Decodes the frame at the front of `buf`, if it is all there.
    ///
    /// # Errors
    ///
    /// Returns an error, as soon as the length field is in, when the length is zero or over the
    /// limit; and once the frame is whole, when its kind or body is malformed. Every error is a
    /// protocol violation by the peer: the channel cannot go on.
    pub fn decode<'a>(&self, buf: &'a [u8]) -> Result<Decoded<'a>, Error> {
        let Some(len_bytes) = buf.get(..4) else {
            return Ok(Decoded::Incomplete { needed: HEADER_LEN });
        };
        let len = u32::from_le_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]);
        if len == 0 {
            return Err(Error::EmptyFrame);
        }
        if len > self.max_frame_len {
            return Err(Error::FrameTooLarge {
                len: u64::from(len),
                max: self.max_frame_len,
            });
        }
        // Saturating: on a 32-bit target a limit near u32::MAX could otherwise wrap.
        let total = 4usize.saturating_add(len as usize);
        if buf.len() < total {
            return Ok(Decoded::Incomplete { needed: total });
        }
        let frame = Frame::parse(buf[4], &buf[HEADER_LEN..total])?;
        Ok(Decoded::Frame {
            frame,
            consumed: total,
        })
    }
}

impl FrameDecoder {
    /// Decodes the frame at the front of `buf` if it is a whole `MESSAGE` without
    /// attachments, the common case, without building a [`Frame`]: where its payload lies in
    /// `buf`, and how many bytes the frame covers.
    ///
    /// `None` for anything else (another kind, attachments, a frame not all there yet, or
    /// bytes that are not a frame at all): [`decode`](Self::decode) then says what it is.
    /// Whatever this accepts, `decode` accepts too, as the same payload.
    ///
    /// # Examples
    ///
    /// ```
    /// use utility_process_wire::{FrameDecoder, FrameEncoder};
    ///
    /// let mut buf = Vec::new();
    /// FrameEncoder::new(1024).message(&mut buf, |p| {
    ///     p.extend_from_slice(b"hi");
    ///     Ok(())
    /// })?;
    /// let decoder = FrameDecoder::new(1024);
    /// let (payload, consumed) = decoder.plain_message(&buf).expect("a plain message");
    /// assert_eq!(&buf[payload], b"hi");
    /// assert_eq!(consumed, buf.len());
    /// assert!(decoder.plain_message(&buf[..buf.len() - 1]).is_none(), "not all there");
    /// # Ok::<(), utility_process_wire::Error>(())
    /// ```
    #[inline]
    pub fn plain_message(&self, buf: &[u8]) -> Option<(std::ops::Range<usize>, usize)> {
        let header: &[u8; HEADER_LEN + 1] = buf.get(..HEADER_LEN + 1)?.try_into().ok()?;
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        // The kind byte and the attachment count are in the length: at least 2.
        if len < 2 || len > self.max_frame_len {
            return None;
        }
        if header[4] != FrameKind::Message as u8 || header[5] != 0 {
            return None;
        }
        let total = 4usize.saturating_add(len as usize);
        if buf.len() < total {
            return None;
        }
        Some((HEADER_LEN + 1..total, total))
    }
}

/// Appends frames to a send buffer, enforcing a maximum frame length.
#[derive(Debug, Clone, Copy)]
pub struct FrameEncoder {
    max_frame_len: u32,
}

impl FrameEncoder {
    /// An encoder that refuses to build frames whose length field would exceed
    /// `max_frame_len`, or [`MIN_FRAME_LEN`] if that is larger.
    pub fn new(max_frame_len: u32) -> Self {
        FrameEncoder {
            max_frame_len: max_frame_len.max(MIN_FRAME_LEN),
        }
    }

    /// The largest length field this encoder builds (at least [`MIN_FRAME_LEN`]).
    pub fn max_frame_len(&self) -> u32 {
        self.max_frame_len
    }

    /// Appends a `HELLO` frame to `out`. It always fits: its length field is 13, and the
    /// limit is at least [`MIN_FRAME_LEN`].
    pub fn hello(&self, out: &mut Vec<u8>, hello: &Hello) {
        let start = begin(out, FrameKind::Hello);
        hello.write_body(out);
        patch_len(out, start, self.max_frame_len).expect("a HELLO fits MIN_FRAME_LEN");
    }

    /// Appends a `MESSAGE` frame without attachments; `fill` appends the payload.
    ///
    /// # Errors
    ///
    /// Returns the error of `fill`, or [`Error::FrameTooLarge`] when the frame would exceed
    /// the limit. Either way `out` is left exactly as it was.
    pub fn message<F>(&self, out: &mut Vec<u8>, fill: F) -> Result<(), Error>
    where
        F: FnOnce(&mut Vec<u8>) -> Result<(), Error>,
    {
        self.message_with_attachments(out, &[], fill)
    }

    /// Appends a `MESSAGE` frame announcing `attachments`; `fill` appends the payload.
    ///
    /// The descriptors themselves travel beside the bytes (`SCM_RIGHTS`); this only writes
    /// their kinds into the envelope.
    ///
    /// # Errors
    ///
    /// As [`message`](Self::message), and [`Error::TooManyAttachments`] for more than
    /// [`MAX_ATTACHMENTS`].
    pub fn message_with_attachments<F>(
        &self,
        out: &mut Vec<u8>,
        attachments: &[Attachment],
        fill: F,
    ) -> Result<(), Error>
    where
        F: FnOnce(&mut Vec<u8>) -> Result<(), Error>,
    {
        let fds: usize = attachments.iter().map(|a| a.fd_count()).sum();
        if fds > MAX_ATTACHMENTS {
            return Err(Error::TooManyAttachments { count: fds });
        }
        let start = begin(out, FrameKind::Message);
        // Fits: at most MAX_ATTACHMENTS (253) attachments, as each takes a descriptor.
        out.push(attachments.len() as u8);
        for attachment in attachments {
            attachment.write(out);
        }
        let filled = fill(out).and_then(|()| patch_len(out, start, self.max_frame_len));
        if filled.is_err() {
            out.truncate(start);
        }
        filled
    }

    /// Appends a `PANIC` frame carrying `report` to `out`.
    ///
    /// # Errors
    ///
    /// Returns [`Error::FrameTooLarge`] when the report (a very long panic message) does not
    /// fit the limit, leaving `out` as it was.
    pub fn panic(&self, out: &mut Vec<u8>, report: &PanicReport) -> Result<(), Error> {
        self.report(out, FrameKind::Panic, report)
    }

    /// Appends a `FAILURE` frame carrying `report`.
    ///
    /// # Errors
    ///
    /// [`Error::FrameTooLarge`] when the report does not fit the limit; `out` is then left as
    /// it was.
    pub fn failure(&self, out: &mut Vec<u8>, report: &FailureReport) -> Result<(), Error> {
        self.report(out, FrameKind::Failure, report)
    }

    fn report<T: serde::Serialize>(
        &self,
        out: &mut Vec<u8>,
        kind: FrameKind,
        report: &T,
    ) -> Result<(), Error> {
        let start = begin(out, kind);
        let filled = crate::encode_value(out, report)
            .and_then(|()| patch_len(out, start, self.max_frame_len));
        if filled.is_err() {
            out.truncate(start);
        }
        filled
    }
}

/// Appends a header with a placeholder length; returns where the frame starts.
fn begin(out: &mut Vec<u8>, kind: FrameKind) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0, 0, 0, 0, kind as u8]);
    start
}

/// Writes the length field of the frame that starts at `start` and runs to the end of `out`.
fn patch_len(out: &mut [u8], start: usize, max_frame_len: u32) -> Result<(), Error> {
    let len = (out.len() - start - 4) as u64;
    if len > u64::from(max_frame_len) {
        return Err(Error::FrameTooLarge {
            len,
            max: max_frame_len,
        });
    }
    // Fits: len <= max_frame_len, a u32.
    out[start..start + 4].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_length_is_refused_before_the_body_arrives() {
        let decoder = FrameDecoder::new(100);
        let err = decoder.decode(&[0xff, 0xff, 0xff, 0xff]).unwrap_err();
        assert!(matches!(
            err,
            Error::FrameTooLarge {
                len: 0xffff_ffff,
                max: 100
            }
        ));
        let err = decoder.decode(&101u32.to_le_bytes()).unwrap_err();
        assert!(matches!(err, Error::FrameTooLarge { len: 101, .. }));
    }

    #[test]
    fn zero_length_is_refused() {
        let err = FrameDecoder::new(100).decode(&[0, 0, 0, 0]).unwrap_err();
        assert!(matches!(err, Error::EmptyFrame));
    }

    #[test]
    fn partial_frame_reports_the_bytes_it_needs() {
        let mut out = Vec::new();
        FrameEncoder::new(100)
            .message(&mut out, |p| {
                p.extend_from_slice(b"abc");
                Ok(())
            })
            .unwrap();
        let decoder = FrameDecoder::new(100);
        assert!(matches!(
            decoder.decode(&out[..2]),
            Ok(Decoded::Incomplete { needed: 5 })
        ));
        assert!(matches!(
            decoder.decode(&out[..6]),
            Ok(Decoded::Incomplete { needed }) if needed == out.len()
        ));
    }

    #[test]
    fn encoder_refuses_an_oversized_message_and_leaves_the_buffer_intact() {
        let mut out = b"keep".to_vec();
        let err = FrameEncoder::new(20)
            .message(&mut out, |p| {
                p.extend_from_slice(&[0; 64]);
                Ok(())
            })
            .unwrap_err();
        assert!(matches!(err, Error::FrameTooLarge { len: 66, max: 20 }));
        assert_eq!(out, b"keep");
    }

    #[test]
    fn limits_under_the_minimum_are_raised_to_it() {
        for limit in [0, 1, 12, 13, MIN_FRAME_LEN - 1] {
            let decoder = FrameDecoder::new(limit);
            let encoder = FrameEncoder::new(limit);
            assert_eq!(decoder.max_frame_len(), MIN_FRAME_LEN);
            assert_eq!(encoder.max_frame_len(), MIN_FRAME_LEN);

            // Before the length is in, the decoder asks for a header: within 4 + its limit.
            match decoder.decode(&[]) {
                Ok(Decoded::Incomplete { needed }) => {
                    assert_eq!(needed, HEADER_LEN);
                    assert!(needed <= 4 + decoder.max_frame_len() as usize);
                }
                other => panic!("{other:?}"),
            }

            // The handshake goes through both.
            let mut out = Vec::new();
            encoder.hello(&mut out, &Hello::new(7));
            match decoder.decode(&out) {
                Ok(Decoded::Frame {
                    frame: Frame::Hello(hello),
                    consumed: 17,
                }) => assert_eq!(hello, Hello::new(7)),
                other => panic!("{other:?}"),
            }

            // A MESSAGE of exactly MIN_FRAME_LEN fits, one byte more does not.
            let fill = |n: usize| {
                move |p: &mut Vec<u8>| {
                    p.resize(p.len() + n, 0xc0);
                    Ok(())
                }
            };
            let mut out = Vec::new();
            encoder.message(&mut out, fill(14)).unwrap();
            assert_eq!(out.len(), 4 + MIN_FRAME_LEN as usize);
            assert!(matches!(decoder.decode(&out), Ok(Decoded::Frame { .. })));
            let err = encoder.message(&mut out, fill(15)).unwrap_err();
            assert!(matches!(
                err,
                Error::FrameTooLarge {
                    len: 17,
                    max: MIN_FRAME_LEN
                }
            ));
            let err = decoder.decode(&17u32.to_le_bytes()).unwrap_err();
            assert!(matches!(
                err,
                Error::FrameTooLarge {
                    len: 17,
                    max: MIN_FRAME_LEN
                }
            ));
        }
        assert_eq!(FrameDecoder::new(17).max_frame_len(), 17);
        assert_eq!(FrameEncoder::new(17).max_frame_len(), 17);
    }

    #[test]
    fn plain_messages_decode_as_the_full_decoder_decodes_them() {
        let encoder = FrameEncoder::new(100);
        let decoder = FrameDecoder::new(100);
        let mut plain = Vec::new();
        encoder
            .message(&mut plain, |p| {
                p.extend_from_slice(b"abc");
                Ok(())
            })
            .unwrap();
        let (range, consumed) = decoder.plain_message(&plain).unwrap();
        match decoder.decode(&plain) {
            Ok(Decoded::Frame {
                frame: Frame::Message { payload, .. },
                consumed: full,
            }) => {
                assert_eq!(&plain[range], payload);
                assert_eq!(consumed, full);
            }
            other => panic!("{other:?}"),
        }
        // Not plain: attachments, other kinds, partial frames, bad lengths.
        let mut with_port = Vec::new();
        encoder
            .message_with_attachments(&mut with_port, &[Attachment::Port { channel: 1 }], |_| {
                Ok(())
            })
            .unwrap();
        let mut hello = Vec::new();
        encoder.hello(&mut hello, &Hello::new(100));
        for bytes in [
            &with_port[..],
            &hello[..],
            &plain[..plain.len() - 1],
            &[0, 0, 0, 0, 2, 0][..],
            &[1, 0, 0, 0, 2, 0][..],
            &[101, 0, 0, 0, 2, 0][..],
            &[][..],
        ] {
            assert!(decoder.plain_message(bytes).is_none(), "{bytes:?}");
        }
    }

    #[test]
    fn unknown_kind_is_refused() {
        let err = FrameDecoder::new(100)
            .decode(&[1, 0, 0, 0, 0x7f])
            .unwrap_err();
        assert!(matches!(err, Error::UnknownKind(0x7f)));
    }
}
