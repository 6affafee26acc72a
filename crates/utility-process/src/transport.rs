//! One socket per port: frames in and out, with the I/O done on the caller's thread.
//!
//! # Strategy
//!
//! An [`Endpoint`] owns one end of a non-blocking Unix stream socket and two buffers.
//!
//! - **Sending** encodes the frame straight into the send buffer and, if nothing is already
//!   waiting, writes it to the socket at once, from the caller's thread: the common case is
//!   one `send` system call and no allocation once the buffer has grown. What the socket does
//!   not take (the peer is slow, or the message is larger than the socket buffer) stays in
//!   the buffer, and a flusher task on the library's own thread writes it as the peer drains
//!   the socket; messages posted meanwhile are appended behind it, so order is kept and the
//!   flusher writes them in as few system calls as the socket allows. The waiting bytes are
//!   bounded: past [`Limits::max_queued_bytes`] a post fails with `QueueFull` instead of
//!   growing without end.
//! - **Receiving** happens on the receiver's task: it reads whatever the socket holds into
//!   the receive buffer (many frames per system call when the peer is fast) and decodes
//!   frames from its front. A length is checked against the limit before any room is made
//!   for the frame. Only the receiver's runtime is woken when data arrives; there is no
//!   reader thread and so no thread hand-off on a message's way in.
//!
//! Both buffers sit behind their own mutex, so a sender never waits for a receiver; each lock
//! is held only for the copy or system call, never across an `.await`.
//!
//! # Cancel safety
//!
//! [`Endpoint::recv`] keeps all of its progress in the endpoint: dropping its future loses
//! nothing, and the next call continues where it stopped.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use utility_process_wire::{Decoded, Frame, FrameDecoder, FrameEncoder, PanicReport};

use crate::sys;
use crate::sys::reactor::SharedFd;

/// The smallest read the receiver asks the socket for.
const READ_CHUNK: usize = 64 * 1024;

/// Buffers larger than this are given back to the allocator once they are empty again.
const KEEP_CAPACITY: usize = 1024 * 1024;

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

/// A frame as received, owned.
#[derive(Debug)]
pub(crate) enum Incoming {
    Hello,
    Message {
        payload: Payload,
        attachments: usize,
    },
    Panic(PanicReport),
}

/// The bytes of a received message: a buffer and where the payload starts in it.
///
/// Large payloads take over the receive buffer itself instead of being copied out of it.
#[derive(Debug, Clone)]
pub(crate) struct Payload {
    pub buf: Vec<u8>,
    pub start: usize,
}

/// Why a receive failed: the peer broke the protocol, or the socket did.
#[derive(Debug)]
pub(crate) enum RecvError {
    Protocol(utility_process_wire::Error),
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
    /// The frame could not be built (too large, or the value would not encode).
    Frame(utility_process_wire::Error),
}

#[derive(Debug, Default)]
struct Inbound {
    buf: Vec<u8>,
    /// Where the first undecoded byte is.
    head: usize,
    /// The peer closed its end.
    eof: bool,
}

#[derive(Debug, Default)]
struct Outbound {
    buf: Vec<u8>,
    /// How much of `buf` the socket has already taken.
    sent: usize,
    /// A flusher task owns the job of writing what is left.
    flushing: bool,
    /// The peer is gone or the port was closed: nothing more can be sent.
    closed: bool,
}

/// One end of a port.
#[derive(Debug)]
pub(crate) struct Endpoint {
    // Declared before `fd` so that it is dropped (deregistered) before the descriptor closes.
    readiness: Mutex<Option<Arc<AsyncFd<SharedFd>>>>,
    inbound: Mutex<Inbound>,
    outbound: Mutex<Outbound>,
    encoder: FrameEncoder,
    decoder: FrameDecoder,
    limits: Limits,
    fd: SharedFd,
}

impl Endpoint {
    /// Wraps a connected stream socket, making it non-blocking.
    pub(crate) fn new(fd: OwnedFd, limits: Limits) -> io::Result<Arc<Endpoint>> {
        sys::set_nonblocking(fd.as_fd(), true)?;
        Ok(Arc::new(Endpoint {
            readiness: Mutex::new(None),
            inbound: Mutex::new(Inbound::default()),
            outbound: Mutex::new(Outbound::default()),
            encoder: FrameEncoder::new(limits.max_frame_len),
            decoder: FrameDecoder::new(limits.max_frame_len),
            limits,
            fd: SharedFd::new(fd),
        }))
    }

    pub(crate) fn limits(&self) -> Limits {
        self.limits
    }

    // ---- sending -------------------------------------------------------------------------

    /// Appends a frame built by `build` and writes it now if nothing is waiting before it.
    ///
    /// `build` appends one whole frame to the buffer, or leaves it as it was and fails.
    pub(crate) fn send_frame<F>(self: &Arc<Self>, build: F) -> Result<(), SendError>
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
        // A `Serialize` impl that panics must not leave half a frame in the buffer: that would
        // corrupt every frame after it.
        let mark = out.buf.len();
        let built = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            build(&self.encoder, &mut out.buf)
        }));
        match built {
            Ok(result) => result.map_err(SendError::Frame)?,
            Err(panic) => {
                out.buf.truncate(mark);
                drop(out);
                std::panic::resume_unwind(panic);
            }
        }
        if out.flushing {
            return Ok(());
        }
        match self.write_out(&mut out) {
            Ok(true) => Ok(()),
            Ok(false) => {
                out.flushing = true;
                drop(out);
                self.spawn_flusher();
                Ok(())
            }
            Err(_) => {
                // The peer is gone: this frame and anything behind it can never arrive.
                out.closed = true;
                out.buf.clear();
                out.sent = 0;
                Err(SendError::Closed)
            }
        }
    }

    /// Writes as much of the send buffer as the socket takes. `Ok(true)`: all of it.
    fn write_out(&self, out: &mut Outbound) -> io::Result<bool> {
        while out.sent < out.buf.len() {
            match sys::socket::send(self.fd.as_fd(), &out.buf[out.sent..]) {
                Ok(n) => out.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        out.buf.clear();
        out.sent = 0;
        if out.buf.capacity() > KEEP_CAPACITY {
            out.buf = Vec::new();
        }
        Ok(true)
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
            let afd = match sys::reactor::register(&endpoint.fd, Interest::WRITABLE) {
                Ok(afd) => afd,
                Err(_) => {
                    endpoint.flush_blocking();
                    return;
                }
            };
            loop {
                let mut ready = match afd.writable().await {
                    Ok(ready) => ready,
                    Err(_) => break,
                };
                let mut out = lock(&endpoint.outbound);
                match endpoint.write_out(&mut out) {
                    Ok(true) => {
                        out.flushing = false;
                        return;
                    }
                    Ok(false) => ready.clear_ready(),
                    Err(_) => break,
                }
            }
            let mut out = lock(&endpoint.outbound);
            out.closed = true;
            out.flushing = false;
            out.buf.clear();
            out.sent = 0;
        });
    }

    /// Writes every waiting byte, blocking this thread until the socket has taken them all or
    /// the peer is gone. Used when a process is about to exit or panic.
    pub(crate) fn flush_blocking(&self) {
        let mut out = lock(&self.outbound);
        loop {
            match self.write_out(&mut out) {
                Ok(true) => {
                    out.flushing = false;
                    return;
                }
                Ok(false) => {
                    if sys::wait_fd(self.fd.as_fd(), sys::Interest::Writable, None).is_err() {
                        return;
                    }
                }
                Err(_) => {
                    out.closed = true;
                    out.buf.clear();
                    out.sent = 0;
                    return;
                }
            }
        }
    }

    /// Closes the port: the peer reads end-of-file, and sends and receives here end.
    pub(crate) fn close(&self) {
        let mut out = lock(&self.outbound);
        out.closed = true;
        out.buf.clear();
        out.sent = 0;
        drop(out);
        lock(&self.inbound).eof = true;
        sys::socket::shutdown(self.fd.as_fd());
    }

    // ---- receiving -----------------------------------------------------------------------

    /// Decodes the next frame, reading the socket if the buffer holds none, without blocking.
    pub(crate) fn try_recv(&self) -> Result<TryRecv, RecvError> {
        let mut inbound = lock(&self.inbound);
        let inbound = &mut *inbound;
        loop {
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
                            return Err(RecvError::Protocol(
                                utility_process_wire::Error::FrameTooLarge {
                                    len: payload.len() as u64,
                                    max: self.limits.max_message_size as u32,
                                },
                            ));
                        }
                    }
                    let frame = match frame {
                        Frame::Hello(_) => Incoming::Hello,
                        Frame::Panic(report) => Incoming::Panic(report),
                        Frame::Message {
                            attachments,
                            payload,
                        } => Incoming::Message {
                            // Filled in below, once the buffer is no longer borrowed.
                            payload: Payload {
                                buf: Vec::new(),
                                start: payload.len(),
                            },
                            attachments: attachments.len(),
                        },
                    };
                    return Ok(TryRecv::Frame(take_frame(inbound, frame, consumed)));
                }
                Decoded::Incomplete { needed } => needed,
            };
            if inbound.eof {
                return Ok(TryRecv::Closed);
            }
            // Make room for the whole frame (its size is known and within the limit) or for a
            // read of a useful size, whichever is larger.
            if inbound.head > 0 {
                inbound.buf.drain(..inbound.head);
                inbound.head = 0;
            }
            let want = needed.max(inbound.buf.len() + READ_CHUNK);
            inbound.buf.reserve(want - inbound.buf.len());
            match sys::socket::recv_into(self.fd.as_fd(), &mut inbound.buf, usize::MAX) {
                Ok(0) => inbound.eof = true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(TryRecv::WouldBlock),
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => inbound.eof = true,
                Err(e) => return Err(RecvError::Io(e)),
            }
        }
    }

    /// Waits for the next frame. `Ok(None)`: the peer closed its end.
    ///
    /// Must be called within a tokio runtime; the socket is registered with the runtime of the
    /// first call.
    pub(crate) async fn recv(&self) -> Result<Option<Incoming>, RecvError> {
        loop {
            match self.try_recv()? {
                TryRecv::Frame(frame) => return Ok(Some(frame)),
                TryRecv::Closed => return Ok(None),
                TryRecv::WouldBlock => {}
            }
            let afd = self.readiness().map_err(RecvError::Io)?;
            let mut ready = match afd.readable().await {
                Ok(ready) => ready,
                Err(e) => {
                    // The runtime it was registered with is gone (a port used by one
                    // `#[tokio::main]` after another's): register anew, once.
                    lock(&self.readiness).take();
                    let afd = self.readiness().map_err(RecvError::Io)?;
                    drop(e);
                    match afd.readable().await {
                        Ok(_) => continue,
                        Err(e) => return Err(RecvError::Io(e)),
                    }
                }
            };
            match self.try_recv()? {
                TryRecv::Frame(frame) => return Ok(Some(frame)),
                TryRecv::Closed => return Ok(None),
                TryRecv::WouldBlock => ready.clear_ready(),
            }
        }
    }

    /// Waits for the next frame, blocking this thread.
    pub(crate) fn recv_blocking(&self) -> Result<Option<Incoming>, RecvError> {
        loop {
            match self.try_recv()? {
                TryRecv::Frame(frame) => return Ok(Some(frame)),
                TryRecv::Closed => return Ok(None),
                TryRecv::WouldBlock => {
                    sys::wait_fd(self.fd.as_fd(), sys::Interest::Readable, None)
                        .map_err(RecvError::Io)?;
                }
            }
        }
    }

    /// The socket's registration with the current runtime, made on first use.
    fn readiness(&self) -> io::Result<Arc<AsyncFd<SharedFd>>> {
        let mut slot = lock(&self.readiness);
        if let Some(afd) = &*slot {
            return Ok(Arc::clone(afd));
        }
        let afd = Arc::new(sys::reactor::register(&self.fd, Interest::READABLE)?);
        *slot = Some(Arc::clone(&afd));
        Ok(afd)
    }
}

/// Consumes the frame of `consumed` bytes at the front of the buffer; for a message, moves
/// its payload (whose length the placeholder's `start` holds) out of the buffer.
fn take_frame(inbound: &mut Inbound, mut frame: Incoming, consumed: usize) -> Incoming {
    if let Incoming::Message { payload, .. } = &mut frame {
        let len = payload.start;
        let end = inbound.head + consumed;
        let whole_buffer = inbound.head == 0 && end == inbound.buf.len();
        *payload = if whole_buffer && len >= READ_CHUNK {
            // The frame is everything in the buffer: hand the buffer over, no copy.
            Payload {
                buf: std::mem::take(&mut inbound.buf),
                start: end - len,
            }
        } else {
            Payload {
                buf: inbound.buf[end - len..end].to_vec(),
                start: 0,
            }
        };
    }
    inbound.head += consumed;
    if inbound.head >= inbound.buf.len() {
        inbound.head = 0;
        inbound.buf.clear();
        if inbound.buf.capacity() > KEEP_CAPACITY {
            inbound.buf = Vec::new();
        }
    }
    frame
}

/// Locks a mutex, going on if a panicking thread poisoned it: the buffers stay consistent
/// at every point where a panic could unwind (no code between their updates can panic).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Endpoint {
    /// Appends a last frame behind everything waiting and writes it all, blocking for up to
    /// five seconds per stall. For a panic hook: it never waits for a lock this thread may
    /// hold already, and gives up rather than hang a dying process.
    pub(crate) fn send_last_words<F>(&self, append: F)
    where
        F: FnOnce(&FrameEncoder, &mut Vec<u8>),
    {
        let endpoint = self;
        let mut out = match endpoint.outbound.try_lock() {
            Ok(out) => out,
            Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => {
                // Another thread is mid-send; give it a moment, then go ahead only if it is done.
                std::thread::sleep(std::time::Duration::from_millis(10));
                match endpoint.outbound.try_lock() {
                    Ok(out) => out,
                    Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
                    Err(std::sync::TryLockError::WouldBlock) => return,
                }
            }
        };
        if out.closed {
            return;
        }
        append(&endpoint.encoder, &mut out.buf);
        loop {
            match endpoint.write_out(&mut out) {
                Ok(true) => return,
                Ok(false) => {
                    let ready = sys::wait_fd(
                        endpoint.fd.as_fd(),
                        sys::Interest::Writable,
                        Some(std::time::Duration::from_secs(5)),
                    );
                    if !matches!(ready, Ok(true)) {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
    }
}
