// host/cpu/bodies.ts without sockets: the call shape each collective is fingerprinted by (what
// every rank must agree on: the collective, the dtype, the op, the root, the shape, or the
// caller's own view of it) and the checks, read straight from the prepare functions on a
// CallContext of rank 1 of 3; a group of one's allReduce without shared segments; and which
// algorithm a size takes, counted in frames over a scripted Exchange (test/helpers/fake_exchange).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  prepareAllGather, prepareAllReduce, prepareAllToAll, prepareBroadcast, prepareGather, prepareReduceScatter, prepareScatter,
} from '../../host/cpu/bodies.js';
import { CallContext } from '../../host/cpu/checks.js';
import { Staging } from '../../host/cpu/algorithms.js';
import { Schedules } from '../../host/cpu/schedule.js';
import { premulSum } from '../../host/core/premul.js';
import { empty, tensor } from '../../host/core/tensor.js';
import type { Exchange } from '../../host/cpu/exchange.js';
import { World } from '../helpers/fake_exchange.js';

const P = 3;
const ctx = (rank: number, size = P) => {
  const plans = new Schedules(rank, size, 1024);
  return new CallContext(rank, size, 256, { chunkBytes: 1024, window: 2, plans }, new Staging(), plans);
};

test('call shapes: collective, dtype, op, root and shape; the caller\'s own view (call) when given', () => {
  const c = ctx(1);
  const x = tensor(new Int32Array(6), { shape: [3, 2] });
  const call = { shape: [6], dim: 0 };
  assert.equal(prepareBroadcast(c, x, { src: 2 })[0], { collective: 'broadcast', dtype: 'int32', root: 2, shape: [3, 2] });
  assert.equal(prepareBroadcast(c, x, { src: 0, call })[0], { collective: 'broadcast', dtype: 'int32', root: 0, ...call });
  assert.equal(prepareAllReduce(c, x, {})[0], { collective: 'allReduce', dtype: 'int32', op: 'sum', shape: [3, 2] });
  assert.equal(prepareAllReduce(c, x, { op: 'max', call })[0], { collective: 'allReduce', dtype: 'int32', op: 'max', ...call });
  const pm = premulSum(2);
  assert.equal(prepareAllReduce(c, x, { op: pm })[0], { collective: 'allReduce', dtype: 'int32', op: pm, shape: [3, 2] });
  assert.equal(prepareAllGather(c, x, {})[0], { collective: 'allGather', dtype: 'int32', shape: [3, 2] });
  assert.equal(prepareAllGather(c, x, { call })[0], { collective: 'allGather', dtype: 'int32', ...call });
  assert.equal(prepareReduceScatter(c, x, { op: 'min' })[0], { collective: 'reduceScatter', dtype: 'int32', op: 'min', shape: [3, 2] });
  assert.equal(prepareReduceScatter(c, x, { call })[0], { collective: 'reduceScatter', dtype: 'int32', op: 'sum', ...call });
  // gather: the root (which checks out) and the others (which do not) send the same shape.
  assert.equal(prepareGather(c, x, { dst: 1 })[0], { collective: 'gather', dtype: 'int32', root: 1, shape: [3, 2] });
  assert.equal(prepareGather(c, x, { dst: 0 })[0], { collective: 'gather', dtype: 'int32', root: 0, shape: [3, 2] });
  assert.equal(prepareGather(c, x, { dst: 0, call })[0], { collective: 'gather', dtype: 'int32', root: 0, ...call });
  // scatter: the out's dtype and shape, on the root and elsewhere.
  const out = empty([1, 2], 'int32');
  assert.equal(prepareScatter(c, undefined, { src: 0, out })[0], { collective: 'scatter', dtype: 'int32', root: 0, shape: [1, 2] });
  assert.equal(prepareScatter(c, x, { src: 1, out })[0], { collective: 'scatter', dtype: 'int32', root: 1, shape: [1, 2] });
  assert.equal(prepareAllToAll(c, x, {})[0], { collective: 'allToAll', dtype: 'int32', shape: [3, 2] });
  assert.equal(prepareAllToAll(c, x, { call })[0], { collective: 'allToAll', dtype: 'int32', ...call });
});

test('checks before anything runs: reduceScatter and allToAll need dim 0 a multiple of 3; scatter\'s input must be out × 3', () => {
  const c = ctx(1);
  const refused = (f: () => unknown, prefix: string) => {
    const e = (() => { try { f(); } catch (x) { return x as { code: string; rank: number; message: string }; } })();
    assert.is(e?.code, 'ERR_GROUPCOMM_INVALID_ARGUMENT', prefix);
    assert.ok(e!.message.startsWith(prefix), e!.message);
  };
  const x = tensor(new Float32Array(4), { shape: [2, 2] });
  refused(() => prepareReduceScatter(c, x, {}), 'reduceScatter: dim 0 of [2, 2] must be a multiple of the world size 3');
  refused(() => prepareReduceScatter(c, tensor(new Float32Array(1), { shape: [] }), {}), 'reduceScatter: dim 0 of [] must be a multiple');
  refused(() => prepareAllToAll(c, tensor(new Float32Array(1), { shape: [] }), {}), 'allToAll: dim 0 of [] must be a multiple');
  const out = empty([2], 'float32');
  refused(() => prepareScatter(c, tensor(new Float32Array(6), { shape: [3, 2] }), { src: 1, out }), 'scatter: input is float32[3, 2], expected float32[6] for out float32[2]');
  refused(() => prepareScatter(c, tensor(new Float32Array(5)), { src: 1, out }), 'scatter: input is float32[5], expected float32[6]');
  refused(() => prepareScatter(c, tensor(new Int32Array(6)), { src: 1, out }), 'scatter: input is int32[6], expected float32[6]');
  // Fewer dims than expected, the ones there matching: out [2, 2] wants [6, 2], not [6].
  refused(() => prepareScatter(c, tensor(new Float32Array(6)), { src: 1, out: empty([2, 2], 'float32') }), 'scatter: input is float32[6], expected float32[6, 2]');
  const b = new Float32Array(6);
  refused(() => prepareScatter(c, tensor(b), { src: 1, out: tensor(b.subarray(2, 4)) }), 'scatter');
  // Not the root: no input needed, none checked.
  assert.is(prepareScatter(c, undefined, { src: 0, out }).length, 2);
});

test('each check names its collective: no tensor, no options, out of another dtype', () => {
  const c = ctx(1);
  const msg = (f: () => unknown) => { try { f(); } catch (e) { return (e as Error).message; } return 'accepted'; };
  const x = tensor(new Float32Array(6));
  const bad = empty([6], 'int32');
  for (const [what, f] of [
    ['broadcast', (t: never, o: never) => prepareBroadcast(c, t, o)],
    ['allReduce', (t: never, o: never) => prepareAllReduce(c, t, o)],
    ['allGather', (t: never, o: never) => prepareAllGather(c, t, o)],
    ['reduceScatter', (t: never, o: never) => prepareReduceScatter(c, t, o)],
    ['gather', (t: never, o: never) => prepareGather(c, t, { dst: 1, ...(o as object) } as never)],
    ['allToAll', (t: never, o: never) => prepareAllToAll(c, t, o)],
  ] as const) {
    assert.is(msg(() => f(null as never, { src: 0 } as never)), `${what}: expected a CPU tensor`, what);
    assert.match(msg(() => f(x as never, { src: 0, out: bad } as never)), new RegExp(`^${what}: out has dtype int32`), what);
  }
  assert.match(msg(() => prepareBroadcast(c, x, undefined as never)), /^broadcast src: rank undefined is not a rank/);
  assert.match(msg(() => prepareGather(c, x, undefined as never)), /^gather dst: rank undefined is not a rank/);
  assert.match(msg(() => prepareScatter(c, x, undefined as never)), /^scatter src: rank undefined is not a rank/);
  assert.match(msg(() => prepareScatter(c, null as never, { src: 1, out: empty([2], 'float32') })), /^scatter: expected a CPU tensor/);
  assert.match(msg(() => prepareScatter(c, x, { src: 0, out: null as never })), /^scatter out: expected a CPU tensor/);
  // A group of one: scatter's out cannot be its input (the only size where they could be the same).
  const one = ctx(0, 1);
  assert.match(msg(() => prepareScatter(one, x, { src: 0, out: x })), /^scatter/);
  assert.is.not(msg(() => prepareScatter(one, x, { src: 0, out: x })), 'accepted');
});

test('a context without shared segments (a group of one): allReduce runs its own body, avg and in place too', async () => {
  const one = ctx(0, 1);
  const ex = { flushed: async () => {} } as unknown as Exchange;
  const x = tensor(Float32Array.from([1, 2, 3]));
  for (const op of ['sum', 'avg', 'max'] as const) {
    const [, body] = prepareAllReduce(one, x, { op });
    const got = await body(ex);
    assert.is.not(got, x);
    assert.equal([...got.data], [1, 2, 3], op);
  }
  const [, inPlace] = prepareAllReduce(one, x, { out: x });
  assert.is(await inPlace(ex), x);
});

/** Runs prepared bodies of 3 ranks (smallBytes 256, chunkBytes 64) over a scripted Exchange; returns the frames each rank sent. */
async function framesOf(prepare: (c: CallContext, r: number) => [unknown, (ex: Exchange) => Promise<unknown>], smallBytes = 256): Promise<number[]> {
  const w = new World(P);
  const ctxs = [0, 1, 2].map((r) => {
    const plans = new Schedules(r, P, 64);
    return new CallContext(r, P, smallBytes, { chunkBytes: 64, window: 2, plans }, new Staging(), plans);
  });
  let t: NodeJS.Timeout | undefined;
  await Promise.race([
    Promise.all(ctxs.map((c, r) => prepare(c, r)[1](w.ranks[r].ex))),
    new Promise((_, rej) => { t = setTimeout(() => rej(new Error('not settled within 3 s')), 3000); }),
  ]).finally(() => clearTimeout(t));
  assert.equal(w.bad, []);
  return [0, 1, 2].map((r) => w.sends(r));
}

test('the algorithm a size takes (frames per rank, 3 ranks): up to smallBytes the latency ones, above it the pipelined ones', async () => {
  const f32 = (r: number, n: number) => tensor(Float32Array.from({ length: n }, (_, i) => r + i));
  // allReduce: recursive doubling (3 ranks: one fold, one exchange, one result; 1, 2, 1 frames)
  // at exactly smallBytes, and above a smaller smallBytes with fewer elements than ranks; the ring
  // (2 (P − 1) steps, two 64-byte segments per block of 260 bytes) above it.
  assert.equal(await framesOf((c, r) => prepareAllReduce(c, f32(r, 64), {})), [1, 2, 1], 'allReduce of 256 bytes');
  assert.equal(await framesOf((c, r) => prepareAllReduce(c, f32(r, 2), {}), 1), [1, 2, 1], 'allReduce of 2 elements, smallBytes 1');
  assert.equal(await framesOf((c, r) => prepareAllReduce(c, f32(r, 65), {})), [8, 8, 8], 'allReduce of 260 bytes');
  // One element per rank is enough for the ring (one 4-byte segment per step).
  assert.equal(await framesOf((c, r) => prepareAllReduce(c, f32(r, 3), {}), 1), [4, 4, 4], 'allReduce of 3 elements, smallBytes 1');
  // broadcast from rank 0: the tree sends the whole buffer to each child (2 frames), the chain
  // 64-byte segments down the chain 0 → 1 → 2 (5 frames of 260 bytes each).
  assert.equal(await framesOf((c, r) => prepareBroadcast(c, f32(r, 64), { src: 0 })), [2, 0, 0], 'broadcast of 256 bytes');
  assert.equal(await framesOf((c, r) => prepareBroadcast(c, f32(r, 65), { src: 0 })), [5, 5, 0], 'broadcast of 260 bytes');
});

test.run();
