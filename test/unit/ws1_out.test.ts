/**
 * World size 1 with `out`, for every operation that takes one, on every implementation of the
 * collective shape: the CPU group, the cpu device plugin (both its transports), the process
 * group and the coordinator (its local channel). A group of one is what a user's single-process
 * dry run uses; a result that lands in a new tensor instead of `out` (or leaves `out` unwritten
 * while returning it) is silently wrong there. So each case hands in an `out` filled with a
 * sentinel and checks that the very same tensor comes back holding the expected values.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { CpuGroup } from '../../host/cpu/group.js';
import { StatelessProcessGroup } from '../../host/pg/group.js';
import { StatelessGroupCoordinator } from '../../host/coordinator/coordinator.js';
import { storeBootstrap } from '../../host/device/bootstrap.js';
import { fromDevice, freeTensor, toDevice } from '../../host/device/tensors.js';
import { TcpStore } from '../../host/store/index.js';
import { tensor, type CpuTensor, type Tensor } from '../../host/core/tensor.js';
import { CpuBackend } from '../../plugins/cpu/index.js';

// Whatever a test opened is closed after it, pass or fail, so a failure cannot keep the file alive.
const opened: (() => Promise<unknown>)[] = [];
const track = <T>(x: T, close: (x: T) => Promise<unknown>): T => (opened.push(() => close(x)), x);
test.after.each(async () => {
  for (const c of opened.splice(0).reverse()) await c().catch(() => {});
});

const SENTINEL = -77;
const input = () => tensor(Float32Array.from([1, 2, 3, 4]), { shape: [4] });
const sentinel = (n = 4) => tensor(new Float32Array(n).fill(SENTINEL), { shape: [n] });
const vals = (t: Tensor | undefined) => [...((t as CpuTensor).data as Float32Array)];

/** `got` is `out` itself, and holds `want`; the input is unchanged. */
function intoOut(what: string, got: Tensor | undefined, out: Tensor, want: number[], x: Tensor): void {
  assert.ok(got === out, `${what}: the result is not the out tensor`);
  assert.equal(vals(out), want, `${what}: out holds the wrong values`);
  assert.equal(vals(x), [1, 2, 3, 4], `${what}: the input changed`);
}

async function store(): Promise<TcpStore> {
  return track(await TcpStore.create({ port: 0, isServer: true, timeoutMs: 10_000 }), (s) => s.close());
}

test('CPU group of one: every op with out writes into out and returns it', async () => {
  const s = await store();
  const g = track(await CpuGroup.create({ store: s, rank: 0, worldSize: 1, groupName: 'ws1-out', timeoutMs: 10_000 }), (g) => g.destroy());
  const x = input();
  for (const op of ['sum', 'avg', 'max'] as const) {
    let out = sentinel();
    intoOut(`allReduce ${op}`, await g.allReduce(x, { op, out }), out, [1, 2, 3, 4], x);
    out = sentinel();
    intoOut(`reduceScatter ${op}`, await g.reduceScatter(x, { op, out }), out, [1, 2, 3, 4], x);
  }
  let out = sentinel();
  intoOut('allGather', await g.allGather(x, { out }), out, [1, 2, 3, 4], x);
  out = sentinel();
  intoOut('broadcast', await g.broadcast(x, { src: 0, out }), out, [1, 2, 3, 4], x);
  out = sentinel();
  intoOut('gather', await g.gather(x, { dst: 0, out }), out, [1, 2, 3, 4], x);
  out = sentinel();
  intoOut('scatter', await g.scatter(x, { src: 0, out }), out, [1, 2, 3, 4], x);
  out = sentinel();
  intoOut('allToAll', await g.allToAll(x, { out }), out, [1, 2, 3, 4], x);
  // Large enough for the ring and pipelined paths' thresholds (they must still be local copies).
  const big = tensor(Float32Array.from({ length: 100_000 }, (_, i) => i % 97));
  const bigOut = sentinel(100_000);
  assert.ok(await g.allReduce(big, { op: 'avg', out: bigOut }) === bigOut);
  assert.ok((bigOut.data as Float32Array).every((v, i) => v === i % 97), 'large allReduce avg into out');
  bigOut.data.fill(SENTINEL);
  assert.ok(await g.reduceScatter(big, { out: bigOut }) === bigOut);
  assert.ok((bigOut.data as Float32Array).every((v, i) => v === i % 97), 'large reduceScatter into out');
});

for (const bare of [false, true]) {
  test(`cpu device plugin of one (${bare ? 'bootstrap' : 'CPU group'} transport): every op with out writes into out`, async () => {
    const s = await store();
    const b = new CpuBackend();
    const boot = storeBootstrap(s, { rank: 0, worldSize: 1, prefix: `ws1-out-${bare}` });
    const comm = track(await b.createCommunicator({
      rank: 0, worldSize: 1, deviceIndex: 0, bootstrap: bare ? { ...boot, store: undefined } : boot, timeoutMs: 10_000,
    }), (c) => c.close());
    const x = toDevice(b, input());
    const fresh = () => toDevice(b, sentinel());
    const check = async (what: string, p: Promise<Tensor | undefined>, out: Tensor) => {
      const got = await p;
      assert.ok(got === out, `${what}: the result is not the out tensor`);
      assert.equal(vals(fromDevice(b, out)), [1, 2, 3, 4], `${what}: out holds the wrong values`);
      assert.equal(vals(fromDevice(b, x)), [1, 2, 3, 4], `${what}: the input changed`);
      freeTensor(b, out);
    };
    for (const op of ['sum', 'avg'] as const) {
      let out = fresh();
      await check(`allReduce ${op}`, comm.allReduce(x, { op, out }), out);
      out = fresh();
      await check(`reduceScatter ${op}`, comm.reduceScatter(x, { op, out }), out);
    }
    let out = fresh();
    await check('allGather', comm.allGather(x, { out }), out);
    out = fresh();
    await check('broadcast', comm.broadcast(x, { src: 0, out }), out);
    out = fresh();
    await check('gather', comm.gather(x, { dst: 0, out }), out);
    out = fresh();
    await check('allToAll', comm.allToAll(x, { out }), out);
    freeTensor(b, x);
  });
}

test('process group of one: allReduce and broadcast with out write into out', async () => {
  const s = await store();
  const g = track(await StatelessProcessGroup.create({ rank: 0, worldSize: 1, store: s, timeoutMs: 10_000, groupName: 'ws1-out' }), (g) => g.destroy({ force: true }));
  const x = input();
  for (const op of ['sum', 'avg', 'min'] as const) {
    const out = sentinel();
    intoOut(`allReduce ${op}`, await g.allReduce(x, { op, out }), out, [1, 2, 3, 4], x);
  }
  const out = sentinel();
  intoOut('broadcast', await g.broadcast(x, { src: 0, out }), out, [1, 2, 3, 4], x);
});

test('coordinator of one: every op with out writes into out (dim 0 and the last dim)', async () => {
  const g = track(await StatelessGroupCoordinator.create({ groupRanks: [[0], [1, 2]], globalRank: 0, groupName: 'ws1-out' }), (g) => g.destroy());
  assert.is(g.worldSize, 1);
  const x = tensor(Float32Array.from([1, 2, 3, 4]), { shape: [2, 2] });
  const fresh = () => tensor(new Float32Array(4).fill(SENTINEL), { shape: [2, 2] });
  for (const dim of [0, -1]) {
    for (const op of ['sum', 'avg'] as const) {
      let out = fresh();
      intoOut(`allReduce ${op}`, await g.allReduce(x, { op, out }), out, [1, 2, 3, 4], x);
      out = fresh();
      intoOut(`reduceScatter dim ${dim} ${op}`, await g.reduceScatter(x, dim, { op, out }), out, [1, 2, 3, 4], x);
    }
    let out = fresh();
    intoOut(`allGather dim ${dim}`, await g.allGather(x, dim, { out }), out, [1, 2, 3, 4], x);
    out = fresh();
    intoOut(`gather dim ${dim}`, await g.gather(x, 0, dim, { out }), out, [1, 2, 3, 4], x);
  }
  const out = fresh();
  intoOut('broadcast', await g.broadcast(x, 0, { out }), out, [1, 2, 3, 4], x);
});

test.run();
