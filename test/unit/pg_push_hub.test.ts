// StatelessProcessGroup in push mode with 4–5 ranks, where collectives go through group rank 0
// (the hub): message counts, big objects, malformed bundles, what the server holds after destroy.
// Split from pg_push.test.ts (same set-up, test/helpers/pg_setup.ts).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { TcpStore } from '../../host/index.js';
import { tensor } from '../../host/core/tensor.js';
import { encodeObject } from '../../host/pg/codec.js';
import type { Store } from '../../host/store/types.js';
import { rejectsWith } from '../helpers/rejects.js';
import { setup, onlyEpochLeft, type PG } from '../helpers/pg_setup.js';

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



test.run();
