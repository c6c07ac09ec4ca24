/**
 * The pieces of a coordinator that need no peer: the local channel of a group of one
 * (host/coordinator/local.ts) through a recording LocalIo over CPU tensors, checkRank (ops.ts),
 * and checkLaunchedWorld (env.ts) under `groupcomm launch`'s variables.
 *
 * LocalChannel: every collective returns a copy (a new tensor, or `out`), in place only for
 * allReduce and broadcast; `out` of another dtype, element count or device refused; premulSum
 * scales the result (never the input), other ops leave one input as it is; send/recv refused.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { LocalChannel, type LocalIo } from '../../host/coordinator/local.js';
import { checkRank } from '../../host/coordinator/ops.js';
import { checkLaunchedWorld } from '../../host/coordinator/env.js';
import { premulSum, type PreMulSum } from '../../host/core/premul.js';
import { bytesOf, empty, tensor, type CpuTensor, type Tensor } from '../../host/core/tensor.js';
import type { CoordinatorOptions } from '../../host/coordinator/types.js';

function local() {
  const calls: string[] = [];
  const io: LocalIo = {
    empty: (shape, dtype, device) => { calls.push(`empty ${device}`); return { ...empty(shape, dtype), device }; },
    copy: (dst, src) => { calls.push('copy'); bytesOf(dst as CpuTensor).set(bytesOf(src as CpuTensor)); },
    scale: (t, op: PreMulSum) => {
      calls.push(`scale ${op.factor}`);
      const d = (t as CpuTensor).data as Float32Array;
      for (let i = 0; i < d.length; i++) d[i] *= op.factor;
    },
  };
  return { ch: new LocalChannel(io), calls };
}
const f32 = (...v: number[]) => tensor(Float32Array.from(v));
const vals = (t: Tensor | undefined) => [...((t as CpuTensor).data as Float32Array)];
async function refused(p: Promise<unknown> | (() => unknown), re: RegExp): Promise<Record<string, unknown>> {
  const e = await (typeof p === 'function' ? Promise.resolve().then(p) : p).then(() => undefined, (x) => x);
  assert.is(e?.code, 'ERR_GROUPCOMM_INVALID_ARGUMENT', String(e));
  assert.match(String(e.message), re);
  return e;
}

test('rank 0 of 1; a collective without out returns a new tensor holding a copy (the input untouched)', async () => {
  const { ch, calls } = local();
  assert.is(ch.rank, 0);
  assert.is(ch.worldSize, 1);
  for (const run of [
    (x: Tensor) => ch.allReduce(x), (x: Tensor) => ch.allGather(x), (x: Tensor) => ch.reduceScatter(x),
    (x: Tensor) => ch.broadcast(x, { src: 0 }), (x: Tensor) => ch.gather(x, { dst: 0 }), (x: Tensor) => ch.allToAll(x),
  ]) {
    calls.length = 0;
    const x = f32(1, 2, 3);
    const r = await run(x);
    assert.ok(r !== x && r!.data !== x.data, 'a new tensor');
    assert.equal(vals(r), [1, 2, 3]);
    assert.equal(r!.shape, [3]);
    assert.equal(calls, ['empty cpu', 'copy']);
  }
  // The defaults: allReduce and reduceScatter sum (one input: itself), no options object needed.
  const { ch: c2 } = local();
  const on = { ...f32(4), device: 'host:0' } as Tensor;
  assert.is((await c2.allReduce(on)).device, 'host:0', 'the new tensor is on the input\'s device');
  const s = tensor(Float32Array.of(1, 2, 3, 4), { shape: [2, 2] });
  assert.equal((await ch.allGather(s)).shape, [2, 2]);
  assert.equal((await ch.reduceScatter(s)).shape, [2, 2]);
  assert.equal((await ch.allToAll(s)).shape, [2, 2]);
  assert.equal((await ch.gather(s, { dst: 0 }))!.shape, [2, 2]);
  assert.equal((await ch.broadcast(s, { src: 0 })).shape, [2, 2]);
  assert.equal((await ch.allGather(tensor(Float32Array.of(7), { shape: [] }))).shape, [1], 'a 0-d input gathers to [1]');
});

test('out: written and returned; in place only for allReduce and broadcast (no copy); the others refuse out = input', async () => {
  const { ch, calls } = local();
  const x = f32(1, 2);
  const out = f32(0, 0);
  for (const r of [
    await ch.allReduce(x, { out }), await ch.allGather(x, { out }), await ch.reduceScatter(x, { out }),
    await ch.broadcast(x, { src: 0, out }), await ch.gather(x, { dst: 0, out }), await ch.allToAll(x, { out }),
  ]) {
    assert.is(r, out);
  }
  assert.equal(vals(out), [1, 2]);
  assert.equal(calls, new Array(6).fill('copy'), 'out is filled, nothing allocated');
  calls.length = 0;
  assert.is(await ch.allReduce(x, { out: x }), x);
  assert.is(await ch.broadcast(x, { src: 0, out: x }), x);
  assert.equal(calls, [], 'in place: no copy');
  await refused(ch.allGather(x, { out: x }), /^allGather: out is the input/);
  await refused(ch.reduceScatter(x, { out: x }), /^reduceScatter: out is the input/);
  await refused(ch.gather(x, { dst: 0, out: x }), /^gather: out is the input/);
  await refused(ch.allToAll(x, { out: x }), /^allToAll: out is the input/);
  // An out of another shape but as many elements is fine (the channel works on element counts).
  const o2 = tensor(new Float32Array(2), { shape: [1, 2] });
  assert.is(await ch.allReduce(x, { out: o2 }), o2);
  assert.equal(vals(o2), [1, 2]);
});

test('out of another dtype, element count or device is refused, naming the collective', async () => {
  const { ch, calls } = local();
  const x = f32(1, 2);
  await refused(ch.allReduce(x, { out: tensor(Int32Array.of(0, 0)) }), /^allReduce: out must hold 2 × float32 on cpu, got \[2\] int32 on cpu/);
  await refused(ch.broadcast(x, { src: 0, out: f32(0, 0, 0) }), /^broadcast: out must hold 2 × float32/);
  await refused(ch.allGather(x, { out: { ...f32(0, 0), device: 'host:0' } as Tensor }), /^allGather: .* on host:0$/);
  assert.equal(calls, []);
});

test('premulSum scales the result, not the input; other ops and the default leave it as it is; bad ops refused', async () => {
  const { ch, calls } = local();
  const x = f32(2, 4);
  assert.equal(vals(await ch.allReduce(x, { op: premulSum(0.5) })), [1, 2]);
  assert.equal(vals(await ch.reduceScatter(x, { op: premulSum(3) })), [6, 12]);
  assert.equal(vals(x), [2, 4], 'the input untouched');
  const out = f32(0, 0);
  assert.is(await ch.allReduce(x, { op: premulSum(2), out }), out);
  assert.equal(vals(out), [4, 8]);
  assert.equal(calls.filter((c) => c.startsWith('scale')), ['scale 0.5', 'scale 3', 'scale 2']);
  calls.length = 0;
  for (const op of ['sum', 'max', 'min', 'prod', 'avg'] as const) {
    assert.equal(vals(await ch.allReduce(x, { op })), [2, 4]);
    assert.equal(vals(await ch.reduceScatter(x, { op })), [2, 4]);
  }
  assert.equal(vals(await ch.allReduce(x, {})), [2, 4]);
  assert.equal(calls.filter((c) => c.startsWith('scale')), []);
  await refused(ch.allReduce(x, { op: 'mean' as never }), /unknown reduce op 'mean'/);
  await refused(ch.reduceScatter(x, { op: 'mean' as never }), /unknown reduce op 'mean'/);
  await refused(ch.allReduce(tensor(Uint8Array.of(1), { dtype: 'bool' }), { op: 'avg' }), /'avg' is not defined for bool/);
  await refused(ch.reduceScatter(tensor(Uint8Array.of(1), { dtype: 'bool' }), { op: 'avg' }), /'avg' is not defined for bool/);
});

test('send and recv are refused (no peer); barrier resolves', async () => {
  const { ch } = local();
  await refused(ch.send(f32(1), 0), /^send: a group of one rank has no peer/);
  await refused(ch.recv(f32(1), 0), /^recv: a group of one rank has no peer/);
  assert.is(await ch.barrier(), undefined);
});

test('checkRank: integers in [0, ws) pass; others are refused naming the role and carrying peerRank', async () => {
  checkRank(0, 1, 'x', 'src');
  checkRank(2, 3, 'x', 'src');
  for (const r of [3, -1, 1.5, NaN]) {
    const e = await refused(() => checkRank(r, 3, 'gather', 'dst'), /^gather: dst .* is not a rank of this group \(expected an integer in \[0, 3\)\)/);
    assert.ok(Object.is(e.peerRank, r), String(e.peerRank));
  }
});

test('checkLaunchedWorld: under a launch, a group naming a rank >= WORLD_SIZE is refused at once', async () => {
  const saved = { run: process.env.GROUPCOMM_RUN_ID, ws: process.env.WORLD_SIZE };
  const o = (groupRanks: number[][], extra: Partial<CoordinatorOptions> = {}) => ({ groupRanks, globalRank: 1, ...extra }) as CoordinatorOptions;
  try {
    delete process.env.GROUPCOMM_RUN_ID;
    process.env.WORLD_SIZE = '2';
    checkLaunchedWorld(o([[0, 1, 5]]));  // not launched: nothing to check against
    process.env.GROUPCOMM_RUN_ID = 'run-1';
    checkLaunchedWorld(o([[0, 1], [1]]));
    checkLaunchedWorld(o([[0, 1, 5]], { globalWorldSize: 6 }));  // the program says how many it starts
    checkLaunchedWorld(o('x' as never));  // not a list: refused elsewhere
    const e = await refused(() => checkLaunchedWorld(o([[0, 3, 2], [4, 3, 1.5, 2]])),
      /^groupRanks \[\[0,3,2\],\[4,3,1\.5,2\]\] names rank\(s\) 2, 3, 4, but this launch started WORLD_SIZE=2 ranks \(0\.\.1\).* Launch 5 ranks \(groupcomm launch -n 5, or --nnodes × --nproc-per-node = 5\)/);
    assert.is(e.rank, 1);
    process.env.WORLD_SIZE = '10';
    const e2 = await refused(() => checkLaunchedWorld(o([[9, 12, 100, 10]])), /names rank\(s\) 10, 12, 100, but .*WORLD_SIZE=10 .*\(0\.\.9\).*-n 101/);
    assert.is(e2.rank, 1);
  } finally {
    if (saved.run === undefined) delete process.env.GROUPCOMM_RUN_ID; else process.env.GROUPCOMM_RUN_ID = saved.run;
    if (saved.ws === undefined) delete process.env.WORLD_SIZE; else process.env.WORLD_SIZE = saved.ws;
  }
});

test.run();
