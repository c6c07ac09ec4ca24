/**
 * The coordinator's variable-size collectives (host/coordinator/variable.ts) on two coordinators
 * in this process (real store, CPU group, the cpu plugin's device communicator, which has the
 * optional allGatherv / reduceScatterv / allToAllv) and on a group of one: allGatherv and
 * reduceScatterv along dim 0 (the communicator's own call for device tensors) and an inner dim
 * (the block transpose, through host memory for device tensors), default sizes, `out`, allToAll
 * with splits and equal by default, and each refusal.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { StatelessGroupCoordinator } from '../../host/coordinator/coordinator.js';
import { TcpStore, TcpStoreServer } from '../../host/store/index.js';
import { premulSum } from '../../host/core/premul.js';
import { tensor, type Tensor } from '../../host/core/tensor.js';
import { CpuBackend } from '../../plugins/cpu/index.js';
import { GroupIo } from '../../host/coordinator/io.js';
import { allGatherv as gatherv, allToAll as toAll, reduceScatterv as scatterv } from '../../host/coordinator/variable.js';
import { Deadline } from '../../host/base/deadline.js';
import type { Net } from '../../host/coordinator/channels.js';
import { make, read } from '../helpers/coord_f32.js';

const server = await TcpStoreServer.listen({ port: 0 });
const stores = await Promise.all([0, 1].map(() => TcpStore.create({ port: server.port, timeoutMs: 20_000 })));
const groups = await Promise.all(stores.map((rendezvous, r) => StatelessGroupCoordinator.create({
  groupRanks: [[0, 1]], globalRank: r, groupName: 'cvar', rendezvous, timeoutMs: 10_000, backend: 'cpu', useDeviceCommunicator: true,
})));
const solo = await StatelessGroupCoordinator.create({
  groupRanks: [[0]], globalRank: 0, groupName: 'cvar1', rendezvous: stores[0], timeoutMs: 10_000, backend: 'cpu', useDeviceCommunicator: true,
});

const vals = (r: number, n: number) => Array.from({ length: n }, (_, i) => r * 100 + i);
const both = <T>(f: (g: StatelessGroupCoordinator, r: number) => Promise<T>) => Promise.all(groups.map((g, r) => f(g, r)));
const live = (g: StatelessGroupCoordinator) => (g.backend as CpuBackend).memory.liveCount;
async function refused(p: Promise<unknown>, re: RegExp, rank?: number): Promise<void> {
  const e = await p.then(() => undefined, (x) => x);
  assert.is(e?.code, 'ERR_GROUPCOMM_INVALID_ARGUMENT', String(e));
  assert.match(String(e.message), re);
  if (rank !== undefined) assert.is(e.rank, rank, 'the refusing group rank');
}

for (const where of ['cpu', 'dev'] as const) {
  test(`${where}: allGatherv along dim 0 and an inner dim, sizes given or equal, into out`, async () => {
    const a = await both((g, r) => g.allGatherv(make(g, where, vals(r, r === 0 ? 2 : 4), [r + 1, 2]), [1, 2], 0));
    for (const [r, t] of a.entries()) {
      assert.equal(t.shape, [3, 2]);
      assert.is(t.device, where === 'cpu' ? 'cpu' : groups[r].device);
      assert.equal(read(groups[r], t), [0, 1, 100, 101, 102, 103]);
    }
    const b = await both((g, r) => g.allGatherv(make(g, where, vals(r, r === 0 ? 2 : 4), [2, r + 1]), [1, 2], 1));
    assert.equal(b[1].shape, [2, 3]);
    assert.equal(read(groups[1], b[1]), [0, 100, 101, 1, 102, 103]);
    const c = await both((g, r) => g.allGatherv(make(g, where, vals(r, 4), [2, 1, 2]), undefined, 1));
    assert.equal(c[0].shape, [2, 2, 2]);
    assert.equal(read(groups[0], c[0]), [0, 1, 100, 101, 2, 3, 102, 103]);
    const outs = groups.map((g) => make(g, where, new Array(6).fill(0), [2, 3]));
    const d = await both((g, r) => g.allGatherv(make(g, where, vals(r, r === 0 ? 2 : 4), [2, r + 1]), [1, 2], -1, { out: outs[r] }));
    assert.is(d[0], outs[0]);
    assert.equal(read(groups[0], outs[0]), [0, 100, 101, 1, 102, 103]);
    const e = await both((g, r) => g.allGatherv(make(g, where, vals(r, r + 1), [r + 1]), [1, 2], 0, { out: make(g, where, [0, 0, 0], [3]) }));
    assert.equal(read(groups[1], e[1]), [0, 100, 101]);
  });

  test(`${where}: reduceScatterv along dim 0 and an inner dim, equal by default, premulSum, into out`, async () => {
    const a = await both((g, r) => g.reduceScatterv(make(g, where, vals(r, 6), [3, 2]), [1, 2], 0));
    assert.equal(a.map((t) => t.shape), [[1, 2], [2, 2]]);
    assert.equal(a.map((t, r) => read(groups[r], t)), [[100, 102], [104, 106, 108, 110]]);
    const b = await both((g, r) => g.reduceScatterv(make(g, where, vals(r, 6), [2, 3]), [1, 2], 1));
    assert.equal(b.map((t) => t.shape), [[2, 1], [2, 2]]);
    assert.equal(b.map((t, r) => read(groups[r], t)), [[100, 106], [102, 104, 108, 110]]);
    const c = await both((g, r) => g.reduceScatterv(make(g, where, vals(r, 4), [4]), undefined, 0, { op: premulSum(0.5) }));
    assert.equal(c.map((t, r) => read(groups[r], t)), [[50, 51], [52, 53]]);
    const d = await both((g, r) => g.reduceScatterv(make(g, where, vals(r, 4), [2, 2]), undefined, -1, { op: 'max' }));
    assert.equal(d.map((t, r) => read(groups[r], t)), [[100, 102], [101, 103]]);
    const outs = groups.map((g, r) => make(g, where, new Array(2 * (r + 1)).fill(0), [2, r + 1]));
    const e = await both((g, r) => g.reduceScatterv(make(g, where, vals(r, 6), [2, 3]), [1, 2], 1, { out: outs[r] }));
    assert.is(e[1], outs[1]);
    assert.equal(read(groups[1], outs[1]), [102, 104, 108, 110]);
  });

  test(`${where}: allToAll with splits, equal by default, into out`, async () => {
    const ins = [[1, 2], [1, 1]];
    const outsSplit = [[1, 1], [2, 1]];
    const a = await both((g, r) => g.allToAll(make(g, where, vals(r, 3 - r), [3 - r, 1]), { inputSplits: ins[r], outputSplits: outsSplit[r] }));
    assert.equal(a.map((t) => t.shape), [[2, 1], [3, 1]]);
    assert.equal(a.map((t, r) => read(groups[r], t)), [[0, 100], [1, 2, 101]]);
    const b = await both((g, r) => g.allToAll(make(g, where, vals(r, 4), [2, 2])));
    assert.equal(b.map((t, r) => read(groups[r], t)), [[0, 1, 100, 101], [2, 3, 102, 103]]);
    const out = make(groups[0], where, [0, 0, 0, 0], [2, 2]);
    const c = await both((g, r) => g.allToAll(make(g, where, vals(r, 4), [2, 2]), r === 0 ? { out } : {}));
    assert.is(c[0], out);
    assert.equal(read(groups[0], out), [0, 1, 100, 101]);
  });
}

test('device tensors along dim 0 use the communicator\'s own variable collectives; inner dims and CPU tensors do not', async () => {
  const calls: string[] = [];
  for (const g of groups) {
    const comm = g.deviceCommunicator as unknown as Record<string, (...a: unknown[]) => unknown>;
    for (const m of ['allGatherv', 'reduceScatterv', 'allToAllv']) {
      const orig = comm[m].bind(comm);
      comm[m] = (...a: unknown[]) => { calls.push(m); return orig(...a); };
    }
  }
  try {
    await both((g, r) => g.allGatherv(make(g, 'dev', vals(r, 2), [2]), undefined, 0));
    await both((g, r) => g.reduceScatterv(make(g, 'dev', vals(r, 2), [2]), undefined, 0));
    await both((g, r) => g.reduceScatterv(make(g, 'dev', vals(r, 2), [2]), undefined, 0, { op: premulSum(2) }));
    await both((g, r) => g.allToAll(make(g, 'dev', vals(r, 2), [2])));
    assert.equal(calls, ['allGatherv', 'allGatherv', 'reduceScatterv', 'reduceScatterv', 'reduceScatterv', 'reduceScatterv', 'allToAllv', 'allToAllv']);
    calls.length = 0;
    await both((g, r) => g.allGatherv(make(g, 'dev', vals(r, 4), [2, 2]), undefined, 1));
    await both((g, r) => g.reduceScatterv(make(g, 'dev', vals(r, 4), [2, 2]), undefined, 1));
    for (const where of ['cpu'] as const) {
      await both((g, r) => g.allGatherv(make(g, where, vals(r, 2), [2]), undefined, 0));
      await both((g, r) => g.reduceScatterv(make(g, where, vals(r, 2), [2]), undefined, 0));
      await both((g, r) => g.allToAll(make(g, where, vals(r, 2), [2])));
    }
    assert.equal(calls, [], 'through the CPU group');
  } finally {
    for (const g of groups) {
      const comm = g.deviceCommunicator as unknown as Record<string, unknown>;
      for (const m of ['allGatherv', 'reduceScatterv', 'allToAllv']) delete comm[m];
    }
  }
});

test('device tensors through host memory leave no staging memory behind', async () => {
  // Both ranks' backends are the one cpu plugin of this process: one memory.
  assert.is(groups[0].backend, groups[1].backend);
  const before = live(groups[0]);
  const r = await both((g, r) => g.allGatherv(make(g, 'dev', vals(r, 4), [2, 2]), undefined, 1));
  const s = await both((g, r) => g.reduceScatterv(make(g, 'dev', vals(r, 4), [2, 2]), undefined, 1));
  assert.is(live(groups[0]), before + 8, 'inputs and results of both ranks only');
  for (const [i, g] of groups.entries()) { g.free(r[i]); g.free(s[i]); }
});

test('refusals: sizes that disagree with the tensor or the dim, 0-d tensors, splits that do not add up, out = input', async () => {
  const g = groups[0];
  const t = tensor(Float32Array.of(1, 2, 3), { shape: [3] });
  await refused(g.allGatherv(t, [2, 3], 0), /allGatherv: group rank 0's tensor has 3 along dim 0, sizes\[0\] says 2/, 0);
  await refused(groups[1].allGatherv(t, [2, 2], 0), /allGatherv: group rank 1's tensor has 3 along dim 0, sizes\[1\] says 2/, 1);
  await refused(g.reduceScatterv(t, [1, 1, 1], 0), /reduceScatterv sizes/);
  await refused(g.allToAll(t, { inputSplits: [3] }), /allToAll inputSplits/);
  await refused(g.allToAll(t, { inputSplits: [1, 2] }), /allToAll output: dim 0 has size 3, not divisible/);
  await refused(g.allGatherv(t, [3], 0), /allGatherv sizes/);
  await refused(g.reduceScatterv(t, [1, 1], 0), /reduceScatterv: dim 0 has size 3, the sizes \[1, 1\] add up to 2/, 0);
  await refused(groups[1].reduceScatterv(t, [1, 1], 0), /add up to 2/, 1);
  await refused(g.reduceScatterv(t, undefined, 0), /reduceScatterv: dim 0 has size 3, not divisible by the world size 2/);
  await refused(g.reduceScatterv(tensor(Float32Array.of(1), { shape: [] }), undefined, 0), /reduceScatterv: cannot scatter a 0-d tensor/);
  await refused(g.allToAll(tensor(Float32Array.of(1), { shape: [] })), /allToAll: a 0-d tensor has no rows/);
  await refused(g.allToAll(t, { inputSplits: [1, 1], outputSplits: [1, 2] }), /allToAll: dim 0 has 3 rows, inputSplits add up to 2/, 0);
  await refused(groups[1].allToAll(t, { inputSplits: [1, 1], outputSplits: [1, 2] }), /inputSplits add up to 2/, 1);
  await refused(g.allToAll(t), /allToAll input: dim 0 has size 3, not divisible/);
  await refused(g.allToAll(tensor(Float32Array.of(1, 2)), { outputSplits: [1, 2, 3] }), /allToAll outputSplits/);
  await refused(g.allGatherv({ ...t, device: 'cuda:0' }, undefined, 0), /allGatherv: tensor is on cuda:0/);
  await refused(g.reduceScatterv({ ...t, device: 'cuda:0' }, undefined, 0), /reduceScatterv: tensor is on cuda:0/);
  await refused(g.allToAll({ ...t, device: 'cuda:0' }), /allToAll: tensor is on cuda:0/);
  await refused(g.allGatherv(t, undefined, 0, { out: tensor(new Float32Array(5)) }), /allGatherv: out must be float32\[6\]/);
  // A group of one: out may not be the input (the result has the input's shape there).
  const x = tensor(Float32Array.of(1, 2), { shape: [2] });
  await refused(solo.allGatherv(x, undefined, 0, { out: x }), /allGatherv: out is the input/);
  await refused(solo.reduceScatterv(x, undefined, 0, { out: x }), /reduceScatterv: out is the input/);
  await refused(solo.allToAll(x, { out: x }), /allToAll: out is the input/);
  await refused(solo.allToAll(x, { inputSplits: [2], outputSplits: [1] }), /allToAll: a group of one sends itself 2 rows but expects 1/);
});

test('a group of one: a copy of the input (scaled by premulSum), into out when given; a 0-d input gathers to [1]', async () => {
  const x = tensor(Float32Array.of(2, 4), { shape: [2, 1] });
  const a = await solo.allGatherv(x, [2], 0);
  assert.ok(a !== x);
  assert.equal([a.shape, read(solo, a)], [[2, 1], [2, 4]]);
  assert.equal(read(solo, await solo.reduceScatterv(x, [2], 0, { op: premulSum(0.5) })), [1, 2]);
  assert.equal(read(solo, await solo.reduceScatterv(x, undefined, 1)), [2, 4]);
  const out = tensor(new Float32Array(2), { shape: [2, 1] });
  assert.is(await solo.allToAll(x, { out }), out);
  assert.equal(read(solo, out), [2, 4]);
  const d = make(solo, 'dev', [5, 6], [2]);
  const dout = make(solo, 'dev', [0, 0], [2]);
  const before = live(solo);
  assert.is(await solo.reduceScatterv(d, undefined, 0, { out: dout, op: premulSum(2) }), dout);
  assert.equal(read(solo, dout), [10, 12]);
  assert.is(live(solo), before, 'the local result was freed after the copy into out');
  const z = await solo.allGatherv(tensor(Float32Array.of(7), { shape: [] }), undefined, 0);
  assert.equal(z.shape, [1]);
  assert.equal(read(solo, z), [7]);
});

test('called directly with stand-in channels: refusals carry the group rank; premulSum without the backend\'s support goes through host memory', async () => {
  const used: string[] = [];
  const b = new CpuBackend();
  const cpu = { reduceScatterv: async (x: Tensor) => { used.push('cpu'); return tensor(new Float32Array(x.shape[1] ?? 1)); } };
  const comm = { reduceScatterv: async () => { used.push('comm'); throw new Error('not this way'); } };
  const mk = (caps: boolean) => {
    const be = new CpuBackend();
    Object.defineProperty(be, 'capabilities', { value: { ...b.capabilities, premulSum: caps } });
    return new GroupIo('g_0', 2, 1, 'host:0', be, { cpu, comm, pg: {} } as unknown as Net);
  };
  const dl = () => new Deadline(5_000, undefined, 'x');
  const io = mk(false);
  const t = tensor(Float32Array.of(1, 2, 3), { shape: [3] });
  // The checks run when the call is made (before it is queued), so a refusal throws there.
  const rank = (plan: () => unknown) => {
    try { plan(); } catch (e) { return (e as { rank?: number }).rank; }
    return 'not refused';
  };
  assert.is(rank(() => gatherv(io, t, [3, 2], 0, {})), 1);
  assert.is(rank(() => scatterv(io, t, [1, 1], 0, {})), 1);
  assert.is(rank(() => toAll(io, t, { inputSplits: [1, 1], outputSplits: [1, 2] })), 1);
  const d = io.empty([2], 'float32', 'host:0');
  const r = await scatterv(io, d, undefined, 0, { op: premulSum(2) })(dl(), 0);
  assert.equal(used, ['cpu'], 'premulSum on a backend without it: the CPU group');
  assert.equal(r.shape, [1]);
  io.free(d);
  io.free(r);
  used.length = 0;
  const io2 = mk(true);
  const d2 = io2.empty([2], 'float32', 'host:0');
  await scatterv(io2, d2, undefined, 0, { op: premulSum(2) })(dl(), 0).catch(() => undefined);
  assert.equal(used, ['comm'], 'with it: the communicator');
  io2.free(d2);
});

test('close', async () => {
  await Promise.all([...groups, solo].map((g) => g.abort()));
  await Promise.all(stores.map((s) => s.close()));
  await server.close();
});

test.run();
