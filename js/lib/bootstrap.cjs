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
const path = require('path');
const worker = require('./worker');

if (worker.isUtilityProcess() && !process.parentPort) {
  worker.install();
  // As in Electron's utility process, `electron` is built in.
  const shim = require.resolve('./electron.js');
  const resolve = Module._resolveFilename;
  Module._resolveFilename = function resolveElectron(request, ...rest) {
    if (request === 'electron') return shim;
    try {
      return resolve.call(this, request, ...rest);
    } catch (error) {
      // A worker started with UTILITY_PROCESS_NODE_BOOTSTRAP may have no node_modules of its
      // own: `utility-process` (and its subpaths) is then the package that bootstrapped it.
      const own = error && error.code === 'MODULE_NOT_FOUND' ? ownExport(request) : null;
      if (own) return own;
      throw error;
    }
  };
}

/** The file of this package that `require(request)` names, if it names one. */
function ownExport(request) {
  const name = 'utility-process';
  if (request !== name && !request.startsWith(`${name}/`)) return null;
  const { exports } = require('../package.json');
  let target = exports[`.${request.slice(name.length)}`];
  if (target && typeof target === 'object') target = target.require || target.default;
  return typeof target === 'string' ? path.join(__dirname, '..', target) : null;
}
