// The child side of the Rust `utility_process_supervisor`: `await attach()` first, then
// `supervised.ready()`.
//
// The supervisor's first message on the parent port is `{ magic: "utility-process-supervisor",
// version: 1, restarts: n }` carrying one port: the control channel. Everything of
// supervision travels there (crates/supervisor/src/protocol.rs), never on the parent port:
//
//   child -> supervisor   { Attached: { answers: true } }, "Ready", "Alive", { Pong: n },
//                         { Probe: [n, { Ok: null }] } or { Probe: [n, { Err: words }] }
//   supervisor -> child   { Ping: n }, { Probe: n }
//
// The answers are posted from node's event loop (the control port's messages are delivered
// there), so a heartbeat answer proves the loop goes round: a loop blocked by synchronous
// work is declared hung.
'use strict';

/** Tells the child's side that the first message is the supervisor's. */
const MAGIC = 'utility-process-supervisor';
/** The control protocol's version; a child of another version refuses to attach. */
const VERSION = 1;

/**
 * The parent's first message is not a supervisor's (or is one of another version). The
 * message (`{ data, ports }`) is in `first`; nothing else was read.
 */
class NotSupervisedError extends Error {
  constructor(first, version) {
    const what = version === null ? "not the supervisor's" : `from a supervisor of version ${version}`;
    super(`the parent's first message is ${what}`);
    this.name = 'NotSupervisedError';
    this.first = first;
    this.version = version;
  }
}

/** The parent closed the port before its first message. */
class ParentGoneError extends Error {
  constructor() {
    super('the parent closed the port before its first message');
    this.name = 'ParentGoneError';
  }
}

/** A supervised child's link to its supervisor, from `attach`. */
class Supervised {
  constructor(control, restarts) {
    /** The control channel's port (a MessagePortMain). */
    this.control = control;
    /** How many times the supervisor restarted this service before this start (0 the first time). */
    this.restarts = restarts;
  }

  /** Tells the supervisor the child has started: heartbeats and probes begin. Again: nothing more. */
  ready() {
    this.control.postMessage('Ready');
  }

  /** A sign of life from the child's own loop: the heartbeat in force counts as answered. */
  alive() {
    this.control.postMessage('Alive');
  }
}

/** Checks that `first` (`{ data, ports }`) is the supervisor's hello; its control port and restarts. */
function takeControl(first) {
  const hello = first.data;
  if (hello === null || typeof hello !== 'object' || hello.magic !== MAGIC) {
    throw new NotSupervisedError(first, null);
  }
  const { version } = hello;
  if (version !== VERSION || !Array.isArray(first.ports) || first.ports.length !== 1) {
    throw new NotSupervisedError(first, typeof version === 'number' ? version : null);
  }
  const restarts = typeof hello.restarts === 'number' ? hello.restarts : 0;
  return { control: first.ports[0], restarts };
}

/** The words for a failed probe: what it threw, or a stock sentence for `false`. */
function probeWords(error) {
  if (error instanceof Error) return error.message || error.name || 'Error';
  if (typeof error === 'string') return error;
  return String(error);
}

/**
 * The answer to one control request (a promise of it when the probe is async), or `null`
 * for a request this side does not know: silence is what a newer supervisor expects.
 */
function reply(request, probe) {
  if (request === null || typeof request !== 'object' || Array.isArray(request)) return null;
  const names = Object.keys(request);
  if (names.length !== 1) return null;
  const [name] = names;
  const n = request[name];
  if (name === 'Ping') return { Pong: n };
  if (name !== 'Probe') return null;
  if (!probe) return { Probe: [n, { Ok: null }] };
  const verdict = (outcome) =>
    outcome === false ? { Probe: [n, { Err: 'the health probe failed' }] } : { Probe: [n, { Ok: null }] };
  const failed = (error) => ({ Probe: [n, { Err: probeWords(error) }] });
  let outcome;
  try {
    outcome = probe();
  } catch (error) {
    return failed(error);
  }
  if (outcome !== null && typeof outcome === 'object' && typeof outcome.then === 'function') {
    return Promise.resolve(outcome).then(verdict, failed);
  }
  return verdict(outcome);
}

/** Waits for the first message on `port` (and only that one: the next ones wait for the app). */
function firstMessage(port) {
  return new Promise((resolve, reject) => {
    const onMessage = (event) => {
      port.off('close', onClose);
      resolve(event);
    };
    const onClose = () => {
      port.off('message', onMessage);
      reject(new ParentGoneError());
    };
    port.once('close', onClose);
    // Removing the only listener pauses the parent port: the user's messages stay queued.
    port.once('message', onMessage);
  });
}

/**
 * Takes the supervisor's control channel (the first message on the parent port) and answers
 * its heartbeats and health probes from node's event loop. Call it first, before listening to
 * `process.parentPort`.
 *
 * `options.probe`: called for each health probe (the supervisor's `Probe`); throwing,
 * rejecting or returning `false` fails it, with the error's message (reported in
 * `ProbeFailure::Unhealthy`). `options.port`: the parent port by default.
 *
 * The control port does not keep node alive by itself (it is `unref()`ed): a child ends when
 * nothing else keeps it alive, as any worker does.
 *
 * Rejects with `NotSupervisedError` (the first message is not the supervisor's; it is in
 * `error.first`) or `ParentGoneError`.
 */
async function attach(options = {}) {
  const { probe } = options;
  if (probe !== undefined && typeof probe !== 'function') {
    throw new TypeError('attach({ probe }): probe must be a function');
  }
  const port = options.port || process.parentPort || require('./index').parentPort;
  if (port.listenerCount('message') > 0) {
    throw new Error('attach() must be called before listening to process.parentPort: the first message is the supervisor\'s');
  }
  const first = await firstMessage(port);
  const { control, restarts } = takeControl(first);
  control.on('message', (event) => {
    const answer = reply(event.data, probe);
    if (answer === null) return;
    if (typeof answer.then === 'function') answer.then((a) => control.postMessage(a));
    else control.postMessage(answer);
  });
  control.unref();
  control.start();
  control.postMessage({ Attached: { answers: true } });
  return new Supervised(control, restarts);
}

exports.attach = attach;
exports.Supervised = Supervised;
exports.NotSupervisedError = NotSupervisedError;
exports.ParentGoneError = ParentGoneError;
exports.MAGIC = MAGIC;
exports.VERSION = VERSION;
exports.reply = reply;
exports.takeControl = takeControl;
