// Loads the native addon (crates/node): from UTILITY_PROCESS_NODE_ADDON when set, otherwise
// from js/utility_process.node, which `npm run build` puts there.
'use strict';

const path = require('path');

const ENV_ADDON = 'UTILITY_PROCESS_NODE_ADDON';

function load() {
  const file = process.env[ENV_ADDON] || path.join(__dirname, '..', 'utility_process.node');
  const module = { exports: {} };
  try {
    // dlopen, not require: the addon may keep cargo's name (libutility_process_node.so).
    process.dlopen(module, path.resolve(file));
  } catch (error) {
    throw new Error(
      `utility-process: cannot load the native addon ${file}: ${error.message}\n` +
        'Build it with `npm run build` in js/ (cargo build -p utility-process-node --release), ' +
        `or set ${ENV_ADDON} to the built libutility_process_node.so.`,
    );
  }
  return module.exports;
}

module.exports = { load, ENV_ADDON };
