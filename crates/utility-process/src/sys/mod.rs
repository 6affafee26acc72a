//! Everything that talks to the operating system, and the only place with `unsafe`.
//!
//! The layers above see safe objects only: the transport and the ports a `Channel` and the
//! `Object`s that travel with messages; the process layer a `Launch` it hands to
//! `child::launch` and the `child::Child` it gets back. The backend is chosen here, once:
//! `unix` (Linux and macOS; inside it, one module per OS for what differs) or `windows`.
//! Any other target stops at `lib.rs`'s `compile_error!`.
//!
//! # The contract
//!
//! Every backend provides these names, and the neutral files use nothing else of the OS; the
//! compiler checks each backend when its target is built (`.ci/cross`).
//!
//! - **the channel** (`channel`) — `Channel` (cheap to clone): one end of a port's duplex
//!   byte stream between two processes. `pair`, `pair_owned`, `from_owned` (`InvalidData` for
//!   an object that is no channel), `as_object`; `carries_attachments` (whether objects can
//!   travel on it at all: always on Unix, only on a child's parent port on Windows);
//!   `send(bytes, attached)` never blocks and attaches the objects to the first byte it
//!   writes; `wait_sent` blocks until what `send` accepted can no longer be lost by the process
//!   exiting (nothing to wait for on Unix; the last overlapped write on Windows);
//!   `recv(buf, limit, attached)` never
//!   blocks, returns the objects that came with the first byte it returns, `Ok(0)` at
//!   end-of-stream, and `InvalidData` carrying a `Refused` reason when the peer broke the rules
//!   for objects; `finish_chunk` (a unit of the OS's own that a receive left half read: a
//!   Windows chunk; nothing on Unix); `shutdown` (both ways: our receives end too); `wait`
//!   (blocking, with a timeout); `register` with the current tokio runtime
//!   (`Registration::{readable, writable, is_for}`, `Ready::retry`).
//! - **objects** — `Object` (what travels attached to a message: an `OwnedFd` on Unix, an
//!   `OwnedHandle` on Windows), `BorrowedObject`, `borrow`; `PORT_ENV` and `take_parent_port`
//!   (how a child finds its parent port, once); `Interest`; `at_exit`; `advise_huge_pages`.
//! - **children** (`child`) — `launch(Launch) -> Result<Launched, Error>` (the child started
//!   with its port, output, limits and sandbox, or the error that names the failing step);
//!   `Child` (`pid`, `span`, `kill_grace`, `confirms_sandbox`; `exit_receiver`,
//!   `reports_receiver`, `has_exited`, `drain_reports`, `wait` for the blocking event loop,
//!   `kill` with its grace period, `kill_now`, `ending`: what its end means); `resolve_program`
//!   and `is_executable_file` (how a program is found). Unix adds `Child::send_signal`.
//! - **processes** (`process`) — `RawExit` (what the OS reports of an end), `set_process_name`;
//!   Windows adds `classify` (an exception status from a chosen code).
//! - **output** (`stdio`) — `PipeReader`: the parent's end of a child's output pipe, read by
//!   tokio.
//! - **the guardian** (`guardian`) — `Guardian`: on Unix a tiny forked process that outlives
//!   the parent by a few microseconds, to take every child's process group down with it; on
//!   Windows a type with no value (each child's job object does that work).
//! - **shared memory** (`shm`, `mapping`) — `create` (unnamed, fixed size), `freeze` (the
//!   object back, now read-only to whoever receives it), `check` (what a receiver verifies),
//!   `identity` and `recognise` (how a `BufferPool` knows a buffer that comes back: by the
//!   object's identity where the kernel gives one, by what its memory shows on macOS),
//!   `Mapping`.
//! - **confinement** (`confine`) — `backend(limit)` (what enforces a limit here),
//!   `keep_constructor`; on Unix also the report pipe (`REPORT_*`, `read_reports`,
//!   `report_refusal`, `exit_now`), `install_reporters`, `rlimits`, and the kernel layers the
//!   sandbox builds on (Linux: Landlock and seccomp; macOS: Seatbelt's launcher and
//!   `sandbox_check`); on Windows `request`, `prepare`, `observe`, `judge` (the AppContainer,
//!   the job's limits, the check before the child runs) and `own_status`.
//!
//! Inside `unix`, the sockets (`socket`), descriptors, spawning (`spawn`, `process`), the
//! reactor and the output relay are shared by Linux and macOS; see `unix/mod.rs` for the names
//! each OS module gives them.
//!
//! Every `unsafe` block says why it is sound; `clippy::undocumented_unsafe_blocks` is denied.
//! Every macOS- and Windows-specific call cites the man page, Apple document or Microsoft
//! Learn page it relies on.
#![allow(unsafe_code)]

#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub(crate) use unix::*;

#[cfg(windows)]
mod windows;
#[cfg(windows)]
pub(crate) use windows::*;
