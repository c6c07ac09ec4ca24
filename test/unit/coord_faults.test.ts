/**
 * A group's failure state (host/coordinator/faults.ts) without a coordinator: three GroupFaults
 * over one real TcpStore (rank 0's client hosts the server, as in a group), a stand-in CPU group
 * (onLost, hasLeft). The first fatal failure wins, reaches onFail once and every other member
 * (each kind of error rebuilt with its code, the teller named, a mismatch's ranks seen from
 * here); a timeout's cause reaches the others for that collective; judge's verdicts (the
 * failure, a loss of group rank 0, a clean departure, a survey naming who never called or who
 * stopped calling, a collective called differently); callsAt; malformed inbox messages ignored.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { GroupFaults } from '../../host/coordinator/faults.js';
import { TcpStore } from '../../host/store/index.js';
import {
  abortedError, mismatchError, peerLeftError, peerLostError, protocolError, timeoutError, type GroupcommError,
} from '../../host/base/errors.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const enc = new TextEncoder();

interface Rank {
  f: GroupFaults;
  failed: GroupcommError[];
  left: Set<number>;
  lost?: (e: GroupcommError) => void;
}

interface Trio { ranks: Rank[]; stores: TcpStore[]; label: string; close(): Promise<void> }

let seq = 0;
async function trio(n = 3, o: { noPublish?: boolean; failPublish?: boolean } = {}): Promise<Trio> {
  const label = `faults${seq++}_0`;
  const s0 = await TcpStore.create({ port: 0, isServer: true, timeoutMs: 3_000 });
  const stores = [s0];
  for (let r = 1; r < n; r++) stores.push(await TcpStore.create({ port: s0.port, timeoutMs: 3_000 }));
  const ranks = stores.map((store, r) => {
    const x: Rank = { failed: [], left: new Set(), f: undefined as unknown as GroupFaults };
    const cpu = { onLost: (fn: (e: GroupcommError) => void) => { x.lost = fn; }, hasLeft: (p: number) => x.left.has(p) };
    const st = o.noPublish ? Object.assign(Object.create(store), { publish: undefined })
      : o.failPublish ? Object.assign(Object.create(store), { publish: () => Promise.reject(new Error('no room')) }) : store;
    x.f = new GroupFaults({ label, rankInGroup: r, worldSize: n, store: st, cpu: cpu as never, onFail: (e) => x.failed.push(e) });
    x.f.listen();
    return x;
  });
  for (const x of ranks) await (x.f as unknown as { opening: Promise<unknown> }).opening;
  return {
    ranks, stores, label,
    close: async () => {
      for (const x of ranks) x.f.close();
      for (const s of stores.slice(1)) await s.close();
      await s0.close();
    },
  };
}

async function until(cond: () => boolean, ms = 2_000): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > ms) throw new Error('condition not met in time');
    await sleep(5);
  }
}

const inbox = (label: string, r: number) => `groupcomm/faults/${label}/0/to/${r}/`;

test('the first fatal failure wins, reaches onFail once and every member, naming the teller', async () => {
  const t = await trio();
  try {
    const [a, b, c] = t.ranks;
    const e = peerLostError('lost 2', { peerRank: 2 });
    a.f.fail(e, -1, true);
    a.f.fail(protocolError('later'), -1, true);
    assert.is(a.f.failure, e);
    assert.equal(a.failed, [e]);
    await until(() => b.f.failure !== undefined && c.f.failure !== undefined);
    const got = b.f.failure!;
    assert.is(got.code, 'ERR_GROUPCOMM_PEER_LOST');
    assert.is(got.message, 'lost 2 (seen by group rank 0)');
    assert.equal([got.rank, got.peerRanks, got.peerRank], [1, [2], 2]);
    assert.equal(b.failed, [got]);
    assert.equal([c.f.failure!.rank, c.f.failure!.peerRanks], [2, [2]]);
    // A told failure is not told again (no echo back to rank 0, whose failure stays its own).
    await sleep(50);
    assert.is(a.f.failure, e);
    assert.equal(a.failed.length, 1);
    // Judge: the failure wins over whatever the operation saw.
    assert.is(await b.f.judge(timeoutError('t'), 0, 'barrier', 100), got);
    assert.is(await a.f.judge(new Error('plain'), 0, 'barrier', 100), e);
  } finally {
    await t.close();
  }
});

test('each kind of told failure keeps its code; a mismatch names the teller and its ranks, not this one', async () => {
  const cases: [GroupcommError, string][] = [
    [peerLeftError('x', { peerRanks: [0] }), 'ERR_GROUPCOMM_PEER_LEFT'],
    [timeoutError('x', { peerRanks: [0] }), 'ERR_GROUPCOMM_TIMEOUT'],
    [protocolError('x', { peerRanks: [0] }), 'ERR_GROUPCOMM_PROTOCOL'],
    [abortedError('x', { peerRanks: [0] }), 'ERR_GROUPCOMM_PROTOCOL'],
    [mismatchError('x', { peerRanks: [2] }), 'ERR_GROUPCOMM_MISMATCH'],
  ];
  for (const [e, code] of cases) {
    const t = await trio();
    try {
      const [a, b, c] = t.ranks;
      b.f.fail(e, -1, true);
      await until(() => a.f.failure !== undefined && c.f.failure !== undefined);
      assert.is(a.f.failure!.code, code);
      assert.is(a.failed.length, 1);
      if (code === 'ERR_GROUPCOMM_MISMATCH') {
        assert.equal([a.f.failure!.peerRanks, a.f.failure!.peerRank], [[2, 1], undefined]);
        assert.equal([c.f.failure!.peerRanks, c.f.failure!.peerRank], [[1], 1]);
      } else {
        assert.equal([a.f.failure!.peerRanks, a.f.failure!.peerRank], [[0], 0]);
      }
    } finally {
      await t.close();
    }
  }
});

test('a CPU group\'s loss is the group\'s failure, told to the others', async () => {
  const t = await trio();
  try {
    const [a, b] = t.ranks;
    const e = peerLostError('gone', { peerRank: 2 });
    a.lost!(e);
    assert.is(a.f.failure, e);
    await until(() => b.f.failure !== undefined);
    assert.is(b.f.failure!.code, 'ERR_GROUPCOMM_PEER_LOST');
  } finally {
    await t.close();
  }
});

test('a timeout\'s cause reaches the others for that collective; it is not the group\'s failure', async () => {
  const t = await trio();
  try {
    const [a, b] = t.ranks;
    a.f.fail(timeoutError('rank 2 never came', { peerRank: 2 }), 5, false);
    assert.is(a.f.failure, undefined);
    assert.equal(a.failed, []);
    await sleep(100);
    assert.is(b.f.failure, undefined);
    const why = await b.f.judge(timeoutError('mine'), 5, 'barrier', 100) as GroupcommError;
    assert.is(why.message, 'rank 2 never came (seen by group rank 0)');
    // A peer that left while collective #5 needed it: the cause told for #5 explains it.
    b.left.add(0);
    const left = await b.f.judge(peerLostError('closed', { peerRank: 0 }), 5, 'barrier', 100) as GroupcommError;
    assert.is(left.message, 'rank 2 never came (seen by group rank 0)');
  } finally {
    await t.close();
  }
});

test('judge: a peer that left cleanly is reported as having left; a loss becomes the failure', async () => {
  const t = await trio();
  try {
    const [a, b, c] = t.ranks;
    const left = await b.f.judge(peerLeftError('bye', { peerRank: 2 }), -1, 'recv', 50) as GroupcommError;
    assert.equal([left.code, left.rank, left.peerRank], ['ERR_GROUPCOMM_PEER_LEFT', 1, 2]);
    assert.match(left.message, /^group rank 2 left the group \(closed it\) while this recv still needed it/);
    b.left.add(2);
    const lostButLeft = await b.f.judge(peerLostError('eof', { peerRanks: [2] }), -1, 'recv', 50) as GroupcommError;
    assert.is(lostButLeft.code, 'ERR_GROUPCOMM_PEER_LEFT');
    const noPeer = await b.f.judge(peerLeftError('bye'), -1, 'send', 50) as GroupcommError;
    assert.match(noPeer.message, /^group rank \? left/);
    assert.is(b.f.failure, undefined);
    // No rank named on a member: the store connection closed, and group rank 0 hosts it.
    const lost = await c.f.judge(peerLostError('store closed'), -1, 'barrier', 50) as GroupcommError;
    assert.equal([lost.code, lost.rank, lost.peerRank], ['ERR_GROUPCOMM_PEER_LOST', 2, 0]);
    assert.match(lost.message, /^lost group rank 0, which hosts the group's store: store closed/);
    assert.is(c.f.failure, lost);
    assert.equal(c.failed, [lost]);
    // On group rank 0 the same error is the failure as it is.
    const e0 = peerLostError('x');
    assert.is(await a.f.judge(e0, -1, 'barrier', 50), a.f.failure);
  } finally {
    await t.close();
  }
});

test('judge: protocol errors and mismatches fail the group; other codes pass through', async () => {
  const t = await trio();
  try {
    const [a, b] = t.ranks;
    const inv = abortedError('aborted');
    assert.is(await a.f.judge(inv, -1, 'x', 50), inv);
    assert.is(a.f.failure, undefined);
    const m = mismatchError('m', { peerRank: 1 });
    assert.is(await a.f.judge(m, -1, 'x', 50), m);
    assert.is(a.f.failure, m);
    const p = protocolError('p');
    assert.is(await b.f.judge(p, -1, 'x', 50), p);
    assert.is(b.f.failure, p);
  } finally {
    await t.close();
  }
});

/** Runs `fn` on a fresh trio (a judged timeout is fresh for a while: the next judge would adopt it). */
async function on(fn: (r: Rank[]) => Promise<void>, n = 3): Promise<void> {
  const t = await trio(n);
  try {
    await fn(t.ranks);
  } finally {
    await t.close();
  }
}

test('a collective\'s timeout: the survey names the ranks that never called it, preferring those in no operation', async () => {
  const t = await trio();
  try {
    const [a, b, c] = t.ranks;
    a.f.calls = 4; b.f.calls = 4; c.f.calls = 3;
    const e = await a.f.judge(timeoutError('waited', { timeoutMs: 100, elapsedMs: 101 }), 3, 'barrier', 100) as GroupcommError;
    assert.equal([e.code, e.rank, e.peerRanks, e.peerRank, e.timeoutMs, e.elapsedMs], ['ERR_GROUPCOMM_TIMEOUT', 0, [2], 2, 100, 101]);
    assert.is(e.message, 'barrier (collective #3) timed out: group rank 2 never called it (or did not answer); here: waited');
    assert.is(a.f.failure, undefined);
    // Told to the others as the cause of #3.
    await until(() => (b.f as unknown as { causes: Map<number, unknown> }).causes.has(3));
    assert.match(((await b.f.judge(timeoutError('w'), 3, 'barrier', 100)) as Error).message, /never called it.*\(seen by group rank 0\)$/);
  } finally {
    await t.close();
  }
  await on(async ([a, b, c]) => {
    a.f.calls = 8; b.f.calls = 7; c.f.calls = 7;
    b.f.busy = 1;
    const e = await a.f.judge(timeoutError('w'), 7, 'barrier', 100) as GroupcommError;
    assert.equal([e.peerRanks, e.peerRank], [[2], 2]);
    assert.match(e.message, /group rank 2 never called it/);
  });
  await on(async ([a, b, c]) => {
    a.f.calls = 8; b.f.calls = 7; c.f.calls = 7;
    b.f.busy = 1; c.f.busy = 1;
    const e = await a.f.judge(timeoutError('w'), 7, 'barrier', 100) as GroupcommError;
    assert.equal([e.peerRanks, e.peerRank], [[1, 2], undefined]);
    assert.match(e.message, /: group ranks 1, 2 never called it/);
  });
  await on(async ([a, b, c]) => {
    // Everyone past it: the timeout as it was.
    a.f.calls = 8; b.f.calls = 9; c.f.calls = 8;
    const w = timeoutError('w');
    assert.is(await a.f.judge(w, 7, 'barrier', 100), w);
  });
});

test('a point-to-point timeout names the peer in no operation, or another rank that stopped calling', async () => {
  await on(async ([a]) => {
    const e = await a.f.judge(timeoutError('recv', { peerRank: 1 }), -1, 'recv', 100) as GroupcommError;
    assert.equal([e.peerRanks, e.peerRank], [[1], 1]);
    assert.is(e.message, 'recv timed out: group rank 1 is in no operation (stopped calling?) (or did not answer); here: recv');
  });
  await on(async ([a, b]) => {
    b.f.busy = 1;
    const e = await a.f.judge(timeoutError('recv', { peerRanks: [1] }), -1, 'recv', 100) as GroupcommError;
    assert.equal(e.peerRanks, [2]);
  });
  await on(async ([a, b, c]) => {
    b.f.busy = 1; c.f.busy = 1;
    const e = await a.f.judge(timeoutError('recv', { peerRank: 1 }), -1, 'recv', 100) as GroupcommError;
    assert.equal(e.peerRanks, [1]);
  });
  await on(async ([a]) => {
    // No peer named: every rank in no operation.
    const e = await a.f.judge(timeoutError('x'), -1, 'barrier', 100) as GroupcommError;
    assert.equal([e.peerRanks, e.peerRank], [[1, 2], undefined]);
    assert.match(e.message, /group ranks 1, 2 are in no operation/);
  });
  await on(async ([a, b, c]) => {
    b.f.busy = 1; c.f.busy = 1;
    const x = timeoutError('x');
    assert.is(await a.f.judge(x, -1, 'barrier', 100), x);
  });
});

test('a collective called differently on some rank is a mismatch naming the calls; callsAt lists them', async () => {
  const t = await trio();
  try {
    const [a, b, c] = t.ranks;
    a.f.record(2, 'barrier'); b.f.record(2, 'barrier'); c.f.record(2, 'broadcastObject');
    a.f.calls = 3; b.f.calls = 3; c.f.calls = 3;
    assert.equal([...await a.f.callsAt(2)], [[0, 'barrier'], [1, 'barrier'], [2, 'broadcastObject']]);
    assert.equal([...await b.f.callsAt(5)], []);
    const e = await a.f.judge(timeoutError('w'), 2, 'barrier', 100) as GroupcommError;
    assert.equal([e.code, e.rank, e.peerRanks, e.peerRank], ['ERR_GROUPCOMM_MISMATCH', 0, [2], 2]);
    assert.is(e.message, 'barrier (collective #2): the ranks called different collectives: group rank 2 called broadcastObject, ' +
      'this rank (group rank 0) barrier; here: w');
    assert.is(a.f.failure, e);
    assert.equal(a.failed, [e]);
  } finally {
    await t.close();
  }
});

test('only the last 64 collectives are remembered', async () => {
  const t = await trio(2);
  try {
    const [a, b] = t.ranks;
    for (let n = 0; n <= 64; n++) b.f.record(n, `op${n}`);
    assert.equal([...await a.f.callsAt(0)], []);
    assert.equal([...await a.f.callsAt(1)], [[1, 'op1']]);
    assert.equal([...await b.f.callsAt(64)], [[1, 'op64']]);
  } finally {
    await t.close();
  }
});

test('malformed inbox messages are ignored; an ask with an index but no record answers without a call', async () => {
  const t = await trio();
  try {
    const [a, b] = t.ranks;
    const pub = (tag: string, v: string | Uint8Array) => t.stores[2].publish!([`${inbox(t.label, 1)}${tag}`], [typeof v === 'string' ? enc.encode(v) : v], { timeoutMs: 500 });
    await pub('fail/x/0', JSON.stringify({ code: 'ERR_GROUPCOMM_PROTOCOL', message: 'm', peerRanks: [], n: -1, fatal: true }));
    await pub('fail/2/0', 'not json');
    await pub('fail/2/1', JSON.stringify({ code: 'ERR_GROUPCOMM_PROTOCOL', message: 7, peerRanks: [], n: -1, fatal: true }));
    await pub('fail/2/2', JSON.stringify({ code: 'ERR_GROUPCOMM_PROTOCOL', message: 'm', peerRanks: 'all', n: -1, fatal: true }));
    await pub('fail/2/3', 'null');
    await pub('ask/0/7', '');
    await pub('ask/0/x', '');
    await pub('ans/0/2', 'not json');
    await sleep(100);
    assert.is(b.f.failure, undefined);
    // A non-fatal cause with out-of-range ranks: those are dropped; fatal only when `true`.
    await pub('fail/2/4', JSON.stringify({ code: 'ERR_GROUPCOMM_TIMEOUT', message: 'm', peerRanks: [0, 3, -1, 1.5, 'x'], n: 'a', fatal: 'yes' }));
    await sleep(50);
    assert.is(b.f.failure, undefined);
    const stall = await b.f.judge(timeoutError('w'), -1, 'recv', 100) as GroupcommError;
    assert.equal([stall.message, stall.peerRanks, stall.peerRank, stall.rank], ['m (seen by group rank 2)', [0], 0, 1]);
    // An ask whose index is unknown still answers, without a call name.
    a.f.calls = 1;
    const s = await (b.f as unknown as { survey(n: number): Promise<Map<number, { calls: number; what?: string }>> }).survey(9);
    assert.equal(s.get(0), { calls: 1, busy: false, what: undefined });
    await pub('fail/2/5', JSON.stringify({ code: 'ERR_GROUPCOMM_PROTOCOL', message: 'bad', peerRanks: [0], n: 1, fatal: true }));
    await until(() => b.f.failure !== undefined);
    assert.is(b.f.failure!.code, 'ERR_GROUPCOMM_PROTOCOL');
  } finally {
    await t.close();
  }
});

test('a store that cannot push: nobody is asked, the timeout stays as it was; close stops the inbox; settle waits for tells', async () => {
  const t = await trio(2, { noPublish: true });
  try {
    const [a] = t.ranks;
    const w = timeoutError('w');
    assert.is(await a.f.judge(w, 0, 'barrier', 100), w);
    assert.equal([...await a.f.callsAt(0)], []);
    a.f.fail(protocolError('p'), -1, true);
    await a.f.settle();
  } finally {
    await t.close();
  }
  const t2 = await trio(2);
  try {
    const [a, b] = t2.ranks;
    b.f.close();
    a.f.fail(protocolError('p'), -1, true);
    const t0 = Date.now();
    await a.f.settle();
    assert.ok(Date.now() - t0 < 400);
    await sleep(100);
    assert.is(b.f.failure, undefined);
    // A group of one and a store without subscribe open no inbox; judge works without asking.
    const solo = new GroupFaults({ label: 'solo_0', rankInGroup: 0, worldSize: 1, store: t2.stores[0], onFail: () => {} });
    solo.listen();
    assert.is((solo as unknown as { opening: Promise<unknown> }).opening instanceof Promise, true);
    const x = timeoutError('x');
    assert.is(await solo.judge(x, 0, 'barrier', 10), x);
  } finally {
    await t2.close();
  }
});

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
    assert.ok(performance.now() - t0 < 50);
  }, 2);
  const hang = { publish: () => new Promise(() => {}) };
  const f = new GroupFaults({ label: 'hang_0', rankInGroup: 0, worldSize: 2, store: hang as never, onFail: () => {} });
  f.fail(protocolError('p'), -1, true);
  const t0 = performance.now();
  await f.settle();
  const took = performance.now() - t0;
  assert.ok(took >= 450 && took < 1_500, `${took} ms`);
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

test.run();
