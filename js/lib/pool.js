// The worker side of the Rust `utility_process_pool::Pool`: `serve(handler, { init })`.
//
// The pool speaks its own small protocol in raw-byte messages over the parent port
// (crates/pool/src/frame.rs): one kind byte, a little-endian u64 task id, a body.
//
//   kind  name         direction  body
//   0x01  task         in         the request, MessagePack
//   0x02  cancel       in         empty
//   0x10  ready        out        "utility-process-pool/1" (id 0)
//   0x11  init failed  out        the initializer's error, UTF-8 (id 0)
//   0x12  reply        out        the reply, MessagePack
//   0x13  failed       out        the handler's error, UTF-8
//   0x14  cancelled    out        empty
//   0x15  bad request  out        why the request did not decode, UTF-8
//
// A worker answers each task it is given exactly once (0x12 to 0x15): anything else makes the
// pool kill it as a protocol breach. Tasks run concurrently, as the Rust async `serve` runs
// them: each handler call is started as its task arrives.
'use strict';

const msgpack = require('./msgpack');

/** What a worker says in its ready message: the protocol it speaks. */
const PROTOCOL = Buffer.from('utility-process-pool/1');
/** Header length: kind and id. */
const HEADER = 9;
/** The most bytes of an error text sent to the pool (longer ones are cut, with "…"). */
const TEXT_MAX = 4096;

/** The kinds of frame. */
const Kind = Object.freeze({
  TASK: 0x01,
  CANCEL: 0x02,
  READY: 0x10,
  INIT_FAILED: 0x11,
  REPLY: 0x12,
  FAILED: 0x13,
  CANCELLED: 0x14,
  BAD_REQUEST: 0x15,
});
const KINDS = new Set(Object.values(Kind));

/**
 * Throw it (or reject with it) from a handler that stopped because its task was cancelled:
 * the pool hears `cancelled` rather than a failure. It is also `ctx.signal.reason`.
 */
class Cancelled extends Error {
  constructor(message = 'the task was cancelled') {
    super(message);
    this.name = 'Cancelled';
  }
}

/** The initializer given to `serve` threw or rejected; the pool has been told why. */
class InitError extends Error {
  constructor(message, cause) {
    super(`the worker's initializer failed: ${message}`, { cause });
    this.name = 'InitError';
  }
}

/** A frame: header (`kind`, `id` as u64 little-endian) and `body` (bytes, or nothing). */
function encodeFrame(kind, id, body) {
  const rest = body === undefined || body === null ? 0 : body.length;
  const frame = Buffer.allocUnsafe(HEADER + rest);
  frame[0] = kind;
  frame.writeBigUInt64LE(BigInt(id), 1);
  if (rest) frame.set(body, HEADER);
  return frame;
}

/**
 * Kind, task id and body of a frame; `null` when the bytes are not one (too short, or a
 * kind the protocol does not have). The id is a number, or a bigint beyond 2^53 - 1; the body
 * is a view of the frame.
 */
function decodeFrame(bytes) {
  if (!(bytes instanceof Uint8Array) || bytes.length < HEADER || !KINDS.has(bytes[0])) return null;
  const buf = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
  const big = buf.readBigUInt64LE(1);
  const id = big <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(big) : big;
  return { kind: buf[0], id, body: buf.subarray(HEADER) };
}

/** `text` as UTF-8, cut to at most TEXT_MAX bytes on a character boundary (then "…"). */
function encodeText(text) {
  const raw = Buffer.from(String(text), 'utf8');
  if (raw.length <= TEXT_MAX) return raw;
  let end = TEXT_MAX;
  // Back up over continuation bytes (10xxxxxx) to the start of a character.
  while (end > 0 && (raw[end] & 0xc0) === 0x80) end -= 1;
  return Buffer.concat([raw.subarray(0, end), Buffer.from('…', 'utf8')]);
}

/** The words for what a handler or an initializer threw: "TypeError: boom", as node prints it. */
function describeError(error) {
  if (error instanceof Error) {
    const name = error.name || 'Error';
    return error.message ? `${name}: ${error.message}` : name;
  }
  if (typeof error === 'string') return error;
  try {
    return JSON.stringify(error) ?? String(error);
  } catch {
    return String(error);
  }
}

/** What a handler learns about its task: its id, and whether the pool cancelled it. */
class TaskContext {
  constructor(id) {
    this.id = id;
    this._controller = new AbortController();
  }

  /** Aborted when the pool cancels the task (a cancellation or a deadline). */
  get signal() {
    return this._controller.signal;
  }

  /** Whether the pool has cancelled the task. A handler that computes should look now and then. */
  get cancelled() {
    return this._controller.signal.aborted;
  }

  /**
   * Calls `callback` when the pool cancels the task (at once if it already has). Returns a
   * function that unregisters it.
   */
  onCancel(callback) {
    const signal = this._controller.signal;
    if (signal.aborted) {
      callback(signal.reason);
      return () => {};
    }
    const listener = () => callback(signal.reason);
    signal.addEventListener('abort', listener, { once: true });
    return () => signal.removeEventListener('abort', listener);
  }

  /** Throws `Cancelled` if the pool has cancelled the task. */
  throwIfCancelled() {
    this._controller.signal.throwIfAborted();
  }

  _cancel(reason) {
    if (!this.cancelled) this._controller.abort(reason);
  }
}

/** The parent port, connecting first if the bootstrap did not. */
function defaultPort() {
  return process.parentPort || require('./index').parentPort;
}

/**
 * Serves the pool until the parent goes away: `init()` runs first (awaited); then each task's
 * `handler(request, ctx)` runs as it arrives, as many at once as the pool sends, and its value
 * (or the value its promise resolves to) is the reply. A handler that throws or rejects fails
 * its task (`TaskError::Failed`, with "Name: message"); one that throws `Cancelled` after the
 * pool cancelled the task answers `cancelled`.
 *
 * When the pool cancels a task, `ctx.signal` aborts (reason: a `Cancelled`), `ctx.onCancel`
 * callbacks run, and the task is answered `cancelled` at once, as the Rust `serve` drops the
 * handler's future: what the handler returns afterwards is ignored.
 *
 * Returns a promise that resolves when the parent goes away (the tasks still running are
 * cancelled), or rejects with `InitError` when `init` throws or rejects (the pool has been
 * told: `StartError::Init`). Options: `init`, and `port` (the parent port by default).
 */
function serve(handler, options = {}) {
  if (typeof handler !== 'function') throw new TypeError('serve(handler): the handler must be a function');
  const { init } = options;
  if (init !== undefined && typeof init !== 'function') {
    throw new TypeError('serve(handler, { init }): init must be a function');
  }
  const port = options.port || defaultPort();
  const post = (kind, id, body) => {
    try {
      port._postBytes(encodeFrame(kind, id, body));
      return null;
    } catch (error) {
      return error;
    }
  };

  return (async () => {
    if (init) {
      try {
        await init();
      } catch (error) {
        const words = describeError(error);
        post(Kind.INIT_FAILED, 0, encodeText(words));
        throw new InitError(words, error);
      }
    }
    const failure = post(Kind.READY, 0, PROTOCOL);
    if (failure) throw failure;

    /** Tasks running, by id: their contexts. An id leaves when its task is answered. */
    const running = new Map();

    const answer = (id, ctx, ok, value) => {
      if (running.get(id) !== ctx) return; // answered already (cancelled)
      running.delete(id);
      if (!ok) {
        if (value instanceof Cancelled || (ctx.cancelled && value === ctx.signal.reason)) {
          post(Kind.CANCELLED, id);
        } else {
          post(Kind.FAILED, id, encodeText(describeError(value)));
        }
        return;
      }
      let body;
      try {
        body = msgpack.encode(value);
      } catch (error) {
        post(Kind.FAILED, id, encodeText(`cannot encode the reply: ${describeError(error)}`));
        return;
      }
      const error = post(Kind.REPLY, id, body);
      if (error) post(Kind.FAILED, id, encodeText(`cannot post the reply: ${describeError(error)}`));
    };

    const start = (id, body) => {
      let request;
      try {
        request = msgpack.decode(body);
      } catch (error) {
        post(Kind.BAD_REQUEST, id, encodeText(error.message));
        return;
      }
      const ctx = new TaskContext(id);
      running.set(id, ctx);
      let outcome;
      try {
        outcome = handler(request, ctx);
      } catch (error) {
        answer(id, ctx, false, error);
        return;
      }
      if (outcome !== null && typeof outcome === 'object' && typeof outcome.then === 'function') {
        Promise.resolve(outcome).then(
          (value) => answer(id, ctx, true, value),
          (error) => answer(id, ctx, false, error),
        );
      } else {
        answer(id, ctx, true, outcome);
      }
    };

    const cancel = (id) => {
      const ctx = running.get(id);
      if (ctx === undefined) return; // never given, or answered already
      running.delete(id);
      post(Kind.CANCELLED, id);
      ctx._cancel(new Cancelled());
    };

    await new Promise((resolve) => {
      const onMessage = (event) => {
        const frame = decodeFrame(event.data);
        if (frame === null) return; // not ours: the pool sends nothing else
        if (frame.kind === Kind.TASK) start(frame.id, frame.body);
        else if (frame.kind === Kind.CANCEL) cancel(frame.id);
      };
      const onClose = () => {
        port.off('message', onMessage);
        port.off('close', onClose);
        const left = [...running.values()];
        running.clear();
        for (const ctx of left) ctx._cancel(new Cancelled('the pool is gone'));
        resolve();
      };
      port.on('close', onClose);
      port.on('message', onMessage);
    });
  })();
}

exports.serve = serve;
exports.TaskContext = TaskContext;
exports.Cancelled = Cancelled;
exports.InitError = InitError;
exports.Kind = Kind;
exports.PROTOCOL = PROTOCOL;
exports.HEADER = HEADER;
exports.TEXT_MAX = TEXT_MAX;
exports.encodeFrame = encodeFrame;
exports.decodeFrame = decodeFrame;
exports.encodeText = encodeText;
exports.describeError = describeError;
