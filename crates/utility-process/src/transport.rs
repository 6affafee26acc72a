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

/// The bytes of a received message.
///
/// Three shapes, chosen by the receiver so that no message costs an allocation of its own in
/// the steady state:
///
/// - a small message read in a batch with others **shares** the read buffer (a reference
///   count, no copy): a stream of small messages is decoded without allocating;
/// - a large message **takes over** the read buffer (it was read into a buffer of exactly its
///   size); a very large one goes back to its port when dropped (see [`Spare`]), so the next
///   large message lands in memory that is already mapped;
/// - otherwise (a lone small message: a request, a reply) it is **copied** out.
#[derive(Debug)]
pub(crate) struct Payload {
    data: Data,
    start: usize,
    end: usize,
    home: Option<Weak<Spare>>,
}

/// Where a payload's bytes live.
#[derive(Debug)]
enum Data {
    Owned(Vec<u8>),
    Shared(Arc<Vec<u8>>),
}

impl Payload {
    /// A payload of `buf[start..]`, owned outright.
    pub(crate) fn owned(buf: Vec<u8>, start: usize) -> Payload {
        Payload {
            start,
            end: buf.len(),
            data: Data::Owned(buf),
            home: None,
        }
    }

    /// The payload's bytes.
    #[inline]
    pub(crate) fn bytes(&self) -> &[u8] {
        let buf = match &self.data {
            Data::Owned(buf) => buf,
            Data::Shared(chunk) => &**chunk,
        };
        &buf[self.start..self.end]
    }

    /// The payload's bytes, as a vector of their own; its buffer no longer goes back to the
    /// port.
    pub(crate) fn into_vec(mut self) -> Vec<u8> {
        self.home = None;
        match std::mem::replace(&mut self.data, Data::Owned(Vec::new())) {
            Data::Owned(mut buf) => {
                buf.truncate(self.end);
                buf.drain(..self.start);
                buf
            }
            Data::Shared(chunk) => chunk[self.start..self.end].to_vec(),
        }
    }
}

impl Drop for Payload {
    #[inline]
    fn drop(&mut self) {
        if let Some(spare) = self.home.take().and_then(|home| home.upgrade()) {
            if let Data::Owned(buf) = &mut self.data {
                spare.put(std::mem::take(buf));
            }
        }
    }
}

/// One receive buffer a port keeps for its next large message.
///
/// A large message (at least [`READ_CHUNK`]) is read into a buffer of its own size, which
/// becomes its payload. Without a spare, every one is read into fresh memory: an allocation,
/// and for big ones the kernel must find, zero and map every page first (for 64 MiB that
/// costs more than the copy out of the socket). When such a message is dropped its buffer
/// comes back here and the next read that needs room uses it.
///
/// The spare is given back to the allocator once it has not been used for a whole
/// [`SPARE_IDLE`] (a timer on the library's thread), and when the port closes; so a port
/// holds at most one buffer of at most its message size limit, and only while large
/// messages keep coming.
#[derive(Debug, Default)]
pub(crate) struct Spare {
    slot: Mutex<SpareSlot>,
}

#[derive(Debug, Default)]
struct SpareSlot {
    buf: Option<Vec<u8>>,
    /// Bumped whenever a buffer is put or taken: the release timer leaves a spare that was
    /// used since it last looked for another round.
    generation: u64,
    /// A release timer is running.
    timer: bool,
}

impl Spare {
    fn put(self: Arc<Self>, mut buf: Vec<u8>) {
        if buf.capacity() < READ_CHUNK {
            return;
        }
        buf.clear();
        let seen = {
            let mut slot = lock(&self.slot);
            if slot
                .buf
                .as_ref()
                .is_some_and(|kept| kept.capacity() >= buf.capacity())
            {
                return;
            }
            slot.buf = Some(buf);
            slot.generation += 1;
            if slot.timer {
                return;
            }
            slot.timer = true;
            slot.generation
        };
        // Release it once a whole round of SPARE_IDLE passes without it being used.
        let weak = Arc::downgrade(&self);
        let Ok(driver) = crate::driver::driver() else {
            let mut slot = lock(&self.slot);
            slot.buf = None;
            slot.timer = false;
            return;
        };
        driver.handle().spawn(async move {
            let mut seen = seen;
            loop {
                tokio::time::sleep(SPARE_IDLE).await;
                let Some(spare) = weak.upgrade() else {
                    return;
                };
                let mut slot = lock(&spare.slot);
                if slot.buf.is_none() || slot.generation == seen {
                    let idle = slot.buf.take();
                    slot.timer = false;
                    drop(slot);
                    // Unmapping a large buffer takes a while: not under the lock.
                    drop(idle);
                    return;
                }
                seen = slot.generation;
            }
        });
    }

    /// The spare buffer, if it holds at least `capacity` bytes and not many times more (a
    /// buffer kept for 64 MiB messages is not spent on a small read).
    fn take(&self, capacity: usize) -> Option<Vec<u8>> {
        let mut slot = lock(&self.slot);
        let fits = |kept: &Vec<u8>| {
            kept.capacity() >= capacity && kept.capacity() / 4 <= capacity.max(READ_CHUNK)
        };
        if slot.buf.as_ref().is_some_and(fits) {
            slot.generation += 1;
            slot.buf.take()
        } else {
            None
        }
    }

    /// Gives the spare back to the allocator.
    pub(crate) fn release(&self) {
        let mut slot = lock(&self.slot);
        if slot.buf.is_some() {
            slot.buf = None;
            slot.generation += 1;
        }
    }
}

/// How long a port keeps a spare buffer that no frame uses (between one and two of these).
const SPARE_IDLE: Duration = Duration::from_millis(500);

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

    // ---- sending -------------------------------------------------------------------------

    /// Appends a frame built by `build`, with `carried` to go with its first byte, and writes
    /// it now if nothing is waiting before it.
    ///
    /// `build` appends one whole frame to the buffer, or leaves it as it was and fails. On any
    /// error the carried descriptors are dropped (closed).
    pub(crate) fn send_frame<F>(
        self: &Arc<Self>,
        build: F,
        carried: Vec<Carried>,
    ) -> Result<(), SendError>
    where
        F: FnOnce(&FrameEncoder, &mut Vec<u8>) -> Result<(), utility_process_wire::Error>,
    {
        let mut out = lock(&self.outbound);
        if out.closed {
            return Err(SendError::Closed);
        }
        let queued = out.buf.len() - out.sent;
        if queued >= self.limits.max_queued_bytes {
            return Err(SendError::QueueFull {
                queued,
                limit: self.limits.max_queued_bytes,
            });
        }
        // Refused before anything is queued: the port stays as it was.
        if !carried.is_empty() && !self.channel.carries_attachments() {
            return Err(SendError::Unsupported);
        }
        if !carried.is_empty() && out.queued_fds + carried.len() > MAX_QUEUED_FDS {
            return Err(SendError::TooManyFds {
                queued: out.queued_fds,
                limit: MAX_QUEUED_FDS,
            });
        }
        // A `Serialize` impl that panics must not leave half a frame in the buffer: that would
        // corrupt every frame after it.
        let mark = out.buf.len();
        let built = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            build(&self.encoder, &mut out.buf)
        }));
        out.posts += 1;
        match built {
            Ok(result) => result.map_err(SendError::Frame)?,
            Err(panic) => {
                out.buf.truncate(mark);
                drop(out);
                std::panic::resume_unwind(panic);
            }
        }
        if !carried.is_empty() {
            out.queued_fds += carried.len();
            out.batches.push_back(OutBatch {
                offset: mark,
                items: carried,
            });
        }
        if out.flushing {
            return Ok(());
        }
        let now = Instant::now();
        let burst = out
            .last_post
            .is_some_and(|last| now.saturating_duration_since(last) < BURST_GAP);
        out.last_post = Some(now);
        if burst {
            out.flushing = true;
            drop(out);
            self.spawn_flusher();
            return Ok(());
        }
        match self.write_out(&mut out) {
            Ok(Progress::Done) => Ok(()),
            Ok(Progress::WouldBlock | Progress::WaitingFor(_)) => {
                out.flushing = true;
                drop(out);
                self.spawn_flusher();
                Ok(())
            }
            Err(_) => {
                // The peer is gone: this frame and anything behind it can never arrive.
                out.discard();
                Err(SendError::Closed)
            }
        }
    }

    /// Writes as much of the send buffer as the socket takes.
    fn write_out(&self, out: &mut Outbound) -> io::Result<Progress> {
        while out.sent < out.buf.len() {
            let sent = out.sent;
            let written = match out.batches.front() {
                Some(batch) if batch.offset == sent => {
                    for item in &batch.items {
                        if let Carried::Port(port) = item {
                            if !port.is_drained() {
                                return Ok(Progress::WaitingFor(Arc::clone(port)));
                            }
                        }
                    }
                    // Never reach into the next frame that carries descriptors.
                    let end = out.batches.get(1).map_or(out.buf.len(), |next| next.offset);
                    let objects: Vec<sys::BorrowedObject<'_>> =
                        batch.items.iter().map(Carried::as_object).collect();
                    self.channel.send(&out.buf[sent..end], &objects)
                }
                next => {
                    let end = next.map_or(out.buf.len(), |batch| batch.offset);
                    self.channel.send(&out.buf[sent..end], &[])
                }
            };
            match written {
                Ok(n) => {
                    if out.batches.front().is_some_and(|b| b.offset == sent) {
                        // The descriptors are in the kernel's hands now: close ours. A port
                        // sent away is gone from this process.
                        if let Some(batch) = out.batches.pop_front() {
                            out.queued_fds -= batch.items.len();
                        }
                    }
                    out.sent += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Progress::WouldBlock),
                Err(e) => return Err(e),
            }
        }
        out.buf.clear();
        out.sent = 0;
        if out.buf.capacity() > KEEP_CAPACITY && !out.release_armed {
            // Kept for the next burst or large message (refilling fresh memory costs more than
            // the copy), until a round of SPARE_IDLE passes without a post.
            out.release_armed = true;
            self.arm_release(out);
        }
        Ok(Progress::Done)
    }

    /// Starts the timer that frees the large empty send buffer once posts stop; without the
    /// library's thread, frees it now.
    fn arm_release(&self, out: &mut Outbound) {
        let Ok(driver) = crate::driver::driver() else {
            out.buf = Vec::new();
            out.release_armed = false;
            return;
        };
        let me = self.me.clone();
        let mut seen = out.posts;
        driver.handle().spawn(async move {
            loop {
                tokio::time::sleep(SPARE_IDLE).await;
                let Some(endpoint) = me.upgrade() else {
                    return;
                };
                let mut out = lock(&endpoint.outbound);
                if out.buf.capacity() <= KEEP_CAPACITY {
                    out.release_armed = false;
                    return;
                }
                if out.posts == seen && out.buf.is_empty() {
                    let idle = std::mem::take(&mut out.buf);
                    out.release_armed = false;
                    drop(out);
                    // Unmapping a large buffer takes a while: not under the lock.
                    drop(idle);
                    return;
                }
                seen = out.posts;
            }
        });
    }

    /// Whether nothing waits to be written (or nothing ever will be: the port is closed).
    fn is_drained(&self) -> bool {
        let out = lock(&self.outbound);
        out.closed || out.sent == out.buf.len()
    }

    /// Waits until the send queue has been written out (or the port is closed): room for a
    /// post that found the queue full.
    pub(crate) async fn drained(&self) {
        let drained = self.drained.notified();
        tokio::pin!(drained);
        drained.as_mut().enable();
        if !self.is_drained() {
            drained.await;
        }
    }

    /// Starts a task on the library's thread that writes the waiting bytes as room appears.
    fn spawn_flusher(self: &Arc<Self>) {
        let endpoint = Arc::clone(self);
        let driver = match crate::driver::driver() {
            Ok(driver) => driver,
            Err(_) => {
                // No thread to flush from: fall back to flushing on this one.
                endpoint.flush_blocking();
                return;
            }
        };
        driver.handle().spawn(async move {
            let registration = match endpoint.channel.register(sys::Interest::Writable) {
                Ok(registration) => registration,
                Err(_) => {
                    endpoint.flush_blocking();
                    return;
                }
            };
            loop {
                let progress = {
                    let mut out = lock(&endpoint.outbound);
                    match endpoint.write_out(&mut out) {
                        Ok(Progress::Done) => {
                            out.flushing = false;
                            drop(out);
                            endpoint.drained.notify_waiters();
                            return;
                        }
                        Ok(progress) => progress,
                        Err(_) => {
                            out.discard();
                            out.flushing = false;
                            drop(out);
                            endpoint.drained.notify_waiters();
                            return;
                        }
                    }
                };
                match progress {
                    Progress::WaitingFor(port) => {
                        let drained = port.drained.notified();
                        tokio::pin!(drained);
                        drained.as_mut().enable();
                        if !port.is_drained() {
                            drained.await;
                        }
                    }
                    _ => match registration.writable().await {
                        Ok(ready) => ready.retry(),
                        Err(_) => {
                            lock(&endpoint.outbound).flushing = false;
                            endpoint.flush_blocking();
                            return;
                        }
                    },
                }
            }
        });
    }

    /// Writes every waiting byte, blocking this thread until the socket has taken them all or
    /// the peer is gone. Used when a process is about to exit.
    pub(crate) fn flush_blocking(&self) {
        loop {
            let mut out = lock(&self.outbound);
            match self.write_out(&mut out) {
                Ok(Progress::Done) => {
                    drop(out);
                    // Handed over is not yet sent where writes complete later (Windows): a
                    // process that exits now would cancel the last write.
                    self.channel.wait_sent();
                    return;
                }
                Ok(Progress::WouldBlock) => {
                    drop(out);
                    if self.channel.wait(sys::Interest::Writable, None).is_err() {
                        return;
                    }
                }
                Ok(Progress::WaitingFor(port)) => {
                    drop(out);
                    port.flush_blocking();
                }
                Err(_) => {
                    out.discard();
                    return;
                }
            }
        }
    }

    /// Appends a last frame behind everything waiting and writes it all, blocking for up to
    /// five seconds per stall. For a panic hook: it never waits for a lock this thread may
    /// hold already, and gives up rather than hang a dying process.
    pub(crate) fn send_last_words<F>(&self, append: F)
    where
        F: FnOnce(&FrameEncoder, &mut Vec<u8>),
    {
        let mut out = match self.outbound.try_lock() {
            Ok(out) => out,
            Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => {
                // Another thread is mid-send; give it a moment, then go ahead only if it is done.
                std::thread::sleep(Duration::from_millis(10));
                match self.outbound.try_lock() {
                    Ok(out) => out,
                    Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
                    Err(std::sync::TryLockError::WouldBlock) => return,
                }
            }
        };
        if out.closed {
            return;
        }
        append(&self.encoder, &mut out.buf);
        loop {
            match self.write_out(&mut out) {
                Ok(Progress::WouldBlock) => {
                    let ready = self
                        .channel
                        .wait(sys::Interest::Writable, Some(Duration::from_secs(5)));
                    if !matches!(ready, Ok(true)) {
                        return;
                    }
                }
                _ => return,
            }
        }
    }

    /// Closes the port: the peer reads end-of-file, and sends and receives here end.
    pub(crate) fn close(&self) {
        lock(&self.outbound).discard();
        self.spare.release();
        let mut inbound = lock(&self.inbound);
        inbound.eof = true;
        inbound.batches.clear();
        inbound.prefix = None;
        inbound.buf = Arc::default();
        inbound.head = 0;
        drop(inbound);
        self.channel.shutdown();
        // What the peer had already written stays in the socket until the last holder of the
        // descriptor closes it, ports inside it included: read it out and drop it now, so that
        // those ports close and their peers see it.
        let mut scratch = Vec::with_capacity(READ_CHUNK);
        loop {
            scratch.clear();
            let mut objects = Vec::new();
            match self.channel.recv(&mut scratch, usize::MAX, &mut objects) {
                Ok(received) if received > 0 => {}
                _ => break,
            }
        }
    }

    // ---- receiving -----------------------------------------------------------------------

    /// Decodes the next frame, reading the socket if the buffer holds none, without blocking.
    /// The peer closed its end with part of a frame still unread: the partial frame is
    /// dropped (never delivered), and the caller decides whether that was a violation.
    pub(crate) fn closed_mid_frame(&self) -> bool {
        let inbound = lock(&self.inbound);
        inbound.eof && inbound.head < inbound.buf.len()
    }

    pub(crate) fn try_recv(&self) -> Result<TryRecv, RecvError> {
        self.next_frame(Read::Now)
    }

    /// Decodes the next frame from what was already read, reading the socket only if `read`.
    fn next_frame(&self, read: Read) -> Result<TryRecv, RecvError> {
        let mut inbound = lock(&self.inbound);
        let inbound = &mut *inbound;
        loop {
            // The common case first: a whole message without attachments, with the same
            // checks as below and no `Frame` built.
            if let Some((payload, consumed)) =
                self.decoder.plain_message(&inbound.buf[inbound.head..])
            {
                if payload.len() > self.limits.max_message_size {
                    return Err(too_large(payload.len(), self.limits.max_message_size));
                }
                // Descriptors that arrived no later than this frame's end and that no frame
                // claims: this one declares none, so they are nobody's.
                if inbound
                    .batches
                    .front()
                    .is_some_and(|b| b.end <= inbound.decoded + consumed as u64)
                {
                    return Err(RecvError::Descriptors(
                        "descriptors arrived that no message claims",
                    ));
                }
                let frame = Incoming::Message {
                    payload: Payload::owned(Vec::new(), payload.len()),
                    attachments: Vec::new(),
                    objects: Vec::new(),
                };
                return Ok(TryRecv::Frame(take_frame(
                    inbound,
                    &self.spare,
                    frame,
                    consumed,
                )));
            }
            let needed = match self
                .decoder
                .decode(&inbound.buf[inbound.head..])
                .map_err(RecvError::Protocol)?
            {
                Decoded::Frame { frame, consumed } => {
                    // The frame limit leaves room for the envelope; the payload itself is held
                    // to the message limit, as the sender's is.
                    if let Frame::Message { payload, .. } = &frame {
                        if payload.len() > self.limits.max_message_size {
                            return Err(too_large(payload.len(), self.limits.max_message_size));
                        }
                    }
                    let at = inbound.decoded;
                    let claims_fds = matches!(
                        &frame,
                        Frame::Message { attachments, .. }
                            if !attachments.is_empty() && attachments.fd_count() > 0
                    );
                    // Descriptors that came before this frame, or with it when it declares
                    // none, belong to no frame: found now, not when the next frame comes.
                    let unclaimed_end = if claims_fds { at } else { at + consumed as u64 };
                    if inbound
                        .batches
                        .front()
                        .is_some_and(|b| b.end <= unclaimed_end)
                    {
                        return Err(RecvError::Descriptors(
                            "descriptors arrived that no message claims",
                        ));
                    }
                    let frame = match frame {
                        Frame::Hello(hello) => Incoming::Hello {
                            sandboxed: hello.flags & utility_process_wire::Hello::SANDBOXED != 0,
                        },
                        Frame::Panic(report) => Incoming::Panic(report),
                        Frame::Failure(report) => Incoming::Failure(report),
                        Frame::Message {
                            attachments,
                            payload,
                        } => {
                            let count = if attachments.is_empty() {
                                0
                            } else {
                                attachments.fd_count()
                            };
                            let objects = if count == 0 {
                                Vec::new()
                            } else {
                                match inbound.batches.front() {
                                    Some(b)
                                        if b.start <= at
                                            && at < b.end
                                            && b.objects.len() == count =>
                                    {
                                        inbound.queued_fds -= count;
                                        inbound
                                            .batches
                                            .pop_front()
                                            .map(|b| b.objects)
                                            .unwrap_or_default()
                                    }
                                    _ => {
                                        return Err(RecvError::Descriptors(
                                            "a message's descriptors are missing or miscounted",
                                        ))
                                    }
                                }
                            };
                            Incoming::Message {
                                // Filled in below, once the buffer is no longer borrowed.
                                payload: Payload::owned(Vec::new(), payload.len()),
                                attachments: if attachments.is_empty() {
                                    Vec::new()
                                } else {
                                    attachments.iter().collect()
                                },
                                objects,
                            }
                        }
                    };
                    return Ok(TryRecv::Frame(take_frame(
                        inbound,
                        &self.spare,
                        frame,
                        consumed,
                    )));
                }
                Decoded::Incomplete { needed } => needed,
            };
            if inbound.eof {
                return Ok(TryRecv::Closed);
            }
            if read == Read::No {
                return Ok(TryRecv::WouldBlock);
            }
            // Make room for the whole frame (its size is known and within the limit) or for a
            // read of a useful size, whichever is larger.
            let buf = inbound.compact();
            let want = needed.max(buf.len() + READ_CHUNK);
            let additional = want - buf.len();
            if buf.capacity() < want {
                // Into the buffer the last large message left, if there is one.
                if let Some(mut spare) = self.spare.take(want) {
                    spare.extend_from_slice(buf);
                    *buf = spare;
                }
            }
            reserve(buf, additional);
            // A large frame is read up to its last byte and no further: it then fills the
            // buffer exactly and leaves with it, with no copy and nothing left to move down.
            // Small frames are read many at a time. After a large frame, the next one is
            // likely large too: its header is read alone first, so that a read does not take
            // its start with the previous one (whose buffer leaves) and need a copy.
            let have = inbound.buf.len();
            let limit = if needed >= READ_CHUNK {
                needed - have
            } else if inbound.large_last && have < HEADER_LEN {
                HEADER_LEN - have
            } else {
                usize::MAX
            };
            match fill(inbound, &self.channel, limit)? {
                Fill::Read | Fill::PrefixEnded => {}
                Fill::Eof => inbound.eof = true,
                Fill::WouldBlock => return Ok(TryRecv::WouldBlock),
            }
        }
    }

    /// Waits for the next frame. `Ok(None)`: the peer closed its end.
    ///
    /// Must be called within a tokio runtime; the socket is registered with the runtime of the
    /// first call.
    pub(crate) async fn recv(&self) -> Result<Option<Incoming>, RecvError> {
        self.recv_after(false).await
    }

    /// [`recv`](Self::recv) for a caller that has just tried [`try_recv`](Self::try_recv)
    /// itself (`tried`) and found nothing: it does not read the socket again at once.
    ///
    /// The caller's own `try_recv` is the fast path: a frame already there costs no future.
    pub(crate) async fn recv_after(&self, tried: bool) -> Result<Option<Incoming>, RecvError> {
        let mut retried = false;
        let mut skip = tried;
        loop {
            if !std::mem::take(&mut skip) {
                match self.try_recv()? {
                    TryRecv::Frame(frame) => return Ok(Some(frame)),
                    TryRecv::Closed => return Ok(None),
                    TryRecv::WouldBlock => {}
                }
            }
            match self.spin()? {
                TryRecv::Frame(frame) => return Ok(Some(frame)),
                TryRecv::Closed => return Ok(None),
                TryRecv::WouldBlock => {}
            }
            let registration = self.readiness().map_err(RecvError::Io)?;
            let ready = match registration.readable().await {
                Ok(ready) => ready,
                Err(e) if retried => return Err(RecvError::Io(e)),
                Err(_) => {
                    // The runtime it was registered with is gone (a port used by one
                    // `#[tokio::main]` after another's): register anew, once.
                    retried = true;
                    lock(&self.readiness).take();
                    continue;
                }
            };
            match self.try_recv()? {
                TryRecv::Frame(frame) => return Ok(Some(frame)),
                TryRecv::Closed => return Ok(None),
                TryRecv::WouldBlock => ready.retry(),
            }
        }
    }

    /// Waits for the next frame, blocking this thread.
    ///
    /// (A read that waits in the kernel would save the `poll`, but measured slower on one
    /// CPU: 12.2 µs against 10.8 µs per round trip pinned, and no better with two.)
    pub(crate) fn recv_blocking(&self) -> Result<Option<Incoming>, RecvError> {
        loop {
            match self.try_recv_blocking_step()? {
                TryRecv::Frame(frame) => return Ok(Some(frame)),
                TryRecv::Closed => return Ok(None),
                TryRecv::WouldBlock => {}
            }
            let source = self.source();
            source
                .wait(sys::Interest::Readable, None)
                .map_err(RecvError::Io)?;
            match self.try_recv()? {
                TryRecv::Frame(frame) => return Ok(Some(frame)),
                TryRecv::Closed => return Ok(None),
                TryRecv::WouldBlock => {}
            }
        }
    }

    /// One step of a blocking receive: a frame already read, else (in low-latency mode) a
    /// spin, else `WouldBlock` — without the read that would most often find the socket
    /// empty. The caller then waits with `poll`, which is level-triggered (it returns at once
    /// if bytes are waiting), and reads: two system calls per message where a plain blocking
    /// read takes one, instead of three.
    pub(crate) fn try_recv_blocking_step(&self) -> Result<TryRecv, RecvError> {
        match self.next_frame(Read::No)? {
            TryRecv::WouldBlock => self.spin(),
            found => Ok(found),
        }
    }

    /// Sets low-latency mode: a receive that would park spins first, for up to `spin`.
    ///
    /// A process allowed only one CPU does not spin: there, spinning only keeps the peer
    /// (which needs that CPU to answer) from running.
    pub(crate) fn set_spin(&self, spin: Option<Duration>) {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let spin = spin.filter(|_| cpus > 1);
        let nanos = spin.map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        self.spin_max.store(nanos, Ordering::Relaxed);
        self.spin_budget.store(nanos, Ordering::Relaxed);
    }

    /// In low-latency mode, polls the socket for up to the current budget before the caller
    /// parks: an answer that comes within it costs no wake-up (on a VM, a wake-up across CPUs
    /// costs tens of microseconds). The budget adapts: halved (to a sixteenth of the maximum
    /// at least) after a spin that found nothing, so a quiet port soon spins little; back to
    /// the maximum after one that found a frame. A parked receiver uses no CPU.
    fn spin(&self) -> Result<TryRecv, RecvError> {
        let max = self.spin_max.load(Ordering::Relaxed);
        if max == 0 {
            return Ok(TryRecv::WouldBlock);
        }
        let budget = Duration::from_nanos(self.spin_budget.load(Ordering::Relaxed));
        let started = Instant::now();
        while started.elapsed() < budget {
            std::hint::spin_loop();
            match self.try_recv()? {
                TryRecv::WouldBlock => continue,
                found => {
                    self.spin_budget.store(max, Ordering::Relaxed);
                    return Ok(found);
                }
            }
        }
        let halved = (budget.as_nanos() as u64 / 2).max(max / 16);
        self.spin_budget.store(halved, Ordering::Relaxed);
        Ok(TryRecv::WouldBlock)
    }

    /// The socket reads come from now: the prefix while there is one, then the port.
    pub(crate) fn source(&self) -> Channel {
        lock(&self.inbound)
            .prefix
            .clone()
            .unwrap_or_else(|| self.channel.clone())
    }

    /// The current source's registration with the current runtime, made on first use.
    fn readiness(&self) -> io::Result<Arc<Registration>> {
        let source = self.source();
        let mut slot = lock(&self.readiness);
        if let Some(registration) = &*slot {
            if registration.is_for(&source) {
                return Ok(Arc::clone(registration));
            }
        }
        // Release the old registration before making the new one.
        slot.take();
        let registration = Arc::new(source.register(sys::Interest::Readable)?);
        *slot = Some(Arc::clone(&registration));
        Ok(registration)
    }

    // ---- handing over --------------------------------------------------------------------

    /// Prepares this port to travel: what to announce and which descriptors to send.
    ///
    /// Bytes it had read but not delivered go into a new prefix socket, written by a flusher
    /// (the new holder reads them first); bytes it still has to write are written before its
    /// descriptor leaves (see `write_out`).
    pub(crate) fn hand_over(self: Arc<Self>) -> io::Result<(Attachment, Vec<Carried>)> {
        let channel = self.channel_id;
        let mut inbound = lock(&self.inbound);
        // A prefix we are still reading ourselves: take the rest of it now — within one
        // overall deadline and a byte budget, so that a previous holder that never stops
        // writing into it cannot hold this thread or grow this buffer without end.
        let deadline = Instant::now() + PREFIX_TIMEOUT;
        let budget = self.limits.max_frame_len as usize + self.limits.max_queued_bytes;
        while inbound.prefix.is_some() {
            if Instant::now() >= deadline || inbound.buf.len() - inbound.head > budget {
                // What it did not pass on in time is lost; the new holder sees a stream cut
                // short, which it reports as a protocol violation.
                inbound.prefix = None;
                break;
            }
            inbound.buf_mut().reserve(READ_CHUNK);
            match fill(&mut inbound, &self.channel, usize::MAX) {
                Ok(Fill::Read | Fill::PrefixEnded) => {}
                Ok(Fill::WouldBlock) => {
                    let prefix = inbound.prefix.clone();
                    let left = deadline.saturating_duration_since(Instant::now());
                    let ready = prefix.map(|p| p.wait(sys::Interest::Readable, Some(left)));
                    if !matches!(ready, Some(Ok(true))) {
                        // The previous holder stalls: what it did not pass on is lost.
                        inbound.prefix = None;
                    }
                }
                // Only the main socket can end; a broken prefix ends here.
                Ok(Fill::Eof) | Err(_) => inbound.prefix = None,
            }
        }
        // A unit of the channel's own that a receive left half read (a chunk on Windows) is
        // finished here, so that the next holder's stream starts where a unit does.
        if !inbound.eof {
            let mut rest = Vec::new();
            if self.channel.finish_chunk(&mut rest, deadline).is_ok() && !rest.is_empty() {
                inbound.buf_mut().extend_from_slice(&rest);
            }
        }
        let pending = &inbound.buf[inbound.head..];
        if pending.is_empty() && inbound.batches.is_empty() {
            drop(inbound);
            return Ok((Attachment::Port { channel }, vec![Carried::Port(self)]));
        }

        // Frame starts in the pending bytes, to attach each batch to the frame that claims it.
        let mut starts = Vec::new();
        let mut at = 0usize;
        // (A frame whose length field is cut short still starts here, and its descriptors,
        // which came with its first byte, belong to it.)
        while at < pending.len() {
            starts.push(at);
            let Some(len) = pending.get(at..at + 4) else {
                break;
            };
            let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]);
            at = at.saturating_add(4).saturating_add(len as usize);
        }
        let (ours, theirs) = Channel::pair_owned()?;
        let prefix = Endpoint::new(Channel::from_owned(ours)?, self.limits, 0);
        {
            let mut out = lock(&prefix.outbound);
            out.buf.extend_from_slice(pending);
            let decoded = inbound.decoded;
            for batch in inbound.batches.drain(..) {
                let claimed = starts.iter().find(|&&s| {
                    let s = decoded + s as u64;
                    batch.start <= s && s < batch.end
                });
                // A batch no frame claims is the peer's error; its descriptors close here.
                if let Some(&offset) = claimed {
                    out.queued_fds += batch.objects.len();
                    out.batches.push_back(OutBatch {
                        offset,
                        items: batch.objects.into_iter().map(Carried::Object).collect(),
                    });
                }
            }
        }
        inbound.buf = Arc::default();
        inbound.head = 0;
        inbound.queued_fds = 0;
        drop(inbound);
        // Write what fits now; a flusher writes the rest and then drops the prefix's last
        // reference, which closes it: the new holder reads end-of-file and moves on.
        let mut out = lock(&prefix.outbound);
        match prefix.write_out(&mut out) {
            Ok(Progress::Done) | Err(_) => {}
            Ok(_) => {
                out.flushing = true;
                drop(out);
                prefix.spawn_flusher();
            }
        }
        Ok((
            Attachment::PortWithPrefix { channel },
            vec![Carried::Object(theirs), Carried::Port(self)],
        ))
    }
}

/// The error for a payload over the message size limit.
fn too_large(len: usize, max: usize) -> RecvError {
    RecvError::Protocol(utility_process_wire::Error::FrameTooLarge {
        len: len as u64,
        max: max as u32,
    })
}

/// Whether decoding the next frame may read the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Read {
    /// Only what was already read.
    No,
    /// What the socket holds now.
    Now,
}

/// What one read into the receive buffer did.
enum Fill {
    Read,
    /// The prefix ended: reads go to the port from now on.
    PrefixEnded,
    Eof,
    WouldBlock,
}

/// Reads once from the current source into the spare capacity of the receive buffer, noting
/// any descriptors that came with the bytes.
fn fill(inbound: &mut Inbound, main: &Channel, limit: usize) -> Result<Fill, RecvError> {
    let source = inbound.prefix.clone();
    let channel = source.as_ref().unwrap_or(main);
    let before = inbound.buf_mut().len();
    let mut objects = Vec::new();
    let received = match channel.recv(inbound.buf_mut(), limit, &mut objects) {
        Ok(received) => received,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Fill::WouldBlock),
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            let refused = e.get_ref().and_then(|e| e.downcast_ref::<Refused>());
            return Err(RecvError::Descriptors(refused.map_or(
                "the objects sent with a message broke the rules",
                |refused| refused.0,
            )));
        }
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
            return Ok(if source.is_some() {
                inbound.prefix = None;
                Fill::PrefixEnded
            } else {
                Fill::Eof
            })
        }
        Err(e) => return Err(RecvError::Io(e)),
    };
    if received == 0 {
        return Ok(if source.is_some() {
            inbound.prefix = None;
            Fill::PrefixEnded
        } else {
            Fill::Eof
        });
    }
    if !objects.is_empty() {
        inbound.queued_fds += objects.len();
        if inbound.queued_fds > MAX_QUEUED_FDS {
            return Err(RecvError::Descriptors(
                "more descriptors arrived than messages claim",
            ));
        }
        let start = inbound.decoded + (before - inbound.head) as u64;
        inbound.batches.push_back(InBatch {
            start,
            end: start + received as u64,
            objects,
        });
    }
    Ok(Fill::Read)
}

/// Consumes the frame of `consumed` bytes at the front of the buffer; for a message, gives
/// it its payload (whose length the placeholder's `start` holds): see [`Payload`].
fn take_frame(
    inbound: &mut Inbound,
    spare: &Arc<Spare>,
    mut frame: Incoming,
    consumed: usize,
) -> Incoming {
    let end = inbound.head + consumed;
    let mut moved_rest = false;
    inbound.large_last = false;
    if let Incoming::Message { payload, .. } = &mut frame {
        let len = payload.start;
        inbound.large_last = len >= READ_CHUNK;
        let rest = inbound.buf.len() - end;
        // A large payload takes the buffer it was read into (unless messages share it, or
        // the buffer is much larger than the payload); the few bytes read after it, if any,
        // move to a buffer of their own. It goes back to the port's spare when dropped.
        let handed_over =
            if len >= READ_CHUNK && rest <= READ_CHUNK && inbound.buf.capacity() / 4 <= len {
                Arc::get_mut(&mut inbound.buf).map(|buf| {
                    if rest == 0 {
                        return std::mem::take(buf);
                    }
                    let room = rest + READ_CHUNK;
                    let mut next = spare.take(room).unwrap_or_else(|| Vec::with_capacity(room));
                    next.extend_from_slice(&buf[end..]);
                    let mut whole = std::mem::replace(buf, next);
                    whole.truncate(end);
                    moved_rest = true;
                    whole
                })
            } else {
                None
            };
        *payload = if let Some(buf) = handed_over {
            Payload {
                start: end - len,
                end,
                data: Data::Owned(buf),
                home: Some(Arc::downgrade(spare)),
            }
        } else if len <= SHARE_MAX && shareable(&inbound.buf) {
            Payload {
                start: end - len,
                end,
                data: Data::Shared(Arc::clone(&inbound.buf)),
                home: None,
            }
        } else {
            Payload::owned(inbound.buf[end - len..end].to_vec(), 0)
        };
    }
    inbound.decoded += consumed as u64;
    if moved_rest {
        // The buffer now holds only what followed the frame.
        inbound.head = 0;
        return frame;
    }
    inbound.head = end;
    if inbound.head >= inbound.buf.len() {
        // Everything read is decoded. A buffer still shared (with the message just decoded,
        // most often) is left as it is: by the next read its messages are usually gone, and
        // that read reuses it.
        if let Some(buf) = Arc::get_mut(&mut inbound.buf) {
            inbound.head = 0;
            buf.clear();
            if buf.capacity() > KEEP_CAPACITY {
                *buf = Vec::new();
            }
        }
    }
    frame
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
mod tests {
    use std::sync::mpsc;

    use super::*;

    /// The raw other end of a channel, written byte by byte as a peer process would.
    struct Peer(Channel);

    impl Peer {
        fn write_all(&mut self, mut bytes: &[u8]) -> io::Result<()> {
            while !bytes.is_empty() {
                match self.0.send(bytes, &[]) {
                    Ok(n) => bytes = &bytes[n..],
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        self.0.wait(sys::Interest::Writable, None)?;
                    }
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        }
    }

    /// A receiving endpoint and the raw channel that feeds it.
    fn receiver() -> (Arc<Endpoint>, Peer) {
        let (ours, theirs) = Channel::pair().unwrap();
        let endpoint = Endpoint::new(ours, Limits::default_channel(), 0);
        (endpoint, Peer(theirs))
    }

    /// `count` MESSAGE frames, the i-th carrying `len` bytes of value `i % 251`.
    fn frames(count: usize, len: usize) -> Vec<u8> {
        let encoder = FrameEncoder::new(Limits::default_channel().max_frame_len);
        let mut out = Vec::new();
        for i in 0..count {
            encoder
                .message(&mut out, |p| {
                    p.resize(p.len() + len, (i % 251) as u8);
                    Ok(())
                })
                .unwrap();
        }
        out
    }

    fn payload(incoming: Option<Incoming>) -> Payload {
        match incoming {
            Some(Incoming::Message { payload, .. }) => payload,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    #[test]
    fn messages_kept_alive_keep_their_bytes_while_later_ones_are_read() {
        let (endpoint, mut peer) = receiver();
        // 3,000 frames of 64 B in one write: the first read takes a buffer full of them.
        let count = 3000;
        peer.write_all(&frames(count, 64)).unwrap();
        let mut kept = Vec::new();
        for _ in 0..count {
            kept.push(payload(endpoint.recv_blocking().unwrap()));
        }
        assert!(
            kept.iter().any(|p| matches!(p.data, Data::Shared(_))),
            "small messages read together share their buffer"
        );
        for (i, payload) in kept.iter().enumerate() {
            assert_eq!(payload.bytes(), &[(i % 251) as u8; 64][..], "message {i}");
        }
        let last = kept.pop().unwrap();
        assert_eq!(last.into_vec(), vec![((count - 1) % 251) as u8; 64]);
    }

    #[test]
    fn a_dropped_large_message_lends_its_buffer_to_the_next_one() {
        let (endpoint, peer) = receiver();
        let len = 2 * HUGE_RESERVE;
        let writer = std::thread::spawn(move || {
            let mut peer = peer;
            peer.write_all(&frames(3, len)).unwrap();
            peer
        });
        let first = payload(endpoint.recv_blocking().unwrap());
        assert_eq!(first.bytes(), &vec![0; len][..]);
        drop(first);
        assert!(
            lock(&endpoint.spare.slot).buf.is_some(),
            "kept as the spare"
        );

        let second = payload(endpoint.recv_blocking().unwrap());
        assert!(
            lock(&endpoint.spare.slot).buf.is_none(),
            "the spare was used"
        );
        assert_eq!(second.bytes(), &vec![1; len][..]);
        // A message turned into bytes keeps its buffer.
        assert_eq!(second.into_vec(), vec![1; len]);
        assert!(lock(&endpoint.spare.slot).buf.is_none());

        let third = payload(endpoint.recv_blocking().unwrap());
        assert_eq!(third.bytes(), &vec![2; len][..]);
        drop(third);
        drop(writer.join().unwrap());
        // An unused spare goes back to the allocator (after SPARE_IDLE; generous here).
        let deadline = Instant::now() + Duration::from_secs(60);
        while lock(&endpoint.spare.slot).buf.is_some() {
            assert!(Instant::now() < deadline, "the spare was never released");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn large_and_small_messages_read_together_all_arrive_intact() {
        let (endpoint, peer) = receiver();
        // Sizes around READ_CHUNK, so that reads end inside frames and frames share reads.
        let sizes = [
            70_000, 10, 65_000, 100_000, 3, 64, 200_000, 65_536, 1, 80_000,
        ];
        let mut bytes = Vec::new();
        let encoder = FrameEncoder::new(Limits::default_channel().max_frame_len);
        for (i, &len) in sizes.iter().enumerate() {
            encoder
                .message(&mut bytes, |p| {
                    p.resize(p.len() + len, i as u8);
                    Ok(())
                })
                .unwrap();
        }
        let writer = std::thread::spawn(move || {
            let mut peer = peer;
            // In uneven pieces, each written whole.
            for piece in bytes.chunks(47_000) {
                peer.write_all(piece).unwrap();
            }
            peer
        });
        let mut kept = Vec::new();
        for _ in sizes {
            kept.push(payload(endpoint.recv_blocking().unwrap()));
        }
        for (i, (got, &len)) in kept.iter().zip(&sizes).enumerate() {
            assert_eq!(got.bytes(), &vec![i as u8; len][..], "message {i}");
        }
        drop(writer.join().unwrap());
        assert!(endpoint.recv_blocking().unwrap().is_none(), "then the end");
    }

    #[test]
    fn a_large_send_buffer_is_kept_for_the_next_burst_then_given_back() {
        let (ours, theirs) = Channel::pair().unwrap();
        let sender = Endpoint::new(ours, Limits::default_channel(), 0);
        let receiver = Endpoint::new(theirs, Limits::default_channel(), 0);
        let len = 2 * KEEP_CAPACITY;
        sender
            .send_frame(
                |encoder, buf| {
                    encoder.message(buf, |p| {
                        p.resize(p.len() + len, 7);
                        Ok(())
                    })
                },
                Vec::new(),
            )
            .map_err(|e| format!("{e:?}"))
            .unwrap();
        // The flusher writes it all while it is read.
        assert_eq!(
            payload(receiver.recv_blocking().unwrap()).bytes().len(),
            len
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        while !sender.is_drained() {
            assert!(Instant::now() < deadline, "the send queue never drained");
            std::thread::sleep(Duration::from_millis(5));
        }
        // Kept, then given back once no post comes (after SPARE_IDLE; generous here).
        while lock(&sender.outbound).buf.capacity() > KEEP_CAPACITY {
            assert!(
                Instant::now() < deadline,
                "the send buffer was never given back"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!lock(&sender.outbound).release_armed);
    }

    #[test]
    fn closing_ends_a_blocking_receive_from_another_thread() {
        let (endpoint, _peer) = receiver();
        let (done, finished) = mpsc::channel();
        let waiting = Arc::clone(&endpoint);
        std::thread::spawn(move || {
            let received = waiting.recv_blocking();
            done.send(received.map(|r| r.is_none()).unwrap_or(false))
                .unwrap();
        });
        // Whether the receive is already waiting or not, the close must end it (from a thread
        // of its own: a close that waited for the receive would hang this test).
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            endpoint.close();
        });
        let ended = finished
            .recv_timeout(Duration::from_secs(60))
            .expect("the blocking receive never returned");
        assert!(ended, "it reports the end of the port");
    }

    #[test]
    fn a_blocking_receive_waits_for_the_rest_of_a_frame() {
        let (endpoint, mut peer) = receiver();
        let bytes = frames(1, 100_000);
        let tail = bytes[10..].to_vec();
        peer.write_all(&bytes[..10]).unwrap();
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            peer.write_all(&tail).unwrap();
            peer
        });
        let got = payload(endpoint.recv_blocking().unwrap());
        assert_eq!(got.bytes(), &vec![0; 100_000][..]);
        let peer = writer.join().unwrap();
        drop(peer);
        assert!(endpoint.recv_blocking().unwrap().is_none(), "then the end");
    }
}
