/**
 * Every member's view of its group (host/coordinator/members.ts) through an in-process store
 * (test/helpers/memstore.ts): rank 0 publishes its view; a member whose groupRanks match joins
 * quietly, one whose do not reports its view under the mismatch key and fails with MISMATCH
 * (which fields differ, both views, rank/peerRank 0); an unreadable view of rank 0 is no
 * verdict; watchViews fails with the first report (naming the reporter's group rank here) or,
 * for a reporter that is no member here, waits for the signal; reportedMismatch finds a report
 * now or within `ms` (at least 200 ms), and turns a store's failure into "none".
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { checkView, publishView, reportedMismatch, watchViews } from '../../host/coordinator/members.js';
import { findGroup } from '../../host/core/layout.js';
import { timeoutError } from '../../host/base/errors.js';
import { MemStoreServer } from '../helpers/memstore.js';
import type { Store } from '../../host/store/types.js';

const opts = { timeoutMs: 2_000 };
const hostKey = (w: string) => `groupcomm/members/${w}/host`;
const mismatchKey = (w: string) => `groupcomm/members/${w}/mismatch`;
const text = (b: Uint8Array) => new TextDecoder().decode(b);
async function mismatch(p: Promise<unknown>, re: RegExp): Promise<Record<string, unknown>> {
  const e = await p.then(() => undefined, (x) => x);
  assert.is(e?.code, 'ERR_GROUPCOMM_MISMATCH', String(e));
  assert.match(String(e.message), re);
  return e;
}

test('a member with rank 0\'s groupRanks passes; nothing is reported', async () => {
  const s = new MemStoreServer();
  const store = s.client();
  await publishView(store, findGroup([[4, 7, 9]], 4), 'g0', opts);
  assert.equal(JSON.parse(text(s.data.get(hostKey('g0'))!)), { ranks: [4, 7, 9], globalRank: 4, groupRank: 0 });
  await checkView(store, findGroup([[4, 7, 9]], 9), 'g0', opts);
  await checkView(store, findGroup([[1, 2], [4, 7, 9]], 7), 'g0', opts);
  assert.is(s.data.has(mismatchKey('g0')), false);
});

test('a member whose groupRanks differ reports its view and fails with MISMATCH naming both views', async () => {
  const s = new MemStoreServer();
  const store = s.client();
  await publishView(store, findGroup([[0, 1, 2]], 0), 'g1', opts);
  const e = await mismatch(checkView(store, findGroup([[0, 2, 1]], 2), 'g1', opts),
    /^group 'g1': groupRanks differ: group rank 0 \(global rank 0\) has groupRanks \[0, 1, 2\] \(world size 3\); here \(group rank 1, global rank 2\): \[0, 2, 1\] \(world size 3\)/);
  assert.is(e.rank, 1);
  assert.is(e.peerRank, 0);
  assert.equal(e.peerRanks, [0]);
  await mismatch(checkView(store, findGroup([[0, 1]], 1), 'g1', opts), /^group 'g1': groupRanks and world size differ: .*here \(group rank 1, global rank 1\): \[0, 1\] \(world size 2\)/);
  await mismatch(checkView(store, findGroup([[0, 1, 2, 3]], 1), 'g1', opts), /groupRanks and world size differ/);
  // One JSON line per reporting member, in order.
  const lines = text(s.data.get(mismatchKey('g1'))!).split('\n');
  assert.equal(lines.map((l) => l && JSON.parse(l)), [
    { ranks: [0, 2, 1], globalRank: 2, groupRank: 1 }, { ranks: [0, 1], globalRank: 1, groupRank: 1 },
    { ranks: [0, 1, 2, 3], globalRank: 1, groupRank: 1 }, '',
  ]);
});

test('a store that cannot take the report: the member still fails with MISMATCH', async () => {
  const s = new MemStoreServer();
  const store = s.client();
  await publishView(store, findGroup([[0, 1]], 0), 'g2', opts);
  let appendOpts: unknown;
  const broken = Object.assign(Object.create(store), {
    append: async (_k: string, _v: unknown, o: unknown) => { appendOpts = o; throw timeoutError('append timed out'); },
  }) as Store;
  await mismatch(checkView(broken, findGroup([[1, 0]], 1), 'g2', { timeoutMs: 1_234, signal: new AbortController().signal }), /groupRanks differ/);
  assert.equal(appendOpts, { timeoutMs: 1_234 }, 'the report gets the timeout only (not a signal that may have fired)');
});

test('rank 0\'s view unreadable (bad JSON, or a field of the wrong type): no verdict, the member goes on', async () => {
  for (const bad of [
    'not json', '[1]', 'null', '{"ranks":"0,1","globalRank":0,"groupRank":0}', '{"ranks":[0,1.5],"globalRank":0,"groupRank":0}',
    '{"ranks":[0,9],"globalRank":"0","groupRank":0}', '{"ranks":[0,9],"globalRank":0,"groupRank":null}',
  ]) {
    const s = new MemStoreServer();
    const store = s.client();
    await store.set(hostKey('g3'), bad);
    await checkView(store, findGroup([[0, 1]], 1), 'g3', opts);
    assert.is(s.data.has(mismatchKey('g3')), false, bad);
  }
});

test('watchViews: the first report fails rank 0 and the matching members, naming the reporter', async () => {
  const s = new MemStoreServer();
  const store = s.client();
  const layout = findGroup([[3, 5, 8]], 3);
  const w = watchViews(store, layout, 'g4', opts);
  await new Promise((r) => setTimeout(r, 20));
  await store.append(mismatchKey('g4'), `${JSON.stringify({ ranks: [3, 8], globalRank: 8, groupRank: 1 })}\n`);
  await store.append(mismatchKey('g4'), `${JSON.stringify({ ranks: [5, 3], globalRank: 5, groupRank: 0 })}\n`);
  const e = await mismatch(w, /^group 'g4': groupRanks and world size differ: global rank 8 \(group rank 2 here, group rank 1 in its view\) has groupRanks \[3, 8\] \(world size 2\); here \(group rank 0, global rank 3\): \[3, 5, 8\] \(world size 3\)/);
  assert.is(e.rank, 0);
  assert.is(e.peerRank, 2);
  assert.equal(e.peerRanks, [2]);
  const e2 = await mismatch(watchViews(store, findGroup([[3, 5, 8]], 5), 'g4', opts), /global rank 8 \(group rank 2 here/);
  assert.is(e2.rank, 1);
});

test('watchViews: a reporter that is group rank 0 in this view is named as such', async () => {
  const s = new MemStoreServer();
  const store = s.client();
  await store.append(mismatchKey('g10'), `${JSON.stringify({ ranks: [3, 5], globalRank: 5, groupRank: 1 })}\n`);
  const e = await mismatch(watchViews(store, findGroup([[5, 3]], 3), 'g10', opts), /global rank 5 \(group rank 0 here, group rank 1 in its view\)/);
  assert.is(e.peerRank, 0);
  assert.equal(e.peerRanks, [0]);
});

test('watchViews without a signal: a reporter that is no member here leaves it pending', async () => {
  const s = new MemStoreServer();
  const store = s.client();
  await store.append(mismatchKey('g11'), `${JSON.stringify({ ranks: [0, 6], globalRank: 6, groupRank: 1 })}\n`);
  let settled: unknown;
  void watchViews(store, findGroup([[0, 1]], 1), 'g11', { timeoutMs: 2_000 }).then(() => { settled = 'resolved'; }, (e) => { settled = e; });
  await new Promise((r) => setTimeout(r, 30));
  assert.is(settled, undefined, String(settled));
});

test('watchViews: a reporter that is no member here does not stop the others (waits for the signal); an unreadable report is MISMATCH', async () => {
  const s = new MemStoreServer();
  const store = s.client();
  await store.append(mismatchKey('g5'), `${JSON.stringify({ ranks: [0, 6], globalRank: 6, groupRank: 1 })}\n`);
  const ac = new AbortController();
  let settled = false;
  const w = watchViews(store, findGroup([[0, 1]], 1), 'g5', { ...opts, signal: ac.signal }).finally(() => { settled = true; });
  await new Promise((r) => setTimeout(r, 30));
  assert.is(settled, false, 'still waiting');
  ac.abort(new Error('create is over'));
  assert.match(String(await w.then(() => undefined, (x) => x)), /create is over/);
  const done = new AbortController();
  done.abort(new Error('already over'));
  assert.match(String(await watchViews(store, findGroup([[0, 1]], 0), 'g5', { ...opts, signal: done.signal }).then(() => undefined, (x) => x)), /already over/);
  await store.set(mismatchKey('g6'), '{oops');
  const e = await mismatch(watchViews(store, findGroup([[0, 1]], 1), 'g6', opts), /^group 'g6': a member's view of the group differs \(unreadable report\)$/);
  assert.is(e.rank, 1);
});

test('reportedMismatch: a report there now or within ms (at least 200 ms); none, or a failing store: undefined', async () => {
  const s = new MemStoreServer();
  const store = s.client();
  const layout = findGroup([[0, 1, 2]], 0);
  const checked: unknown[] = [];
  const recording = Object.assign(Object.create(store), {
    check: (keys: string[], o: unknown) => { checked.push([keys, o]); return store.check(keys); },
  }) as Store;
  assert.is(await reportedMismatch(recording, layout, 'g7', 0), undefined);
  assert.equal(checked, [[[mismatchKey('g7')], { timeoutMs: 200 }]], 'ms 0: one check of the key, bounded');
  assert.is(s.ops.get('get') ?? 0, 0, 'nothing there: not read');
  const t0 = performance.now();
  assert.is(await reportedMismatch(store, layout, 'g7', 50), undefined);
  assert.ok(performance.now() - t0 >= 190, 'waited 200 ms, not 50');
  setTimeout(() => void store.append(mismatchKey('g7'), `${JSON.stringify({ ranks: [0, 2, 1], globalRank: 2, groupRank: 1 })}\n`), 100);
  const e = await reportedMismatch(store, layout, 'g7', 50);
  assert.is(e?.code, 'ERR_GROUPCOMM_MISMATCH');
  assert.match(String(e?.message), /^group 'g7': groupRanks differ: global rank 2 \(group rank 2 here, group rank 1 in its view\)/);
  assert.is((await reportedMismatch(store, layout, 'g7', 0))?.peerRank, 2, 'there now');
  const outsider = findGroup([[0, 1, 2]], 1);
  await store.set(mismatchKey('g8'), `${JSON.stringify({ ranks: [1, 7], globalRank: 7, groupRank: 1 })}\n`);
  const e2 = await reportedMismatch(store, outsider, 'g8', 0);
  assert.match(String(e2?.message), /global rank 7 \(not a member here, group rank 1 in its view\)/);
  assert.is(e2?.peerRank, undefined);
  assert.equal(e2?.peerRanks, []);
  await store.set(mismatchKey('g9'), 'garbage');
  assert.is(await reportedMismatch(store, layout, 'g9', 0), undefined, 'unreadable: none');
  const failing = Object.assign(Object.create(store), { check: async () => { throw new TypeError('bug'); } }) as Store;
  const thrown = await reportedMismatch(failing, layout, 'g7', 0).then(() => undefined, (x) => x);
  assert.instance(thrown, TypeError, 'only store errors mean none');
});

test.run();
