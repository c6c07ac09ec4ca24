/**
 * The shared-segment allReduce (host/cpu/segments.ts) across real processes: exact results for
 * every op and several dtypes at odd counts over many small chunks (buffers reused within and
 * across calls), in and out of place; a size mismatch the fingerprint cannot see; nothing left
 * in /dev/shm and nothing mapped after destroy(); a rank on TCP only keeps everyone on the ring;
 * an abort and a timeout while a peer stays away (the timeout names it). A peer killed during
 * the op: cpu_faults.test.ts ('every frame in shared-memory rings').
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnRanks } from '../helpers/ranks.js';
import { assertClean, shmAvailable, type Outcome } from '../helpers/scenarios.js';

type Res = Outcome & { rank: number; info: Record<string, any> };

async function run(n: number, mode: string): Promise<Res[]> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cpu-segments-'));
  try {
    return await spawnRanks<Res>(n, 'test/integration/workers/segment_worker', { args: [mode, dir], timeoutMs: 90_000 });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

for (const n of [3, 4]) {
  test(`${n} ranks: every op × dtype, odd counts, many chunks, in and out of place: exact; a hidden size mismatch is named; destroy unmaps`, async () => {
    const res = await run(n, 'exact');
    assertClean(res, 60);
    for (const { rank, info } of res) {
      assert.is(info.segments, shmAvailable, `rank ${rank}: shared segments ${info.segments ? 'on' : 'off'}`);
      assert.is(info.namesLeft, 0, `rank ${rank}: names left in /dev/shm`);
      assert.is(info.mismatch?.code, 'ERR_GROUPCOMM_MISMATCH', JSON.stringify(info.mismatch));
      if (rank < n - 1) assert.is(info.mismatch.peerRank, n - 1, info.mismatch.message);
      if (shmAvailable) assert.ok(info.mappedBefore > 0, `rank ${rank}: no segment mapped before destroy`);
      assert.is(info.mappedAfter, 0, `rank ${rank}: segments still mapped after destroy`);
    }
  });
}

test('3 ranks: a rank on TCP only keeps the ring (results exact); abort and timeout while a peer stays away name it', async () => {
  const res = await run(3, 'faults');
  assertClean(res, 4);
  for (const { rank, info } of res) {
    assert.is(info.mixedSegments, false, `rank ${rank}: segments on with a TCP-only rank`);
    assert.is(info.abortSegments, shmAvailable);
    assert.is(info.timeoutSegments, shmAvailable);
    if (rank === 2) continue;
    assert.is(info.abort.code, 'ERR_GROUPCOMM_ABORTED', info.abort.message);
    assert.is(info.timeout.code, 'ERR_GROUPCOMM_TIMEOUT', info.timeout.message);
    assert.equal(info.timeout.peerRanks, [2], info.timeout.message);
    assert.match(info.timeout.message, /waiting for ranks 2$/);
  }
});

test.run();
