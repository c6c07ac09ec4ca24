/**
 * CPU group across real processes: a rank killed mid-collective, two groups of different
 * membership used at the same time by the same processes, Node and Bun ranks in one group.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnRanks } from '../helpers/ranks.js';

function tmp(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'cpu-faults-'));
}

interface Lost { rank: number; code: string; peerRank?: number; message: string; elapsedMs: number }

test('a rank killed mid-allReduce: every other rank fails with PEER_LOST naming it, well within the timeout', async () => {
  const dir = tmp();
  try {
    const res = await spawnRanks<Lost>(3, 'test/integration/workers/cpu_worker', { args: ['kill', dir], allowFailure: [2], timeoutMs: 60_000 });
    const survivors = res.filter((r) => r && r.rank !== 2);
    assert.is(survivors.length, 2);
    for (const r of survivors) {
      assert.is(r.code, 'ERR_GROUPCOMM_PEER_LOST', r.message);
      assert.is(r.peerRank, 2, r.message);
      assert.match(r.message, /rank 2/);
      assert.ok(r.elapsedMs < 20_000, `failed after ${r.elapsedMs} ms, the op timeout is 20000 ms`);
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('two groups of different membership over the same processes, used concurrently', async () => {
  const dir = tmp();
  try {
    const res = await spawnRanks<{ rank: number; checks: number; failures: string[] }>(4, 'test/integration/workers/cpu_worker', { args: ['groups', dir], timeoutMs: 60_000 });
    assert.equal(res.flatMap((r) => r.failures), []);
    assert.equal(res.map((r) => r.checks), [5, 10, 5, 10]);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('Node and Bun ranks mixed in one group: every collective and dtype agree', async () => {
  const dir = tmp();
  try {
    const res = await spawnRanks<{ rank: number; checks: number; failures: string[] }>(3, 'test/integration/workers/cpu_worker', {
      args: ['matrix', dir, 'float32,int64,float16,bool,uint8', '0,7,1000', '3000', 'float64'],
      runtime: 'mixed', timeoutMs: 80_000,
    });
    assert.equal(res.flatMap((r) => r.failures), []);
    assert.ok(res.every((r) => r.checks > 100));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('Node and Bun mixed, multi-MiB messages at the default segmenting (payloads read straight into place)', async () => {
  const dir = tmp();
  try {
    const res = await spawnRanks<{ rank: number; checks: number; failures: string[] }>(3, 'test/integration/workers/cpu_worker', {
      args: ['large', dir], runtime: 'mixed', timeoutMs: 80_000,
    });
    assert.equal(res.flatMap((r) => r.failures), []);
    assert.equal(res.map((r) => r.checks), [15, 15, 15]);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
