// Where an uncaught exception is reported to have happened (lib/worker.js), and the
// bootstrap outside a utility process.
'use strict';

const test = require('node:test');
const assert = require('node:assert/strict');
const path = require('path');
const { execFileSync } = require('child_process');
const { describe, location } = require('../lib/worker');

test('the location is the first frame in a file of the program', () => {
  const stack = [
    'Error: boom',
    '    at JSON.parse (<anonymous>)',
    '    at node:internal/whatever:1:2',
    '    at handler (/srv/app/worker.js:12:7)',
    '    at /srv/app/other.js:1:1',
  ].join('\n');
  assert.deepEqual(location(stack), { file: '/srv/app/worker.js', line: 12, column: 7 });
  assert.deepEqual(location('    at file:///srv/app/w.mjs:3:9'), { file: '/srv/app/w.mjs', line: 3, column: 9 });
  assert.deepEqual(location(undefined), { file: '<unknown>', line: 0, column: 0 });
});

test('the message names the error and says when it was a rejection', () => {
  const error = new TypeError('nope');
  assert.equal(describe(error, 'uncaughtException').message, 'TypeError: nope');
  assert.equal(describe(error, 'unhandledRejection').message, 'Unhandled promise rejection: TypeError: nope');
  assert.equal(describe('text', 'uncaughtException').message, 'Uncaught text');
  assert.equal(describe({ a: 1 }, 'uncaughtException').message, 'Uncaught {"a":1}');
  assert.equal(describe(error).file, __filename);
});

test('outside a utility process the bootstrap does nothing', () => {
  const bootstrap = path.join(__dirname, '..', 'lib', 'bootstrap.cjs');
  const env = { ...process.env };
  delete env.UTILITY_PROCESS_PORT_FD;
  const out = execFileSync(process.execPath, ['--require', bootstrap, '-e', 'console.log(typeof process.parentPort)'], { env });
  assert.equal(out.toString().trim(), 'undefined');
});
