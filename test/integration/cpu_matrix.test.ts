/**
 * Every collective × dtype × reduce op × element count (0, 1, 7, 1000 and 3000, which needs
 * many ring segments at the 256-byte test chunk size), against results each rank computes
 * locally, at world sizes 1, 2, 3, 4, 5 and 8 — one process per rank, one run per world size.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnRanks } from '../helpers/ranks.js';

interface Result { rank: number; checks: number; failures: string[] }

async function matrix(n: number, args: string[] = []): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cpu-matrix-'));
  try {
    const res = await spawnRanks<Result>(n, 'test/integration/workers/cpu_worker', { args: ['matrix', dir, ...args], timeoutMs: 80_000 });
    assert.equal(res.flatMap((r) => r.failures), []);
    assert.ok(res.every((r) => r.checks > 0), 'every rank checked results');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

for (const n of [1, 2, 3, 4, 5]) {
  test(`world size ${n}: all collectives × 14 dtypes × 5 ops × 5 sizes match the local reference`, () => matrix(n));
}

// Eight processes on a small machine: every dtype and op still, fewer sizes (7 and the
// many-segment case cover both algorithm families).
test('world size 8: all collectives × 14 dtypes × 5 ops, sizes 0, 7 and 3000', () => matrix(8, ['', '0,7,3000']));

test.run();
