import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnRanks } from '../helpers/ranks.js';

test('spawnRanks: every rank reports, Node and Bun mixed', async () => {
  const res = await spawnRanks<{ rank: number; worldSize: number; runtime: string }>(3, 'test/integration/workers/echo_worker', { runtime: 'mixed' });
  assert.equal(res.map((r) => r.rank), [0, 1, 2]);
  assert.equal(res.map((r) => r.runtime), ['node', 'bun', 'node']);
  assert.ok(res.every((r) => r.worldSize === 3));
});

test('spawnRanks: a failing rank fails the run and is named', async () => {
  try {
    await spawnRanks(2, 'test/integration/workers/echo_worker', { args: ['--fail'] });
    assert.unreachable('should have failed');
  } catch (e) {
    assert.match((e as Error).message, /rank 1 exit=3/);
  }
});

test.run();
