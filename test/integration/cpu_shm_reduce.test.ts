/**
 * Reductions straight out of the peer's shared-memory ring (algorithms.ts ring(), Sink.consume):
 * a reduce step's segment is added into place from the ring instead of being copied into
 * staging first. Checked bit for bit on every rank against a locally computed reference, at 2
 * and 4 ranks, for odd element counts (segment edges fall mid-ring and on the last, short
 * segment), several dtypes and ops, the smallest rings (they wrap many times per call, every
 * frame goes through them), and the default tuning at a few MiB. Frames that arrive before
 * their operation (a peer one op ahead) take the side-buffer path, which consumes them too.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnRanks } from '../helpers/ranks.js';
import { assertClean, shmAvailable, type Outcome } from '../helpers/scenarios.js';
import type { KnobConfig } from './workers/knob_worker.js';


const KIB = 1024;
const CONFIGS: KnobConfig[] = [
  // 64 KiB rings, 12 KiB segments (not a power of two), every frame through the ring: wraps
  // all the time; 24 577 elements leave a short last segment in every block.
  {
    name: 'shm-reduce-wrap', options: { transport: 'shm', shmRingBytes: 64 * KIB, chunkBytes: 12 * KIB, window: 3, smallBytes: 256 },
    env: { GROUPCOMM_CPU_SHM_MIN_BYTES: '1' }, counts: [5, 1_003, 24_577],
    dtypes: ['float32', 'float16', 'bfloat16', 'int64', 'uint8'], ops: ['sum', 'avg', 'max', 'prod'], reduceOnly: true,
  },
  // The default tuning (512 KiB segments, the default rings) at 4 MiB + 12 bytes, every collective.
  { name: 'shm-reduce-default', options: { transport: 'shm' }, counts: [(1 << 20) + 3], ops: ['sum', 'avg'] },
];

for (const n of [2, 4]) {
  test(`CPU group, ${n} ranks over shm: reductions from the ring are exact (odd sizes, wraps, 5 dtypes × 4 ops, 4 MiB)`, async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cpu-shm-reduce-'));
    try {
      const res = await spawnRanks<Outcome & { rank: number; transports: Record<string, string[]> }>(n, 'test/integration/workers/knob_worker', {
        args: ['knobs', dir, JSON.stringify(CONFIGS)], timeoutMs: 180_000,
      });
      assertClean(res, 100);
      for (const r of res) {
        for (const c of CONFIGS) {
          // Connections are made on first use: a peer no collective here talks to stays 'none'.
          const want = shmAvailable ? 'shm' : 'tcp';
          const seen = r.transports[c.name];
          const ringPeers = [(r.rank + 1) % n, (r.rank + n - 1) % n];
          seen.forEach((t, p) => {
            const ok = p === r.rank ? t === 'self' : ringPeers.includes(p) ? t === want : t === want || t === 'none';
            assert.ok(ok, `rank ${r.rank} ${c.name}: transport to rank ${p} is ${t}, expected ${p === r.rank ? 'self' : want}`);
          });
        }
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
}

test.run();
