// Mismatched collective calls are caught by the fingerprint in every collective frame's tag
// (host/cpu/fingerprint.ts): every rank that receives a frame of another call fails with
// ERR_GROUPCOMM_MISMATCH naming the peer and the fields, instead of computing garbage.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { CpuGroup } from '../../host/cpu/group.js';
import { TcpStore } from '../../host/store/index.js';
import { empty, tensor, type CpuTensor } from '../../host/core/tensor.js';
import { describeMismatch, fingerprint } from '../../host/cpu/fingerprint.js';

let store: TcpStore;
let n = 0;
test.before(async () => { store = await TcpStore.create({ port: 0, isServer: true }); });
test.after(async () => { await store.close(); });

async function groupOf(ws: number): Promise<CpuGroup[]> {
  const groupName = `mm-${n++}`;
  return Promise.all([...Array(ws).keys()].map((rank) => CpuGroup.create({ store, rank, worldSize: ws, groupName, timeoutMs: 1_500 })));
}

type Call = (g: CpuGroup, r: number) => Promise<unknown>;
const f32 = (k = 8) => tensor(new Float32Array(k).fill(1));
const i32 = (k = 8) => tensor(new Int32Array(k).fill(1));

const cases: [string, Call, RegExp][] = [
  ['dtype', (g, r) => g.allReduce(r === 1 ? i32() : f32()), /dtype \((float32|int32) here, (int32|float32) on rank/],
  ['op', (g, r) => g.allReduce(f32(), { op: r === 1 ? 'max' : 'sum' }), /op \((sum|max) here, (max|sum) on rank/],
  ['collective', (g, r) => (r === 1 ? g.broadcast(f32(), { src: 0 }) : g.allReduce(f32())), /collective \((allReduce|broadcast) here/],
  // Rank 1 takes rank 2 as the root: with 2 ranks each would think itself the root and only send,
  // so no frame is ever received and nothing can be compared (docs/cpu-group.md: limits).
  ['root', (g, r) => g.broadcast(f32(), { src: r === 1 ? 2 : 0 }), /root \([02] here, [02] on rank/],
  ['count (large, the ring)', (g, r) => g.allReduce(f32(r === 1 ? 300_000 : 262_144)), /shape or count/],
  ['shape', (g, r) => g.allGather(f32(8), { call: { shape: r === 1 ? [4, 2] : [2, 4] } }), /shape or count/],
  ['dim', (g, r) => g.allGather(f32(8), { call: { shape: [2, 4], dim: r === 1 ? 1 : 0 } }), /dim \([01] here, [01] on rank/],
];

for (const ws of [2, 4]) {
  for (const [what, call, words] of cases) {
    if (what === 'root' && ws < 3) continue;
    test(`${ws} ranks, ${what} differs on rank 1: MISMATCH naming the peer and the field`, async () => {
      const gs = await groupOf(ws);
      try {
        await check(gs, call, words, what, ws);
      } finally {
        await Promise.all(gs.map((g) => g.abort()));
      }
    });
  }
}

async function check(gs: CpuGroup[], call: Call, words: RegExp, what: string, ws: number): Promise<void> {
  {
    {
      const res = await Promise.allSettled(gs.map((g, r) => call(g, r)));
      // Rank 1 and every rank that exchanged a frame with it see the mismatch; nobody resolves
      // with a wrong result unless it never heard from rank 1 (then its data came from equal calls).
      const rejected = res.filter((x) => x.status === 'rejected') as PromiseRejectedResult[];
      // The root case: rank 1 only sends (its tree has it as root), so it may resolve.
      if (what !== 'root') assert.ok(res[1].status === 'rejected', `rank 1 resolved: ${what}`);
      for (const x of rejected) {
        const e = x.reason as { code: string; message: string; peerRank?: number };
        if (e.code !== 'ERR_GROUPCOMM_MISMATCH') continue; // a rank failing for its partner's failure (timeout, lost) is not what is checked here
        assert.match(e.message, words);
        assert.ok(e.peerRank !== undefined && e.peerRank >= 0 && e.peerRank < ws);
      }
      assert.ok(rejected.some((x) => (x.reason as { code: string }).code === 'ERR_GROUPCOMM_MISMATCH'), `no MISMATCH: ${rejected.map((x) => (x.reason as Error).message).join('; ')}`);
    }
  }
}

test('2 ranks, both take themselves as the broadcast root: the next collective fails with MISMATCH naming the earlier call', async () => {
  const gs = await groupOf(2);
  try {
    // No frame of this call is received by anyone: nothing can be compared yet.
    await Promise.all(gs.map((g, r) => g.broadcast(f32(), { src: r })));
    const res = await Promise.allSettled(gs.map((g) => g.allReduce(f32())));
    for (const [r, x] of res.entries()) {
      assert.is(x.status, 'rejected', `rank ${r} resolved`);
      const e = (x as PromiseRejectedResult).reason as { code: string; message: string; peerRank?: number };
      assert.is(e.code, 'ERR_GROUPCOMM_MISMATCH', `rank ${r}: ${e.message}`);
      assert.match(e.message, new RegExp(`collective #0 \\(its call: broadcast \\(dtype float32, root ${1 - r}\\)`));
      assert.is(e.peerRank, 1 - r);
    }
  } finally {
    await Promise.all(gs.map((g) => g.abort()));
  }
});

test('a rank that only sends (gather, not the root) learns of the mismatch its receiver saw: its next collective fails with MISMATCH', async () => {
  const gs = await groupOf(2);
  try {
    const [root, sender] = await Promise.allSettled([gs[0].gather(f32(), { dst: 0 }), gs[1].gather(i32(), { dst: 0 })]);
    assert.is(root.status, 'rejected');
    assert.is(((root as PromiseRejectedResult).reason as { code: string }).code, 'ERR_GROUPCOMM_MISMATCH');
    // Rank 1 compared nothing; its gather may have resolved. Its next collective (which rank 0,
    // having failed, never joins) must fail with the verdict, not time out.
    const t0 = performance.now();
    const e = await gs[1].allReduce(f32()).then(() => undefined, (x) => x as { code: string; message: string; peerRank?: number });
    assert.ok(e, 'rank 1 resolved');
    assert.is(e!.code, 'ERR_GROUPCOMM_MISMATCH', e!.message);
    assert.match(e!.message, /dtype \(int32 here, float32 on rank 0\)/);
    assert.is(e!.peerRank, 0);
    assert.ok(performance.now() - t0 < 1_000, 'it waited for its timeout');
  } finally {
    await Promise.all(gs.map((g) => g.abort()));
  }
});

test('a verdict that arrives between calls fails the next call before it is numbered: the pair is in step again after it', async () => {
  const gs = await groupOf(2);
  try {
    const [root, sender] = await Promise.allSettled([gs[0].gather(f32(), { dst: 0 }), gs[1].gather(i32(), { dst: 0 })]);
    assert.is(root.status, 'rejected');
    assert.is(sender.status, 'fulfilled', 'the sender compared nothing');
    // Let the verdict frame arrive while rank 1 has nothing in flight.
    await new Promise((r) => setTimeout(r, 200));
    const e = await gs[1].barrier().then(() => undefined, (x) => x as { code: string; message: string; peerRank?: number });
    assert.is(e?.code, 'ERR_GROUPCOMM_MISMATCH', String(e?.message));
    assert.equal([e!.peerRank, /dtype \(int32 here, float32 on rank 0\)/.test(e!.message)], [0, true]);
    // Both ranks are at collective #1 now: a matching call works, and the verdict is not told twice.
    const sums = await Promise.all(gs.map((g) => g.allReduce(f32())));
    for (const t of sums) assert.equal([...t.data], [...f32().data].map((v) => 2 * v));
  } finally {
    await Promise.all(gs.map((g) => g.abort()));
  }
});

test('equal calls are not flagged; fingerprints differ by field', async () => {
  const gs = await groupOf(2);
  const out = await Promise.all(gs.map((g) => g.allReduce(f32(), { op: 'sum' }))) as CpuTensor[];
  assert.is((out[0].data as Float32Array)[0], 2);
  const base = { collective: 'allReduce' as const, dtype: 'float32' as const, op: 'sum' as const, shape: [8] };
  assert.is(fingerprint(base), fingerprint({ ...base, shape: [8] }));
  assert.equal(describeMismatch(fingerprint(base), fingerprint({ ...base, dtype: 'int32' }), 1).fields, ['dtype']);
  assert.equal(describeMismatch(fingerprint(base), fingerprint({ ...base, op: 'max', shape: [9] }), 1).fields, ['op', 'shape']);
  await Promise.all(gs.map((g) => g.close()));
  void empty;
});

test.run();
