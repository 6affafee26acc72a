// The Node.js peer of the utility-process benchmark (benches/src/peers.rs runs it).
//
// What an Electron app's own code uses to run work in another process is
// `child_process.fork`: a Node parent, a Node child, and `send`/'message' on the IPC channel
// Node sets up between them (a Unix socket, messages serialized as JSON, one per line). To
// measure that honestly both ends must be Node, so this one script plays both roles:
//
//   node child.js driver MODE SAMPLES ITERS   the measuring parent; prints a JSON array of
//                                             SAMPLES numbers on stdout
//   node child.js child ROLE                  the forked child (the driver starts it)
//
// Modes (each runs one unrecorded warm-up sample first):
//
//   rtt     seconds per round trip: send a 64-character string, wait for the child's echo,
//           ITERS times per sample, each send made from the previous reply's callback
//   stream  messages per second: send an order {n: ITERS}, then ITERS 64-character strings
//           as fast as `send` accepts them; the child counts them and answers once it has
//           all of them; timed from the order to the answer
//   fork    seconds from `fork()` to the child's first message (it sends one as soon as it
//           runs), averaged over ITERS forks per sample; each child is killed, and its exit
//           awaited, before the next
//
// Children stay tiny, and end when the parent disconnects.
'use strict';

const { fork } = require('child_process');

const PAYLOAD = 'x'.repeat(64);

function child(role) {
  process.on('disconnect', () => process.exit(0));
  if (role === 'echo') {
    process.on('message', (message) => process.send(message));
  } else if (role === 'sink') {
    let want = -1;
    let got = 0;
    let bytes = 0;
    process.on('message', (message) => {
      if (want < 0) {
        want = message.n;
        got = 0;
        bytes = 0;
      } else {
        got += 1;
        bytes += message.length;
      }
      if (want >= 0 && got === want) {
        process.send({ bytes });
        want = -1;
      }
    });
  } else if (role === 'hello') {
    process.send('hello');
    process.on('message', () => {});
  } else {
    console.error(`child.js: unknown child role ${role}`);
    process.exit(2);
  }
}

function seconds(since) {
  return Number(process.hrtime.bigint() - since) / 1e9;
}

function once(emitter, event) {
  return new Promise((resolve) => emitter.once(event, resolve));
}

async function rtt(samples, iters) {
  const worker = fork(__filename, ['child', 'echo']);
  const round = () =>
    new Promise((resolve, reject) => {
      let left = iters;
      const started = process.hrtime.bigint();
      const onMessage = (message) => {
        if (message.length !== PAYLOAD.length) {
          worker.off('message', onMessage);
          reject(new Error('short echo'));
          return;
        }
        left -= 1;
        if (left === 0) {
          worker.off('message', onMessage);
          resolve(seconds(started) / iters);
        } else {
          worker.send(PAYLOAD);
        }
      };
      worker.on('message', onMessage);
      worker.send(PAYLOAD);
    });
  const out = [];
  await round();
  for (let i = 0; i < samples; i += 1) out.push(await round());
  worker.disconnect();
  await once(worker, 'exit');
  return out;
}

async function stream(samples, iters) {
  const worker = fork(__filename, ['child', 'sink']);
  const round = async () => {
    const started = process.hrtime.bigint();
    const answer = once(worker, 'message');
    worker.send({ n: iters });
    for (let i = 0; i < iters; i += 1) worker.send(PAYLOAD);
    const { bytes } = await answer;
    const elapsed = seconds(started);
    if (bytes !== iters * PAYLOAD.length) throw new Error(`the child counted ${bytes} bytes`);
    return iters / elapsed;
  };
  const out = [];
  await round();
  for (let i = 0; i < samples; i += 1) out.push(await round());
  worker.disconnect();
  await once(worker, 'exit');
  return out;
}

async function forkOnce() {
  const started = process.hrtime.bigint();
  const worker = fork(__filename, ['child', 'hello']);
  await once(worker, 'message');
  const elapsed = seconds(started);
  const exited = once(worker, 'exit');
  worker.kill();
  await exited;
  return elapsed;
}

async function forks(samples, iters) {
  const out = [];
  await forkOnce();
  for (let i = 0; i < samples; i += 1) {
    let total = 0;
    for (let j = 0; j < iters; j += 1) total += await forkOnce();
    out.push(total / iters);
  }
  return out;
}

async function driver(mode, samples, iters) {
  const modes = { rtt, stream, fork: forks };
  if (!modes[mode] || !(samples > 0) || !(iters > 0)) {
    console.error('usage: node child.js driver rtt|stream|fork SAMPLES ITERS');
    process.exit(2);
  }
  const out = await modes[mode](samples, iters);
  process.stdout.write(`${JSON.stringify(out)}\n`);
}

const [role, ...rest] = process.argv.slice(2);
if (role === 'child') {
  child(rest[0]);
} else if (role === 'driver') {
  driver(rest[0], Number(rest[1]), Number(rest[2])).catch((error) => {
    console.error(error);
    process.exit(1);
  });
} else {
  console.error('usage: node child.js driver MODE SAMPLES ITERS | node child.js child ROLE');
  process.exit(2);
}
