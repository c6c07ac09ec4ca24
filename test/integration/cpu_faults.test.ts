/**
 * CPU group across real processes: a rank killed mid-collective, two groups of different
 * membership used at the same time by the same processes, Node and Bun ranks in one group.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnRanks, startRanks } from '../helpers/ranks.js';
import { shmAvailable } from '../helpers/scenarios.js';
import { TcpStoreServer } from '../../host/store/server.js';
import { TcpStore } from '../../host/store/client.js';
import { CpuGroup } from '../../host/cpu/group.js';

function tmp(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'cpu-faults-'));
}

interface Lost { rank: number; code: string; peerRank?: number; message: string; elapsedMs: number; pid: number; segments: boolean }

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

test('a rank killed mid-allReduce with every frame in shared-memory rings and the allReduces through shared segments (Node and Bun mixed): PEER_LOST naming it, no segment left', async () => {
  const dir = tmp();
  try {
    const env = { GROUPCOMM_CPU_TRANSPORT: 'shm', GROUPCOMM_CPU_SHM_MIN_BYTES: '1', GROUPCOMM_CPU_SHM_RING_BYTES: '65536' };
    const res = await spawnRanks<Lost>(3, 'test/integration/workers/cpu_worker', { args: ['kill', dir], allowFailure: [2], timeoutMs: 60_000, runtime: 'mixed', env });
    const survivors = res.filter((r) => r && r.rank !== 2);
    assert.is(survivors.length, 2);
    for (const r of survivors) {
      assert.is(r.code, 'ERR_GROUPCOMM_PEER_LOST', r.message);
      assert.is(r.peerRank, 2, r.message);
      assert.ok(r.elapsedMs < 20_000, `failed after ${r.elapsedMs} ms, the op timeout is 20000 ms`);
      assert.is(r.segments, shmAvailable, 'the allReduces did not go through the shared segments');
    }
    // Names are unlinked once both sides mapped them: none of the survivors' segments is left.
    const left = fs.readdirSync('/dev/shm').filter((f) => survivors.some((r) => new RegExp(`^gcpu-[0-9a-f]{12}-${r.pid}-`).test(f)));
    assert.equal(left, []);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('a rank SIGKILLed after publishing its address: the survivor\'s failed setup deletes that address key', async () => {
  const server = await TcpStoreServer.listen({ host: '127.0.0.1', port: 0 });
  const store = await TcpStore.create({ host: '127.0.0.1', port: server.port, timeoutMs: 10_000 });
  const groupName = `addr${process.pid}`;
  const key = `groupcomm/cpu/${groupName}/0/addr/1`;
  const victim = startRanks(1, 'test/integration/workers/cpu_addr_victim', { args: [String(server.port), groupName], timeoutMs: 40_000 });
  try {
    const t0 = performance.now();
    while (!await store.check([key])) {
      assert.ok(performance.now() - t0 < 30_000, 'the victim never published its address');
      await new Promise((r) => setTimeout(r, 20));
    }
    victim.kill(0, 'SIGKILL');
    const [out] = await victim.done;
    assert.is(out.signal, 'SIGKILL');
    assert.is(await store.numKeys(), 1, 'the dead rank\'s address is there');
    const err = await CpuGroup.create({ store, rank: 0, worldSize: 2, groupName, timeoutMs: 1500 }).then(() => undefined, (e) => e);
    assert.ok(err && ['ERR_GROUPCOMM_PEER_LOST', 'ERR_GROUPCOMM_TIMEOUT'].includes(err.code), String(err));
    assert.is(err.peerRank ?? err.peerRanks?.[0], 1, err.message);
    assert.is(await store.numKeys(), 0, 'an address key outlived the failed setup');
  } finally {
    victim.children[0].kill('SIGKILL');
    await store.close();
    await server.close();
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
