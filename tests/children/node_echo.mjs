// The same Electron worker as an ES module: answers every message with its data, tagged.
import { setTimeout as sleep } from 'node:timers/promises';

await sleep(1);
const kind = typeof require === 'undefined' ? 'esm' : 'cjs';
process.parentPort.on('message', (e) => {
  process.parentPort.postMessage({ kind, data: e.data });
});
