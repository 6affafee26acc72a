//! The control channel's messages (private to this crate: both ends are ours).
//!
//! The supervisor creates a [`MessageChannel`](utility_process::MessageChannel) per start and
//! posts one end to the child as the first message on the parent port, inside a [`Hello`].
//! Everything below then travels on that channel, never on the parent port, so the user's
//! messages are never seen, delayed or consumed by supervision.

use serde::{Deserialize, Serialize};

/// Tells the child's side of this crate that the message is ours (and which version).
pub(crate) const MAGIC: &str = "utility-process-supervisor";
/// The control protocol's version; a child of another version refuses to attach.
pub(crate) const VERSION: u32 = 1;

/// The first message on the parent port; it carries the control port.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Hello {
    pub magic: String,
    pub version: u32,
    /// How many times this service was started before this start (0 the first time).
    pub restarts: u32,
}

/// Parent to child, on the control port.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Request {
    /// A heartbeat: answer with [`Reply::Pong`] carrying the same number.
    Ping(u64),
    /// Run the application's health probe and answer with [`Reply::Probe`].
    Probe(u64),
}

/// Child to parent, on the control port.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Reply {
    /// The child's side took the control port. `answers`: a task answers pings; otherwise
    /// the child sends [`Reply::Alive`] from its own loop and pings are not sent.
    Attached { answers: bool },
    /// A sign of life from the child's own loop ([`Supervised::alive`](crate::child::Supervised::alive)).
    Alive,
    /// The child says it is ready.
    Ready,
    /// Answer to [`Request::Ping`].
    Pong(u64),
    /// Answer to [`Request::Probe`]: `Err` carries the probe's own words.
    Probe(u64, Result<(), String>),
}
