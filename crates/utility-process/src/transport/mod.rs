//! One channel per port: frames in and out, with the I/O done on the caller's thread.
//!
//! # Strategy
//!
//! An [`Endpoint`] owns one end of a channel (`sys::channel::Channel`: a non-blocking Unix
//! stream socket on Unix) and two buffers. The text below says "socket" for the channel and
//! "descriptor" for the objects attached to messages, as on Unix; the channel's contract in
//! `sys/mod.rs` is what another OS provides.
//!
//! - **Sending** encodes the frame straight into the send buffer and, if nothing is already
//!   waiting, writes it to the socket at once, from the caller's thread: the common case is
//!   one `send` system call and no allocation once the buffer has grown. What the socket does
//!   not take (the peer is slow, or the message is larger than the socket buffer) stays in
//!   the buffer, and a flusher task on the library's own thread writes it as the peer drains
//!   the socket; messages posted meanwhile are appended behind it, so order is kept and the
//!   flusher writes them in as few system calls as the socket allows. The waiting bytes are
//!   bounded: past [`Limits::max_queued_bytes`] a post fails with `QueueFull` instead of
//!   growing without end. A send buffer that grew past `KEEP_CAPACITY` is kept until posts
//!   stop for a while, so a burst or a large message does not fault in fresh memory.
//! - **Receiving** happens on the receiver's task: it reads whatever the socket holds into
//!   the receive buffer (many frames per system call when the peer is fast) and decodes
//!   frames from its front. A length is checked against the limit before any room is made
//!   for the frame. Only the receiver's runtime is woken when data arrives; there is no
//!   reader thread and so no thread hand-off on a message's way in. Small messages read
//!   together share the read buffer, large ones take the buffer they were read into, and a
//!   large one's buffer comes back for the next (see [`Payload`] and [`Spare`]): in the
//!   steady state a message costs no allocation and no copy in user space.
//!
//! Both buffers sit behind their own mutex, so a sender never waits for a receiver; each lock
//! is held only for the copy or system call, never across an `.await`.
//!
//! # Descriptors
//!
//! Ports travel as descriptors (`SCM_RIGHTS`). A frame's descriptors are sent with the
//! `sendmsg` that carries the frame's first byte, and that call never reaches into the next
//! frame that carries descriptors. The kernel hands them to the `recvmsg` that receives that
//! first byte, so a receiver notes, for each batch of descriptors, the range of the stream the
//! `recvmsg` covered; the frame that starts inside that range claims the batch. A batch no
//! frame claims, a frame whose descriptors are missing, or a truncated control message is a
//! protocol violation.
//!
//! # Handing a port over
//!
//! A port that is sent away takes its queues with it. Bytes it had already read but nobody
//! received are written into a fresh *prefix* socket that travels with it, and the new holder
//! reads the prefix to its end before the port. Bytes it still had to write hold the carrying
//! frame back: the port's descriptor leaves only once its own queue has been written, so
//! nothing the old holder posted can be overtaken by what the new holder posts.
//!
//! # Cancel safety
//!
//! [`Endpoint::recv`] keeps all of its progress in the endpoint: dropping its future loses
//! nothing, and the next call continues where it stopped.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use utility_process_wire::{
    Attachment, Decoded, FailureReport, Frame, FrameDecoder, FrameEncoder, PanicReport, HEADER_LEN,
    MAX_ATTACHMENTS,
};

use crate::sys;
use crate::sys::channel::{Channel, Refused, Registration};

mod handover;
mod payload;
mod recv;
mod send;

use payload::{Data, SPARE_IDLE};
pub(crate) use payload::{Payload, Spare};
use recv::{fill, Fill};

/// The smallest read the receiver asks the socket for.
const READ_CHUNK: usize = 64 * 1024;

/// Buffers larger than this are given back to the allocator once they are empty again.
/// (Large enough that a stream of big messages does not reallocate, and fault in fresh
/// pages, on every burst.)
const KEEP_CAPACITY: usize = 8 * 1024 * 1024;

/// Two posts closer together than this make a burst: from the second on, frames are left in
/// the send buffer for the flusher, which writes them all with one system call instead of
/// one each. Posts further apart (a request and its reply's reply, say) go out at once.
const BURST_GAP: Duration = Duration::from_micros(5);

/// The most descriptors a port holds in either queue: received ones that no frame has
/// claimed yet (frames are decoded between reads, so an honest peer never gets near it, and a
/// flood is a violation), and ones waiting to be sent (a post past it is an error).
const MAX_QUEUED_FDS: usize = 4 * MAX_ATTACHMENTS;

/// How long handing over a port waits for the rest of a prefix it is itself still reading.
const PREFIX_TIMEOUT: Duration = Duration::from_secs(5);

/// The size limits of an endpoint.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// The largest frame length field sent or accepted.
    pub max_frame_len: u32,
    /// The largest payload a message may carry.
    pub max_message_size: usize,
    /// How many bytes may wait in the send buffer before a post fails with `QueueFull`.
    pub max_queued_bytes: usize,
}

impl Limits {
    /// The limits of a channel made by `MessageChannel::new`, and of received ports.
    pub(crate) fn default_channel() -> Limits {
        let max_message_size = crate::options::DEFAULT_MAX_MESSAGE_SIZE;
        Limits {
            max_frame_len: max_message_size as u32 + utility_process_wire::ENVELOPE_ROOM,
            max_message_size,
            max_queued_bytes: max_message_size,
        }
    }
}

/// A frame as received, owned.
#[derive(Debug)]
pub(crate) enum Incoming {
    /// The handshake; `sandboxed` when the child says its sandbox is in force.
    Hello {
        sandboxed: bool,
    },
    Message {
        payload: Payload,
        attachments: Vec<Attachment>,
        objects: Vec<sys::Object>,
    },
    Panic(PanicReport),
    Failure(FailureReport),
}

/// Why a receive failed: the peer broke the protocol, or the socket did.
#[derive(Debug)]
pub(crate) enum RecvError {
    Protocol(utility_process_wire::Error),
    Descriptors(&'static str),
    Io(io::Error),
}

/// What a non-blocking receive found.
#[derive(Debug)]
pub(crate) enum TryRecv {
    Frame(Incoming),
    /// The peer closed its end (a partial frame at the end, if any, is dropped).
    Closed,
    WouldBlock,
}

/// Why a send failed.
#[derive(Debug)]
pub(crate) enum SendError {
    /// The peer is gone, or the port was closed.
    Closed,
    /// The send buffer is at its limit.
    QueueFull { queued: usize, limit: usize },
    /// The send buffer holds as many descriptors as a port may queue.
    TooManyFds { queued: usize, limit: usize },
    /// Nothing can be attached to a message on this channel (on Windows, a port made by
    /// `MessageChannel` or received: only a child's parent port has a broker for handles).
    Unsupported,
    /// The frame could not be built (too large, or the value would not encode).
    Frame(utility_process_wire::Error),
}

/// What travels beside a frame's bytes.
#[derive(Debug)]
pub(crate) enum Carried {
    /// An object sent as it is (a prefix channel).
    Object(sys::Object),
    /// A port: its descriptor leaves once everything it had queued has been written.
    Port(Arc<Endpoint>),
}

impl Carried {
    fn as_object(&self) -> sys::BorrowedObject<'_> {
        match self {
            Carried::Object(object) => sys::borrow(object),
            Carried::Port(port) => port.channel.as_object(),
        }
    }
}

/// Descriptors to send with the frame that starts at `offset` in the send buffer.
#[derive(Debug)]
struct OutBatch {
    offset: usize,
    items: Vec<Carried>,
}

/// Descriptors received by one `recvmsg`, which covered `start..end` of the stream.
#[derive(Debug)]
struct InBatch {
    start: u64,
    end: u64,
    objects: Vec<sys::Object>,
}

#[derive(Debug, Default)]
struct Inbound {
    /// What was read and not yet decoded, from `head` on. Shared with the small messages
    /// decoded from it (see [`Payload`]): written only through [`Inbound::buf_mut`].
    buf: Arc<Vec<u8>>,
    /// Where the first undecoded byte is.
    head: usize,
    /// The stream offset of `buf[head]`: every byte ever decoded before it.
    decoded: u64,
    batches: VecDeque<InBatch>,
    queued_fds: usize,
    /// A socket to read to its end before the port's own: what a previous holder had read.
    prefix: Option<Channel>,
    /// The peer closed its end.
    eof: bool,
    /// The last frame decoded was a large message.
    large_last: bool,
}

#[derive(Debug, Default)]
struct Outbound {
    buf: Vec<u8>,
    /// How much of `buf` the socket has already taken.
    sent: usize,
    batches: VecDeque<OutBatch>,
    /// Descriptors in `batches`.
    queued_fds: usize,
    /// A flusher task owns the job of writing what is left.
    flushing: bool,
    /// The peer is gone or the port was closed: nothing more can be sent.
    closed: bool,
    /// When the last frame was posted, to tell a burst.
    last_post: Option<Instant>,
    /// Frames appended so far: the release timer's sign that the buffer is still in use.
    posts: u64,
    /// A timer will give a large empty buffer back to the allocator once posts stop.
    release_armed: bool,
}

impl Inbound {
    /// The read buffer, to write into. If messages still share it, the undecoded bytes move
    /// to a buffer of their own first (the messages keep the old one).
    #[inline]
    fn buf_mut(&mut self) -> &mut Vec<u8> {
        if Arc::get_mut(&mut self.buf).is_none() {
            let pending = &self.buf[self.head..];
            let mut fresh = Vec::with_capacity(pending.len() + READ_CHUNK);
            fresh.extend_from_slice(pending);
            self.buf = Arc::new(fresh);
            self.head = 0;
        }
        Arc::get_mut(&mut self.buf).expect("the read buffer was just made unique")
    }

    /// The read buffer, to write into, with the decoded bytes removed from its front.
    fn compact(&mut self) -> &mut Vec<u8> {
        // (`buf_mut` moves only the undecoded bytes when it makes a buffer of their own.)
        self.buf_mut();
        let head = std::mem::take(&mut self.head);
        let buf = Arc::get_mut(&mut self.buf).expect("buf_mut made the read buffer unique");
        buf.drain(..head);
        buf
    }
}

impl Outbound {
    fn discard(&mut self) {
        self.closed = true;
        self.buf.clear();
        self.sent = 0;
        self.batches.clear();
        self.queued_fds = 0;
    }
}

/// How far a write got.
enum Progress {
    /// Everything is written.
    Done,
    /// The socket is full.
    WouldBlock,
    /// The next frame carries this port, which has not written its own queue yet.
    WaitingFor(Arc<Endpoint>),
}

/// One end of a port.
#[derive(Debug)]
pub(crate) struct Endpoint {
    // Declared before `channel` so that it is dropped (deregistered) before the channel closes.
    readiness: Mutex<Option<Arc<Registration>>>,
    inbound: Mutex<Inbound>,
    outbound: Mutex<Outbound>,
    /// Woken when a flusher has written the whole send queue.
    drained: Notify,
    /// A large receive buffer kept for the next large message.
    spare: Arc<Spare>,
    /// This endpoint, for the timer that frees a large idle send buffer.
    me: Weak<Endpoint>,
    encoder: FrameEncoder,
    decoder: FrameDecoder,
    limits: Limits,
    /// The id both ends of a channel share (0 for a parent port, which never travels).
    channel_id: u64,
    /// Low-latency mode: how long a receive that would park may spin first, in nanoseconds
    /// (0: off), and how long it spins now (halved after a spin that found nothing, back to
    /// the maximum after one that did).
    spin_max: AtomicU64,
    spin_budget: AtomicU64,
    channel: Channel,
}

impl Endpoint {
    /// Wraps one end of a channel.
    pub(crate) fn new(channel: Channel, limits: Limits, channel_id: u64) -> Arc<Endpoint> {
        Endpoint::with_prefix(channel, None, limits, channel_id)
    }

    /// Wraps a received port whose previous holder left unread messages in `prefix`.
    pub(crate) fn with_prefix(
        channel: Channel,
        prefix: Option<Channel>,
        limits: Limits,
        channel_id: u64,
    ) -> Arc<Endpoint> {
        Arc::new_cyclic(|me| Endpoint {
            me: me.clone(),
            readiness: Mutex::new(None),
            inbound: Mutex::new(Inbound {
                prefix,
                ..Inbound::default()
            }),
            outbound: Mutex::new(Outbound::default()),
            drained: Notify::new(),
            spare: Arc::default(),
            encoder: FrameEncoder::new(limits.max_frame_len),
            decoder: FrameDecoder::new(limits.max_frame_len),
            limits,
            channel_id,
            spin_max: AtomicU64::new(0),
            spin_budget: AtomicU64::new(0),
            channel,
        })
    }

    pub(crate) fn limits(&self) -> Limits {
        self.limits
    }

    /// The channel this endpoint owns.
    pub(crate) fn channel(&self) -> &Channel {
        &self.channel
    }

    pub(crate) fn channel_id(&self) -> u64 {
        self.channel_id
    }
}

/// The largest payload that may share the read buffer rather than be copied out of it.
const SHARE_MAX: usize = 16 * 1024;

/// The largest read buffer small payloads may share: a message kept alive keeps its whole
/// read buffer alive, so that buffer must be small.
const SHARE_BUFFER_MAX: usize = 4 * READ_CHUNK;

/// Whether small payloads may share `buf` instead of being copied out of it: only when it is
/// small and at least a quarter full. So a message kept alive keeps at most
/// `SHARE_BUFFER_MAX` of memory alive, and a receiver that keeps every message it gets uses
/// at most four times their size; a lone message in a large buffer (a reply) is copied.
fn shareable(buf: &Vec<u8>) -> bool {
    buf.capacity() <= SHARE_BUFFER_MAX && buf.len() * 4 >= buf.capacity()
}

/// Buffers that grow by at least this much at once are asked to use huge pages.
const HUGE_RESERVE: usize = 4 * 1024 * 1024;

/// Makes room for `additional` more bytes in `buf`. A large new allocation is advised to use
/// transparent huge pages: filling fresh memory page by page faults once per 4 KiB, and
/// those faults, not the copy, were most of the cost of a large message on each side (and of
/// a send queue that grows to megabytes under a burst).
pub(crate) fn reserve(buf: &mut Vec<u8>, additional: usize) {
    let before = buf.capacity();
    buf.reserve(additional);
    if buf.capacity() >= HUGE_RESERVE && buf.capacity() != before {
        sys::advise_huge_pages(buf);
    }
}

/// Locks a mutex, going on if a panicking thread poisoned it: the buffers stay consistent
/// at every point where a panic could unwind (no code between their updates can panic).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests;
