//! The thread that starts every overlapped write, so that no write dies with its caller.
//!
//! Windows ties an overlapped operation to the thread that started it: "All I/O initiated by
//! a given thread is canceled when that thread exits" (see "Canceling Pending I/O Operations",
//! learn.microsoft.com/windows/win32/fileio/canceling-pending-i-o-operations, and the remarks
//! of `WSASend`). Only operations on a handle bound to a completion port are exempt, and
//! channels use none (see `channel.rs`). A `send` from a short-lived thread (a
//! `spawn_blocking` worker, a thread that sends and exits) would otherwise lose its write when
//! the thread ends; Wine behaves the same way, which is how this was found.
//!
//! So writes are started here, on one thread that lives as long as the process, and the
//! caller waits for the start (not the completion) of the write: a round trip between two
//! threads per `send`. Reads need no such care: the reads that consume bytes complete at once
//! (the bytes are there), and a zero-byte read cancelled by its thread's exit completes with
//! `ERROR_OPERATION_ABORTED`, which is only a spurious wake-up; the next readiness check
//! starts another.

use std::io;
use std::sync::mpsc::{self, Sender, SyncSender};
use std::sync::{Mutex, OnceLock};

use windows_sys::Win32::Foundation::{ERROR_IO_PENDING, HANDLE};
use windows_sys::Win32::Storage::FileSystem::WriteFile;
use windows_sys::Win32::System::IO::OVERLAPPED;

/// A write to start: the raw arguments of `WriteFile` (as integers, to cross threads).
#[derive(Debug)]
struct Request {
    /// The pipe handle.
    pipe: usize,
    /// Start of the bytes.
    buf: usize,
    /// How many bytes.
    len: u32,
    /// The operation's `OVERLAPPED`.
    overlapped: usize,
}

/// What starting a write gave: `Ok(true)` pending, `Ok(false)` done, or the Win32 error.
type Reply = Result<bool, i32>;

/// A request with where to send its reply.
type Job = (Request, SyncSender<Reply>);

/// The sending side of the issuing thread's queue.
type Queue = Mutex<Sender<Job>>;

/// The issuing thread's queue; `None` if the thread could not be started.
static QUEUE: OnceLock<Option<Queue>> = OnceLock::new();

/// Starts an overlapped `WriteFile` of `len` bytes at `buf` on `pipe`, on the issuing thread.
/// Returns `Ok(true)` if it is pending, `Ok(false)` if it completed at once.
///
/// If the issuing thread cannot be had, the write is started on the calling thread.
///
/// See `WriteFile` (learn.microsoft.com/windows/win32/api/fileapi/nf-fileapi-writefile).
///
/// # Safety
///
/// `pipe` is an open overlapped handle; `buf` is valid for reads of `len` bytes and
/// `overlapped` (with its event) for writes, both until the write has completed, been
/// cancelled and reaped (`GetOverlappedResult`).
pub(crate) unsafe fn start_write(
    pipe: HANDLE,
    buf: *const u8,
    len: u32,
    overlapped: *mut OVERLAPPED,
) -> io::Result<bool> {
    let request = Request {
        pipe: pipe as usize,
        buf: buf as usize,
        len,
        overlapped: overlapped as usize,
    };
    let queue = QUEUE.get_or_init(spawn);
    let reply = match queue {
        Some(queue) => {
            let (tx, rx) = mpsc::sync_channel(1);
            let sent = queue
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .send((request, tx));
            match sent {
                Ok(()) => rx.recv().unwrap_or(Err(ERROR_IO_PENDING as i32)),
                // SAFETY: forwarded from our caller's contract.
                Err(mpsc::SendError((request, _))) => unsafe { issue(request) },
            }
        }
        // SAFETY: forwarded from our caller's contract.
        None => unsafe { issue(request) },
    };
    reply.map_err(io::Error::from_raw_os_error)
}

/// Starts the issuing thread (named `channel-io`), which lives as long as the process.
fn spawn() -> Option<Queue> {
    let (tx, rx) = mpsc::channel::<Job>();
    let started = std::thread::Builder::new()
        .name("channel-io".into())
        .spawn(move || {
            for (request, reply) in rx {
                // SAFETY: the requester's contract (see `start_write`); it waits for this reply.
                let _ = reply.send(unsafe { issue(request) });
            }
        });
    started.ok().map(|_| Mutex::new(tx))
}

/// Calls `WriteFile` with the request's arguments on the current thread.
///
/// # Safety
///
/// As for [`start_write`].
unsafe fn issue(request: Request) -> Reply {
    // SAFETY: the pointers are valid for the whole operation per the caller's contract.
    let ok = unsafe {
        WriteFile(
            request.pipe as HANDLE,
            request.buf as *const u8,
            request.len,
            std::ptr::null_mut(),
            request.overlapped as *mut OVERLAPPED,
        )
    };
    if ok != 0 {
        return Ok(false);
    }
    match io::Error::last_os_error().raw_os_error() {
        Some(code) if code == ERROR_IO_PENDING as i32 => Ok(true),
        Some(code) => Err(code),
        None => Err(0),
    }
}

#[cfg(test)]
mod tests {
    use super::super::duplex::{Broker, Channel, Interest};
    use super::super::handle;
    use super::*;
    use std::os::windows::io::{AsHandle, AsRawHandle};
    use std::time::Duration;

    #[test]
    fn a_pending_write_survives_the_exit_of_the_thread_that_sent_it() {
        let (server, client) = super::super::named_pipe::pair().unwrap();
        let event = handle::event().unwrap();
        let mut data = Vec::new();
        super::super::chunk::encode(&mut data, &vec![5u8; 1 << 20], &[]);
        let len = data.len() as u32;
        let mut overlapped = Box::new(OVERLAPPED {
            hEvent: event.as_raw_handle(),
            ..Default::default()
        });
        let (pipe, buf, ov) = (
            server.as_raw_handle() as usize,
            data.as_ptr() as usize,
            &mut *overlapped as *mut OVERLAPPED as usize,
        );
        std::thread::spawn(move || {
            // SAFETY: `data` and `overlapped` outlive the write: the test waits for it below.
            let pending = unsafe {
                start_write(pipe as HANDLE, buf as *const u8, len, ov as *mut OVERLAPPED)
            };
            assert!(pending.unwrap(), "1 MiB does not fit the pipe's buffer");
        })
        .join()
        .unwrap();
        let reader = Channel::from_handle(client, Broker::None).unwrap();
        let mut received = Vec::new();
        while received.len() < 1 << 20 {
            match reader.recv(&mut received, usize::MAX, &mut Vec::new()) {
                Ok(n) => assert!(n > 0, "end of stream"),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let woke = reader
                        .wait(Interest::Readable, Some(Duration::from_secs(5)))
                        .unwrap();
                    assert!(
                        woke,
                        "the write was cancelled with its thread ({} bytes came)",
                        received.len()
                    );
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert!(handle::wait_for(event.as_handle(), Some(Duration::from_secs(5))).unwrap());
        drop(overlapped);
        drop(data);
    }
}
