/**
 * The shared-segment allReduce (host/cpu/segments.ts) with premulSum: each rank writes its input
 * scaled into its own segment, then reduces its slice out of every rank's. 3 ranks in this
 * process over shm (each maps the others' segments as another process would); the integration
 * suite covers the five plain ops across processes (cpu_shm_segments), not the scaled write.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { groupForFile } from '../helpers/cpu_groups.js';
import { premulSum } from '../../host/core/premul.js';
import { tensor, type CpuTensor } from '../../host/core/tensor.js';

const P = 3;
const { gs } = groupForFile(P, {
  groupName: 'cpu-segments', timeoutMs: 10_000,
  // Every allReduce of 4 KiB or more goes through the segments, in 4 KiB chunks: the sizes
  // below take several chunks and a last partial one.
  transport: 'shm', shmReduceBytes: 4096, shmReduceChunkBytes: 4096,
  // No frame above 1 KiB: a large allReduce that went the ring's way (4 KiB segments) would
  // be refused; the segments' own frames are empty signals and the setup's small offers.
  maxFrameBytes: 1024, chunkBytes: 4096,
});

/** Rank r's n values: (i % 97) + r, small integers (exact in every dtype used). */
const input = (r: number, n: number, dtype: 'float32' | 'int32' | 'float64'): CpuTensor => {
  const v = Array.from({ length: n }, (_, i) => (i % 97) + r);
  const C = { float32: Float32Array, int32: Int32Array, float64: Float64Array }[dtype];
  return tensor(C.from(v), { dtype });
};

test('premulSum over the shared segments: every rank\'s input scaled, then summed; exact, in and out of place', async () => {
  const n = 5000; // 20 KiB of float32: five chunks, the last one partial
  for (const [dtype, factor] of [['float32', 0.5], ['int32', 3], ['float64', -2]] as const) {
    const xs = gs.map((_, r) => input(r, n, dtype));
    const got = await Promise.all(gs.map((g, r) => g.allReduce(xs[r], { op: premulSum(factor) })));
    const want = Array.from({ length: n }, (_, i) => factor * (3 * (i % 97) + 0 + 1 + 2));
    got.forEach((t, r) => {
      assert.is.not(t, xs[r]);
      assert.equal([...(t.data as Float32Array)], want, `${dtype} rank ${r}`);
      assert.equal([...(xs[r].data as Float32Array)], [...(input(r, n, dtype).data as Float32Array)], `${dtype} rank ${r}: input unchanged`);
    });
    const inPlace = await Promise.all(gs.map((g, r) => g.allReduce(xs[r], { op: premulSum(factor), out: xs[r] })));
    inPlace.forEach((t, r) => { assert.is(t, xs[r]); assert.equal([...(t.data as Float32Array)], want, `${dtype} rank ${r} in place`); });
  }
  assert.equal(gs.map((g) => g.sharedSegments), [true, true, true], 'the segments were used');
});

test('sum, avg and max over the shared segments (out of place and in place); below the threshold the ring, same results', async () => {
  for (const n of [5000, 200]) { // 20 KiB: the segments; 800 bytes: below shmReduceBytes (one frame)
    const xs = gs.map((_, r) => input(r, n, 'float32'));
    for (const [op, f] of [['sum', (v: number[]) => v[0] + v[1] + v[2]], ['avg', (v: number[]) => (v[0] + v[1] + v[2]) / 3], ['max', (v: number[]) => Math.max(...v)]] as const) {
      const want = Array.from({ length: n }, (_, i) => Math.fround(f([0, 1, 2].map((r) => (i % 97) + r))));
      const got = await Promise.all(gs.map((g, r) => g.allReduce(xs[r], { op })));
      got.forEach((t, r) => assert.equal([...(t.data as Float32Array)], want, `${n} ${op} rank ${r}`));
      const copies = xs.map((x) => tensor((x.data as Float32Array).slice()));
      const inPlace = await Promise.all(gs.map((g, r) => g.allReduce(copies[r], { op, out: copies[r] })));
      inPlace.forEach((t, r) => { assert.is(t, copies[r]); assert.equal([...(t.data as Float32Array)], want, `${n} ${op} rank ${r} in place`); });
      xs.forEach((x, r) => assert.equal([...(x.data as Float32Array)], [...(input(r, n, 'float32').data as Float32Array)], `${n} ${op}: input unchanged`));
    }
  }
});

test.run();
