//! A port's channel on Unix: one end of a connected `AF_UNIX` stream socket, with the OS
//! objects (descriptors) a send attaches travelling as `SCM_RIGHTS`.
//!
//! This is the object the transport is written against (see `sys/mod.rs`, "the channel"):
//! bytes in order, never blocking, objects attached to the first byte of a send and handed to
//! the receive that reads that byte, readiness for tokio and a blocking wait. The socket calls
//! themselves are in [`super::socket`].

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use tokio::io::unix::{AsyncFd, AsyncFdReadyGuard};

use super::reactor::SharedFd;
use super::socket;
use super::Interest;

/// One end of a port's channel, shared by its owner and its runtime registrations.
#[derive(Debug, Clone)]
pub(crate) struct Channel(SharedFd);

impl Channel {
    /// Both ends of a new channel (close-on-exec, never raising `SIGPIPE`), non-blocking.
    pub(crate) fn pair() -> io::Result<(Channel, Channel)> {
        let (a, b) = socket::socketpair()?;
        Ok((Channel::from_owned(a)?, Channel::from_owned(b)?))
    }

    /// Both ends of a new channel, as the objects that travel: one to keep, one to give away.
    pub(crate) fn pair_owned() -> io::Result<(OwnedFd, OwnedFd)> {
        socket::socketpair()
    }

    /// Takes an object received from another process (or inherited) as a channel.
    ///
    /// # Errors
    ///
    /// `InvalidData` if it is not a Unix stream socket: a peer that says "port" about another
    /// kind of object broke the protocol.
    pub(crate) fn from_owned(fd: OwnedFd) -> io::Result<Channel> {
        if !socket::is_stream_socket(fd.as_fd()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a port that is not a Unix stream socket",
            ));
        }
        super::set_nonblocking(fd.as_fd(), true)?;
        Ok(Channel(SharedFd::new(fd)))
    }

    /// The object itself, to attach to a send that hands this channel to another process.
    pub(crate) fn as_object(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }

    /// Returns at once: what `send` accepted is in the kernel's socket buffer already.
    pub(crate) fn wait_sent(&self) {}

    /// Whether descriptors can travel on this channel: always, on Unix.
    pub(crate) fn carries_attachments(&self) -> bool {
        true
    }

    /// Sends as much of `bytes` as the channel takes now, with `attached` travelling with the
    /// first byte. Never blocks (`WouldBlock` when full); a dead peer is an error.
    #[inline]
    pub(crate) fn send(&self, bytes: &[u8], attached: &[BorrowedFd<'_>]) -> io::Result<usize> {
        if attached.is_empty() {
            socket::send(self.0.as_fd(), bytes)
        } else {
            socket::send_with_fds(self.0.as_fd(), bytes, attached)
        }
    }

    /// Receives at most `limit` bytes into the spare capacity of `buf`, without blocking,
    /// appending the objects that came with them to `attached`. `Ok(0)` is end-of-stream.
    ///
    /// # Errors
    ///
    /// `WouldBlock` when nothing is there; `InvalidData` when objects were lost on the way
    /// (a truncated control message): the peer sent more than a message may carry.
    #[inline]
    pub(crate) fn recv(
        &self,
        buf: &mut Vec<u8>,
        limit: usize,
        attached: &mut Vec<OwnedFd>,
    ) -> io::Result<usize> {
        let received = socket::recv_with_fds(self.0.as_fd(), buf, limit, attached)?;
        if received.truncated {
            return Err(Refused::error(
                "a control message was truncated (MSG_CTRUNC): descriptors were lost",
            ));
        }
        Ok(received.bytes)
    }

    /// Nothing to finish on Unix: a socket delivers bytes, with no unit of its own that a
    /// receive could leave half read (the contract's `finish_chunk`, see `sys/mod.rs`).
    pub(crate) fn finish_chunk(&self, _buf: &mut Vec<u8>, _deadline: Instant) -> io::Result<()> {
        Ok(())
    }

    /// The peer reads end-of-stream after what was sent; our own reads end too.
    pub(crate) fn shutdown(&self) {
        socket::shutdown(self.0.as_fd());
    }

    /// Blocks until the channel is ready for `interest` (or hung up), or `timeout` passes.
    /// Returns `false` on timeout.
    pub(crate) fn wait(&self, interest: Interest, timeout: Option<Duration>) -> io::Result<bool> {
        super::wait_fd(self.0.as_fd(), interest, timeout)
    }

    /// Registers the channel with the current tokio runtime for `interest`.
    ///
    /// # Errors
    ///
    /// An error, rather than tokio's panic, outside a tokio runtime.
    pub(crate) fn register(&self, interest: Interest) -> io::Result<Registration> {
        let interest = match interest {
            Interest::Readable => tokio::io::Interest::READABLE,
            Interest::Writable => tokio::io::Interest::WRITABLE,
        };
        super::reactor::register(&self.0, interest).map(Registration)
    }
}

/// Why a receive refused what the peer attached: the payload of an `InvalidData` error from
/// [`Channel::recv`], for the protocol violation it becomes.
#[derive(Debug)]
pub(crate) struct Refused(pub(crate) &'static str);

impl Refused {
    fn error(why: &'static str) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, Refused(why))
    }
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for Refused {}

/// A channel's registration with one tokio runtime.
#[derive(Debug)]
pub(crate) struct Registration(AsyncFd<SharedFd>);

/// Readiness reported by a [`Registration`]; [`Ready::retry`] when the operation then found
/// nothing to do, so that the next wait parks.
#[derive(Debug)]
pub(crate) struct Ready<'a>(AsyncFdReadyGuard<'a, SharedFd>);

impl Registration {
    /// Waits until the channel may be readable (data, end-of-stream or an error).
    pub(crate) async fn readable(&self) -> io::Result<Ready<'_>> {
        self.0.readable().await.map(Ready)
    }

    /// Waits until the channel may be writable.
    pub(crate) async fn writable(&self) -> io::Result<Ready<'_>> {
        self.0.writable().await.map(Ready)
    }

    /// Whether this registration is for `channel`.
    pub(crate) fn is_for(&self, channel: &Channel) -> bool {
        self.0.get_ref().as_raw_fd() == channel.0.as_raw_fd()
    }
}

impl Ready<'_> {
    /// The readiness was stale: the next wait parks until the channel changes.
    pub(crate) fn retry(mut self) {
        self.0.clear_ready();
    }
}
