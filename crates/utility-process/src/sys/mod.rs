//! Everything that talks to the operating system, and the only place with `unsafe`.
//!
//! The layers above see safe objects: the transport and the ports see only a `Channel` and
//! the `Object`s that travel with messages (descriptors on Unix); the process layer still
//! sees descriptors (the next cut, see `docs/PROTOCOL.md` and the README's Limitations).
//! The backend is chosen here, once: `unix` (Linux and macOS; inside it, one
//! module per OS for what differs). Any other target stops at `lib.rs`'s `compile_error!`.
//!
//! # The contract
//!
//! Every backend provides these names; the compiler checks them when the other OS module is
//! built (`cargo clippy --target x86_64-apple-darwin`, see `/work/shared/cross/README.md`).
//!
//! - **the channel** (`channel`) — `Channel`: one end of a port's duplex byte stream between
//!   two processes. `pair`, `pair_owned`, `from_owned` (`InvalidData` for an object that is
//!   no channel), `as_object`; `carries_attachments` (whether objects can travel on it at
//!   all: always on Unix, only a child's parent port on Windows); `send(bytes, attached)`
//!   never blocks and attaches the objects to the first byte it writes; `wait_sent` blocks
//!   until what `send` accepted can no longer be lost by the process exiting (a no-op on
//!   Unix; on Windows the last overlapped write completes); `recv(buf, limit, attached)` never blocks, returns the
//!   objects that came with the first byte it returns, `Ok(0)` at end-of-stream, and
//!   `InvalidData` carrying a `Refused` reason when the peer broke the rules for objects;
//!   `shutdown`; `wait` (blocking, with a timeout); `register` with the current tokio runtime
//!   (`Registration::{readable, writable}`, `Ready::retry`).
//! - **objects** — `Object` (what travels attached to a message: an `OwnedFd` on Unix),
//!   `BorrowedObject`, `borrow`; `PORT_ENV` and `take_parent_port` (how a child finds its
//!   parent port, once).
//! - **descriptors** — `pipe` (both ends close-on-exec), `open_dev_null`, `set_cloexec`,
//!   `set_nonblocking`, `wait_fd` and `wait_any` (blocking `poll`), `at_exit`, `signal_name`
//!   (names of the OS's own signals), `RlimitResource`.
//! - **sockets** (`socket`) — `socketpair` (a stream pair, close-on-exec, never raising
//!   SIGPIPE), `send` and `send_with_fds` (never blocking), `recv_into` and `recv_with_fds`
//!   (received descriptors close-on-exec before anyone else can spawn), `shutdown`,
//!   `is_stream_socket`, `MAX_FDS`, `advise_huge_pages`.
//! - **processes** (`process`) — `spawn(SpawnPlan) -> Result<Spawned, (SpawnStep, Error)>`
//!   (the child's descriptors laid out — `/dev/null`, stdout, stderr, the port at 3, the
//!   report pipe at 4 — every other descriptor closed, signals reset, its own process group,
//!   the limits of its `PreExec` applied before its first instruction); `Pidfd` (`send_signal`,
//!   `has_exited`, `try_reap`, `shared_fd`: a descriptor that becomes readable when the child
//!   ends; never signals or reaps a recycled pid); `kill_process_group`; `set_process_name`.
//! - **the guardian** (`guardian`) — a tiny forked process that outlives the parent by a few
//!   microseconds, to take every child's process group down with it.
//! - **shared memory** (`shm`) — `create` (unnamed, close-on-exec, fixed size), `freeze`,
//!   `check` (what a receiver verifies), `identity`, `Mapping`.
//! - **confinement** (`confine`) — the report pipe (`REPORT_*`, `read_reports`,
//!   `report_refusal`, `exit_now`), the constructor that runs stage 2 before `main`
//!   (`keep_constructor`), `install_reporters`, `ADDRESS_SPACE_LIMIT`,
//!   `process_limit_unavailable`, and the kernel layers the sandbox builds on (Linux:
//!   Landlock and seccomp; macOS: none yet, so a sandbox is refused there).
//! - **the reactor** (`reactor`) — `SharedFd` and `register` with tokio.
//!
//! Every `unsafe` block says why it is sound; `clippy::undocumented_unsafe_blocks` is denied.
//! Every macOS-specific call cites the man page or Apple document it relies on.
#![allow(unsafe_code)]

#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub(crate) use unix::*;

#[cfg(windows)]
mod windows;
#[cfg(windows)]
pub(crate) use windows::*;
