/**
 * Large reductions between separate processes over TCP, checked bit for bit on every rank:
 *  - at the default tuning, the ring writes its forwarded segments (frames above 64 KiB)
 *    straight from the result buffer, so avg may divide only once those writes are done;
 *  - with smallBytes raised (a documented option), recursive doubling carries multi-MiB
 *    buffers, which it must copy before reducing into them while the write is pending.
 * Both bugs corrupt results silently and only at sizes and knobs the small tests never reach.
 */
import { test } from 'uvu';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnRanks } from '../helpers/ranks.js';
import { assertClean, type Outcome } from '../helpers/scenarios.js';

async function run(n: number, mode: string, arg: unknown): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cpu-large-'));
  try {
    const res = await spawnRanks<Outcome>(n, 'test/integration/workers/knob_worker', { args: [mode, dir, JSON.stringify(arg)], timeoutMs: 120_000 });
    assertClean(res, 1);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

test('3 ranks over TCP, one rank busy at times: 16 MiB avg and sum allReduce / reduceScatter, in place and not, are exact on every rank', () =>
  run(3, 'large', { transport: 'tcp', count: 1 << 22, stallMs: 20, rounds: 3 }));

for (const n of [3, 4]) {
  test(`${n} ranks over TCP, smallBytes 16 MiB: recursive doubling of 4 MiB buffers is exact on every rank`, () =>
    run(n, 'knobs', [{ name: `rd-${n}`, options: { transport: 'tcp', smallBytes: 16 << 20 }, counts: [1 << 20], ops: ['sum', 'avg', 'max'], reduceOnly: true }]));
}

test.run();
