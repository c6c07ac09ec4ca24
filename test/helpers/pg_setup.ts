// The push-mode process group tests' set-up (pg_push, pg_push_hub): group instances in one
// process stand in for ranks over a real TcpStore on 127.0.0.1, each with its own client; rank 0's
// client hosts the server.
import * as assert from 'uvu/assert';
import { StatelessProcessGroup } from '../../host/pg/group.js';
import { TcpStore, TcpStoreServer } from '../../host/index.js';
import type { Store } from '../../host/store/types.js';
export type PG = StatelessProcessGroup;
export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface Setup {
  pgs: PG[];
  stores: TcpStore[];
  server: TcpStoreServer;
  close(): Promise<void>;
}

export interface SetupOptions {
  extensions?: boolean;
  timeoutMs?: number;
  groupName?: string;
  /** Wraps rank r's store before create (e.g. to delay its subscription). */
  wrap?: (r: number, s: TcpStore) => Store;
  /** Called with the groups as each create resolves, before all did. */
  onCreated?: (g: PG) => void;
}

export async function setup(n: number, o: SetupOptions = {}): Promise<Setup> {
  const timeoutMs = o.timeoutMs ?? 5000;
  const s0 = await TcpStore.create({ port: 0, isServer: true, timeoutMs, extensions: o.extensions });
  const stores = [s0];
  for (let r = 1; r < n; r++) stores.push(await TcpStore.create({ port: s0.port, timeoutMs, extensions: o.extensions }));
  const pgs = await Promise.all(stores.map(async (s, rank) => {
    const g = await StatelessProcessGroup.create({ rank, worldSize: n, store: o.wrap ? o.wrap(rank, s) : s, timeoutMs, groupName: o.groupName });
    o.onCreated?.(g);
    return g;
  }));
  return {
    pgs, stores, server: s0.server!,
    close: async () => {
      await Promise.all(pgs.map((g) => g.destroy({ force: true })));
      for (const s of stores.slice(1)) await s.close();
      await s0.close();
    },
  };
}


/** Polls `cond` until true (false after timeoutMs). */
export async function eventually(cond: () => Promise<boolean> | boolean, timeoutMs = 3000): Promise<boolean> {
  const t0 = Date.now();
  while (Date.now() - t0 < timeoutMs) {
    if (await cond()) return true;
    await sleep(10);
  }
  return cond();
}

/** The group's own keys are gone once every rank destroyed it, its epoch counter included. */
export async function onlyEpochLeft(st: Setup, groupName = 'pg'): Promise<void> {
  await Promise.all(st.pgs.map((g) => g.destroy()));
  assert.is(st.server.numKeys, 0, `${st.server.numKeys} keys left`);
  assert.not.ok(await st.stores[0].check([`${groupName}/epoch`]));
}
