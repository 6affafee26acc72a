// The piscina peer of the pool benchmark (benches/src/pool.rs runs it).
//
// piscina is the pool Node programs reach for: a pool of worker *threads* (not processes)
// that runs a module's exported function. This script is both the measuring parent and the
// worker module:
//
//   node pool.js driver dispatch SAMPLES ITERS   prints a JSON array of SAMPLES numbers:
//                                                seconds per task, for ITERS tasks per sample
//                                                run one after the other on a one-thread pool
//
// A task is the trivial one every pool row runs: `n => n + 1`. One unrecorded warm-up sample
// comes first. piscina comes from `npm install` in this directory (package.json); the
// benchmark runs that only when node_modules is missing.
'use strict';

const { isMainThread } = require('worker_threads');

if (!isMainThread) {
  module.exports = (n) => n + 1;
} else if (require.main === module) {
  main().catch((error) => {
    console.error(error);
    process.exit(1);
  });
}

async function main() {
  const [role, mode, samplesArg, itersArg] = process.argv.slice(2);
  if (role !== 'driver' || mode !== 'dispatch') {
    throw new Error('usage: node pool.js driver dispatch SAMPLES ITERS');
  }
  const samples = Number(samplesArg);
  const iters = Number(itersArg);
  const Piscina = require('piscina');
  const pool = new Piscina({ filename: __filename, minThreads: 1, maxThreads: 1 });
  const out = [];
  for (let round = 0; round <= samples; round++) {
    const started = process.hrtime.bigint();
    for (let i = 0; i < iters; i++) {
      const answer = await pool.run(i);
      if (answer !== i + 1) {
        throw new Error(`piscina answered ${answer} to ${i}`);
      }
    }
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    if (round > 0) {
      out.push(seconds / iters);
    }
  }
  await pool.destroy();
  process.stdout.write(JSON.stringify(out) + '\n');
}
