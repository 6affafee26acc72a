// MessagePack for messages between a JS worker and a Rust process (docs/PROTOCOL.md).
//
// Our own small codec rather than a library's, because the mapping must match the Rust side
// exactly and most libraries' defaults do not (msgpackr writes integers of 2^32 and more as
// floats, which Rust refuses for integer fields; several turn maps into Maps or objects
// depending on options; 64-bit integers lose precision as numbers).
//
// Encoding (JS -> MessagePack)
//   number, an integer in [-2^63, 2^64)   int, smallest width (-0 stays a float64)
//   any other number (fractions, NaN, ±Infinity, larger integers)   float64
//   bigint                                int64 (negative) or uint64; outside that range: RangeError
//   string                                str
//   Buffer, Uint8Array                    bin (any other ArrayBuffer view, or an ArrayBuffer: its bytes as bin)
//   Array                                 array (holes as nil)
//   Map                                   map (keys encoded like values)
//   plain object, other objects           map of own enumerable string keys
//   null, undefined                       nil
//   boolean                               bool
//   Ext                                   ext (type and bytes as given)
//   function, symbol, Date, RegExp, Set, Error, Promise, WeakMap, an EventEmitter (a port!)
//                                         TypeError named DataCloneError
//   nesting deeper than MAX_DEPTH (a cycle included)        RangeError
//
// Decoding (MessagePack -> JS)
//   int within ±(2^53 − 1)    number;   beyond   bigint
//   float32, float64          number
//   str                       string (invalid UTF-8 is an error)
//   bin                       Buffer (a copy, not a view of the message)
//   array                     Array
//   map                       plain object when every key is a string, otherwise Map
//   nil                       null
//   bool                      boolean
//   ext                       Ext { type, data: Buffer }
// A payload must be exactly one value, nest at most MAX_DEPTH levels, and never announce more
// than it holds: anything else throws DecodeError.
'use strict';

const { EventEmitter } = require('events');

/** How deeply arrays and maps may nest (the Rust codec's limit). */
const MAX_DEPTH = 256;

const TWO_32 = 2 ** 32;
const TWO_63 = 2 ** 63;
const TWO_64 = 2 ** 64;
const MAX_I64 = (1n << 63n) - 1n;
const MIN_I64 = -(1n << 63n);
const MAX_U64 = (1n << 64n) - 1n;
const SAFE = BigInt(Number.MAX_SAFE_INTEGER);

/** A MessagePack ext value: an application-defined type byte and its bytes. */
class Ext {
  constructor(type, data) {
    if (!Number.isInteger(type) || type < -128 || type > 127) {
      throw new RangeError(`an ext type is an integer from -128 to 127, not ${type}`);
    }
    this.type = type;
    this.data = Buffer.from(data);
  }
}

/** The payload is not exactly one MessagePack value within the limits. */
class DecodeError extends Error {
  constructor(message) {
    super(message);
    this.name = 'DecodeError';
  }
}

const textDecoder = new TextDecoder('utf-8', { fatal: true });

// ---------------------------------------------------------------------------------------
// Encoding

class Writer {
  constructor() {
    this.buf = Buffer.allocUnsafe(256);
    this.pos = 0;
  }

  ensure(n) {
    if (this.pos + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.pos + n) size *= 2;
    const grown = Buffer.allocUnsafe(size);
    this.buf.copy(grown, 0, 0, this.pos);
    this.buf = grown;
  }

  u8(v) {
    this.ensure(1);
    this.buf[this.pos++] = v;
  }

  head(marker, size, v) {
    this.ensure(1 + size);
    this.buf[this.pos] = marker;
    if (size === 1) this.buf.writeUInt8(v, this.pos + 1);
    else if (size === 2) this.buf.writeUInt16BE(v, this.pos + 1);
    else if (size === 4) this.buf.writeUInt32BE(v, this.pos + 1);
    this.pos += 1 + size;
  }

  bytes(src) {
    this.ensure(src.length);
    this.buf.set(src, this.pos);
    this.pos += src.length;
  }

  result() {
    return this.buf.subarray(0, this.pos);
  }
}

function encodeInt(w, n) {
  if (n >= 0) {
    if (n < 128) w.u8(n);
    else if (n < 256) w.head(0xcc, 1, n);
    else if (n < 65536) w.head(0xcd, 2, n);
    else if (n < TWO_32) w.head(0xce, 4, n);
    else encodeBig(w, BigInt(n), 0xcf);
  } else if (n >= -32) {
    w.u8(n & 0xff);
  } else if (n >= -128) {
    w.ensure(2);
    w.buf[w.pos] = 0xd0;
    w.buf.writeInt8(n, w.pos + 1);
    w.pos += 2;
  } else if (n >= -32768) {
    w.ensure(3);
    w.buf[w.pos] = 0xd1;
    w.buf.writeInt16BE(n, w.pos + 1);
    w.pos += 3;
  } else if (n >= -2147483648) {
    w.ensure(5);
    w.buf[w.pos] = 0xd2;
    w.buf.writeInt32BE(n, w.pos + 1);
    w.pos += 5;
  } else {
    encodeBig(w, BigInt(n), 0xd3);
  }
}

function encodeBig(w, n, marker) {
  w.ensure(9);
  w.buf[w.pos] = marker;
  if (marker === 0xcf) w.buf.writeBigUInt64BE(n, w.pos + 1);
  else w.buf.writeBigInt64BE(n, w.pos + 1);
  w.pos += 9;
}

function encodeFloat(w, n) {
  w.ensure(9);
  w.buf[w.pos] = 0xcb;
  w.buf.writeDoubleBE(n, w.pos + 1);
  w.pos += 9;
}

function encodeString(w, s) {
  // UTF-8 takes at most 3 bytes per UTF-16 unit: reserve the header that bound needs, write
  // the bytes, then move them back if the real length needs a shorter header.
  const max = s.length * 3;
  const reserved = headerSize(max);
  w.ensure(reserved + max);
  const start = w.pos + reserved;
  const len = w.buf.write(s, start, 'utf8');
  const size = headerSize(len);
  if (size < reserved) w.buf.copyWithin(w.pos + size, start, start + len);
  if (size === 1) {
    w.buf[w.pos] = 0xa0 | len;
  } else if (size === 2) {
    w.buf[w.pos] = 0xd9;
    w.buf[w.pos + 1] = len;
  } else if (size === 3) {
    w.buf[w.pos] = 0xda;
    w.buf.writeUInt16BE(len, w.pos + 1);
  } else {
    w.buf[w.pos] = 0xdb;
    w.buf.writeUInt32BE(len, w.pos + 1);
  }
  w.pos += size + len;
}

function headerSize(len) {
  return len < 32 ? 1 : len < 256 ? 2 : len < 65536 ? 3 : 5;
}

function encodeBin(w, bytes) {
  const n = bytes.length;
  if (n < 256) w.head(0xc4, 1, n);
  else if (n < 65536) w.head(0xc5, 2, n);
  else w.head(0xc6, 4, n);
  w.bytes(bytes);
}

function encodeLength(w, n, fix, m16, m32) {
  if (n < 16) w.u8(fix | n);
  else if (n < 65536) w.head(m16, 2, n);
  else w.head(m32, 4, n);
}

function uncloneable(what) {
  const error = new TypeError(`${what} could not be cloned.`);
  error.name = 'DataCloneError';
  return error;
}

function encodeValue(w, v, depth) {
  switch (typeof v) {
    case 'number':
      if (Number.isInteger(v) && v >= -TWO_63 && v < TWO_64 && !Object.is(v, -0)) encodeInt(w, v);
      else encodeFloat(w, v);
      return;
    case 'string':
      encodeString(w, v);
      return;
    case 'boolean':
      w.u8(v ? 0xc3 : 0xc2);
      return;
    case 'undefined':
      w.u8(0xc0);
      return;
    case 'bigint':
      if (v >= 0n) {
        if (v > MAX_U64) throw new RangeError(`${v} does not fit an unsigned 64-bit integer`);
        encodeBig(w, v, 0xcf);
      } else {
        if (v < MIN_I64) throw new RangeError(`${v} does not fit a signed 64-bit integer`);
        encodeBig(w, v, 0xd3);
      }
      return;
    case 'object':
      break;
    default:
      throw uncloneable(typeof v === 'function' ? `${v.name || 'function'}()` : String(v));
  }
  if (v === null) {
    w.u8(0xc0);
    return;
  }
  if (depth >= MAX_DEPTH) {
    throw new RangeError(`the message nests deeper than ${MAX_DEPTH} levels (or is cyclic)`);
  }
  if (Array.isArray(v)) {
    encodeLength(w, v.length, 0x90, 0xdc, 0xdd);
    for (let i = 0; i < v.length; i += 1) encodeValue(w, v[i], depth + 1);
    return;
  }
  if (v instanceof Uint8Array) {
    encodeBin(w, v);
    return;
  }
  if (ArrayBuffer.isView(v)) {
    encodeBin(w, new Uint8Array(v.buffer, v.byteOffset, v.byteLength));
    return;
  }
  if (v instanceof ArrayBuffer || (typeof SharedArrayBuffer !== 'undefined' && v instanceof SharedArrayBuffer)) {
    encodeBin(w, new Uint8Array(v));
    return;
  }
  if (v instanceof Map) {
    encodeLength(w, v.size, 0x80, 0xde, 0xdf);
    for (const [key, value] of v) {
      encodeValue(w, key, depth + 1);
      encodeValue(w, value, depth + 1);
    }
    return;
  }
  if (v instanceof Ext) {
    encodeExt(w, v);
    return;
  }
  if (
    v instanceof Date || v instanceof RegExp || v instanceof Promise || v instanceof WeakMap ||
    v instanceof WeakSet || v instanceof Set || v instanceof Error || v instanceof EventEmitter
  ) {
    throw uncloneable(`${Object.prototype.toString.call(v)} (${v.constructor.name})`);
  }
  const keys = Object.keys(v);
  encodeLength(w, keys.length, 0x80, 0xde, 0xdf);
  for (const key of keys) {
    encodeString(w, key);
    encodeValue(w, v[key], depth + 1);
  }
}

function encodeExt(w, ext) {
  const n = ext.data.length;
  const fixed = { 1: 0xd4, 2: 0xd5, 4: 0xd6, 8: 0xd7, 16: 0xd8 }[n];
  if (fixed) {
    w.u8(fixed);
  } else if (n < 256) {
    w.head(0xc7, 1, n);
  } else if (n < 65536) {
    w.head(0xc8, 2, n);
  } else {
    w.head(0xc9, 4, n);
  }
  w.ensure(1);
  w.buf.writeInt8(ext.type, w.pos);
  w.pos += 1;
  w.bytes(ext.data);
}

/** The MessagePack encoding of `value`, as a Buffer. */
function encode(value) {
  const w = new Writer();
  encodeValue(w, value, 0);
  return w.result();
}

// ---------------------------------------------------------------------------------------
// Decoding

class Reader {
  constructor(buf) {
    this.buf = buf;
    this.pos = 0;
  }

  need(n) {
    if (this.pos + n > this.buf.length) {
      throw new DecodeError(`the payload ends ${this.pos + n - this.buf.length} bytes short`);
    }
  }

  take(n) {
    this.need(n);
    const start = this.pos;
    this.pos += n;
    return start;
  }
}

function int64(r, signed) {
  const at = r.take(8);
  const big = signed ? r.buf.readBigInt64BE(at) : r.buf.readBigUInt64BE(at);
  return big <= SAFE && big >= -SAFE ? Number(big) : big;
}

function decodeStr(r, n) {
  const at = r.take(n);
  if (n < 64) {
    // Short strings: plain ASCII is common and cheap to check.
    let ascii = true;
    for (let i = at; i < at + n; i += 1) {
      if (r.buf[i] > 0x7f) {
        ascii = false;
        break;
      }
    }
    if (ascii) return r.buf.latin1Slice ? r.buf.latin1Slice(at, at + n) : r.buf.toString('latin1', at, at + n);
  }
  try {
    return textDecoder.decode(r.buf.subarray(at, at + n));
  } catch {
    throw new DecodeError('a string is not valid UTF-8');
  }
}

function decodeBin(r, n) {
  const at = r.take(n);
  return Buffer.from(r.buf.subarray(at, at + n));
}

function decodeArray(r, n, depth) {
  // Each element takes at least one byte: a length beyond the payload is refused before
  // anything is allocated for it.
  r.need(n);
  const out = new Array(n);
  for (let i = 0; i < n; i += 1) out[i] = decodeValue(r, depth + 1);
  return out;
}

function decodeMap(r, n, depth) {
  r.need(2 * n);
  const keys = new Array(n);
  const values = new Array(n);
  let strings = true;
  for (let i = 0; i < n; i += 1) {
    keys[i] = decodeValue(r, depth + 1);
    values[i] = decodeValue(r, depth + 1);
    if (typeof keys[i] !== 'string') strings = false;
  }
  if (!strings) {
    const map = new Map();
    for (let i = 0; i < n; i += 1) map.set(keys[i], values[i]);
    return map;
  }
  const out = {};
  for (let i = 0; i < n; i += 1) {
    if (keys[i] === '__proto__') {
      // A plain data property, never the prototype.
      Object.defineProperty(out, '__proto__', {
        value: values[i], writable: true, enumerable: true, configurable: true,
      });
    } else {
      out[keys[i]] = values[i];
    }
  }
  return out;
}

function decodeExt(r, n, depth) {
  if (depth >= MAX_DEPTH) throw new DecodeError(`the payload nests deeper than ${MAX_DEPTH} levels`);
  const type = r.buf.readInt8(r.take(1));
  return new Ext(type, decodeBin(r, n));
}

function decodeValue(r, depth) {
  const at = r.take(1);
  const b = r.buf[at];
  if (b < 0x80) return b;
  if (b >= 0xe0) return b - 0x100;
  if (b <= 0x8f || (b >= 0x90 && b <= 0x9f) || b === 0xdc || b === 0xdd || b === 0xde || b === 0xdf) {
    if (depth >= MAX_DEPTH) throw new DecodeError(`the payload nests deeper than ${MAX_DEPTH} levels`);
  }
  if (b <= 0x8f) return decodeMap(r, b & 0x0f, depth);
  if (b <= 0x9f) return decodeArray(r, b & 0x0f, depth);
  if (b <= 0xbf) return decodeStr(r, b & 0x1f);
  const buf = r.buf;
  switch (b) {
    case 0xc0: return null;
    case 0xc2: return false;
    case 0xc3: return true;
    case 0xc4: return decodeBin(r, buf[r.take(1)]);
    case 0xc5: return decodeBin(r, buf.readUInt16BE(r.take(2)));
    case 0xc6: return decodeBin(r, buf.readUInt32BE(r.take(4)));
    case 0xc7: return decodeExt(r, buf[r.take(1)], depth);
    case 0xc8: return decodeExt(r, buf.readUInt16BE(r.take(2)), depth);
    case 0xc9: return decodeExt(r, buf.readUInt32BE(r.take(4)), depth);
    case 0xca: return buf.readFloatBE(r.take(4));
    case 0xcb: return buf.readDoubleBE(r.take(8));
    case 0xcc: return buf[r.take(1)];
    case 0xcd: return buf.readUInt16BE(r.take(2));
    case 0xce: return buf.readUInt32BE(r.take(4));
    case 0xcf: return int64(r, false);
    case 0xd0: return buf.readInt8(r.take(1));
    case 0xd1: return buf.readInt16BE(r.take(2));
    case 0xd2: return buf.readInt32BE(r.take(4));
    case 0xd3: return int64(r, true);
    case 0xd4: return decodeExt(r, 1, depth);
    case 0xd5: return decodeExt(r, 2, depth);
    case 0xd6: return decodeExt(r, 4, depth);
    case 0xd7: return decodeExt(r, 8, depth);
    case 0xd8: return decodeExt(r, 16, depth);
    case 0xd9: return decodeStr(r, buf[r.take(1)]);
    case 0xda: return decodeStr(r, buf.readUInt16BE(r.take(2)));
    case 0xdb: return decodeStr(r, buf.readUInt32BE(r.take(4)));
    case 0xdc: return decodeArray(r, buf.readUInt16BE(r.take(2)), depth);
    case 0xdd: return decodeArray(r, buf.readUInt32BE(r.take(4)), depth);
    case 0xde: return decodeMap(r, buf.readUInt16BE(r.take(2)), depth);
    case 0xdf: return decodeMap(r, buf.readUInt32BE(r.take(4)), depth);
    default: throw new DecodeError(`0x${b.toString(16)} is not a MessagePack marker`);
  }
}

/** The one MessagePack value in `bytes` (a Buffer or Uint8Array); throws DecodeError. */
function decode(bytes) {
  const buf = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const r = new Reader(buf);
  const value = decodeValue(r, 0);
  if (r.pos !== buf.length) {
    throw new DecodeError(`${buf.length - r.pos} bytes follow the value`);
  }
  return value;
}

module.exports = { encode, decode, Ext, DecodeError, MAX_DEPTH };
