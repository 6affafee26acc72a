//! [`MessageChannel`] and [`MessagePort`]: ports that any process can hand to any other.
//!
//! A channel is a Unix stream socket pair. Sending a port moves its descriptor to the
//! receiving process (`SCM_RIGHTS`), after which the two ends talk directly, process to
//! process: whoever relayed the introduction is out of the path and may exit. The transport
//! (`transport.rs`) makes a port take its queues with it when it travels.
//!
//! Every port, the parent port included, shares the same receive and post logic: [`PortCore`].

use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Notify;
use utility_process_wire::{Attachment, MAX_ATTACHMENTS};

use crate::sys::channel::Channel;
use crate::transport::{Carried, Endpoint, Incoming, Limits, RecvError, SendError, TryRecv};
use crate::{sys, Error, Message, SharedBuffer, Violation};

const NOT_STARTED: u8 = 0;
const STARTED: u8 = 1;
const PAUSED: u8 = 2;

/// A pair of entangled ports: what one posts, the other receives.
///
/// # Examples
///
/// ```
/// use utility_process::MessageChannel;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), utility_process::Error> {
/// let MessageChannel { port1, port2 } = MessageChannel::new()?;
/// port1.post_message(&"over here")?;
/// let message = port2.recv().await.expect("port1 is open");
/// assert_eq!(message.data::<String>()?, "over here");
/// port1.close();
/// assert!(port2.recv().await.is_none());
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct MessageChannel {
    /// One end.
    pub port1: MessagePort,
    /// The other end.
    pub port2: MessagePort,
}

impl MessageChannel {
    /// Creates a channel: two connected ports.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the system is out of descriptors.
    pub fn new() -> Result<MessageChannel, Error> {
        let (a, b) = Channel::pair().map_err(Error::io("creating a message channel"))?;
        let channel = new_channel_id();
        let limits = Limits::default_channel();
        let port = |end| MessagePort::from_endpoint(Endpoint::new(end, limits, channel));
        Ok(MessageChannel {
            port1: port(a),
            port2: port(b),
        })
    }
}

/// An id both ends of a new channel share, distinct from every other channel's in practice:
/// a per-process random salt (std's hasher keys come from the OS) plus a counter.
fn new_channel_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static SALT: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let salt = *SALT.get_or_init(|| {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u32(std::process::id());
        hasher.finish()
    });
    let id = salt.wrapping_add(u64::from(COUNTER.fetch_add(1, Ordering::Relaxed)) << 1);
    // 0 means "a parent port", which has no peer that could travel.
    id.max(1)
}

/// One end of a [`MessageChannel`], in whichever process holds it.
///
/// Messages arrive in the order they were posted; they queue until the port is started
/// ([`recv`](Self::recv) starts it). Dropping the port closes it once everything it had
/// queued to send is written; [`close`](Self::close) closes it at once. Either way the other
/// end's `recv` returns `None`.
///
/// A port is sent by moving it into [`post_message_with_ports`](Self::post_message_with_ports)
/// (or the same method of [`UtilityProcess`](crate::UtilityProcess) and
/// [`ParentPort`](crate::ParentPort)): the type system makes the sender unable to use it
/// afterwards. Messages it had received but not delivered, and messages it still had to
/// write, travel with it in order.
#[derive(Debug)]
pub struct MessagePort {
    core: PortCore,
}

impl MessagePort {
    pub(crate) fn from_endpoint(endpoint: Arc<Endpoint>) -> MessagePort {
        MessagePort {
            core: PortCore::new(endpoint, "the port's peer"),
        }
    }

    /// Posts `value` to the other end, encoded as MessagePack. Never blocks.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] once the other end is closed or its process is gone (unlike
    /// Electron, which drops such messages silently); [`Error::MessageTooLarge`],
    /// [`Error::QueueFull`] and [`Error::Encode`] as for
    /// [`UtilityProcess::post_message`](crate::UtilityProcess::post_message).
    pub fn post_message<T: Serialize + ?Sized>(&self, value: &T) -> Result<(), Error> {
        self.core.post_value(value, Vec::new())
    }

    /// Posts `value` with ports and shared buffers, which move to whichever process receives
    /// the message (Electron's `postMessage(message, transfer)`).
    ///
    /// # Errors
    ///
    /// As [`post_message_with_ports`](Self::post_message_with_ports).
    pub fn post_message_with_transfer<T: Serialize + ?Sized>(
        &self,
        value: &T,
        transfer: Vec<Transferable>,
    ) -> Result<(), Error> {
        self.core.post_value(value, transfer)
    }

    /// Posts `value` with `ports`, which move to whichever process receives the message.
    ///
    /// # Errors
    ///
    /// As [`post_message`](Self::post_message), and [`Error::PortOverItsPeer`] when one of
    /// `ports` is this port's own other end, [`Error::TooManyPorts`] past 253 descriptors. On
    /// error the ports are closed (their peers see the close).
    pub fn post_message_with_ports<T: Serialize + ?Sized>(
        &self,
        value: &T,
        ports: Vec<MessagePort>,
    ) -> Result<(), Error> {
        self.core
            .post_value(value, ports.into_iter().map(Transferable::Port).collect())
    }

    /// Posts raw bytes, without encoding them.
    ///
    /// # Errors
    ///
    /// As [`post_message`](Self::post_message).
    pub fn post_bytes(&self, bytes: &[u8]) -> Result<(), Error> {
        self.core.post_raw(bytes, Vec::new())
    }

    /// Posts `value`, waiting for room while the other end is not reading and the send queue
    /// is at its limit, where [`post_message`](Self::post_message) would fail with
    /// [`Error::QueueFull`]: back-pressure for a producer that must not lose messages.
    ///
    /// # Errors
    ///
    /// As [`post_message`](Self::post_message), except `QueueFull`.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a message is queued whole when the future completes, or not at all.
    pub async fn send<T: Serialize + ?Sized>(&self, value: &T) -> Result<(), Error> {
        send_with(&self.core.endpoint, || {
            self.core.post_value(value, Vec::new())
        })
        .await
    }

    /// Posts raw bytes, waiting for room as [`send`](Self::send) does.
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send).
    pub async fn send_bytes(&self, bytes: &[u8]) -> Result<(), Error> {
        send_with(&self.core.endpoint, || {
            self.core.post_raw(bytes, Vec::new())
        })
        .await
    }

    /// Low-latency mode (off by default): a receive that would park first polls the socket
    /// for up to `spin`, adapting the budget down while nothing comes. See
    /// [`UtilityProcess::set_low_latency`](crate::UtilityProcess::set_low_latency).
    pub fn set_low_latency(&self, spin: Option<Duration>) {
        self.core.endpoint.set_spin(spin);
    }

    /// Starts (or resumes) delivery of messages.
    pub fn start(&self) {
        self.core.start();
    }

    /// Pauses delivery: [`recv`](Self::recv) waits until [`start`](Self::start) is called
    /// from another task; messages stay queued in the socket meanwhile.
    pub fn pause(&self) {
        self.core.pause();
    }

    /// Closes the port now: queued messages are dropped, the other end's `recv` returns
    /// `None`, and posting on either end is an error.
    pub fn close(&self) {
        self.core.endpoint.close();
    }

    /// The next message; `None` once the other end is closed or its process is gone.
    /// Starts the port if it was never started; waits while it is paused.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a message is never lost by dropping the future.
    pub async fn recv(&self) -> Option<Message> {
        self.core.recv().await
    }

    /// The next message, blocking this thread; `None` once the other end is gone.
    pub fn recv_blocking(&self) -> Option<Message> {
        self.core.recv_blocking()
    }

    /// Writes every queued message to the socket, blocking until the other end has taken
    /// them (or is gone).
    pub fn flush(&self) {
        self.core.endpoint.flush_blocking();
    }

    /// How the other end broke the protocol, when it did: the library then closed this port,
    /// and [`recv`](Self::recv) returned `None`. `None` while the port is open, and when it
    /// ended because the other end closed it or its process is gone.
    ///
    /// # Examples
    ///
    /// ```
    /// use utility_process::MessageChannel;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), utility_process::Error> {
    /// let MessageChannel { port1, port2 } = MessageChannel::new()?;
    /// port1.close();
    /// assert!(port2.recv().await.is_none());
    /// assert!(port2.violation().is_none(), "closed, not violated");
    /// # Ok(())
    /// # }
    /// ```
    pub fn violation(&self) -> Option<&Violation> {
        self.core.violation()
    }
}

/// Something that moves to the receiving process with a message: a port or a shared buffer.
#[derive(Debug)]
pub enum Transferable {
    /// A port: the receiver gets it from [`Message::take_ports`].
    Port(MessagePort),
    /// A shared buffer: the receiver gets it from [`Message::take_buffers`].
    Buffer(SharedBuffer),
}

impl From<MessagePort> for Transferable {
    fn from(port: MessagePort) -> Transferable {
        Transferable::Port(port)
    }
}

impl From<SharedBuffer> for Transferable {
    fn from(buffer: SharedBuffer) -> Transferable {
        Transferable::Buffer(buffer)
    }
}

/// What every port shares: posting, starting, pausing and receiving.
#[derive(Debug)]
pub(crate) struct PortCore {
    pub(crate) endpoint: Arc<Endpoint>,
    /// Who is at the other end, for error messages.
    peer: &'static str,
    /// How the peer broke the protocol, if it did (the port is closed then).
    violation: OnceLock<Violation>,
    state: AtomicU8,
    resumed: Notify,
}

impl PortCore {
    pub(crate) fn new(endpoint: Arc<Endpoint>, peer: &'static str) -> PortCore {
        PortCore {
            endpoint,
            peer,
            violation: OnceLock::new(),
            state: AtomicU8::new(NOT_STARTED),
            resumed: Notify::new(),
        }
    }

    pub(crate) fn violation(&self) -> Option<&Violation> {
        self.violation.get()
    }

    pub(crate) fn post_value<T: Serialize + ?Sized>(
        &self,
        value: &T,
        transfer: Vec<Transferable>,
    ) -> Result<(), Error> {
        post_on(
            &self.endpoint,
            |buf, cap| utility_process_wire::encode_value_capped(buf, value, cap),
            transfer,
            || self.peer.to_owned(),
        )
    }

    pub(crate) fn post_raw(&self, bytes: &[u8], transfer: Vec<Transferable>) -> Result<(), Error> {
        post_on(
            &self.endpoint,
            |buf, cap| raw_payload(buf, bytes, cap),
            transfer,
            || self.peer.to_owned(),
        )
    }

    pub(crate) fn start(&self) {
        self.state.store(STARTED, Ordering::SeqCst);
        self.resumed.notify_waiters();
    }

    pub(crate) fn pause(&self) {
        self.state.store(PAUSED, Ordering::SeqCst);
    }

    pub(crate) async fn recv(&self) -> Option<Message> {
        if self.state.load(Ordering::Acquire) == STARTED {
            // The common case, without the pause machinery; and a frame already there is
            // taken without building the waiting future.
            let received = match self.endpoint.try_recv() {
                Ok(TryRecv::Frame(frame)) => Ok(Some(frame)),
                Ok(TryRecv::Closed) => Ok(None),
                Err(e) => Err(e),
                Ok(TryRecv::WouldBlock) => self.endpoint.recv_after(true).await,
            };
            return self.deliver(received);
        }
        loop {
            let resumed = self.resumed.notified();
            match self.state.load(Ordering::SeqCst) {
                NOT_STARTED => self.start(),
                PAUSED => {
                    resumed.await;
                    continue;
                }
                _ => {}
            }
            let received = self.endpoint.recv().await;
            return self.deliver(received);
        }
    }

    pub(crate) fn recv_blocking(&self) -> Option<Message> {
        if self.state.load(Ordering::Acquire) != STARTED {
            // (Not on every call: waking the waiters takes a lock.)
            self.start();
        }
        let received = self.endpoint.recv_blocking();
        self.deliver(received)
    }

    /// Turns what the transport received into a message, or closes the port if the peer
    /// broke the protocol.
    #[inline]
    fn deliver(&self, received: Result<Option<Incoming>, RecvError>) -> Option<Message> {
        match received {
            // The common case, kept small enough to inline.
            Ok(Some(Incoming::Message {
                payload,
                attachments,
                objects,
            })) if attachments.is_empty() && objects.is_empty() => {
                Some(Message::new(payload, Vec::new(), Vec::new()))
            }
            other => self.deliver_other(other),
        }
    }

    /// [`deliver`](Self::deliver) for everything but a plain message.
    #[cold]
    fn deliver_other(&self, received: Result<Option<Incoming>, RecvError>) -> Option<Message> {
        let violation = match received {
            Ok(Some(Incoming::Message {
                payload,
                attachments,
                objects,
            })) => match transferred(attachments, objects) {
                Ok((ports, buffers)) => return Some(Message::new(payload, ports, buffers)),
                Err(problem) => Violation::Descriptors(problem),
            },
            Ok(None) => return None,
            Ok(Some(Incoming::Hello { .. })) => Violation::DuplicateHello,
            Ok(Some(Incoming::Panic(_))) => Violation::UnexpectedFrame("PANIC"),
            Ok(Some(Incoming::Failure(_))) => Violation::UnexpectedFrame("FAILURE"),
            Err(RecvError::Protocol(e)) => Violation::Frame(e),
            Err(RecvError::Descriptors(problem)) => Violation::Descriptors(problem),
            Err(RecvError::Io(e)) => Violation::Read(e),
        };
        // A peer that breaks the protocol gets nothing more from this port: `recv` returns
        // `None`, and the owner finds why in `violation()`.
        tracing::warn!(peer = self.peer, rule = %violation, "protocol violation on a port: closed");
        let _ = self.violation.set(violation);
        self.endpoint.close();
        None
    }
}

/// Turns received objects into ports and buffers, checking that each is what its
/// attachment says.
pub(crate) fn transferred(
    attachments: Vec<Attachment>,
    objects: Vec<sys::Object>,
) -> Result<(Vec<MessagePort>, Vec<SharedBuffer>), &'static str> {
    if attachments.is_empty() && objects.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let mut objects = objects.into_iter();
    let mut ports = Vec::new();
    let mut buffers = Vec::new();
    let mut next = || objects.next().ok_or("fewer descriptors than attachments");
    let channel = |object| {
        Channel::from_owned(object).map_err(|e| match e.kind() {
            std::io::ErrorKind::InvalidData => "a port that is not a Unix stream socket",
            _ => "a port that cannot be made non-blocking",
        })
    };
    for attachment in attachments {
        let (prefix, end, channel_id) = match attachment {
            Attachment::Port { channel: id } => (None, channel(next()?)?, id),
            Attachment::PortWithPrefix { channel: id } => {
                let prefix = channel(next()?)?;
                (Some(prefix), channel(next()?)?, id)
            }
            Attachment::Buffer { len, read_only } => {
                buffers.push(SharedBuffer::receive(next()?, len, read_only)?);
                continue;
            }
            _ => return Err("an attachment of an unknown kind"),
        };
        let endpoint = Endpoint::with_prefix(end, prefix, Limits::default_channel(), channel_id);
        ports.push(MessagePort::from_endpoint(endpoint));
    }
    Ok((ports, buffers))
}

/// Posts with `post`, waiting for room on `endpoint` instead of failing while its send queue
/// is full: the shared body of every `send*` method.
pub(crate) async fn send_with<F>(endpoint: &Endpoint, mut post: F) -> Result<(), Error>
where
    F: FnMut() -> Result<(), Error>,
{
    loop {
        match post() {
            Err(Error::QueueFull { .. }) => endpoint.drained().await,
            other => return other,
        }
    }
}

/// Appends `bytes` as a raw payload, refusing more than `cap`.
pub(crate) fn raw_payload(
    buf: &mut Vec<u8>,
    bytes: &[u8],
    cap: usize,
) -> Result<(), utility_process_wire::Error> {
    if bytes.len() > cap {
        return Err(utility_process_wire::Error::FrameTooLarge {
            len: bytes.len() as u64,
            max: u32::try_from(cap).unwrap_or(u32::MAX),
        });
    }
    crate::transport::reserve(buf, bytes.len());
    buf.extend_from_slice(bytes);
    Ok(())
}

/// Sends one message, with what it transfers, on `port`: the shared body of every `post_*`
/// method.
pub(crate) fn post_on<F>(
    port: &Arc<Endpoint>,
    fill: F,
    transfer: Vec<Transferable>,
    peer: impl FnOnce() -> String,
) -> Result<(), Error>
where
    F: FnOnce(&mut Vec<u8>, usize) -> Result<(), utility_process_wire::Error>,
{
    let limits = port.limits();
    let mut attachments = Vec::with_capacity(transfer.len());
    let mut carried = Vec::with_capacity(transfer.len());
    if !transfer.is_empty() {
        if transfer.len() > MAX_ATTACHMENTS {
            return Err(Error::TooManyPorts {
                count: transfer.len(),
                max: MAX_ATTACHMENTS,
            });
        }
        let over_peer = |t: &Transferable| matches!(t, Transferable::Port(p) if p.core.endpoint.channel_id() == port.channel_id());
        if port.channel_id() != 0 && transfer.iter().any(over_peer) {
            return Err(Error::PortOverItsPeer);
        }
        for item in transfer {
            match item {
                Transferable::Port(sent) => {
                    let (attachment, items) = sent
                        .core
                        .endpoint
                        .hand_over()
                        .map_err(Error::io("handing a port over"))?;
                    attachments.push(attachment);
                    carried.extend(items);
                }
                Transferable::Buffer(buffer) => {
                    let (attachment, object) = buffer.into_parts();
                    attachments.push(attachment);
                    carried.push(Carried::Object(object));
                }
            }
        }
        if carried.len() > MAX_ATTACHMENTS {
            return Err(Error::TooManyPorts {
                count: carried.len(),
                max: MAX_ATTACHMENTS,
            });
        }
    }
    let result = port.send_frame(
        |encoder, buf| {
            encoder.message_with_attachments(buf, &attachments, |buf| {
                fill(buf, limits.max_message_size)
            })
        },
        carried,
    );
    match result {
        Ok(()) => Ok(()),
        Err(SendError::Closed) => Err(Error::Closed { peer: peer() }),
        Err(SendError::QueueFull { queued, limit }) => Err(Error::QueueFull {
            peer: peer(),
            queued,
            limit,
        }),
        Err(SendError::TooManyFds { queued, limit }) => Err(Error::PortQueueFull {
            peer: peer(),
            queued,
            limit,
        }),
        Err(SendError::Frame(utility_process_wire::Error::FrameTooLarge { len, .. })) => {
            Err(Error::MessageTooLarge {
                size: len,
                max: limits.max_message_size as u64,
            })
        }
        Err(SendError::Frame(e)) => Err(Error::Encode(e)),
        Err(SendError::Unsupported) => Err(Error::Io {
            context: "attaching ports or shared buffers to a message",
            source: std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "on Windows, ports and shared buffers travel only over a child's parent port",
            ),
        }),
    }
}
