// Ends as argv[2] says, once the parent posts anything:
//   throw     an uncaught exception
//   reject    an unhandled promise rejection
//   exit3     process.exit(3), after posting 'bye'
//   garbage   writes bytes that are no frame to descriptor 3 (the parent port), then waits
//   stdio     prints a line on stdout and one on stderr, then exits normally
//   port      starts the port that came with the message, and throws on its first message
const fs = require('fs');

const mode = process.argv[2];
const onMessage = (e) => {
  switch (mode) {
    case 'port':
      e.ports[0].on('message', () => {
        throw new Error('boom on a port'); // PORT THROW HERE
      });
      e.ports[0].start();
      break;
    case 'throw':
      throw new TypeError('boom from js'); // TOP THROW HERE
    case 'reject':
      Promise.reject(new RangeError('rejected from js')); // REJECT HERE
      break;
    case 'exit3':
      process.parentPort.postMessage('bye');
      process.exit(3);
      break;
    case 'garbage':
      fs.writeSync(3, Buffer.from('\xff\xff\xff\x7fthis is not a frame'));
      setInterval(() => {}, 1000);
      break;
    case 'stdio':
      console.log('hello on stdout');
      console.error('hello on stderr');
      process.parentPort.off('message', onMessage);
      break;
    default:
      throw new Error(`unknown mode ${mode}`);
  }
};
process.parentPort.on('message', onMessage);
