//! A child's stdout and stderr, when they are pipes.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};

use crate::sys;
use crate::sys::stdio::PipeReader;

macro_rules! child_stream {
    ($name:ident, $what:literal) => {
        #[doc = concat!("The child's ", $what, ", read asynchronously (`tokio::io::AsyncRead`).")]
        ///
        /// Obtained from `UtilityProcess::take_stdout` / `take_stderr` for a child started with
        /// `Stdio::Pipe`. It stays readable after the child has exited, until everything the
        /// child wrote has been read; then reads return 0 bytes. The pipe holds 64 KiB: a child
        /// that writes more blocks until it is read, so read it (or use `Stdio::Ignore`) if
        /// the child is chatty.
        #[derive(Debug)]
        pub struct $name {
            reader: PipeReader,
        }

        impl $name {
            pub(crate) fn new(pipe: sys::Object) -> Self {
                $name {
                    reader: PipeReader::new(pipe),
                }
            }
        }

        impl AsyncRead for $name {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                self.get_mut().reader.poll_read(cx, buf)
            }
        }
    };
}

child_stream!(ChildStdout, "stdout");
child_stream!(ChildStderr, "stderr");
