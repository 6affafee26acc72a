// A supervised JS child (`utility-process/supervisor`): attaches, says ready, then answers a
// number with number + 1; "crash" exits with code 3; "block" blocks node's event loop for
// good (its heartbeats then go unanswered). The probe fails while `unhealthy` is set ("sick").
'use strict';

const { attach } = require('utility-process/supervisor');

async function main() {
  let unhealthy = false;
  const supervised = await attach({
    probe: () => {
      if (unhealthy) throw new Error('told to be sick');
    },
  });
  supervised.ready();
  process.parentPort.on('message', ({ data }) => {
    if (data === 'crash') process.exit(3);
    if (data === 'block') for (;;);
    if (data === 'sick') {
      unhealthy = true;
      return;
    }
    process.parentPort.postMessage({ value: data + 1, restarts: supervised.restarts });
  });
}

main();
