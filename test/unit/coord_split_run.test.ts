/**
 * runSplit (host/coordinator/split.ts) with a stand-in parent and a recording `build`, for a new
 * group of one (openGroup then needs no socket): the options the new group is built with (its
 * default timeout the one asked for, else what the open used), how its device communicator
 * came (`how`), the rendezvous view and the creation signal let go once it is built, and a
 * failed open closing the split device communicator (and leaving nothing to close without one).
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { planSplit, runSplit, type SplitParent } from '../../host/coordinator/split.js';
import type { CoordinatorOptions } from '../../host/coordinator/types.js';
import type { OpenedGroup } from '../../host/coordinator/create.js';
import { releaseName } from '../../host/coordinator/names.js';
import { Deadline } from '../../host/base/deadline.js';
import { MemStoreServer } from '../helpers/memstore.js';

interface Built { o: CoordinatorOptions; opened: OpenedGroup; how: string }

const parent = (extra: Partial<SplitParent> = {}): SplitParent => ({
  rank: 5, ranks: [3, 5, 7, 9], localRank: 1, label: 'par_0', timeoutMs: 4_000,
  inherited: { globalWorldSize: 12, useDeviceCommunicator: true },
  backend: undefined, store: undefined, cpu: undefined, comm: undefined, ...extra,
});

async function run(p: SplitParent, o: { timeoutMs?: number }, signal?: AbortSignal): Promise<Built> {
  const plan = planSplit(p, { groupRanks: [[5]], groupName: 'kid', ...o }, 1);
  let built: Built | undefined;
  await runSplit(p, plan, 1, new Deadline(3_000, signal, 'split'), (bo, opened, how) => { built = { o: bo, opened, how }; return 1; });
  releaseName(built!.opened.uniqueName);
  return built!;
}

test('the new group\'s default timeout is the one asked for; not what was left of the split deadline', async () => {
  const plain = (x: Partial<SplitParent> = {}) => parent({ inherited: { globalWorldSize: 12 }, ...x });
  let b = await run(plain(), { timeoutMs: 50 });
  assert.equal([b.o.timeoutMs, b.opened.timeoutMs], [50, 50]);
  b = await run(plain({ timeoutMs: 60_000 }), {});
  // Asked for nothing: the parent's (planSplit), not what was left of the split's 3 s.
  assert.equal([b.o.timeoutMs, b.opened.timeoutMs], [60_000, 60_000]);
  assert.is(b.how, 'no device communicator');
});

test('a split device communicator is adopted (`how` says so); the rendezvous view is closed and the signal detached once built', async () => {
  const closed: unknown[] = [];
  const child = { rank: 0, worldSize: 1, close: async (g: unknown) => { closed.push(g); } };
  const s = new MemStoreServer();
  const ac = new AbortController();
  const b = await run(parent({
    backend: { deviceType: 'fake', capabilities: { split: true } } as never, comm: { split: async () => child } as never, store: s.client(),
  }), {}, ac.signal);
  assert.is(b.how, 'its device communicator split');
  assert.is(b.opened.device, 'fake:1');
  assert.equal(closed, []);
  const e = await b.o.rendezvous!.set('k', 'v').then(() => undefined, (x) => x);
  assert.is(e?.code, 'ERR_GROUPCOMM_DESTROYED', 'the rendezvous view is closed');
  ac.abort('parent aborted later');
  assert.is(b.o.signal!.aborted, false, 'the creation signal is detached');
});

test('a failed open closes the split device communicator (at once) and rethrows; without one there is nothing to close', async () => {
  const closed: unknown[] = [];
  const child = { rank: 0, worldSize: 1, close: async (g: unknown) => { closed.push(g); throw new Error('close failed'); } };
  // localRank -1 passes planSplit (the parent's own) but not openGroup's check.
  const p = parent({ localRank: -1, backend: { deviceType: 'fake', capabilities: { split: true } } as never, comm: { split: async () => child } as never });
  let e = await run(p, {}).then(() => undefined, (x) => x);
  assert.is(e?.code, 'ERR_GROUPCOMM_INVALID_ARGUMENT', String(e));
  assert.equal(closed, [{ timeoutMs: 1 }]);
  e = await run(parent({ localRank: -1, inherited: { globalWorldSize: 12 } }), {}).then(() => undefined, (x) => x);
  assert.is(e?.code, 'ERR_GROUPCOMM_INVALID_ARGUMENT', String(e));
});

test.run();
