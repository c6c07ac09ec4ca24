/**
 * A shared-memory link under pressure (host/cpu/link/shm.ts): frames that fit the ring but find
 * it full wait in the link's queue, and socket frames (below GROUPCOMM_CPU_SHM_MIN_BYTES, or
 * above the ring's largest frame) queue behind them. Two ranks in this process with 64 KiB
 * rings; everything is issued in one tick so the rings fill before the receiver runs. What is
 * asserted is delivery: every message whole, matched to its receive. (Whether a socket frame
 * overtakes the queue cannot be seen from here: frames are matched by key and slot, not order.)
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { groupForFile } from '../helpers/cpu_groups.js';
import { tensor } from '../../host/core/tensor.js';

const { gs } = groupForFile(2, { groupName: 'shm-pressure', timeoutMs: 10_000, transport: 'shm', shmRingBytes: 1 << 16 });

/** n bytes, each (i * 7 + seed) & 255. */
const bytes = (n: number, seed: number) => tensor(Uint8Array.from({ length: n }, (_, i) => (i * 7 + seed) & 255));

test('ring frames waiting for space, socket frames behind them: every message arrives whole and in its place', async () => {
  assert.is(gs[0].transportTo(1), 'shm');
  // 20 KiB frames fill a 64 KiB ring after two or three; 100 B ones go by socket (below the
  // 8 KiB minimum), 40 KiB ones too (above the ring's largest frame).
  const sizes = [20_000, 100, 20_000, 20_000, 100, 40_000, 20_000, 20_000, 100, 20_000, 40_000, 100, 20_000];
  for (let round = 0; round < 3; round++) {
    const sends = sizes.map((n, i) => gs[0].send(bytes(n, i + round), 1, { tag: 5 }));
    const recvs = sizes.map((n) => gs[1].recv(tensor(new Uint8Array(n)), 0, { tag: 5 }));
    const [, got] = await Promise.all([Promise.all(sends), Promise.all(recvs)]);
    got.forEach((t, i) => assert.equal([...(t.data as Uint8Array)], [...(bytes(sizes[i], i + round).data as Uint8Array)], `round ${round} message ${i}`));
  }
  // Both ways at once.
  const a = sizes.map((n, i) => gs[0].send(bytes(n, 50 + i), 1));
  const b = sizes.map((n, i) => gs[1].send(bytes(n, 90 + i), 0));
  const ra = sizes.map((n) => gs[1].recv(tensor(new Uint8Array(n)), 0));
  const rb = sizes.map((n) => gs[0].recv(tensor(new Uint8Array(n)), 1));
  const [, , ga, gb] = await Promise.all([Promise.all(a), Promise.all(b), Promise.all(ra), Promise.all(rb)]);
  ga.forEach((t, i) => assert.equal([...(t.data as Uint8Array)], [...(bytes(sizes[i], 50 + i).data as Uint8Array)], `0→1 message ${i}`));
  gb.forEach((t, i) => assert.equal([...(t.data as Uint8Array)], [...(bytes(sizes[i], 90 + i).data as Uint8Array)], `1→0 message ${i}`));
});

test.run();
