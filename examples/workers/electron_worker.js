// An Electron utility-process worker, unchanged: it talks through process.parentPort.
// The parent hands it a port to a Python worker; it greets the Python worker through it
// and tells the parent what came back.
process.parentPort.on('message', (e) => {
  const [peer] = e.ports;
  if (!peer) {
    process.parentPort.postMessage({ echo: e.data });
    return;
  }
  peer.on('message', (reply) => {
    process.parentPort.postMessage(`the Python worker answered: ${reply.data}`);
    peer.close();
  });
  peer.start();
  peer.postMessage(`hello from Node ${process.version}`);
});
