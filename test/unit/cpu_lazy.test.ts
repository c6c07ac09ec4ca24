/**
 * The CPU group's mesh connects lazily (docs/cpu-group.md, "Setup"): after create only the ring
 * neighbours are connected, an operation connects the pairs it needs and no others, every
 * collective is still exact, the rendezvous costs O(ranks) store operations, and a peer that
 * left before anyone dialed it is still named. Ranks live in this process over real sockets and
 * a real TcpStore (counted by a wrapper: a test double of the store's interface only).
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { CpuGroup, type CpuGroupOptions } from '../../host/cpu/group.js';
import { TcpStore } from '../../host/store/client.js';
import type { Store } from '../../host/store/types.js';
import { tensor, type CpuTensor } from '../../host/core/tensor.js';
import { rejectsWith } from '../helpers/rejects.js';

let server: TcpStore;
let groupNo = 0;
const live = new Set<CpuGroup>();

/** The store, with every request counted (one per call of a store method). */
function counted(s: Store): { store: Store; ops: () => number } {
  let n = 0;
  const store = new Proxy(s, {
    get(t, k, r) {
      const v = Reflect.get(t, k, r) as unknown;
      if (typeof v !== 'function') return v;
      return (...a: unknown[]) => { n++; return (v as (...x: unknown[]) => unknown).apply(t, a); };
    },
  });
  return { store, ops: () => n };
}

async function groupOf(n: number, extra: Partial<CpuGroupOptions> = {}): Promise<CpuGroup[]> {
  const groupName = `lazy-${groupNo++}`;
  const gs = await Promise.all([...Array(n).keys()].map((rank) =>
    CpuGroup.create({ store: server, rank, worldSize: n, groupName, timeoutMs: 20_000, transport: 'tcp', ...extra })));
  for (const g of gs) live.add(g);
  return gs;
}

const neighbours = (r: number, n: number) => [...new Set([(r + n - 1) % n, (r + 1) % n])].sort((a, b) => a - b);

test.before(async () => {
  server = await TcpStore.create({ port: 0, isServer: true, timeoutMs: 10_000 });
});
test.after.each(async () => {
  await Promise.all([...live].map((g) => g.abort('test over')));
  live.clear();
});
test.after(async () => {
  await server.close();
});

test('after create only the ring neighbours are connected; a ring allReduce opens no other link', async () => {
  const n = 8;
  const gs = await groupOf(n, { smallBytes: 1024 });
  for (const g of gs) {
    assert.equal(g.connectedPeers(), neighbours(g.rank, n), `rank ${g.rank} after create`);
    for (let p = 0; p < n; p++) if (!neighbours(g.rank, n).includes(p) && p !== g.rank) assert.is(g.transportTo(p), 'none');
  }
  // 64 KiB > smallBytes: the ring algorithm, which only talks to rank ± 1.
  const ts = gs.map((g) => tensor(new Float32Array(16384).fill(g.rank + 1)));
  await Promise.all(gs.map((g, r) => g.allReduce(ts[r], { out: ts[r] })));
  for (const t of ts) assert.ok((t.data as Float32Array).every((x) => x === (n * (n + 1)) / 2));
  for (const g of gs) assert.equal(g.connectedPeers(), neighbours(g.rank, n), `rank ${g.rank} after a ring allReduce`);
  // A small allReduce (recursive doubling) connects its partners: rank ^ 2 and rank ^ 4, no more.
  const small = gs.map((g) => tensor(new Int32Array([g.rank])));
  await Promise.all(gs.map((g, r) => g.allReduce(small[r], { out: small[r] })));
  for (const t of small) assert.is((t.data as Int32Array)[0], 28);
  for (const g of gs) {
    const want = [...new Set([...neighbours(g.rank, n), g.rank ^ 1, g.rank ^ 2, g.rank ^ 4])].sort((a, b) => a - b);
    assert.equal(g.connectedPeers(), want, `rank ${g.rank} after recursive doubling`);
  }
});

test('with a hub (the coordinator passes its store host, group rank 0) every rank is also connected to it; it to all', async () => {
  const n = 6;
  const gs = await groupOf(n, { hub: 0 });
  assert.equal(gs[0].connectedPeers(), [1, 2, 3, 4, 5]);
  for (const g of gs.slice(1)) assert.equal(g.connectedPeers(), [...new Set([0, ...neighbours(g.rank, n)])].sort((a, b) => a - b), `rank ${g.rank}`);
  await rejectsWith(CpuGroup.create({ store: server, rank: 0, worldSize: 2, groupName: 'badhub', hub: 2 }), 'ERR_GROUPCOMM_INVALID_ARGUMENT');
});

for (const n of [3, 5, 8]) {
  test(`${n} ranks connected on demand: every collective is exact, point to point reaches the far side`, async () => {
    const gs = await groupOf(n, { smallBytes: 256 });
    const iota = (len: number, r: number) => Float64Array.from({ length: len }, (_, i) => i * 10 + r);
    for (const len of [3, 1000]) { // below and above smallBytes: both algorithm families
      const sum = Float64Array.from({ length: len }, (_, i) => gs.reduce((a, _g, r) => a + i * 10 + r, 0));
      const ar = await Promise.all(gs.map((g, r) => g.allReduce(tensor(iota(len, r)))));
      for (const t of ar) assert.equal([...(t.data as Float64Array)], [...sum], `allReduce ${len}`);
      const root = n - 1;
      const bc = await Promise.all(gs.map((g, r) => g.broadcast(tensor(r === root ? iota(len, 7) : new Float64Array(len)), { src: root })));
      for (const t of bc) assert.equal([...(t.data as Float64Array)], [...iota(len, 7)], `broadcast ${len}`);
      const ag = await Promise.all(gs.map((g, r) => g.allGather(tensor(iota(len, r)))));
      for (const t of ag) for (let r = 0; r < n; r++) assert.equal([...(t.data as Float64Array).subarray(r * len, (r + 1) * len)], [...iota(len, r)], `allGather ${len}`);
      const rs = await Promise.all(gs.map((g, r) => g.reduceScatter(tensor(iota(len * n, r)))));
      for (const [r, t] of rs.entries()) {
        const want = Float64Array.from({ length: len }, (_, i) => gs.reduce((a, _g, q) => a + (r * len + i) * 10 + q, 0));
        assert.equal([...(t.data as Float64Array)], [...want], `reduceScatter ${len} rank ${r}`);
      }
      const a2a = await Promise.all(gs.map((g, r) => g.allToAll(tensor(iota(len * n, r)))));
      for (const [r, t] of a2a.entries()) {
        for (let q = 0; q < n; q++) assert.equal([...(t.data as Float64Array).subarray(q * len, (q + 1) * len)], [...iota(len * n, q).subarray(r * len, (r + 1) * len)], `allToAll ${len}`);
      }
    }
    await Promise.all(gs.map((g) => g.barrier()));
    // Rank 0 and the rank farthest from it on the ring: a pair no collective connected yet.
    const far = Math.floor(n / 2);
    const got = new Float64Array(4);
    await Promise.all([gs[0].send(tensor(iota(4, 42)), far), gs[far].recv(tensor(got), 0)]);
    assert.equal([...got], [...iota(4, 42)]);
    assert.ok(gs[0].connectedPeers().includes(far));
    await Promise.all(gs.map((g) => g.destroy()));
  });
}

test('rendezvous: O(ranks) store operations per create and destroy (2 per rank, then 1 to delete the address)', async () => {
  const per: number[] = [];
  for (const n of [4, 8, 16]) {
    const c = counted(server);
    const groupName = `ops-${groupNo++}`;
    const gs = await Promise.all([...Array(n).keys()].map((rank) =>
      CpuGroup.create({ store: c.store, rank, worldSize: n, groupName, timeoutMs: 20_000, transport: 'tcp' })));
    const created = c.ops();
    await Promise.all(gs.map((g) => g.destroy()));
    assert.ok(created <= 2 * n, `${n} ranks: ${created} store operations to create`);
    assert.ok(c.ops() <= 3 * n, `${n} ranks: ${c.ops()} store operations to create and destroy`);
    per.push(c.ops() / n);
    assert.is(await server.check([`groupcomm/cpu/${groupName}/0/addr/0`]), false, 'an address key outlived the group');
  }
  // Per rank the count does not grow with the group.
  assert.ok(per.every((x) => x === per[0]), `store operations per rank: ${per.join(', ')}`);
});

test('a peer that left before anyone dialed it is named when an operation first needs it', async () => {
  const n = 6;
  const gs = await groupOf(n);
  const gone = 3;
  assert.not.ok(gs[0].connectedPeers().includes(gone));
  await gs[gone].destroy();
  live.delete(gs[gone]);
  const e = await rejectsWith(gs[0].recv(tensor(new Float32Array(4)), gone, { timeoutMs: 10_000 }), 'ERR_GROUPCOMM_PEER_LOST');
  assert.is(e.peerRank, gone, e.message);
  assert.match(e.message, new RegExp(`rank ${gone}`));
});

test.run();
