/**
 * TEST HELPER ONLY: GroupFaults instances standing in for the ranks of a group (coord_faults,
 * coord_faults_more): one real TcpStore (rank 0's client hosts the server), a stand-in CPU group
 * per rank (onLost, hasLeft), every fault inbox open before the test starts.
 */
import { GroupFaults } from '../../host/coordinator/faults.js';
import { TcpStore } from '../../host/store/index.js';
import type { GroupcommError } from '../../host/base/errors.js';

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
export const enc = new TextEncoder();

export interface Rank {
  f: GroupFaults;
  failed: GroupcommError[];
  left: Set<number>;
  lost?: (e: GroupcommError) => void;
}

export interface Trio { ranks: Rank[]; stores: TcpStore[]; label: string; close(): Promise<void> }

let seq = 0;
export async function trio(n = 3, o: { noPublish?: boolean; failPublish?: boolean } = {}): Promise<Trio> {
  const label = `faults${seq++}_0`;
  const s0 = await TcpStore.create({ port: 0, isServer: true, timeoutMs: 3_000 });
  const stores = [s0];
  for (let r = 1; r < n; r++) stores.push(await TcpStore.create({ port: s0.port, timeoutMs: 3_000 }));
  const ranks = stores.map((store, r) => {
    const x: Rank = { failed: [], left: new Set(), f: undefined as unknown as GroupFaults };
    const cpu = { onLost: (fn: (e: GroupcommError) => void) => { x.lost = fn; }, hasLeft: (p: number) => x.left.has(p) };
    const st = o.noPublish ? Object.assign(Object.create(store), { publish: undefined })
      : o.failPublish ? { subscribe: store.subscribe.bind(store), publish: () => Promise.reject(new Error('no room')) } : store;
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

export async function until(cond: () => boolean, ms = 2_000): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > ms) throw new Error('condition not met in time');
    await sleep(5);
  }
}

export const inbox = (label: string, r: number) => `groupcomm/faults/${label}/0/to/${r}/`;

/** Runs `fn` on a fresh trio (a judged timeout is fresh for a while: the next judge would adopt it). */
export async function on(fn: (r: Rank[]) => Promise<void>, n = 3): Promise<void> {
  const t = await trio(n);
  try {
    await fn(t.ranks);
  } finally {
    await t.close();
  }
}
