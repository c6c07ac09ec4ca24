// StatelessProcessGroup over a real TcpStore (groupcomm server on 127.0.0.1): each rank's messages
// are pushed to it by the store (SUBSCRIBE) and never stored. Group instances in one process stand
// in for ranks, each with its own client; rank 0's client hosts the server. The same ops also run
// in poll mode, over torch-compatible clients (extensions: false) that cannot subscribe.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { StatelessProcessGroup } from '../../host/pg/group.js';
import { TcpStore, TcpStoreServer } from '../../host/index.js';
import { tensor } from '../../host/core/tensor.js';
import { encodeObject } from '../../host/pg/codec.js';
import type { Store } from '../../host/store/types.js';
import { rejectsWith } from '../helpers/rejects.js';
import { everyOp } from '../helpers/pg_ops.js';

type PG = StatelessProcessGroup;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Setup {
  pgs: PG[];
  stores: TcpStore[];
  server: TcpStoreServer;
  close(): Promise<void>;
}

interface SetupOptions {
  extensions?: boolean;
  timeoutMs?: number;
  groupName?: string;
  /** Wraps rank r's store before create (e.g. to delay its subscription). */
  wrap?: (r: number, s: TcpStore) => Store;
  /** Called with the groups as each create resolves, before all did. */
  onCreated?: (g: PG) => void;
}

async function setup(n: number, o: SetupOptions = {}): Promise<Setup> {
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
async function eventually(cond: () => Promise<boolean> | boolean, timeoutMs = 3000): Promise<boolean> {
  const t0 = Date.now();
  while (Date.now() - t0 < timeoutMs) {
    if (await cond()) return true;
    await sleep(10);
  }
  return cond();
}

/** The group's own keys are gone once every rank destroyed it, its epoch counter included. */
async function onlyEpochLeft(st: Setup, groupName = 'pg'): Promise<void> {
  await Promise.all(st.pgs.map((g) => g.destroy()));
  assert.is(st.server.numKeys, 0, `${st.server.numKeys} keys left`);
  assert.not.ok(await st.stores[0].check([`${groupName}/epoch`]));
}

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

/** Wraps a store so that every key it writes (set, multiSet) is recorded in `log`. */
function recording(s: TcpStore, log: string[]): Store {
  return new Proxy(s, {
    get(t, p) {
      if (p === 'set') return (k: string, v: Uint8Array, o?: unknown) => { log.push(k); return t.set(k, v, o as never); };
      if (p === 'multiSet') return (ks: string[], vs: Uint8Array[], o?: unknown) => { log.push(...ks); return t.multiSet(ks, vs, o as never); };
      if (p === 'publish') return (ks: string[], vs: Uint8Array[], o?: unknown) => { log.push(...ks); return t.publish(ks, vs, o as never); };
      const v = (t as any)[p];
      return typeof v === 'function' ? v.bind(t) : v;
    },
  }) as unknown as Store;
}

test('push mode, 4 ranks: a collective is 2(n-1) messages through rank 0; with 2 ranks it stays all-to-all', async () => {
  for (const n of [4, 2]) {
    const logs: string[][] = [...Array(n)].map(() => []);
    const st = await setup(n, { wrap: (r, s) => recording(s, logs[r]) });
    try {
      for (const l of logs) l.length = 0;
      const prefix = st.pgs[0].keyPrefix;
      assert.equal(await Promise.all(st.pgs.map((g) => g.allGatherObj(g.rank * 10))), new Array(n).fill([...Array(n).keys()].map((r) => r * 10)));
      await Promise.all(st.pgs.map((g) => g.barrier()));
      const written = logs.map((l) => l.filter((k) => k.includes('/c/')).map((k) => k.slice(prefix.length)).sort());
      for (let r = 1; r < n; r++) {
        assert.equal(written[r], n > 2 ? [`to/0/c/0/${r}`, `to/0/c/1/${r}`] : [`to/0/c/0/1`, `to/0/c/1/1`], `rank ${r} wrote ${written[r]}`);
      }
      const hub = n > 2 ? [0, 1].flatMap((c) => [1, 2, 3].map((d) => `to/${d}/c/${c}/all`)).sort() : ['to/1/c/0/0', 'to/1/c/1/0'];
      assert.equal(written[0], hub, `rank 0 wrote ${written[0]}`);
      await onlyEpochLeft(st);
    } finally {
      await st.close();
    }
  }
});

for (const n of [3, 4, 5]) {
  test(`push mode, ${n} ranks (hub): many unawaited allGatherObj / allReduce (sum, max, avg; float32, int32) / barrier match by program order`, async () => {
    const st = await setup(n, { timeoutMs: 20_000 });
    try {
      const N = 40;
      const total = (f: (r: number) => number) => [...Array(n).keys()].reduce((s, r) => s + f(r), 0);
      await Promise.all(st.pgs.map(async (g) => {
        const r = g.rank;
        const jobs: Promise<unknown>[] = [];
        const checks: (() => void)[] = [];
        for (let i = 0; i < N; i++) {
          jobs.push(g.allGatherObj({ i, r }).then((v) => assert.equal(v, [...Array(n).keys()].map((s) => ({ i, r: s })), `rank ${r} allGather #${i}`)));
          const fs = tensor(new Float32Array([r + i, -r, 0.5 * r]));
          const is = tensor(new Int32Array([r * i, -r - i]));
          const fm = tensor(new Float32Array([r === i % n ? 1000 + i : r, -r]));
          const im = tensor(new Int32Array([(r * 7 + i) % n, -r]));
          const fa = tensor(new Float32Array([2 * r + i, 4]));
          const ia = tensor(new Int32Array([r * n + i * n, 6]));
          jobs.push(g.allReduce(fs, { op: 'sum', out: fs }), g.allReduce(is, { op: 'sum', out: is }), g.allReduce(fm, { op: 'max', out: fm }), g.allReduce(im, { op: 'max', out: im }), g.allReduce(fa, { op: 'avg', out: fa }), g.allReduce(ia, { op: 'avg', out: ia }));
          if (i % 3 === 0) jobs.push(g.barrier());
          checks.push(() => {
            assert.equal([...fs.data as Float32Array], [total((s) => s + i), -total((s) => s), total((s) => 0.5 * s)], `float32 sum #${i}`);
            assert.equal([...is.data as Int32Array], [total((s) => s * i), -total((s) => s + i)], `int32 sum #${i}`);
            assert.equal([...fm.data as Float32Array], [i % n === 0 && n - 1 > 1000 + i ? n - 1 : 1000 + i, 0], `float32 max #${i}`);
            assert.equal([...im.data as Int32Array], [Math.max(...[...Array(n).keys()].map((s) => (s * 7 + i) % n)), 0], `int32 max #${i}`);
            assert.equal([...fa.data as Float32Array], [total((s) => 2 * s + i) / n, 4], `float32 avg #${i}`);
            assert.equal([...ia.data as Int32Array], [total((s) => s * n + i * n) / n, 6], `int32 avg #${i}`);
          });
        }
        await Promise.all(jobs);
        for (const c of checks) c();
      }));
      await onlyEpochLeft(st);
    } finally {
      await st.close();
    }
  });
}

test('push mode, 4 ranks (hub): objects with big typed arrays and Buffers through allGatherObj and broadcastObj', async () => {
  const st = await setup(4, { timeoutMs: 20_000 });
  try {
    const n = 4;
    const part = (r: number) => ({
      r,
      f64: new Float64Array(3000).map((_, i) => r * 1e6 + i + 0.25),
      i16: new Int16Array(9000).map((_, i) => (i * (r + 3)) - 5000),
      small: new Float32Array([r, r + 0.5]),
      buf: Buffer.from([r, 1, 2]),
      list: [new Uint8Array(5000).fill(r + 1), new Map([['x', new BigInt64Array(600).fill(BigInt(-r - 1))]])],
    });
    const results = await Promise.all(st.pgs.map((g) => g.allGatherObj(part(g.rank))));
    for (const [me, got] of results.entries()) {
      assert.is(got.length, n);
      for (let r = 0; r < n; r++) {
        const want = part(r);
        const g = got[r] as ReturnType<typeof part>;
        assert.is(g.r, r);
        assert.ok(g.f64 instanceof Float64Array && g.f64.length === 3000, `rank ${me}: f64 from ${r}`);
        assert.equal([...g.f64], [...want.f64]);
        assert.ok(g.i16 instanceof Int16Array);
        assert.equal([...g.i16], [...want.i16]);
        assert.ok(g.small instanceof Float32Array);
        assert.equal([...g.small], [r, r + 0.5]);
        // Buffer or Uint8Array, as before segments: msgpack hands back bytes of the received value's class.
        assert.ok(g.buf instanceof Uint8Array);
        assert.equal([...g.buf], [r, 1, 2]);
        assert.ok(g.list[0] instanceof Uint8Array && (g.list[0] as Uint8Array).length === 5000 && (g.list[0] as Uint8Array).every((x) => x === r + 1));
        const m = g.list[1] as Map<string, BigInt64Array>;
        assert.ok(m.get('x') instanceof BigInt64Array && m.get('x')!.every((x) => x === BigInt(-r - 1)));
      }
    }
    for (const bytes of [8 * 1024, 200 * 1024]) {
      const src = 2;
      const obj = { f32: new Float32Array(bytes / 4).map((_, i) => i / 8), u8: new Uint8Array(bytes + 3).map((_, i) => i * 13) };
      const got = await Promise.all(st.pgs.map((g) => g.broadcastObj(g.rank === src ? obj : null, src))) as (typeof obj)[];
      for (const [r, o] of got.entries()) {
        if (r === src) continue;
        assert.ok(o.f32 instanceof Float32Array && o.f32.length === bytes / 4, `rank ${r}: ${bytes} bytes`);
        assert.ok(Buffer.from(o.f32.buffer, o.f32.byteOffset, o.f32.byteLength).equals(Buffer.from(obj.f32.buffer)));
        assert.ok(o.u8 instanceof Uint8Array && Buffer.from(o.u8).equals(Buffer.from(obj.u8)));
      }
    }
    await onlyEpochLeft(st);
  } finally {
    await st.close();
  }
});

/** A hub bundle: u32 count, u32 length per part, the parts, then `tail`. */
function bundle(parts: Uint8Array[], tail: number[] = []): Uint8Array {
  const head = new DataView(new ArrayBuffer(4 + 4 * parts.length));
  head.setUint32(0, parts.length, true);
  parts.forEach((p, i) => head.setUint32(4 + 4 * i, p.length, true));
  return Buffer.concat([new Uint8Array(head.buffer), ...parts, Buffer.from(tail)]);
}

/** `g.barrier` with timeoutMs `ms`: its error, and how long it took to fail. */
async function timedOut(g: PG, ms: number): Promise<{ e: any; tookMs: number }> {
  const t0 = performance.now();
  const e = await rejectsWith(g.barrier({ timeoutMs: ms }), 'ERR_GROUPCOMM_TIMEOUT');
  return { e, tookMs: performance.now() - t0 };
}

const HUB_CASES: { name: string; n: number; arrive: number[]; names: Record<number, number[]> }[] = [
  { name: 'ranks 2 and 3 missing', n: 4, arrive: [0, 1], names: { 0: [2, 3], 1: [2, 3] } },
  { name: 'rank 0 (the hub) missing', n: 4, arrive: [1, 2, 3], names: { 1: [0], 2: [0], 3: [0] } },
  { name: 'rank 0 and rank 3 missing', n: 5, arrive: [1, 2, 4], names: { 1: [0, 3], 2: [0, 3], 4: [0, 3] } },
  { name: 'only rank 0 arrived', n: 4, arrive: [0], names: { 0: [1, 2, 3] } },
];
for (const c of HUB_CASES) {
  test(`push mode, ${c.n} ranks (hub): barrier timeout names exactly the missing ranks, on the hub and on the others (${c.name}), within timeoutMs + 400 ms`, async () => {
    const st = await setup(c.n);
    try {
      const timeoutMs = 600;
      const got = await Promise.all(c.arrive.map((r) => timedOut(st.pgs[r], timeoutMs)));
      for (const [i, r] of c.arrive.entries()) {
        const { e, tookMs } = got[i];
        assert.equal(e.peerRanks, c.names[r], `rank ${r}: ${e.message}`);
        assert.is(e.rank, r);
        assert.is(e.timeoutMs, timeoutMs);
        assert.match(e.message, `[${c.names[r].join(', ')}]`);
        assert.ok(typeof e.key === 'string' && e.key.startsWith(`${st.pgs[r].keyPrefix}to/${r}/c/0/`), `rank ${r}: key ${e.key}`);
        assert.ok(tookMs >= timeoutMs - 20 && tookMs < timeoutMs + 400, `rank ${r} failed after ${tookMs.toFixed(0)}ms`);
      }
    } finally {
      await st.close();
    }
  });
}

test('push mode, 4 ranks (hub): a malformed bundle under a non-hub rank\'s c/0/all key is ERR_GROUPCOMM_PROTOCOL naming the key; the group goes on', async () => {
  const st = await setup(4);
  const writer = await TcpStore.create({ port: st.server.port, timeoutMs: 5000 });
  try {
    const key = `${st.pgs[1].keyPrefix}to/1/c/0/all`;
    // Count 4 and lengths that run past the end.
    await writer.set(key, new Uint8Array([4, 0, 0, 0, 9, 9, 9, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0]));
    const ps = st.pgs.map((g) => g.allGatherObj(`v${g.rank}`));
    const e = await rejectsWith(ps[1], 'ERR_GROUPCOMM_PROTOCOL');
    assert.is(e.key, key);
    assert.match(e.message, key);
    for (const r of [0, 2, 3]) assert.equal(await ps[r], ['v0', 'v1', 'v2', 'v3'], `rank ${r}`);
    assert.equal(await Promise.all(st.pgs.map((g) => g.allGatherObj(g.rank))), new Array(4).fill([0, 1, 2, 3]));
    // A well-formed bundle written the same way is read as the collective's result (the writer is faithful).
    await writer.set(`${st.pgs[2].keyPrefix}to/2/c/2/all`, bundle(['w0', 'w1', 'w2', 'w3'].map((v) => encodeObject(v))));
    const ok = st.pgs.map((g) => g.allGatherObj(g.rank));
    assert.equal(await ok[2], ['w0', 'w1', 2, 'w3']);
    for (const r of [0, 1, 3]) assert.equal(await ok[r], [0, 1, 2, 3]);
    // Other malformed bundles, each read by its collective on rank 2.
    const bundles = [
      new Uint8Array(0),
      new Uint8Array([3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]), // count 3 of 4 ranks
      bundle([0, 1, 2, 3].map((r) => encodeObject(r)), [7]), // valid parts, then a trailing byte
      bundle([0, 1, 2].map((r) => encodeObject(r))), // one part short of 4
      new Uint8Array([4, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x67]), // a part that is no value
    ];
    for (const [i, b] of bundles.entries()) {
      const k = `${st.pgs[2].keyPrefix}to/2/c/${3 + i}/all`;
      await writer.set(k, b);
      const qs = st.pgs.map((g) => g.allGatherObj(g.rank));
      const e2 = await rejectsWith(qs[2], 'ERR_GROUPCOMM_PROTOCOL');
      assert.is(e2.key, k, `bundle ${i}: ${e2.message}`);
      for (const r of [0, 1, 3]) assert.equal(await qs[r], [0, 1, 2, 3]);
    }
    await Promise.all(st.pgs.map((g) => g.barrier()));
  } finally {
    await writer.close();
    await st.close();
  }
});

test('push mode, 5 ranks (hub): after a mixed workload and destroy the server holds only the epoch key', async () => {
  const st = await setup(5, { timeoutMs: 20_000 });
  try {
    const jobs: Promise<unknown>[] = [];
    for (let i = 0; i < 60; i++) {
      for (const g of st.pgs) {
        jobs.push(g.allGatherObj(i % 10 === 0 ? { big: new Float64Array(1000).fill(g.rank) } : g.rank));
        jobs.push(g.allReduce(tensor(new Float32Array([g.rank, i])), { op: 'sum' }));
        if (i % 4 === 0) jobs.push(g.barrier());
        jobs.push(g.broadcastObj(g.rank === i % 5 ? { i, big: i % 15 === 0 ? new Uint8Array(80 * 1024).fill(i) : null } : null, i % 5));
        if (g.rank > 0) jobs.push(g.sendObj(i, 0));
        else for (let r = 1; r < 5; r++) jobs.push(g.recvObj(r).then((v) => assert.is(v, i)));
      }
    }
    await Promise.all(jobs);
    await onlyEpochLeft(st);
  } finally {
    await st.close();
  }
});


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
