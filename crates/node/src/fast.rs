//! The parent port read on node's own thread: no hop through the delivery thread.
//!
//! The parent port is descriptor 3 (its number is fixed by the protocol), so a libuv poll
//! handle on node's loop can say when it is readable. Then the port's own `recv` is polled
//! once per message with a waker that does nothing: `recv` takes a frame already there
//! without waiting (and is cancel safe, so a poll that finds nothing loses nothing). Every
//! message there is handed to JS in one batch, through `napi_make_callback`, as node does for
//! its own sockets. This saves a thread wake-up per message (see `js/README.md`, "How it
//! works").
//!
//! The waiting future, when there is nothing to take, registers the socket with a tokio
//! runtime; `IDLE` is one that is never driven, so that registration costs nothing.
//! `UTILITY_PROCESS_NODE_READER=thread` turns this path off: the parent port is then read on
//! the delivery thread like every other port.

use std::cell::RefCell;
use std::future::Future;
use std::os::raw::c_int;
use std::rc::Rc;
use std::task::{Context, Poll as TaskPoll, Waker};

use napi::{Env, JsFunction, JsUnknown, Result};
use utility_process::ParentPort;

use crate::ports::{delivery, delivery_to_js, Delivery, State};
use crate::sys::{Callback, Poll};

/// The parent port's descriptor (`docs/PROTOCOL.md`, section 1).
const PORT_FD: i32 = 3;

/// At most this many messages per batch, so that a parent that never stops posting cannot
/// keep the JS thread from everything else; the rest come in the next batch.
const BATCH: usize = 256;

struct Fast {
    parent: ParentPort,
    poll: Poll,
    callback: Rc<Callback>,
    idle: tokio::runtime::Runtime,
}

thread_local! {
    static FAST: RefCell<Option<Fast>> = const { RefCell::new(None) };
}

/// Whether the parent port is read on node's thread (the default).
pub(crate) fn wanted() -> bool {
    std::env::var_os("UTILITY_PROCESS_NODE_READER").is_none_or(|v| v != "thread")
}

/// Sets up the poll handle and the batch callback; the parent port is not read until
/// [`start`].
pub(crate) fn connect(env: &Env, parent: ParentPort, deliver_batch: &JsFunction) -> Result<()> {
    let idle = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|e| napi::Error::from_reason(e.to_string()))?;
    let fast = Fast {
        parent,
        poll: Poll::new(env, PORT_FD)?,
        callback: Rc::new(Callback::new(env, deliver_batch)?),
        idle,
    };
    FAST.with(|slot| *slot.borrow_mut() = Some(fast));
    Ok(())
}

/// Whether this path is in use.
pub(crate) fn active() -> bool {
    FAST.with(|slot| slot.borrow().is_some())
}

pub(crate) fn start() {
    FAST.with(|slot| {
        if let Some(fast) = slot.borrow_mut().as_mut() {
            fast.parent.start();
            fast.poll.start(on_readable);
        }
    });
}

pub(crate) fn pause() {
    FAST.with(|slot| {
        if let Some(fast) = slot.borrow_mut().as_mut() {
            fast.parent.pause();
            fast.poll.stop();
        }
    });
}

/// Takes every message there (up to [`BATCH`]): the deliveries, and whether more may wait.
fn take(state: &State) -> (Vec<Delivery>, bool) {
    FAST.with(|slot| {
        let mut slot = slot.borrow_mut();
        let Some(fast) = slot.as_mut() else {
            return (Vec::new(), false);
        };
        let _runtime = fast.idle.enter();
        let mut cx = Context::from_waker(Waker::noop());
        let mut out = Vec::new();
        while out.len() < BATCH {
            let received = std::pin::pin!(fast.parent.recv()).poll(&mut cx);
            match received {
                TaskPoll::Ready(Some(message)) => out.push(delivery(state, 0, Some(message))),
                TaskPoll::Ready(None) => {
                    out.push(delivery(state, 0, None));
                    fast.poll.stop();
                    return (out, false);
                }
                TaskPoll::Pending => return (out, false),
            }
        }
        (out, true)
    })
}

/// `[id, payload, ports, buffers, …, more]`: four entries per delivery (`undefined` where a
/// delivery has no ports or buffers), then whether more may wait.
fn batch_to_js(env: &Env, deliveries: Vec<Delivery>, more: bool) -> Result<JsUnknown> {
    let mut array = env.create_array_with_length(deliveries.len() * 4 + 1)?;
    let mut i = 0;
    for delivery in deliveries {
        let mut args = delivery_to_js(env, delivery)?;
        while args.len() < 4 {
            args.push(env.get_undefined()?.into_unknown());
        }
        for arg in args {
            array.set_element(i, arg)?;
            i += 1;
        }
    }
    array.set_element(i, env.get_boolean(more)?)?;
    Ok(array.into_unknown())
}

/// What is there now, as a batch (see [`batch_to_js`]), for JS to call right after `start`
/// and whenever a batch said more may wait: the poll handle only says when the socket has
/// bytes, and messages may already be read into the port.
pub(crate) fn drain(env: &Env, state: &State) -> Result<JsUnknown> {
    let (deliveries, more) = take(state);
    batch_to_js(env, deliveries, more)
}

extern "C" fn on_readable(_handle: *mut std::ffi::c_void, _status: c_int, _events: c_int) {
    let Some(state) = crate::ports::state_if_connected() else {
        return;
    };
    let (deliveries, more) = take(state);
    if deliveries.is_empty() {
        return;
    }
    let Some(callback) = FAST.with(|slot| slot.borrow().as_ref().map(|f| Rc::clone(&f.callback)))
    else {
        return;
    };
    // No borrow is held while JS runs: its listeners may pause or post.
    callback.call(|env| Ok(vec![batch_to_js(env, deliveries, more)?]));
}
