/**
 * PrefixStore (host/store/prefix.ts) over a recording in-memory store (a test double: the
 * real-server cases are in store.test.ts and lifecycle.test.ts): every call reaches the wrapped
 * store with `${prefix}/` in front of each key and the caller's timeout, the optional calls fall
 * back when the wrapped store lacks them, subscriptions hand back keys without the prefix, views
 * nest, and close()/abort() end the view (and its calls in flight), never the wrapped store.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { PrefixStore } from '../../host/store/prefix.js';
import { isGroupcommError } from '../../host/base/errors.js';
import type { OpOptions } from '../../host/base/deadline.js';
import type { Store, StoreValue, Subscription } from '../../host/store/types.js';

const enc = (v: StoreValue) => (typeof v === 'string' ? new TextEncoder().encode(v) : v);
const dec = (v: Uint8Array) => new TextDecoder().decode(v);

/** An in-memory Store recording every call (name, keys, timeoutMs, signal); `full` adds the optional calls. */
class FakeStore implements Store {
  readonly kv = new Map<string, Uint8Array>();
  readonly calls: string[] = [];
  readonly opts: (OpOptions | undefined)[] = [];
  closed = 0;
  hold: Promise<void> | undefined;
  subscribed: ((k: string, v: Uint8Array) => void) | undefined;
  take?: (key: string, opts?: OpOptions) => Promise<Uint8Array>;
  discard?: (keys: string[], opts?: OpOptions) => Promise<void>;
  subscribe?: (prefix: string, on: (k: string, v: Uint8Array) => void, opts?: OpOptions) => Promise<Subscription | undefined>;
  publish?: (keys: string[], values: Uint8Array[], opts?: OpOptions) => Promise<void>;

  constructor(full: boolean) {
    if (!full) return;
    this.take = async (key, o) => { this.log('take', [key], o); const v = this.kv.get(key)!; this.kv.delete(key); return v; };
    this.discard = async (keys, o) => { this.log('discard', keys, o); for (const k of keys) this.kv.delete(k); };
    this.subscribe = async (prefix, on, o) => {
      this.log('subscribe', [prefix], o);
      this.subscribed = on;
      return { close() {}, onClose() {} };
    };
    this.publish = async (keys, values, o) => { this.log('publish', keys, o); keys.forEach((k, i) => this.kv.set(k, values[i])); };
  }

  private log(name: string, keys: string[], o?: OpOptions): void {
    this.calls.push(`${name} ${keys.join(',')}`);
    this.opts.push(o);
  }
  async set(key: string, v: StoreValue, o?: OpOptions) { this.log('set', [key], o); await this.hold; this.kv.set(key, enc(v)); }
  async get(key: string, o?: OpOptions) { this.log('get', [key], o); await this.hold; return this.kv.get(key) ?? new Uint8Array(); }
  async add(key: string, d: number, o?: OpOptions) {
    this.log('add', [key], o);
    const n = Number(dec(this.kv.get(key) ?? enc('0'))) + d;
    this.kv.set(key, enc(String(n)));
    return n;
  }
  async compareSet(key: string, e: StoreValue, d: StoreValue, o?: OpOptions) { this.log('compareSet', [key], o); this.kv.set(key, enc(d)); return enc(e); }
  async check(keys: string[], o?: OpOptions) { this.log('check', keys, o); return keys.every((k) => this.kv.has(k)); }
  async wait(keys: string[], o?: OpOptions) { this.log('wait', keys, o); }
  async deleteKey(key: string, o?: OpOptions) { this.log('deleteKey', [key], o); return this.kv.delete(key); }
  async numKeys(o?: OpOptions) { this.log('numKeys', [], o); return this.kv.size; }
  async append(key: string, v: StoreValue, o?: OpOptions) { this.log('append', [key], o); this.kv.set(key, enc(v)); }
  async multiGet(keys: string[], o?: OpOptions) { this.log('multiGet', keys, o); return keys.map((k) => this.kv.get(k)!); }
  async multiSet(keys: string[], values: StoreValue[], o?: OpOptions) { this.log('multiSet', keys, o); keys.forEach((k, i) => this.kv.set(k, enc(values[i]))); }
  async ping(o?: OpOptions) { this.log('ping', [], o); return 1; }
  async close() { this.closed++; }
}

test('every call prefixes each key and passes the caller timeout and a signal', async () => {
  const inner = new FakeStore(true);
  const s = new PrefixStore('a', inner);
  const o = { timeoutMs: 1234 };
  await s.set('k', 'v', o);
  assert.is(dec(await s.get('k', o)), 'v');
  assert.is(await s.add('n', 2, o), 2);
  assert.is(dec(await s.compareSet('k', 'v', 'w', o)), 'v');
  assert.is(await s.check(['k', 'n'], o), true);
  await s.wait(['k', 'n'], o);
  await s.append('k', 'x', o);
  assert.equal((await s.multiGet(['k', 'n'], o)).map(dec), ['x', '2']);
  await s.multiSet(['m1', 'm2'], ['1', '2'], o);
  assert.is(await s.numKeys(o), 4);
  assert.is(await s.deleteKey('m2', o), true);
  assert.is(await s.ping(o), 1);
  assert.equal(inner.calls, [
    'set a/k', 'get a/k', 'add a/n', 'compareSet a/k', 'check a/k,a/n', 'wait a/k,a/n', 'append a/k', 'multiGet a/k,a/n',
    'multiSet a/m1,a/m2', 'numKeys ', 'deleteKey a/m2', 'ping ',
  ]);
  for (const x of inner.opts) {
    assert.is(x!.timeoutMs, 1234);
    assert.ok(x!.signal instanceof AbortSignal, 'the view adds its own signal (abort() cancels the call)');
  }
  assert.is(s.underlying, inner);
});

test('the caller\'s signal still reaches the wrapped store, combined with the view\'s', async () => {
  const inner = new FakeStore(false);
  const s = new PrefixStore('a', inner);
  const c = new AbortController();
  await s.set('k', 'v', { signal: c.signal });
  const sig = inner.opts[0]!.signal!;
  assert.not.ok(sig.aborted);
  c.abort(new Error('caller'));
  assert.ok(sig.aborted, 'the caller aborting aborts the signal the wrapped store got');
  const s2 = new PrefixStore('b', new FakeStore(false));
  await s2.set('k', 'v');
  const inner2 = s2.inner as FakeStore;
  const sig2 = inner2.opts[0]!.signal!;
  assert.is(inner2.opts[0]!.timeoutMs, undefined);
  await s2.abort('stop');
  assert.ok(sig2.aborted, 'abort() aborts the signal the wrapped store got');
});

test('take, discard, subscribe and publish use the wrapped store\'s own calls when it has them', async () => {
  const inner = new FakeStore(true);
  const s = new PrefixStore('g', inner);
  await s.set('t', 'v');
  assert.is(dec(await s.take('t')), 'v');
  await s.discard(['x', 'y']);
  const got: string[] = [];
  const sub = await s.subscribe('to/1/', (k, v) => got.push(`${k}=${dec(v)}`));
  assert.ok(sub);
  inner.subscribed!('g/to/1/p/0', enc('hi'));
  assert.equal(got, ['to/1/p/0=hi'], 'keys come back without the view\'s prefix');
  await s.publish(['to/1/q'], [enc('z')], { timeoutMs: 77, handOver: true });
  assert.equal(inner.calls, ['set g/t', 'take g/t', 'discard g/x,g/y', 'subscribe g/to/1/', 'publish g/to/1/q']);
  const po = inner.opts.at(-1) as { timeoutMs?: number; handOver?: boolean; signal?: AbortSignal };
  assert.is(po.timeoutMs, 77);
  assert.is(po.handOver, true, 'publish passes handOver through');
  assert.ok(po.signal instanceof AbortSignal);
});

test('without them: take is get + deleteKey, discard deletes each key, subscribe answers undefined, publish is multiSet', async () => {
  const inner = new FakeStore(false);
  const s = new PrefixStore('g', inner);
  await s.set('t', 'v');
  assert.is(dec(await s.take('t')), 'v');
  await new Promise((r) => setImmediate(r));
  assert.not.ok(inner.kv.has('g/t'), 'deleted after the read');
  await s.discard(['x', 'y']);
  assert.is(await s.subscribe('to/', () => {}), undefined);
  await s.publish(['p'], [enc('z')]);
  assert.equal(inner.calls, ['set g/t', 'get g/t', 'deleteKey g/t', 'deleteKey g/x', 'deleteKey g/y', 'multiSet g/p']);
  assert.is(dec(inner.kv.get('g/p')!), 'z');
});

test('views nest like torch\'s: the outer prefix goes inside the inner one', async () => {
  const inner = new FakeStore(false);
  const outer = new PrefixStore('a', new PrefixStore('b', inner));
  await outer.set('k', 'v');
  assert.equal(inner.calls, ['set b/a/k']);
  assert.is(outer.underlying, inner);
  assert.throws(() => new PrefixStore(5 as unknown as string, inner), (e: unknown) => isGroupcommError(e, 'ERR_GROUPCOMM_INVALID_ARGUMENT'));
});

test('a call that throws synchronously in the wrapped store rejects, and is not left in flight', async () => {
  const inner = new FakeStore(false);
  inner.ping = () => { throw new Error('sync'); };
  const s = new PrefixStore('a', inner);
  await s.ping().then(() => assert.unreachable('resolved'), (e) => assert.is((e as Error).message, 'sync'));
  await s.close({ timeoutMs: 50 });
});

test('close() waits for the calls in flight, then refuses new ones; the wrapped store stays open', async () => {
  const inner = new FakeStore(false);
  let release!: () => void;
  inner.hold = new Promise((r) => { release = r; });
  const s = new PrefixStore('a', inner);
  const p = s.set('k', 'v');
  let closed = false;
  const c = s.close({ timeoutMs: 10_000 }).then(() => { closed = true; });
  await new Promise((r) => setTimeout(r, 20));
  assert.not.ok(closed, 'close() returned with a call in flight');
  release();
  await p;
  await c;
  assert.ok(closed);
  assert.is(s.close(), s.close(), 'idempotent');
  await s.get('k').then(() => assert.unreachable('resolved'), (e) => assert.ok(isGroupcommError(e, 'ERR_GROUPCOMM_DESTROYED'), String(e)));
  assert.is(inner.closed, 0);
  assert.ok(inner.kv.has('a/k'));
});

test('close() that runs out of time rejects the calls still in flight as ABORTED; abort() does at once', async () => {
  const inner = new FakeStore(false);
  inner.hold = new Promise(() => {});
  const s = new PrefixStore('a', inner);
  const p = s.get('k');
  await s.close({ timeoutMs: 20 });
  await p.then(() => assert.unreachable('resolved'), (e) => {
    assert.ok(isGroupcommError(e, 'ERR_GROUPCOMM_ABORTED'), String(e));
    assert.match((e as Error).message, /close\(\) waited 20ms/);
  });
  const s2 = new PrefixStore('b', inner);
  const q = s2.get('k');
  const r = s2.get('j');
  const reason = new Error('gone');
  await s2.abort(reason);
  for (const x of [q, r]) {
    await x.then(() => assert.unreachable('resolved'), (e) => {
      assert.ok(isGroupcommError(e, 'ERR_GROUPCOMM_ABORTED'), String(e));
      assert.match((e as Error).message, /PrefixStore 'b' was aborted: gone/);
      assert.is((e as Error & { cause?: unknown }).cause, reason, 'the reason is the cause');
    });
  }
  await s2.abort();
  await s2.set('k', 'v').then(() => assert.unreachable('resolved'), (e) => assert.ok(isGroupcommError(e, 'ERR_GROUPCOMM_DESTROYED'), String(e)));
  // An already aborted signal ends close() at once, with that reason.
  const s3 = new PrefixStore('c', inner);
  const t = s3.get('k');
  const ac = new AbortController();
  ac.abort('now');
  await s3.close({ timeoutMs: 60_000, signal: ac.signal });
  await t.then(() => assert.unreachable('resolved'), (e) => assert.match((e as Error).message, /was aborted: now/));
  // abort() with no reason, and dispose.
  const s4 = new PrefixStore('d', inner);
  const u = s4.get('k');
  await s4.abort();
  await u.then(() => assert.unreachable('resolved'), (e) => assert.match((e as Error).message, /PrefixStore 'd' was aborted$/));
  const s5 = new PrefixStore('e', new FakeStore(false));
  await s5[Symbol.asyncDispose]();
  await s5.ping().then(() => assert.unreachable('resolved'), (e) => assert.ok(isGroupcommError(e, 'ERR_GROUPCOMM_DESTROYED'), String(e)));
  assert.is(inner.closed, 0);
});

test.run();
