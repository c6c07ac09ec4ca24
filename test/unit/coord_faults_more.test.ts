/**
 * More of a group's failure state (host/coordinator/faults.ts), as coord_faults: surveys a rank
 * does not answer, an inbox closed before it opened, stores that refuse to push or give no inbox,
 * settle's bound, the last 16 causes, forged answers, collective #0, a failure told during a
 * survey, the first cause kept over a newer stall, a cause awaited while judging a departure,
 * no CPU group, no store.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { GroupFaults } from '../../host/coordinator/faults.js';
import {
  peerLeftError, peerLostError, protocolError, timeoutError, type GroupcommError,
} from '../../host/base/errors.js';
import { trio, on, until, inbox, sleep, enc } from '../helpers/faults_trio.js';

test('a rank that does not answer counts as in no operation and short of the collective (after ASK_MS)', async () => {
  await on(async ([a, b, c]) => {
    a.f.calls = 1; b.f.calls = 1; c.f.calls = 1;
    c.f.close();
    const t0 = performance.now();
    const e = await a.f.judge(timeoutError('w'), 0, 'barrier', 100) as GroupcommError;
    assert.ok(performance.now() - t0 >= 450, 'waited for the answers');
    assert.equal(e.peerRanks, [2]);
  });
});

test('an inbox closed before it opened stays closed; a store that refuses to push: the timeout as it was', async () => {
  const t = await trio(2);
  try {
    const late = new GroupFaults({ label: t.label, rankInGroup: 1, worldSize: 2, store: t.stores[1], onFail: () => {} });
    t.ranks[1].f.close();
    late.listen();
    late.close();
    await (late as unknown as { opening: Promise<unknown> }).opening;
    t.ranks[0].f.fail(protocolError('p'), -1, true);
    await t.ranks[0].f.settle();
    await sleep(100);
    assert.is(late.failure, undefined);
  } finally {
    await t.close();
  }
  const t2 = await trio(2, { failPublish: true });
  try {
    const w = timeoutError('w');
    assert.is(await t2.ranks[0].f.judge(w, 0, 'barrier', 100), w);
  } finally {
    await t2.close();
  }
});

test('settle: at once when nothing is being told; at most ASK_MS for a tell that hangs', async () => {
  await on(async ([a]) => {
    a.f.fail(protocolError('p'), -1, true);
    await a.f.settle();
    const t0 = performance.now();
    await a.f.settle();
    assert.ok(performance.now() - t0 < 300, 'at once, not after ASK_MS');
  }, 2);
  const hang = { publish: () => new Promise(() => {}) };
  const f = new GroupFaults({ label: 'hang_0', rankInGroup: 0, worldSize: 2, store: hang as never, onFail: () => {} });
  f.fail(protocolError('p'), -1, true);
  const t0 = performance.now();
  await f.settle();
  const took = performance.now() - t0;
  assert.ok(took >= 450 && took < 3_000, `${took} ms`);
});

test('only the last 16 causes are kept: an old collective\'s cause is forgotten', async () => {
  await on(async ([a, b]) => {
    for (let n = 0; n <= 16; n++) b.f.fail(timeoutError(`cause ${n}`), n, false, false);
    // A negative timeout makes no stall fresh: only the kept causes answer.
    const keep = await b.f.judge(timeoutError('w'), 1, 'barrier', -1_000) as GroupcommError;
    assert.is(keep.message, 'cause 1');
    a.f.calls = 0;
    const old = await b.f.judge(timeoutError('w'), 0, 'barrier', -1_000) as GroupcommError;
    assert.match(old.message, /^barrier \(collective #0\) timed out: group rank 0 never called it/);
  }, 2);
});

test('answers: one for an unknown survey, a rank out of range or calls that are no number are ignored', async () => {
  const t = await trio();
  try {
    const [a, b] = t.ranks;
    const pub = (tag: string, v: string) => t.stores[2].publish!([`${inbox(t.label, 0)}${tag}`], [enc.encode(v)], { timeoutMs: 500 });
    // rank 2 does not answer for itself (its inbox is closed); forged answers in its name are checked.
    t.ranks[2].f.close();
    a.f.calls = 1; b.f.calls = 1;
    const surveyed = (a.f as unknown as { survey(n: number): Promise<Map<number, unknown>> }).survey(0);
    await sleep(30);
    await pub('ans/0/x', JSON.stringify({ calls: 5, busy: false }));
    await pub('ans/0/2', JSON.stringify({ calls: 'many', busy: true }));
    await pub('ans/9/2', JSON.stringify({ calls: 5, busy: true }));
    await pub('ans/0/2', 'null');
    const s = await surveyed;
    assert.equal([...s.keys()], [1]);
    // A well-formed one: busy only when `true`, what only a string.
    const surveyed2 = (a.f as unknown as { survey(n: number): Promise<Map<number, unknown>> }).survey(0);
    await sleep(30);
    await pub('ans/1/2', JSON.stringify({ calls: 3, busy: 'yes', what: 7 }));
    assert.equal((await surveyed2).get(2), { calls: 3, busy: false, what: undefined });
    // An ask naming a rank out of range gets no answer.
    await t.stores[2].publish!([`${inbox(t.label, 1)}ask/0/-1`], [new Uint8Array(0)], { timeoutMs: 500 });
  } finally {
    await t.close();
  }
});

test('collective #0: a told cause, a survey, a mismatch; a loss explained by a cause is not the failure', async () => {
  await on(async ([a, b, c]) => {
    a.f.calls = 1; b.f.calls = 1; c.f.calls = 0;
    const e = await a.f.judge(timeoutError('w'), 0, 'barrier', 100) as GroupcommError;
    assert.equal(e.peerRanks, [2]);
    assert.match(e.message, /^barrier \(collective #0\) timed out/);
    await until(() => (b.f as unknown as { causes: Map<number, unknown> }).causes.has(0));
    // A peer gone without a goodbye while a cause for this collective is known: the cause.
    const lost = await b.f.judge(peerLostError('eof', { peerRank: 2 }), 0, 'barrier', 100) as GroupcommError;
    assert.match(lost.message, /\(seen by group rank 0\)$/);
    assert.is(b.f.failure, undefined);
  });
  await on(async ([a, b, c]) => {
    a.f.record(0, 'barrier'); b.f.record(0, 'allReduce'); c.f.record(0, 'broadcastObject');
    a.f.calls = 1; b.f.calls = 1; c.f.calls = 1;
    const e = await a.f.judge(timeoutError('w'), 0, 'barrier', 100) as GroupcommError;
    assert.equal([e.code, e.peerRanks, e.peerRank], ['ERR_GROUPCOMM_MISMATCH', [1, 2], undefined]);
  });
  await on(async ([a, b]) => {
    // Point to point: no call names are compared (an answer for #-1 names none).
    b.f.record(0, 'allReduce');
    const e = await a.f.judge(timeoutError('w', { peerRanks: [1] }), -1, 'recv', 100) as GroupcommError;
    assert.equal([e.code, e.peerRanks], ['ERR_GROUPCOMM_TIMEOUT', [1]]);
  });
});

test('a failure told while this rank surveys wins over the survey', async () => {
  await on(async ([a, b, c]) => {
    c.f.close(); // c does not answer: the survey would wait ASK_MS
    const t0 = performance.now();
    const judged = a.f.judge(timeoutError('w'), 0, 'barrier', 100);
    await sleep(50);
    b.f.fail(peerLostError('c is gone', { peerRank: 2 }), -1, true);
    const e = await judged as GroupcommError;
    assert.is(e, a.f.failure);
    assert.equal([e.code, e.message], ['ERR_GROUPCOMM_PEER_LOST', 'c is gone (seen by group rank 1)']);
    assert.ok(performance.now() - t0 < 450, 'the survey ended with the failure');
  });
});

test('a point-to-point timeout naming one peer by peerRanks, every rank in no operation: that peer', async () => {
  await on(async ([a]) => {
    const e = await a.f.judge(timeoutError('recv', { peerRanks: [1] }), -1, 'recv', 100) as GroupcommError;
    assert.equal(e.peerRanks, [1]);
  });
});

test('without a CPU group: a lost peer is the failure', async () => {
  const f = new GroupFaults({ label: 'nocpu_0', rankInGroup: 1, worldSize: 3, onFail: () => {} });
  const e = peerLostError('x', { peerRank: 2 });
  assert.is(await f.judge(e, -1, 'recv', 10), e);
  assert.is(f.failure, e);
  // On group rank 0 a loss naming no rank is the failure as it is (rank 0 hosts the store).
  const f0 = new GroupFaults({ label: 'nocpu_0', rankInGroup: 0, worldSize: 3, onFail: () => {} });
  const e0 = peerLostError('x');
  assert.is(await f0.judge(e0, -1, 'barrier', 10), e0);
  assert.is(f0.failure, e0);
});

test('the first cause told for a collective is kept; a newer stall does not replace it', async () => {
  await on(async ([a, b]) => {
    b.f.fail(timeoutError('first'), 0, false, false);
    b.f.fail(timeoutError('second'), 0, false, false);
    b.f.fail(timeoutError('newer stall'), 6, false, false);
    assert.is(((await b.f.judge(timeoutError('w'), 0, 'barrier', 100)) as Error).message, 'first');
    b.left.add(0);
    assert.is(((await b.f.judge(peerLeftError('bye', { peerRank: 0 }), 0, 'barrier', 100)) as Error).message, 'first');
    // A rank's own tell comes back to nobody: its stall stays its own error.
    a.f.fail(timeoutError('mine'), -1, false);
    await sleep(50);
    assert.is(((await a.f.judge(timeoutError('w'), -1, 'recv', 100)) as Error).message, 'mine');
  }, 2);
});

test('a cause told while a departure is judged is waited for (up to ASK_MS)', async () => {
  await on(async ([a, b]) => {
    const judged = b.f.judge(peerLeftError('bye', { peerRank: 0 }), 3, 'barrier', 100);
    await sleep(100);
    a.f.fail(timeoutError('the cause'), 3, false);
    assert.is(((await judged) as Error).message, 'the cause (seen by group rank 0)');
  }, 2);
});

test('without a store: a timeout is judged as it was; a group of one opens no inbox', async () => {
  const f = new GroupFaults({ label: 'nostore_0', rankInGroup: 0, worldSize: 2, onFail: () => {} });
  const w = timeoutError('w');
  assert.is(await f.judge(w, 0, 'barrier', 10), w);
  const t = await trio(2);
  // A store that can push but gives no inbox: nobody is asked (no answer could come back).
  const s0 = t.stores[0];
  const pushOnly = new GroupFaults({ label: 'push_0', rankInGroup: 0, worldSize: 2, store: { publish: s0.publish.bind(s0) } as never, onFail: () => {} });
  pushOnly.listen();
  assert.is(await pushOnly.judge(w, 0, 'barrier', 10), w);
  try {
    const solo = new GroupFaults({ label: 'solo1_0', rankInGroup: 0, worldSize: 1, store: t.stores[0], onFail: () => {} });
    solo.listen();
    await (solo as unknown as { opening: Promise<unknown> }).opening;
    assert.is((solo as unknown as { sub: unknown }).sub, undefined);
    solo.close();
  } finally {
    await t.close();
  }
});

test.run();
