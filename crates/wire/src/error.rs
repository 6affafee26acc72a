//! The one error type of the wire format.

/// What can be wrong with bytes on the wire, or with a value that should go on it.
///
/// Every variant that describes received bytes is a *protocol violation*: the peer did not
/// follow `docs/PROTOCOL.md`. The codec variants ([`Encode`](Error::Encode),
/// [`Decode`](Error::Decode) and [`TrailingBytes`](Error::TrailingBytes)) describe values, not
/// frames, except that a `PANIC` body with bytes after its report is also
/// [`TrailingBytes`](Error::TrailingBytes).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Occurs when a frame's length field exceeds the receiver's limit, or when a frame being
    /// built would exceed the limit it is built for. Detected before any allocation.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// The length the frame announced (or would have had).
        len: u64,
        /// The limit in force.
        max: u32,
    },
    /// Occurs when a frame's length field is zero, so it has no kind byte.
    #[error("frame with a length of zero")]
    EmptyFrame,
    /// Occurs when a frame's kind byte is none of those in the protocol.
    #[error("unknown frame kind {0:#04x}")]
    UnknownKind(u8),
    /// Occurs when a `HELLO` body is malformed: wrong size, wrong magic or non-zero flags.
    #[error("malformed HELLO: {0}")]
    BadHello(&'static str),
    /// Occurs when a `HELLO` names a protocol version this side does not speak.
    #[error("peer speaks protocol version {found}, this side speaks version {expected}")]
    UnsupportedVersion {
        /// The version the peer announced.
        found: u16,
        /// The version this side speaks.
        expected: u16,
    },
    /// Occurs when a `MESSAGE` body is empty: it lacks even the attachment count byte.
    #[error("MESSAGE frame without an attachment count")]
    EmptyMessage,
    /// Occurs when a `MESSAGE` body ends inside its attachment list.
    #[error("MESSAGE frame ends inside its list of {count} attachments")]
    TruncatedAttachments {
        /// The attachment count the frame announced.
        count: u8,
    },
    /// Occurs when a `MESSAGE` announces more descriptors than the kernel can pass at once.
    #[error("MESSAGE frame announces {count} descriptors, at most {MAX_ATTACHMENTS} are allowed", MAX_ATTACHMENTS = crate::MAX_ATTACHMENTS)]
    TooManyAttachments {
        /// The attachment count the frame announced (or a sender asked for).
        count: usize,
    },
    /// Occurs when an attachment descriptor byte is not one the protocol defines.
    #[error("unknown attachment kind {0:#04x}")]
    UnknownAttachment(u8),
    /// Occurs when a `PANIC` body is not the MessagePack map the protocol describes.
    #[error("malformed PANIC report: {0}")]
    BadPanicReport(#[source] rmp_serde::decode::Error),
    /// Occurs when a `FAILURE` body is not the MessagePack map the protocol describes.
    #[error("malformed FAILURE report: {0}")]
    BadFailureReport(#[source] rmp_serde::decode::Error),
    /// Occurs when a value cannot be encoded as MessagePack (for example a map with
    /// non-string keys that serde refuses, or a `Serialize` impl that returns an error).
    #[error("cannot encode the message: {0}")]
    Encode(#[source] rmp_serde::encode::Error),
    /// Occurs when a payload does not decode into the requested type.
    #[error("cannot decode the message: {0}")]
    Decode(#[source] rmp_serde::decode::Error),
    /// Occurs when a payload (or a `PANIC` body) goes on after the MessagePack value it holds:
    /// a payload is exactly one value, so the extra bytes are a malformed message.
    #[error("{count} bytes after the end of the MessagePack value")]
    TrailingBytes {
        /// How many bytes follow the value.
        count: usize,
    },
}
