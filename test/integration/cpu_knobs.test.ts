/**
 * The knob matrix: the CPU group's collectives and the coordinator's methods across transports
 * (tcp, shm, auto) and tuning values that switch code paths — smallBytes (recursive doubling /
 * tree vs ring / chain, and how far up it goes), chunkBytes and window (segments per block, how
 * many in flight), the shm ring size (the smallest rings wrap constantly and send frames above
 * 7/16 of the ring over TCP, in order with the ring's) and the shm threshold (every frame through
 * the rings, or only the large ones). Each configuration is one group in the same 3 processes;
 * every result is checked bit for bit on every rank against a locally computed reference.
 * The defaults are covered by cpu_matrix*.test.ts; this file is the non-default settings.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnRanks } from '../helpers/ranks.js';
import { assertClean, coordScenario, shmAvailable, type Outcome } from '../helpers/scenarios.js';
import type { KnobConfig } from './workers/knob_worker.js';


const KIB = 1024;
const CONFIGS: KnobConfig[] = [
  // TCP at the default tuning, sizes either side of the 64 KiB small-message threshold.
  { name: 'tcp-default', options: { transport: 'tcp' }, counts: [1, 20_000] },
  // Tiny segments, one in flight, a tiny small-message threshold: many segments per block,
  // uneven last segments, several dtypes (segment edges fall on element boundaries).
  { name: 'tcp-chunk4k-w1', options: { transport: 'tcp', chunkBytes: 4 * KIB, window: 1, smallBytes: 1 * KIB }, counts: [7, 9_001], dtypes: ['float32', 'int64', 'bfloat16'], ops: ['sum', 'max'] },
  // Everything takes the ring (smallBytes 1), a wide window over small segments.
  { name: 'tcp-small1-w8', options: { transport: 'tcp', chunkBytes: 1 * KIB, window: 8, smallBytes: 1 }, counts: [1, 3, 5_000] },
  // smallBytes raised: recursive doubling, tree broadcast of 400 KiB over TCP.
  { name: 'tcp-small1m', options: { transport: 'tcp', smallBytes: 1024 * KIB }, counts: [100_000], ops: ['sum', 'avg'] },
  // The smallest rings (64 KiB), every frame through them (threshold 1), 16 KiB segments: the
  // rings wrap all the time with mixed frame sizes, allToAll's blocks go over TCP in between.
  { name: 'shm-ring64k-min1', options: { transport: 'shm', shmRingBytes: 64 * KIB, chunkBytes: 16 * KIB, smallBytes: 512 }, env: { GROUPCOMM_CPU_SHM_MIN_BYTES: '1' }, counts: [7, 30_000] },
  // 128 KiB rings, the default threshold (small frames over TCP, large through the ring),
  // smallBytes raised so recursive doubling moves 200 KiB frames through shm.
  { name: 'shm-ring128k-rd', options: { transport: 'shm', shmRingBytes: 128 * KIB, chunkBytes: 64 * KIB, window: 2, smallBytes: 256 * KIB }, counts: [1_000, 50_000], ops: ['sum', 'avg'] },
  // auto: same host, so shm; a threshold above the segment size sends the ring's frames over
  // TCP while larger ones (allToAll, gather) use the rings.
  { name: 'auto-min64k', options: { transport: 'auto', shmRingBytes: 256 * KIB, chunkBytes: 32 * KIB, window: 3 }, env: { GROUPCOMM_CPU_SHM_MIN_BYTES: String(64 * KIB) }, counts: [40_000], ops: ['sum', 'min'] },
];

test(`CPU group, 3 ranks: ${CONFIGS.length} transport × knob configurations, every collective exact`, async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cpu-knobs-'));
  try {
    const res = await spawnRanks<Outcome & { rank: number; transports: Record<string, string[]> }>(3, 'test/integration/workers/knob_worker', {
      args: ['knobs', dir, JSON.stringify(CONFIGS)], timeoutMs: 120_000,
    });
    assertClean(res, 100);
    for (const r of res) {
      for (const c of CONFIGS) {
        const want = c.options?.transport === 'tcp' || !shmAvailable ? 'tcp' : 'shm';
        const seen = r.transports[c.name];
        assert.equal(seen, [0, 1, 2].map((p) => (p === r.rank ? 'self' : want)), `rank ${r.rank} ${c.name}: transports ${seen}`);
      }
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

// The coordinator's methods over a CPU group on non-default knobs, set through the environment
// as a deployment would: small shm rings that every frame goes through, and TCP with tiny
// segments and the small-message paths raised.
const COORD_ENVS: Record<string, Record<string, string>> = {
  'shm, 64 KiB rings, every frame through them, 4 KiB segments': {
    GROUPCOMM_CPU_TRANSPORT: 'shm', GROUPCOMM_CPU_SHM_RING_BYTES: String(64 * KIB), GROUPCOMM_CPU_SHM_MIN_BYTES: '1', GROUPCOMM_CPU_CHUNK_BYTES: String(4 * KIB),
  },
  'tcp, 2 KiB segments, window 1, smallBytes 256 KiB': {
    GROUPCOMM_CPU_TRANSPORT: 'tcp', GROUPCOMM_CPU_CHUNK_BYTES: String(2 * KIB), GROUPCOMM_CPU_WINDOW: '1', GROUPCOMM_CPU_SMALL_BYTES: String(256 * KIB),
  },
};
for (const [what, env] of Object.entries(COORD_ENVS)) {
  test(`coordinator, 3 ranks, every method: ${what}`, async () => {
    assertClean(await coordScenario(3, 'methods', { env }), 40);
  });
}

test.run();
