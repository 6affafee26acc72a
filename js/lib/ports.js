// Electron's `process.parentPort`, `MessagePortMain` and `MessageChannelMain`, over the
// native addon (crates/node) or any object with the same six functions, which the tests use
// to check the event semantics without a parent process.
//
// The native side knows ports by integer id (the parent port is 0) and calls
// `hub.deliver(id, payload, portIds, buffers)` for each message, in arrival order across all
// ports, and `hub.deliver(id, null)` when a port's other end is gone.
'use strict';

const { EventEmitter } = require('events');
const msgpack = require('./msgpack');

const kId = Symbol('id');
const kHub = Symbol('hub');
const kState = Symbol('state');

/** Routes deliveries to port objects and decides whether node's loop must stay alive. */
class Hub {
  constructor(native) {
    this.native = native;
    this.ports = new Map();
    this.holding = new Set();
    this.alive = false;
    this.deliver = this.deliver.bind(this);
    this.deliverBatch = this.deliverBatch.bind(this);
    this.draining = false;
  }

  /**
   * The parent port's messages, read on this thread: `[id, payload, ports, buffers, ...,
   * more]`; `more` says the batch was cut short and the rest is to be drained.
   */
  deliverBatch(batch) {
    const end = batch.length - 1;
    for (let i = 0; i < end; i += 4) this.deliver(batch[i], batch[i + 1], batch[i + 2], batch[i + 3]);
    if (batch[end]) this.scheduleDrain();
  }

  /** Soon, takes what the native side already read for the parent port (see fast.rs). */
  scheduleDrain() {
    if (this.draining || !this.native.drain) return;
    this.draining = true;
    setImmediate(() => {
      this.draining = false;
      const batch = this.native.drain();
      if (batch) this.deliverBatch(batch);
    });
  }

  deliver(id, payload, portIds, buffers) {
    const port = this.ports.get(id);
    if (port === undefined) {
      // A port closed (or sent away) here while its message was on the way: the ports that
      // came with it are nobody's, so their other ends must see a close.
      if (portIds) for (const p of portIds) this.native.close(p);
      return;
    }
    if (payload === null) {
      port._remoteClosed();
      return;
    }
    const ports = portIds ? portIds.map((p) => this.adopt(p)) : [];
    let data;
    try {
      data = msgpack.decode(payload);
    } catch {
      // The wire does not mark raw posts (Rust's `post_bytes`): bytes that are not exactly one
      // MessagePack value arrive as they are.
      data = payload;
    }
    const event = { data, ports };
    if (buffers) event.buffers = buffers;
    port._message(event);
  }

  adopt(id) {
    const port = new MessagePortMain(this, id);
    this.ports.set(id, port);
    return port;
  }

  hold(id, on) {
    if (on) this.holding.add(id);
    else this.holding.delete(id);
    const alive = this.holding.size > 0;
    if (alive !== this.alive) {
      this.alive = alive;
      this.native.keepAlive(alive);
    }
  }

  forget(id) {
    this.ports.delete(id);
    this.hold(id, false);
  }

  post(id, message, transfer) {
    const ids = [];
    if (transfer !== undefined && transfer !== null) {
      if (!Array.isArray(transfer)) {
        throw new TypeError('the transfer list must be an array of MessagePortMain');
      }
      for (const port of transfer) {
        if (!(port instanceof MessagePortMain)) {
          throw new TypeError('the transfer list may hold only MessagePortMain objects');
        }
        if (port[kState].gone) throw new Error('a port in the transfer list is closed or was already sent');
        if (ids.includes(port[kId])) throw new Error('a port is listed twice in the transfer list');
        ids.push(port[kId]);
      }
    }
    const bytes = msgpack.encode(message);
    // `false`: the other end is gone. Electron drops such messages silently, and so do we.
    this.native.post(id, bytes, ids.length ? ids : undefined);
    for (const port of transfer || []) port._neuter();
  }

  /** Posts `bytes` as they are (Rust's `post_bytes`): the pool's frames (lib/pool.js). */
  postBytes(id, bytes) {
    this.native.post(id, bytes, undefined);
  }
}

/**
 * One end of a message channel (Electron's MessagePortMain): messages queue until `start()`;
 * 'message' gets `{ data, ports }`; 'close' comes when the other end is gone.
 */
class MessagePortMain extends EventEmitter {
  constructor(hub, id) {
    super();
    this[kHub] = hub;
    this[kId] = id;
    this[kState] = { started: false, gone: false, unref: false };
  }

  /** Starts delivery of the messages queued on the port. */
  start() {
    const state = this[kState];
    if (state.gone || state.started) return;
    state.started = true;
    this[kHub].native.start(this[kId]);
    this[kHub].hold(this[kId], !state.unref);
  }

  /**
   * As Node's `MessagePort.unref()` (not in Electron): a started port no longer keeps node's
   * event loop alive by itself; its messages still come while something else does.
   */
  unref() {
    const state = this[kState];
    state.unref = true;
    if (state.started && !state.gone) this[kHub].hold(this[kId], false);
    return this;
  }

  /** Undoes `unref()`: a started, open port keeps node's event loop alive again. */
  ref() {
    const state = this[kState];
    state.unref = false;
    if (state.started && !state.gone) this[kHub].hold(this[kId], true);
    return this;
  }

  /** Disconnects the port: the other end sees 'close'; posting here does nothing. */
  close() {
    const state = this[kState];
    if (state.gone) return;
    state.gone = true;
    this[kHub].native.close(this[kId]);
    this[kHub].forget(this[kId]);
  }

  /** Posts `message` with the ports in `transfer`, which leave this process. */
  postMessage(message, transfer) {
    if (this[kState].gone) return;
    this[kHub].post(this[kId], message, transfer);
  }

  _message(event) {
    this.emit('message', event);
  }

  _remoteClosed() {
    const state = this[kState];
    if (state.gone) return;
    state.gone = true;
    this[kHub].forget(this[kId]);
    this.emit('close');
  }

  _neuter() {
    this[kState].gone = true;
    this[kHub].forget(this[kId]);
  }
}

/**
 * Electron's `process.parentPort`: messages from the parent wait until a 'message' listener
 * exists (adding the first starts the port, removing the last pauses it).
 */
class ParentPort extends EventEmitter {
  constructor(hub, id) {
    super();
    this[kHub] = hub;
    this[kId] = id;
    this[kState] = { started: false, gone: false, queue: [] };
    hub.ports.set(id, this);
    this.on('newListener', (name) => {
      if (name === 'message' && this.listenerCount('message') === 0) {
        this.start();
        // The listener is added after this event: hand it what waited, once it is there.
        if (this[kState].queue.length) queueMicrotask(() => this._drain());
      }
    });
    this.on('removeListener', (name) => {
      if (name === 'message' && this.listenerCount('message') === 0) this.pause();
    });
  }

  /** Starts delivery of the parent's messages (adding a 'message' listener does it too). */
  start() {
    const state = this[kState];
    if (state.gone || state.started) return;
    state.started = true;
    this[kHub].native.start(this[kId]);
    this[kHub].hold(this[kId], true);
    this[kHub].scheduleDrain();
  }

  /** Pauses delivery: the parent's messages wait until `start()` or a new listener. */
  pause() {
    const state = this[kState];
    if (state.gone || !state.started) return;
    state.started = false;
    this[kHub].native.pause(this[kId]);
    this[kHub].hold(this[kId], false);
  }

  /**
   * Posts `message` to the parent. Unlike Electron's, this parent port also takes a transfer
   * list of MessagePortMain objects, which move to the parent.
   */
  postMessage(message, transfer) {
    if (this[kState].gone) return;
    this[kHub].post(this[kId], message, transfer);
  }

  /** Posts raw bytes, not a MessagePack value (internal: the pool's frames, lib/pool.js). */
  _postBytes(bytes) {
    if (this[kState].gone) return;
    this[kHub].postBytes(this[kId], bytes);
  }

  _message(event) {
    const state = this[kState];
    if (state.queue.length || this.listenerCount('message') === 0) {
      state.queue.push(event);
      return;
    }
    this.emit('message', event);
  }

  _drain() {
    const state = this[kState];
    while (state.queue.length && this.listenerCount('message') > 0) {
      this.emit('message', state.queue.shift());
    }
  }

  _remoteClosed() {
    const state = this[kState];
    if (state.gone) return;
    state.gone = true;
    this[kHub].forget(this[kId]);
    this.emit('close');
  }
}

/** Electron's MessageChannelMain: two entangled ports, `port1` and `port2`. */
function channelClass(hub) {
  return class MessageChannelMain {
    constructor() {
      const [a, b] = hub().native.channel();
      this.port1 = hub().adopt(a);
      this.port2 = hub().adopt(b);
    }
  };
}

module.exports = { Hub, ParentPort, MessagePortMain, channelClass };
