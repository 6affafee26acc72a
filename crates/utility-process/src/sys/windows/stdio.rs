//! The parent's end of a child's output pipe, read asynchronously: an anonymous pipe served
//! by a small thread (anonymous pipes cannot be overlapped; see `stdio_pipe.rs`).

use std::io;
use std::os::windows::io::OwnedHandle;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};

use super::stdio_pipe;

/// The read end of a child's output pipe; its thread starts on the first read.
#[derive(Debug)]
pub(crate) struct PipeReader {
    handle: Option<OwnedHandle>,
    reader: Option<stdio_pipe::PipeReader>,
}

impl PipeReader {
    /// Wraps the parent's read end of a child's output pipe.
    pub(crate) fn new(handle: OwnedHandle) -> PipeReader {
        PipeReader {
            handle: Some(handle),
            reader: None,
        }
    }

    /// Reads into `buf`.
    pub(crate) fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.reader.is_none() {
            let Some(handle) = self.handle.take() else {
                return Poll::Ready(Err(io::Error::other("the pipe could not be read")));
            };
            self.reader = Some(stdio_pipe::PipeReader::new(handle)?);
        }
        match &mut self.reader {
            Some(reader) => Pin::new(reader).poll_read(cx, buf),
            None => Poll::Ready(Err(io::Error::other("the pipe could not be read"))),
        }
    }
}
