// A broadcast bigger than FANOUT_MAX_BYTES from the rank whose process hosts the store is pushed
// to every reader (that process writes the value to each reader's socket either way); from any
// other rank it is stored once and each reader fetches it. Real TcpStores on 127.0.0.1, group
// instances in one process standing in for ranks; rank 0's client hosts the server.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { StatelessProcessGroup } from '../../host/pg/group.js';
import { PrefixStore, TcpStore } from '../../host/index.js';
import { tensor } from '../../host/core/tensor.js';
import type { Store } from '../../host/store/types.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const BIG = 1 << 20;

async function setup(n: number, view?: string) {
  const s0 = await TcpStore.create({ port: 0, isServer: true, timeoutMs: 5000 });
  const stores = [s0];
  for (let r = 1; r < n; r++) stores.push(await TcpStore.create({ port: s0.port, timeoutMs: 5000 }));
  const wrap = (s: TcpStore): Store => (view ? new PrefixStore(view, s) : s);
  const pgs = await Promise.all(stores.map((s, rank) => StatelessProcessGroup.create({ rank, worldSize: n, store: wrap(s), timeoutMs: 5000 })));
  return {
    pgs, s0, server: s0.server!,
    /** The stored broadcast value of `src`'s broadcast `n`, as the server names it. */
    stored: (src: number, i: number) => s0.check([`${view ? view + '/' : ''}${pgs[0].keyPrefix}b/${src}/${i}`]),
    close: async () => {
      await Promise.all(pgs.map((g) => g.destroy({ force: true })));
      for (const s of stores.slice(1)) await s.close();
      await s0.close();
    },
  };
}

async function eventually(cond: () => boolean | Promise<boolean>, timeoutMs = 3000): Promise<boolean> {
  const t0 = Date.now();
  while (!(await cond()) && Date.now() - t0 < timeoutMs) await sleep(10);
  return cond();
}

for (const view of [undefined, 'x']) {
  test(`4 ranks${view ? ', through a PrefixStore' : ''}: a 1 MiB broadcastObj / broadcast from the store's host is pushed (never stored); from rank 1 it is stored once until read`, async () => {
    const st = await setup(4, view);
    try {
      const keys = st.server.numKeys;
      const big = new Uint8Array(BIG).map((_, i) => i * 7);
      const root = st.pgs[0];
      // The root is done before anyone reads: with a push nothing waits in the store.
      const obj = { big };
      assert.is(await root.broadcastObj(obj, 0), obj);
      assert.not.ok(await st.stored(0, 0), 'the host\'s big broadcast was stored');
      assert.is(st.server.numKeys, keys);
      const t = tensor(new Float32Array(BIG / 4).map((_, i) => i));
      await root.broadcast(t, { src: 0 });
      assert.not.ok(await st.stored(0, 1), 'the host\'s big tensor broadcast was stored');
      for (const g of st.pgs.slice(1)) {
        const got = (await g.broadcastObj<{ big: Uint8Array } | null>(null, 0))!.big;
        assert.ok(Buffer.from(got).equals(big), `rank ${g.rank} got other bytes`);
        const out = await g.broadcast(tensor(new Float32Array(BIG / 4)), { src: 0 });
        assert.ok(Buffer.from((out.data as Float32Array).buffer).equals(Buffer.from(t.data.buffer as ArrayBuffer)), `rank ${g.rank}: other tensor`);
      }
      // Rank 1's process does not host the store: its value is stored once, fetched by each reader.
      // (It resolves once sent: the server applies it a moment later.)
      await st.pgs[1].broadcastObj({ big }, 1);
      assert.ok(await eventually(() => st.stored(1, 0)), 'rank 1\'s big broadcast was not stored');
      for (const g of [st.pgs[0], st.pgs[2], st.pgs[3]]) {
        assert.ok(Buffer.from((await g.broadcastObj<{ big: Uint8Array } | null>(null, 1))!.big).equals(big));
      }
      assert.ok(await eventually(() => st.server.numKeys === keys), `${st.server.numKeys} keys, ${keys} before`);
    } finally {
      await st.close();
    }
  });
}

test.run();
