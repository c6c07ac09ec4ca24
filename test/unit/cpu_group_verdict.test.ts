/**
 * CpuGroup's onVerdict (host/cpu/group.ts): what a peer's verdict — "I received a frame of your
 * collective #seq made for another call" — fails on this rank, depending on where that
 * collective is here when the verdict arrives:
 * - still in flight: that collective fails, and only it (a collective queued after it runs);
 * - finished, with later collectives under way: those fail, and nothing is kept for later;
 * - finished, nothing under way: kept for the next call; a pending receive is not failed;
 * - failed here already (its timeout): ignored, even after a point-to-point op of the same
 *   sequence number finished (point to point is not remembered as a collective), and in a slot
 *   of the remembered collectives never written yet.
 * The verdicts come from rank 0 as a gather root: it only receives, so rank 1's frames are the
 * only ones compared and rank 1 learns of the mismatch from the verdict alone
 * (cpu_mismatch covers a verdict arriving between calls).
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { CpuGroup } from '../../host/cpu/group.js';
import { groupsPerCase } from '../helpers/cpu_groups.js';
import { tensor, type CpuTensor } from '../../host/core/tensor.js';
import type { GroupcommError } from '../../host/base/errors.js';

const groups = groupsPerCase('verdict', 3_000);
const pair = () => groups.groupOf(2);
const failure = (p: Promise<unknown>) => p.then(() => undefined, (e: GroupcommError) => e);
const f32 = (k = 4) => tensor(new Float32Array(k).fill(1));
const i32 = (k = 4) => tensor(new Int32Array(k).fill(1));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** The verdict's own words (a MISMATCH rank 1 found itself would not say them). */
const VERDICT_0 = /rank 0 received a frame of this rank's collective #0 made for another call than its own/;

/** Rank 0, the gather root, compares rank 1's frames of collective #0 and fails with MISMATCH; its verdict goes to rank 1. */
async function rootFails(g0: CpuGroup): Promise<void> {
  const e = await failure(g0.gather(f32(), { dst: 0 }));
  assert.is(e?.code, 'ERR_GROUPCOMM_MISMATCH', String(e));
}

/** A send from rank 1 to rank 0 and its receive: both resolve (rank 1 has no verdict pending). */
async function p2pWorks(gs: CpuGroup[], what: string): Promise<void> {
  const got = f32();
  got.data.fill(0);
  const [s, r] = await Promise.allSettled([gs[1].send(tensor(new Float32Array([5, 6, 7, 8])), 0), gs[0].recv(got, 1)]);
  assert.is(s.status, 'fulfilled', `${what}: rank 1's send: ${(s as PromiseRejectedResult).reason}`);
  assert.is(r.status, 'fulfilled', `${what}: rank 0's recv: ${(r as PromiseRejectedResult).reason}`);
  assert.equal([...got.data], [5, 6, 7, 8], what);
}


test('a verdict for the collective in flight fails that one at once, not the one queued after it', async () => {
  const gs = await pair();
  // Rank 1's allReduce #0 sends to rank 0, then waits for rank 0's part, which never comes: only
  // the verdict ends it before its timeout. #1 is queued behind it (already counted in flight).
  const t0 = performance.now();
  const first = failure(gs[1].allReduce(i32()));
  const second = gs[1].allReduce(f32());
  void second.catch(() => {}); // awaited below; a failing case must not end in an unhandled rejection
  await rootFails(gs[0]);
  const e = await first;
  assert.is(e?.code, 'ERR_GROUPCOMM_MISMATCH', String(e));
  assert.match(e!.message, VERDICT_0);
  assert.equal([e!.rank, e!.peerRank], [1, 0]);
  assert.ok(performance.now() - t0 < 2_000, 'it waited for its timeout');
  // #1 was not failed with #0: it runs with rank 0's #1.
  const [a, b] = await Promise.all([gs[0].allReduce(f32()), second]);
  assert.equal([...a.data, ...b.data], new Array(8).fill(2));
});

test('a verdict for a finished collective fails the collectives under way, and is not kept for the next call', async () => {
  const gs = await pair();
  // Rank 1 only sends in gather #0: it resolves. Its allReduce #1 then waits for rank 0.
  await gs[1].gather(i32(), { dst: 0 });
  const later = failure(gs[1].allReduce(f32()));
  await rootFails(gs[0]);
  const e = await later;
  assert.is(e?.code, 'ERR_GROUPCOMM_MISMATCH', String(e));
  assert.match(e!.message, VERDICT_0);
  assert.match(e!.message, /dtype \(int32 here, float32 on rank 0\)/);
  assert.equal([e!.rank, e!.peerRank], [1, 0]);
  // Told once: the next call is not failed with it again.
  await p2pWorks(gs, 'after the failed allReduce');
});

test('a verdict for a finished collective with only a receive pending: the receive goes on, the next call fails with it', async () => {
  const gs = await pair();
  await gs[1].gather(i32(), { dst: 0 });
  const got = f32();
  let settledEarly = false;
  const recv = gs[1].recv(got, 0).finally(() => { settledEarly = true; });
  void recv.catch(() => {});
  await rootFails(gs[0]);
  await sleep(200); // the verdict frame arrives while the receive is pending
  assert.is(settledEarly, false, 'the receive was failed with a verdict about a collective');
  await gs[0].send(tensor(new Float32Array([3, 4, 5, 6])), 1);
  assert.equal([...(await recv).data], [3, 4, 5, 6]);
  const e = await failure(gs[1].barrier());
  assert.is(e?.code, 'ERR_GROUPCOMM_MISMATCH', String(e));
  assert.match(e!.message, VERDICT_0);
});

test('a verdict for a collective that already failed here (its timeout) is ignored, even after sends of the same seq finished', async () => {
  const gs = await pair();
  // Collective #1, not #0: slot 1 of the remembered collectives was never written (#0 fills slot 0).
  await Promise.all(gs.map((g) => g.barrier()));
  // Rank 1's allReduce #1 sends its frame to rank 0, then times out waiting.
  const e = await failure(gs[1].allReduce(i32(), { timeoutMs: 300 }));
  assert.is(e?.code, 'ERR_GROUPCOMM_TIMEOUT', String(e));
  // Rank 1's first two sends have p2p seq 0 and 1, the second like the failed collective.
  await p2pWorks(gs, 'before the verdict');
  await p2pWorks(gs, 'before the verdict, again');
  const r = await failure(gs[0].gather(f32(), { dst: 0 })); // rank 0's #1: the verdict for rank 1's #1
  assert.is(r?.code, 'ERR_GROUPCOMM_MISMATCH', String(r));
  await sleep(200); // the verdict arrives and is dropped
  await p2pWorks(gs, 'after the verdict');
  // Both are at collective #2: a matching call works.
  const sums = await Promise.all(gs.map((g) => g.allReduce(f32()))) as CpuTensor[];
  for (const t of sums) assert.equal([...t.data], [2, 2, 2, 2]);
});

test.run();
