// ES module face of lib/pool.js (one module instance: this only re-exports the CommonJS one).
import pool from './pool.js';

export const {
  serve,
  TaskContext,
  Cancelled,
  InitError,
  Kind,
  PROTOCOL,
  HEADER,
  TEXT_MAX,
  encodeFrame,
  decodeFrame,
  encodeText,
  describeError,
} = pool;
export default pool;
