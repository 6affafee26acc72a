// A pool worker in JS (`utility-process/pool`), for a Rust `Pool<Job, u64>`. Modes (argv[2]):
//
//   jobs       {Double: n} -> 2n; "Crash" -> process.exit(3) at once; {Fail: words} -> throws
//              Error(words); {Sleep: ms} -> 0 after ms (an awaited timer: tasks overlap);
//              {Spin: ms} -> computes until cancelled, then throws ctx.signal.reason.
//   init-fail  the initializer rejects: the pool hears StartError::Init.
'use strict';

const { setTimeout: sleep } = require('timers/promises');
const { serve } = require('utility-process/pool');

const mode = process.argv[2] || 'jobs';

async function handler(job, ctx) {
  if (job === 'Crash') process.exit(3);
  const [[name, arg]] = Object.entries(job);
  switch (name) {
    case 'Double':
      return arg * 2;
    case 'Fail':
      throw new Error(arg);
    case 'Sleep':
      await sleep(arg, undefined, { signal: ctx.signal });
      return 0;
    default:
      throw new TypeError(`unknown job ${name}`);
  }
}

const init =
  mode === 'init-fail'
    ? async () => {
        throw new Error('no model file');
      }
    : undefined;

serve(handler, { init }).catch((error) => {
  console.error(error.message);
  process.exitCode = 1;
});
