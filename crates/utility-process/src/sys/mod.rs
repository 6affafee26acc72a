//! Everything that talks to the operating system, and the only place with `unsafe`.
//!
//! The layers above (transport, process, child) see safe functions over `OwnedFd` and
//! `BorrowedFd`. Each platform module provides the same names; the compiler checks them when
//! the module is swapped. Linux is the only platform today. What a platform module provides:
//!
//! - **descriptors** — `pipe`, `open_dev_null`, `set_cloexec`, `set_nonblocking`,
//!   `wait_fd` (a blocking `poll` on one descriptor), `take_inherited_port`, `at_exit`.
//! - **sockets** (`socket`) — `socketpair` (a stream pair, close-on-exec, for one port),
//!   `send` (never raising SIGPIPE, never blocking), `recv_into` (into a `Vec`'s spare
//!   capacity), `shutdown`, `is_stream_socket`.
//! - **processes** (`process`) — `spawn` (fork and exec with the child's descriptors laid out,
//!   every other descriptor closed, signals reset, its own process group and a parent-death
//!   signal), `Pidfd` (signal, poll, peek and reap one child without ever touching a recycled
//!   pid), `kill_process_group`, and the child-side calls `arm_parent_death_signal` and
//!   `set_thread_name`.
//! - **the guardian** (`guardian`) — a tiny process that outlives the parent by a few
//!   microseconds, to take every child's process group down with it.
//!
//! Every `unsafe` block says why it is sound; `clippy::undocumented_unsafe_blocks` is denied.
#![allow(unsafe_code)]

mod unix;

pub(crate) use unix::*;
