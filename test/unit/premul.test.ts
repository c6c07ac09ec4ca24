// premulSum(factor) (NCCL's ncclRedOpCreatePreMulSum, PyTorch's _make_nccl_premul_sum): the
// scalar in the tensor's dtype (integers truncated toward zero and range-checked, floats rounded),
// products in the dtype's arithmetic, then summed; on the CPU group (every rank's frames carry it
// in the fingerprint), the cpu plugin's communicators (group and bootstrap transports) and a
// coordinator of one rank. Results element by element against a reference computed here.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { CpuGroup } from '../../host/cpu/group.js';
import { TcpStore, TcpStoreServer } from '../../host/store/index.js';
import { tensor, type CpuTensor, type DType, type Tensor } from '../../host/core/tensor.js';
import { premulScalar, premulScalarBytes, premulSum, scaleBytes } from '../../host/core/premul.js';
import { describeMismatch, fingerprint } from '../../host/cpu/fingerprint.js';
import { storeBootstrap } from '../../host/device/bootstrap.js';
import { fromDevice, toDevice } from '../../host/device/tensors.js';
import type { DeviceCommunicatorV1 } from '../../host/device/types.js';
import { StatelessGroupCoordinator } from '../../host/coordinator/coordinator.js';
import { isGroupcommError } from '../../host/base/errors.js';
import { CpuBackend } from '../../plugins/cpu/index.js';

let store: TcpStore;
let n = 0;
test.before(async () => { store = await TcpStore.create({ port: 0, isServer: true }); });
test.after(async () => { await store.close(); });

const invalid = (e: unknown) => isGroupcommError(e, 'ERR_GROUPCOMM_INVALID_ARGUMENT' as never);
function throws(fn: () => unknown, re: RegExp): void {
  try { fn(); } catch (e) { assert.ok(invalid(e), String(e)); assert.match((e as Error).message, re); return; }
  assert.unreachable('did not throw');
}

test('the scalar has the tensor\'s dtype: integers truncated toward zero and range-checked, floats rounded', () => {
  assert.is(premulScalar('int32', premulSum(2.7)), 2);
  assert.is(premulScalar('int32', premulSum(-2.7)), -2);
  assert.is(premulScalar('int64', premulSum(-3.5)), -3n);
  assert.is(premulScalar('float16', premulSum(0.1)), 0.0999755859375);
  assert.is(premulScalar('float32', premulSum(0.1)), Math.fround(0.1));
  assert.is(premulScalar('float64', premulSum(0.1)), 0.1);
  assert.equal([...premulScalarBytes('bfloat16', premulSum(0.5))], [0x00, 0x3f]);
  throws(() => premulScalar('uint8', premulSum(-1)), /outside \[0, 255\]/);
  throws(() => premulScalar('int8', premulSum(200)), /outside \[-128, 127\]/);
  throws(() => premulScalar('bool', premulSum(1)), /not defined for bool/);
  throws(() => premulSum(Number.NaN), /finite/);
  assert.ok(Object.isFrozen(premulSum(2)));
});

test('products in the dtype: integers wrap, small floats round once', () => {
  const x = new Int8Array([100, -100, 3]);
  const y = new Int8Array(3);
  scaleBytes('int8', new Uint8Array(y.buffer), new Uint8Array(x.buffer), premulSum(3));
  assert.equal([...y], [300 - 256, -300 + 256, 9]);
  const u = new Uint32Array([0x80000001, 7]);
  scaleBytes('uint32', new Uint8Array(u.buffer), new Uint8Array(u.buffer), premulSum(2));
  assert.equal([...u], [2, 14]);
  const l = new BigInt64Array([2n ** 62n, -5n]);
  scaleBytes('int64', new Uint8Array(l.buffer), new Uint8Array(l.buffer), premulSum(-4));
  assert.equal([...l], [0n, 20n]); // -2^64 wraps to 0
  // An unaligned view takes the element-wise path and gives the same bits.
  const raw = new Uint8Array(9);
  new DataView(raw.buffer).setFloat32(1, 3, true);
  new DataView(raw.buffer).setFloat32(5, -1.5, true);
  scaleBytes('float32', raw.subarray(1), raw.subarray(1), premulSum(0.5));
  assert.equal([new DataView(raw.buffer).getFloat32(1, true), new DataView(raw.buffer).getFloat32(5, true)], [1.5, -0.75]);
});

test('the CPU group\'s fingerprint tells premulSum from every named op', () => {
  const shape = { collective: 'allReduce' as const, dtype: 'float32' as const, shape: [4] };
  const pre = fingerprint({ ...shape, op: premulSum(2) });
  for (const op of ['sum', 'prod', 'min', 'max', 'avg'] as const) assert.is.not(fingerprint({ ...shape, op }), pre, op);
  assert.match(describeMismatch(pre, fingerprint({ ...shape, op: 'sum' }), 1).text, 'op (premulSum here, sum on rank 1)');
});

async function groupOf(ws: number): Promise<CpuGroup[]> {
  const groupName = `pm-${n++}`;
  return Promise.all([...Array(ws).keys()].map((rank) => CpuGroup.create({ store, rank, worldSize: ws, groupName, timeoutMs: 20_000 })));
}

/** Rank r's input: element i is base(r, i), in `dtype`. */
const ints = (r: number, i: number) => (r + 1) * (i % 7) - 3 * r + 1;
const arr = (dtype: DType, count: number, r: number, f: (r: number, i: number) => number): CpuTensor => {
  const C = { int32: Int32Array, int8: Int8Array, float32: Float32Array, float64: Float64Array } as Record<string, new (n: number) => { [i: number]: number }>;
  const a = new C[dtype](count);
  for (let i = 0; i < count; i++) a[i] = f(r, i);
  return tensor(a as never);
};
const wrap = (dtype: DType, v: number) => (dtype === 'int8' ? ((v + 128) & 255) - 128 : dtype === 'int32' ? v | 0 : v);

// [dtype, factor, the scalar it becomes, inputs]: the integer scalar is truncated (2.7 → 2), so a
// product with 2.7 (or a rounded 3) would give other sums.
const CASES: [DType, number, number, (r: number, i: number) => number][] = [
  ['int32', 2.7, 2, ints],
  ['int8', -3.9, -3, (r, i) => 40 * r + i], // products wrap in int8
  ['float32', 0.5, 0.5, (r, i) => r - i / 4],
  ['float64', -0.25, -0.25, (r, i) => r * 1024 + i],
];

for (const count of [5, 70_000]) {
  test(`CPU group, 3 ranks, ${count} elements: allReduce (in place and not), reduceScatter and reduceScatterv with premulSum`, async () => {
    const gs = await groupOf(3);
    try {
      for (const [dtype, factor, s, f] of CASES) {
        const op = premulSum(factor);
        const c = count - (count % 3);
        const ref = (i: number) => wrap(dtype, [0, 1, 2].reduce((a, r) => a + wrap(dtype, s * f(r, i)), 0));
        const xs = gs.map((_, r) => arr(dtype, c, r, f));
        const outs = await Promise.all(gs.map((g, r) => g.allReduce(xs[r], { op })));
        const inPlace = await Promise.all(gs.map((g, r) => { const x = arr(dtype, c, r, f); return g.allReduce(x, { op, out: x }); }));
        const rs = await Promise.all(gs.map((g, r) => g.reduceScatter({ ...xs[r], shape: [c] }, { op })));
        const sizes = [1, c - 3, 2];
        const rsv = await Promise.all(gs.map((g, r) => g.reduceScatterv({ ...xs[r], shape: [c, 1] }, { op, sizes })));
        for (let r = 0; r < 3; r++) {
          for (let i = 0; i < c; i++) {
            if (outs[r].data[i] !== ref(i) || inPlace[r].data[i] !== ref(i)) assert.unreachable(`${dtype} allReduce rank ${r} [${i}]: ${outs[r].data[i]} / ${inPlace[r].data[i]}, expected ${ref(i)}`);
            assert.is(xs[r].data[i], f(r, i) === wrap(dtype, f(r, i)) ? f(r, i) : wrap(dtype, f(r, i)), 'the input is unchanged');
          }
          for (let i = 0; i < c / 3; i++) if (rs[r].data[i] !== ref(r * (c / 3) + i)) assert.unreachable(`${dtype} reduceScatter rank ${r} [${i}]`);
          const at = sizes.slice(0, r).reduce((a, b) => a + b, 0);
          for (let i = 0; i < sizes[r]; i++) if (rsv[r].data[i] !== ref(at + i)) assert.unreachable(`${dtype} reduceScatterv rank ${r} [${i}]: ${rsv[r].data[i]} vs ${ref(at + i)}`);
        }
      }
    } finally {
      await Promise.all(gs.map((g) => g.close()));
    }
  });
}

test('CPU group: premulSum on one rank and sum on the others is a MISMATCH naming the op; a bad factor is refused before sending', async () => {
  const gs = await groupOf(2);
  try {
    const res = await Promise.allSettled(gs.map((g, r) => g.allReduce(tensor(new Float32Array(4).fill(1)), { op: r === 1 ? 'sum' : premulSum(2) })));
    for (const x of res) {
      assert.is(x.status, 'rejected');
      assert.ok(isGroupcommError((x as PromiseRejectedResult).reason, 'ERR_GROUPCOMM_MISMATCH' as never), String((x as PromiseRejectedResult).reason));
      assert.match(String((x as PromiseRejectedResult).reason), /op \((premulSum|sum) here, (sum|premulSum) on rank/);
    }
  } finally {
    await Promise.all(gs.map((g) => g.abort()));
  }
  const [g] = await groupOf(1);
  const e = await g.allReduce(tensor(new Uint8Array(2)), { op: premulSum(-1) }).then(() => null, (x) => x);
  assert.ok(invalid(e), String(e));
  await g.close();
});

const b = new CpuBackend();
async function comms(ws: number, withStore: boolean): Promise<DeviceCommunicatorV1[]> {
  const prefix = `pmc-${n++}`;
  // Without the whole Store behind it the bootstrap exposes no store: the bootstrap transport.
  const s = (r: number) => withStore ? store : { set: store.set.bind(store), get: store.get.bind(store), add: store.add.bind(store), check: store.check.bind(store), wait: store.wait.bind(store), deleteKey: store.deleteKey.bind(store) };
  return Promise.all([...Array(ws).keys()].map((rank) => b.createCommunicator({ rank, worldSize: ws, deviceIndex: rank, timeoutMs: 20_000, bootstrap: storeBootstrap(s(rank), { rank, worldSize: ws, prefix }) })));
}
const dev = (t: CpuTensor, i: number): Tensor => toDevice(b, t, i);
const host = (t: Tensor) => [...fromDevice(b, t).data as Int32Array];

for (const withStore of [true, false]) {
  test(`cpu plugin (${withStore ? 'group' : 'bootstrap'} transport), 3 ranks: allReduce, reduceScatter, reduceScatterv with premulSum on int32 (factor 2.7 → 2)`, async () => {
    const cs = await comms(3, withStore);
    try {
      const op = premulSum(2.7);
      const ref = (i: number) => [0, 1, 2].reduce((a, r) => a + 2 * ints(r, i), 0);
      const xs = cs.map((_, r) => dev(arr('int32', 6, r, ints), r));
      const ar = await Promise.all(cs.map((c, r) => c.allReduce(xs[r], { op })));
      const rs = await Promise.all(cs.map((c, r) => c.reduceScatter(xs[r], { op })));
      const rsv = await Promise.all(cs.map((c, r) => c.reduceScatterv!({ ...xs[r], shape: [6, 1] }, { op, sizes: [3, 0, 3] })));
      for (let r = 0; r < 3; r++) {
        assert.equal(host(ar[r]), [0, 1, 2, 3, 4, 5].map(ref), `allReduce rank ${r}`);
        assert.equal(host(rs[r]), [2 * r, 2 * r + 1].map(ref), `reduceScatter rank ${r}`);
        assert.equal(host(rsv[r]), r === 1 ? [] : [0, 1, 2].map((i) => ref(i + (r === 2 ? 3 : 0))), `reduceScatterv rank ${r}`);
        assert.equal(host(xs[r]), [0, 1, 2, 3, 4, 5].map((i) => ints(r, i)), 'the input is unchanged');
      }
    } finally {
      await Promise.all(cs.map((c) => c.close()));
    }
  });
}

test('a coordinator of one rank: premulSum scales its own input (CPU and device tensors), the input unchanged', async () => {
  const g = await StatelessGroupCoordinator.create({ groupRanks: [[0]], globalRank: 0, backend: 'cpu', useDeviceCommunicator: true });
  try {
    const x = tensor(new Int32Array([1, -2, 3]));
    assert.equal([...(await g.allReduce(x, { op: premulSum(-2.5) })).data as Int32Array], [-2, 4, -6]);
    assert.equal([...x.data as Int32Array], [1, -2, 3]);
    const d = toDevice(g.backend!, tensor(new Float32Array([1, 2, 3, 4])), 0);
    const r = await g.reduceScatter(d, 0, { op: premulSum(0.5) });
    assert.equal([...fromDevice(g.backend!, r).data as Float32Array], [0.5, 1, 1.5, 2]);
    assert.equal([...fromDevice(g.backend!, d).data as Float32Array], [1, 2, 3, 4]);
  } finally {
    await g.close();
  }
});

test('coordinators of two ranks: premulSum on CPU tensors (the CPU group) and device tensors (the cpu plugin\'s communicator)', async () => {
  const server = await TcpStoreServer.listen({ port: 0 });
  const clients = await Promise.all([0, 1].map(() => TcpStore.create({ port: server.port, timeoutMs: 20_000 })));
  const gs = await Promise.all([0, 1].map((r) => StatelessGroupCoordinator.create({
    groupRanks: [[0, 1]], globalRank: r, localRank: r, groupName: 'pmco', rendezvous: clients[r], timeoutMs: 20_000, backend: 'cpu', useDeviceCommunicator: true,
  })));
  try {
    const cpuSums = await Promise.all(gs.map((g, r) => g.allReduce(tensor(new Int32Array([r + 1, -(r + 1)])), { op: premulSum(3.9) })));
    assert.equal(cpuSums.map((x) => [...x.data as Int32Array]), [[9, -9], [9, -9]]); // 3·(1 + 2)
    const devs = gs.map((g, r) => toDevice(g.backend!, tensor(Float32Array.from([4, 8, 2, 6], (v) => v * (r + 1))), r));
    const rs = await Promise.all(gs.map((g, r) => g.reduceScatter(devs[r], 0, { op: premulSum(0.25) })));
    assert.equal(rs.map((x, r) => [...fromDevice(gs[r].backend!, x).data as Float32Array]), [[3, 6], [1.5, 4.5]]);
    // A backend without capabilities.premulSum: refused on device tensors, except reduceScatterv, which then goes through host memory.
    const caps = gs[0].backend!.capabilities as { premulSum?: boolean };
    caps.premulSum = false;
    try {
      const e = await gs[0].allReduce(devs[0], { op: premulSum(2) }).then(() => null, (x) => x);
      assert.ok(invalid(e), String(e));
      assert.match(String(e), 'capabilities.premulSum');
      const rv = await Promise.all(gs.map((g, r) => g.reduceScatterv(devs[r], [1, 3], 0, { op: premulSum(0.5) })));
      assert.equal(rv.map((x, r) => [...fromDevice(gs[r].backend!, x).data as Float32Array]), [[6], [12, 3, 9]]);
    } finally {
      caps.premulSum = true;
    }
  } finally {
    await Promise.all(gs.map((g) => g.close({ lingerMs: 100 })));
    for (const c of clients) await c.close();
    await server.close();
  }
});

test.run();
