/**
 * The coordinator's object and tensor-dict calls (host/coordinator/objects.ts) on three
 * coordinators in this process and on a group of one: broadcastObject, broadcastObjectList
 * (filled in place; a length that differs refused with the list untouched), send/recvObject
 * (a self-send is a structured clone), tensor dicts sent to oneself (a deep copy: tensors
 * copied, on their device), the ring defaults of send/recvTensorDict, the refusals of what is not
 * a dict, barrier, and a barrier entered as different collectives failing with MISMATCH that
 * names the calls (last: it fails the group).
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { StatelessGroupCoordinator } from '../../host/coordinator/coordinator.js';
import { TcpStore, TcpStoreServer } from '../../host/store/index.js';
import { tensor, type CpuTensor, type Tensor } from '../../host/core/tensor.js';
import { onDevice, read } from '../helpers/coord_f32.js';

const server = await TcpStoreServer.listen({ port: 0 });
const stores = await Promise.all([0, 1, 2].map(() => TcpStore.create({ port: server.port, timeoutMs: 20_000 })));
const groups = await Promise.all(stores.map((rendezvous, r) => StatelessGroupCoordinator.create({
  groupRanks: [[0, 1, 2]], globalRank: r, groupName: 'cobj', rendezvous, timeoutMs: 10_000, backend: 'cpu', useDeviceCommunicator: true,
})));
const solo = await StatelessGroupCoordinator.create({
  groupRanks: [[0]], globalRank: 0, groupName: 'cobj1', rendezvous: stores[0], timeoutMs: 10_000, backend: 'cpu', useDeviceCommunicator: true,
});
const all = <T>(f: (g: StatelessGroupCoordinator, r: number) => Promise<T>) => Promise.all(groups.map((g, r) => f(g, r)));

async function rejects(p: Promise<unknown>, code: string, re: RegExp): Promise<Record<string, unknown>> {
  const e = await p.then(() => undefined, (x) => x);
  assert.is(e?.code, code, String(e));
  assert.match(String(e.message), re);
  return e;
}

test('broadcastObject: src keeps its object, the others get a copy; broadcastObjectList fills each list in place', async () => {
  const obj = { a: [1, 2], s: 'x' };
  const got = await all((g, r) => g.broadcastObject(r === 1 ? obj : undefined, 1));
  assert.is(got[1], obj);
  assert.equal(got[0], obj);
  assert.equal(got[2], obj);
  const lists: unknown[][] = [[0, 0], ['a', { b: 2 }], [0, 0]];
  const filled = await all((g, r) => g.broadcastObjectList(lists[r], 1));
  for (const [r, l] of filled.entries()) {
    assert.is(l, lists[r], 'the same array');
    assert.equal(l, ['a', { b: 2 }]);
  }
});

test('broadcastObjectList: a list of another length is refused (naming src), left untouched; a non-list refused', async () => {
  const lists = [[1, 2, 3], [0, 0], [0, 0, 0]];
  const r = await Promise.allSettled(groups.map((g, i) => g.broadcastObjectList(lists[i], 0)));
  assert.is(r[0].status, 'fulfilled');
  assert.equal(lists[2], [1, 2, 3]);
  const e = (r[1] as PromiseRejectedResult).reason;
  assert.is(e.code, 'ERR_GROUPCOMM_INVALID_ARGUMENT', String(e));
  assert.match(e.message, /broadcastObjectList: rank 0 sent 3 elements, this rank's list has 2/);
  assert.is(e.peerRank, 0);
  assert.equal(lists[1], [0, 0]);
  await rejects(groups[0].broadcastObjectList('ab' as never, 0), 'ERR_GROUPCOMM_INVALID_ARGUMENT', /broadcastObjectList: list must be an array/);
  await rejects(groups[0].broadcastObject(1, 3), 'ERR_GROUPCOMM_INVALID_ARGUMENT', /broadcastObject: src 3 is not a rank/);
  await rejects(groups[0].broadcastObjectList([], -1), 'ERR_GROUPCOMM_INVALID_ARGUMENT', /broadcastObjectList: src -1 is not a rank/);
});

test('sendObject / recvObject between ranks and to oneself (a structured clone, taken in order)', async () => {
  const [g0, g1] = groups;
  const [, got] = await Promise.all([g0.sendObject({ n: 1 }, 2), groups[2].recvObject(0)]);
  assert.equal(got, { n: 1 });
  const mine = { k: [1] };
  await g1.sendObject(mine, 1);
  await g1.sendObject('second', 1);
  mine.k.push(2);
  assert.equal(await g1.recvObject(1), { k: [1] });
  assert.is(await g1.recvObject(1), 'second');
  await rejects(g1.recvObject(1), 'ERR_GROUPCOMM_INVALID_ARGUMENT', /recvObject: nothing was sent to this rank by itself/);
  await rejects(g1.sendObject(1, 3), 'ERR_GROUPCOMM_INVALID_ARGUMENT', /sendObject: dst 3/);
  await rejects(g1.recvObject(3), 'ERR_GROUPCOMM_INVALID_ARGUMENT', /recvObject: src 3/);
});

test('a tensor dict sent to oneself is a deep copy (tensors copied, device ones on the device)', async () => {
  const g = groups[0];
  const cpu = tensor(Float32Array.of(1, 2));
  const dev = onDevice(g, [3, 4]);
  const inner = { x: 1 };
  await g.sendTensorDict({ cpu, dev, inner, s: 'v' }, 0);
  cpu.data[0] = 9;
  g.backend!.copyFromHost(dev.data as never, new Uint8Array(Float32Array.of(9, 9).buffer));
  inner.x = 2;
  const d = await g.recvTensorDict(0);
  assert.equal(Object.keys(d), ['cpu', 'dev', 'inner', 's']);
  assert.equal(read(g, d.cpu as Tensor), [1, 2]);
  assert.is((d.dev as Tensor).device, g.device);
  assert.equal(read(g, d.dev as Tensor), [3, 4]);
  assert.equal(d.inner, { x: 1 });
  assert.is(d.s, 'v');
  await rejects(g.recvTensorDict(0), 'ERR_GROUPCOMM_INVALID_ARGUMENT', /recvTensorDict: nothing was sent/);
});

test('send/recvTensorDict default to the next and previous rank; non-dicts refused', async () => {
  const got = await all(async (g, r) => {
    const [, d] = await Promise.all([g.sendTensorDict({ r, t: tensor(Int32Array.of(r)) }), g.recvTensorDict()]);
    return [d.r, [...((d.t as CpuTensor).data as Int32Array)]];
  });
  assert.equal(got, [[2, [2]], [0, [0]], [1, [1]]]);
  for (const bad of [null, [1], new Map(), 5]) {
    await rejects(groups[0].sendTensorDict(bad as never, 1), 'ERR_GROUPCOMM_INVALID_ARGUMENT', /^cobj_\d+\.sendTensorDict .*sendTensorDict: the source must pass a plain object/);
    await rejects(groups[0].broadcastTensorDict(bad as never, 0), 'ERR_GROUPCOMM_INVALID_ARGUMENT', /broadcastTensorDict: the source must pass a plain object/);
  }
  await rejects(groups[0].sendTensorDict({}, 3), 'ERR_GROUPCOMM_INVALID_ARGUMENT', /sendTensorDict: dst 3/);
  await rejects(groups[0].recvTensorDict(3), 'ERR_GROUPCOMM_INVALID_ARGUMENT', /recvTensorDict: src 3/);
  await rejects(groups[0].broadcastTensorDict({}, 3), 'ERR_GROUPCOMM_INVALID_ARGUMENT', /broadcastTensorDict: src 3/);
  // A receiver's argument is not checked (only src passes a dict).
  const b = await all((g, r) => g.broadcastTensorDict(r === 2 ? { z: 1 } : (null as never), 2));
  assert.equal(b[0], { z: 1 });
});

test('a group of one: objects, lists and dicts come back as given; point to point through the loopback queue', async () => {
  const o = { a: 1 };
  assert.is(await solo.broadcastObject(o, 0), o);
  const l = [1, 2];
  assert.is(await solo.broadcastObjectList(l, 0), l);
  const d = { t: tensor(Float32Array.of(5)) };
  assert.is(await solo.broadcastTensorDict(d, 0), d);
  await solo.sendObject(o, 0);
  const back = await solo.recvObject(0);
  assert.equal(back, o);
  assert.ok(back !== o, 'a clone');
  await solo.sendTensorDict(d);
  const dd = await solo.recvTensorDict();
  assert.ok(dd.t !== d.t);
  assert.equal(read(solo, dd.t as Tensor), [5]);
  await solo.barrier();
});

test('barrier: every member returns; entered as different collectives it fails with MISMATCH naming the calls', async () => {
  // A trio of its own: calls are numbered on each rank as made (refusals included), and the
  // mismatch fails the group.
  const trio = await Promise.all(stores.map((rendezvous, r) => StatelessGroupCoordinator.create({
    groupRanks: [[0, 1, 2]], globalRank: r, groupName: 'cobjb', rendezvous, timeoutMs: 10_000, backend: 'cpu',
  })));
  try {
    await Promise.all(trio.map((g) => g.barrier()));
    await Promise.all(trio.map((g) => g.barrier()));
    // Rank 0 makes one more collective first: a broadcastObject it sources (it returns once published).
    const r = await Promise.allSettled(trio.map(async (g, i) => {
      if (i === 0) await g.broadcastObject('extra', 0);
      return g.barrier({ timeoutMs: 5_000 });
    }));
    const e0 = (r[0] as PromiseRejectedResult).reason;
    assert.is(e0?.code, 'ERR_GROUPCOMM_MISMATCH', String(e0));
    assert.match(e0.message, /barrier \(collective #3 here\): group rank 1 entered it as its collective #2, group rank 2 entered it as its collective #2: /);
    assert.match(e0.message, /the ranks' earlier calls differ \(collective #2: broadcastObject on group rank 0, barrier on group rank 1, barrier on group rank 2\)/);
    assert.equal(e0.peerRanks, [1, 2]);
    assert.is(e0.peerRank, undefined);
    assert.is(e0.rank, 0);
    // The others fail too (by their own barrier, or by rank 0's failure reaching them first).
    for (const x of r.slice(1)) assert.is((x as PromiseRejectedResult).reason?.code, 'ERR_GROUPCOMM_MISMATCH');
  } finally {
    await Promise.all(trio.map((g) => g.abort()));
  }
});

test('barrier in a group of two: the one rank that differs is the peerRank', async () => {
  const pair = await Promise.all(stores.slice(0, 2).map((rendezvous, r) => StatelessGroupCoordinator.create({
    groupRanks: [[0, 1]], globalRank: r, groupName: 'cobjb2', rendezvous, timeoutMs: 10_000, backend: 'cpu',
  })));
  try {
    const r = await Promise.allSettled(pair.map(async (g, i) => {
      if (i === 0) await g.broadcastObject('extra', 0);
      return g.barrier({ timeoutMs: 5_000 });
    }));
    const e0 = (r[0] as PromiseRejectedResult).reason;
    assert.is(e0?.code, 'ERR_GROUPCOMM_MISMATCH', String(e0));
    assert.match(e0.message, /barrier \(collective #1 here\): group rank 1 entered it as its collective #0: .*\(collective #0: broadcastObject on group rank 0, barrier on group rank 1\)/);
    assert.is(e0.peerRank, 1);
    assert.equal(e0.peerRanks, [1]);
  } finally {
    await Promise.all(pair.map((g) => g.abort()));
  }
});

test('close', async () => {
  await Promise.all([...groups, solo].map((g) => g.abort()));
  await Promise.all(stores.map((s) => s.close()));
  await server.close();
});

test.run();
