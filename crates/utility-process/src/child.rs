//! The child side: [`parent_port`] and [`ParentPort`].
//!
//! A forked child finds its end of the parent port as descriptor 3 (see `docs/PROTOCOL.md`).
//! The first call to [`parent_port`] takes it, answers the parent's `HELLO`, names the process
//! after its service name, and installs two safety nets:
//!
//! - a **panic hook** that sends the panic's message and location to the parent before the
//!   panic goes on (the previous hook still runs, so the message is printed as usual), so the
//!   parent can report *why* the child died;
//! - an **exit handler** that writes out every message still queued when the process exits
//!   through `exit` (returning from `main` included), so a child that posts its result and
//!   returns does not lose it.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde::Serialize;
use utility_process_wire::{
    Decoded, FailureReport, Frame, FrameDecoder, Hello, PanicReport, ENVELOPE_ROOM,
};

use crate::port::{send_with, PortCore};
use crate::process::{ENV_PARENT_PID, ENV_SERVICE_NAME};
use crate::sys::channel::Channel;
use crate::transport::{Endpoint, Limits};
use crate::{sys, Error, Message, MessagePort, Transferable, Violation};

/// How long `parent_port` waits for the parent's `HELLO`, which is written before the child
/// starts and so is normally there at once.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

static PARENT: OnceLock<ParentPort> = OnceLock::new();
static CONNECTING: Mutex<()> = Mutex::new(());

/// The child's end of the port to its parent.
///
/// Cloning is cheap, and every clone is the same port: post from any thread or task. Messages
/// from the parent queue until the port is started; [`recv`](Self::recv) starts it.
#[derive(Debug, Clone)]
pub struct ParentPort {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    core: PortCore,
    service_name: String,
}

/// The port to the parent, in a process started by [`fork`](crate::fork).
///
/// The first call connects (a few system calls, no waiting in practice); later calls return
/// the same port. The first call also removes the `UTILITY_PROCESS_*` variables from the
/// environment, so that programs this child starts do not take themselves for utility
/// processes; call it before starting threads that read the environment.
///
/// # Errors
///
/// [`Error::NotAUtilityProcess`] when the program was not started by `fork` (the variables
/// or descriptor 3 are missing, or descriptor 3 is not a port), or when the parent's `HELLO`
/// is missing or speaks another protocol version. A parent that is already gone is not an
/// error: the port's `recv` then returns `None`.
///
/// # Examples
///
/// Outside a utility process, a clear error rather than a panic:
///
/// ```
/// let err = utility_process::parent_port().unwrap_err();
/// assert!(err.to_string().contains("not started by utility_process::fork"));
/// ```
pub fn parent_port() -> Result<ParentPort, Error> {
    crate::sys::confine::keep_constructor();
    if let Some(port) = PARENT.get() {
        return Ok(port.clone());
    }
    let _connecting = CONNECTING.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(port) = PARENT.get() {
        return Ok(port.clone());
    }
    let port = connect()?;
    Ok(PARENT.get_or_init(|| port).clone())
}

fn not_a_child(reason: impl Into<String>) -> Error {
    Error::NotAUtilityProcess {
        reason: reason.into(),
    }
}

fn connect() -> Result<ParentPort, Error> {
    let channel = sys::take_parent_port().map_err(not_a_child)?;
    let service_name = std::env::var(ENV_SERVICE_NAME).unwrap_or_default();
    for key in [sys::PORT_ENV, ENV_SERVICE_NAME, ENV_PARENT_PID] {
        std::env::remove_var(key);
    }

    let hello = read_hello(&channel)?;
    let max_message_size = hello.max_frame_len.saturating_sub(ENVELOPE_ROOM) as usize;
    let limits = Limits {
        max_frame_len: hello.max_frame_len,
        max_message_size,
        max_queued_bytes: max_message_size.max(crate::options::DEFAULT_MAX_MESSAGE_SIZE),
    };
    let endpoint = Endpoint::new(channel, limits, 0);
    // If the parent has already closed its end (it detached or dropped the handle before we
    // connected), the HELLO cannot be sent: the port is still ours, and reports the parent
    // as gone — `recv` returns `None`, posts fail with `Closed` — rather than failing here.
    let _ = endpoint.send_frame(
        |encoder, buf| {
            let flags = if crate::sandbox::status().is_some() {
                Hello::SANDBOXED
            } else {
                0
            };
            encoder.hello(buf, &Hello::new(limits.max_frame_len).with_flags(flags));
            Ok(())
        },
        Vec::new(),
    );

    if !service_name.is_empty() {
        // Cosmetic: a failure only means `top` shows the file name.
        let _ = sys::process::set_process_name(&service_name);
    }
    install_panic_hook(Arc::clone(&endpoint));
    sys::at_exit(flush_at_exit);

    Ok(ParentPort {
        shared: Arc::new(Shared {
            core: PortCore::new(endpoint, "the parent"),
            service_name,
        }),
    })
}

/// Reads the parent's `HELLO`, byte by byte through the frame decoder, leaving any message
/// behind it in the channel.
fn read_hello(channel: &Channel) -> Result<Hello, Error> {
    let decoder = FrameDecoder::new(64);
    let mut buf = Vec::with_capacity(32);
    loop {
        match decoder.decode(&buf) {
            Ok(Decoded::Frame {
                frame: Frame::Hello(hello),
                ..
            }) => return Ok(hello),
            Ok(Decoded::Frame { .. }) => {
                return Err(not_a_child("the parent's first frame is not a HELLO"))
            }
            Err(e) => return Err(not_a_child(format!("the parent's HELLO is invalid: {e}"))),
            Ok(Decoded::Incomplete { needed }) => {
                match channel.wait(sys::Interest::Readable, Some(HELLO_TIMEOUT)) {
                    Ok(true) => {}
                    _ => return Err(not_a_child("no HELLO from the parent on its port")),
                }
                let want = needed - buf.len();
                buf.reserve(want);
                let mut objects = Vec::new();
                match channel.recv(&mut buf, want, &mut objects) {
                    Ok(0) => {
                        return Err(not_a_child("the parent closed the port before its HELLO"))
                    }
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(Error::io("reading the parent's HELLO")(e)),
                }
            }
        }
    }
}

fn install_panic_hook(endpoint: Arc<Endpoint>) {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "Box<dyn Any>".to_owned());
        let (file, line, column) = info
            .location()
            .map(|l| (l.file().to_owned(), l.line(), l.column()))
            .unwrap_or_default();
        let report = PanicReport {
            message,
            file,
            line,
            column,
            thread: std::thread::current().name().map(str::to_owned),
        };
        endpoint.send_last_words(|encoder, buf| {
            // A report too large for the frame limit is dropped; the exit is still reported.
            let _ = encoder.panic(buf, &report);
        });
        previous(info);
    }));
}

impl ParentPort {
    /// How the parent broke the protocol, when it did: the library then closed the port, and
    /// [`recv`](Self::recv) returned `None`. `None` while the port is open, and when the
    /// parent closed it or is gone.
    pub fn violation(&self) -> Option<&Violation> {
        self.shared.core.violation()
    }

    /// Tells the parent that this child's main work failed with `message` (it ends next):
    /// the parent reports [`Error::EntryFailed`] if the child then exits unsuccessfully.
    pub(crate) fn report_failure(&self, message: String) {
        let report = FailureReport { message };
        self.shared.core.endpoint.send_last_words(|encoder, buf| {
            // A report too large for the frame limit is dropped; the exit is still reported.
            let _ = encoder.failure(buf, &report);
        });
    }
}

extern "C" fn flush_at_exit() {
    if let Some(port) = PARENT.get() {
        port.shared.core.endpoint.flush_blocking();
    }
}

impl ParentPort {
    /// Posts `value` to the parent, encoded as MessagePack. Never blocks: what the socket
    /// cannot take now is queued and written as the parent reads.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] when the parent is gone; [`Error::MessageTooLarge`],
    /// [`Error::QueueFull`] and [`Error::Encode`] as for
    /// [`UtilityProcess::post_message`](crate::UtilityProcess::post_message).
    pub fn post_message<T: Serialize + ?Sized>(&self, value: &T) -> Result<(), Error> {
        self.shared.core.post_value(value, Vec::new())
    }

    /// Posts `value` to the parent with `ports`, which move to the parent's process (unlike
    /// Electron's `parentPort`, ours can transfer ports).
    ///
    /// # Errors
    ///
    /// As [`MessagePort::post_message_with_ports`](crate::MessagePort::post_message_with_ports).
    pub fn post_message_with_ports<T: Serialize + ?Sized>(
        &self,
        value: &T,
        ports: Vec<MessagePort>,
    ) -> Result<(), Error> {
        self.shared
            .core
            .post_value(value, ports.into_iter().map(Transferable::Port).collect())
    }

    /// Posts `value` to the parent with ports and shared buffers, which move to the parent's
    /// process.
    ///
    /// # Errors
    ///
    /// As [`MessagePort::post_message_with_ports`](crate::MessagePort::post_message_with_ports).
    pub fn post_message_with_transfer<T: Serialize + ?Sized>(
        &self,
        value: &T,
        transfer: Vec<Transferable>,
    ) -> Result<(), Error> {
        self.shared.core.post_value(value, transfer)
    }

    /// Posts raw bytes to the parent, without encoding them.
    ///
    /// # Errors
    ///
    /// As [`post_message`](Self::post_message).
    pub fn post_bytes(&self, bytes: &[u8]) -> Result<(), Error> {
        self.shared.core.post_raw(bytes, Vec::new())
    }

    /// Posts `value` to the parent, waiting for room while the parent is not reading and the
    /// send queue is at its limit (where [`post_message`](Self::post_message) fails with
    /// [`Error::QueueFull`]).
    ///
    /// # Errors
    ///
    /// As [`post_message`](Self::post_message), except `QueueFull`.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a message is queued whole when the future completes, or not at all.
    pub async fn send<T: Serialize + ?Sized>(&self, value: &T) -> Result<(), Error> {
        let core = &self.shared.core;
        send_with(&core.endpoint, || core.post_value(value, Vec::new())).await
    }

    /// Posts raw bytes to the parent, waiting for room as [`send`](Self::send) does.
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send).
    pub async fn send_bytes(&self, bytes: &[u8]) -> Result<(), Error> {
        let core = &self.shared.core;
        send_with(&core.endpoint, || core.post_raw(bytes, Vec::new())).await
    }

    /// Low-latency mode (off by default): a receive that would park first polls the socket
    /// for up to `spin`. See
    /// [`UtilityProcess::set_low_latency`](crate::UtilityProcess::set_low_latency).
    pub fn set_low_latency(&self, spin: Option<Duration>) {
        self.shared.core.endpoint.set_spin(spin);
    }

    /// Starts (or resumes) delivery of the parent's messages.
    pub fn start(&self) {
        self.shared.core.start();
    }

    /// Pauses delivery: [`recv`](Self::recv) waits, and the parent's messages stay queued in
    /// the socket (so a parent that keeps posting eventually sees `QueueFull`), until
    /// [`start`](Self::start) is called — from another task or thread.
    pub fn pause(&self) {
        self.shared.core.pause();
    }

    /// The next message from the parent; `None` once the parent is gone (it exited, died, or
    /// closed the port). Starts the port if it was never started; waits while it is paused.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a message is never lost by dropping the future.
    pub async fn recv(&self) -> Option<Message> {
        self.shared.core.recv().await
    }

    /// The next message from the parent, blocking this thread; for programs without an async
    /// runtime. `None` once the parent is gone. Starts the port; ignores [`pause`](Self::pause).
    pub fn recv_blocking(&self) -> Option<Message> {
        self.shared.core.recv_blocking()
    }

    /// Writes every queued message to the socket, blocking until the parent has taken them
    /// (or is gone). Messages are also flushed when the process exits through `exit`; call
    /// this before ending the process another way.
    pub fn flush(&self) {
        self.shared.core.endpoint.flush_blocking();
    }

    /// The service name the parent gave this process.
    pub fn service_name(&self) -> &str {
        &self.shared.service_name
    }
}
