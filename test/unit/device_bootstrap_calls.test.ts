// storeBootstrap (host/device/bootstrap.ts) against a scripted in-memory store (a test double of
// the six Store methods it needs): the exact keys, values and options of each store call, the
// cleanups, and the refusals. device_bootstrap covers the same over a real TcpStore.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { storeBootstrap, type BootstrapStore } from '../../host/device/bootstrap.js';
import { ErrorCode, invalidArgument, isGroupcommError, timeoutError } from '../../host/base/errors.js';
import { PrefixStore } from '../../host/store/prefix.js';
import { failure } from '../helpers/rejects.js';

type Opts = { timeoutMs?: number; signal?: AbortSignal } | undefined;
interface Call { op: string; key: string | string[]; opts: Opts }

/** One map shared by every rank's view; `wait` and `get` resolve when the keys appear. */
function memory() {
  const kv = new Map<string, Uint8Array | string>();
  const counters = new Map<string, number>();
  const waiters: (() => void)[] = [];
  const changed = () => { for (const w of waiters.splice(0)) w(); };
  const until = async (ok: () => boolean, opts: Opts) => {
    const end = performance.now() + (opts?.timeoutMs ?? 1000);
    while (!ok()) {
      if (performance.now() >= end) throw timeoutError('scripted store: timed out', { timeoutMs: opts?.timeoutMs });
      await new Promise<void>((r) => { waiters.push(r); setTimeout(r, 5); });
    }
  };
  const calls: Call[] = [];
  let failWait: Error | undefined;
  let failGet: Error | undefined;
  let checkFails = false;
  const store = {
    async set(key: string, v: Uint8Array | string, opts?: Opts) { calls.push({ op: 'set', key, opts }); kv.set(key, v); changed(); },
    async get(key: string, opts?: Opts) {
      calls.push({ op: 'get', key, opts });
      if (failGet) throw failGet;
      await until(() => kv.has(key), opts);
      const v = kv.get(key)!;
      return typeof v === 'string' ? new TextEncoder().encode(v) : v;
    },
    async add(key: string, n: number, opts?: Opts) {
      calls.push({ op: 'add', key, opts });
      const v = (counters.get(key) ?? 0) + n;
      counters.set(key, v);
      kv.set(key, String(v));
      return v;
    },
    async check(keys: string[], opts?: Opts) {
      calls.push({ op: 'check', key: keys, opts });
      if (checkFails) throw new Error('check failed');
      return keys.every((k) => kv.has(k));
    },
    async wait(keys: string[], opts?: Opts) {
      calls.push({ op: 'wait', key: keys, opts });
      if (failWait) throw failWait;
      await until(() => keys.every((k) => kv.has(k)), opts);
    },
    async deleteKey(key: string, opts?: Opts) { calls.push({ op: 'deleteKey', key, opts }); counters.delete(key); return kv.delete(key); },
  };
  return {
    store, kv, calls,
    failWait: (e: Error) => { failWait = e; },
    failGet: (e: Error) => { failGet = e; },
    failChecks: () => { checkFails = true; },
  };
}

const bytes = (...b: number[]) => new Uint8Array(b);

test('the options of every call: the call\'s timeout and signal, else the bootstrap\'s timeout', async () => {
  const m = memory();
  const b0 = storeBootstrap(m.store, { rank: 0, worldSize: 2, prefix: 'p', timeoutMs: 1234 });
  const b1 = storeBootstrap(m.store, { rank: 1, worldSize: 2, prefix: 'p', timeoutMs: 1234 });
  const signal = new AbortController().signal;
  await b0.sendBytes(bytes(1), 1, { timeoutMs: 777, signal });
  await b0.sendBytes(bytes(2), 1);
  assert.equal(m.calls.map((c) => [c.op, c.key, c.opts]), [
    ['set', 'p/p2p/0-1/0', { timeoutMs: 777, signal }],
    ['set', 'p/p2p/0-1/1', { timeoutMs: 1234, signal: undefined }],
  ]);
  m.calls.length = 0;
  assert.equal([...await b1.recvBytes(0, { timeoutMs: 555, signal })], [1]);
  assert.equal(m.calls.map((c) => [c.op, c.key, c.opts]), [
    ['get', 'p/p2p/0-1/0', { timeoutMs: 555, signal }],
    ['deleteKey', 'p/p2p/0-1/0', { timeoutMs: 555, signal }],
  ]);
  assert.equal([...await b1.recvBytes(0)], [2]);
  assert.is(m.kv.size, 0, 'each received key deleted');
});

test('broadcastBytes: the source sets one key per broadcast, the last reader deletes it and its counter', async () => {
  const m = memory();
  const bs = [0, 1, 2].map((rank) => storeBootstrap(m.store, { rank, worldSize: 3, prefix: 'q', timeoutMs: 1000 }));
  const got = await Promise.all(bs.map((b, r) => b.broadcastBytes(r === 2 ? bytes(5, 6) : undefined, 2)));
  for (const g of got) assert.equal([...g], [5, 6]);
  assert.is(got[2].length, 2);
  assert.equal(m.calls.filter((c) => c.op === 'set').map((c) => c.key), ['q/bc/2/0']);
  assert.equal(m.calls.filter((c) => c.op === 'add').map((c) => c.key), ['q/bc/2/0/n', 'q/bc/2/0/n']);
  assert.equal(m.calls.filter((c) => c.op === 'deleteKey').map((c) => c.key), ['q/bc/2/0', 'q/bc/2/0/n']);
  assert.is(m.kv.size, 0);
  // The next broadcast from the same source uses the next number; another source its own.
  await Promise.all(bs.map((b, r) => b.broadcastBytes(r === 2 ? bytes(7) : undefined, 2)));
  await Promise.all(bs.map((b, r) => b.broadcastBytes(r === 0 ? bytes(8) : undefined, 0)));
  assert.equal(m.calls.filter((c) => c.op === 'set').map((c) => c.key), ['q/bc/2/0', 'q/bc/2/1', 'q/bc/0/0']);
  assert.is(m.kv.size, 0);
});

test('a group of one: broadcast returns the bytes and barrier returns, without the store', async () => {
  const m = memory();
  const b = storeBootstrap(m.store, { rank: 0, worldSize: 1, prefix: 'one' });
  const x = bytes(3);
  assert.is(await b.broadcastBytes(x, 0), x);
  await b.barrier();
  assert.equal(m.calls, []);
});

test('barrier: one key per rank and round, waited for together; the last to leave deletes them', async () => {
  const m = memory();
  const bs = [0, 1, 2].map((rank) => storeBootstrap(m.store, { rank, worldSize: 3, prefix: 'b', timeoutMs: 1000 }));
  await Promise.all(bs.map((b) => b.barrier()));
  const sets = m.calls.filter((c) => c.op === 'set');
  assert.equal(sets.map((c) => c.key).sort(), ['b/barrier/0/0', 'b/barrier/0/1', 'b/barrier/0/2']);
  for (const s of sets) assert.equal(s.opts, { timeoutMs: 1000, signal: undefined });
  assert.equal(m.calls.filter((c) => c.op === 'wait').map((c) => c.key), [0, 1, 2].map(() => ['b/barrier/0/0', 'b/barrier/0/1', 'b/barrier/0/2']));
  assert.equal(m.calls.filter((c) => c.op === 'deleteKey').map((c) => c.key), ['b/barrier/0/0', 'b/barrier/0/1', 'b/barrier/0/2', 'b/barrier/0/left']);
  assert.is(m.kv.size, 0);
  await Promise.all(bs.map((b) => b.barrier()));
  assert.ok(m.calls.some((c) => c.key === 'b/barrier/1/left'), 'the next round has its own keys');
  assert.is(m.kv.size, 0);
});

test('barrier: a timeout names the ranks whose key is missing, each asked with a short bounded check', async () => {
  const m = memory();
  const [b0, , b2] = [0, 1, 2].map((rank) => storeBootstrap(m.store, { rank, worldSize: 3, prefix: 't', timeoutMs: 1000 }));
  const es = await Promise.all([failure(b0.barrier({ timeoutMs: 100 })), failure(b2.barrier({ timeoutMs: 100 }))]);
  for (const [i, e] of es.entries()) {
    assert.is(e.code, ErrorCode.TIMEOUT);
    assert.is(e.rank, [0, 2][i]);
    assert.equal(e.peerRanks, [1]);
    assert.equal(e.keys, ['t/barrier/0/0', 't/barrier/0/1', 't/barrier/0/2']);
    assert.is(e.timeoutMs, 100);
    assert.ok(isGroupcommError(e.cause, ErrorCode.TIMEOUT));
  }
  const checks = m.calls.filter((c) => c.op === 'check');
  assert.is(checks.length, 6);
  for (const c of checks) assert.equal(c.opts, { timeoutMs: 5000 });
  // Checks that fail count the rank as missing.
  const f = memory();
  f.failChecks();
  const [c0] = [0, 1].map((rank) => storeBootstrap(f.store, { rank, worldSize: 2, prefix: 'f' }));
  assert.equal((await failure(c0.barrier({ timeoutMs: 50 }))).peerRanks, [0, 1]);
});

test('barrier and recvBytes pass other errors through unchanged', async () => {
  const m = memory();
  const b = storeBootstrap(m.store, { rank: 0, worldSize: 2, prefix: 'e' });
  const other = invalidArgument('broken');
  m.failWait(other);
  assert.is(await failure(b.barrier()), other);
  assert.not.ok(m.calls.some((c) => c.op === 'check'));
  m.failGet(other);
  assert.is(await failure(b.recvBytes(1)), other);
});

test('recvBytes: a timeout names both ranks, the key and the timeout', async () => {
  const m = memory();
  const b = storeBootstrap(m.store, { rank: 1, worldSize: 3, prefix: 'r' });
  const e = await failure(b.recvBytes(2, { timeoutMs: 40 }));
  assert.is(e.code, ErrorCode.TIMEOUT);
  assert.is(e.rank, 1);
  assert.is(e.peerRank, 2);
  assert.is(e.key, 'r/p2p/2-1/0');
  assert.is(e.timeoutMs, 40);
  assert.ok(isGroupcommError(e.cause, ErrorCode.TIMEOUT));
});

test('refusals: bad sizes and ranks, sending to or receiving from itself, a source without bytes', async () => {
  const m = memory();
  const refused = (f: () => unknown) => assert.throws(f, (e: unknown) => isGroupcommError(e, ErrorCode.INVALID_ARGUMENT));
  refused(() => storeBootstrap(m.store, { rank: 0, worldSize: 0, prefix: 'x' }));
  refused(() => storeBootstrap(m.store, { rank: 0, worldSize: 1.5, prefix: 'x' }));
  refused(() => storeBootstrap(m.store, { rank: -1, worldSize: 2, prefix: 'x' }));
  refused(() => storeBootstrap(m.store, { rank: 0.5, worldSize: 2, prefix: 'x' }));
  refused(() => storeBootstrap(m.store, { rank: 2, worldSize: 2, prefix: 'x' }));
  assert.throws(() => storeBootstrap(m.store, { rank: 3, worldSize: 2, prefix: 'x' }), (e: unknown) => (e as { rank?: number }).rank === 3);
  const b = storeBootstrap(m.store, { rank: 1, worldSize: 2, prefix: 'x' });
  const code = async (p: Promise<unknown>) => { const e = await failure(p); assert.is(e.code, ErrorCode.INVALID_ARGUMENT); return e; };
  for (const r of [-1, 2, 0.5]) {
    assert.is((await code(b.broadcastBytes(bytes(1), r))).peerRank, r);
    await code(b.sendBytes(bytes(1), r));
    await code(b.recvBytes(r));
  }
  assert.is((await code(b.sendBytes(bytes(1), 1))).rank, 1);
  assert.is((await code(b.recvBytes(1))).rank, 1);
  assert.is((await code(b.broadcastBytes(undefined, 1))).rank, 1);
  assert.equal(m.calls, [], 'refused before touching the store');
  assert.ok(storeBootstrap(m.store, { rank: 0, worldSize: 1, prefix: 'x' }));
});

test('bootstrap.store: the whole Store scoped to <prefix>/backend; none for a partial store', () => {
  const partial = memory().store as unknown as BootstrapStore;
  assert.is(storeBootstrap(partial, { rank: 0, worldSize: 1, prefix: 'x' }).store, undefined);
  const names = ['set', 'get', 'add', 'compareSet', 'check', 'wait', 'deleteKey', 'numKeys', 'append', 'multiGet', 'multiSet', 'ping', 'close'];
  const full = Object.fromEntries(names.map((n) => [n, async () => undefined])) as unknown as BootstrapStore;
  const s = storeBootstrap(full, { rank: 0, worldSize: 1, prefix: 'grp' }).store;
  assert.ok(s instanceof PrefixStore);
  assert.is((s as PrefixStore).prefix, 'grp/backend');
  for (const n of names) {
    const missing = Object.fromEntries(names.filter((x) => x !== n).map((x) => [x, async () => undefined]));
    assert.is(storeBootstrap({ ...missing, [n]: 1 } as unknown as BootstrapStore, { rank: 0, worldSize: 1, prefix: 'x' }).store, undefined, n);
  }
});

test.run();
