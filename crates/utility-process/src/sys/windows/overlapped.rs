//! Overlapped operations on a pipe: one record ([`Op`]) per operation, with its own event, and
//! what happens to writes still in flight when their channel goes away ([`linger`]).
//!
//! The rule that makes all of this sound: the kernel holds the address of an operation's
//! `OVERLAPPED` (and of its buffer) from the start of the operation until it completes, so an
//! `Op` is boxed, and is never dropped or reused before the operation has been reaped, either
//! by seeing it complete or by cancelling it and waiting (`finish`).

use std::fmt;
use std::io;
use std::os::windows::io::{AsHandle, AsRawHandle, BorrowedHandle, OwnedHandle};
use std::time::Duration;

use windows_sys::Win32::Foundation::{
    ERROR_BROKEN_PIPE, ERROR_IO_INCOMPLETE, ERROR_IO_PENDING, ERROR_NO_DATA,
    ERROR_OPERATION_ABORTED, ERROR_PIPE_NOT_CONNECTED, HANDLE,
};
use windows_sys::Win32::Storage::FileSystem::ReadFile;
use windows_sys::Win32::System::IO::{CancelIoEx, GetOverlappedResult, OVERLAPPED};

use super::{handle, issuer};

/// Whether an error from a pipe call means that the peer has closed its end.
pub(crate) fn is_closed(err: &io::Error) -> bool {
    [ERROR_BROKEN_PIPE, ERROR_PIPE_NOT_CONNECTED, ERROR_NO_DATA]
        .iter()
        .any(|&code| err.raw_os_error() == Some(code as i32))
}

/// Whether `err` is `ERROR_IO_PENDING`: the operation started and has not completed yet.
fn is_pending(err: &io::Error) -> bool {
    err.raw_os_error() == Some(ERROR_IO_PENDING as i32)
}

/// One overlapped operation: its `OVERLAPPED`, its event and (for writes) its bytes.
pub(crate) struct Op {
    /// The kernel's record of the operation.
    pub(crate) overlapped: OVERLAPPED,
    /// Manual-reset; signalled when the operation completes.
    pub(crate) event: OwnedHandle,
    /// What a write writes (unused by reads).
    pub(crate) buf: Vec<u8>,
}

// SAFETY: an Op holds a raw event handle (inside OVERLAPPED) and a buffer, both usable from
// any thread; whoever owns the Box serialises access (the channel's mutexes, or the linger
// thread that alone owns it).
unsafe impl Send for Op {}

impl fmt::Debug for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Op")
            .field("event", &self.event)
            .field("buf", &self.buf.len())
            .finish()
    }
}

impl Op {
    /// A fresh operation record with its own event, boxed so that it never moves.
    pub(crate) fn new() -> io::Result<Box<Op>> {
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
    pub(crate) fn result(&self, pipe: HANDLE) -> Option<io::Result<usize>> {
        let mut n = 0u32;
        // SAFETY: the record belongs to an operation started on `pipe`; not waiting, the call
        // only reads it.
        if unsafe { GetOverlappedResult(pipe, &self.overlapped, &mut n, 0) } != 0 {
            return Some(Ok(n as usize));
        }
        let err = io::Error::last_os_error();
        (err.raw_os_error() != Some(ERROR_IO_INCOMPLETE as i32)).then_some(Err(err))
    }

    /// Waits up to `timeout` for the operation; if it has not completed by then (or the wait
    /// fails), cancels it. Either way waits until the kernel is done with the record, so that
    /// it is free on return. Returns what the operation transferred (a cancelled one: 0 or
    /// what it had moved before).
    ///
    /// See `CancelIoEx` (learn.microsoft.com/windows/win32/fileio/cancelioex-func).
    pub(crate) fn finish(&mut self, pipe: HANDLE, timeout: Option<Duration>) -> io::Result<usize> {
        if !matches!(handle::wait_for(self.event.as_handle(), timeout), Ok(true)) {
            // SAFETY: cancels only this record's operation on `pipe` (matched by file object,
            // so a duplicate of the handle does too); harmless if it already completed.
            unsafe { CancelIoEx(pipe, &self.overlapped) };
        }
        let mut n = 0u32;
        // SAFETY: waits for the (possibly cancelled) operation this record describes.
        if unsafe { GetOverlappedResult(pipe, &self.overlapped, &mut n, 1) } != 0 {
            return Ok(n as usize);
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(code) if code == ERROR_OPERATION_ABORTED as i32 => Ok(n as usize),
            _ => Err(err),
        }
    }

    /// Starts writing `self.buf` to `pipe`, on the issuing thread (see `issuer.rs`):
    /// `Ok(false)` if it completed at once, `Ok(true)` if it is pending.
    pub(crate) fn start_write(&mut self, pipe: HANDLE) -> io::Result<bool> {
        self.reset();
        // SAFETY: the record is boxed and is not dropped or reused before the write is
        // reaped (the channel reaps it, `into_handle` waits for it, `linger` outlives it), so
        // the buffer and OVERLAPPED outlive the operation; the length fits u32 (at most 1 MiB
        // and a header).
        unsafe {
            issuer::start_write(
                pipe,
                self.buf.as_ptr(),
                self.buf.len() as u32,
                &mut self.overlapped,
            )
        }
    }

    /// Starts a zero-byte read, which completes when data arrives without consuming any (or at
    /// once, if data is there): `Ok(true)` if pending, `Ok(false)` if it completed.
    ///
    /// See `ReadFile` (learn.microsoft.com/windows/win32/api/fileapi/nf-fileapi-readfile).
    pub(crate) fn start_zero_read(&mut self, pipe: HANDLE) -> io::Result<bool> {
        self.reset();
        let mut n = 0u32;
        // SAFETY: a zero-length read writes nothing through the (non-null, dangling-but-
        // aligned) buffer pointer. The record is boxed, and its owner cancels and reaps this
        // read before dropping it (`Channel::drop`, `into_handle`).
        let ok = unsafe { ReadFile(pipe, self.buf.as_mut_ptr(), 0, &mut n, &mut self.overlapped) };
        if ok != 0 {
            return Ok(false);
        }
        let err = io::Error::last_os_error();
        if is_pending(&err) {
            Ok(true)
        } else {
            Err(err)
        }
    }

    /// Reads up to `want` bytes from `pipe`, appending them to `buf`, and waits up to `timeout`
    /// for them (cancelling after that): what arrived, 0 at end of stream or on timeout.
    /// Bytes that `PeekNamedPipe` reported present are read at once.
    ///
    /// See `ReadFile` (learn.microsoft.com/windows/win32/api/fileapi/nf-fileapi-readfile).
    pub(crate) fn read_within(
        &mut self,
        pipe: HANDLE,
        buf: &mut Vec<u8>,
        want: usize,
        timeout: Duration,
    ) -> io::Result<usize> {
        buf.reserve(want);
        let spare = buf.spare_capacity_mut();
        let want = want.min(spare.len()).min(u32::MAX as usize);
        self.reset();
        let mut n = 0u32;
        // SAFETY: `spare` is valid for writes of `want` bytes; if the read does not complete
        // at once, `finish` waits for it or cancels and reaps it before we return, so the
        // kernel uses neither the buffer nor the record afterwards.
        let ok = unsafe {
            ReadFile(
                pipe,
                spare.as_mut_ptr().cast(),
                want as u32,
                &mut n,
                &mut self.overlapped,
            )
        };
        let n = if ok != 0 {
            n as usize
        } else {
            let err = io::Error::last_os_error();
            let finished = match is_pending(&err) {
                true => self.finish(pipe, Some(timeout)),
                false => Err(err),
            };
            match finished {
                Ok(n) => n,
                Err(err) if is_closed(&err) => 0,
                Err(err) => return Err(err),
            }
        };
        let n = n.min(want);
        // SAFETY: the read initialised the first `n` bytes of the spare capacity.
        unsafe { buf.set_len(buf.len() + n) };
        Ok(n)
    }

    /// Reads `want` bytes that `PeekNamedPipe` reported present (such a read completes at
    /// once; it is given a second to be safe), appending them to `buf`.
    pub(crate) fn read_now(
        &mut self,
        pipe: HANDLE,
        buf: &mut Vec<u8>,
        want: usize,
    ) -> io::Result<usize> {
        self.read_within(pipe, buf, want, Duration::from_secs(1))
    }
}

/// Writes still in flight when their channel was dropped, with a duplicate of the pipe handle
/// that keeps the pipe open for them. Dropping it waits for them (`patient`) or cancels them.
/// (The ops stay boxed: the kernel holds each `OVERLAPPED`'s address until it completes.)
#[allow(clippy::vec_box)]
struct Lingering {
    /// Keeps the file object, and with it the writes, alive.
    pipe: OwnedHandle,
    /// The writes; their buffers and OVERLAPPEDs must live until they complete.
    ops: Vec<Box<Op>>,
    /// Wait for completion (on the linger thread) rather than cancel.
    patient: bool,
}

impl Drop for Lingering {
    fn drop(&mut self) {
        let timeout = (!self.patient).then_some(Duration::ZERO);
        for op in &mut self.ops {
            op.finish(self.pipe.as_raw_handle(), timeout).ok();
        }
    }
}

/// Hands writes still in flight to a thread that waits until the peer has read them (or is
/// gone), so that a message sent just before the channel was dropped still arrives, as it does
/// on Unix (but unlike on Unix, it is lost if this process exits first). If no thread can be
/// had, the writes are cancelled instead: their memory must not outlive them.
#[allow(clippy::vec_box)] // each op must stay at its address, see `Lingering`
pub(crate) fn linger(pipe: BorrowedHandle<'_>, ops: Vec<Box<Op>>) {
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
