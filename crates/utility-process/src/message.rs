//! [`Message`]: what a port receives.

use std::fmt;

use serde::Deserialize;

use crate::transport::Payload;
use crate::{Error, MessagePort, SharedBuffer};

/// A message received from a port: its bytes, readable as any `Deserialize` type, and the
/// ports that travelled with it.
///
/// Values posted with `post_message` are MessagePack, and [`data`](Message::data) decodes
/// them; bytes posted raw come back unchanged from [`bytes`](Message::bytes). Ports are
/// taken with [`take_ports`](Message::take_ports); ports nobody takes are closed when the
/// message is dropped, and their other ends see the close.
///
/// # Examples
///
/// ```
/// # use utility_process::Message;
/// # let message = Message::from_value(&("resize", 640u32)).unwrap();
/// let (command, width): (String, u32) = message.data()?;
/// assert_eq!((command.as_str(), width), ("resize", 640));
/// # Ok::<(), utility_process::Error>(())
/// ```
pub struct Message {
    payload: Payload,
    ports: Vec<MessagePort>,
    buffers: Vec<SharedBuffer>,
}

impl Message {
    pub(crate) fn new(
        payload: Payload,
        ports: Vec<MessagePort>,
        buffers: Vec<SharedBuffer>,
    ) -> Message {
        Message {
            payload,
            ports,
            buffers,
        }
    }

    /// A message holding `value`, encoded as a port would send it. Useful in tests.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`] when `value` cannot be encoded.
    pub fn from_value<T: serde::Serialize + ?Sized>(value: &T) -> Result<Message, Error> {
        let mut buf = Vec::new();
        utility_process_wire::encode_value(&mut buf, value).map_err(Error::Encode)?;
        Ok(Message::new(Payload::owned(buf, 0), Vec::new(), Vec::new()))
    }

    /// Decodes the message as a `T`.
    ///
    /// `T` may borrow from the message (`&str`, `&[u8]` with `serde_bytes`).
    ///
    /// # Errors
    ///
    /// [`Error::Decode`] when the bytes are not exactly one MessagePack value of `T`'s shape
    /// (bytes left after the value are an error too), or nest deeper than 256 levels. That is
    /// the receiver's error, not the sender's: the port stays usable.
    pub fn data<'a, T: Deserialize<'a>>(&'a self) -> Result<T, Error> {
        utility_process_wire::decode_value(self.bytes()).map_err(Error::Decode)
    }

    /// The message's bytes, as the sender's codec wrote them.
    #[inline]
    pub fn bytes(&self) -> &[u8] {
        self.payload.bytes()
    }

    /// The ports that travelled with the message, in the order they were posted, handed to
    /// the caller (a second call returns none).
    pub fn take_ports(&mut self) -> Vec<MessagePort> {
        std::mem::take(&mut self.ports)
    }

    /// The shared buffers that travelled with the message, in the order they were posted,
    /// handed to the caller (a second call returns none).
    pub fn take_buffers(&mut self) -> Vec<SharedBuffer> {
        std::mem::take(&mut self.buffers)
    }

    /// How many ports the message still holds.
    pub fn port_count(&self) -> usize {
        self.ports.len()
    }

    /// The message's bytes, owned. Ports not taken are closed.
    pub fn into_bytes(self) -> Vec<u8> {
        self.payload.into_vec()
    }

    /// The number of bytes in the message.
    #[inline]
    pub fn len(&self) -> usize {
        self.bytes().len()
    }

    /// Whether the message has no bytes.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("len", &self.len())
            .field("ports", &self.ports.len())
            .field("buffers", &self.buffers.len())
            .finish()
    }
}
