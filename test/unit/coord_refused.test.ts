/**
 * A call refused for its own arguments on one rank is not a collective there: it is refused
 * before it is numbered (host/coordinator/coordinator.ts `op`), so the caller can mend the
 * arguments and call again while the others wait, and the group stays in step — its next
 * barrier (which carries the collective's number) pairs up instead of failing with MISMATCH.
 * Two coordinators in this process over a real store, process group and CPU group.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { StatelessGroupCoordinator } from '../../host/coordinator/coordinator.js';
import { TcpStore, TcpStoreServer } from '../../host/store/index.js';
import { tensor } from '../../host/core/tensor.js';

const server = await TcpStoreServer.listen({ port: 0 });
const stores = await Promise.all([0, 1].map(() => TcpStore.create({ port: server.port, timeoutMs: 20_000 })));
const groups = await Promise.all(stores.map((rendezvous, r) => StatelessGroupCoordinator.create({
  groupRanks: [[0, 1]], globalRank: r, groupName: 'crefused', rendezvous, timeoutMs: 10_000, backend: 'cpu',
})));
const f32 = (v: number[], shape = [v.length]) => tensor(new Float32Array(v), { shape });
const code = (p: Promise<unknown>) => p.then(() => 'resolved', (e) => (e as { code?: string }).code);

/** Rank 1 makes `bad` (refused at once), then the good call; rank 0 only the good call; then a barrier on both. */
async function refusedThenGood(name: string, bad: () => Promise<unknown>, good: (g: StatelessGroupCoordinator, r: number) => Promise<unknown>) {
  const callsBefore = [...groups].map((g) => (g as unknown as { faults: { calls: number } }).faults.calls);
  const first = good(groups[0], 0);
  assert.is(await code(bad()), 'ERR_GROUPCOMM_INVALID_ARGUMENT', `${name}: the bad call is refused`);
  const second = good(groups[1], 1);
  await Promise.all([first, second]);
  await Promise.all(groups.map((g) => g.barrier({ timeoutMs: 5_000 })));
  const callsAfter = [...groups].map((g) => (g as unknown as { faults: { calls: number } }).faults.calls);
  assert.equal(callsAfter.map((c, i) => c - callsBefore[i]), [2, 2], `${name}: the refused call took no number`);
}

test('allReduce: an out of the wrong shape on one rank, then the right call', async () => {
  await refusedThenGood('allReduce', () => groups[1].allReduce(f32([1, 2]), { out: f32([0, 0, 0]) }),
    (g, r) => g.allReduce(f32([r, r])));
});

test('allReduce, reduceScatter, reduceScatterv: an unknown op, avg on bool', async () => {
  await refusedThenGood('allReduce op', () => groups[1].allReduce(f32([1]), { op: 'mean' as 'sum' }), (g) => g.allReduce(f32([1])));
  await refusedThenGood('reduceScatter op', () => groups[1].reduceScatter(f32([1, 2]), 0, { op: 'bogus' as 'sum' }), (g) => g.reduceScatter(f32([1, 2]), 0));
  const bools = () => tensor(new Uint8Array([1, 0]), { shape: [2], dtype: 'bool' });
  await refusedThenGood('reduceScatterv avg on bool', () => groups[1].reduceScatterv(bools(), [1, 1], 0, { op: 'avg' }), (g) => g.reduceScatterv(bools(), [1, 1], 0, { op: 'max' }));
});

test('broadcast, gather, allGather, reduceScatter: a rank out of range or a bad dim', async () => {
  await refusedThenGood('broadcast', () => groups[1].broadcast(f32([1]), 2), (g) => g.broadcast(f32([1]), 0));
  await refusedThenGood('gather', () => groups[1].gather(f32([1]), -1), (g) => g.gather(f32([1]), 0));
  await refusedThenGood('allGather', () => groups[1].allGather(f32([1]), 3), (g) => g.allGather(f32([1]), 0));
  await refusedThenGood('reduceScatter', () => groups[1].reduceScatter(f32([1, 2, 3])), (g) => g.reduceScatter(f32([1, 2])));
});

test('an out that overlaps the input: allReduce (partly), allGather along dim 0 (at all)', async () => {
  const buf = new Float32Array(3);
  await refusedThenGood('allReduce overlap', () => groups[1].allReduce(tensor(buf.subarray(0, 2)), { out: tensor(buf.subarray(1, 3)) }),
    (g) => g.allReduce(f32([1, 2])));
  const four = new Float32Array(4);
  await refusedThenGood('allGather overlap', () => groups[1].allGather(tensor(four.subarray(0, 2)), 0, { out: tensor(four) }),
    (g) => g.allGather(f32([1]), 0));
});

test('in place (out is the input) is no overlap for broadcast and allReduce; a partly overlapping out on broadcast is refused', async () => {
  const ts = [f32([1, 2]), f32([10, 20])];
  const sums = await Promise.all(groups.map((g, r) => g.allReduce(ts[r], { out: ts[r] })));
  assert.ok(sums[0] === ts[0] && sums[1] === ts[1], 'allReduce resolves with the input itself');
  assert.equal([...ts[0].data, ...ts[1].data], [11, 22, 11, 22]);
  const bs = [f32([5, 6]), f32([0, 0])];
  const got = await Promise.all(groups.map((g, r) => g.broadcast(bs[r], 0, { out: bs[r] })));
  assert.ok(got[1] === bs[1], 'broadcast resolves with the input itself');
  assert.equal([...bs[1].data], [5, 6]);
  const buf = new Float32Array(3);
  await refusedThenGood('broadcast overlap', () => groups[1].broadcast(tensor(buf.subarray(0, 2)), 0, { out: tensor(buf.subarray(1, 3)) }),
    (g) => g.broadcast(f32([1, 2]), 0));
});

test('allGatherv, reduceScatterv, allToAll: sizes that do not fit', async () => {
  await refusedThenGood('allGatherv', () => groups[1].allGatherv(f32([1, 2]), [1, 1]), (g, r) => g.allGatherv(f32(r ? [1, 2] : [1]), [1, 2]));
  await refusedThenGood('reduceScatterv', () => groups[1].reduceScatterv(f32([1, 2]), [1, 2]), (g) => g.reduceScatterv(f32([1, 2, 3]), [1, 2]));
  await refusedThenGood('allToAll', () => groups[1].allToAll(f32([1, 2]), { inputSplits: [1, 2] }), (g) => g.allToAll(f32([1, 2])));
});

test('broadcastObject, broadcastObjectList, broadcastTensorDict: a bad src or list', async () => {
  await refusedThenGood('broadcastObject', () => groups[1].broadcastObject('x', 5), (g) => g.broadcastObject('x', 0));
  await refusedThenGood('broadcastObjectList', () => groups[1].broadcastObjectList('no' as unknown as unknown[], 0), (g) => g.broadcastObjectList([1], 0));
  await refusedThenGood('broadcastTensorDict', () => groups[1].broadcastTensorDict({}, 7), (g) => g.broadcastTensorDict({ a: 1 }, 0));
});

test.after(async () => {
  await Promise.all(groups.map((g) => g.close()));
  await Promise.all(stores.map((s) => s.close()));
  await server.close();
});

test.run();
