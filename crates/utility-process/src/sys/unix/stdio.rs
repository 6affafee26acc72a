//! The parent's end of a child's output pipe, read asynchronously: tokio's Unix pipe,
//! registered with the runtime that first reads it.

use std::io;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::unix::pipe;

/// The read end of a pipe, registered with the runtime that first reads it.
#[derive(Debug)]
pub(crate) struct PipeReader {
    fd: Option<OwnedFd>,
    pipe: Option<pipe::Receiver>,
}

impl PipeReader {
    /// Wraps the parent's read end of a child's output pipe.
    pub(crate) fn new(fd: OwnedFd) -> PipeReader {
        PipeReader {
            fd: Some(fd),
            pipe: None,
        }
    }

    /// Reads into `buf`, registering the pipe with the current runtime on first use.
    pub(crate) fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.pipe.is_none() {
            let Some(fd) = self.fd.take() else {
                return Poll::Ready(Err(io::Error::other("the pipe could not be registered")));
            };
            self.pipe = Some(pipe::Receiver::from_owned_fd(fd)?);
        }
        match &mut self.pipe {
            Some(pipe) => Pin::new(pipe).poll_read(cx, buf),
            None => Poll::Ready(Err(io::Error::other("the pipe could not be registered"))),
        }
    }
}
