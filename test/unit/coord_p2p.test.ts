/**
 * The coordinator's point-to-point tensor calls (host/coordinator/p2p.ts) on three coordinators
 * in this process (real store, process group, CPU group, the cpu plugin's device communicator)
 * and on a group of one: explicit peers and the ring defaults (send: next, recv: previous), CPU
 * and device tensors, what recv is told to expect (a tensor, only read; `{ shape, dtype }` on
 * this rank's device; `device: 'cpu'`), `out`, the loopback queue of a self-send (a copy; the
 * expected shape; its refusals, which leave the queue as it was), a failed receive giving its
 * new tensor back, and each refusal of the description.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { StatelessGroupCoordinator } from '../../host/coordinator/coordinator.js';
import { TcpStore, TcpStoreServer } from '../../host/store/index.js';
import { tensor, type CpuTensor } from '../../host/core/tensor.js';
import type { CpuBackend } from '../../plugins/cpu/index.js';
import { onDevice, read } from '../helpers/coord_f32.js';

const server = await TcpStoreServer.listen({ port: 0 });
const stores = await Promise.all([0, 1, 2].map(() => TcpStore.create({ port: server.port, timeoutMs: 20_000 })));
const groups = await Promise.all(stores.map((rendezvous, r) => StatelessGroupCoordinator.create({
  groupRanks: [[0, 1, 2]], globalRank: r, groupName: 'cp2p', rendezvous, timeoutMs: 10_000, backend: 'cpu', useDeviceCommunicator: true,
})));
const solo = await StatelessGroupCoordinator.create({
  groupRanks: [[0]], globalRank: 0, groupName: 'cp2p1', rendezvous: stores[0], timeoutMs: 10_000, backend: 'cpu', useDeviceCommunicator: true,
});

const f32 = (...v: number[]) => tensor(Float32Array.from(v));
const live = (g: StatelessGroupCoordinator) => (g.backend as CpuBackend).memory.liveCount;
async function refused(p: Promise<unknown>, re: RegExp): Promise<void> {
  const e = await p.then(() => undefined, (x) => x);
  assert.is(e?.code, 'ERR_GROUPCOMM_INVALID_ARGUMENT', String(e));
  assert.match(String(e.message), re);
}

test('explicit peers: CPU and device tensors; recv told by a tensor (only read), by { shape, dtype }, with device cpu, into out', async () => {
  const [g0, g1] = groups;
  const like = f32(0, 0, 0, 0);
  const [, a] = await Promise.all([g0.send(f32(1, 2, 3, 4), 1), g1.recv(like, 0)]);
  assert.is(a.device, 'cpu');
  assert.equal(read(g1, a), [1, 2, 3, 4]);
  assert.ok(a !== like && a.data !== like.data, 'a new tensor');
  assert.equal(read(g1, like), [0, 0, 0, 0], 'like is only read');
  // { shape, dtype }: a tensor on this rank's device, over the device communicator.
  const [, b] = await Promise.all([g1.send(onDevice(g1, [5, 6, 7, 8], [2, 2]), 0), g0.recv({ shape: [2, 2], dtype: 'float32' }, 1)]);
  assert.is(b.device, g0.device);
  assert.equal(b.shape, [2, 2]);
  assert.equal(read(g0, b), [5, 6, 7, 8]);
  const [, c] = await Promise.all([g0.send(f32(9), 2), groups[2].recv({ shape: [1], dtype: 'float32', device: 'cpu' }, 0)]);
  assert.is(c.device, 'cpu');
  assert.equal(read(groups[2], c), [9]);
  const out = onDevice(g1, [0, 0]);
  const [, d] = await Promise.all([g0.send(onDevice(g0, [3, 4]), 1), g1.recv(out, 0, { out })]);
  assert.is(d, out);
  assert.equal(read(g1, out), [3, 4]);
});

test('the ring defaults: send goes to the next rank, recv takes from the previous one', async () => {
  const got = await Promise.all(groups.map(async (g, r) => {
    const [, t] = await Promise.all([g.send(f32(r * 10)), g.recv(f32(0))]);
    return read(g, t)[0];
  }));
  assert.equal(got, [20, 0, 10]);
});

test('a send to oneself queues a copy; recv reshapes it, fills out, or refuses (queue kept) what does not fit', async () => {
  const [g0] = groups;
  const src = f32(1, 2, 3, 4);
  await g0.send(src, 0);
  src.data[0] = 99;  // the sender may reuse its buffer at once
  const t = await g0.recv({ shape: [2, 2], dtype: 'float32', device: 'cpu' }, 0);
  assert.equal(t.shape, [2, 2], 'the expected shape, same elements');
  assert.equal(read(g0, t), [1, 2, 3, 4]);
  const same = f32(5, 6);
  await g0.send(same, 0);
  const u = await g0.recv(f32(0, 0), 0);
  assert.equal(u.shape, [2]);
  assert.equal(read(g0, u), [5, 6]);
  await refused(g0.recv(f32(0), 0), /^cp2p_\d+\.recv .*recv: nothing was sent to this rank by itself/);
  await g0.sendObject({ o: 1 }, 0);
  await refused(g0.recv(f32(0), 0), /recv: the next thing this rank sent itself is an object or a tensor dict/);
  assert.equal(await g0.recvObject(0), { o: 1 });
  const before = live(g0);
  await g0.send(onDevice(g0, [7, 8]), 0);
  assert.is(live(g0), before + 2, 'the device input and its queued copy');
  await refused(g0.recv({ shape: [2], dtype: 'int32' }, 0), /this rank sent itself float32\[2\] on host:\d+, expected int32\[2\] on host/);
  await refused(g0.recv({ shape: [3], dtype: 'float32' }, 0), /expected float32\[3\]/);
  await refused(g0.recv({ shape: [2], dtype: 'float32', device: 'cpu' }, 0), /on host:\d+, expected float32\[2\] on cpu/);
  const out = onDevice(g0, [0, 0]);
  assert.is(await g0.recv(out, 0, { out }), out, 'the queued copy, still there, lands in out');
  assert.equal(read(g0, out), [7, 8]);
  assert.is(live(g0), before + 2, 'the queued copy was freed after landing in out');
});

test('a group of one: send and recv go through the loopback queue (default peers: itself)', async () => {
  await solo.send(f32(3, 1));
  assert.equal(read(solo, await solo.recv(f32(0, 0))), [3, 1]);
  await solo.send(onDevice(solo, [4]), 0);
  const t = await solo.recv({ shape: [1], dtype: 'float32' }, 0);
  assert.is(t.device, solo.device);
  assert.equal(read(solo, t), [4]);
  await refused(solo.send(f32(1), 1), /send: dst 1 is not a rank of this group/);
  await refused(solo.recv(f32(1), 1), /recv: src 1 is not a rank of this group/);
});

test('recv refuses a bad description before anything is allocated or received', async () => {
  const g = groups[1];
  const before = live(g);
  await refused(g.recv(null as never, 0), /recv: expected a tensor or \{ shape, dtype \}/);
  await refused(g.recv('f32' as never, 0), /recv: expected a tensor or/);
  await refused(g.recv({ dtype: 'float32' } as never, 0), /recv: shape must be an array of integers >= 0, got undefined/);
  await refused(g.recv({ shape: [2, -1], dtype: 'float32' }, 0), /got \[2,-1\]/);
  await refused(g.recv({ shape: [1.5], dtype: 'float32' }, 0), /got \[1\.5\]/);
  await refused(g.recv({ shape: [2], dtype: 'float33' as never }, 0), /recv: unknown dtype "float33"/);
  await refused(g.recv({ shape: [2], dtype: 5 as never }, 0), /recv: unknown dtype 5/);
  await refused(g.recv({ shape: [2], dtype: 'float32', device: 5 as never }, 0), /recv: device must be a string, got 5/);
  await refused(g.recv({ shape: [2], dtype: 'float32', device: 'cuda:0' }, 0), /\): recv: tensor is on cuda:0/);
  await refused(g.send({ ...onDevice(g, [1]), device: 'cuda:0' }, 0), /\): send: tensor is on cuda:0/);
  await refused(g.recv(f32(0, 0), 0, { out: f32(0, 0, 0) }), /\): recv: out must be float32\[2\]/);
  await refused(g.recv(f32(0), 3), /recv: src 3 is not a rank/);
  await refused(g.send(f32(0), -1), /send: dst -1 is not a rank/);
  assert.is(live(g), before + 1, 'only the tensor made for the send above');
  // A tensor passed as the description keeps its own device even if it says another.
  const [, t] = await Promise.all([groups[0].send(onDevice(groups[0], [1]), 1), g.recv({ ...onDevice(g, [0]) }, 0)]);
  assert.is(t.device, g.device);
});

test('a receive that fails gives back the tensor it allocated, not an out it was given', async () => {
  const g = groups[2];
  const before = live(g);
  const e = await g.recv({ shape: [4], dtype: 'float32' }, 1, { timeoutMs: 200 }).then(() => undefined, (x) => x);
  assert.ok(e?.code, String(e));
  assert.is(live(g), before, 'the new tensor was freed');
  const out = onDevice(g, [1, 2, 3, 4]);
  const e2 = await g.recv(out, 1, { out, timeoutMs: 200 }).then(() => undefined, (x) => x);
  assert.ok(e2?.code, String(e2));
  assert.is(live(g), before + 1, 'out is the caller\'s: not freed');
  assert.equal(read(g, out).length, 4);
});

test('a self-sent tensor takes the expected shape whenever it differs (more dims, or the same dims reordered)', async () => {
  const g = groups[1];
  for (const [sent, want] of [[[4], [4, 1]], [[4, 1], [4]], [[2, 2, 1], [2, 1, 2]], [[1, 4], [4, 1]]]) {
    await g.send(tensor(Float32Array.of(1, 2, 3, 4), { shape: sent }), 1);
    const t = await g.recv({ shape: want, dtype: 'float32', device: 'cpu' }, 1);
    assert.equal(t.shape, want, `${sent} → ${want}`);
    assert.equal(read(g, t), [1, 2, 3, 4]);
  }
});

test('an empty tensor to oneself: a shape with a 0 dimension is a valid description', async () => {
  const g = groups[1];
  await g.send(tensor(new Float32Array(0), { shape: [0, 2] }), 1);
  const t = await g.recv({ shape: [2, 0], dtype: 'float32', device: 'cpu' }, 1);
  assert.equal(t.shape, [2, 0]);
});

// Last: it fails the group. (The first device collective is always checked over the store channel.)
test('a device collective two ranks make differently from rank 0: MISMATCH naming both, no single peerRank', async () => {
  const r = await Promise.allSettled(groups.map((g, i) => g.allReduce(onDevice(g, i === 0 ? [1, 2] : [1, 2, 3]))));
  const e = (r[0] as PromiseRejectedResult).reason;
  assert.is(e?.code, 'ERR_GROUPCOMM_MISMATCH', String(e));
  assert.match(e.message, /allReduce: ranks made different calls \(device collective #0, .*rank 1: .*; rank 2: /);
  assert.equal(e.peerRanks, [1, 2]);
  assert.is(e.peerRank, undefined);
});

test('close', async () => {
  await Promise.all([...groups, solo].map((g) => g.abort()));
  await Promise.all(stores.map((s) => s.close()));
  await server.close();
});

test.run();
