// host/cpu/algorithms.ts against a scripted Exchange: P ranks in this process, each with the
// core's real Schedules, frames delivered on a timer. A payload sent without `copy` is read when
// it is delivered (as a queued write would be), one sent with `copy` when it is sent. Pins what
// runs through CpuGroup cannot see: the window of the first ring step, the shared-memory
// `consume` path, a hostile frame (a step beyond the last, a segment of the wrong size), no frame
// to a rank outside the group and no extra frame, recursive doubling at non-power-of-two sizes
// with a write that waits, the early returns, and the Staging buffers' reuse and growth.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Staging, chainBroadcast, exchangeAll, recursiveDoubling, ring, type Pipeline, type ReduceFn } from '../../host/cpu/algorithms.js';
import { Schedules } from '../../host/cpu/schedule.js';
import type { GroupcommError } from '../../host/base/errors.js';
import { World } from '../helpers/fake_exchange.js';

const addF32: ReduceFn = (dst, src, a = dst) => {
  const d = new Float32Array(dst.buffer, dst.byteOffset, dst.byteLength / 4);
  const s = new Float32Array(src.buffer, src.byteOffset, src.byteLength / 4);
  const x = new Float32Array(a.buffer, a.byteOffset, a.byteLength / 4);
  for (let i = 0; i < d.length; i++) d[i] = x[i] + s[i];
};

const tuning = (rank: number, P: number, chunkBytes: number, window: number): Pipeline =>
  ({ chunkBytes, window, plans: new Schedules(rank, P, chunkBytes) });

/** Rank r's element i: distinct per rank and index, exact in float32 sums. */
const value = (r: number, i: number) => (r + 1) * 1000 + i;
const f32 = (P: number, n: number, r: number) => Float32Array.from({ length: n }, (_, i) => value(r, i));
const sum = (P: number, i: number) => [...Array(P).keys()].reduce((a, r) => a + value(r, i), 0);
const bytes = (a: Float32Array) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

/** Settles within `ms` or fails (a mutant that stops the algorithm must not hang the file). */
function within<T>(p: Promise<T>, ms = 3000): Promise<T> {
  let t: NodeJS.Timeout;
  return Promise.race([p, new Promise<T>((_, rej) => { t = setTimeout(() => rej(new Error(`not settled within ${ms} ms`)), ms); })])
    .finally(() => clearTimeout(t));
}

for (const [P, inPlace] of [[3, true], [5, false], [4, true]] as const) {
  test(`ring allReduce of ${P} ranks (${inPlace ? 'in place' : 'out of place'}): exact sums; the first step sends 'window' segments, not one`, async () => {
    const n = 37; // 148 bytes, 16-byte chunks: several segments per block, the last ones short
    const w = new World(P);
    w.hold = true;
    const bufs = [...Array(P).keys()].map((r) => (inPlace ? f32(P, n, r) : new Float32Array(n).fill(-7)));
    const inputs = [...Array(P).keys()].map((r) => f32(P, n, r));
    const runs = w.ranks.map((e, r) => ring(e.ex, {
      buf: bytes(bufs[r]), input: inPlace ? undefined : bytes(inputs[r]), itemSize: 4, steps: 2 * (P - 1), reduceSteps: P - 1,
      shift: 0, reduce: addF32, tuning: tuning(r, P, 16, 2), staging: new Staging(),
    }));
    const K = new Schedules(0, P, 16).ringSegments(n * 4, 4).segments;
    assert.ok(K >= 2, `K = ${K}`);
    for (let r = 0; r < P; r++) assert.is(w.sends(r), Math.min(2, K), `rank ${r}: segments of the first step in flight`);
    w.release();
    await within(Promise.all(runs));
    for (let r = 0; r < P; r++) for (let i = 0; i < n; i++) assert.is(bufs[r][i], sum(P, i), `rank ${r} element ${i}`);
    assert.equal(w.bad, []);
    for (let r = 0; r < P; r++) assert.is(w.sends(r), 2 * (P - 1) * K, `rank ${r}: one frame per step and segment`);
  });
}

test('ring over shared memory: every reduce-step segment is consumed in place, none of the copy steps; same sums', async () => {
  const P = 3, n = 37;
  const w = new World(P);
  w.shm = true;
  const bufs = [...Array(P).keys()].map((r) => f32(P, n, r));
  const K = new Schedules(0, P, 16).ringSegments(n * 4, 4).segments;
  await within(Promise.all(w.ranks.map((e, r) => ring(e.ex, {
    buf: bytes(bufs[r]), itemSize: 4, steps: 2 * (P - 1), reduceSteps: P - 1, shift: 0, reduce: addF32,
    tuning: tuning(r, P, 16, 1), staging: new Staging(),
  }))));
  for (let r = 0; r < P; r++) for (let i = 0; i < n; i++) assert.is(bufs[r][i], sum(P, i), `rank ${r} element ${i}`);
  assert.is(w.consumed, P * (P - 1) * K);
  assert.equal(w.bad, []);
});

test('ring: a frame for a step beyond the last, or a reduce segment of the wrong size, fails naming the sender', async () => {
  const P = 3, n = 37;
  const K = new Schedules(0, P, 16).ringSegments(n * 4, 4).segments;
  for (const [what, slot, len] of [['beyond', 2 * (P - 1) * K, 16], ['short', 0, 4]] as const) {
    const w = new World(P);
    w.hold = true;
    const r = 1;
    const p = ring(w.ranks[r].ex, {
      buf: bytes(f32(P, n, r)), itemSize: 4, steps: 2 * (P - 1), reduceSteps: P - 1, shift: 0, reduce: addF32,
      tuning: tuning(r, P, 16, 1), staging: new Staging(),
    });
    w.ranks[r].arrive(0, slot, new Uint8Array(len)); // rank 0 is rank 1's left neighbour
    const e = await within(p.then(() => undefined, (x: GroupcommError) => x));
    assert.ok(e, `${what}: the ring did not fail`);
    assert.is(e!.code, 'ERR_GROUPCOMM_PROTOCOL', what);
    assert.is(e!.peerRank, 0, what);
  }
});

test('ring: no steps, or a group of one, returns at once and sends nothing', async () => {
  for (const [P, steps] of [[3, 0], [1, 2]] as const) {
    const w = new World(P);
    await within(ring(w.ranks[0].ex, {
      buf: bytes(f32(P, 8, 0)), itemSize: 4, steps, reduceSteps: 0, shift: 0, tuning: tuning(0, P, 16, 2), staging: new Staging(),
    }), 500);
    assert.is(w.sends(0), 0);
    assert.equal(w.bad, []);
  }
});

for (const P of [1, 2, 4]) {
  test(`chain broadcast of ${P} rank(s) from every root: exact bytes, K frames per link, none outside the group`, async () => {
    const n = 37;
    for (let root = 0; root < P; root++) {
      const w = new World(P);
      const bufs = [...Array(P).keys()].map((r) => (r === root ? f32(P, n, root) : new Float32Array(n).fill(-1)));
      await within(Promise.all(w.ranks.map((e, r) => chainBroadcast(e.ex, bytes(bufs[r]), root, 4, tuning(r, P, 16, 1)))));
      for (let r = 0; r < P; r++) for (let i = 0; i < n; i++) assert.is(bufs[r][i], value(root, i), `root ${root}: rank ${r} element ${i}`);
      await new Promise((res) => setTimeout(res, 5)); // frames still in flight would show as bad
      assert.equal(w.bad, [], `root ${root}`);
      const K = new Schedules(0, P, 16).chainSegments(n * 4, 4).segments;
      assert.is(w.ranks.reduce((a, e) => a + e.sent, 0), (P - 1) * K, `root ${root}: frames sent`);
    }
  });
}

for (const P of [3, 5, 6, 7, 8]) {
  test(`recursive doubling of ${P} ranks: exact sums while the writes wait, nothing to a rank outside the group`, async () => {
    const n = 5;
    const w = new World(P);
    const bufs = [...Array(P).keys()].map((r) => f32(P, n, r));
    await within(Promise.all(w.ranks.map((e, r) =>
      recursiveDoubling(e.ex, bytes(bufs[r]), addF32, new Staging(), new Schedules(r, P, 16).recursiveDoubling()))));
    for (let r = 0; r < P; r++) for (let i = 0; i < n; i++) assert.is(bufs[r][i], sum(P, i), `rank ${r} element ${i}`);
    await new Promise((res) => setTimeout(res, 5));
    assert.equal(w.bad, []);
  });
}

test('exchangeAll: a missing side is skipped whatever the peer lists hold', async () => {
  const P = 3;
  const w = new World(P);
  const peers = new Schedules(0, P, 16).directPeers();
  assert.ok(peers.recvFrom.length > 0);
  const parts = [new Uint8Array([1]), new Uint8Array([2]), new Uint8Array([3])];
  // Rank 0 only sends; ranks 1 and 2 only receive from it.
  const got = [new Uint8Array(1), new Uint8Array(1)];
  await within(Promise.all([
    exchangeAll(w.ranks[0].ex, (p) => parts[p], undefined, peers),
    ...[1, 2].map((r) => exchangeAll(w.ranks[r].ex, undefined, (p) => (p === 0 ? got[r - 1] : new Uint8Array(0)),
      { sendTo: new Int32Array(0), recvFrom: new Int32Array([0]) })),
  ]));
  assert.equal([...got[0], ...got[1]], [2, 3]);
});

test('Staging: a buffer is reused while it is large enough, grows by doubling, one per index', () => {
  const s = new Staging();
  const a = s.get(0, 100);
  assert.is(a.byteLength, 100);
  assert.is(s.get(0, 100).buffer, a.buffer, 'same size: reused');
  assert.is(s.get(0, 60).buffer, a.buffer, 'smaller: reused');
  const b = s.get(0, 150);
  assert.is(b.byteLength, 150);
  assert.is(b.buffer.byteLength, 200, 'grown to twice the old size');
  assert.is(s.get(0, 190).buffer, b.buffer);
  assert.is(s.get(0, 1000).buffer.byteLength, 1000, 'beyond twice: the size asked for');
  assert.is.not(s.get(1, 10).buffer, b.buffer, 'another index, another buffer');
});

test.run();
