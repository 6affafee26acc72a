//! Anonymous pipes for a child's stdio, and our ends of them as tokio streams.
//!
//! # Why a thread per pipe end
//!
//! `CreatePipe` makes synchronous handles: they cannot be overlapped, so no completion port
//! or readiness API can watch them. Each of our ends is therefore served by one small thread
//! doing blocking `ReadFile` calls, handing data to the async side through channels (a child's
//! stdin is always `NUL`: the API has no stdin pipe yet). Memory stays bounded: exactly one buffer of at most [`CHUNK`] bytes
//! exists per end, passed back and forth between the thread and the async side, so a child
//! writing gigabytes is throttled by the pipe itself (its writes block) until we read.
//!
//! # Stopping the thread
//!
//! When a [`PipeReader`] is dropped, its thread must stop even if it is
//! blocked in a call the child will never complete (a child that holds its write end open
//! and writes nothing). Dropping first closes the channel (a thread between calls sees that
//! and ends), then cancels the blocked call with `CancelSynchronousIo` until the thread has
//! ended. A cancel that comes just before the thread enters its next call is lost, which is
//! why it is repeated — for at most [`STOP_PATIENCE`]; after that the thread is left to end
//! by itself when the child's end closes (the child's job guarantees it does, at the latest
//! when the child is killed). The thread owns the handle and closes it as it ends.
//!
//! See `CreatePipe` (learn.microsoft.com/windows/win32/api/namedpipeapi/nf-namedpipeapi-createpipe)
//! and `CancelSynchronousIo`
//! (learn.microsoft.com/windows/win32/fileio/cancelsynchronousio-func).

use std::io;
use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle};
use std::pin::Pin;
use std::sync::mpsc as std_mpsc;
use std::task::{ready, Context, Poll};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::mpsc as tokio_mpsc;
use windows_sys::Win32::Foundation::{
    ERROR_BROKEN_PIPE, ERROR_OPERATION_ABORTED, GENERIC_READ, GENERIC_WRITE, INVALID_HANDLE_VALUE,
    WAIT_OBJECT_0,
};
#[cfg(test)]
use windows_sys::Win32::Storage::FileSystem::WriteFile;
use windows_sys::Win32::Storage::FileSystem::{
    CreateFileW, ReadFile, FILE_SHARE_READ, FILE_SHARE_WRITE, OPEN_EXISTING,
};
use windows_sys::Win32::System::Pipes::CreatePipe;
use windows_sys::Win32::System::Threading::WaitForSingleObject;
use windows_sys::Win32::System::IO::CancelSynchronousIo;

/// The most bytes moved by one `ReadFile`/`WriteFile`, and the size of each end's one buffer.
pub(crate) const CHUNK: usize = 64 * 1024;

/// How long dropping an end keeps cancelling its thread's blocked call before leaving it.
const STOP_PATIENCE: Duration = Duration::from_millis(500);

/// A new anonymous pipe: `(read end, write end)`, neither inheritable.
///
/// Give the child its end through [`ChildStdio::Handle`](super::spawn::ChildStdio), which
/// makes it inheritable only for the moment of `CreateProcessW`. See `CreatePipe`
/// (learn.microsoft.com/windows/win32/api/namedpipeapi/nf-namedpipeapi-createpipe).
pub(crate) fn pipe() -> io::Result<(OwnedHandle, OwnedHandle)> {
    let mut read = std::ptr::null_mut();
    let mut write = std::ptr::null_mut();
    // SAFETY: the out-pointers are locals; no security attributes means not inheritable; the
    // size is a hint for the pipe's buffer.
    let ok = unsafe { CreatePipe(&mut read, &mut write, std::ptr::null(), CHUNK as u32) };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both handles are new and owned by nobody else.
    unsafe {
        Ok((
            OwnedHandle::from_raw_handle(read),
            OwnedHandle::from_raw_handle(write),
        ))
    }
}

/// The `NUL` device, open for reading and writing, not inheritable: a child's stdin reads
/// end-of-file from it and its output vanishes into it.
///
/// See `CreateFileW` (learn.microsoft.com/windows/win32/api/fileapi/nf-fileapi-createfilew),
/// section "Consoles" and the device namespace in "Naming Files"
/// (learn.microsoft.com/windows/win32/fileio/naming-a-file).
pub(crate) fn null() -> io::Result<OwnedHandle> {
    let name: Vec<u16> = "NUL\0".encode_utf16().collect();
    // SAFETY: `name` is NUL-terminated; no security attributes (not inheritable); no template.
    let handle = unsafe {
        CreateFileW(
            name.as_ptr(),
            GENERIC_READ | GENERIC_WRITE,
            FILE_SHARE_READ | FILE_SHARE_WRITE,
            std::ptr::null(),
            OPEN_EXISTING,
            0,
            std::ptr::null_mut(),
        )
    };
    if handle == INVALID_HANDLE_VALUE {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new handle owned by nobody else.
    Ok(unsafe { OwnedHandle::from_raw_handle(handle) })
}

/// Our read end of a pipe (a child's stdout or stderr), as a tokio [`AsyncRead`].
///
/// Reads end (`Ok(0)`) once every write end has closed — the child's, and any its own
/// children inherited. Dropping it stops its thread and closes the handle.
#[derive(Debug)]
pub(crate) struct PipeReader {
    /// Chunks read by the thread; closed (after any error) when it ends.
    chunks: tokio_mpsc::UnboundedReceiver<io::Result<Vec<u8>>>,
    /// Where a drained buffer goes back to the thread, which reads only when it has one.
    empty: Option<std_mpsc::Sender<Vec<u8>>>,
    /// The chunk being handed out.
    current: Vec<u8>,
    /// How much of `current` has been handed out.
    taken: usize,
    /// The stream has ended (end-of-file or an error was reported).
    ended: bool,
    /// The thread doing the reads.
    thread: IoThread,
}

impl PipeReader {
    /// Serves `handle`, a pipe's read end, with a thread.
    ///
    /// Only pipes: a zero-byte read is taken as a zero-byte write and read again, where a
    /// file or device would mean end-of-file by it.
    pub(crate) fn new(handle: OwnedHandle) -> io::Result<PipeReader> {
        let (chunk_tx, chunks) = tokio_mpsc::unbounded_channel();
        let (empty, empty_rx) = std_mpsc::channel();
        // The only buffer this reader will ever have; its handoffs bound memory to one chunk.
        empty
            .send(vec![0u8; CHUNK])
            .map_err(|_| io::Error::other("channel closed"))?;
        let thread = std::thread::Builder::new()
            .name("pipe-reader".into())
            .spawn(move || read_loop(handle, empty_rx, chunk_tx))?;
        Ok(PipeReader {
            chunks,
            empty: Some(empty),
            current: Vec::new(),
            taken: 0,
            ended: false,
            thread: IoThread(Some(thread)),
        })
    }
}

/// The reader thread: one `ReadFile` per buffer handed to it, until end-of-file or an error.
///
/// See `ReadFile` (learn.microsoft.com/windows/win32/api/fileapi/nf-fileapi-readfile): a pipe
/// whose write ends are all closed fails with `ERROR_BROKEN_PIPE`, which is end-of-file.
fn read_loop(
    handle: OwnedHandle,
    empty: std_mpsc::Receiver<Vec<u8>>,
    chunks: tokio_mpsc::UnboundedSender<io::Result<Vec<u8>>>,
) {
    while let Ok(mut buffer) = empty.recv() {
        buffer.resize(CHUNK, 0);
        loop {
            let mut read = 0u32;
            // SAFETY: `buffer` has CHUNK writable bytes; the handle is open (we own it); the
            // call is synchronous, so nothing refers to `buffer` after it returns.
            let ok = unsafe {
                ReadFile(
                    handle.as_raw_handle(),
                    buffer.as_mut_ptr(),
                    CHUNK as u32,
                    &mut read,
                    std::ptr::null_mut(),
                )
            };
            if ok == 0 {
                let error = io::Error::last_os_error();
                let code = error.raw_os_error().map(|c| c as u32);
                if code != Some(ERROR_BROKEN_PIPE) && code != Some(ERROR_OPERATION_ABORTED) {
                    let _ = chunks.send(Err(error));
                }
                return;
            }
            // A zero-byte read is a zero-byte write by the child, not the end: read again.
            if read > 0 {
                buffer.truncate(read as usize);
                if chunks.send(Ok(buffer)).is_err() {
                    return;
                }
                break;
            }
        }
    }
}

impl AsyncRead for PipeReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            if this.taken < this.current.len() {
                let n = buf.remaining().min(this.current.len() - this.taken);
                buf.put_slice(&this.current[this.taken..this.taken + n]);
                this.taken += n;
                if this.taken == this.current.len() {
                    // Drained: hand the buffer back so the thread reads on while we work.
                    let buffer = std::mem::take(&mut this.current);
                    this.taken = 0;
                    if let Some(empty) = &this.empty {
                        let _ = empty.send(buffer);
                    }
                }
                return Poll::Ready(Ok(()));
            }
            if this.ended {
                return Poll::Ready(Ok(()));
            }
            match ready!(this.chunks.poll_recv(cx)) {
                Some(Ok(chunk)) => {
                    this.current = chunk;
                    this.taken = 0;
                }
                Some(Err(error)) => {
                    this.ended = true;
                    return Poll::Ready(Err(error));
                }
                None => this.ended = true,
            }
        }
    }
}

impl Drop for PipeReader {
    fn drop(&mut self) {
        // A thread waiting for a buffer ends now; one in ReadFile is cancelled.
        self.empty = None;
        self.thread.stop();
    }
}

/// The thread serving one pipe end; [`IoThread::stop`] ends it.
#[derive(Debug)]
struct IoThread(Option<JoinHandle<()>>);

impl IoThread {
    /// Cancels the thread's blocked call until it ends, for at most [`STOP_PATIENCE`].
    ///
    /// The caller has already closed the thread's channel, so a thread that is not blocked
    /// in a call ends by itself. See `CancelSynchronousIo`
    /// (learn.microsoft.com/windows/win32/fileio/cancelsynchronousio-func) and
    /// `WaitForSingleObject`
    /// (learn.microsoft.com/windows/win32/api/synchapi/nf-synchapi-waitforsingleobject).
    fn stop(&mut self) {
        let Some(thread) = self.0.take() else { return };
        let handle = thread.as_raw_handle();
        let deadline = Instant::now() + STOP_PATIENCE;
        loop {
            // SAFETY: `thread` owns `handle`, open until `thread` is dropped below.
            if unsafe { WaitForSingleObject(handle, 0) } == WAIT_OBJECT_0 {
                let _ = thread.join();
                return;
            }
            if Instant::now() >= deadline {
                // Leave it: it ends when the child's end of the pipe closes.
                return;
            }
            // SAFETY: as above. Cancelling I/O that is not pending fails harmlessly.
            unsafe { CancelSynchronousIo(handle) };
            // SAFETY: as above.
            unsafe { WaitForSingleObject(handle, 5) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use windows_sys::Win32::Foundation::ERROR_NO_DATA;

    /// Writes all of `data` to a synchronous handle.
    fn write_all(handle: &OwnedHandle, data: &[u8]) -> io::Result<()> {
        let mut n = 0u32;
        // SAFETY: `data` is readable for its length; the handle is open.
        let ok = unsafe {
            WriteFile(
                handle.as_raw_handle(),
                data.as_ptr(),
                data.len() as u32,
                &mut n,
                std::ptr::null_mut(),
            )
        };
        if ok == 0 {
            return Err(io::Error::last_os_error());
        }
        assert_eq!(n as usize, data.len());
        Ok(())
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn reader_gets_every_byte_then_end_of_file() {
        let (read, write) = pipe().unwrap();
        let writer = std::thread::spawn(move || {
            let data: Vec<u8> = (0..3 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
            for piece in data.chunks(10_000) {
                write_all(&write, piece).unwrap();
            }
        });
        let mut reader = PipeReader::new(read).unwrap();
        let mut got = Vec::new();
        runtime().block_on(reader.read_to_end(&mut got)).unwrap();
        writer.join().unwrap();
        assert_eq!(got.len(), 3 * 1024 * 1024);
        assert!(got.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
    }

    #[test]
    fn dropping_a_blocked_reader_stops_its_thread_and_closes_the_pipe() {
        let (read, write) = pipe().unwrap();
        let reader = PipeReader::new(read).unwrap();
        // Let the thread block in ReadFile: nothing is ever written.
        std::thread::sleep(Duration::from_millis(100));
        let started = Instant::now();
        drop(reader);
        assert!(
            started.elapsed() < STOP_PATIENCE,
            "the blocked read was not cancelled"
        );
        // The read end is closed: writing fails with ERROR_NO_DATA ("pipe being closed").
        let err = write_all(&write, b"x").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(ERROR_NO_DATA as i32));
    }

    #[test]
    fn null_reads_end_of_file_and_swallows_writes() {
        let nul = null().unwrap();
        write_all(&nul, b"gone").unwrap();
        let mut buffer = [0u8; 16];
        let mut read = 1u32;
        // SAFETY: `buffer` is writable for its length; the handle is open.
        let ok = unsafe {
            ReadFile(
                nul.as_raw_handle(),
                buffer.as_mut_ptr(),
                16,
                &mut read,
                std::ptr::null_mut(),
            )
        };
        assert_ne!(ok, 0, "{}", io::Error::last_os_error());
        assert_eq!(read, 0);
    }
}
