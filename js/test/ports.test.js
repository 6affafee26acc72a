// The Electron semantics of process.parentPort and MessagePortMain (lib/ports.js), over a
// fake native side that records calls and delivers on demand.
'use strict';

const test = require('node:test');
const assert = require('node:assert/strict');
const { Hub, ParentPort, MessagePortMain, channelClass } = require('../lib/ports');
const { encode, decode } = require('../lib/msgpack');

function fake() {
  const calls = [];
  let next = 10;
  const native = {
    calls,
    posted: [],
    alive: false,
    start: (id) => calls.push(['start', id]),
    pause: (id) => calls.push(['pause', id]),
    close: (id) => calls.push(['close', id]),
    post: (id, bytes, transfer) => {
      native.posted.push({ id, data: decode(bytes), transfer });
      return true;
    },
    channel: () => [next++, next++],
    keepAlive: (on) => {
      native.alive = on;
    },
  };
  const hub = new Hub(native);
  const parent = new ParentPort(hub, 0);
  return { native, hub, parent };
}

const tick = () => new Promise((resolve) => setImmediate(resolve));

test('the parent port starts with its first message listener and pauses without one', () => {
  const { native, parent } = fake();
  assert.deepEqual(native.calls, []);
  const listener = () => {};
  parent.on('message', listener);
  parent.on('message', () => {});
  assert.deepEqual(native.calls, [['start', 0]]);
  assert.equal(native.alive, true, 'a listening parent port keeps node alive');
  parent.removeAllListeners('message');
  assert.deepEqual(native.calls, [['start', 0], ['pause', 0]]);
  assert.equal(native.alive, false);
});

test('messages that come with no listener wait, in order, for the next one', async () => {
  const { hub, parent } = fake();
  parent.start();
  for (let i = 0; i < 5; i += 1) hub.deliver(0, encode(i));
  const seen = [];
  parent.on('message', (e) => seen.push(e.data));
  hub.deliver(0, encode(5));
  await tick();
  hub.deliver(0, encode(6));
  assert.deepEqual(seen, [0, 1, 2, 3, 4, 5, 6]);
});

test('once, off and the event shape ({ data, ports }) are as in Electron', async () => {
  const { hub, parent } = fake();
  const seen = [];
  parent.once('message', (e) => seen.push(['once', e.data, e.ports.length]));
  hub.deliver(0, encode('a'));
  hub.deliver(0, encode('b'));
  await tick();
  assert.deepEqual(seen, [['once', 'a', 0]]);
  const listener = (e) => seen.push(['on', e.data]);
  parent.on('message', listener);
  await tick();
  assert.deepEqual(seen.at(-1), ['on', 'b']);
  parent.off('message', listener);
  hub.deliver(0, encode('c'));
  parent.on('message', listener);
  await tick();
  assert.deepEqual(seen.at(-1), ['on', 'c']);
});

test('bytes that are not one MessagePack value arrive as a Buffer', () => {
  const { hub, parent } = fake();
  let data;
  parent.on('message', (e) => {
    data = e.data;
  });
  hub.deliver(0, Buffer.from([0xc1, 1, 2]));
  assert.ok(Buffer.isBuffer(data));
  assert.deepEqual([...data], [0xc1, 1, 2]);
});

test('received ports are MessagePortMain: queued until start(), close event, close()', () => {
  const { native, hub, parent } = fake();
  let port;
  parent.on('message', (e) => {
    [port] = e.ports;
  });
  hub.deliver(0, encode('with a port'), [7]);
  assert.ok(port instanceof MessagePortMain);
  const seen = [];
  port.on('message', (e) => seen.push(e.data));
  assert.ok(!native.calls.some(([call, id]) => call === 'start' && id === 7), 'not started yet');
  port.start();
  assert.deepEqual(native.calls.at(-1), ['start', 7]);
  hub.deliver(7, encode('hi'));
  assert.deepEqual(seen, ['hi']);
  let closed = 0;
  port.on('close', () => {
    closed += 1;
  });
  hub.deliver(7, null);
  assert.equal(closed, 1);
  port.postMessage('dropped: the other end is gone');
  assert.equal(native.posted.length, 0);
  port.close();
  assert.ok(!native.calls.some(([call]) => call === 'close'), 'nothing left to close');
});

test('postMessage transfers ports, which are then unusable here', () => {
  const { native, hub, parent } = fake();
  const MessageChannelMain = channelClass(() => hub);
  const { port1, port2 } = new MessageChannelMain();
  parent.postMessage({ hello: 'parent' }, [port2]);
  assert.deepEqual(native.posted, [{ id: 0, data: { hello: 'parent' }, transfer: [11] }]);
  assert.throws(() => parent.postMessage('again', [port2]), /closed or was already sent/);
  port2.postMessage('ignored');
  assert.equal(native.posted.length, 1);
  port1.postMessage('fine');
  assert.deepEqual(native.posted.at(-1), { id: 10, data: 'fine', transfer: undefined });
  assert.throws(() => port1.postMessage('x', [{}]), TypeError);
  assert.throws(() => port1.postMessage('x', 'not a list'), TypeError);
  assert.throws(() => port1.postMessage(() => 1), (e) => e.name === 'DataCloneError');
});

test('ports of a message for a port closed meanwhile are closed, not leaked', () => {
  const { native, hub } = fake();
  hub.deliver(99, encode('late'), [12, 13]);
  assert.deepEqual(native.calls, [['close', 12], ['close', 13]]);
});

test('a started port keeps node alive until it closes', () => {
  const { native, hub } = fake();
  const port = hub.adopt(20);
  port.start();
  assert.equal(native.alive, true);
  port.close();
  assert.equal(native.alive, false);
  assert.deepEqual(native.calls.at(-1), ['close', 20]);
});

test('an unref()ed port does not keep node alive; ref() makes it do so again', () => {
  const { native, hub } = fake();
  const port = hub.adopt(20);
  port.unref();
  port.start();
  assert.equal(native.alive, false);
  port.ref();
  assert.equal(native.alive, true);
  port.unref();
  assert.equal(native.alive, false);
  port.ref();
  port.close();
  assert.equal(native.alive, false);
});

test('the parent port posts raw bytes as they are (the pool\'s frames)', () => {
  const { native, parent } = fake();
  native.post = (id, bytes) => native.posted.push({ id, bytes });
  parent._postBytes(Buffer.from([0x10, 0, 0, 0, 0, 0, 0, 0, 0]));
  assert.deepEqual(native.posted, [{ id: 0, bytes: Buffer.from([0x10, 0, 0, 0, 0, 0, 0, 0, 0]) }]);
});
