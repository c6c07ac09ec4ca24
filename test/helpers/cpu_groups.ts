/**
 * One CPU group of `worldSize` ranks in this process, for a test file's whole run: a store server
 * and a CpuGroup per rank, made in uvu's `before` and aborted in its `after` (so a failing case
 * still tears them down). The groups talk over real sockets (and shared memory where asked), as
 * they would between processes.
 */
import { test } from 'uvu';
import { CpuGroup, type CpuGroupOptions } from '../../host/cpu/group.js';
import { TcpStore } from '../../host/store/client.js';

export interface FileGroups {
  /** The store server the ranks rendezvous through (valid once `before` ran). */
  readonly store: TcpStore;
  /** The group's ranks, by rank (filled when `before` runs; the same array throughout). */
  readonly gs: CpuGroup[];
}

/** Registers the before/after hooks; `opts` are every rank's options but store and rank. */
export function groupForFile(worldSize: number, opts: Omit<CpuGroupOptions, 'store' | 'rank' | 'worldSize'>): FileGroups {
  const made = { store: undefined as unknown as TcpStore, gs: [] as CpuGroup[] };
  test.before(async () => {
    made.store = await TcpStore.create({ host: '127.0.0.1', port: 0, isServer: true, timeoutMs: 10_000 });
    // Filled in place: a caller may keep `gs` from before the hooks ran.
    made.gs.push(...await Promise.all([...Array(worldSize).keys()].map((rank) =>
      CpuGroup.create({ ...opts, store: made.store, rank, worldSize }))));
  });
  test.after(async () => {
    await Promise.all(made.gs.map((g) => g.abort('test over')));
    await made.store?.close();
  });
  return made;
}

export interface CaseGroups {
  /** The store server every case's groups rendezvous through (valid once `before` ran). */
  readonly store: TcpStore;
  /** A new group of `size` ranks under a fresh name, aborted after the case that made it. */
  groupOf(size: number, opts?: Omit<CpuGroupOptions, 'store' | 'rank' | 'worldSize' | 'groupName'>): Promise<CpuGroup[]>;
  /** Aborted after the current case as well (for groups a case makes itself). */
  keep(gs: CpuGroup[]): CpuGroup[];
}

/**
 * Groups made per case: one store server for the file, and every group a case makes aborted in
 * `after.each`, so a failing case leaves no sockets behind for the next one.
 */
export function groupsPerCase(prefix: string, timeoutMs: number): CaseGroups {
  let store: TcpStore | undefined;
  let n = 0;
  const live = new Set<CpuGroup>();
  const keep = (gs: CpuGroup[]) => { for (const g of gs) live.add(g); return gs; };
  test.before(async () => {
    store = await TcpStore.create({ port: 0, isServer: true, timeoutMs: 10_000 });
  });
  test.after.each(async () => {
    await Promise.all([...live].map((g) => g.abort('test over')));
    live.clear();
  });
  test.after(() => store?.close());
  return {
    get store() { return store!; },
    keep,
    async groupOf(size, opts = {}) {
      const groupName = `${prefix}-${n++}`;
      return keep(await Promise.all([...Array(size).keys()].map((rank) =>
        CpuGroup.create({ timeoutMs, ...opts, store: store!, rank, worldSize: size, groupName }))));
    },
  };
}
