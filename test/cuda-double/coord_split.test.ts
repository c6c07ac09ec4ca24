// StatelessGroupCoordinator.split with the cuda plugin over the CUDA/NCCL test double, ranks as
// coordinators of one process on devices 0..n-1 (world sizes 3 and 4): the sub-groups' NCCL
// communicators come from ncclCommSplit of the parent's, with no new unique id (the double counts
// both calls); results element by element; the parent keeps working. Skips, with the reason
// printed, where there is no C compiler to build the double.
import { createRequire } from 'node:module';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { StatelessGroupCoordinator } from '../../host/coordinator/coordinator.js';
import { TcpStore, TcpStoreServer } from '../../host/store/index.js';
import type { Tensor } from '../../host/core/tensor.js';
import { useCudaDouble } from './build.js';

const d = useCudaDouble();
if ('skip' in d) console.log(`# ${d.skip}`);
const t = 'skip' in d ? test.skip : test;

const require = createRequire(import.meta.url);
let counterFn: (name: string) => number = () => 0;
if (!('skip' in d)) {
  const koffi = require('koffi') as typeof import('koffi');
  counterFn = koffi.load(d.cudart).func('long gcdouble_counter(const char *name)') as never;
}
const counter = (name: string) => Number(counterFn(name));

const opened: { close(): Promise<unknown> }[] = [];
const track = <T extends { close(): Promise<unknown> }>(x: T): T => (opened.push(x), x);
test.after.each(async () => {
  for (const x of opened.splice(0).reverse()) await x.close().catch(() => {});
});

async function world(n: number, name: string): Promise<StatelessGroupCoordinator[]> {
  const server = track(await TcpStoreServer.listen({ port: 0 }));
  const stores = await Promise.all(Array.from({ length: n }, async () => track(await TcpStore.create({ port: server.port, timeoutMs: 30_000 }))));
  const groups = await Promise.all(stores.map((rendezvous, r) => StatelessGroupCoordinator.create({
    groupRanks: [[...Array(n).keys()]], globalRank: r, localRank: r, groupName: name, rendezvous, timeoutMs: 30_000,
    backend: 'cuda', useDeviceCommunicator: true,
  })));
  for (const g of groups) track({ close: () => g.destroy({ lingerMs: 100 }) });
  return groups;
}

const onDevice = (g: StatelessGroupCoordinator, vals: number[]): Tensor => {
  const x = g.empty([vals.length], 'int32');
  g.backend!.copyFromHost(x.data as never, new Uint8Array(Int32Array.from(vals).buffer));
  return x;
};
const host = (g: StatelessGroupCoordinator, x: Tensor): number[] => {
  const b = new Int32Array(x.shape.reduce((a, k) => a * k, 1));
  g.backend!.copyToHost(new Uint8Array(b.buffer), x.data as never);
  return [...b];
};

async function splitRun(n: number, lists: number[][]): Promise<void> {
  const parent = await world(n, `cs${n}`);
  assert.equal(parent.map((g) => g.device), [...Array(n).keys()].map((r) => `cuda:${r}`));
  const ids = counter('unique_id'), splits = counter('comm_split');
  const kids = await Promise.all(parent.map((g) => g.split({ groupRanks: lists })));
  for (const k of kids) if (k) track({ close: () => k.destroy({ lingerMs: 100 }) });
  assert.is(counter('unique_id'), ids, 'a sub-group made a new NCCL unique id');
  assert.is(counter('comm_split') - splits, n, 'every parent rank calls ncclCommSplit once');
  await Promise.all(kids.map(async (k, r) => {
    const list = lists.find((l) => l.includes(r));
    if (!list) return assert.is(k, undefined, `rank ${r} is in no list`);
    assert.equal([k!.rankInGroup, k!.worldSize, k!.device], [list.indexOf(r), list.length, `cuda:${r}`]);
    const x = onDevice(k!, [r, 100 * r, -r]);
    const y = await k!.allReduce(x);
    assert.equal(host(k!, y), [list.reduce((s, q) => s + q, 0), list.reduce((s, q) => s + 100 * q, 0), -list.reduce((s, q) => s + q, 0)], `rank ${r}`);
    const z = await k!.allGather(x, 0);
    assert.equal(host(k!, z), list.flatMap((q) => [q, 100 * q, -q]), `rank ${r}: allGather in list order`);
    for (const v of [x, y, z]) k!.free(v);
  }));
  // The parent still works, with its sub-groups alive.
  const xs = parent.map((g, r) => onDevice(g, [r + 1]));
  const ys = await Promise.all(parent.map((g, r) => g.allReduce(xs[r], { op: 'max' })));
  assert.equal(ys.map((y, r) => host(parent[r], y)), parent.map(() => [n]));
}

t('world size 4: two pairs split from the parent\'s NCCL communicator, no new unique id', () => splitRun(4, [[2, 0], [1, 3]]));

t('world size 3: one group of two split off, the third rank gets undefined', () => splitRun(3, [[1, 2]]));

test.run();
