// The value mapping between JS and MessagePack (lib/msgpack.js), byte by byte where the Rust
// side depends on it.
'use strict';

const test = require('node:test');
const assert = require('node:assert/strict');
const { encode, decode, Ext, DecodeError, MAX_DEPTH } = require('../lib/msgpack');

const hex = (value) => encode(value).toString('hex');
const bytes = (h) => Buffer.from(h.replace(/ /g, ''), 'hex');

test('integers are written in the smallest width', () => {
  assert.equal(hex(0), '00');
  assert.equal(hex(127), '7f');
  assert.equal(hex(128), 'cc80');
  assert.equal(hex(256), 'cd0100');
  assert.equal(hex(65536), 'ce00010000');
  assert.equal(hex(-1), 'ff');
  assert.equal(hex(-32), 'e0');
  assert.equal(hex(-33), 'd0df');
  assert.equal(hex(-129), 'd1ff7f');
  assert.equal(hex(-32769), 'd2ffff7fff');
});

test('an integer of 2^32 or more is an integer, never a float', () => {
  assert.equal(hex(2 ** 32), 'cf0000000100000000');
  assert.equal(hex(2 ** 53), 'cf0020000000000000');
  assert.equal(hex(-(2 ** 31) - 1), 'd3ffffffff7fffffff');
  // The largest doubles below 2^64 are exact integers too.
  assert.equal(hex(2 ** 63), 'cf8000000000000000');
});

test('fractions, -0, NaN, infinities and integers beyond 64 bits are float64', () => {
  assert.equal(hex(1.5), 'cb3ff8000000000000');
  assert.equal(hex(-0), 'cb8000000000000000');
  assert.equal(hex(2 ** 64), 'cb43f0000000000000');
  assert.equal(hex(Infinity), 'cb7ff0000000000000');
  assert.ok(Number.isNaN(decode(encode(NaN))));
  assert.ok(Object.is(decode(encode(-0)), -0));
});

test('BigInt is int64 or uint64, and out of range is a RangeError', () => {
  assert.equal(hex(5n), 'cf0000000000000005');
  assert.equal(hex(-5n), 'd3fffffffffffffffb');
  assert.equal(hex((1n << 64n) - 1n), 'cfffffffffffffffff');
  assert.throws(() => encode(1n << 64n), RangeError);
  assert.throws(() => encode(-(1n << 63n) - 1n), RangeError);
});

test('64-bit integers decode exactly: numbers within 2^53, BigInt beyond', () => {
  assert.equal(decode(bytes('cf001fffffffffffff')), Number.MAX_SAFE_INTEGER);
  assert.equal(decode(bytes('cf0020000000000001')), 2n ** 53n + 1n);
  assert.equal(decode(bytes('cfffffffffffffffff')), 2n ** 64n - 1n);
  assert.equal(decode(bytes('d38000000000000000')), -(2n ** 63n));
  assert.equal(decode(bytes('d3ffe0000000000001')), -(2 ** 53) + 1);
  for (const n of [2n ** 53n + 1n, 2n ** 64n - 1n, -(2n ** 63n)]) assert.equal(decode(encode(n)), n);
});

test('strings, bytes, nil and booleans', () => {
  assert.equal(hex('hi'), 'a26869');
  assert.equal(hex('x'.repeat(32)), `d920${'78'.repeat(32)}`);
  assert.equal(hex('é'.repeat(200)).slice(0, 6), 'da0190');
  assert.equal(decode(encode('héllo ✓ 🦀')), 'héllo ✓ 🦀');
  assert.equal(hex(Buffer.from([1, 2])), 'c4020102');
  assert.equal(hex(new Uint8Array([3])), 'c40103');
  assert.equal(hex(new Uint16Array([1]).buffer), 'c4020100');
  assert.equal(hex(null), 'c0');
  assert.equal(hex(undefined), 'c0');
  assert.equal(hex(true), 'c3');
  assert.equal(hex(false), 'c2');
  const bin = decode(bytes('c403010203'));
  assert.ok(Buffer.isBuffer(bin));
  assert.deepEqual([...bin], [1, 2, 3]);
});

test('objects and Maps are maps; maps decode to objects when every key is a string', () => {
  assert.equal(hex({ a: 1 }), '81a16101');
  assert.equal(hex(new Map([[1, 'x']])), '8101a178');
  assert.deepEqual(decode(encode({ a: 1, b: [true, null] })), { a: 1, b: [true, null] });
  const mixed = decode(encode(new Map([[1, 'one'], ['two', 2]])));
  assert.ok(mixed instanceof Map);
  assert.equal(mixed.get(1), 'one');
  assert.equal(mixed.get('two'), 2);
  // A string-keyed Map comes back as an object: the wire cannot tell them apart.
  assert.deepEqual(decode(encode(new Map([['k', 1]]))), { k: 1 });
});

test('a "__proto__" key is plain data, never the prototype', () => {
  const value = decode(bytes('81a95f5f70726f746f5f5f81a178c3'));
  assert.equal(Object.getPrototypeOf(value), Object.prototype);
  assert.deepEqual(Object.keys(value), ['__proto__']);
  assert.deepEqual(Object.getOwnPropertyDescriptor(value, '__proto__').value, { x: true });
  assert.equal(value.x, undefined);
  assert.equal(Object.prototype.x, undefined);
});

test('what structured clone refuses cannot be sent', () => {
  for (const value of [() => 1, Symbol('s'), new Date(), /x/, new Set(), Promise.resolve(), new Error('e')]) {
    assert.throws(() => encode({ value }), (e) => e.name === 'DataCloneError', String(value));
  }
  const { EventEmitter } = require('events');
  assert.throws(() => encode([new EventEmitter()]), (e) => e.name === 'DataCloneError');
});

test('nesting is held to the Rust limit, and a cycle is an error, not a crash', () => {
  let ok = null;
  for (let i = 0; i < MAX_DEPTH; i += 1) ok = [ok];
  assert.doesNotThrow(() => decode(encode(ok)));
  assert.throws(() => encode([ok]), RangeError);
  const cyclic = {};
  cyclic.self = cyclic;
  assert.throws(() => encode(cyclic), RangeError);
  const deep = Buffer.alloc(MAX_DEPTH + 2, 0x91);
  deep[deep.length - 1] = 0xc0;
  assert.throws(() => decode(deep), DecodeError);
});

test('hostile payloads are refused cheaply', () => {
  // An array announcing 2^32 - 1 elements in a few bytes.
  assert.throws(() => decode(bytes('dd ffffffff c0')), DecodeError);
  assert.throws(() => decode(bytes('df ffffffff')), DecodeError);
  assert.throws(() => decode(bytes('db ffffffff')), DecodeError);
  assert.throws(() => decode(bytes('c1')), DecodeError);
  assert.throws(() => decode(bytes('a2 ff fe')), DecodeError);
  assert.throws(() => decode(bytes('01 02')), DecodeError);
  assert.throws(() => decode(bytes('')), DecodeError);
});

test('ext values pass through', () => {
  const ext = decode(encode(new Ext(5, Buffer.from([1, 2, 3]))));
  assert.ok(ext instanceof Ext);
  assert.equal(ext.type, 5);
  assert.deepEqual([...ext.data], [1, 2, 3]);
  assert.equal(hex(new Ext(-1, Buffer.alloc(4))), 'd6ff00000000');
});

test('what rmp-serde writes for a struct decodes (the PROTOCOL.md example)', () => {
  // {"seq": 1, "body": "hi"} as rmp-serde's write_named writes it.
  assert.deepEqual(decode(bytes('82a3736571 01 a4626f6479 a26869')), { seq: 1, body: 'hi' });
});
