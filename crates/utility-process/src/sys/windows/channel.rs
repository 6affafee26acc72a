//! A port's channel on Windows, fitted to the contract of `sys/mod.rs` ("the channel"): one
//! end of a named pipe (`duplex`), shared by its owner and its runtime registrations, with
//! the broker that says how handles travel on it.
//!
//! Handles travel only where the parent can broker them (see `chunk.rs`): on a child's parent
//! port, both ways. A channel made by `MessageChannel::new` and every received port carry
//! messages only: attaching a port or a buffer to a message on one fails with `Unsupported`,
//! and a peer that announces handles on one breaks the protocol.

use std::io;
use std::os::windows::io::{AsHandle, BorrowedHandle, OwnedHandle};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::duplex::{self, Broker};
use super::Interest;

/// Why a receive refused what the peer attached: the payload of an `InvalidData` error from
/// [`Channel::recv`], for the protocol violation it becomes.
#[derive(Debug)]
pub(crate) struct Refused(pub(crate) &'static str);

impl Refused {
    /// The error a receive returns for a peer that broke the rules.
    pub(crate) fn error(why: &'static str) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, Refused(why))
    }
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for Refused {}

/// One end of a port's channel, shared by its owner and its runtime registrations.
#[derive(Debug, Clone)]
pub(crate) struct Channel(Arc<duplex::Channel>, Arc<AtomicBool>);

impl Channel {
    /// Both ends of a new channel; no handles travel on either.
    pub(crate) fn pair() -> io::Result<(Channel, Channel)> {
        let (a, b) = duplex::Channel::pair()?;
        Ok((Channel::wrap(a, false), Channel::wrap(b, false)))
    }

    /// Both ends of a new channel, as the handles that travel: one to keep, one to give away.
    pub(crate) fn pair_owned() -> io::Result<(OwnedHandle, OwnedHandle)> {
        super::named_pipe::pair()
    }

    /// Takes a handle received from another process as a channel on which no handles travel.
    ///
    /// # Errors
    ///
    /// `InvalidData` if it is not a pipe.
    pub(crate) fn from_owned(handle: OwnedHandle) -> io::Result<Channel> {
        duplex::Channel::from_handle(handle, Broker::None).map(|c| Channel::wrap(c, false))
    }

    /// Takes the parent port a child inherited: handles the parent sends arrive in this
    /// process's table already, handles sent to it are given up to the parent.
    pub(crate) fn parent_port(handle: OwnedHandle) -> io::Result<Channel> {
        duplex::Channel::from_handle(handle, Broker::Parent).map(|c| Channel::wrap(c, true))
    }

    /// Makes this channel, the parent's end of a child's port, the broker for that child:
    /// `process` is the child's process handle (with `PROCESS_DUP_HANDLE`).
    pub(crate) fn broker_for(&self, process: Arc<OwnedHandle>) {
        self.0.set_broker(Broker::Child(process));
        self.1.store(true, Ordering::SeqCst);
    }

    fn wrap(channel: duplex::Channel, brokered: bool) -> Channel {
        Channel(Arc::new(channel), Arc::new(AtomicBool::new(brokered)))
    }

    /// Blocks until the write `send` last started has completed (or failed): a process that
    /// exits with a write in flight cancels it, and the bytes are lost.
    pub(crate) fn wait_sent(&self) {
        let _ = self.0.wait(Interest::Writable, None);
    }

    /// Whether handles (ports, shared buffers) can travel on this channel: only where the
    /// parent brokers them, on a child's parent port.
    pub(crate) fn carries_attachments(&self) -> bool {
        self.1.load(Ordering::SeqCst)
    }

    /// The handle itself, to attach to a send that hands this channel to another process.
    pub(crate) fn as_object(&self) -> BorrowedHandle<'_> {
        self.0.as_ref().as_handle()
    }

    /// Sends a prefix of `bytes` with `attached` travelling with its first byte; never blocks.
    pub(crate) fn send(&self, bytes: &[u8], attached: &[BorrowedHandle<'_>]) -> io::Result<usize> {
        self.0.send(bytes, attached)
    }

    /// Receives at most `limit` bytes into `buf`, without blocking; `Ok(0)` is end-of-stream.
    pub(crate) fn recv(
        &self,
        buf: &mut Vec<u8>,
        limit: usize,
        attached: &mut Vec<OwnedHandle>,
    ) -> io::Result<usize> {
        self.0.recv(buf, limit, attached)
    }

    /// Reads the rest of a chunk this end has begun to deliver (waiting until `deadline` for
    /// bytes the peer is still writing), so that the stream starts at a chunk boundary for the
    /// next holder of the port.
    pub(crate) fn finish_chunk(&self, buf: &mut Vec<u8>, deadline: Instant) -> io::Result<()> {
        buf.extend_from_slice(&self.0.drain_current_chunk(deadline)?);
        Ok(())
    }

    /// Closes both ways, as a Unix `shutdown(SHUT_RDWR)`: the peer reads end-of-stream after
    /// what was sent, and our own receives (and whoever waits in one) end now.
    pub(crate) fn shutdown(&self) {
        self.0.close();
        self.0.stop_receiving();
    }

    /// Closes the sending way only: the peer reads end-of-stream after what was sent, and we
    /// still read what it sends (how `kill` asks a child to finish, see `child.rs`).
    pub(crate) fn finish_sending(&self) {
        self.0.shutdown();
    }

    /// Blocks until the channel is ready for `interest`, or `timeout` passes (`false`).
    pub(crate) fn wait(&self, interest: Interest, timeout: Option<Duration>) -> io::Result<bool> {
        self.0.wait(interest, timeout)
    }

    /// Readiness for the current tokio runtime. Nothing is registered with the runtime's I/O
    /// driver (there is no completion port): the channel wakes its waiters itself.
    ///
    /// # Errors
    ///
    /// An error, as on Unix, outside a tokio runtime.
    pub(crate) fn register(&self, interest: Interest) -> io::Result<Registration> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(io::Error::other(
                "utility-process must be awaited within a tokio runtime (or use the blocking calls)",
            ));
        }
        Ok(Registration {
            channel: Arc::clone(&self.0),
            interest,
        })
    }
}

/// A channel's readiness, for the task that awaits it.
#[derive(Debug)]
pub(crate) struct Registration {
    channel: Arc<duplex::Channel>,
    interest: Interest,
}

/// Readiness reported by a [`Registration`]. The channel's readiness is level-triggered (it
/// is asked again at each wait), so there is nothing to clear.
#[derive(Debug)]
pub(crate) struct Ready;

impl Registration {
    /// Waits until the channel may be readable.
    pub(crate) async fn readable(&self) -> io::Result<Ready> {
        debug_assert_eq!(self.interest, Interest::Readable);
        self.channel.readable().await;
        Ok(Ready)
    }

    /// Waits until the channel may be writable.
    pub(crate) async fn writable(&self) -> io::Result<Ready> {
        debug_assert_eq!(self.interest, Interest::Writable);
        self.channel.writable().await;
        Ok(Ready)
    }

    /// Whether this registration is for `channel`.
    pub(crate) fn is_for(&self, channel: &Channel) -> bool {
        Arc::ptr_eq(&self.channel, &channel.0)
    }
}

impl Ready {
    /// Nothing to do: see [`Ready`].
    pub(crate) fn retry(self) {}
}
