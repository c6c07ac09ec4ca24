// StatelessGroupCoordinator.split with the cpu backend (device tensors on 'host:N'), four ranks as
// coordinators of one process over real sockets: the new groups' device communicators come from
// the parent's split() (no createCommunicator call) when the backend has capabilities.split, and
// are bootstrapped the normal way without it; results element by element, on device and CPU
// tensors; ranks in no list get undefined; the parent keeps working; a rank that passes another
// partition fails every rank alike.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { StatelessGroupCoordinator } from '../../host/coordinator/coordinator.js';
import { resolveBackend } from '../../host/device/registry.js';
import type { DeviceBackendV1 } from '../../host/device/types.js';
import { TcpStore, TcpStoreServer } from '../../host/store/index.js';
import { tensor, type CpuTensor, type Tensor } from '../../host/core/tensor.js';
import { isGroupcommError } from '../../host/base/errors.js';

const opened: { close(): Promise<unknown> }[] = [];
const track = <T extends { close(): Promise<unknown> }>(x: T): T => (opened.push(x), x);
test.after.each(async () => {
  for (const x of opened.splice(0).reverse()) await x.close().catch(() => {});
});

let backend: DeviceBackendV1;
let creates = 0;
test.before(async () => {
  backend = await resolveBackend('cpu');
  // Count the bootstraps: a split sub-group must not make one.
  const orig = backend.createCommunicator.bind(backend);
  backend.createCommunicator = (o) => { creates++; return orig(o); };
});

async function world(n: number, name: string): Promise<StatelessGroupCoordinator[]> {
  const server = track(await TcpStoreServer.listen({ port: 0 }));
  const stores = await Promise.all(Array.from({ length: n }, async () => track(await TcpStore.create({ port: server.port, timeoutMs: 20_000 }))));
  const groups = await Promise.all(stores.map((rendezvous, r) => StatelessGroupCoordinator.create({
    groupRanks: [[...Array(n).keys()]], globalRank: r, localRank: r, groupName: name, rendezvous, timeoutMs: 20_000,
    backend: 'cpu', useDeviceCommunicator: true,
  })));
  for (const g of groups) track({ close: () => g.destroy({ lingerMs: 100 }) });
  return groups;
}

const onDevice = (g: StatelessGroupCoordinator, vals: number[]): Tensor => {
  const t = g.empty([vals.length], 'float32');
  g.backend!.copyFromHost(t.data as never, new Uint8Array(Float32Array.from(vals).buffer));
  return t;
};
const host = (g: StatelessGroupCoordinator, t: Tensor): number[] => {
  const b = new Float32Array(t.shape.reduce((a, x) => a * x, 1));
  g.backend!.copyToHost(new Uint8Array(b.buffer), t.data as never);
  return [...b];
};
const cpu = (vals: number[]): CpuTensor => tensor(Float32Array.from(vals), { shape: [vals.length] });

/** Every member's device allReduce of [10·r + i, …] and CPU allGather of [r]; checked element by element. */
async function check(kids: (StatelessGroupCoordinator | undefined)[], lists: number[][]): Promise<void> {
  await Promise.all(kids.map(async (k, r) => {
    if (!k) return;
    const list = lists.find((l) => l.includes(r))!;
    assert.equal([k.rankInGroup, k.worldSize, [...k.ranks]], [list.indexOf(r), list.length, list]);
    const x = onDevice(k, [10 * r, 10 * r + 1, 10 * r + 2]);
    const y = await k.allReduce(x);
    assert.equal(host(k, y), [0, 1, 2].map((i) => list.reduce((s, q) => s + 10 * q + i, 0)), `rank ${r}: device allReduce`);
    const g = await k.allGather(cpu([r]), 0);
    assert.equal([...(g.data as Float32Array)], list, `rank ${r}: CPU allGather in list order`);
    k.free(x); k.free(y);
  }));
}

test('split: sub-groups in list order, device communicators from the parent\'s split(), ranks in no list get undefined; the parent keeps working', async () => {
  const parent = await world(4, 'sp');
  const before = creates;
  // [3, 1]: rank 3 is group rank 0; ranks 0 and 2 are in no list.
  const lists = [[3, 1]];
  const kids = await Promise.all(parent.map((g) => g.split({ groupRanks: lists, groupName: 'pair' })));
  assert.equal(kids.map((k) => k === undefined), [true, false, true, false]);
  for (const k of kids) if (k) track({ close: () => k.destroy({ lingerMs: 100 }) });
  assert.is(creates, before, 'a sub-group bootstrapped a device communicator instead of splitting the parent\'s');
  assert.ok(kids[1]!.deviceCommunicator && kids[3]!.deviceCommunicator);
  await check(kids, lists);
  // A partition of all four, split again from the same parent, while the first split's group lives.
  const lists2 = [[0, 2], [1, 3]];
  const kids2 = await Promise.all(parent.map((g) => g.split({ groupRanks: lists2, timeoutMs: 20_000 })));
  for (const k of kids2) track({ close: () => k!.destroy({ lingerMs: 100 }) });
  assert.is(creates, before);
  await check(kids2, lists2);
  await check(kids, lists);
  // The parent, after its splits and after a sub-group closed.
  await Promise.all(kids.map((k) => k?.destroy({ lingerMs: 100 })));
  const xs = parent.map((g, r) => onDevice(g, [r, 1]));
  const sums = await Promise.all(parent.map((g, r) => g.allReduce(xs[r])));
  for (const [r, s] of sums.entries()) assert.equal(host(parent[r], s), [6, 4]);
  await check(kids2, lists2);
});

test('split without capabilities.split bootstraps each sub-group\'s communicator the normal way, same results', async () => {
  const parent = await world(4, 'nosplit');
  const caps = backend.capabilities as { split?: boolean };
  caps.split = false;
  try {
    const before = creates;
    const lists = [[2, 0, 3], [1]];
    const kids = await Promise.all(parent.map((g) => g.split({ groupRanks: lists })));
    for (const k of kids) track({ close: () => k!.destroy({ lingerMs: 100 }) });
    assert.is(creates, before + 3, 'one bootstrap per member of the 3-rank group (the group of one has none)');
    assert.is(kids[1]!.worldSize, 1);
    await check(kids, lists);
  } finally {
    caps.split = true;
  }
});

test('split of a split, with the message-queue broadcaster: the grandchild\'s objects and tensors arrive, the child and parent still work', async () => {
  const parent = await world(3, 'mq');
  const kids = await Promise.all(parent.map((g) => g.split({ groupRanks: [[2, 0, 1]], groupName: 'all' })));
  for (const k of kids) track({ close: () => k!.destroy({ lingerMs: 100 }) });
  const before = creates;
  const grand = await Promise.all(kids.map((k) => k!.split({ groupRanks: [[1, 2]], useMessageQueueBroadcaster: true })));
  for (const g of grand) if (g) track({ close: () => g.destroy({ lingerMs: 100 }) });
  assert.is(creates, before);
  assert.equal(grand.map((g) => g && [...g.ranks]), [undefined, [1, 2], [1, 2]]);
  assert.ok(grand[1]!.messageQueue, 'the grandchild has its message queue');
  const got = await Promise.all([grand[1]!.broadcastObject({ hi: 1 }, 0), grand[2]!.broadcastObject(undefined, 0)]);
  assert.equal(got, [{ hi: 1 }, { hi: 1 }]);
  await check(grand, [[1, 2]]);
  await check(kids, [[2, 0, 1]]);
});

test('a rank that passes another partition fails every rank alike, naming it, and the parent still works', async () => {
  const parent = await world(3, 'disagree');
  const res = await Promise.allSettled(parent.map((g, r) => g.split({ groupRanks: r === 2 ? [[0, 2]] : [[0, 1]] })));
  for (const x of res) {
    assert.is(x.status, 'rejected');
    const e = (x as PromiseRejectedResult).reason;
    assert.ok(isGroupcommError(e, 'ERR_GROUPCOMM_INVALID_ARGUMENT' as never), String(e));
    assert.match((e as Error).message, /group ranks \[2\]/);
  }
  // Refused locally, nothing sent: a rank outside the parent.
  const e = await parent[0].split({ groupRanks: [[0, 7]] }).then(() => null, (x) => x);
  assert.ok(isGroupcommError(e, 'ERR_GROUPCOMM_INVALID_ARGUMENT' as never), String(e));
  const xs = parent.map((g, r) => onDevice(g, [r]));
  const sums = await Promise.all(parent.map((g, r) => g.allReduce(xs[r])));
  assert.equal(sums.map((s, r) => host(parent[r], s)), [[3], [3], [3]]);
});

test.run();
