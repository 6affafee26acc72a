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
//! rules makes the reader fail with `InvalidData` for good. The meaning of a handle value
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
//!   (libuv's "zero reads"), and `recv` asks `PeekNamedPipe` how much is there and reads at most
//!   that, so every read completes at once. The only bytes held in our memory between calls are
//!   those of a chunk header that arrived in pieces (our own writer never splits one).
//! - **Bounded, never-blocking sends.** One overlapped write in flight, from a buffer the
//!   channel owns (a copy of at most 1 MiB of the caller's bytes): `send` while it is pending is
//!   `WouldBlock`; its completion is what `writable` waits for.
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
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use windows_sys::Win32::Foundation::{
    ERROR_BROKEN_PIPE, ERROR_IO_INCOMPLETE, ERROR_IO_PENDING, ERROR_NO_DATA,
    ERROR_OPERATION_ABORTED, ERROR_PIPE_NOT_CONNECTED, HANDLE,
};
use windows_sys::Win32::Storage::FileSystem::{GetFileType, ReadFile, WriteFile, FILE_TYPE_PIPE};
use windows_sys::Win32::System::IO::{CancelIoEx, GetOverlappedResult, OVERLAPPED};

use super::chunk::{self, Exported, Header, FIXED, MAX_PAYLOAD};
pub(crate) use super::chunk::{Broker, MAX_HANDLES};
use super::handle;
use super::wake::EventWaker;

use super::named_pipe as pipe;

/// What [`Channel::wait`] waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Interest {
    /// `recv` would not return `WouldBlock`.
    Readable,
    /// `send` would not return `WouldBlock`.
    Writable,
}

/// How long `into_handle` waits for the rest of a chunk or for our last write.
const HANDOVER_WAIT: Duration = Duration::from_secs(5);

/// Whether `handle` is a pipe a [`Channel`] can wrap (the port type check for received
/// handles).
///
/// See `GetFileType` (learn.microsoft.com/windows/win32/api/fileapi/nf-fileapi-getfiletype).
pub(crate) fn is_channel(handle: BorrowedHandle<'_>) -> bool {
    // SAFETY: GetFileType only queries the open (borrowed) handle.
    unsafe { GetFileType(handle.as_raw_handle()) == FILE_TYPE_PIPE }
}

/// One overlapped operation: its `OVERLAPPED` and event, boxed so that their address stays
/// put while the kernel may write to them.
struct Op {
    /// The kernel's record of the operation.
    overlapped: OVERLAPPED,
    /// Manual-reset; signalled when the operation completes.
    event: OwnedHandle,
    /// What a write writes (unused by reads).
    buf: Vec<u8>,
}

// SAFETY: `Op` holds a raw event handle (inside OVERLAPPED) and a buffer; both may be used from
// any thread. The channel's mutexes serialise all access to an Op.
unsafe impl Send for Op {}

impl Op {
    /// A fresh operation record with its own event.
    fn new() -> io::Result<Box<Op>> {
        let event = handle::event()?;
        let overlapped = OVERLAPPED {
            hEvent: event.as_raw_handle(),
            ..Default::default()
        };
        Ok(Box::new(Op {
            overlapped,
            event,
            buf: Vec::new(),
        }))
    }

    /// Clears the kernel's fields before the record is reused (the event stays).
    fn reset(&mut self) {
        self.overlapped = OVERLAPPED {
            hEvent: self.event.as_raw_handle(),
            ..Default::default()
        };
    }

    /// The outcome of the operation, without waiting: `None` while it is pending.
    ///
    /// See `GetOverlappedResult`
    /// (learn.microsoft.com/windows/win32/api/ioapiset/nf-ioapiset-getoverlappedresult).
    fn result(&self, pipe: HANDLE) -> Option<io::Result<usize>> {
        let mut n = 0u32;
        // SAFETY: the record belongs to an operation started on `pipe`; not waiting, the call
        // only reads it.
        if unsafe { GetOverlappedResult(pipe, &self.overlapped, &mut n, 0) } != 0 {
            return Some(Ok(n as usize));
        }
        let err = io::Error::last_os_error();
        (err.raw_os_error() != Some(ERROR_IO_INCOMPLETE as i32)).then_some(Err(err))
    }

    /// Waits up to `timeout` for the operation, then cancels it and waits for the
    /// cancellation, so that the record is free on return. Returns what it transferred.
    ///
    /// See `CancelIoEx`
    /// (learn.microsoft.com/windows/win32/fileio/cancelioex-func).
    fn finish(&mut self, pipe: HANDLE, timeout: Option<Duration>) -> io::Result<usize> {
        if !handle::wait_for(self.event.as_handle(), timeout)? {
            // SAFETY: cancels only this record's operation on `pipe`; harmless if it completed.
            unsafe { CancelIoEx(pipe, &self.overlapped) };
        }
        let mut n = 0u32;
        // SAFETY: waiting for the (possibly cancelled) operation this record describes.
        if unsafe { GetOverlappedResult(pipe, &self.overlapped, &mut n, 1) } != 0 {
            return Ok(n as usize);
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(code) if code == ERROR_OPERATION_ABORTED as i32 => Ok(n as usize),
            _ => Err(err),
        }
    }
}

impl fmt::Debug for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Op")
            .field("event", &self.event)
            .field("buf", &self.buf.len())
            .finish()
    }
}

/// Whether an error from a pipe call means the peer has closed its end.
fn is_closed(err: &io::Error) -> bool {
    [ERROR_BROKEN_PIPE, ERROR_PIPE_NOT_CONNECTED, ERROR_NO_DATA]
        .iter()
        .any(|&code| err.raw_os_error() == Some(code as i32))
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
    /// The end-of-stream marker, when `shutdown` found a write in flight and queued it behind.
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
    /// a pipe. The handle must have been opened overlapped (all of ours are).
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
        if w.shut || w.broken {
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
        match self.start_write(op) {
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

    /// Starts writing `op.buf`: `Ok(false)` if it completed at once, `Ok(true)` if pending.
    ///
    /// See `WriteFile`
    /// (learn.microsoft.com/windows/win32/api/fileapi/nf-fileapi-writefile).
    fn start_write(&self, op: &mut Op) -> io::Result<bool> {
        op.reset();
        // SAFETY: `op` is boxed and stays in this channel (or goes to the linger thread) until
        // the write completes, so the buffer and OVERLAPPED outlive the operation; the length
        // fits u32 (at most 1 MiB plus a header).
        let ok = unsafe {
            WriteFile(
                self.raw(),
                op.buf.as_ptr(),
                op.buf.len() as u32,
                std::ptr::null_mut(),
                &mut op.overlapped,
            )
        };
        if ok != 0 {
            return Ok(false);
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(ERROR_IO_PENDING as i32) {
            Ok(true)
        } else {
            Err(err)
        }
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
            let avail = match pipe::peek(self.raw(), &mut []) {
                Ok((_, avail)) => avail,
                Err(err) if is_closed(&err) => {
                    r.eof = true;
                    break;
                }
                Err(err) => return Err(err),
            };
            let want = r.remaining.min(limit - got).min(avail);
            if want == 0 {
                break;
            }
            buf.reserve(want);
            let n = self.read_now(&mut r.read, buf, want)?;
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
        if got_any && r.header.is_empty() {
            let mut fixed = [0u8; FIXED];
            match pipe::peek(self.raw(), &mut fixed) {
                Ok((FIXED, _)) if Header::parse(&fixed).is_ok_and(|h| h.count > 0) => {
                    return Ok(false)
                }
                Ok(_) => {}
                Err(err) if is_closed(&err) => {
                    r.eof = true;
                    return Ok(false);
                }
                Err(err) => return Err(err),
            }
        }
        loop {
            let need = match r.header.len() {
                n if n < FIXED => FIXED,
                _ => self
                    .checked(
                        r,
                        Header::parse(r.header[..FIXED].try_into().unwrap_or(&[0; FIXED])),
                    )?
                    .size(),
            };
            if r.header.len() == need {
                break;
            }
            let avail = match pipe::peek(self.raw(), &mut []) {
                Ok((_, avail)) => avail,
                Err(err) if is_closed(&err) => {
                    r.eof = true;
                    return Ok(false);
                }
                Err(err) => return Err(err),
            };
            let want = (need - r.header.len()).min(avail);
            if want == 0 {
                return Ok(false);
            }
            let Reader { read, header, .. } = r;
            self.read_now(read, header, want)?;
        }
        let fixed: [u8; FIXED] = r.header[..FIXED].try_into().unwrap_or([0; FIXED]);
        let header = self.checked(r, Header::parse(&fixed))?;
        if header.is_end() {
            r.eof = true;
            r.header.clear();
            return Ok(false);
        }
        let values = chunk::values(&r.header);
        r.header.clear();
        let imported = lock(&self.broker).import(&values);
        r.pending = self.checked(r, imported)?;
        r.remaining = header.len;
        Ok(true)
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

    /// Reads `want` bytes that `PeekNamedPipe` reported present, appending them to `buf`
    /// (which has room). Such a read completes at once; it is given a second to be safe.
    ///
    /// See `ReadFile` (learn.microsoft.com/windows/win32/api/fileapi/nf-fileapi-readfile).
    fn read_now(&self, op: &mut Op, buf: &mut Vec<u8>, want: usize) -> io::Result<usize> {
        buf.reserve(want);
        let want = want.min(buf.capacity() - buf.len()).min(u32::MAX as usize);
        op.reset();
        let spare = buf.spare_capacity_mut();
        let mut n = 0u32;
        // SAFETY: `spare` is valid for writes of `want` bytes; the OVERLAPPED is boxed in the
        // reader and `finish` below waits for (or cancels and reaps) the operation before we
        // return, so neither is used by the kernel afterwards.
        let ok = unsafe {
            ReadFile(
                self.raw(),
                spare.as_mut_ptr().cast(),
                want as u32,
                &mut n,
                &mut op.overlapped,
            )
        };
        let n = if ok != 0 {
            n as usize
        } else {
            let err = io::Error::last_os_error();
            if err.raw_os_error() != Some(ERROR_IO_PENDING as i32) {
                return Err(err);
            }
            op.finish(self.raw(), Some(Duration::from_secs(1)))?
        };
        let n = n.min(want);
        // SAFETY: ReadFile initialised the first `n` bytes of the spare capacity.
        unsafe { buf.set_len(buf.len() + n) };
        Ok(n)
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
        r.zero.reset();
        let mut n = 0u32;
        // SAFETY: a zero-length read writes nothing; the pointer is to the reader's own buffer
        // field only to be non-null. The OVERLAPPED is boxed in the reader, and Drop /
        // into_handle cancel and reap this read before the box goes away.
        let ok = unsafe {
            ReadFile(
                self.raw(),
                r.read.buf.as_mut_ptr(),
                0,
                &mut n,
                &mut r.zero.overlapped,
            )
        };
        if ok != 0 || io::Error::last_os_error().raw_os_error() != Some(ERROR_IO_PENDING as i32) {
            return true;
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
                handle::duplicate(r.zero.event.as_handle())?
            }
            Interest::Writable => {
                let mut w = lock(&self.writer);
                if !matches!(self.write_busy(&mut w), Ok(true)) {
                    return Ok(true);
                }
                handle::duplicate(w.op.event.as_handle())?
            }
        };
        handle::wait_for(event.as_handle(), timeout)
    }

    /// The peer reads end of stream once it has read what was sent before; later sends fail
    /// with `BrokenPipe`. Our own receiving is unaffected (a named pipe cannot be half-closed;
    /// this writes the end-of-stream marker).
    pub(crate) fn shutdown(&self) {
        let mut w = lock(&self.writer);
        if w.shut {
            return;
        }
        w.shut = true;
        if w.broken {
            return;
        }
        let busy = matches!(self.write_busy(&mut w), Ok(true));
        let mut op = match busy {
            false => std::mem::replace(
                &mut w.op,
                match Op::new() {
                    Ok(op) => op,
                    Err(_) => return,
                },
            ),
            true => match Op::new() {
                Ok(op) => op,
                Err(_) => return,
            },
        };
        op.buf.clear();
        op.buf.extend_from_slice(&chunk::END_MARKER);
        match self.start_write(&mut op) {
            Ok(true) => w.marker = Some(op),
            Ok(false) => {}
            Err(_) => w.broken = true,
        }
    }

    /// Gives up this end for transfer to another process: stops all pending I/O (no read is
    /// outstanding afterwards, nothing read is lost) and returns the pipe handle with the
    /// payload bytes of the current chunk not yet received (read out here, waiting up to 5 s
    /// for a chunk the peer is still writing), so that the stream, as the next holder sees it,
    /// starts at a chunk boundary.
    ///
    /// Fails with `WouldBlock` if a write of ours does not finish within 5 s, `TimedOut` if the
    /// rest of the chunk does not arrive in time, and `InvalidData` if the current chunk's
    /// handles were not handed out yet (only a peer that splits its headers can cause that).
    pub(crate) fn into_handle(self) -> io::Result<(OwnedHandle, Vec<u8>)> {
        let deadline = Instant::now() + HANDOVER_WAIT;
        self.read_waker.disarm();
        self.write_waker.disarm();
        let rest = self.drain_current_chunk(deadline)?;
        let mut w = lock(&self.writer);
        let left = || Some(deadline.saturating_duration_since(Instant::now()));
        let still = || {
            io::Error::new(
                io::ErrorKind::WouldBlock,
                "our last write is still in flight",
            )
        };
        if w.in_flight {
            if !handle::wait_for(w.op.event.as_handle(), left())? {
                return Err(still());
            }
            w.in_flight = false;
        }
        if let Some(marker) = w.marker.take() {
            if !handle::wait_for(marker.event.as_handle(), left())? {
                w.marker = Some(marker);
                return Err(still());
            }
        }
        drop(w);
        Ok((handle::duplicate(self.pipe.as_handle())?, rest))
    }

    /// For `into_handle`: stops the zero read, and reads out the rest of the current chunk.
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
            Ok((_, avail)) if avail > 0 => return self.read_now(op, buf, want.min(avail)),
            Err(err) if is_closed(&err) => return Ok(0),
            _ => {}
        }
        op.reset();
        let spare = buf.spare_capacity_mut();
        let want = want.min(spare.len()).min(u32::MAX as usize);
        let mut n = 0u32;
        // SAFETY: `spare` is valid for writes of `want` bytes; `finish` waits for or cancels
        // and reaps the operation before we return.
        let ok = unsafe {
            ReadFile(
                self.raw(),
                spare.as_mut_ptr().cast(),
                want as u32,
                &mut n,
                &mut op.overlapped,
            )
        };
        let n = if ok != 0 {
            n as usize
        } else {
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(code) if code == ERROR_IO_PENDING as i32 => {
                    match op.finish(self.raw(), Some(timeout)) {
                        Err(err) if is_closed(&err) => 0,
                        other => other?,
                    }
                }
                _ if is_closed(&err) => 0,
                _ => return Err(err),
            }
        };
        let n = n.min(want);
        // SAFETY: the read initialised the first `n` bytes of the spare capacity.
        unsafe { buf.set_len(buf.len() + n) };
        Ok(n)
    }
}

impl Drop for Channel {
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

/// (The ops stay boxed: the kernel holds each OVERLAPPED's address until it completes.)
///
/// Writes still in flight when their channel was dropped, with a duplicate of the pipe handle
/// that keeps the pipe open for them. Dropping it waits for them (`patient`) or cancels them.
#[allow(clippy::vec_box)]
struct Lingering {
    /// Keeps the file object, and so the writes, alive.
    pipe: OwnedHandle,
    /// The writes; their buffers and OVERLAPPEDs must live until they complete.
    ops: Vec<Box<Op>>,
    /// Wait for completion (on the linger thread) rather than cancel.
    patient: bool,
}

impl Drop for Lingering {
    fn drop(&mut self) {
        let timeout = if self.patient {
            None
        } else {
            Some(Duration::ZERO)
        };
        for op in &mut self.ops {
            // A write that cannot be waited for must still be reaped: cancel, then wait.
            if op.finish(self.pipe.as_raw_handle(), timeout).is_err() && self.patient {
                op.finish(self.pipe.as_raw_handle(), Some(Duration::ZERO))
                    .ok();
            }
        }
    }
}

/// Hands writes still in flight to a thread that waits until the peer has read them (or is
/// gone), so that a message sent just before the channel was dropped still arrives. If no
/// thread can be had, the writes are cancelled instead (their memory must not outlive them).
#[allow(clippy::vec_box)] // each op must stay at its address, see `Lingering`
fn linger(pipe: BorrowedHandle<'_>, ops: Vec<Box<Op>>) {
    let kept = match handle::duplicate(pipe) {
        Ok(kept) => kept,
        Err(_) => {
            for mut op in ops {
                op.finish(pipe.as_raw_handle(), Some(Duration::ZERO)).ok();
            }
            return;
        }
    };
    let lingering = Lingering {
        pipe: kept,
        ops,
        patient: false,
    };
    // If spawning fails, the closure (and with it `lingering`) is dropped impatiently.
    let _ = std::thread::Builder::new()
        .name("channel-linger".into())
        .spawn(move || {
            let mut lingering = lingering;
            lingering.patient = true;
        });
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
