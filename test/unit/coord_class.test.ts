/**
 * The public class (host/coordinator/coordinator.ts) itself: its bookkeeping (vLLM's
 * GroupCoordinator properties), the operation each method queues (a closed group refuses it
 * naming the group and the method), lookup by unique name, and the lifetime (close idempotent,
 * destroy = close, abort after close, asyncDispose). A group of one and a group of three in
 * process.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import net from 'node:net';
import { StatelessGroupCoordinator } from '../../host/coordinator/coordinator.js';
import { asyncDispose } from '../../host/base/lifecycle.js';
import { tensor } from '../../host/core/tensor.js';
import { TcpStore, TcpStoreServer } from '../../host/store/index.js';
import { failure } from '../helpers/rejects.js';

type G = StatelessGroupCoordinator;

async function freePort(): Promise<number> {
  const s = await new Promise<net.Server>((res) => { const x = net.createServer().listen(0, '127.0.0.1', () => res(x)); });
  const port = (s.address() as net.AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

/** A float32 CPU tensor from a vector or a matrix. */
function cpuTensor(v: number[] | number[][]) {
  const rows = v as number[][];
  return Array.isArray(v[0]) ? tensor(Float32Array.from(rows.flat()), { shape: [rows.length, rows[0].length] }) : tensor(Float32Array.from(v as number[]));
}

/** Every method that queues an operation, called with arguments that would be valid. */
const OPS: [string, (g: G) => Promise<unknown>][] = [
  ['broadcastObject', (g) => g.broadcastObject(1)],
  ['broadcastObjectList', (g) => g.broadcastObjectList([1])],
  ['sendObject', (g) => g.sendObject(1, 0)],
  ['recvObject', (g) => g.recvObject(0)],
  ['barrier', (g) => g.barrier()],
  ['broadcastTensorDict', (g) => g.broadcastTensorDict({})],
  ['sendTensorDict', (g) => g.sendTensorDict({}, 0)],
  ['recvTensorDict', (g) => g.recvTensorDict(0)],
  ['broadcast', (g) => g.broadcast(cpuTensor([1, 2]))],
  ['allReduce', (g) => g.allReduce(cpuTensor([1, 2]))],
  ['allGather', (g) => g.allGather(cpuTensor([1, 2]))],
  ['gather', (g) => g.gather(cpuTensor([1, 2]))],
  ['reduceScatter', (g) => g.reduceScatter(cpuTensor([1, 2]))],
  ['allGatherv', (g) => g.allGatherv(cpuTensor([1, 2]))],
  ['reduceScatterv', (g) => g.reduceScatterv(cpuTensor([1, 2]))],
  ['allToAll', (g) => g.allToAll(cpuTensor([1, 2]))],
  ['send', (g) => g.send(cpuTensor([1, 2]), 0)],
  ['recv', (g) => g.recv({ shape: [2], dtype: 'float32' }, 0)],
  ['split', (g) => g.split({ groupRanks: [[3]] })],
];

test('a group of one: its bookkeeping, and every operation refused after close naming the group and the method', async () => {
  const g = await StatelessGroupCoordinator.create({ groupRanks: [[3]], globalRank: 3, groupName: 'solo', timeoutMs: 2_000 });
  assert.equal([g.size(), g.firstRank, g.lastRank, g.isFirstRank, g.isLastRank, g.nextRank, g.prevRank], [1, 3, 3, true, true, 3, 3]);
  assert.equal([g.rank, g.rankInGroup, g.groupIndex, g.ports, g.messageQueue, g.deviceCommunicator, g.destroyed], [3, 0, 0, undefined, undefined, undefined, false]);
  assert.is(StatelessGroupCoordinator.lookup(g.uniqueName), g);
  // Defaults: src 0, dim -1 (the last), dst and src of point to point this rank.
  assert.equal(await g.broadcastObject('x'), 'x');
  assert.equal(Array.from((await g.allGather(cpuTensor([1, 2]))).data as Float32Array), [1, 2]);
  const closing = g.close();
  assert.is(g.destroyed, true);
  assert.is(g.close(), closing, 'close is idempotent');
  assert.is(g.destroy(), closing, 'destroy is close');
  await closing;
  assert.is(StatelessGroupCoordinator.lookup(g.uniqueName), undefined);
  for (const [name, call] of OPS) {
    const e = await failure(call(g));
    assert.is(e.code, 'ERR_GROUPCOMM_DESTROYED', name);
    assert.is(e.message, `solo_0.${name}: the group was closed`);
  }
  // abort after close: the close that is under way is what it resolves with.
  assert.is(g.abort('late'), closing);
});

async function trio(name: string): Promise<{ gs: G[]; done: () => Promise<void> }> {
  const server = await TcpStoreServer.listen({ port: 0 });
  const stores = await Promise.all([0, 1, 2].map(() => TcpStore.create({ port: server.port, timeoutMs: 5_000 })));
  const gs = await Promise.all([0, 1, 2].map((r) => StatelessGroupCoordinator.create({
    groupRanks: [[5, 6, 7]], globalRank: r + 5, groupName: name, rendezvous: stores[r], timeoutMs: 5_000,
  })));
  return {
    gs,
    done: async () => {
      await Promise.all(gs.map((g) => g.destroy({ lingerMs: 200 })));
      for (const s of stores) await s.close();
      await server.close();
    },
  };
}

test('a group of three: ring neighbours, first and last, the default source and destination of each method', async () => {
  const { gs, done } = await trio('trio');
  try {
    assert.equal(gs.map((g) => [g.nextRank, g.prevRank, g.isFirstRank, g.isLastRank]), [[6, 7, true, false], [7, 5, false, false], [5, 6, false, true]]);
    assert.equal(gs.map((g) => [g.firstRank, g.lastRank, g.size(), g.ranks]), gs.map(() => [5, 7, 3, [5, 6, 7]]));
    assert.ok(gs[0].ports !== undefined && gs[1].ports !== undefined);
    // Broadcasts from group rank 0 by default.
    assert.equal(await Promise.all(gs.map((g, i) => g.broadcastObject(i === 0 ? 'from0' : undefined))), ['from0', 'from0', 'from0']);
    assert.equal(await Promise.all(gs.map((g, i) => g.broadcastObjectList(i === 0 ? ['a', 'b'] : ['', '']))), [['a', 'b'], ['a', 'b'], ['a', 'b']]);
    const b = await Promise.all(gs.map((g, i) => g.broadcast(cpuTensor([i, i]))));
    assert.equal(b.map((t) => Array.from(t.data as Float32Array)), [[0, 0], [0, 0], [0, 0]]);
    const d = await Promise.all(gs.map((g, i) => g.broadcastTensorDict(i === 0 ? { k: 1 } : undefined)));
    assert.equal(d, [{ k: 1 }, { k: 1 }, { k: 1 }]);
    // Gathers on group rank 0, along the last dim by default (of 1-D tensors here: dim 0).
    const at = await Promise.all(gs.map((g, i) => g.gather(cpuTensor([i, i]))));
    assert.equal(Array.from(at[0]!.data as Float32Array), [0, 0, 1, 1, 2, 2]);
    assert.equal([at[1], at[2]], [undefined, undefined]);
    const all = await Promise.all(gs.map((g, i) => g.allGather(cpuTensor([i, i]))));
    assert.equal(Array.from(all[2].data as Float32Array), [0, 0, 1, 1, 2, 2]);
    const rs = await Promise.all(gs.map((g) => g.reduceScatter(cpuTensor([1, 2, 3]))));
    assert.equal(rs.map((t) => Array.from(t.data as Float32Array)), [[3], [6], [9]]);
    const rsv = await Promise.all(gs.map((g) => g.reduceScatterv(cpuTensor([1, 2, 3]))));
    assert.equal(rsv.map((t) => Array.from(t.data as Float32Array)), [[3], [6], [9]]);
    const agv = await Promise.all(gs.map((g, i) => g.allGatherv(cpuTensor([i]))));
    assert.equal(Array.from(agv[1].data as Float32Array), [0, 1, 2]);
    // Point to point: to the next rank, from the previous one.
    await Promise.all(gs.map((g, i) => g.send(cpuTensor([i]))));
    const got = await Promise.all(gs.map((g) => g.recv({ shape: [1], dtype: 'float32' })));
    assert.equal(got.map((t) => (t.data as Float32Array)[0]), [2, 0, 1]);
    await Promise.all(gs.map((g, i) => g.sendTensorDict({ from: i })));
    assert.equal(await Promise.all(gs.map((g) => g.recvTensorDict())), [{ from: 2 }, { from: 0 }, { from: 1 }]);
  } finally {
    await done();
  }
});

test('new is refused naming the factory and why; empty() makes float32 on the group\'s device; split through the class', async () => {
  let err: Error | undefined;
  try {
    new (StatelessGroupCoordinator as unknown as new (o: unknown) => unknown)({ groupRanks: [[0]], globalRank: 0 });
  } catch (e) {
    err = e as Error;
  }
  assert.is(err?.message, 'new StatelessGroupCoordinator() is not supported: a group opens its channels with the other members before it is usable, ' +
    'and a constructor cannot wait. Use `const group = await StatelessGroupCoordinator.create({ groupRanks, globalRank, rendezvous })`');
  const g = await StatelessGroupCoordinator.create({ groupRanks: [[4]], globalRank: 4, groupName: 'parent', timeoutMs: 2_000 });
  const t = g.empty([2]);
  assert.equal([t.dtype, t.device, t.shape], ['float32', 'cpu', [2]]);
  g.free(t);
  // A split this rank's lists do not allow is refused before it is queued, naming the group and 'split'.
  const e = await failure(g.split({ groupRanks: [[9]] }));
  assert.is(e.code, 'ERR_GROUPCOMM_INVALID_ARGUMENT');
  assert.match(e.message, /^parent_0\.split \(global rank 4\): /);
  const sub = await g.split({ groupRanks: [[4]], groupName: 'child' });
  assert.ok(sub instanceof StatelessGroupCoordinator);
  assert.equal([sub!.ranks, sub!.rank, StatelessGroupCoordinator.lookup(sub!.uniqueName)], [[4], 4, sub]);
  await sub!.close();
  // The second split (the refused one did not count) is named after the parent and its count.
  const next = await g.split({ groupRanks: [[4]] });
  assert.match(next!.uniqueName, /^parent_0\.split1:/);
  await next!.close();
  await g.close();
});

test('close with explicit ports: a member waits for group rank 0\'s server to go; with a rendezvous it does not', async () => {
  const ports: [number, number, number] = [await freePort(), await freePort(), await freePort()];
  const fixed = await Promise.all([0, 1].map((r) => StatelessGroupCoordinator.create({
    groupRanks: [[0, 1]], globalRank: r, groupName: 'ports', groupPorts: [ports], host: '127.0.0.1', timeoutMs: 4_000,
  })));
  let t0 = performance.now();
  const member = fixed[1].close({ lingerMs: 3_000 }).then(() => performance.now() - t0);
  await new Promise((r) => setTimeout(r, 400));
  await fixed[0].close({ lingerMs: 3_000 });
  const waited = await member;
  assert.ok(waited >= 350, `the member left after ${waited} ms, before rank 0's server closed`);
  const { gs, done } = await trio('rdv');
  try {
    t0 = performance.now();
    await gs[2].close({ lingerMs: 3_000 });
    const took = performance.now() - t0;
    assert.ok(took < 2_000, `a member with a rendezvous waited ${took} ms for rank 0`);
  } finally {
    await done();
  }
});

test('split passes the create options on: sub-groups of a group with a device communicator have one', async () => {
  const server = await TcpStoreServer.listen({ port: 0 });
  const stores = await Promise.all([0, 1].map(() => TcpStore.create({ port: server.port, timeoutMs: 5_000 })));
  const gs = await Promise.all([0, 1].map((r) => StatelessGroupCoordinator.create({
    groupRanks: [[0, 1]], globalRank: r, groupName: 'dev', rendezvous: stores[r], timeoutMs: 5_000, useDeviceCommunicator: true, backend: 'cpu',
  })));
  try {
    assert.ok(gs[0].deviceCommunicator !== undefined);
    const subs = await Promise.all(gs.map((g) => g.split({ groupRanks: [[0, 1]], timeoutMs: 3_000 })));
    const has = subs.map((s) => s!.deviceCommunicator !== undefined);
    await Promise.all(subs.map((s) => s!.destroy({ lingerMs: 200 })));
    assert.equal(has, [true, true]);
  } finally {
    await Promise.all(gs.map((g) => g.destroy({ lingerMs: 200 })));
    for (const s of stores) await s.close();
    await server.close();
  }
});

test('close({ timeoutMs }) aborts an operation still in flight; rank 0 waits only lingerMs for members that stay', async () => {
  const { gs, done } = await trio('stuck');
  try {
    const pending = failure(gs[1].recvObject(0)); // rank 0 sends nothing: it waits
    await gs[1].close({ timeoutMs: 200, lingerMs: 100 });
    const e = await pending;
    assert.is(e.code, 'ERR_GROUPCOMM_ABORTED', e.message);
    // The operation says why it ended: close() stopped waiting for it.
    assert.match(e.message, /close\(\) waited 200ms for the operations in flight/);
    assert.match(e.message, /recvObject/);
    const t0 = performance.now();
    await gs[0].close({ lingerMs: 300 });
    const took = performance.now() - t0;
    assert.ok(took >= 250 && took < 2_500, `rank 0 lingered ${took} ms`);
  } finally {
    await done();
  }
});

test('abort: later operations are refused, lookup forgets the group; asyncDispose closes', async () => {
  const g = await StatelessGroupCoordinator.create({ groupRanks: [[0]], globalRank: 0, groupName: 'gone', timeoutMs: 2_000 });
  const aborting = g.abort(new Error('stop'));
  assert.is(g.destroyed, true);
  assert.is(g.abort('again'), aborting);
  await aborting;
  assert.is(StatelessGroupCoordinator.lookup(g.uniqueName), undefined);
  assert.is((await failure(g.barrier())).code, 'ERR_GROUPCOMM_DESTROYED');
  const h = await StatelessGroupCoordinator.create({ groupRanks: [[0]], globalRank: 0, groupName: 'disposed', timeoutMs: 2_000 });
  await h[asyncDispose]();
  assert.is(h.destroyed, true);
  assert.is(StatelessGroupCoordinator.lookup(h.uniqueName), undefined);
});

test.run();
