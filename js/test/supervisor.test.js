// The supervisor's control protocol, child side (lib/supervisor.js, as
// crates/supervisor/src/child.rs), over the real ParentPort/MessagePortMain and a fake native
// side.
'use strict';

const test = require('node:test');
const assert = require('node:assert/strict');
const { Hub, ParentPort } = require('../lib/ports');
const { encode, decode } = require('../lib/msgpack');
const { attach, reply, NotSupervisedError, ParentGoneError, MAGIC, VERSION } = require('../lib/supervisor');

function fake() {
  const calls = [];
  const native = {
    calls,
    posted: [],
    alive: false,
    start: (id) => calls.push(['start', id]),
    pause: (id) => calls.push(['pause', id]),
    close: (id) => calls.push(['close', id]),
    post: (id, bytes) => {
      native.posted.push({ id, data: decode(bytes) });
      return true;
    },
    channel: () => [100, 101],
    keepAlive: (on) => {
      native.alive = on;
    },
  };
  const hub = new Hub(native);
  const parent = new ParentPort(hub, 0);
  return { native, hub, parent };
}

const tick = () => new Promise((resolve) => setImmediate(resolve));
const hello = (restarts = 0, version = VERSION) => encode({ magic: MAGIC, version, restarts });

test('the magic and version are the Rust protocol.rs ones', () => {
  assert.equal(MAGIC, 'utility-process-supervisor');
  assert.equal(VERSION, 1);
});

test('pings are answered with pongs of the same number; unknown requests with silence', () => {
  assert.deepEqual(reply({ Ping: 7 }), { Pong: 7 });
  assert.deepEqual(reply({ Ping: 2n ** 64n - 1n }), { Pong: 2n ** 64n - 1n });
  assert.equal(reply({ Reboot: 1 }), null);
  assert.equal(reply('Ping'), null);
  assert.equal(reply(null), null);
  assert.equal(reply({ Ping: 1, Probe: 2 }), null);
  // As serde writes them for Rust.
  assert.deepEqual(decode(encode(reply({ Ping: 3 }))), { Pong: 3 });
});

test('a probe answers Ok, or Err with the words of what it threw or a stock sentence for false', async () => {
  assert.deepEqual(reply({ Probe: 1 }), { Probe: [1, { Ok: null }] });
  assert.deepEqual(reply({ Probe: 2 }, () => true), { Probe: [2, { Ok: null }] });
  assert.deepEqual(reply({ Probe: 3 }, () => undefined), { Probe: [3, { Ok: null }] });
  assert.deepEqual(reply({ Probe: 4 }, () => false), { Probe: [4, { Err: 'the health probe failed' }] });
  assert.deepEqual(
    reply({ Probe: 5 }, () => {
      throw new Error('backlog of 10001 jobs');
    }),
    { Probe: [5, { Err: 'backlog of 10001 jobs' }] },
  );
  assert.deepEqual(await reply({ Probe: 6 }, async () => {
    throw new Error('db down');
  }), { Probe: [6, { Err: 'db down' }] });
  assert.deepEqual(await reply({ Probe: 7 }, async () => {}), { Probe: [7, { Ok: null }] });
});

test('attach takes the control port from the first message only, and answers on it', async () => {
  const { native, hub, parent } = fake();
  const attaching = attach({ port: parent, probe: () => false });
  hub.deliver(0, hello(2), [50]);
  hub.deliver(0, encode('for the app'));
  const supervised = await attaching;
  assert.equal(supervised.restarts, 2);
  assert.deepEqual(native.posted, [{ id: 50, data: { Attached: { answers: true } } }]);
  assert.ok(native.calls.some(([what, id]) => what === 'start' && id === 50), 'the control port is started');
  // The control port does not keep node alive by itself; the paused parent port neither.
  assert.equal(native.alive, false);

  supervised.ready();
  hub.deliver(50, encode({ Ping: 9 }));
  hub.deliver(50, encode({ Probe: 10 }));
  hub.deliver(50, encode({ Unknown: 11 }));
  supervised.alive();
  assert.deepEqual(native.posted.slice(1).map((p) => p.data), [
    'Ready',
    { Pong: 9 },
    { Probe: [10, { Err: 'the health probe failed' }] },
    'Alive',
  ]);

  // The app's messages waited on the parent port, in order.
  const seen = [];
  parent.on('message', (e) => seen.push(e.data));
  await tick();
  hub.deliver(0, encode('later'));
  assert.deepEqual(seen, ['for the app', 'later']);
});

test('a first message that is not the supervisor\'s is refused and handed back', async () => {
  const { hub, parent } = fake();
  const attaching = attach({ port: parent });
  hub.deliver(0, encode({ hello: 'there' }));
  await assert.rejects(attaching, (error) => error instanceof NotSupervisedError && error.version === null && error.first.data.hello === 'there');

  const other = fake();
  const again = attach({ port: other.parent });
  other.hub.deliver(0, hello(0, 2), [60]);
  await assert.rejects(again, (error) => error instanceof NotSupervisedError && error.version === 2 && error.first.ports.length === 1);
});

test('a parent gone before its first message is ParentGoneError', async () => {
  const { hub, parent } = fake();
  const attaching = attach({ port: parent });
  hub.deliver(0, null);
  await assert.rejects(attaching, ParentGoneError);
});

test('attach after the app listens to the parent port is a mistake it says', async () => {
  const { parent } = fake();
  parent.on('message', () => {});
  await assert.rejects(attach({ port: parent }), /before listening/);
});
