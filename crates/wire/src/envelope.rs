//! What a frame's body holds: the handshake, user messages with their attachments, and panic
//! reports.

use serde::{Deserialize, Serialize};

use crate::Error;

/// The four bytes every `HELLO` starts with.
pub const MAGIC: [u8; 4] = *b"UPRC";

/// The protocol version this crate speaks.
pub const VERSION: u16 = 1;

/// The most descriptors one message may carry: the kernel's `SCM_MAX_FD`.
pub const MAX_ATTACHMENTS: usize = 253;

/// The size of a `HELLO` body.
pub(crate) const HELLO_LEN: usize = 12;

/// The kind byte of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// The handshake, first on a parent port.
    Hello = 0x01,
    /// A user message.
    Message = 0x02,
    /// A Rust child's panic report.
    Panic = 0x03,
    /// A child's report that its main work failed (an entry point returned an error).
    Failure = 0x04,
}

/// The handshake each side sends first on a parent port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    /// The protocol version of the sender.
    pub version: u16,
    /// The largest frame length field the sender accepts (the parent's binds both ways).
    pub max_frame_len: u32,
    /// Flag bits: [`Hello::SANDBOXED`], or 0.
    pub flags: u16,
}

impl Hello {
    /// Flag of a child's `HELLO`: the sandbox its parent asked for is in force (the child's
    /// library applied it before `main`).
    pub const SANDBOXED: u16 = 0x0001;

    /// A `HELLO` for this crate's [`VERSION`], with no flag.
    pub fn new(max_frame_len: u32) -> Self {
        Hello {
            version: VERSION,
            max_frame_len,
            flags: 0,
        }
    }

    /// This `HELLO` with `flags` set.
    pub fn with_flags(self, flags: u16) -> Self {
        Hello { flags, ..self }
    }

    fn parse(body: &[u8]) -> Result<Hello, Error> {
        let body: &[u8; HELLO_LEN] = body
            .try_into()
            .map_err(|_| Error::BadHello("the body is not 12 bytes"))?;
        if body[0..4] != MAGIC {
            return Err(Error::BadHello("the magic is not \"UPRC\""));
        }
        let version = u16::from_le_bytes([body[4], body[5]]);
        if version != VERSION {
            return Err(Error::UnsupportedVersion {
                found: version,
                expected: VERSION,
            });
        }
        let flags = u16::from_le_bytes([body[6], body[7]]);
        if flags & !Hello::SANDBOXED != 0 {
            return Err(Error::BadHello("an unknown flag is set"));
        }
        let max_frame_len = u32::from_le_bytes([body[8], body[9], body[10], body[11]]);
        Ok(Hello {
            version,
            max_frame_len,
            flags,
        })
    }

    pub(crate) fn write_body(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&self.flags.to_le_bytes());
        out.extend_from_slice(&self.max_frame_len.to_le_bytes());
    }
}

/// What travels with a message beside its bytes: one or two descriptors each.
///
/// Every descriptor is 9 bytes in the envelope: a kind byte and a `u64` — for a port, the id
/// of the channel it belongs to (both ends of a channel share it, so a sender can refuse to
/// send a port over its own peer); for a shared buffer, its length in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Attachment {
    /// One end of a message channel: one descriptor, a `SOCK_STREAM` Unix socket.
    Port {
        /// The channel's id.
        channel: u64,
    },
    /// A port whose previous holder had already read messages from it that nobody received:
    /// two descriptors, first a *prefix* socket that yields those bytes and then ends, then
    /// the port itself. The receiver reads the prefix to its end before reading the port.
    PortWithPrefix {
        /// The channel's id.
        channel: u64,
    },
    /// A block of shared memory: one descriptor, a memfd of exactly `len` bytes whose size is
    /// sealed. The receiver maps it; nothing is copied.
    Buffer {
        /// The buffer's length in bytes.
        len: u64,
        /// Sealed against writes too (`F_SEAL_WRITE`): nobody can change it any more.
        read_only: bool,
    },
}

/// Bytes one attachment descriptor takes in the envelope.
pub const ATTACHMENT_LEN: usize = 9;

impl Attachment {
    /// How many descriptors travel for this attachment.
    pub fn fd_count(self) -> usize {
        match self {
            Attachment::Port { .. } | Attachment::Buffer { .. } => 1,
            Attachment::PortWithPrefix { .. } => 2,
        }
    }

    pub(crate) fn write(self, out: &mut Vec<u8>) {
        let (kind, value) = match self {
            Attachment::Port { channel } => (0x01, channel),
            Attachment::PortWithPrefix { channel } => (0x02, channel),
            Attachment::Buffer {
                len,
                read_only: false,
            } => (0x03, len),
            Attachment::Buffer {
                len,
                read_only: true,
            } => (0x04, len),
        };
        out.push(kind);
        out.extend_from_slice(&value.to_le_bytes());
    }

    fn parse(bytes: &[u8]) -> Result<Attachment, Error> {
        let mut value = [0u8; 8];
        value.copy_from_slice(&bytes[1..ATTACHMENT_LEN]);
        let value = u64::from_le_bytes(value);
        match bytes[0] {
            0x01 => Ok(Attachment::Port { channel: value }),
            0x02 => Ok(Attachment::PortWithPrefix { channel: value }),
            0x03 => Ok(Attachment::Buffer {
                len: value,
                read_only: false,
            }),
            0x04 => Ok(Attachment::Buffer {
                len: value,
                read_only: true,
            }),
            other => Err(Error::UnknownAttachment(other)),
        }
    }
}

/// The validated attachment list of a `MESSAGE` frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attachments<'a>(&'a [u8]);

impl<'a> Attachments<'a> {
    /// How many attachments the message carries.
    pub fn len(&self) -> usize {
        self.0.len() / ATTACHMENT_LEN
    }

    /// Whether the message carries no attachment.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many descriptors travel with the message.
    pub fn fd_count(&self) -> usize {
        self.iter().map(Attachment::fd_count).sum()
    }

    /// The attachments, in the order their descriptors arrive.
    pub fn iter(&self) -> impl Iterator<Item = Attachment> + 'a {
        // Every descriptor was checked by `Frame::parse`.
        self.0
            .chunks_exact(ATTACHMENT_LEN)
            .filter_map(|bytes| Attachment::parse(bytes).ok())
    }
}

/// A panic report from a Rust child: the message and where it happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PanicReport {
    /// The panic payload when it is a string, otherwise `"Box<dyn Any>"`.
    pub message: String,
    /// The source file of the panic.
    pub file: String,
    /// The line of the panic.
    pub line: u32,
    /// The column of the panic.
    pub column: u32,
    /// The name of the panicking thread, if it has one.
    pub thread: Option<String>,
}

/// A child's report that its main work failed without a panic: an entry point returned an
/// error, or the program was started for an entry point it does not have.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureReport {
    /// What failed, as the error displays itself.
    pub message: String,
}

/// A decoded frame, borrowing from the receive buffer.
#[derive(Debug)]
pub enum Frame<'a> {
    /// The handshake.
    Hello(Hello),
    /// A user message.
    Message {
        /// The kinds of the descriptors that travel with it.
        attachments: Attachments<'a>,
        /// The message bytes: MessagePack for values, anything for raw posts.
        payload: &'a [u8],
    },
    /// A panic report.
    Panic(PanicReport),
    /// A failure report.
    Failure(FailureReport),
}

impl<'a> Frame<'a> {
    /// Parses a frame body of the given kind.
    pub(crate) fn parse(kind: u8, body: &'a [u8]) -> Result<Frame<'a>, Error> {
        match kind {
            k if k == FrameKind::Hello as u8 => Hello::parse(body).map(Frame::Hello),
            k if k == FrameKind::Message as u8 => {
                let (&count, rest) = body.split_first().ok_or(Error::EmptyMessage)?;
                let listed = usize::from(count) * ATTACHMENT_LEN;
                if rest.len() < listed {
                    return Err(Error::TruncatedAttachments { count });
                }
                let (kinds, payload) = rest.split_at(listed);
                let mut fds = 0;
                for bytes in kinds.chunks_exact(ATTACHMENT_LEN) {
                    fds += Attachment::parse(bytes)?.fd_count();
                }
                if fds > MAX_ATTACHMENTS {
                    return Err(Error::TooManyAttachments { count: fds });
                }
                Ok(Frame::Message {
                    attachments: Attachments(kinds),
                    payload,
                })
            }
            // Decoded like any payload, so bytes after the report are refused
            // (`Error::TrailingBytes`). A report written as a MessagePack *array* of the five
            // fields in declaration order (serde's struct-as-array, what `rmp_serde::to_vec`
            // writes) is accepted as well as the documented map: serde's derived `Deserialize`
            // takes both, and refusing it would buy nothing.
            k if k == FrameKind::Panic as u8 => crate::decode_value(body)
                .map(Frame::Panic)
                .map_err(|e| match e {
                    Error::Decode(e) => Error::BadPanicReport(e),
                    other => other,
                }),
            k if k == FrameKind::Failure as u8 => crate::decode_value(body)
                .map(Frame::Failure)
                .map_err(|e| match e {
                    Error::Decode(e) => Error::BadFailureReport(e),
                    other => other,
                }),
            other => Err(Error::UnknownKind(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Decoded, FrameDecoder, FrameEncoder};

    #[test]
    fn hello_round_trips_and_matches_the_documented_bytes() {
        let mut out = Vec::new();
        FrameEncoder::new(1000).hello(&mut out, &Hello::new(0x0400_1000));
        assert_eq!(
            out,
            [0x0d, 0, 0, 0, 0x01, b'U', b'P', b'R', b'C', 1, 0, 0, 0, 0x00, 0x10, 0x00, 0x04]
        );
        match FrameDecoder::new(1000).decode(&out).unwrap() {
            Decoded::Frame {
                frame: Frame::Hello(h),
                consumed: 17,
            } => {
                assert_eq!(h, Hello::new(0x0400_1000))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn hello_with_another_version_is_refused() {
        let body = [b'U', b'P', b'R', b'C', 2, 0, 0, 0, 0, 0, 0, 0];
        assert!(matches!(
            Frame::parse(1, &body),
            Err(Error::UnsupportedVersion {
                found: 2,
                expected: 1
            })
        ));
    }

    #[test]
    fn message_announcing_more_attachments_than_it_lists_is_refused() {
        assert!(matches!(
            Frame::parse(2, &[3, 1, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(Error::TruncatedAttachments { count: 3 })
        ));
        assert!(matches!(
            Frame::parse(2, &[1, 9, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(Error::UnknownAttachment(9))
        ));
        let mut many = vec![200u8];
        for _ in 0..200 {
            many.extend_from_slice(&[2, 0, 0, 0, 0, 0, 0, 0, 0]);
        }
        assert!(matches!(
            Frame::parse(2, &many),
            Err(Error::TooManyAttachments { count: 400 })
        ));
    }

    #[test]
    fn message_without_an_attachment_count_is_refused_as_empty() {
        assert!(matches!(Frame::parse(2, &[]), Err(Error::EmptyMessage)));
        assert!(matches!(
            FrameDecoder::new(100).decode(&[1, 0, 0, 0, 2]),
            Err(Error::EmptyMessage)
        ));
        // A count of zero and nothing else is a valid, empty message.
        assert!(matches!(
            Frame::parse(2, &[0]),
            Ok(Frame::Message { attachments, payload: [] }) if attachments.is_empty()
        ));
    }

    #[test]
    fn attachments_round_trip_with_their_channel_ids() {
        let sent = [
            Attachment::Port { channel: 0 },
            Attachment::PortWithPrefix {
                channel: 0x0102_0304_0506_0708,
            },
            Attachment::Port { channel: u64::MAX },
        ];
        let mut out = Vec::new();
        FrameEncoder::new(1000)
            .message_with_attachments(&mut out, &sent, |p| {
                p.push(0xc0);
                Ok(())
            })
            .unwrap();
        assert_eq!(
            out[..4 + 2 + 9],
            [0x1e, 0, 0, 0, 0x02, 3, 0x01, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(out[15..24], [0x02, 8, 7, 6, 5, 4, 3, 2, 1]);
        match FrameDecoder::new(1000).decode(&out).unwrap() {
            Decoded::Frame {
                frame:
                    Frame::Message {
                        attachments,
                        payload,
                    },
                consumed,
            } => {
                assert_eq!(consumed, out.len());
                assert_eq!(attachments.iter().collect::<Vec<_>>(), sent);
                assert_eq!(attachments.len(), 3);
                assert_eq!(attachments.fd_count(), 4);
                assert_eq!(payload, [0xc0]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn documented_message_bytes_decode() {
        let bytes = [0x05, 0, 0, 0, 0x02, 0x00, 0xa2, b'h', b'i'];
        match FrameDecoder::new(100).decode(&bytes).unwrap() {
            Decoded::Frame {
                frame:
                    Frame::Message {
                        payload,
                        attachments,
                    },
                ..
            } => {
                assert!(attachments.is_empty());
                assert_eq!(crate::decode_value::<String>(payload).unwrap(), "hi");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn panic_report_round_trips() {
        let report = PanicReport {
            message: "boom".into(),
            file: "src/main.rs".into(),
            line: 3,
            column: 5,
            thread: Some("main".into()),
        };
        let mut out = Vec::new();
        FrameEncoder::new(1000).panic(&mut out, &report).unwrap();
        match FrameDecoder::new(1000).decode(&out).unwrap() {
            Decoded::Frame {
                frame: Frame::Panic(r),
                ..
            } => assert_eq!(r, report),
            other => panic!("{other:?}"),
        }
    }

    fn report() -> PanicReport {
        PanicReport {
            message: "boom".into(),
            file: "src/main.rs".into(),
            line: 3,
            column: 5,
            thread: None,
        }
    }

    #[test]
    fn panic_report_with_bytes_after_it_is_refused() {
        let mut body = Vec::new();
        crate::encode_value(&mut body, &report()).unwrap();
        assert!(matches!(Frame::parse(3, &body), Ok(Frame::Panic(r)) if r == report()));
        body.extend_from_slice(&[0xc0, 0xc0]);
        assert!(matches!(
            Frame::parse(3, &body),
            Err(Error::TrailingBytes { count: 2 })
        ));
    }

    #[test]
    fn failure_report_round_trips_and_is_refused_when_malformed() {
        let report = FailureReport {
            message: "no model at /srv/model.bin".into(),
        };
        let mut out = Vec::new();
        FrameEncoder::new(1000).failure(&mut out, &report).unwrap();
        assert_eq!(out[4], 0x04);
        match FrameDecoder::new(1000).decode(&out).unwrap() {
            Decoded::Frame {
                frame: Frame::Failure(r),
                consumed,
            } => {
                assert_eq!(r, report);
                assert_eq!(consumed, out.len());
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            Frame::parse(4, &[0xc1]),
            Err(Error::BadFailureReport(_))
        ));
    }

    #[test]
    fn panic_report_written_as_an_array_is_accepted() {
        let body = rmp_serde::to_vec(&report()).unwrap();
        assert_eq!(
            body[0], 0x95,
            "serde's struct-as-array: a fixarray of five fields"
        );
        assert!(matches!(Frame::parse(3, &body), Ok(Frame::Panic(r)) if r == report()));
    }
}
