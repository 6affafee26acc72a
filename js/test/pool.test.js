// The pool's frames (lib/pool.js, as crates/pool/src/frame.rs) and `serve` over a fake
// parent port that records what the worker posts.
'use strict';

const test = require('node:test');
const assert = require('node:assert/strict');
const { EventEmitter } = require('events');
const { setTimeout: sleep } = require('timers/promises');
const { encode, decode } = require('../lib/msgpack');
const pool = require('../lib/pool');

const { Kind, encodeFrame, decodeFrame, encodeText, serve, Cancelled, InitError } = pool;

test('the kinds are the Rust frame.rs bytes', () => {
  assert.deepEqual(
    { ...Kind },
    { TASK: 0x01, CANCEL: 0x02, READY: 0x10, INIT_FAILED: 0x11, REPLY: 0x12, FAILED: 0x13, CANCELLED: 0x14, BAD_REQUEST: 0x15 },
  );
  assert.equal(pool.PROTOCOL.toString(), 'utility-process-pool/1');
  assert.equal(pool.HEADER, 9);
});

test('a frame is the kind byte, the id as u64 little-endian, then the body', () => {
  const frame = encodeFrame(Kind.FAILED, 0x0102030405060708n, Buffer.from('oops'));
  assert.deepEqual([...frame.subarray(0, 9)], [0x13, 8, 7, 6, 5, 4, 3, 2, 1]);
  assert.equal(frame.subarray(9).toString(), 'oops');
  assert.deepEqual(encodeFrame(Kind.CANCELLED, 5), Buffer.from([0x14, 5, 0, 0, 0, 0, 0, 0, 0]));
});

test('a frame decodes back to its kind, id and body', () => {
  const frame = decodeFrame(encodeFrame(Kind.TASK, 42, encode({ Double: 21 })));
  assert.equal(frame.kind, Kind.TASK);
  assert.equal(frame.id, 42);
  assert.deepEqual(decode(frame.body), { Double: 21 });
  // Ids beyond 2^53 - 1 stay exact, as bigints.
  assert.equal(decodeFrame(encodeFrame(Kind.CANCEL, 2n ** 64n - 1n)).id, 2n ** 64n - 1n);
  assert.equal(decodeFrame(encodeFrame(Kind.CANCEL, 2 ** 53 - 1)).id, 2 ** 53 - 1);
  // A Uint8Array that is not a Buffer decodes too.
  assert.equal(decodeFrame(new Uint8Array([0x02, 1, 0, 0, 0, 0, 0, 0, 0])).id, 1);
});

test('short frames, unknown kinds and decoded values are not frames', () => {
  assert.equal(decodeFrame(Buffer.from([0x12, 1, 2])), null);
  assert.equal(decodeFrame(Buffer.from([0x7f, 0, 0, 0, 0, 0, 0, 0, 0])), null);
  assert.equal(decodeFrame({ Double: 1 }), null);
  assert.equal(decodeFrame(null), null);
});

test('a frame is never one MessagePack value, so it reaches the worker as raw bytes', () => {
  for (const kind of [Kind.TASK, Kind.CANCEL]) {
    assert.throws(() => decode(encodeFrame(kind, 0, encode(null))), /bytes follow the value/);
  }
});

test('long text is cut on a character boundary', () => {
  assert.equal(encodeText('short').toString(), 'short');
  const cut = encodeText('é'.repeat(3000)).toString();
  assert.equal(cut, `${'é'.repeat(2048)}…`);
  assert.equal(encodeText(`a${'é'.repeat(3000)}`).toString(), `a${'é'.repeat(2047)}…`);
});

/** A parent port that records the frames posted, and delivers frames on demand. */
function fakePort() {
  const port = new EventEmitter();
  port.posted = [];
  port.waiters = [];
  port._postBytes = (bytes) => {
    const frame = decodeFrame(bytes);
    port.posted.push(frame);
    for (const waiter of port.waiters.splice(0)) waiter();
  };
  port.send = (kind, id, value) => port.emit('message', { data: encodeFrame(kind, id, value === undefined ? undefined : encode(value)), ports: [] });
  /** Waits until `n` frames have been posted. */
  port.until = async (n) => {
    while (port.posted.length < n) await new Promise((resolve) => port.waiters.push(resolve));
    return port.posted;
  };
  return port;
}

const answers = (port) => port.posted.slice(1).map(({ kind, id, body }) => [kind, id, kind === Kind.REPLY ? decode(body) : body.toString()]);

test('serve says ready, then answers each task once: replies, failures, bad requests', async () => {
  const port = fakePort();
  const served = serve(
    (job) => {
      if (job === 'sync-throw') throw new TypeError('boom');
      if (job === 'reject') return Promise.reject(new Error('nope'));
      if (job === 'reject-string') return Promise.reject('plain words');
      if (job === 'fn') return () => {};
      return Promise.resolve(job * 2);
    },
    { port },
  );
  await port.until(1);
  assert.deepEqual(port.posted[0], { kind: Kind.READY, id: 0, body: pool.PROTOCOL });
  port.send(Kind.TASK, 1, 21);
  port.send(Kind.TASK, 2, 'sync-throw');
  port.send(Kind.TASK, 3, 'reject');
  port.send(Kind.TASK, 4, 'reject-string');
  port.send(Kind.TASK, 5, 'fn');
  port.emit('message', { data: Buffer.concat([encodeFrame(Kind.TASK, 6), Buffer.from([0xc1])]), ports: [] });
  port.emit('message', { data: 'not a frame', ports: [] });
  port.send(Kind.CANCEL, 99); // a task it never had: no answer
  await port.until(7);
  const got = new Map(answers(port).map(([kind, id, body]) => [id, [kind, body]]));
  assert.deepEqual(got.get(1), [Kind.REPLY, 42]);
  assert.deepEqual(got.get(2), [Kind.FAILED, 'TypeError: boom']);
  assert.deepEqual(got.get(3), [Kind.FAILED, 'Error: nope']);
  assert.deepEqual(got.get(4), [Kind.FAILED, 'plain words']);
  assert.equal(got.get(5)[0], Kind.FAILED);
  assert.match(got.get(5)[1], /^cannot encode the reply: DataCloneError/);
  assert.equal(got.get(6)[0], Kind.BAD_REQUEST);
  assert.equal(port.posted.length, 7, 'one answer per task, none for the unknown cancel');
  port.emit('close');
  await served;
});

test('tasks run concurrently: a later quick task is answered before an earlier slow one', async () => {
  const port = fakePort();
  serve(async (ms) => {
    await sleep(ms);
    return ms;
  }, { port });
  await port.until(1);
  port.send(Kind.TASK, 1, 50);
  port.send(Kind.TASK, 2, 1);
  await port.until(3);
  assert.deepEqual(answers(port), [[Kind.REPLY, 2, 1], [Kind.REPLY, 1, 50]]);
  port.emit('close');
});

test('a cancel aborts the signal, runs onCancel, and answers cancelled once, at once', async () => {
  const port = fakePort();
  const seen = [];
  let finish;
  serve((_job, ctx) => {
    assert.equal(ctx.cancelled, false);
    ctx.onCancel((reason) => seen.push(['onCancel', reason instanceof Cancelled]));
    ctx.signal.addEventListener('abort', () => seen.push(['abort', ctx.cancelled]));
    return new Promise((resolve) => {
      finish = resolve;
    });
  }, { port });
  await port.until(1);
  port.send(Kind.TASK, 7, null);
  port.send(Kind.CANCEL, 7);
  await port.until(2);
  assert.deepEqual(answers(port), [[Kind.CANCELLED, 7, '']]);
  assert.deepEqual(seen, [['onCancel', true], ['abort', true]]);
  // What the handler returns afterwards is not a second answer; nor is a second cancel.
  finish(1);
  port.send(Kind.CANCEL, 7);
  await sleep(5);
  assert.equal(port.posted.length, 2);
  port.emit('close');
});

test('a handler that throws Cancelled answers cancelled', async () => {
  const port = fakePort();
  serve((_job, ctx) => {
    ctx.throwIfCancelled();
    throw new Cancelled();
  }, { port });
  await port.until(1);
  port.send(Kind.TASK, 3, null);
  await port.until(2);
  assert.deepEqual(answers(port), [[Kind.CANCELLED, 3, '']]);
  port.emit('close');
});

test('the parent going away cancels what still runs and ends serve', async () => {
  const port = fakePort();
  let signal;
  const served = serve((_job, ctx) => {
    signal = ctx.signal;
    return new Promise(() => {});
  }, { port });
  await port.until(1);
  port.send(Kind.TASK, 1, null);
  port.emit('close');
  await served;
  assert.equal(signal.aborted, true);
  assert.equal(port.listenerCount('message'), 0);
});

test('an init that throws is reported as init failed, and serve rejects with InitError', async () => {
  const port = fakePort();
  await assert.rejects(
    serve(() => 0, {
      port,
      init: async () => {
        throw new RangeError('no model');
      },
    }),
    (error) => error instanceof InitError && error.message === "the worker's initializer failed: RangeError: no model",
  );
  assert.deepEqual(port.posted.map(({ kind, id, body }) => [kind, id, body.toString()]), [
    [Kind.INIT_FAILED, 0, 'RangeError: no model'],
  ]);
  assert.equal(port.listenerCount('message'), 0, 'a worker whose init failed takes no task');
});

test('an init that succeeds runs before ready', async () => {
  const port = fakePort();
  const order = [];
  serve(() => 0, {
    port,
    init: async () => {
      await sleep(1);
      order.push('init');
    },
  });
  await port.until(1);
  order.push('ready');
  assert.deepEqual(order, ['init', 'ready']);
  port.emit('close');
});
