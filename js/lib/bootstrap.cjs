// Preloaded into a JS worker forked by a Rust utility-process parent:
//
//   node --require /abs/path/js/lib/bootstrap.cjs /abs/path/worker.js args...
//
// It connects to the parent port (descriptor 3) before the worker's own code runs, so the
// worker finds `process.parentPort` as it would in Electron, whether it is CommonJS or an ES
// module, and `require('electron')` gives it MessageChannelMain. Outside a utility process it
// does nothing.
'use strict';

const Module = require('module');
const worker = require('./worker');

if (worker.isUtilityProcess() && !process.parentPort) {
  worker.install();
  // As in Electron's utility process, `electron` is built in.
  const shim = require.resolve('./electron.js');
  const resolve = Module._resolveFilename;
  Module._resolveFilename = function resolveElectron(request, ...rest) {
    return request === 'electron' ? shim : resolve.call(this, request, ...rest);
  };
}
