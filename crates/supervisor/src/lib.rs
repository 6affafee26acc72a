//! Supervision for utility processes, after Erlang/OTP supervisors and systemd's
//! `Restart=` and `WatchdogSec=`: keep named children running, restart them under a policy
//! with backoff, give up (and say why) instead of thrashing, notice hung children by
//! heartbeat, wait for readiness, and shut down in order.
//!
//! Built on the public API of [`utility_process`] only: a supervised child is an ordinary
//! utility process, and its messages keep flowing on its parent port.
//!
//! - Parent side: a [`Supervisor`] runs [`ChildSpec`]s — each with a [`Restart`] policy, a
//!   [`Backoff`], a start timeout, a shutdown timeout, and optionally a [`Heartbeat`] and a
//!   [`Probe`] — under a supervisor-wide restart [`Intensity`]. Everything it does is a
//!   [`SupervisorEvent`] on [`Supervisor::events`], and each event of a life says which life
//!   (its pid and how many restarts came before it); [`Supervisor::wait_ready`] and
//!   [`Supervisor::wait_ready_again`] wait for a service to be ready (again). Children's
//!   messages come from [`Supervisor::recv_message`] and their piped stdout and stderr from
//!   [`Supervisor::output`]; every method takes `&self`, so one task can read while others
//!   post.
//! - Child side: [`child::attach`] first (or [`child::attach_blocking`] without a runtime),
//!   then [`child::Supervised::ready`].
//!
//! # How it works
//!
//! For every start the supervisor creates a [`MessageChannel`](utility_process::MessageChannel)
//! and posts one end to the child as the first message on its parent port. The child's
//! [`child::attach`] takes that message and starts a task on the child's own runtime that
//! answers heartbeats and probes on the control channel; the user's messages never touch it.
//! What an answer proves is written at [`Heartbeat`].
//!
//! # Example: a worker that hangs
//!
//! ```
//! use std::time::Duration;
//! use utility_process::{init, Entry, ParentPort};
//! use utility_process_supervisor::{
//!     child, ChildSpec, ExitReason, Heartbeat, Supervisor, SupervisorEvent, SupervisorOptions,
//! };
//!
//! /// Doubles numbers; on "hang" it stops answering anything (a busy loop, no `.await`).
//! async fn doubler(port: ParentPort) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//!     let supervised = child::attach(&port).await?;
//!     supervised.ready()?;
//!     while let Some(message) = port.recv().await {
//!         match message.data::<u64>() {
//!             Ok(n) => port.post_message(&(2 * n))?,
//!             Err(_) => loop { std::hint::spin_loop() },
//!         }
//!     }
//!     Ok(())
//! }
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     init([Entry::new("doubler", doubler)]);
//!     let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
//!     runtime.block_on(async {
//!         let supervisor = Supervisor::new(SupervisorOptions::default());
//!         let mut events = supervisor.events();
//!         let spec = ChildSpec::entry("doubler", "doubler")
//!             .heartbeat(Heartbeat::new(Duration::from_millis(100)).misses(3));
//!         let first = supervisor.start_child(spec).await?;
//!
//!         supervisor.post_message("doubler", "hang").await?;
//!         // Three heartbeats go unanswered; the child is killed and started again.
//!         let second = supervisor.wait_ready_again("doubler", first).await?;
//!         assert_ne!(first, second);
//!         // The events tell the story, each naming the life it belongs to.
//!         loop {
//!             match events.recv().await.expect("the supervisor is alive") {
//!                 SupervisorEvent::Exited { reason: ExitReason::HeartbeatMissed { missed, .. }, restarts: 0, .. } => {
//!                     assert_eq!(missed, 3)
//!                 }
//!                 SupervisorEvent::Ready { pid, restarts: 1, .. } => break assert_eq!(pid, second),
//!                 _ => {}
//!             }
//!         }
//!         supervisor.shutdown().await;
//!         Ok(())
//!     })
//! }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod child;
mod error;
mod event;
mod output;
mod protocol;
mod spec;
mod supervisor;

pub use error::{AttachError, Error};
pub use event::{Events, ExitReason, GiveUpReason, ProbeFailure, StartStage, SupervisorEvent};
pub use output::{Output, OutputEvent, OutputLine, OutputStream, OutputTail, EOF_GRACE, MAX_LINE};
pub use spec::{Backoff, ChildSpec, Heartbeat, Intensity, Probe, Restart, SupervisorOptions};
pub use supervisor::{ChildMessage, Supervisor};
