//! The Node.js addon behind the `utility-process` npm package (`js/` in this repository).
//!
//! A JS worker forked by a Rust parent (`node --require js/lib/bootstrap.cjs worker.js`)
//! talks to it through this addon, which is this workspace's own `utility-process` crate
//! running inside the node process: the child side of the parent port ([`parent_port`]),
//! [`MessageChannel`]s and [`MessagePort`]s. Framing, descriptor passing, limits and the
//! checks on hostile input are therefore exactly the Rust child's.
//!
//! The interface to JS is deliberately small and byte-oriented; `js/lib/` builds Electron's
//! `process.parentPort` and `MessagePortMain` on top of it and does the MessagePack value
//! mapping (`js/lib/msgpack.js`):
//!
//! | JS | what it does |
//! | --- | --- |
//! | `connect(deliver, deliverBatch)` | takes the parent port (descriptor 3) as port id 0; `deliver` receives every message and close of other ports, `deliverBatch` the parent port's |
//! | `drain()` | the parent port's messages already read, as a batch |
//! | `post(id, bytes, transfer?)` | posts bytes (MessagePack or raw) on a port, moving the ports listed in `transfer` |
//! | `start(id)`, `pause(id)`, `close(id)` | port delivery and life |
//! | `channel()` | a new `MessageChannel`: two port ids |
//! | `keepAlive(on)` | whether pending deliveries keep node's event loop alive |
//! | `reportPanic(message, file, line, column)` | a `PANIC` frame, for an uncaught exception |
//! | `flush()` | writes every queued message to the parent |
//!
//! Messages are read on one background thread (a current-thread tokio runtime) and handed to
//! the JS thread through one thread-safe function, so their order across ports is kept.
//!
//! [`parent_port`]: utility_process::parent_port
//! [`MessageChannel`]: utility_process::MessageChannel
//! [`MessagePort`]: utility_process::MessagePort
#![deny(unsafe_code)]

mod fast;
mod panic;
mod ports;
mod sys;

use napi::{Env, JsBuffer, JsFunction, JsUnknown, Result};
use napi_derive::napi;

/// Takes the parent port and starts the delivery thread. `deliver(id, payload, ports,
/// buffers)` is called on the JS thread for each message (`payload` a `Buffer`, `ports` an
/// array of new port ids or `undefined`, `buffers` an array of `Buffer`s or `undefined`) and
/// once with `payload === null` when a port's other end is gone. The parent port's messages
/// come in batches instead, to `deliverBatch([id, payload, ports, buffers, …, more])`, read on
/// node's own thread (see `fast.rs`). Returns the parent port's id (0).
#[napi]
pub fn connect(env: Env, deliver: JsFunction, deliver_batch: JsFunction) -> Result<u32> {
    ports::connect(&env, &deliver, &deliver_batch)
}

/// The parent port's messages already there, as a batch for `deliverBatch`; `undefined` when
/// the parent port is read on the delivery thread.
#[napi]
pub fn drain(env: Env) -> Result<Option<JsUnknown>> {
    if !fast::active() {
        return Ok(None);
    }
    let state =
        ports::state_if_connected().ok_or_else(|| napi::Error::from_reason("not connected"))?;
    fast::drain(&env, state).map(Some)
}

/// Posts `bytes` on port `id` with the ports listed in `transfer` (which leave this process).
/// Returns `false` when the port's other end is gone (Electron drops such messages silently);
/// throws on every other failure.
#[napi]
pub fn post(id: u32, bytes: JsBuffer, transfer: Option<Vec<u32>>) -> Result<bool> {
    let bytes = bytes.into_value()?;
    ports::post(id, &bytes, transfer.unwrap_or_default())
}

/// Starts (or resumes) delivery of port `id`'s messages.
#[napi]
pub fn start(id: u32) -> Result<()> {
    ports::start(id)
}

/// Pauses delivery of port `id`'s messages: they wait in its socket.
#[napi]
pub fn pause(id: u32) -> Result<()> {
    ports::pause(id)
}

/// Closes port `id` at once; its other end sees the close. Unknown ids are ignored.
#[napi]
pub fn close(id: u32) {
    ports::close(id);
}

/// A new message channel: the ids of its two ports.
#[napi]
pub fn channel() -> Result<Vec<u32>> {
    ports::channel()
}

/// Whether the ports being delivered keep node's event loop alive.
#[napi]
pub fn keep_alive(env: Env, on: bool) -> Result<()> {
    ports::keep_alive(&env, on)
}

/// Sends the parent a `PANIC` frame: an uncaught exception's message and where it was thrown.
#[napi]
pub fn report_panic(message: String, file: String, line: u32, column: u32) {
    panic::report(message, file, line, column);
}

/// Writes every message queued for the parent, blocking until the parent has taken them.
#[napi]
pub fn flush() {
    ports::flush();
}
