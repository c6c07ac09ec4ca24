/**
 * A failed create's error (host/coordinator/channels.ts), piece by piece on stand-ins: the
 * verdict (createFailVerdict: a member's reported MISMATCH explains any other failure; group
 * rank 0 leaves its verdict in its store and lingers; a member adopts it), hostsView (what a
 * member makes of rank 0's verdict), namedCreateError (the ranks named, group and global), and
 * recvBufferFor (the CPU group's receive buffer in large groups). coord_channels runs whole
 * creates that fail; these pin each condition.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createFailVerdict, hostsView, namedCreateError, recvBufferFor, type Channels, type FailedCreate } from '../../host/coordinator/channels.js';
import { abortedError, isGroupcommError, mismatchError, peerLostError, protocolError, timeoutError, type GroupcommError } from '../../host/base/errors.js';
import type { GroupLayout } from '../../host/core/layout.js';
import type { TcpStore } from '../../host/store/index.js';
import type { StoreValue } from '../../host/store/types.js';
import { MemStoreServer } from '../helpers/memstore.js';

const enc = new TextEncoder();
const WIRE = 'w_0';
const VERDICT = `groupcomm/create-failed/${WIRE}`;
const REPORT = `groupcomm/members/${WIRE}/mismatch`;

function layout(ranks: number[], me: number, groupIndex = 0): GroupLayout {
  return { groupIndex, ranks, rankInGroup: me, worldSize: 8, firstRank: ranks[0], lastRank: ranks.at(-1)!, nextRank: 0, prevRank: 0 };
}

/** A group's store in memory; `sets` records each set's options (the verdict's write is bounded). */
function groupStore() {
  const mem = new MemStoreServer(2_000);
  const store = mem.client();
  const sets: unknown[] = [];
  const set = store.set.bind(store);
  store.set = async (k: string, v: StoreValue, o?: unknown) => { sets.push(o); return set(k, v); };
  const verdict = () => mem.data.has(VERDICT) ? JSON.parse(new TextDecoder().decode(mem.data.get(VERDICT))) : undefined;
  const report = (globalRank: number, ranks: number[]) => mem.client().append(REPORT, `${JSON.stringify({ ranks, globalRank, groupRank: ranks.indexOf(globalRank) })}\n`);
  return { mem, store: store as unknown as TcpStore, sets, verdict, report };
}

type Fail = Partial<FailedCreate> & { ch: Channels };
const verdictOf = (e: unknown, f: Fail, me = 1) =>
  createFailVerdict(e, { layout: layout([0, 1, 2], me), wireName: WIRE, views: Promise.resolve(), viewErr: () => undefined, ...f });

async function timed<T>(p: Promise<T>): Promise<[T, number]> {
  const t0 = performance.now();
  const v = await p;
  return [v, performance.now() - t0];
}

test('recvBufferFor: nothing up to 17 ranks or when GROUPCOMM_CPU_RECV_BUFFER_BYTES is set; else 16 MiB shared, at least 64 KiB a peer', () => {
  delete process.env.GROUPCOMM_CPU_RECV_BUFFER_BYTES;
  assert.equal([2, 17].map(recvBufferFor), [undefined, undefined]);
  assert.is(recvBufferFor(18), Math.floor((16 << 20) / 17));
  assert.is(recvBufferFor(200), Math.floor((16 << 20) / 199));
  assert.is(recvBufferFor(300), 64 * 1024);
  process.env.GROUPCOMM_CPU_RECV_BUFFER_BYTES = '4096';
  try {
    assert.is(recvBufferFor(64), undefined);
  } finally {
    delete process.env.GROUPCOMM_CPU_RECV_BUFFER_BYTES;
  }
});

test('namedCreateError: a member\'s unnamed failures name group rank 0; every named rank in range is listed, group and global', () => {
  const l = layout([7, 5, 9], 1, 2);
  const at = 'creating group 2 of [7, 5, 9] on global rank 5: ';
  const plain = new Error('not ours');
  assert.is(namedCreateError(plain, l), plain);

  const lost = namedCreateError(peerLostError('reset'), l) as GroupcommError;
  assert.equal([lost.code, lost.rank, lost.peerRank], ['ERR_GROUPCOMM_PEER_LOST', 5, 0]);
  assert.is(lost.message, `${at}lost group rank 0, which hosts the group's store (or it gave up creating the group): reset [group rank 0 = global rank 7]`);

  const ports = namedCreateError(timeoutError('wait', { keys: ['g_2'] }), l) as GroupcommError;
  assert.equal([ports.code, ports.rank, ports.peerRank, ports.peerRanks], ['ERR_GROUPCOMM_TIMEOUT', 5, 0, [0]]);
  assert.is(ports.message, `${at}group rank 0 never published the group's ports (did it call create?): wait [group rank 0 = global rank 7]`);

  const reach = namedCreateError(timeoutError('connect'), l) as GroupcommError;
  assert.equal([reach.peerRank, reach.peerRanks], [0, [0]]);
  assert.is(reach.message, `${at}could not reach group rank 0, which hosts the group's store (gone, or it gave up creating the group): connect [group rank 0 = global rank 7]`);

  // Left as they are: a wait for other keys, a protocol error, an aborted wait for the ports, a failure that names its ranks, and group rank 0's own.
  const asIs: [GroupcommError, GroupLayout, string][] = [
    [timeoutError('keys', { keys: ['groupcomm/x'] }), l, `${at}keys`],
    [timeoutError('two', { keys: ['a', 'b'] }), l, `${at}two`],
    [protocolError('refused'), l, `${at}refused`],
    [abortedError('stopped', { keys: ['g_2'] }), l, `${at}stopped`],
    [peerLostError('one', { peerRanks: [] }), l, `${at}one`],
    [peerLostError('two', { peerRank: 2 }), l, `${at}two [group rank 2 = global rank 9]`],
    [peerLostError('own'), layout([7, 5, 9], 0, 2), 'creating group 2 of [7, 5, 9] on global rank 7: own'],
    [timeoutError('own'), layout([7, 5, 9], 0, 2), 'creating group 2 of [7, 5, 9] on global rank 7: own'],
  ];
  for (const [e, lay, msg] of asIs) {
    const n = namedCreateError(e, lay) as GroupcommError;
    assert.equal([n.code, n.message, n.peerRank, n.peerRanks, n.rank], [e.code, msg, e.peerRank, e.peerRanks, lay.ranks[lay.rankInGroup]]);
  }
  // Ranks outside the group are not named.
  const out = namedCreateError(timeoutError('join', { peerRanks: [3, 1, -1] }), l) as GroupcommError;
  assert.is(out.message, `${at}join [group rank 1 = global rank 5]`);
});

function verdictStore(v: unknown): TcpStore {
  return {
    get: async (k: string) => {
      if (k === VERDICT) return enc.encode(typeof v === 'string' ? v : JSON.stringify(v));
      throw timeoutError('no verdict', { keys: [k] });
    },
  } as unknown as TcpStore;
}

test('hostsView: a member adopts the ranks group rank 0 names (integers > 0), or its MISMATCH; else keeps its own error', async () => {
  const e = timeoutError('here', { peerRanks: [1, 2] });
  const one = await hostsView(verdictStore({ code: 'ERR_GROUPCOMM_TIMEOUT', peerRanks: [0, 2.5, -1, 'x', 2], message: 'there' }), WIRE, e);
  assert.equal([one.code, one.peerRanks, one.peerRank], ['ERR_GROUPCOMM_TIMEOUT', [2], 2]);
  assert.is(one.message, 'group rank 0 could not complete the group (there); here: here');
  const two = await hostsView(verdictStore({ code: 'ERR_GROUPCOMM_PEER_LOST', peerRanks: [2, 3], message: 'there' }), WIRE, e);
  assert.equal([two.code, two.peerRanks, two.peerRank], ['ERR_GROUPCOMM_TIMEOUT', [2, 3], undefined]);
  const mm = await hostsView(verdictStore({ code: 'ERR_GROUPCOMM_MISMATCH', peerRanks: [2], message: 'views differ' }), WIRE, e);
  assert.equal([mm.code, mm.peerRanks, mm.cause], ['ERR_GROUPCOMM_MISMATCH', [0, 2], e]);
  assert.is(mm.message, 'group rank 0 could not complete the group: views differ; here: here');
  // Nothing to adopt: no verdict, an unreadable one, or one that names no member.
  assert.is(await hostsView(verdictStore({ peerRanks: [2], message: 'x' }), 'w_1', e), e);
  for (const v of ['{', { code: 'ERR_GROUPCOMM_TIMEOUT', peerRanks: [0], message: 'x' }, { peerRanks: [], message: 'x' }]) {
    assert.is(await hostsView(verdictStore(v), WIRE, e), e, JSON.stringify(v));
  }
});

test('createFailVerdict, group rank 0: the ranks it names (or a MISMATCH) are left in its store, bounded; then it lingers', async () => {
  const cases: [GroupcommError, unknown][] = [
    [timeoutError('t', { peerRanks: [2] }), { code: 'ERR_GROUPCOMM_TIMEOUT', peerRanks: [2], message: 't' }],
    [peerLostError('l', { peerRank: 1 }), { code: 'ERR_GROUPCOMM_PEER_LOST', peerRanks: [1], message: 'l' }],
    [timeoutError('none'), undefined],
  ];
  for (const [e, left] of cases) {
    const g = groupStore();
    const [v, ms] = await timed(verdictOf(e, { ch: { store: g.store, server: {} as never } }, 0));
    assert.is(v, e);
    assert.equal(g.verdict(), left, e.message);
    if (left) assert.equal(g.sets, [{ timeoutMs: 200 }]);
    assert.ok(ms >= 450, `lingered ${ms} ms`);
  }
  // Its own MISMATCH (no member named: the reporter is not in its view) is left too.
  const g = groupStore();
  const own = mismatchError('views', { peerRanks: [] });
  assert.is(await verdictOf(own, { ch: { store: g.store, server: {} as never }, viewErr: () => own }, 0), own);
  assert.equal(g.verdict(), { code: 'ERR_GROUPCOMM_MISMATCH', peerRanks: [], message: 'views' });
  // An abort leaves nothing and does not linger; a refused handshake neither lingers nor adopts a verdict.
  const a = groupStore();
  const aborted = abortedError('stop');
  const [v, ms] = await timed(verdictOf(aborted, { ch: { store: a.store, server: {} as never }, views: new Promise(() => {}) }, 0));
  assert.equal([v, a.verdict(), ms < 300], [aborted, undefined, true]);
  const p = groupStore();
  await p.store.set(VERDICT, JSON.stringify({ code: 'ERR_GROUPCOMM_TIMEOUT', peerRanks: [2], message: 'stale' }));
  const refused = protocolError('refused');
  assert.is(await verdictOf(refused, { ch: { store: p.store, server: {} as never } }, 0), refused);
});

test('createFailVerdict, a member: it adopts rank 0\'s verdict after a timeout, a lost peer or a refused handshake, not after an abort', async () => {
  for (const e of [timeoutError('t'), peerLostError('l'), protocolError('p')]) {
    const g = groupStore();
    await g.store.set(VERDICT, JSON.stringify({ code: 'ERR_GROUPCOMM_TIMEOUT', peerRanks: [2], message: 'never came' }));
    const v = await verdictOf(e, { ch: { store: g.store } }) as GroupcommError;
    assert.equal([v.code, v.peerRanks, v.cause], [e.code, [2], e]);
    assert.is(g.verdict().message, 'never came'); // a member writes no verdict
  }
  const g = groupStore();
  await g.store.set(VERDICT, JSON.stringify({ code: 'ERR_GROUPCOMM_TIMEOUT', peerRanks: [2], message: 'x' }));
  const aborted = abortedError('stop');
  assert.is(await verdictOf(aborted, { ch: { store: g.store } }), aborted);
  // No store (it never reached rank 0's): nothing to ask.
  const t = timeoutError('connect');
  assert.is(await verdictOf(t, { ch: {}, views: undefined }), t);
});

test('createFailVerdict: a member\'s reported MISMATCH explains the failure; waited for after a refused handshake or a MISMATCH, not after a timeout', async () => {
  const late = async (e: GroupcommError) => {
    const g = groupStore();
    setTimeout(() => void g.report(2, [0, 1, 2, 3]), 100);
    return [await verdictOf(e, { ch: { store: g.store } }) as GroupcommError, g] as const;
  };
  for (const e of [protocolError('refused'), mismatchError('mesh says')]) {
    const [v] = await late(e);
    assert.equal([v.code, v.peerRank, v.rank], ['ERR_GROUPCOMM_MISMATCH', 2, 1], e.message);
    assert.match(v.message, /global rank 2 \(group rank 2 here/);
  }
  const t = timeoutError('t', { peerRanks: [2] });
  const [v, g] = await late(t);
  assert.is(v, t);
  // Already there: a timeout is explained too.
  const [w] = [await verdictOf(t, { ch: { store: g.store }, views: undefined }) as GroupcommError];
  assert.equal([w.code, w.peerRank], ['ERR_GROUPCOMM_MISMATCH', 2]);
  // This rank's own comparison wins, and is reported at once (even while its view check is pending).
  const own = mismatchError('own view');
  const [x, ms] = await timed(verdictOf(own, { ch: { store: g.store }, viewErr: () => own, views: new Promise(() => {}) }));
  assert.equal([x, ms < 300], [own, true]);
  const other = await verdictOf(timeoutError('t'), { ch: { store: g.store }, viewErr: () => own });
  assert.is(other, own);
  // The comparison failed (MISMATCH) before anyone reported: that is the verdict.
  const e = groupStore();
  const mine = mismatchError('mine');
  const checked = Promise.reject(mine);
  checked.catch(() => {});
  assert.is(await verdictOf(protocolError('refused'), { ch: { store: e.store }, views: checked }), mine);
  // It failed otherwise: no MISMATCH.
  const timedOut = Promise.reject(timeoutError('check'));
  timedOut.catch(() => {});
  const r = protocolError('refused');
  assert.is(await verdictOf(r, { ch: { store: e.store }, views: timedOut }), r);
});

test.run();
