//! The pool's own little protocol, carried in raw-byte messages over the parent port.
//!
//! Every message is one byte of kind, eight bytes of task id (little-endian; 0 when the kind
//! names no task), then a body. Bodies that carry a value are MessagePack (the core's codec,
//! `utility_process_wire::encode_value`); bodies that carry an error are UTF-8 text. Raw bytes rather than an
//! enum through serde, so that the request is encoded once, straight after its header, and a
//! reply that does not decode is still known to belong to its task.
//!
//! | kind | direction | id | body |
//! | --- | --- | --- | --- |
//! | `0x01` task | parent → worker | task | the request |
//! | `0x02` cancel | parent → worker | task | empty |
//! | `0x10` ready | worker → parent | 0 | [`PROTOCOL`] |
//! | `0x11` init failed | worker → parent | 0 | the initializer's error |
//! | `0x12` reply | worker → parent | task | the reply |
//! | `0x13` failed | worker → parent | task | the handler's error |
//! | `0x14` cancelled | worker → parent | task | empty: the handler stopped on cancel |
//! | `0x15` bad request | worker → parent | task | why the request did not decode |
//!
//! A worker answers each task it is given exactly once (`0x12` to `0x15`). A worker that
//! breaks this — a message that is not a frame, a kind it may not send, an answer to a task
//! it does not run (never given, or already answered) — is killed as a protocol breach, and
//! its tasks fail as [`TaskError::WorkerCrashed`](crate::TaskError::WorkerCrashed) with the
//! breach as the cause. Only a worker the pool is already ending may answer late.

/// What a worker says in its ready message: the protocol it speaks.
pub(crate) const PROTOCOL: &[u8] = b"utility-process-pool/1";

/// Header length: kind and id.
pub(crate) const HEADER: usize = 9;

/// The kinds of message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Kind {
    Task = 0x01,
    Cancel = 0x02,
    Ready = 0x10,
    InitFailed = 0x11,
    Reply = 0x12,
    Failed = 0x13,
    Cancelled = 0x14,
    BadRequest = 0x15,
}

impl Kind {
    fn from_byte(byte: u8) -> Option<Kind> {
        Some(match byte {
            0x01 => Kind::Task,
            0x02 => Kind::Cancel,
            0x10 => Kind::Ready,
            0x11 => Kind::InitFailed,
            0x12 => Kind::Reply,
            0x13 => Kind::Failed,
            0x14 => Kind::Cancelled,
            0x15 => Kind::BadRequest,
            _ => return None,
        })
    }
}

/// A header and a buffer with room for the body after it.
pub(crate) fn start(kind: Kind, id: u64) -> Vec<u8> {
    let mut buf = Vec::with_capacity(64);
    buf.push(kind as u8);
    buf.extend_from_slice(&id.to_le_bytes());
    buf
}

/// A message whose body is `value`, MessagePack-encoded.
pub(crate) fn with_value<T: serde::Serialize + ?Sized>(
    kind: Kind,
    id: u64,
    value: &T,
) -> Result<Vec<u8>, utility_process_wire::Error> {
    let mut buf = start(kind, id);
    utility_process_wire::encode_value(&mut buf, value)?;
    Ok(buf)
}

/// A message whose body is `bytes`.
pub(crate) fn with_bytes(kind: Kind, id: u64, bytes: &[u8]) -> Vec<u8> {
    let mut buf = start(kind, id);
    buf.extend_from_slice(bytes);
    buf
}

/// Splits a message into kind, id and body; `None` when it is not one of ours.
pub(crate) fn parse(bytes: &[u8]) -> Option<(Kind, u64, &[u8])> {
    if bytes.len() < HEADER {
        return None;
    }
    let kind = Kind::from_byte(bytes[0])?;
    let mut id = [0u8; 8];
    id.copy_from_slice(&bytes[1..HEADER]);
    Some((kind, u64::from_le_bytes(id), &bytes[HEADER..]))
}

/// A text body, shortened to at most `max` bytes (on a character boundary).
pub(crate) fn text(body: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(body);
    if text.len() <= max {
        return text.into_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_parses_back_to_its_kind_id_and_body() {
        let buf = with_bytes(Kind::Failed, 0x0102_0304_0506_0708, b"oops");
        assert_eq!(
            parse(&buf),
            Some((Kind::Failed, 0x0102_0304_0506_0708, &b"oops"[..]))
        );
    }

    #[test]
    fn short_or_unknown_messages_are_not_ours() {
        assert_eq!(parse(&[0x12, 1, 2]), None);
        assert_eq!(parse(&[0x7f, 0, 0, 0, 0, 0, 0, 0, 0]), None);
    }

    #[test]
    fn long_text_is_cut_on_a_character_boundary() {
        assert_eq!(text("ééé".as_bytes(), 3), "é…");
    }
}
