// The `utility-process` package: Electron's utility-process worker API for JS workers
// forked by a Rust parent. Workers normally need none of this: `process.parentPort` is
// installed by lib/bootstrap.cjs. This module adds what Electron's `electron` module gives a
// utility process: MessageChannelMain (and the classes, for instanceof checks).
'use strict';

const worker = require('./worker');
const { MessagePortMain, ParentPort, channelClass } = require('./ports');
const msgpack = require('./msgpack');

module.exports = {
  MessageChannelMain: channelClass(() => worker.connect()),
  MessagePortMain,
  ParentPort,
  /** The parent port, connecting first if the bootstrap did not (throws outside a utility process). */
  get parentPort() {
    return process.parentPort || worker.install();
  },
  msgpack,
};
