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
const HELLO_LEN: usize = 12;

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
}

/// The handshake each side sends first on a parent port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    /// The protocol version of the sender.
    pub version: u16,
    /// The largest frame length field the sender accepts (the parent's binds both ways).
    pub max_frame_len: u32,
}

impl Hello {
    /// A `HELLO` for this crate's [`VERSION`].
    pub fn new(max_frame_len: u32) -> Self {
        Hello {
            version: VERSION,
            max_frame_len,
        }
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
        if body[6..8] != [0, 0] {
            return Err(Error::BadHello("the flags are not zero"));
        }
        let max_frame_len = u32::from_le_bytes([body[8], body[9], body[10], body[11]]);
        Ok(Hello {
            version,
            max_frame_len,
        })
    }

    pub(crate) fn write_body(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&self.max_frame_len.to_le_bytes());
    }
}

/// What a descriptor travelling with a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Attachment {
    /// One end of a message channel: a `SOCK_STREAM` Unix socket.
    Port,
}

impl Attachment {
    pub(crate) fn to_byte(self) -> u8 {
        match self {
            Attachment::Port => 0x01,
        }
    }

    fn from_byte(byte: u8) -> Result<Attachment, Error> {
        match byte {
            0x01 => Ok(Attachment::Port),
            other => Err(Error::UnknownAttachment(other)),
        }
    }
}

/// The validated attachment list of a `MESSAGE` frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attachments<'a>(&'a [u8]);

impl<'a> Attachments<'a> {
    /// How many descriptors the message carries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the message carries no descriptor.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The kinds of the descriptors, in the order the descriptors arrive.
    pub fn iter(&self) -> impl Iterator<Item = Attachment> + 'a {
        // Every byte was checked by `Frame::parse`.
        self.0
            .iter()
            .map(|&b| Attachment::from_byte(b).unwrap_or(Attachment::Port))
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
}

impl<'a> Frame<'a> {
    /// Parses a frame body of the given kind.
    pub(crate) fn parse(kind: u8, body: &'a [u8]) -> Result<Frame<'a>, Error> {
        match kind {
            k if k == FrameKind::Hello as u8 => Hello::parse(body).map(Frame::Hello),
            k if k == FrameKind::Message as u8 => {
                let (&count, rest) = body
                    .split_first()
                    .ok_or(Error::TruncatedAttachments { count: 0 })?;
                if usize::from(count) > MAX_ATTACHMENTS {
                    return Err(Error::TooManyAttachments {
                        count: usize::from(count),
                    });
                }
                if rest.len() < usize::from(count) {
                    return Err(Error::TruncatedAttachments { count });
                }
                let (kinds, payload) = rest.split_at(usize::from(count));
                for &byte in kinds {
                    Attachment::from_byte(byte)?;
                }
                Ok(Frame::Message {
                    attachments: Attachments(kinds),
                    payload,
                })
            }
            k if k == FrameKind::Panic as u8 => crate::decode_value(body)
                .map(Frame::Panic)
                .map_err(|e| match e {
                    Error::Decode(e) => Error::BadPanicReport(e),
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
            Frame::parse(2, &[3, 1]),
            Err(Error::TruncatedAttachments { count: 3 })
        ));
        assert!(matches!(
            Frame::parse(2, &[1, 9]),
            Err(Error::UnknownAttachment(9))
        ));
        assert!(matches!(
            Frame::parse(2, &[254]),
            Err(Error::TooManyAttachments { count: 254 })
        ));
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
}
