// An Electron utility-process worker, unchanged: answers every message with its data.
process.parentPort.on('message', (e) => {
  process.parentPort.postMessage(e.data);
});
