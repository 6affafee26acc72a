// The same Electron worker as explicit CommonJS: answers every message with its data, tagged.
const kind = typeof require === 'undefined' ? 'esm' : 'cjs';
process.parentPort.on('message', (e) => {
  process.parentPort.postMessage({ kind, data: e.data });
});
