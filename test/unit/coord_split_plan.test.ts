/**
 * The parts of a coordinator's split (host/coordinator/split.ts) that need no group, with a
 * stand-in parent: planSplit's checks and the new groups' options; agreeOnSplit comparing every
 * rank's hash of (groupRanks, groupName, useMessageQueueBroadcaster); splitDevice's color, key
 * and name and its refusal of a child of the wrong shape (closed first); splitRendezvous's
 * prefix; creationSignal following the parent's signal until detached. (runSplit end to end:
 * coord_split.)
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { agreeOnSplit, creationSignal, planSplit, splitDevice, splitRendezvous, type SplitParent } from '../../host/coordinator/split.js';
import { Deadline } from '../../host/base/deadline.js';
import { tensor, type Tensor } from '../../host/core/tensor.js';
import { MemStoreServer } from '../helpers/memstore.js';
import type { CoordinatorOptions } from '../../host/coordinator/types.js';

const parent = (extra: Partial<SplitParent> = {}): SplitParent => ({
  rank: 5, ranks: [3, 5, 7, 9], localRank: 1, label: 'par_0', timeoutMs: 4_000,
  inherited: { host: '10.77.0.1', secret: 's', insecure: false, globalWorldSize: 12, useDeviceCommunicator: true },
  backend: undefined, store: undefined, cpu: undefined, comm: undefined, ...extra,
});
const dl = () => new Deadline(5_000, undefined, 'split');
function refused(f: () => unknown, re: RegExp): Record<string, unknown> {
  try {
    f();
  } catch (e) {
    assert.is((e as { code?: string }).code, 'ERR_GROUPCOMM_INVALID_ARGUMENT', String(e));
    assert.match((e as Error).message, re);
    return e as Record<string, unknown>;
  }
  assert.unreachable(`expected a refusal matching ${re}`);
  return {};
}

test('planSplit: this rank\'s layout and the new groups\' options (name, timeout, message queue, inherited fields)', () => {
  const { layout, options } = planSplit(parent(), { groupRanks: [[3, 9], [7, 5]] }, 2);
  assert.equal(layout?.ranks, [7, 5]);
  assert.is(layout?.rankInGroup, 1);
  assert.is(layout?.groupIndex, 1);
  assert.equal(options, {
    host: '10.77.0.1', secret: 's', insecure: false, globalWorldSize: 12, useDeviceCommunicator: true,
    groupRanks: [[3, 9], [7, 5]], globalRank: 5, localRank: 1, groupName: 'par_0.split2', useMessageQueueBroadcaster: undefined, timeoutMs: 4_000,
  });
  const named = planSplit(parent(), { groupRanks: [[5]], groupName: 'mine', timeoutMs: 50, useMessageQueueBroadcaster: true }, 0);
  assert.is(named.options.groupName, 'mine');
  assert.is(named.options.timeoutMs, 50);
  assert.is(named.options.useMessageQueueBroadcaster, true);
  assert.equal(named.layout?.ranks, [5]);
});

test('planSplit: a rank in no list gets no layout, but its lists are checked as a listed rank\'s would be', () => {
  const out = planSplit(parent(), { groupRanks: [[3, 7], [9]] }, 0);
  assert.is(out.layout, undefined);
  assert.is(out.options.globalRank, 5);
  refused(() => planSplit(parent(), { groupRanks: [[3, 3]] }, 0), /3/);
  refused(() => planSplit(parent(), { groupRanks: [[3, 7], [7]] }, 0), /7/);
  refused(() => planSplit(parent(), { groupRanks: [[]] }, 0), /empty/);
});

test('planSplit refuses a missing or malformed partition, and ranks that are not the parent\'s', () => {
  for (const o of [undefined, null, 5]) refused(() => planSplit(parent(), o as never, 0), /^split: options object with groupRanks required$/);
  for (const g of [undefined, [], [3, 5], [[3], 5], 'x']) {
    refused(() => planSplit(parent(), { groupRanks: g as never }, 0), /^split: groupRanks must be a non-empty array of rank lists, got /);
  }
  const e = refused(() => planSplit(parent(), { groupRanks: [[3, 5], [4]] }, 0), /^split: rank 4 of groupRanks is not a member of the parent group \[3, 5, 7, 9\]$/);
  assert.is(e.rank, 5);
});

test('agreeOnSplit: every rank\'s hash of the partition, name and message-queue flag compared with group rank 0\'s', async () => {
  await agreeOnSplit(parent(), { groupRanks: [[3]] } as CoordinatorOptions, dl());  // no CPU group: nothing to compare
  const seen: number[] = [];
  const cpuWith = (others: (mine: number) => number[]) => ({
    allGather: async (t: Tensor) => {
      const mine = (t.data as Int32Array)[0];
      seen.push(mine);
      return tensor(Int32Array.from(others(mine)));
    },
  }) as never;
  const o = { groupRanks: [[3, 5]], groupName: 'n' } as CoordinatorOptions;
  await agreeOnSplit(parent({ cpu: cpuWith((m) => [m, m, m]) }), o, dl());
  await agreeOnSplit(parent({ cpu: cpuWith((m) => [m]) }), { ...o, groupName: 'm' }, dl());
  await agreeOnSplit(parent({ cpu: cpuWith((m) => [m]) }), { ...o, useMessageQueueBroadcaster: true }, dl());
  await agreeOnSplit(parent({ cpu: cpuWith((m) => [m]) }), { ...o, groupRanks: [[5, 3]] }, dl());
  await agreeOnSplit(parent({ cpu: cpuWith((m) => [m]) }), { ...o, useMessageQueueBroadcaster: false }, dl());
  assert.is(new Set(seen.slice(0, 4)).size, 4, 'name, flag and order each change the hash');
  assert.is(seen[4], seen[0], 'an absent flag hashes as false');
  assert.ok(seen.every((h) => Number.isInteger(h) && h !== 0));
  try {
    await agreeOnSplit(parent({ cpu: cpuWith((m) => [m, m + 1, m, m - 1]) }), o, dl());
    assert.unreachable();
  } catch (e) {
    const g = e as { code?: string; message: string; rank?: number; peerRanks?: number[] };
    assert.is(g.code, 'ERR_GROUPCOMM_INVALID_ARGUMENT', String(e));
    assert.match(g.message, /^split: group ranks \[1, 3\] passed other groupRanks, groupName or useMessageQueueBroadcaster than group rank 0$/);
    assert.is(g.rank, 5);
    assert.equal(g.peerRanks, [1, 3]);
  }
});

test('splitDevice: the split\'s color, key and name; undefined without a communicator, the capability or split()', async () => {
  const calls: unknown[] = [];
  const closed: unknown[] = [];
  let child: unknown;
  const comm = { split: async (a: Record<string, unknown>) => { calls.push({ ...a, signal: undefined, timeoutMs: typeof a.timeoutMs }); return child; } };
  const backend = { capabilities: { split: true } };
  const p = parent({ comm: comm as never, backend: backend as never });
  const plan = (g: number[][]) => planSplit(p, { groupRanks: g }, 1);
  assert.is(await splitDevice(parent({ backend: backend as never }), plan([[5, 3]]), dl()), undefined);
  assert.is(await splitDevice(parent({ comm: comm as never, backend: { capabilities: { split: false } } as never }), plan([[5, 3]]), dl()), undefined);
  assert.is(await splitDevice(parent({ comm: comm as never }), plan([[5, 3]]), dl()), undefined);
  assert.is(await splitDevice(parent({ comm: {} as never, backend: backend as never }), plan([[5, 3]]), dl()), undefined);
  assert.equal(calls, []);
  const good = { rank: 0, worldSize: 2, close: async (o: unknown) => { closed.push(o); } };
  child = good;
  assert.is(await splitDevice(p, plan([[9], [5, 3]]), dl()), good);
  child = undefined;
  assert.is(await splitDevice(p, plan([[3], [5]]), dl()), undefined);  // a list of one: no communicator
  assert.is(await splitDevice(p, plan([[3, 7]]), dl()), undefined);  // in no list
  assert.equal(calls, [
    { color: 1, key: 0, name: 'par_0.split1_1', signal: undefined, timeoutMs: 'number' },
    { color: -1, key: 0, name: 'par_0.split1_1', signal: undefined, timeoutMs: 'number' },
    { color: -1, key: 0, name: undefined, signal: undefined, timeoutMs: 'number' },
  ]);
  for (const [c, g] of [[{ ...good, rank: 1 }, [[5, 3]]], [{ ...good, worldSize: 3 }, [[5, 3]]], [good, [[3, 7]]]] as const) {
    child = c;
    closed.length = 0;
    const e = await splitDevice(p, plan(g as unknown as number[][]), dl()).then(() => undefined, (x) => x);
    assert.is(e?.code, 'ERR_GROUPCOMM_INVALID_ARGUMENT', String(e));
    assert.match(e.message, /^split: the device split gave rank \d of \d, expected group rank/);
    assert.is(e.rank, 5);
    assert.equal(closed, [{ timeoutMs: 1 }], 'the wrong child closed');
  }
  child = { rank: 1, worldSize: 2, close: async () => { throw new Error('close failed'); } };
  const e = await splitDevice(p, plan([[3, 9]]), dl()).then(() => undefined, (x) => x);
  assert.is(e?.code, 'ERR_GROUPCOMM_INVALID_ARGUMENT', 'a failing close does not hide the refusal');
});

test('splitRendezvous: the parent\'s store under groupcomm/split/<label>/<seq>; none without a store', async () => {
  assert.is(splitRendezvous(parent(), 1), undefined);
  const s = new MemStoreServer();
  const r = splitRendezvous(parent({ store: s.client() }), 3)!;
  await r.set('k', 'v');
  assert.equal([...s.data.keys()], ['groupcomm/split/par_0/3/k']);
  await r.close();
});

test('creationSignal follows the parent\'s signal until detached', () => {
  const a = new AbortController();
  const c = creationSignal(a.signal);
  assert.is(c.signal.aborted, false);
  a.abort('why');
  assert.is(c.signal.aborted, true);
  assert.is(c.signal.reason, 'why');
  const b = new AbortController();
  const d = creationSignal(b.signal);
  d.detach();
  b.abort('late');
  assert.is(d.signal.aborted, false, 'detached: the parent\'s later abort does not reach it');
  const done = new AbortController();
  done.abort('before');
  const e = creationSignal(done.signal);
  assert.is(e.signal.aborted, true);
  assert.is(e.signal.reason, 'before');
  const none = creationSignal(undefined);
  assert.is(none.signal.aborted, false);
  none.detach();
});

test.run();
