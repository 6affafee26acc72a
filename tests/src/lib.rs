//! What the test children and the integration tests share: message types and helpers.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use utility_process::{Event, UtilityProcess};

/// How long a test waits for an event before it fails instead of hanging.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(20);

/// A request the echo child answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ping {
    pub seq: u64,
    pub body: String,
}

/// The next event, or a panic naming the child if none comes within [`EVENT_TIMEOUT`].
pub async fn next_event(child: &mut UtilityProcess) -> Option<Event> {
    match tokio::time::timeout(EVENT_TIMEOUT, child.next_event()).await {
        Ok(event) => event,
        Err(_) => panic!(
            "no event from {} (pid {:?}) within {EVENT_TIMEOUT:?}",
            child.service_name(),
            child.pid()
        ),
    }
}

/// The descriptors open in process `pid`, from `/proc/<pid>/fd`.
pub fn open_fds(pid: u32) -> Vec<i32> {
    let mut fds: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    fds.sort_unstable();
    fds
}

/// Whether a process with this pid exists and is not a zombie.
pub fn is_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the field after the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// What the `porter` child does with the ports the parent sends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PortCommand {
    /// Echo everything that arrives on the attached port back on it, until it closes.
    Echo,
    /// Send the attached ports straight back to the parent.
    Bounce,
    /// Send `count` numbered pings over the attached port, each after the answer to the
    /// previous one, then tell the parent `PortReply::Pinged`.
    Ping { count: u64 },
    /// Receive `count` messages on the attached port and report them to the parent in one
    /// `PortReply::Received`.
    Collect { count: usize },
    /// Keep the attached port without reading it, until the parent closes.
    Hold,
    /// Report this process's open descriptors.
    Fds,
}

/// What the `porter` child tells the parent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PortReply {
    /// Every ping was answered, in order.
    Pinged { count: u64 },
    /// The messages received on a port, as raw bytes, in order.
    Received { messages: Vec<Vec<u8>> },
    /// Open descriptors.
    Fds { fds: Vec<i32> },
}
