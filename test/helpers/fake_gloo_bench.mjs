#!/usr/bin/env node
// A stand-in for peers/gloo_bench.py in the bench CLI test: the same arguments and the same
// table format, with made-up times (2 ms per call plus 1 ms per MiB), so the test can check
// how `bench cpu` runs a peer, parses it and interleaves rounds without torch installed.
// Each run appends one line to $FAKE_PEER_LOG, if set.
import fs from 'node:fs';

const arg = (name, d) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : d;
};
const worlds = arg('worlds', '2').split(',').map(Number);
const sizes = arg('sizes', '4096').split(',').map(Number);
if (process.env.FAKE_PEER_LOG) fs.appendFileSync(process.env.FAKE_PEER_LOG, `run ${process.argv.slice(2).join(' ')}\n`);
const sz = (b) => (b >= 1 << 20 ? `${b >> 20}MiB` : `${b >> 10}KiB`);
console.log('# gloo_bench: torch 9.9.0 gloo (fake peer for tests), float32, 1.0 s per case, nproc=2');
console.log('n  op         size  iters  median_ms algbw_GB/s busbw_GB/s');
for (const n of worlds) {
  for (const op of ['all_reduce', 'broadcast', 'all_gather']) {
    for (const s of sizes) {
      const ms = 2 + s / (1 << 20);
      const algbw = s / (ms / 1e3) / 1e9;
      const f = { all_reduce: (2 * (n - 1)) / n, broadcast: 1, all_gather: (n - 1) / n }[op];
      console.log(`${n}  ${op.padEnd(10)} ${sz(s).padStart(7)} ${'5'.padStart(6)} ${ms.toFixed(3).padStart(11)} ${algbw.toFixed(3).padStart(10)} ${(algbw * f).toFixed(3).padStart(10)}`);
    }
  }
  console.log(`${n}  barrier          -      5       0.500          -          -`);
}
console.log('SUMMARY gloo_bench fake');
