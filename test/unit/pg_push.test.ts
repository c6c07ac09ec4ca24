// StatelessProcessGroup over a real TcpStore (groupcomm server on 127.0.0.1): each rank's messages
// are pushed to it by the store (SUBSCRIBE) and never stored. Group instances in one process stand
// in for ranks, each with its own client; rank 0's client hosts the server. The same ops also run
// in poll mode, over torch-compatible clients (extensions: false) that cannot subscribe.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { StatelessProcessGroup } from '../../host/pg/group.js';
import { TcpStore, TcpStoreServer } from '../../host/index.js';
import { tensor } from '../../host/core/tensor.js';
import { rejectsWith } from '../helpers/rejects.js';
import { everyOp } from '../helpers/pg_ops.js';
import { sleep, setup, eventually, onlyEpochLeft, type PG } from '../helpers/pg_setup.js';

for (const n of [2, 3]) {
  test(`push mode, ${n} ranks: every op, and no key is left after destroy (epoch included)`, async () => {
    const st = await setup(n);
    try {
      await everyOp(st.pgs, { bigBytes: 100 * 1024 });
      await onlyEpochLeft(st);
    } finally {
      await st.close();
    }
  });

  test(`poll mode (extensions: false clients), ${n} ranks: every op, and no key is left after destroy (epoch included)`, async () => {
    const st = await setup(n, { extensions: false });
    try {
      assert.not.ok(st.stores.some((s) => s.extended));
      await everyOp(st.pgs, { bigBytes: 100 * 1024 });
      await onlyEpochLeft(st);
    } finally {
      await st.close();
    }
  });
}

test('push mode: a message to a rank that has not received it yet is not stored; in poll mode it is, until read', async () => {
  for (const extensions of [true, false]) {
    const st = await setup(2, { extensions });
    try {
      const [a, b] = st.pgs;
      const key = `${a.keyPrefix}to/1/p/0/0`;
      const keysBefore = await st.stores[0].numKeys();
      await a.sendObj('hello', 1);
      // Same connection as the send: its reply comes after the SET was applied.
      const stored = await st.stores[0].check([key]);
      const keysAfter = await st.stores[0].numKeys();
      if (extensions) {
        assert.not.ok(stored, 'push mode stored the message');
        assert.is(keysAfter, keysBefore);
      } else {
        assert.ok(stored, 'poll mode did not store the message');
        assert.is(keysAfter, keysBefore + 1);
      }
      assert.is(await b.recvObj(0), 'hello');
      assert.ok(await eventually(async () => !(await st.stores[0].check([key]))), 'the message key outlived its receive');
    } finally {
      await st.close();
    }
  }
});

test('push mode: messages sent before the receiver subscribed arrive (stored meanwhile, then pushed)', async () => {
  const key = (g: PG, dst: number, tag: string) => `${g.keyPrefix}to/${dst}/${tag}`;
  let early: Promise<unknown> | undefined;
  let storedMeanwhile: boolean[] = [];
  let finished = 0;
  const st = await setup(3, {
    // Rank 2 subscribes only 300 ms after joining; ranks 0 and 1 start talking to it at once.
    wrap: (r, s) => (r !== 2 ? s : new Proxy(s, {
      get(t, p) {
        if (p === 'subscribe') {
          return async (...a: Parameters<TcpStore['subscribe']>) => { await sleep(300); return t.subscribe(...a); };
        }
        const v = (t as any)[p];
        return typeof v === 'function' ? v.bind(t) : v;
      },
    })),
    onCreated: (g) => {
      finished++;
      if (g.rank !== 0) return;
      early = (async () => {
        await Promise.all([
          g.sendObj('early 0', 2), g.sendObj('early 1', 2),
          g.broadcastObj('early broadcast', 0),
          g.send(tensor(new Int32Array([7, 8])), 2),
        ]);
        const s = g.store as TcpStore;
        storedMeanwhile = await Promise.all(['p/0/0', 'p/0/1', 'b/0/0', 'p/0/2'].map((t) => s.check([key(g, 2, t)])));
        storedMeanwhile.push(finished < 3);
      })();
    },
  });
  try {
    const [a, b, c] = st.pgs;
    await early;
    assert.equal(storedMeanwhile, [true, true, true, true, true], 'rank 2 subscribed before the early messages were written');
    assert.is(await b.broadcastObj(null, 0), 'early broadcast');
    assert.is(await c.recvObj(0), 'early 0');
    assert.is(await c.recvObj(0), 'early 1');
    assert.is(await c.broadcastObj(null, 0), 'early broadcast');
    const t = tensor(new Int32Array(2));
    await c.recv(t, 0);
    assert.equal([...t.data as Int32Array], [7, 8]);
    // The backlog was handed over and removed from the store.
    assert.not.ok(await st.stores[0].check([key(a, 2, 'p/0/0')]));
    assert.equal(await Promise.all(st.pgs.map((g) => g.allGatherObj(g.rank))), [[0, 1, 2], [0, 1, 2], [0, 1, 2]]);
    await onlyEpochLeft(st);
  } finally {
    await st.close();
  }
});

test('push mode: a few thousand mixed messages, then only the epoch key is left', async () => {
  const st = await setup(3);
  try {
    const [a, b, c] = st.pgs;
    const baseline = st.server.numKeys;
    const jobs: Promise<unknown>[] = [];
    const got: unknown[] = [];
    for (let i = 0; i < 2000; i++) jobs.push(a.sendObj(i, 1), b.recvObj(0).then((v) => { got[i] = v; }));
    for (let i = 0; i < 1000; i++) jobs.push(c.sendObj(-i - 1, 0), a.recvObj(2).then((v) => assert.is(v, -i - 1)));
    const big = new Uint8Array(70 * 1024).fill(5);
    for (let i = 0; i < 200; i++) {
      const payload = i % 50 === 0 ? big : i;
      jobs.push(a.broadcastObj(payload, 0), b.broadcastObj(null, 0), c.broadcastObj(null, 0));
      jobs.push(...st.pgs.map((g) => g.allGatherObj(g.rank)), ...st.pgs.map((g) => g.barrier()));
    }
    await Promise.all(jobs);
    assert.equal(got, [...Array(2000).keys()]);
    // Rank 0 hosts the store, so its large broadcasts are pushed, never stored (pg_bcast_push);
    // anything queued for cleanup goes within a short timer.
    assert.ok(await eventually(() => st.server.numKeys === baseline), `${st.server.numKeys} keys, ${baseline} before the workload`);
    await onlyEpochLeft(st);
  } finally {
    await st.close();
  }
});

test('push mode: garbage under a recv key is ERR_GROUPCOMM_PROTOCOL naming key and rank 0; the group still works', async () => {
  const st = await setup(2);
  const writer = await TcpStore.create({ port: st.server.port, timeoutMs: 5000 });
  try {
    const [a, b] = st.pgs;
    const key0 = `${a.keyPrefix}to/1/p/0/0`;
    await writer.set(key0, new Uint8Array([0xde, 0xad, 0xbe, 0xef, 1, 2, 3]));
    const e = await rejectsWith(b.recvObj(0), 'ERR_GROUPCOMM_PROTOCOL');
    assert.is(e.key, key0);
    assert.is(e.peerRank, 0);
    await a.sendObj('skipped: its number was taken by the garbage', 1);
    await a.sendObj('after the garbage', 1);
    assert.is(await b.recvObj(0), 'after the garbage');
    await Promise.all([a.barrier(), b.barrier()]);
  } finally {
    await writer.close();
    await st.close();
  }
});

test('push mode: recv timeout names the source rank and the key', async () => {
  const st = await setup(2);
  try {
    const e = await rejectsWith(st.pgs[1].recvObj(0, { timeoutMs: 200 }), 'ERR_GROUPCOMM_TIMEOUT');
    assert.is(e.peerRank, 0);
    assert.is(e.key, `${st.pgs[1].keyPrefix}to/1/p/0/0`);
  } finally {
    await st.close();
  }
});

test('push mode: barrier timeout names exactly the ranks that never arrived', async () => {
  const st = await setup(4);
  try {
    const errs = await Promise.all(st.pgs.slice(0, 2).map((g) => rejectsWith(g.barrier({ timeoutMs: 300 }), 'ERR_GROUPCOMM_TIMEOUT')));
    for (const e of errs) assert.equal(e.peerRanks, [2, 3]);
    // Rank 2 arrives late: now only rank 3 is missing.
    const late = st.pgs[2].barrier({ timeoutMs: 300 });
    const e2 = await rejectsWith(late, 'ERR_GROUPCOMM_TIMEOUT');
    assert.equal(e2.peerRanks, [3]);
  } finally {
    await st.close();
  }
});

test('push mode: an aborted receive rejects with ERR_GROUPCOMM_ABORTED; its late message does not reach the next receive', async () => {
  const st = await setup(2);
  try {
    const [a, b] = st.pgs;
    const ac = new AbortController();
    const p = b.recvObj(0, { signal: ac.signal });
    ac.abort();
    await rejectsWith(p, 'ERR_GROUPCOMM_ABORTED');
    await a.sendObj('late, for the aborted receive', 1);
    await a.sendObj('next', 1);
    assert.is(await b.recvObj(0), 'next');
    // A collective aborted the same way: the next one still pairs with the peers' next one.
    const ac2 = new AbortController();
    const g = b.allGatherObj('abandoned', { signal: ac2.signal });
    ac2.abort();
    await rejectsWith(g, 'ERR_GROUPCOMM_ABORTED');
    await a.allGatherObj('a0');
    assert.equal(await Promise.all([a.allGatherObj('a1'), b.allGatherObj('b1')]), [['a1', 'b1'], ['a1', 'b1']]);
  } finally {
    await st.close();
  }
});

test('push mode: closing rank 0\'s store (the server) fails a waiting recvObj promptly with PEER_LOST', async () => {
  const st = await setup(2, { timeoutMs: 5000 });
  try {
    const t0 = Date.now();
    const p = st.pgs[1].recvObj(0, { timeoutMs: 5000 });
    p.catch(() => {}); // it fails before the graceful close resolves (that waits for the clients to hang up)
    await sleep(50);
    await st.stores[0].close();
    const e = await rejectsWith(p, 'ERR_GROUPCOMM_PEER_LOST');
    assert.ok(Date.now() - t0 < 2500, `took ${Date.now() - t0}ms`);
    // The group did not open this store, so it cannot know which rank hosted it: no peerRank here
    // (see the next test for a group that hosts its own store).
    assert.match(e.message, /closed the connection/);
  } finally {
    await st.close().catch(() => {});
  }
});

test('push mode, groups that host their store (create with port): losing rank 0 names it (peerRank 0)', async () => {
  // A free port: listen on 0, note it, let it go.
  const probe = await TcpStoreServer.listen({ port: 0 });
  const port = probe.port;
  await probe.close();
  const [a, b] = await Promise.all([0, 1].map((rank) => StatelessProcessGroup.create({ rank, worldSize: 2, port, timeoutMs: 5000 })));
  try {
    a.sendObj('first', 1);
    assert.is(await b.recvObj(0), 'first');
    assert.is((b.store as TcpStore).extended, true);
    const t0 = Date.now();
    const p = b.recvObj(0, { timeoutMs: 5000 });
    await sleep(50);
    await a.destroy({ force: true });
    const e = await rejectsWith(p, 'ERR_GROUPCOMM_PEER_LOST');
    assert.ok(Date.now() - t0 < 2500, `took ${Date.now() - t0}ms`);
    assert.is(e.peerRank, 0);
    assert.equal(e.peerRanks, [0]);
    assert.is(e.rank, 1);
  } finally {
    await a.destroy({ force: true });
    await b.destroy({ force: true });
  }
});

// ---- collectives through rank 0 (the hub): push mode with 3 or more ranks ----------------------

test('spinUs: a waiting receive keeps the event loop turning for that long, then lets it sleep; 0 never spins', async () => {
  // Counts the setImmediate turns scheduled while rank 1 waits 300 ms for a message, split into
  // the first 60 ms and the last 120 ms. A 100 ms spin turns the loop in the first window and
  // never in the last (it stopped by wall clock); spinUs 0 never turns it. Counting turns, not
  // CPU share, keeps the test true on a loaded machine.
  const turns = async (spinUs: number) => {
    const s0 = await TcpStore.create({ port: 0, isServer: true, timeoutMs: 5000 });
    const s1 = await TcpStore.create({ port: s0.port, timeoutMs: 5000 });
    const [a, b] = await Promise.all([s0, s1].map((store, rank) =>
      StatelessProcessGroup.create({ rank, worldSize: 2, store, timeoutMs: 5000, groupName: `spin${spinUs}`, spinUs })));
    const real = globalThis.setImmediate;
    let count = 0;
    try {
      await sleep(20);
      globalThis.setImmediate = ((fn: (...a: unknown[]) => void, ...args: unknown[]) => { count++; return real(fn, ...args); }) as typeof setImmediate;
      const t0 = performance.now();
      const got = b.recvObj(0);
      await sleep(60);
      const early = count;
      await sleep(Math.max(0, 180 - (performance.now() - t0)));
      const mid = count;
      await sleep(120);
      const late = count - mid;
      globalThis.setImmediate = real;
      await a.sendObj('late', 1);
      assert.is(await got, 'late');
      return { early, late };
    } finally {
      globalThis.setImmediate = real;
      await Promise.all([a.destroy({ force: true }), b.destroy({ force: true })]);
      await s1.close();
      await s0.close();
    }
  };
  const still = await turns(0);
  const spun = await turns(100_000);
  assert.ok(spun.early > 0, `a 100 ms spin turned the loop ${spun.early} times in its first 60 ms`);
  assert.is(spun.late, 0, 'the spin stopped once its 100 ms were over');
  assert.is(still.early + still.late, 0, 'spinUs 0 never turns the loop while waiting');
});

test('200 create/close cycles of differently named groups leave no key (epoch counters included)', async () => {
  const s0 = await TcpStore.create({ port: 0, isServer: true, timeoutMs: 10_000 });
  const s1 = await TcpStore.create({ port: s0.port, timeoutMs: 10_000 });
  try {
    for (let i = 0; i < 200; i++) {
      const gs = await Promise.all([s0, s1].map((store, rank) => StatelessProcessGroup.create({ rank, worldSize: 2, store, timeoutMs: 10_000, groupName: `cycle${i}` })));
      await Promise.all([gs[0].sendObj(i, 1), gs[1].recvObj(0), gs[0].barrier(), gs[1].barrier()]);
      await Promise.all(gs.map((g) => g.close()));
    }
    assert.is(await s0.numKeys(), 0);
  } finally {
    await s1.close();
    await s0.close();
  }
});

test('spinUs: a bad value (option or GROUPCOMM_PG_SPIN_US) is refused before any store traffic', async () => {
  const s0 = await TcpStore.create({ port: 0, isServer: true, timeoutMs: 2000 });
  try {
    const before = await s0.numKeys();
    await rejectsWith(StatelessProcessGroup.create({ rank: 0, worldSize: 2, store: s0, spinUs: -1, timeoutMs: 1000 }), 'ERR_GROUPCOMM_INVALID_ARGUMENT');
    const old = process.env.GROUPCOMM_PG_SPIN_US;
    process.env.GROUPCOMM_PG_SPIN_US = 'fast';
    try {
      await rejectsWith(StatelessProcessGroup.create({ rank: 0, worldSize: 2, store: s0, timeoutMs: 1000 }), 'ERR_GROUPCOMM_CONFIG');
    } finally {
      if (old === undefined) delete process.env.GROUPCOMM_PG_SPIN_US;
      else process.env.GROUPCOMM_PG_SPIN_US = old;
    }
    assert.is(await s0.numKeys(), before);
  } finally {
    await s0.close();
  }
});

test.run();
