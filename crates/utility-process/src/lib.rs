//! Electron's `utilityProcess`, for Rust: fork isolated child processes and talk to them
//! through message ports.
//!
//! A parent starts a child with [`fork`], posts it messages (any `serde::Serialize` value,
//! or raw bytes), and reads its [`Event`]s: [`Event::Spawn`], the child's messages,
//! [`Event::Error`] when it crashes, panics or misbehaves, and [`Event::Exit`]. The child
//! calls [`parent_port`] and reads the parent's messages with [`ParentPort::recv`].
//!
//! ```
//! use utility_process::{fork, Event, ForkOptions, Stdio};
//! use tokio::io::AsyncReadExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Any program can be a utility process; a Rust one talks back through `parent_port()`.
//! let mut child = fork("echo", ["hello from the child"], ForkOptions::default().stdout(Stdio::Pipe))?;
//! let mut stdout = child.take_stdout().unwrap();
//! while let Some(event) = child.next_event().await {
//!     match event {
//!         Event::Spawn => println!("running as pid {:?}", child.pid()),
//!         Event::Message(message) => println!("message: {:?}", message.bytes()),
//!         Event::Error(error) => eprintln!("{error}"),
//!         Event::Exit(status) => assert!(status.success()),
//!     }
//! }
//! let mut out = String::new();
//! stdout.read_to_string(&mut out).await?;
//! assert_eq!(out, "hello from the child\n");
//! # Ok(())
//! # }
//! ```
//!
//! # Modules, inside out
//!
//! - `sys` — every system call and every `unsafe` block: sockets, spawning, watching and
//!   reaping children (pidfds on Linux, kqueue on macOS), shared memory, the guardian
//!   process; one module per OS behind one written contract (`sys/mod.rs`).
//! - `transport` — one socket per port: frames in and out on the caller's thread.
//! - `driver` — the library's own thread: forking, watching children, flushing full sockets.
//! - [`fork`], [`UtilityProcess`], [`Event`] — the parent side; [`parent_port`],
//!   [`ParentPort`] — the child side; [`Message`] — what both receive.
//!
//! The wire format is the `utility-process-wire` crate, described in `docs/PROTOCOL.md`.
#![deny(unsafe_code)]
#![warn(missing_docs)]

#[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
compile_error!(
    "utility-process has no backend for this target: it runs on Linux, macOS and Windows \
     (see the README's promise table for what each OS keeps)"
);

mod buffer_pool;
mod child;
mod driver;
mod entry;
mod error;
mod event_order;
mod exit_status;
mod limits;
mod message;
mod options;
mod port;
mod process;
pub mod sandbox;
mod script;
mod shm;
mod stdio;
mod sys;
mod transport;
#[cfg(unix)]
pub mod unix;
#[cfg(windows)]
pub mod windows;

pub use buffer_pool::{BufferPool, DEFAULT_POOL_LIMIT};
pub use child::{parent_port, ParentPort};
pub use entry::{fork_entry, init, Entry};
pub use error::{Error, Location, PanicInfo, SpawnStep, Violation};
pub use exit_status::ExitStatus;
pub use limits::{Backend, Limit, Limits};
pub use message::Message;
pub use options::{ForkOptions, Stdio, DEFAULT_KILL_GRACE, DEFAULT_MAX_MESSAGE_SIZE};
pub use port::{MessageChannel, MessagePort, Transferable};
pub use process::{fork, Event, UtilityProcess};
pub use sandbox::Sandbox;
pub use shm::{SharedBuffer, MAX_RECEIVED_BUFFER};
pub use stdio::{ChildStderr, ChildStdout};
