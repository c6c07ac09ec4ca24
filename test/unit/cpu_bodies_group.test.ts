/**
 * host/cpu/bodies.ts through 3 CpuGroups in this process (real sockets): what the other unit
 * tests leave out — reduceScatter's avg over more than one rank, gather to a root other than 0,
 * and which broadcast algorithm a size takes. Every rank accepts frames of at most 2 KiB
 * (maxFrameBytes): a broadcast above smallBytes must go as the chain's 1 KiB segments (the tree
 * sends the whole buffer as one frame, which the peers would refuse).
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { groupForFile } from '../helpers/cpu_groups.js';
import { tensor } from '../../host/core/tensor.js';

const P = 3;
const { gs } = groupForFile(P, { groupName: 'cpu-bodies', timeoutMs: 5000, chunkBytes: 1024, smallBytes: 1024, maxFrameBytes: 2048 });

/** Rank r's n float32 values: 10 r + (i % 7). */
const input = (r: number, n: number) => tensor(Float32Array.from({ length: n }, (_, i) => 10 * r + (i % 7)));

test('reduceScatter avg over 3 ranks: each rank its block of the sums, divided by 3', async () => {
  for (const n of [6, 3000]) { // the ring at both sizes (reduceScatter has no other algorithm)
    const got = await Promise.all(gs.map((g, r) => g.reduceScatter(input(r, n), { op: 'avg' })));
    got.forEach((t, r) => {
      const want = Array.from({ length: n / P }, (_, j) => Math.fround((30 + 3 * ((r * n / P + j) % 7)) / 3));
      assert.equal([...(t.data as Float32Array)], want, `n ${n} rank ${r}`);
    });
  }
});

test('gather to rank 2 (and 1): the root\'s own block lands at its rank\'s place', async () => {
  for (const dst of [2, 1]) {
    const got = await Promise.all(gs.map((g, r) => g.gather(input(r, 4), { dst })));
    assert.equal([...(got[dst]!.data as Float32Array)], [0, 1, 2, 3, 10, 11, 12, 13, 20, 21, 22, 23], `dst ${dst}`);
    got.forEach((t, r) => { if (r !== dst) assert.is(t, undefined); });
  }
});

test('broadcast: up to smallBytes one frame (the tree), above it 1 KiB segments (the chain), from every root, into out', async () => {
  for (const n of [256, 1500]) { // 1 KiB, 6000 bytes
    for (let src = 0; src < P; src++) {
      const outs = gs.map(() => tensor(new Float32Array(n).fill(-1)));
      const got = await Promise.all(gs.map((g, r) => g.broadcast(input(r, n), { src, out: outs[r] })));
      got.forEach((t, r) => {
        assert.is(t, outs[r]);
        assert.equal([...(t.data as Float32Array)], [...(input(src, n).data as Float32Array)], `n ${n} src ${src} rank ${r}`);
      });
    }
  }
});

test.run();
