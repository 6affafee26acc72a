//! The chunk layer: how handles ride along with the bytes of a named pipe, and who duplicates
//! them into whom (the broker).
//!
//! The wire format itself is specified at the top of `channel.rs`; this module encodes and
//! decodes headers and moves handle values in and out of process handle tables.
//!
//! # Brokering, as Chromium does it: the privileged side moves every handle
//!
//! A sandboxed child must not need a handle to its parent, so only the parent calls
//! `DuplicateHandle` across processes; it holds each child's process handle (with
//! `PROCESS_DUP_HANDLE`):
//!
//! - [`Broker::Child`] (the parent's end of a child's port) sends by copying each handle INTO
//!   the child and writing the child's values; it receives by looking each value up in the
//!   CHILD's table and moving it out (`DUPLICATE_CLOSE_SOURCE`). A value the child does not
//!   own fails there: the parent never takes a number from the wire as a handle of its own.
//! - [`Broker::Parent`] (a child's end of its parent port) receives values the parent already
//!   put into this process, and sends this process's own values, giving those handles up: the
//!   parent moves them out of our table when it reads the chunk.
//! - [`Broker::None`]: no handles travel.

use std::io;
use std::os::windows::io::{AsHandle, BorrowedHandle, FromRawHandle, IntoRawHandle, OwnedHandle};
use std::sync::Arc;

use windows_sys::Win32::Foundation::{CloseHandle, GetHandleInformation, HANDLE};

use super::handle;

/// The most handles one chunk may carry (as `SCM_MAX_FD` on Linux).
pub(crate) const MAX_HANDLES: usize = 253;

/// The most payload bytes one chunk may carry: what one `send` takes at most, and what a
/// receiver accepts. Bounds the sender's copy and the reader's trust in a header.
pub(crate) const MAX_PAYLOAD: usize = 1 << 20;

/// Bytes of the fixed part of a header: payload length and handle count, `u32` each.
pub(crate) const FIXED: usize = 8;

/// Bytes of the largest header: the fixed part and [`MAX_HANDLES`] `u64` values.
#[cfg(test)]
pub(crate) const MAX_HEADER: usize = FIXED + 8 * MAX_HANDLES;

/// The fixed part of a chunk header, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    /// Payload bytes that follow the header.
    pub(crate) len: usize,
    /// Handle values in the header, after the fixed part.
    pub(crate) count: usize,
    /// This is the close marker: the peer reads nothing more.
    pub(crate) closed: bool,
}

impl Header {
    /// Decodes and checks the fixed part. `InvalidData` when the peer broke the rules: more
    /// than [`MAX_HANDLES`] handles, more than [`MAX_PAYLOAD`] bytes, or handles without a
    /// payload byte to be attached to.
    pub(crate) fn parse(fixed: &[u8; FIXED]) -> io::Result<Header> {
        let len = u32::from_le_bytes([fixed[0], fixed[1], fixed[2], fixed[3]]) as usize;
        let count = u32::from_le_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]) as usize;
        if *fixed == CLOSE_MARKER {
            return Ok(Header {
                len: 0,
                count: 0,
                closed: true,
            });
        }
        if count > MAX_HANDLES {
            return Err(invalid("a chunk header announces more than 253 handles"));
        }
        if len > MAX_PAYLOAD {
            return Err(invalid(
                "a chunk header announces more than 1 MiB of payload",
            ));
        }
        if len == 0 && count > 0 {
            return Err(invalid(
                "a chunk carries handles but no byte to attach them to",
            ));
        }
        Ok(Header {
            len,
            count,
            closed: false,
        })
    }

    /// Bytes of the whole header, handle values included.
    pub(crate) fn size(&self) -> usize {
        FIXED + 8 * self.count
    }

    /// Whether this is an end-of-stream marker (no payload, no handles): the one `shutdown`
    /// writes, or the close marker.
    pub(crate) fn is_end(&self) -> bool {
        self.len == 0 && self.count == 0
    }
}

/// Appends one chunk to `out`: the header for `payload` and `values`, then `payload`.
/// The caller keeps `payload.len() <= MAX_PAYLOAD` and `values.len() <= MAX_HANDLES`.
pub(crate) fn encode(out: &mut Vec<u8>, payload: &[u8], values: &[u64]) {
    out.reserve(FIXED + 8 * values.len() + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&(values.len() as u32).to_le_bytes());
    for value in values {
        out.extend_from_slice(&value.to_le_bytes());
    }
    out.extend_from_slice(payload);
}

/// The end-of-stream marker: a header with no payload and no handles. The peer sends no more
/// (it may still read).
pub(crate) const END_MARKER: [u8; FIXED] = [0; FIXED];

/// The close marker: no payload, and a handle count of `u32::MAX`. The peer sends no more
/// and reads no more: what is sent to it from now on is refused (`BrokenPipe`), as on a Unix
/// socket whose peer shut both ways down.
pub(crate) const CLOSE_MARKER: [u8; FIXED] = [0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff];

/// The handle values of a complete header (`header` holds all of [`Header::size`] bytes).
pub(crate) fn values(header: &[u8]) -> Vec<u64> {
    header[FIXED.min(header.len())..]
        .chunks_exact(8)
        .map(|b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
        .collect()
}

/// An `InvalidData` error: the peer broke the rules of the chunk layer.
pub(crate) fn invalid(why: &'static str) -> io::Error {
    super::channel::Refused::error(why)
}

/// Whether `value` has the shape of a real handle: positive, below 2^31, a multiple of 4.
/// This refuses null, `INVALID_HANDLE_VALUE` and the other pseudo handles (negative values
/// that `DuplicateHandle` would read as "the source process itself" and the like).
fn plausible(value: u64) -> bool {
    value != 0 && value % 4 == 0 && value <= 0x7fff_ffff
}

/// Who may move handles over a channel, and how (see the module documentation).
#[derive(Debug, Clone)]
pub(crate) enum Broker {
    /// Handles never travel on this channel.
    None,
    /// The parent's end of a child's port: the child's process handle, which must carry
    /// `PROCESS_DUP_HANDLE`.
    Child(Arc<OwnedHandle>),
    /// A child's end of its parent's port: the parent moves handles in and out of our table.
    Parent,
}

/// Handle values written into a chunk, with what undoes them if the chunk is never written.
///
/// Dropping it undoes the export (closes the copies); [`Exported::sent`] keeps them for the
/// peer once the write has started, because from then on the peer may already own them.
#[derive(Debug)]
pub(crate) struct Exported {
    /// The values, as the receiving side will see them.
    values: Vec<u64>,
    /// The child process the values live in, or `None` when they live in this process.
    owner: Option<Arc<OwnedHandle>>,
}

impl Exported {
    /// The values to write into the header.
    pub(crate) fn values(&self) -> &[u64] {
        &self.values
    }

    /// The chunk was handed to the pipe: the values now belong to the peer.
    pub(crate) fn sent(mut self) {
        self.values.clear();
    }
}

impl Drop for Exported {
    fn drop(&mut self) {
        for &value in &self.values {
            match &self.owner {
                Some(child) => handle::close_in(child.as_handle(), value),
                // SAFETY: the value is a handle of this process that `export` duplicated and
                // leaked for the message; the message was never written, so we still own it.
                None => unsafe {
                    CloseHandle(value as usize as HANDLE);
                },
            }
        }
    }
}

impl Broker {
    /// Prepares `handles` for a chunk: the values the peer will read, per the broker rules.
    /// `Unsupported` for [`Broker::None`]; on a failure, every copy made so far is closed.
    pub(crate) fn export(&self, handles: &[BorrowedHandle<'_>]) -> io::Result<Exported> {
        let owner = match self {
            Broker::None if handles.is_empty() => None,
            Broker::None => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "handles cannot travel on a channel without a broker",
                ))
            }
            Broker::Child(child) => Some(child.clone()),
            Broker::Parent => None,
        };
        let mut exported = Exported {
            values: Vec::with_capacity(handles.len()),
            owner,
        };
        for handle in handles {
            let value = match &exported.owner {
                Some(child) => handle::duplicate_into(child.as_handle(), *handle)?,
                None => handle::duplicate(*handle)?.into_raw_handle() as usize as u64,
            };
            exported.values.push(value);
        }
        Ok(exported)
    }

    /// Turns the values of a received header into handles of this process, per the broker
    /// rules. `InvalidData` if any value is refused; then every handle obtained is closed
    /// (with [`Broker::Child`] the others are still moved out of the child and closed, so
    /// nothing of that attachment stays open anywhere).
    pub(crate) fn import(&self, values: &[u64]) -> io::Result<Vec<OwnedHandle>> {
        let mut handles = Vec::with_capacity(values.len());
        let mut refused = false;
        match self {
            Broker::None if values.is_empty() => {}
            Broker::None => return Err(invalid("handles arrived on a channel without a broker")),
            Broker::Child(child) => {
                for &value in values {
                    match plausible(value).then(|| handle::take_from(child.as_handle(), value)) {
                        Some(Ok(handle)) => handles.push(handle),
                        _ => refused = true,
                    }
                }
            }
            Broker::Parent => {
                for &value in values {
                    match plausible(value).then(|| own_handle(value)).flatten() {
                        Some(handle) => handles.push(handle),
                        None => refused = true,
                    }
                }
            }
        }
        if refused {
            return Err(invalid("a chunk names a handle the broker rules refuse"));
        }
        Ok(handles)
    }
}

/// Takes `value` as a handle of this process that the parent put there, if it is an open
/// handle at all (trust in the parent is given; this only catches a confused one).
///
/// See `GetHandleInformation`
/// (learn.microsoft.com/windows/win32/api/handleapi/nf-handleapi-gethandleinformation).
fn own_handle(value: u64) -> Option<OwnedHandle> {
    let raw = value as usize as HANDLE;
    let mut flags = 0u32;
    // SAFETY: GetHandleInformation only reads the handle table entry and writes `flags`.
    if unsafe { GetHandleInformation(raw, &mut flags) } == 0 {
        return None;
    }
    // SAFETY: the parent duplicated this handle into our table for this message and gave it
    // to us; nothing else in this process owns it.
    Some(unsafe { OwnedHandle::from_raw_handle(raw) })
}

/// The raw value of a handle, for tests.
#[cfg(test)]
fn raw_value(handle: &OwnedHandle) -> u64 {
    use std::os::windows::io::AsRawHandle;
    handle.as_raw_handle() as usize as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_through_encode_and_parse() {
        let mut out = Vec::new();
        encode(&mut out, b"abc", &[8, 12]);
        assert_eq!(out.len(), FIXED + 16 + 3);
        let header = Header::parse(out[..FIXED].try_into().unwrap()).unwrap();
        assert_eq!(
            header,
            Header {
                len: 3,
                count: 2,
                closed: false
            }
        );
        assert_eq!(values(&out[..header.size()]), vec![8, 12]);
        assert_eq!(&out[header.size()..], b"abc");
    }

    #[test]
    fn parse_refuses_too_many_handles_an_oversized_payload_and_bare_handles() {
        let fixed = |len: u32, count: u32| {
            let mut b = [0u8; FIXED];
            b[..4].copy_from_slice(&len.to_le_bytes());
            b[4..].copy_from_slice(&count.to_le_bytes());
            b
        };
        let kind = |r: io::Result<Header>| r.unwrap_err().kind();
        assert_eq!(
            kind(Header::parse(&fixed(1, 254))),
            io::ErrorKind::InvalidData
        );
        assert_eq!(
            kind(Header::parse(&fixed(1 << 20 | 1, 0))),
            io::ErrorKind::InvalidData
        );
        assert_eq!(
            kind(Header::parse(&fixed(0, 1))),
            io::ErrorKind::InvalidData
        );
        assert!(Header::parse(&fixed(0, 0)).unwrap().is_end());
        assert_eq!(
            Header::parse(&fixed(1 << 20, 253)).unwrap().size(),
            MAX_HEADER
        );
    }

    #[test]
    fn pseudo_and_null_handle_values_are_implausible() {
        for value in [0, u64::MAX, u64::MAX - 1, 6, 1 << 31] {
            assert!(!plausible(value), "{value:#x}");
        }
        assert!(plausible(0x7c));
    }

    #[test]
    fn broker_none_refuses_to_export_or_import_handles() {
        let event = handle::event().unwrap();
        let err = Broker::None.export(&[event.as_handle()]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::Unsupported);
        let err = Broker::None.import(&[raw_value(&event)]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}
