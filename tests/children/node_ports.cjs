// An Electron worker that uses message ports, as the parent's messages ask:
//   { cmd: 'echo-port' }  + a port: says 'hello from js' on it, then echoes what arrives on it,
//                          and tells the parent 'closed' when its other end goes away
//   { cmd: 'make-port' }  makes a MessageChannelMain, sends port2 to the parent, and echoes on
//                          port1
//   { cmd: 'ping', count } + a port: posts 0..count on it, each after the previous echo, then
//                          tells the parent { pinged: count }
//   { cmd: 'forward' }    + [link, ...ports]: sends the other ports over the link
//   { cmd: 'buffers' }    + shared buffers: answers [{ length, sum }] for each, then writes
//                          0xff into the first byte of each (read-only ones are copies)
const { MessageChannelMain } = require('electron');

function echoOn(port, greet) {
  port.on('message', (e) => port.postMessage(e.data, e.ports));
  port.on('close', () => process.parentPort.postMessage('closed'));
  port.start();
  if (greet) port.postMessage('hello from js');
}

process.parentPort.on('message', (e) => {
  const { cmd } = e.data;
  if (cmd === 'echo-port') {
    echoOn(e.ports[0], true);
  } else if (cmd === 'make-port') {
    const { port1, port2 } = new MessageChannelMain();
    echoOn(port1, false);
    process.parentPort.postMessage('your port', [port2]);
  } else if (cmd === 'ping') {
    const [port] = e.ports;
    let next = 0;
    port.on('message', (answer) => {
      if (answer.data !== next) throw new Error(`expected ${next}, got ${answer.data}`);
      next += 1;
      if (next === e.data.count) {
        process.parentPort.postMessage({ pinged: next });
        port.close();
      } else {
        port.postMessage(next);
      }
    });
    port.start();
    port.postMessage(0);
  } else if (cmd === 'forward') {
    const [link, ...ports] = e.ports;
    link.postMessage('forwarded', ports);
    link.close();
  } else if (cmd === 'buffers') {
    const buffers = e.buffers || [];
    process.parentPort.postMessage(
      buffers.map((b) => ({ length: b.length, sum: b.reduce((acc, x) => acc + x, 0) })),
    );
    for (const b of buffers) b[0] = 0xff;
  } else {
    throw new Error(`unknown command ${cmd}`);
  }
});
