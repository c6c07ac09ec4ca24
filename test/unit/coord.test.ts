// The coordinator inside one process: unique names, the dim helpers against index arithmetic,
// the world-size-1 and aliasing contracts, argument checks, call-order issuance, and several
// ranks as coordinators of one process over real sockets (many groups live at once).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { subBuffer } from '../../host/device/tensors.js';
import { StatelessGroupCoordinator } from '../../host/coordinator/coordinator.js';
import { reserveName, releaseName, registerName, lookupName, registeredNames } from '../../host/coordinator/names.js';
import { catShape, normDim, scatterShape, transposeBlocks } from '../../host/coordinator/dims.js';
import { TcpStore, TcpStoreServer } from '../../host/store/index.js';
import { tensor, type CpuTensor, type Tensor } from '../../host/core/tensor.js';
import { ErrorCode, isGroupcommError } from '../../host/base/errors.js';

// Whatever a test opened is closed after it, pass or fail, so a failure cannot keep the file alive.
const opened: { close(): Promise<unknown> }[] = [];
const track = <T extends { close(): Promise<unknown> }>(x: T): T => (opened.push(x), x);
async function listen() {
  return track(await TcpStoreServer.listen({ port: 0 }));
}
test.after.each(async () => {
  for (const x of opened.splice(0).reverse()) await x.close().catch(() => {});
});

const arr = (t: Tensor | undefined) => [...((t as CpuTensor).data as Float32Array)].map(Number);

async function rejects(p: Promise<unknown>, code: string, re?: RegExp): Promise<void> {
  try {
    await p;
  } catch (e) {
    assert.ok(isGroupcommError(e), `not a GroupcommError: ${e}`);
    assert.is((e as { code: string }).code, code, (e as Error).message);
    if (re) assert.match((e as Error).message, re);
    return;
  }
  assert.unreachable(`expected ${code}`);
}

/** `n` coordinators of one group in this process (rank r = coordinator r), over real sockets. */
async function inProcess(n: number, name: string, server: TcpStoreServer) {
  const stores = await Promise.all(Array.from({ length: n }, async () => track(await TcpStore.create({ port: server.port, timeoutMs: 20_000 }))));
  const groups = await Promise.all(stores.map((rendezvous, r) => StatelessGroupCoordinator.create({
    groupRanks: [[...Array(n).keys()]], globalRank: r, groupName: name, rendezvous, timeoutMs: 20_000,
  })));
  for (const g of groups) track({ close: () => g.destroy({ lingerMs: 100 }) });
  return {
    groups,
    async close() {
      await Promise.all(groups.map((g) => g.destroy()));
      await Promise.all(stores.map((s) => s.close()));
    },
  };
}

test('unique names: lowest free index, released on destroy, weakly registered', () => {
  const a = reserveName('u'), b = reserveName('u'), c = reserveName('u');
  assert.equal([a, b, c], ['u:0', 'u:1', 'u:2']);
  releaseName(b);
  assert.is(reserveName('u'), 'u:1');
  const owner = {};
  registerName('u:2', owner);
  assert.is(lookupName('u:2'), owner);
  assert.ok(registeredNames().includes('u:2'));
  for (const n of ['u:0', 'u:1', 'u:2']) releaseName(n);
  releaseName('u:2'); // idempotent
  assert.is(lookupName('u:2'), undefined);
  assert.is(reserveName('u'), 'u:0');
  releaseName('u:0');
});

test('dims: normDim ranges, cat/scatter shapes', () => {
  assert.is(normDim(-1, 3, 'x'), 2);
  assert.is(normDim(0, 0, 'x'), 0); // 0-d gathers as 1-d
  assert.throws(() => normDim(3, 3, 'x'), /out of range/);
  assert.throws(() => normDim(-4, 3, 'x'), /out of range/);
  assert.throws(() => normDim(0.5, 3, 'x'), /integer/);
  assert.equal(catShape([2, 3, 4], 1, 3), [2, 9, 4]);
  assert.equal(catShape([], 0, 4), [4]);
  assert.equal(scatterShape([2, 6, 4], 1, 3, 'x'), [2, 2, 4]);
  assert.throws(() => scatterShape([2, 5], 1, 3, 'x'), /not divisible/);
  assert.throws(() => scatterShape([], 0, 1, 'x'), /0-d/);
});

test('dims: transposeBlocks is the (a, b, block) → (b, a, block) transpose', () => {
  for (const [a, b, block] of [[1, 3, 2], [3, 1, 5], [2, 3, 1], [4, 5, 3]]) {
    const src = Uint8Array.from({ length: a * b * block }, (_, i) => i % 251);
    const dst = new Uint8Array(src.length);
    transposeBlocks(src, dst, a, b, block);
    for (let i = 0; i < a; i++) for (let j = 0; j < b; j++) for (let k = 0; k < block; k++) {
      assert.is(dst[(j * a + i) * block + k], src[(i * b + j) * block + k]);
    }
  }
});

test('world size 1: every op completes at once under the aliasing contract (a copy, or out; in place via out)', async () => {
  const g = await StatelessGroupCoordinator.create({ groupRanks: [[0], [1, 2]], globalRank: 0, groupName: 'solo' });
  assert.is(g.worldSize, 1);
  assert.is(g.ports, undefined);
  assert.equal([g.firstRank, g.lastRank, g.nextRank, g.prevRank], [0, 0, 0, 0]);
  const t = tensor(Float32Array.from([1, 2, 3, 4]), { shape: [2, 2] });
  const results = [await g.broadcast(t, 0), await g.allReduce(t), await g.allGather(t, 1), (await g.gather(t, 0, 0))!, await g.reduceScatter(t, 0)];
  for (const r of results) {
    assert.ok(r !== t && r.data !== t.data, 'a result is a new tensor');
    assert.equal(arr(r), [1, 2, 3, 4]);
    assert.equal(r.shape, [2, 2]);
  }
  assert.equal(arr(t), [1, 2, 3, 4]);
  const out = tensor(new Float32Array(4), { shape: [2, 2] });
  assert.is(await g.allReduce(t, { out }), out);
  assert.equal(arr(out), [1, 2, 3, 4]);
  assert.is(await g.allReduce(t, { out: t }), t);
  assert.is(await g.broadcast(t, 0, { out: t }), t);
  await rejects(g.allGather(t, 0, { out: t }), 'ERR_GROUPCOMM_INVALID_ARGUMENT', /in place/);
  const obj = { a: 1 };
  assert.is(await g.broadcastObject(obj), obj);
  const list = [1, 2];
  assert.is(await g.broadcastObjectList(list), list);
  const dict = { t, s: 'x' };
  assert.is(await g.broadcastTensorDict(dict), dict);
  await g.barrier();
  // Point to point with oneself: a loopback in program order (copies, not aliases).
  await g.sendObject(obj, 0);
  const back = await g.recvObject<{ a: number }>(0);
  assert.equal(back, obj);
  assert.is.not(back, obj);
  await g.sendTensorDict(dict);
  const d = await g.recvTensorDict();
  assert.equal(arr(d.t as Tensor), [1, 2, 3, 4]);
  assert.is.not(d.t, t);
  await rejects(g.recvObject(0), 'ERR_GROUPCOMM_INVALID_ARGUMENT', /nothing was sent/);
  await rejects(g.broadcast(t, 1), 'ERR_GROUPCOMM_INVALID_ARGUMENT', /src 1/);
  await rejects(g.allGather(t, 2), 'ERR_GROUPCOMM_INVALID_ARGUMENT', /dim 2/);
  await rejects(g.allReduce(t, { out: tensor(new Float32Array(3)) }), 'ERR_GROUPCOMM_INVALID_ARGUMENT', /out must be/);
  await g.destroy();
});

test('create checks its arguments', async () => {
  await rejects(StatelessGroupCoordinator.create({ groupRanks: [[0, 1]], globalRank: 2 }), 'ERR_GROUPCOMM_INVALID_ARGUMENT', /in none of the 1 groups/);
  await rejects(StatelessGroupCoordinator.create({ groupRanks: [[0, 1], [1]], globalRank: 0 }), 'ERR_GROUPCOMM_INVALID_ARGUMENT', /disjoint/);
  await rejects(StatelessGroupCoordinator.create({ groupRanks: [[0, 1]], globalRank: 0 }), 'ERR_GROUPCOMM_INVALID_ARGUMENT', /groupPorts or a rendezvous/);
  await rejects(StatelessGroupCoordinator.create({ groupRanks: [[0, 1]], globalRank: 0, groupPorts: [[1, 1, 2]] }), 'ERR_GROUPCOMM_INVALID_ARGUMENT');
  await rejects(StatelessGroupCoordinator.create({ groupRanks: [[0]], globalRank: 0, groupName: 'a/b' }), 'ERR_GROUPCOMM_INVALID_ARGUMENT', /groupName/);
  const server = await listen();
  const store = track(await TcpStore.create({ port: server.port }));
  await rejects(StatelessGroupCoordinator.create({ groupRanks: [[0, 1]], globalRank: 0, rendezvous: store, groupPorts: [[1, 2, 3]] }),
    'ERR_GROUPCOMM_INVALID_ARGUMENT', /not both/);
  // A failed create releases its name.
  const g = await StatelessGroupCoordinator.create({ groupRanks: [[0]], globalRank: 0 });
  assert.is(g.uniqueName, 'anonymous:0');
  await g.destroy();
  await store.close();
  await server.close();
});

test('destroy is idempotent, releases the name, and later ops fail with DESTROYED', async () => {
  const g = await StatelessGroupCoordinator.create({ groupRanks: [[0]], globalRank: 0, groupName: 'd' });
  assert.is(StatelessGroupCoordinator.lookup('d:0'), g);
  await Promise.all([g.destroy(), g.destroy()]);
  await g.destroy();
  assert.ok(g.destroyed);
  assert.is(StatelessGroupCoordinator.lookup('d:0'), undefined);
  await rejects(g.barrier(), 'ERR_GROUPCOMM_DESTROYED');
  const h = await StatelessGroupCoordinator.create({ groupRanks: [[0]], globalRank: 0, groupName: 'd' });
  assert.is(h.uniqueName, 'd:0');
  await h.destroy();
});

test('in one process: ops issued without awaiting still pair up in call order', async () => {
  const server = await listen();
  const { groups, close } = await inProcess(3, 'order', server);
  assert.equal(groups.map((g) => g.uniqueName), ['order:0', 'order:1', 'order:2']);
  // Each rank fires 10 broadcasts from rotating roots and 10 allReduces, none awaited.
  const pending = groups.map((g, r) => {
    const ps: Promise<Tensor | Record<string, unknown>>[] = [];
    for (let i = 0; i < 10; i++) {
      ps.push(g.broadcast(tensor(new Float32Array([r * 100 + i])), i % 3));
      ps.push(g.allReduce(tensor(new Float32Array([i]))));
      ps.push(g.broadcastTensorDict(r === i % 3 ? { i } : undefined, i % 3));
    }
    return Promise.all(ps);
  });
  const res = await Promise.all(pending);
  for (const rows of res) {
    for (let i = 0; i < 10; i++) {
      assert.equal(arr(rows[3 * i] as Tensor), [(i % 3) * 100 + i]);
      assert.equal(arr(rows[3 * i + 1] as Tensor), [3 * i]);
      assert.is((rows[3 * i + 2] as Record<string, unknown>).i, i);
    }
  }
  await close();
  await server.close();
});

test('in one process: a new group over the same ranks does not disturb one that serves', async () => {
  const server = await listen();
  const a = await inProcess(2, 'serving', server);
  let stop = false, steps = 0;
  const loop = (async () => {
    while (!stop) {
      const s = await Promise.all(a.groups.map((g, r) => g.allReduce(tensor(new Float32Array([r + 1])))));
      for (const t of s) assert.equal(arr(t), [3]);
      steps++;
    }
  })();
  const b = await inProcess(2, 'standby', server);
  const s = await Promise.all(b.groups.map((g, r) => g.allReduce(tensor(new Float32Array([r + 10])))));
  for (const t of s) assert.equal(arr(t), [21]);
  stop = true;
  await loop;
  assert.ok(steps > 0);
  await a.close();
  const again = await Promise.all(b.groups.map((g) => g.allReduce(tensor(new Float32Array([1])))));
  for (const t of again) assert.equal(arr(t), [2]);
  await b.close();
  await server.close();
});

test('in one process: a 20-rank group (smaller per-peer receive buffers) moves large tensors intact', async () => {
  const server = await listen();
  const { groups, close } = await inProcess(20, 'wide', server);
  const n = 300_000; // 1.2 MB: far beyond a 64-KiB-per-peer receive buffer
  const sums = await Promise.all(groups.map((g, r) => g.allReduce(tensor(Float32Array.from({ length: n }, (_, i) => (i % 7) + r)))));
  for (const s of sums) {
    const d = (s as CpuTensor).data as Float32Array;
    assert.is(d[0], 190);
    assert.is(d[n - 1], ((n - 1) % 7) * 20 + 190);
  }
  const dicts = await Promise.all(groups.map((g, r) => g.broadcastTensorDict(r === 7 ? { big: tensor(Int32Array.from({ length: n }, (_, i) => i)) } : undefined, 7)));
  for (const d of dicts) assert.is(((d.big as CpuTensor).data as Int32Array)[n - 1], n - 1);
  await close();
});

test('rendezvous: the port record is gone once the group formed, so the name can be used again', async () => {
  const server = await listen();
  const probe = track(await TcpStore.create({ port: server.port }));
  const first = await inProcess(3, 'again', server);
  assert.is(await probe.check(['again_0']), false);
  const p1 = first.groups[0].ports!;
  assert.is(new Set(p1).size, 3);
  assert.ok(p1.every((p) => p > 0 && p < 65536));
  await first.close();
  const second = await inProcess(3, 'again', server);
  const s = await Promise.all(second.groups.map((g) => g.allReduce(tensor(new Float32Array([1])))));
  for (const t of s) assert.equal(arr(t), [3]);
  await second.close();
});

test('a barrier that a rank never reaches times out naming it; a signal and abort() end waits at once', async () => {
  const server = await listen();
  const { groups, close } = await inProcess(3, 'late', server);
  try {
    await groups[0].barrier({ timeoutMs: 300 });
    assert.unreachable('barrier without the others resolved');
  } catch (e) {
    assert.ok(isGroupcommError(e, ErrorCode.TIMEOUT), String(e));
    const err = e as { peerRanks?: number[]; message: string };
    assert.equal(err.peerRanks, [1, 2]);
    // One spelling of the group everywhere: the coordinator's prefix and the store channel's own words.
    assert.match(err.message, 'late_0.barrier (global rank 0)');
    assert.match(err.message, "group 'late_0'");
    assert.not.match(err.message, 'late:0');
    assert.match(err.message, 'group rank 2 = global rank 2');
  }
  const ac = new AbortController();
  const pending = groups[1].recvObject(0, { signal: ac.signal });
  setTimeout(() => ac.abort(), 50);
  await rejects(pending, 'ERR_GROUPCOMM_ABORTED');
  const hung = groups[2].recvObject(0);
  setTimeout(() => void groups[2].abort('test'), 50);
  await rejects(hung, 'ERR_GROUPCOMM_ABORTED');
  await close();
});

test('a device tensor on a group without a device communicator is refused, naming the fix', async () => {
  const server = await listen();
  const { groups, close } = await inProcess(2, 'nodev', server);
  const fake: Tensor = { dtype: 'float32', shape: [1], device: 'cuda:0', data: { ptr: 1n, nbytes: 4 } };
  await rejects(groups[0].allReduce(fake), 'ERR_GROUPCOMM_INVALID_ARGUMENT', /useDeviceCommunicator/);
  await close();
  await server.close();
});

test('device tensors with the cpu backend: routed over the device communicator, any dim', async () => {
  const server = await listen();
  const stores = await Promise.all([0, 1].map(async () => track(await TcpStore.create({ port: server.port, timeoutMs: 20_000 }))));
  const groups = await Promise.all(stores.map((rendezvous, r) => StatelessGroupCoordinator.create({
    groupRanks: [[0, 1]], globalRank: r, groupName: 'dev', rendezvous, timeoutMs: 20_000,
    backend: 'cpu', useDeviceCommunicator: true,
  })));
  for (const g of groups) track({ close: () => g.destroy({ lingerMs: 100 }) });
  assert.equal(groups.map((g) => g.device), ['host:0', 'host:0']);
  assert.ok(groups[0].deviceCommunicator);
  const onDevice = (g: StatelessGroupCoordinator, vals: number[], shape: number[]) => {
    const t = g.empty(shape, 'float32');
    g.backend!.copyFromHost(t.data as never, new Uint8Array(Float32Array.from(vals).buffer));
    return t;
  };
  const host = (g: StatelessGroupCoordinator, t: Tensor) => {
    const b = new Float32Array(t.shape.reduce((a, x) => a * x, 1));
    g.backend!.copyToHost(new Uint8Array(b.buffer), t.data as never);
    return [...b];
  };
  const xs = groups.map((g, r) => onDevice(g, [r, 1], [2]));
  const sums = await Promise.all(groups.map((g, r) => g.allReduce(xs[r])));
  assert.equal(host(groups[0], sums[0]), [1, 2]);
  assert.equal(host(groups[1], xs[1]), [1, 1], 'the device input is unchanged');
  // In place (out = input) and into a given out, on device tensors too.
  const ip = await Promise.all(groups.map((g, r) => g.allReduce(xs[r], { op: 'max', out: xs[r] })));
  assert.ok(ip[0] === xs[0] && ip[1] === xs[1]);
  assert.equal(host(groups[0], xs[0]), [1, 1]);
  const outs = groups.map((g) => g.empty([1, 2], 'float32'));
  const rs = await Promise.all(groups.map((g, r) => g.reduceScatter(onDevice(g, [r, 1, 2, 3], [2, 2]), 0, { out: outs[r] })));
  assert.ok(rs[1] === outs[1]);
  assert.equal(host(groups[1], outs[1]), [4, 6]);
  // An out overlapping a device input is refused on each rank before anything is sent.
  for (const g of groups) {
    const whole = g.empty([4], 'float32');
    const part: Tensor = { ...whole, shape: [2], data: subBuffer(whole.data as never, 0, 8) };
    await rejects(g.allGather(part, 0, { out: whole }), 'ERR_GROUPCOMM_INVALID_ARGUMENT', /overlaps|in place/);
  }
  const ag = await Promise.all(groups.map((g, r) => g.allGather(onDevice(g, [r, r + 10, r + 20, r + 30], [2, 2]), 1)));
  assert.equal(ag[1].shape, [2, 4]);
  assert.equal(host(groups[1], ag[1]), [0, 10, 1, 11, 20, 30, 21, 31]);
  const dicts = await Promise.all(groups.map((g, r) => g.broadcastTensorDict(r === 0 ? { x: onDevice(g, [5, 6], [2]), c: tensor(new Int32Array([7])) } : undefined, 0)));
  assert.is((dicts[1].x as Tensor).device, 'host:0');
  assert.equal(host(groups[1], dicts[1].x as Tensor), [5, 6]);
  assert.equal([...((dicts[1].c as CpuTensor).data)], [7]);
  await Promise.all(groups.map((g) => g.destroy()));
  await Promise.all(stores.map((s) => s.close()));
  await server.close();
});

test.run();
