//! A port's channel on Windows: one end of a byte-mode named pipe, with handles carried in a
//! small chunk layer (the Windows stand-in for `SCM_RIGHTS`).
//!
//! # Wire format (what a foreign peer, e.g. a Python child, must read and write)
//!
//! The pipe carries a sequence of *chunks*. Each `send` writes exactly one, in one `WriteFile`:
//!
//! | offset        | size        | field                                                      |
//! |---------------|-------------|------------------------------------------------------------|
//! | 0             | 4           | `len`: payload bytes, `u32` little-endian, at most 1 MiB (1 048 576) |
//! | 4             | 4           | `count`: handle values, `u32` little-endian, at most 253   |
//! | 8             | 8 × `count` | handle values, each `u64` little-endian                    |
//! | 8 + 8×`count` | `len`       | payload                                                    |
//!
//! The handles belong to the first payload byte, so `count > 0` requires `len > 0`. A chunk with
//! `len == 0` and `count == 0` is the end-of-stream marker (written by [`Channel::shutdown`]):
//! the reader reports end of stream and ignores anything after it. A header that breaks these
//! rules makes the reader fail with `InvalidData` for good, as does a handle value that is not
//! a plausible handle (0, negative — the pseudo handles —, not a multiple of 4, or 2^31 and
//! above). A writer may split a chunk over several writes; the reader puts it together. The
//! meaning of a handle value
//! depends on the direction (see `chunk.rs`): from a child to its parent it is a handle in the
//! CHILD's table, which the parent moves out; from a parent to a child it is a handle the
//! parent has already put into the child's table. A Python child therefore sends its own handle
//! values (and must not close them: the parent takes them) and uses received values directly.
//!
//! # Design
//!
//! - **No I/O completion port.** The association with a port is a property of the file object,
//!   which a duplicated handle shares: a channel end handed to another process would keep
//!   posting completions into ours. Every operation has its own `OVERLAPPED` and event instead;
//!   async code is woken by a thread-pool wait on that event (`wake.rs`), blocking code waits
//!   on it directly.
//! - **Pull-based receiving.** Nothing is read behind the caller's back: readiness is a
//!   zero-byte overlapped `ReadFile`, which completes when data arrives without consuming any
//!   (libuv's "zero reads"; Wine 8 does this too), and `recv` asks `PeekNamedPipe` how much is
//!   there and reads at most that, so every read completes at once. The only bytes held in our
//!   memory between calls are those of a chunk header that arrived in pieces (our own writer
//!   never splits one: each chunk is one `WriteFile`). A zero read cancelled because the thread
//!   that started it exited just completes: a spurious wake-up, and the next readiness check
//!   starts another.
//! - **Bounded, never-blocking sends.** One overlapped write in flight, from a buffer the
//!   channel owns (a copy of at most 1 MiB of the caller's bytes): `send` while it is pending is
//!   `WouldBlock`; its completion is what `writable` waits for. Writes are started on one
//!   long-lived thread (`issuer.rs`), because Windows cancels the pending I/O of a thread that
//!   exits and a sender may be a short-lived thread.
//! - **End of stream.** `ERROR_BROKEN_PIPE`, `ERROR_PIPE_NOT_CONNECTED` or `ERROR_NO_DATA` from a
//!   peek or read means the peer closed: `Ok(0)` once everything it wrote was read (Windows keeps
//!   a closed writer's data readable). `shutdown` writes the end-of-stream marker, since a named
//!   pipe cannot be half-closed.
//! - **Dropping with a write in flight** leaves it to a small thread that holds a duplicate of
//!   the pipe handle until the peer has read it (or is gone), so a message sent just before a
//!   port is dropped still arrives, as on Unix. Unlike on Unix it is lost if this process exits
//!   first.

use std::fmt;
use std::io;
use std::os::windows::io::{AsHandle, AsRawHandle, BorrowedHandle, OwnedHandle};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use windows_sys::Win32::Foundation::HANDLE;
use windows_sys::Win32::System::Threading::SetEvent;

use super::chunk::{self, Exported, Header, FIXED, MAX_PAYLOAD};
pub(crate) use super::chunk::{Broker, MAX_HANDLES};
use super::handle;
use super::named_pipe as pipe;
use super::overlapped::{is_closed, linger, Op};
use super::wake::EventWaker;

/// What [`Channel::wait`] waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Interest {
    /// `recv` would not return `WouldBlock`.
    Readable,
    /// `send` would not return `WouldBlock`.
    Writable,
}

/// Whether `handle` is a pipe a [`Channel`] can wrap (the port type check for received
/// handles): a named-pipe end opened for overlapped I/O (see `pipe::is_overlapped_pipe`).
pub(crate) fn is_channel(handle: BorrowedHandle<'_>) -> bool {
    pipe::is_overlapped_pipe(handle)
}

/// The peer is gone: the error `send` reports.
fn broken() -> io::Error {
    io::Error::new(
        io::ErrorKind::BrokenPipe,
        "the channel's peer is gone or it was shut down",
    )
}

/// Takes a mutex even if a panicking thread poisoned it (the state stays consistent: every
/// update is a single assignment after the fallible calls).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The receiving half's state.
#[derive(Debug)]
struct Reader {
    /// The zero-byte read that signals "data arrived".
    zero: Box<Op>,
    /// `zero` is started and not yet reaped.
    zero_pending: bool,
    /// The record for the reads that consume bytes (they complete at once).
    read: Box<Op>,
    /// Bytes of a chunk header consumed so far (non-empty only between calls when a header
    /// arrived in pieces).
    header: Vec<u8>,
    /// Handles of the current chunk not yet handed out with its first payload byte.
    pending: Vec<OwnedHandle>,
    /// Payload bytes of the current chunk not yet read.
    remaining: usize,
    /// End of stream seen (marker, or the peer closed).
    eof: bool,
    /// The peer broke the rules: every later `recv` fails.
    dead: bool,
}

/// The sending half's state.
#[derive(Debug)]
struct Writer {
    /// The record (and buffer) of our one write.
    op: Box<Op>,
    /// `op` is started and not yet reaped.
    in_flight: bool,
    /// The end-of-stream marker's write (see `shutdown`), while it is in flight.
    marker: Option<Box<Op>>,
    /// `shutdown` was called.
    shut: bool,
    /// A write failed: the peer is gone.
    broken: bool,
}

/// One end of a duplex byte stream between two processes (see the module documentation).
///
/// `Send + Sync`: sending and receiving may happen on two threads at once.
pub(crate) struct Channel {
    /// How handles travel.
    broker: Mutex<Broker>,
    /// Receiving state.
    reader: Mutex<Reader>,
    /// Sending state.
    writer: Mutex<Writer>,
    /// The peer closed both ways (its close marker arrived): sends are refused.
    peer_closed: AtomicBool,
    /// Wakes `readable` futures (armed with the zero read's event).
    read_waker: EventWaker,
    /// Wakes `writable` futures (armed with the write's event).
    write_waker: EventWaker,
    /// The pipe end. Declared last: dropped after the operations on it have been stopped.
    pipe: OwnedHandle,
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel")
            .field("pipe", &self.pipe)
            .finish_non_exhaustive()
    }
}

impl Channel {
    /// Both ends of a new channel (see `pipe.rs` for how the pipe is made), `Broker::None` on
    /// both.
    pub(crate) fn pair() -> io::Result<(Channel, Channel)> {
        let (server, client) = pipe::pair()?;
        Ok((
            Channel::wrap(server, Broker::None)?,
            Channel::wrap(client, Broker::None)?,
        ))
    }

    /// Wraps a handle received from another process or inherited. `InvalidData` unless it is
    /// a named-pipe end opened for overlapped I/O (all of ours are).
    pub(crate) fn from_handle(handle: OwnedHandle, broker: Broker) -> io::Result<Channel> {
        if !is_channel(handle.as_handle()) {
            return Err(chunk::invalid("a port that is not a pipe"));
        }
        Channel::wrap(handle, broker)
    }

    /// Wraps a pipe handle.
    fn wrap(pipe: OwnedHandle, broker: Broker) -> io::Result<Channel> {
        let reader = Reader {
            zero: Op::new()?,
            zero_pending: false,
            read: Op::new()?,
            header: Vec::new(),
            pending: Vec::new(),
            remaining: 0,
            eof: false,
            dead: false,
        };
        let writer = Writer {
            op: Op::new()?,
            in_flight: false,
            marker: None,
            shut: false,
            broken: false,
        };
        Ok(Channel {
            broker: Mutex::new(broker),
            reader: Mutex::new(reader),
            writer: Mutex::new(writer),
            peer_closed: AtomicBool::new(false),
            read_waker: EventWaker::new(),
            write_waker: EventWaker::new(),
            pipe,
        })
    }

    /// Sets how handles travel (the parent learns the child's process handle after spawning).
    pub(crate) fn set_broker(&self, broker: Broker) {
        *lock(&self.broker) = broker;
    }

    /// The raw pipe handle, for the Win32 calls.
    fn raw(&self) -> HANDLE {
        self.pipe.as_raw_handle()
    }

    /// Never blocks. Writes a prefix of `bytes` (at most 1 MiB) as one chunk with `handles`
    /// attached to its first byte. `WouldBlock` while our previous write is in flight,
    /// `BrokenPipe` once the peer is gone or after `shutdown`, `Unsupported` for handles
    /// without a broker, `InvalidInput` for more than [`MAX_HANDLES`] handles or handles
    /// without bytes. `Ok(0)` only for empty `bytes`.
    pub(crate) fn send(&self, bytes: &[u8], handles: &[BorrowedHandle<'_>]) -> io::Result<usize> {
        if handles.len() > MAX_HANDLES || (bytes.is_empty() && !handles.is_empty()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "handles travel 1 to 253 at a time, with at least one byte",
            ));
        }
        let mut w = lock(&self.writer);
        if w.shut || w.broken || self.peer_closed.load(Ordering::SeqCst) {
            return Err(broken());
        }
        if self.write_busy(&mut w)? {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        if bytes.is_empty() {
            return Ok(0);
        }
        let payload = &bytes[..bytes.len().min(MAX_PAYLOAD)];
        let exported = lock(&self.broker).export(handles)?;
        let Writer {
            op,
            in_flight,
            broken: is_broken,
            ..
        } = &mut *w;
        op.buf.clear();
        chunk::encode(&mut op.buf, payload, exported.values());
        match op.start_write(self.raw()) {
            Ok(pending) => {
                exported.sent();
                *in_flight = pending;
                Ok(payload.len())
            }
            Err(err) => {
                drop::<Exported>(exported);
                *is_broken = true;
                Err(if is_closed(&err) { broken() } else { err })
            }
        }
    }

    /// Reaps a finished write: `Ok(true)` while it is still in flight; the write's error
    /// (as `BrokenPipe` when the peer closed) if it failed.
    fn write_busy(&self, w: &mut Writer) -> io::Result<bool> {
        if w.in_flight {
            match w.op.result(self.raw()) {
                None => return Ok(true),
                Some(Ok(_)) => w.in_flight = false,
                Some(Err(err)) => {
                    w.in_flight = false;
                    w.broken = true;
                    return Err(if is_closed(&err) { broken() } else { err });
                }
            }
        }
        Ok(false)
    }

    /// Never blocks. Appends at most `limit` payload bytes to `buf` and the handles attached
    /// to the first of them to `handles`. `Ok(0)` is end of stream; `WouldBlock` means nothing
    /// yet; `InvalidData` means the peer broke the chunk rules (the handles of that attachment
    /// are closed, and every later call fails). Stops before a chunk that carries handles, so
    /// that the handles returned always belong to the first byte returned.
    pub(crate) fn recv(
        &self,
        buf: &mut Vec<u8>,
        limit: usize,
        handles: &mut Vec<OwnedHandle>,
    ) -> io::Result<usize> {
        let mut r = lock(&self.reader);
        if r.dead {
            return Err(chunk::invalid("the peer broke the chunk rules earlier"));
        }
        self.reap_zero(&mut r);
        let mut got = 0;
        while got < limit && !r.eof {
            if r.remaining == 0 && !self.next_chunk(&mut r, got > 0)? {
                break;
            }
            let avail = self.available(&mut r)?;
            let want = r.remaining.min(limit - got).min(avail);
            if want == 0 {
                break;
            }
            let n = r.read.read_now(self.raw(), buf, want)?;
            if n == 0 {
                break;
            }
            got += n;
            r.remaining -= n;
            handles.append(&mut r.pending);
        }
        match (got, r.eof) {
            (0, true) => Ok(0),
            (0, false) => Err(io::ErrorKind::WouldBlock.into()),
            (n, _) => Ok(n),
        }
    }

    /// At a chunk boundary: consumes the next header as far as it has arrived. `Ok(true)` when
    /// a chunk's payload is next (its handles, if any, in `r.pending`); `Ok(false)` to stop
    /// (incomplete header, end of stream, or — when `got_any` — a chunk carrying handles,
    /// which the next call returns).
    fn next_chunk(&self, r: &mut Reader, got_any: bool) -> io::Result<bool> {
        if got_any && r.header.is_empty() && self.next_carries_handles(r)? {
            return Ok(false);
        }
        let header = loop {
            let parsed = match r.header.first_chunk::<FIXED>() {
                Some(&fixed) => Some(self.checked(r, Header::parse(&fixed))?),
                None => None,
            };
            let need = parsed.map_or(FIXED, |h| h.size());
            match parsed {
                Some(header) if r.header.len() == need => break header,
                _ => {}
            }
            let avail = match self.available(r)? {
                0 => return Ok(false),
                avail => avail,
            };
            let Reader { read, header, .. } = r;
            read.read_now(self.raw(), header, (need - header.len()).min(avail))?;
        };
        if header.is_end() {
            r.eof = true;
            r.header.clear();
            if header.closed {
                self.peer_closed.store(true, Ordering::SeqCst);
            }
            return Ok(false);
        }
        let values = chunk::values(&r.header);
        r.header.clear();
        let imported = lock(&self.broker).import(&values);
        r.pending = self.checked(r, imported)?;
        r.remaining = header.len;
        Ok(true)
    }

    /// Whether the next chunk, whose header has not been touched yet, carries handles (as far
    /// as its fixed part has arrived; a header that breaks the rules is left for the read that
    /// consumes it to refuse).
    fn next_carries_handles(&self, r: &mut Reader) -> io::Result<bool> {
        let mut fixed = [0u8; FIXED];
        match pipe::peek(self.raw(), &mut fixed) {
            Ok((FIXED, _)) => Ok(Header::parse(&fixed).is_ok_and(|h| h.count > 0)),
            // The next header is not all there yet (or not at all: it may arrive before the
            // read that follows): it may announce handles, which must come with the first byte
            // of a receive of their own, so this receive stops here. Nothing is lost: there
            // was nothing more to read when it looked.
            Ok(_) => Ok(true),
            Err(err) if is_closed(&err) => {
                r.eof = true;
                Ok(true)
            }
            Err(err) => Err(err),
        }
    }

    /// Bytes waiting in the pipe; 0 (and end of stream noted) when the peer has closed.
    fn available(&self, r: &mut Reader) -> io::Result<usize> {
        match pipe::peek(self.raw(), &mut []) {
            Ok((_, avail)) => Ok(avail),
            Err(err) if is_closed(&err) => {
                r.eof = true;
                Ok(0)
            }
            Err(err) => Err(err),
        }
    }

    /// Passes `result` through, marking the reader dead if it is an error.
    fn checked<T>(&self, r: &mut Reader, result: io::Result<T>) -> io::Result<T> {
        if result.is_err() {
            r.dead = true;
            r.header = Vec::new();
            r.pending.clear();
        }
        result
    }

    /// Notes that the zero read completed, if it has.
    fn reap_zero(&self, r: &mut Reader) {
        if r.zero_pending && r.zero.result(self.raw()).is_some() {
            r.zero_pending = false;
        }
    }

    /// Whether `recv` would not return `WouldBlock`; if not, makes sure a zero read is
    /// pending so that the zero op's event signals when data arrives.
    fn read_ready(&self, r: &mut Reader) -> bool {
        if r.dead || r.eof {
            return true;
        }
        self.reap_zero(r);
        match pipe::peek(self.raw(), &mut []) {
            Ok((_, 0)) => {}
            _ => return true,
        }
        if r.zero_pending {
            return false;
        }
        match r.zero.start_zero_read(self.raw()) {
            Ok(true) => {}
            _ => return true,
        }
        r.zero_pending = true;
        false
    }

    /// Resolves when `recv` would not return `WouldBlock` (data, end of stream or an error).
    /// Cancel-safe; may resolve spuriously.
    pub(crate) async fn readable(&self) {
        let notified = self.read_waker.notify().notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        {
            let mut r = lock(&self.reader);
            if self.read_ready(&mut r) || self.read_waker.arm(r.zero.event.as_handle()).is_err() {
                return;
            }
        }
        notified.await;
    }

    /// Resolves when `send` would not return `WouldBlock`. Cancel-safe; may resolve
    /// spuriously.
    pub(crate) async fn writable(&self) {
        let notified = self.write_waker.notify().notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        {
            let mut w = lock(&self.writer);
            if !matches!(self.write_busy(&mut w), Ok(true))
                || self.write_waker.arm(w.op.event.as_handle()).is_err()
            {
                return;
            }
        }
        notified.await;
    }

    /// Blocks until the channel is ready for `interest`: `Ok(true)`, or `Ok(false)` when
    /// `timeout` passes first. May return `Ok(true)` spuriously.
    pub(crate) fn wait(&self, interest: Interest, timeout: Option<Duration>) -> io::Result<bool> {
        let event = match interest {
            Interest::Readable => {
                let mut r = lock(&self.reader);
                if self.read_ready(&mut r) {
                    return Ok(true);
                }
                r.zero.event.as_raw_handle()
            }
            Interest::Writable => {
                let mut w = lock(&self.writer);
                if !matches!(self.write_busy(&mut w), Ok(true)) {
                    return Ok(true);
                }
                w.op.event.as_raw_handle()
            }
        };
        // SAFETY: the zero read's and the write's records (and their events) are created with
        // the channel and only dropped with it (`Drop`, or `into_handle`, which consumes it),
        // so the event stays open while `&self` is borrowed, after the lock is released.
        let event = unsafe { BorrowedHandle::borrow_raw(event) };
        handle::wait_for(event, timeout)
    }

    /// The peer reads end of stream once it has read what was sent before; later sends fail
    /// with `BrokenPipe`. Our own receiving is unaffected (a named pipe cannot be half-closed,
    /// so this writes the end-of-stream marker, behind a write still in flight if there is
    /// one: a pipe keeps writes in the order they were started).
    pub(crate) fn shutdown(&self) {
        self.write_marker(&chunk::END_MARKER);
    }

    /// Closes both ways for the peer: it reads end of stream once it has read what was sent
    /// before, and its later sends fail with `BrokenPipe` (the close marker, see `chunk.rs`).
    /// Our own receiving is ended by `stop_receiving`.
    pub(crate) fn close(&self) {
        self.write_marker(&chunk::CLOSE_MARKER);
    }

    /// Writes a marker as the last chunk, behind a write still in flight (a pipe keeps writes
    /// in the order they were started); later sends fail.
    fn write_marker(&self, marker_bytes: &[u8; chunk::FIXED]) {
        let mut w = lock(&self.writer);
        if w.shut {
            return;
        }
        w.shut = true;
        let _ = self.write_busy(&mut w);
        if w.broken {
            return;
        }
        let Ok(mut marker) = Op::new() else {
            // Without an event there is no marker: the peer sees the end when we close.
            return;
        };
        marker.buf.extend_from_slice(marker_bytes);
        match marker.start_write(self.raw()) {
            Ok(true) => w.marker = Some(marker),
            Ok(false) => {}
            Err(_) => w.broken = true,
        }
    }

    /// Ends our own receiving: later receives report end of stream, and every waiter on this
    /// end, blocking or async, wakes now. What the peer sends from here on is not read here.
    ///
    /// See `SetEvent` (learn.microsoft.com/windows/win32/api/synchapi/nf-synchapi-setevent).
    pub(crate) fn stop_receiving(&self) {
        let mut r = lock(&self.reader);
        r.eof = true;
        // A blocking `wait` and the thread-pool wait behind `readable` both watch the zero
        // read's event: signal it (a zero read still pending signals it again when it ends,
        // which only wakes a waiter that finds the end of stream).
        // SAFETY: the event is open while the channel lives; SetEvent only signals it.
        unsafe { SetEvent(r.zero.event.as_raw_handle()) };
        drop(r);
        self.read_waker.notify().notify_waiters();
    }

    /// Before this end's handle goes to another process: stops the zero read, and reads out
    /// the rest of the current chunk (waiting until `deadline` for bytes the peer is still
    /// writing), so that the stream, as the next holder sees it, starts at a chunk boundary.
    ///
    /// Fails with `TimedOut` if the rest does not arrive in time, and `InvalidData` if the
    /// current chunk's handles were not handed out yet (only a peer that splits its headers
    /// can cause that).
    pub(crate) fn drain_current_chunk(&self, deadline: Instant) -> io::Result<Vec<u8>> {
        let mut r = lock(&self.reader);
        if r.zero_pending {
            r.zero.finish(self.raw(), Some(Duration::ZERO)).ok();
            r.zero_pending = false;
        }
        if !r.pending.is_empty() {
            return Err(chunk::invalid(
                "the current chunk's handles were not received yet",
            ));
        }
        let mut rest = Vec::new();
        while r.remaining > 0 && !r.eof && !r.dead {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the rest of a chunk did not arrive",
                ));
            }
            let want = r.remaining;
            rest.reserve(want);
            let n = self.read_blocking(&mut r.read, &mut rest, want, left)?;
            r.remaining -= n;
            if n == 0 {
                r.eof = true;
            }
        }
        if !r.header.is_empty() && !r.eof {
            return Err(chunk::invalid("a chunk header was cut by the handover"));
        }
        Ok(rest)
    }

    /// Reads up to `want` bytes, waiting up to `timeout` for them; 0 at end of stream.
    fn read_blocking(
        &self,
        op: &mut Op,
        buf: &mut Vec<u8>,
        want: usize,
        timeout: Duration,
    ) -> io::Result<usize> {
        match pipe::peek(self.raw(), &mut []) {
            Ok((_, avail)) if avail > 0 => return op.read_now(self.raw(), buf, want.min(avail)),
            Err(err) if is_closed(&err) => return Ok(0),
            _ => {}
        }
        op.read_within(self.raw(), buf, want, timeout)
    }
}

impl Drop for Channel {
    /// Stops what runs on our behalf before the pipe handle closes: the wait registrations
    /// (released), the zero read (cancelled and reaped), and writes in flight (handed to
    /// `linger`, so that the peer still receives them).
    fn drop(&mut self) {
        self.read_waker.disarm();
        self.write_waker.disarm();
        let pipe = self.raw();
        let r = self
            .reader
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        if r.zero_pending {
            r.zero.finish(pipe, Some(Duration::ZERO)).ok();
        }
        let w = self
            .writer
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        let mut left: Vec<Box<Op>> = w.marker.take().into_iter().collect();
        if w.in_flight {
            let spare = Op::new();
            if let Ok(spare) = spare {
                left.insert(0, std::mem::replace(&mut w.op, spare));
            } else {
                w.op.finish(pipe, Some(Duration::ZERO)).ok();
            }
        }
        if !left.is_empty() {
            linger(self.pipe.as_handle(), left);
        }
    }
}

#[cfg(test)]
#[path = "duplex_tests.rs"]
mod tests;

impl AsHandle for Channel {
    /// The pipe handle, to attach to a send that hands this channel to another process.
    fn as_handle(&self) -> BorrowedHandle<'_> {
        self.pipe.as_handle()
    }
}
