// The worker side: connects to the parent port once, installs `process.parentPort`, and
// reports an uncaught exception or unhandled rejection to the parent as a Rust child reports
// a panic (a PANIC frame with the message and the place it was thrown), before node prints
// it and exits with code 1 as usual.
'use strict';

const { fileURLToPath } = require('url');
const { Hub, ParentPort } = require('./ports');

let hub = null;
let parentPort = null;

/** Whether this process was forked by a utility-process parent (descriptor 3 is its port). */
function isUtilityProcess() {
  return process.env.UTILITY_PROCESS_PORT_FD !== undefined;
}

/** Connects (once) and returns the hub; throws outside a utility process. */
function connect() {
  if (hub) return hub;
  const native = require('./native').load();
  const h = new Hub(native);
  const id = native.connect(h.deliver, h.deliverBatch);
  parentPort = new ParentPort(h, id);
  hub = h;
  process.on('uncaughtExceptionMonitor', (error, origin) => {
    const { message, file, line, column } = describe(error, origin);
    native.reportPanic(message, file, line, column);
  });
  return hub;
}

/** Installs `process.parentPort` (as Electron does), connecting first. */
function install() {
  connect();
  Object.defineProperty(process, 'parentPort', {
    value: parentPort,
    enumerable: false,
    configurable: false,
    writable: false,
  });
  return parentPort;
}

/** The message and source location of an uncaught `error`. */
function describe(error, origin) {
  let message;
  if (error instanceof Error) {
    message = `${error.name}: ${error.message}`;
  } else {
    try {
      message = `Uncaught ${typeof error === 'string' ? error : JSON.stringify(error) ?? String(error)}`;
    } catch {
      message = 'Uncaught exception';
    }
  }
  if (origin === 'unhandledRejection') message = `Unhandled promise rejection: ${message}`;
  const where = location(error instanceof Error ? error.stack : undefined);
  return { message, ...where };
}

const FRAME = /^\s*at (?:.*? \()?(.+?):(\d+):(\d+)\)?$/;

/** The first frame of `stack` in a file of the program (not node's own, not eval). */
function location(stack) {
  const frames = [];
  for (const line of String(stack || '').split('\n')) {
    const m = FRAME.exec(line);
    if (m) frames.push({ file: m[1], line: Number(m[2]), column: Number(m[3]) });
  }
  const found =
    frames.find((f) => !f.file.startsWith('node:') && !f.file.startsWith('<') && f.file !== 'native') ||
    frames[0];
  if (!found) return { file: '<unknown>', line: 0, column: 0 };
  if (found.file.startsWith('file://')) {
    try {
      found.file = fileURLToPath(found.file);
    } catch {
      // Keep the URL.
    }
  }
  return found;
}

module.exports = {
  isUtilityProcess,
  connect,
  install,
  describe,
  location,
  get parentPort() {
    return parentPort;
  },
};
