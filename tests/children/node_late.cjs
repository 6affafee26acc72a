// Says it has no listener yet, then adds one only after a while: what the parent posted in
// between must arrive then, in order. Answers each message with its data; `once` is checked
// on the way: the first message is seen by a `once` listener, and only once.
let onceCalls = 0;
process.parentPort.postMessage('no listener yet');
setTimeout(() => {
  process.parentPort.once('message', () => {
    onceCalls += 1;
  });
  process.parentPort.on('message', (e) => {
    process.parentPort.postMessage({ data: e.data, onceCalls });
  });
}, 300);
