//! The ports a JS worker holds, by id, and the thread that reads them.
//!
//! Each port the worker holds has a small integer id (the parent port is 0). A *started* port
//! has a watcher: a task on the delivery thread's runtime that awaits its next message and
//! hands it to JS through the one thread-safe function, so messages keep their order across
//! ports. A port that is not started is not read at all: its messages wait in its socket, and
//! travel with it if it is sent on (the transport's prefix).
//!
//! Posting happens on the JS thread, straight into the port (which never blocks): no hop.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use napi::threadsafe_function::{
    ErrorStrategy, ThreadSafeCallContext, ThreadsafeFunction, ThreadsafeFunctionCallMode,
};
use napi::{Env, Error as JsError, JsFunction, JsUnknown, Result, Status};
use tokio::sync::oneshot;
use utility_process::{
    parent_port, Error, Message, MessageChannel, MessagePort, ParentPort, SharedBuffer,
    Transferable,
};

/// The parent port's id.
const PARENT: u32 = 0;

/// What the delivery thread hands to JS.
pub(crate) enum Delivery {
    Message {
        port: u32,
        payload: Vec<u8>,
        ports: Vec<u32>,
        buffers: Vec<SharedBuffer>,
    },
    Closed {
        port: u32,
    },
}

type Deliver = ThreadsafeFunction<Delivery, ErrorStrategy::Fatal>;

pub(crate) struct State {
    runtime: tokio::runtime::Handle,
    deliver: Mutex<Deliver>,
    ports: Mutex<HashMap<u32, Entry>>,
    next_id: AtomicU32,
}

static STATE: OnceLock<State> = OnceLock::new();

/// A port the worker holds.
#[derive(Clone)]
enum Handle {
    Parent(ParentPort),
    Port(Arc<MessagePort>),
}

struct Entry {
    handle: Handle,
    watcher: Option<Watcher>,
}

/// The task reading a started port, and how to stop it.
struct Watcher {
    stop: oneshot::Sender<()>,
    join: tokio::task::JoinHandle<()>,
}

impl Handle {
    async fn recv(&self) -> Option<Message> {
        match self {
            Handle::Parent(port) => port.recv().await,
            Handle::Port(port) => port.recv().await,
        }
    }

    fn post_bytes(&self, bytes: &[u8]) -> std::result::Result<(), Error> {
        match self {
            Handle::Parent(port) => port.post_bytes(bytes),
            Handle::Port(port) => port.post_bytes(bytes),
        }
    }

    fn post_with_transfer(
        &self,
        value: &Transcoded<'_>,
        transfer: Vec<Transferable>,
    ) -> std::result::Result<(), Error> {
        match self {
            Handle::Parent(port) => port.post_message_with_transfer(value, transfer),
            Handle::Port(port) => port.post_message_with_transfer(value, transfer),
        }
    }

    fn start(&self) {
        match self {
            Handle::Parent(port) => port.start(),
            Handle::Port(port) => port.start(),
        }
    }

    fn pause(&self) {
        match self {
            Handle::Parent(port) => port.pause(),
            Handle::Port(port) => port.pause(),
        }
    }
}

/// A MessagePack payload written again through serde, so that it can travel with ports
/// through `post_message_with_transfer` (the core has no raw post with a transfer list).
struct Transcoded<'a>(&'a [u8]);

impl serde::Serialize for Transcoded<'_> {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        let mut de = rmp_serde::Deserializer::from_read_ref(self.0);
        serde_transcode::transcode(&mut de, serializer)
    }
}

pub(crate) fn state_if_connected() -> Option<&'static State> {
    STATE.get()
}

fn state() -> Result<&'static State> {
    STATE
        .get()
        .ok_or_else(|| JsError::new(Status::GenericFailure, "not connected".to_owned()))
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

fn js_error(error: impl std::fmt::Display) -> JsError {
    JsError::new(Status::GenericFailure, error.to_string())
}

fn unknown_port(id: u32) -> JsError {
    JsError::new(
        Status::InvalidArg,
        format!("port {id} is closed or was sent away"),
    )
}

pub(crate) fn connect(env: &Env, deliver: &JsFunction, deliver_batch: &JsFunction) -> Result<u32> {
    if STATE.get().is_some() {
        return Err(js_error("already connected"));
    }
    let parent = parent_port().map_err(js_error)?;
    if crate::fast::wanted() {
        crate::fast::connect(env, parent.clone(), deliver_batch)?;
    }
    let mut deliver: Deliver = deliver.create_threadsafe_function(0, to_js)?;
    // Nothing keeps the worker alive until JS says so (a 'message' listener, a started port).
    deliver.unref(env)?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(js_error)?;
    let handle = runtime.handle().clone();
    std::thread::Builder::new()
        .name("utility-process".to_owned())
        .spawn(move || runtime.block_on(std::future::pending::<()>()))
        .map_err(js_error)?;

    let mut ports = HashMap::new();
    ports.insert(
        PARENT,
        Entry {
            handle: Handle::Parent(parent),
            watcher: None,
        },
    );
    let state = State {
        runtime: handle,
        deliver: Mutex::new(deliver),
        ports: Mutex::new(ports),
        next_id: AtomicU32::new(PARENT + 1),
    };
    STATE
        .set(state)
        .map_err(|_| js_error("already connected"))?;
    Ok(PARENT)
}

/// Builds the JS arguments of one delivery, on the JS thread.
fn to_js(ctx: ThreadSafeCallContext<Delivery>) -> Result<Vec<JsUnknown>> {
    delivery_to_js(&ctx.env, ctx.value)
}

/// `[id, payload, ports?, buffers?]` for one delivery; `payload` is `null` for a close.
pub(crate) fn delivery_to_js(env: &Env, delivery: Delivery) -> Result<Vec<JsUnknown>> {
    match delivery {
        Delivery::Closed { port } => Ok(vec![
            env.create_uint32(port)?.into_unknown(),
            env.get_null()?.into_unknown(),
        ]),
        Delivery::Message {
            port,
            payload,
            ports,
            buffers,
        } => {
            let mut args = vec![
                env.create_uint32(port)?.into_unknown(),
                crate::sys::buffer_from_vec(env, payload)?,
            ];
            if !ports.is_empty() || !buffers.is_empty() {
                let mut array = env.create_array_with_length(ports.len())?;
                for (i, id) in ports.into_iter().enumerate() {
                    array.set_element(i as u32, env.create_uint32(id)?)?;
                }
                args.push(array.into_unknown());
            }
            if !buffers.is_empty() {
                let mut array = env.create_array_with_length(buffers.len())?;
                for (i, buffer) in buffers.into_iter().enumerate() {
                    array.set_element(i as u32, crate::sys::buffer_from_shared(env, buffer)?)?;
                }
                args.push(array.into_unknown());
            }
            Ok(args)
        }
    }
}

/// A message as a delivery: its ports get ids here.
pub(crate) fn delivery(state: &State, id: u32, received: Option<Message>) -> Delivery {
    match received {
        Some(mut message) => {
            let ports = message
                .take_ports()
                .into_iter()
                .map(|port| register(state, Handle::Port(Arc::new(port))))
                .collect();
            let buffers = message.take_buffers();
            Delivery::Message {
                port: id,
                payload: message.into_bytes(),
                ports,
                buffers,
            }
        }
        None => Delivery::Closed { port: id },
    }
}

fn register(state: &State, handle: Handle) -> u32 {
    let id = state.next_id.fetch_add(1, Ordering::Relaxed);
    lock(&state.ports).insert(
        id,
        Entry {
            handle,
            watcher: None,
        },
    );
    id
}

/// Reads port `id` until it closes or is stopped, handing each message to JS.
async fn watch(id: u32, handle: Handle, mut stop: oneshot::Receiver<()>) {
    let Some(state) = STATE.get() else { return };
    let deliver = lock(&state.deliver).clone();
    loop {
        let received = tokio::select! {
            biased;
            _ = &mut stop => return,
            received = handle.recv() => received,
        };
        let delivery = delivery(state, id, received);
        let closed = matches!(delivery, Delivery::Closed { .. });
        deliver.call(delivery, ThreadsafeFunctionCallMode::NonBlocking);
        if closed {
            return;
        }
    }
}

pub(crate) fn start(id: u32) -> Result<()> {
    let state = state()?;
    if id == PARENT && crate::fast::active() {
        crate::fast::start();
        return Ok(());
    }
    let mut ports = lock(&state.ports);
    let entry = ports.get_mut(&id).ok_or_else(|| unknown_port(id))?;
    entry.handle.start();
    if entry.watcher.is_none() {
        let (stop, stopped) = oneshot::channel();
        let join = state
            .runtime
            .spawn(watch(id, entry.handle.clone(), stopped));
        entry.watcher = Some(Watcher { stop, join });
    }
    Ok(())
}

pub(crate) fn pause(id: u32) -> Result<()> {
    let state = state()?;
    if id == PARENT && crate::fast::active() {
        crate::fast::pause();
        return Ok(());
    }
    let ports = lock(&state.ports);
    ports
        .get(&id)
        .ok_or_else(|| unknown_port(id))?
        .handle
        .pause();
    Ok(())
}

pub(crate) fn close(id: u32) {
    let Ok(state) = state() else { return };
    let Some(entry) = lock(&state.ports).remove(&id) else {
        return;
    };
    if let Some(watcher) = entry.watcher {
        let _ = watcher.stop.send(());
    }
    match entry.handle {
        Handle::Port(port) => port.close(),
        // The parent port stays open until the process ends: closing it would end the
        // worker's channel for good. JS only stops listening.
        Handle::Parent(_) => {}
    }
}

pub(crate) fn channel() -> Result<Vec<u32>> {
    let state = state()?;
    let MessageChannel { port1, port2 } = MessageChannel::new().map_err(js_error)?;
    Ok(vec![
        register(state, Handle::Port(Arc::new(port1))),
        register(state, Handle::Port(Arc::new(port2))),
    ])
}

pub(crate) fn keep_alive(env: &Env, on: bool) -> Result<()> {
    let state = state()?;
    let mut deliver = lock(&state.deliver);
    if on {
        deliver.refer(env)
    } else {
        deliver.unref(env)
    }
}

pub(crate) fn flush() {
    if let Ok(port) = parent_port() {
        port.flush();
    }
}

/// Takes port `id` out of the table to send it: stops its watcher first (receiving is cancel
/// safe, so a message being awaited stays in the port and travels with it).
fn take_port(state: &State, id: u32) -> Result<MessagePort> {
    if id == PARENT {
        return Err(JsError::new(
            Status::InvalidArg,
            "the parent port cannot be transferred".to_owned(),
        ));
    }
    let entry = lock(&state.ports)
        .remove(&id)
        .ok_or_else(|| unknown_port(id))?;
    if let Some(watcher) = entry.watcher {
        let _ = watcher.stop.send(());
        // The watcher runs on the delivery thread, never this one: waiting here cannot
        // deadlock, and afterwards the table holds the port's only handle.
        let _ = state.runtime.block_on(watcher.join);
    }
    match entry.handle {
        Handle::Port(port) => Arc::try_unwrap(port).map_err(|_| {
            JsError::new(
                Status::GenericFailure,
                format!("port {id} is still in use and cannot be sent"),
            )
        }),
        Handle::Parent(_) => Err(unknown_port(id)),
    }
}

pub(crate) fn post(id: u32, bytes: &[u8], transfer: Vec<u32>) -> Result<bool> {
    let state = state()?;
    let handle = lock(&state.ports)
        .get(&id)
        .map(|entry| entry.handle.clone())
        .ok_or_else(|| unknown_port(id))?;
    if transfer.contains(&id) {
        return Err(JsError::new(
            Status::InvalidArg,
            "a port cannot be sent over itself".to_owned(),
        ));
    }
    let result = if transfer.is_empty() {
        handle.post_bytes(bytes)
    } else {
        // Check the payload before any port leaves the table, so a bad payload loses none.
        utility_process_wire::decode_value::<serde::de::IgnoredAny>(bytes).map_err(|e| {
            JsError::new(
                Status::InvalidArg,
                format!("a message with ports must be one MessagePack value: {e}"),
            )
        })?;
        let mut ports = Vec::with_capacity(transfer.len());
        for port in &transfer {
            ports.push(Transferable::Port(take_port(state, *port)?));
        }
        handle.post_with_transfer(&Transcoded(bytes), ports)
    };
    match result {
        Ok(()) => Ok(true),
        Err(Error::Closed { .. }) => Ok(false),
        Err(e) => Err(js_error(e)),
    }
}
