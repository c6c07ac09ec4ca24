/**
 * The coordinator's tensor collectives (host/coordinator/tensors.ts) on two coordinators in this
 * process (real store, process group, CPU group, the cpu plugin's device communicator): each
 * collective on CPU and device tensors, along dim 0 and an inner dim (the block reorder), with
 * and without `out`, `out` overlapping the input refused, ranks out of range refused.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { StatelessGroupCoordinator } from '../../host/coordinator/coordinator.js';
import { TcpStore, TcpStoreServer } from '../../host/store/index.js';
import { premulSum } from '../../host/core/premul.js';
import { tensor, type Tensor } from '../../host/core/tensor.js';
import { make, read } from '../helpers/coord_f32.js';

const server = await TcpStoreServer.listen({ port: 0 });
const stores = await Promise.all([0, 1].map(() => TcpStore.create({ port: server.port, timeoutMs: 20_000 })));
const groups = await Promise.all(stores.map((rendezvous, r) => StatelessGroupCoordinator.create({
  groupRanks: [[0, 1]], globalRank: r, groupName: 'ctensors', rendezvous, timeoutMs: 10_000, backend: 'cpu', useDeviceCommunicator: true,
})));

type Where = 'cpu' | 'dev';
/** Rank r's 2×4 input: r·100 + i. */
const input = (g: StatelessGroupCoordinator, r: number, where: Where) => make(g, where, [0, 1, 2, 3, 4, 5, 6, 7].map((i) => r * 100 + i), [2, 4]);
const both = <T>(f: (g: StatelessGroupCoordinator, r: number) => Promise<T>) => Promise.all(groups.map((g, r) => f(g, r)));
async function rejects(p: Promise<unknown>, code: string, re?: RegExp): Promise<{ peerRank?: number }> {
  const e = await p.then(() => undefined, (x) => x);
  assert.is(e?.code, code, String(e));
  if (re) assert.match(String(e.message), re, String(e.message));
  return e;
}

for (const where of ['cpu', 'dev'] as const) {
  test(`${where}: broadcast from rank 1, into out on the receiver`, async () => {
    const r = await both((g, r) => g.broadcast(input(g, r, where), 1));
    for (const [i, t] of r.entries()) assert.equal(read(groups[i], t), [100, 101, 102, 103, 104, 105, 106, 107]);
    const out = make(groups[0], where, new Array(8).fill(0), [2, 4]);
    const r2 = await both((g, r) => g.broadcast(input(g, r, where), 1, r === 0 ? { out } : {}));
    assert.is(r2[0], out);
    assert.equal(read(groups[0], out), [100, 101, 102, 103, 104, 105, 106, 107]);
  });

  test(`${where}: allReduce with the default op, max, premulSum, and out`, async () => {
    const sum = await both((g, r) => g.allReduce(input(g, r, where)));
    assert.equal(read(groups[1], sum[1]), [100, 102, 104, 106, 108, 110, 112, 114]);
    const max = await both((g, r) => g.allReduce(input(g, r, where), { op: 'max' }));
    assert.equal(read(groups[0], max[0]), [100, 101, 102, 103, 104, 105, 106, 107]);
    const half = await both((g, r) => g.allReduce(input(g, r, where), { op: premulSum(0.5) }));
    assert.equal(read(groups[0], half[0]), [50, 51, 52, 53, 54, 55, 56, 57]);
    const out = make(groups[1], where, new Array(8).fill(0), [2, 4]);
    const o = await both((g, r) => g.allReduce(input(g, r, where), r === 1 ? { out } : {}));
    assert.is(o[1], out);
    assert.equal(read(groups[1], out), [100, 102, 104, 106, 108, 110, 112, 114]);
  });

  test(`${where}: allGather along dim 0 and dim 1 (default -1), with out`, async () => {
    const d0 = await both((g, r) => g.allGather(input(g, r, where), 0));
    assert.equal(d0[0].shape, [4, 4]);
    assert.equal(read(groups[0], d0[0]), [0, 1, 2, 3, 4, 5, 6, 7, 100, 101, 102, 103, 104, 105, 106, 107]);
    const d1 = await both((g, r) => g.allGather(input(g, r, where)));
    assert.equal(d1[1].shape, [2, 8]);
    assert.equal(read(groups[1], d1[1]), [0, 1, 2, 3, 100, 101, 102, 103, 4, 5, 6, 7, 104, 105, 106, 107]);
    const out0 = make(groups[0], where, new Array(16).fill(0), [4, 4]);
    const out1 = make(groups[1], where, new Array(16).fill(0), [2, 8]);
    assert.is((await both((g, r) => g.allGather(input(g, r, where), 0, r === 0 ? { out: out0 } : {})))[0], out0);
    assert.is((await both((g, r) => g.allGather(input(g, r, where), 1, r === 1 ? { out: out1 } : {})))[1], out1);
    assert.equal(read(groups[0], out0), [0, 1, 2, 3, 4, 5, 6, 7, 100, 101, 102, 103, 104, 105, 106, 107]);
    assert.equal(read(groups[1], out1), [0, 1, 2, 3, 100, 101, 102, 103, 4, 5, 6, 7, 104, 105, 106, 107]);
  });

  test(`${where}: gather to rank 1 along dim 0 and dim 1; the others get undefined`, async () => {
    const d0 = await both((g, r) => g.gather(input(g, r, where), 1, 0));
    assert.is(d0[0], undefined);
    assert.equal(d0[1]!.shape, [4, 4]);
    assert.equal(read(groups[1], d0[1]!), [0, 1, 2, 3, 4, 5, 6, 7, 100, 101, 102, 103, 104, 105, 106, 107]);
    const d1 = await both((g, r) => g.gather(input(g, r, where), 1, -1));
    assert.is(d1[0], undefined);
    assert.equal(d1[1]!.shape, [2, 8]);
    assert.equal(read(groups[1], d1[1]!), [0, 1, 2, 3, 100, 101, 102, 103, 4, 5, 6, 7, 104, 105, 106, 107]);
    const out = make(groups[1], where, new Array(16).fill(0), [2, 8]);
    const o = await both((g, r) => g.gather(input(g, r, where), 1, 1, r === 1 ? { out } : { out: make(g, where, new Array(3).fill(0), [3]) }));
    assert.is(o[1], out);
    assert.is(o[0], undefined, 'out is ignored off the root');
    assert.equal(read(groups[1], out), [0, 1, 2, 3, 100, 101, 102, 103, 4, 5, 6, 7, 104, 105, 106, 107]);
    const out0 = make(groups[1], where, new Array(16).fill(0), [4, 4]);
    assert.is((await both((g, r) => g.gather(input(g, r, where), 1, 0, r === 1 ? { out: out0 } : {})))[1], out0);
    assert.equal(read(groups[1], out0), [0, 1, 2, 3, 4, 5, 6, 7, 100, 101, 102, 103, 104, 105, 106, 107]);
  });

  test(`${where}: reduceScatter along dim 0 and dim 1, with out and an op`, async () => {
    const d0 = await both((g, r) => g.reduceScatter(input(g, r, where), 0));
    assert.equal(d0[1].shape, [1, 4]);
    assert.equal(read(groups[1], d0[1]), [108, 110, 112, 114]);
    const d1 = await both((g, r) => g.reduceScatter(input(g, r, where)));
    assert.equal(d1[0].shape, [2, 2]);
    assert.equal(read(groups[0], d1[0]), [100, 102, 108, 110]);
    assert.equal(read(groups[1], d1[1]), [104, 106, 112, 114]);
    const out = make(groups[1], where, new Array(4).fill(0), [2, 2]);
    const o = await both((g, r) => g.reduceScatter(input(g, r, where), 1, r === 1 ? { out, op: 'max' } : { op: 'max' }));
    assert.is(o[1], out);
    assert.equal(read(groups[1], out), [102, 103, 106, 107]);
    const out0 = make(groups[0], where, new Array(4).fill(0), [1, 4]);
    const o0 = await both((g, r) => g.reduceScatter(input(g, r, where), 0, r === 0 ? { out: out0 } : {}));
    assert.is(o0[0], out0);
    assert.equal(read(groups[0], out0), [100, 102, 104, 106]);
  });
}

test('an inner-dim out that overlaps the input is refused (allGather, gather, reduceScatter)', async () => {
  const g = groups[0];
  const whole = new Float32Array(16);
  const inp = tensor(whole.subarray(0, 8), { shape: [2, 4] });
  await rejects(g.allGather(inp, 1, { out: tensor(whole, { shape: [2, 8] }) }), 'ERR_GROUPCOMM_INVALID_ARGUMENT', /overlaps|in place/);
  await rejects(g.gather(inp, 0, 1, { out: tensor(whole, { shape: [2, 8] }) }), 'ERR_GROUPCOMM_INVALID_ARGUMENT', /overlaps|in place/);
  await rejects(g.reduceScatter(inp, 1, { out: tensor(whole.subarray(2, 6), { shape: [2, 2] }) }), 'ERR_GROUPCOMM_INVALID_ARGUMENT', /overlaps|in place/);
});

test('a broadcast src or gather dst outside the group is refused, with peerRank', async () => {
  const g = groups[0];
  const t = tensor(Float32Array.of(1, 2));
  assert.is((await rejects(g.broadcast(t, 2), 'ERR_GROUPCOMM_INVALID_ARGUMENT', /src 2/)).peerRank, 2);
  assert.is((await rejects(g.gather(t, -1, 0), 'ERR_GROUPCOMM_INVALID_ARGUMENT', /dst -1/)).peerRank, -1);
});

test('each refusal names its collective: the tensor, out, dim, overlap, root', async () => {
  const g = groups[0];
  const t = tensor(new Float32Array(8), { shape: [2, 4] });
  const alien = { dtype: 'float32', shape: [2], device: 'cuda:0', data: { ptr: 1n, nbytes: 8 } } as Tensor;
  const wrongOut = { out: tensor(new Float32Array(3)) };
  const bad = 'ERR_GROUPCOMM_INVALID_ARGUMENT';
  const overlap = new Float32Array(16);
  const inp = tensor(overlap.subarray(0, 8), { shape: [2, 4] });
  await rejects(g.broadcast(alien, 0), bad, /\): broadcast: tensor is on cuda:0/);
  await rejects(g.broadcast(t, 0, wrongOut), bad, /\): broadcast: out must be/);
  await rejects(g.broadcast(t, 5), bad, /\): broadcast: src 5/);
  await rejects(g.allReduce(alien), bad, /\): allReduce: tensor is on/);
  await rejects(g.allReduce(t, wrongOut), bad, /\): allReduce: out must be/);
  await rejects(g.allGather(alien, 0), bad, /\): allGather: tensor is on/);
  await rejects(g.allGather(t, 2), bad, /\): allGather: dim 2 out of range/);
  await rejects(g.allGather(t, 0, wrongOut), bad, /\): allGather: out must be/);
  await rejects(g.allGather(inp, 1, { out: tensor(overlap, { shape: [2, 8] }) }), bad, /\): allGather: out/);
  await rejects(g.gather(alien, 0, 0), bad, /\): gather: tensor is on/);
  await rejects(g.gather(t, 0, 2), bad, /\): gather: dim 2 out of range/);
  await rejects(g.gather(t, 0, 0, wrongOut), bad, /\): gather: out must be/);
  await rejects(g.gather(t, 7, 0), bad, /\): gather: dst 7/);
  await rejects(g.gather(inp, 0, 1, { out: tensor(overlap, { shape: [2, 8] }) }), bad, /\): gather: out/);
  await rejects(g.reduceScatter(alien, 0), bad, /\): reduceScatter: tensor is on/);
  await rejects(g.reduceScatter(t, 2), bad, /\): reduceScatter: dim 2 out of range/);
  await rejects(g.reduceScatter(tensor(new Float32Array(3)), 0), bad, /\): reduceScatter: dim 0 has size 3/);
  await rejects(g.reduceScatter(t, 0, wrongOut), bad, /\): reduceScatter: out must be/);
  await rejects(g.reduceScatter(inp, 1, { out: tensor(overlap.subarray(2, 6), { shape: [2, 2] }) }), bad, /\): reduceScatter: out/);
  // None of these reached the other rank: the group still works.
  const ok = await both((g2, r) => g2.allReduce(tensor(Float32Array.of(r + 1))));
  assert.equal([...(ok[0].data as Float32Array)], [3]);
});

test.after(async () => {
  await Promise.all(groups.map((g) => g.abort()));
  await Promise.all(stores.map((s) => s.close()));
  await server.close();
});
test.run();
