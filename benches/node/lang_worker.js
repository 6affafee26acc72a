// The Node.js child of the benchmark's `lang.node.*` rows (benches/src/lang.rs runs it): a
// worker written as for Electron's utilityProcess, talking through `process.parentPort`,
// forked by the Rust parent with `fork("lang_worker.js", [ROLE])` (node, the npm package's
// bootstrap and its addon).
//
//   echo   posts every message's data back (a 64-character string: decoded, re-encoded)
//   sink   reads an order (N), counts the next N messages (64-character strings) and their
//          characters, and posts the total once it has all N; again for the next order
//
// The worker lives while its 'message' listener does; the parent ends it with kill().
'use strict';

const port = process.parentPort;
const role = process.argv[2];

if (role === 'echo') {
  port.on('message', (e) => port.postMessage(e.data));
} else if (role === 'sink') {
  let want = -1;
  let got = 0;
  let bytes = 0;
  port.on('message', (e) => {
    if (want < 0) {
      want = Number(e.data);
      got = 0;
      bytes = 0;
    } else {
      got += 1;
      bytes += e.data.length;
    }
    if (want >= 0 && got === want) {
      port.postMessage(bytes);
      want = -1;
    }
  });
} else {
  console.error(`lang_worker.js: unknown role ${role}`);
  process.exit(2);
}
