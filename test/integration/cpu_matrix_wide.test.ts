/**
 * The collective matrix (see cpu_matrix.test.ts) at world sizes 4, 5 and 8. Every collective,
 * dtype and op still runs; the sizes are fewer so that eight processes fit the time budget of a
 * 2-core machine: 0 and 7 elements (latency algorithms), and 1000 / 3000 elements (ring
 * paths, many segments) for a subset of dtypes.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnRanks } from '../helpers/ranks.js';

interface Result { rank: number; checks: number; failures: string[] }

async function matrix(n: number, args: string[] = []): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cpu-matrix-wide-'));
  try {
    const res = await spawnRanks<Result>(n, 'test/integration/workers/cpu_worker', { args: ['matrix', dir, ...args], timeoutMs: 80_000 });
    assert.equal(res.flatMap((r) => r.failures), []);
    assert.ok(res.every((r) => r.checks > 0), 'every rank checked results');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

test('world size 4: all collectives × 14 dtypes × 5 ops, sizes 0, 7, 1000 (+3000 for float32, bfloat16)', () => matrix(4, ['', '0,7,1000', '3000', 'float32,bfloat16']));
test('world size 5: all collectives × 14 dtypes × 5 ops, sizes 0, 7 (+1000 for float32, int8, float16)', () => matrix(5, ['', '0,7', '1000', 'float32,int8,float16']));
test('world size 8: all collectives × 14 dtypes × 5 ops, size 7 (+3000 for float32, bfloat16)', () => matrix(8, ['', '7', '3000', 'float32,bfloat16']));

test.run();
