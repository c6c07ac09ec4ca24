/**
 * TEST HELPER ONLY (never imported by product code): an in-process `Store`, the equivalent of
 * gloo's HashStore. Many "clients" (`memStore.client()`) share one key space, so several group
 * instances in one process can stand in for ranks. Every operation is applied synchronously in
 * call order — like requests pipelined on one TCP connection — and blocking reads (`get`,
 * `wait`, `multiGet`) honour `{ timeoutMs, signal }` with the same error codes as the real store.
 */
import type { Store, StoreValue } from '../../host/store/types.js';
import { guard, type OpOptions } from '../../host/base/deadline.js';
import { destroyedError, invalidArgument, timeoutError } from '../../host/base/errors.js';

const enc = new TextEncoder();
const toBytes = (v: StoreValue): Uint8Array => (typeof v === 'string' ? enc.encode(v) : new Uint8Array(v));

interface Waiter {
  keys: string[];
  wake: () => void;
}

export class MemStoreServer {
  readonly data = new Map<string, Uint8Array>();
  private waiters = new Set<Waiter>();
  /** Operations served so far, by name (lets tests count round trips). */
  readonly ops = new Map<string, number>();

  constructor(readonly defaultTimeoutMs = 30_000) {}

  client(): MemStore {
    return new MemStore(this);
  }

  count(op: string): void {
    this.ops.set(op, (this.ops.get(op) ?? 0) + 1);
  }

  put(key: string, value: Uint8Array): void {
    this.data.set(key, value);
    for (const w of [...this.waiters]) {
      if (w.keys.every((k) => this.data.has(k))) {
        this.waiters.delete(w);
        w.wake();
      }
    }
  }

  /** Resolves once every key exists; rejects on timeout/abort naming the keys still missing. */
  waitFor(keys: string[], timeoutMs: number, signal: AbortSignal | undefined, what: string): Promise<void> {
    if (keys.every((k) => this.data.has(k))) return Promise.resolve();
    let w!: Waiter;
    const p = new Promise<void>((resolve) => {
      w = { keys, wake: resolve };
      this.waiters.add(w);
    });
    return guard(p, {
      timeoutMs,
      signal,
      what,
      fields: { keys },
      onTimeout: (elapsedMs) => {
        const missing = keys.filter((k) => !this.data.has(k));
        return timeoutError(`${what} timed out after ${timeoutMs}ms waiting for keys [${missing.join(', ')}]`,
          { keys: missing, key: missing[0], timeoutMs, elapsedMs });
      },
      cancel: () => this.waiters.delete(w),
    });
  }
}

export class MemStore implements Store {
  private closed = false;
  constructor(readonly server: MemStoreServer) {}

  private live(op: string): MemStoreServer {
    if (this.closed) throw destroyedError(`memstore client closed (${op})`);
    this.server.count(op);
    return this.server;
  }

  private t(opts?: OpOptions): number {
    return opts?.timeoutMs ?? this.server.defaultTimeoutMs;
  }

  async set(key: string, value: StoreValue): Promise<void> {
    this.live('set').put(key, toBytes(value));
  }

  async get(key: string, opts?: OpOptions): Promise<Uint8Array> {
    const s = this.live('get');
    await s.waitFor([key], this.t(opts), opts?.signal, `get(${key})`);
    return s.data.get(key)!;
  }

  async add(key: string, delta: number): Promise<number> {
    const s = this.live('add');
    const cur = s.data.get(key);
    const n = (cur ? Number(new TextDecoder().decode(cur)) : 0) + delta;
    if (!Number.isSafeInteger(n)) throw invalidArgument(`add(${key}): value is not an integer`);
    s.put(key, enc.encode(String(n)));
    return n;
  }

  async compareSet(key: string, expected: StoreValue, desired: StoreValue): Promise<Uint8Array> {
    const s = this.live('compareSet');
    const cur = s.data.get(key);
    const exp = toBytes(expected);
    if (!cur) {
      if (exp.length === 0) {
        s.put(key, toBytes(desired));
        return toBytes(desired);
      }
      return exp;
    }
    if (Buffer.compare(cur, exp) === 0) {
      s.put(key, toBytes(desired));
      return toBytes(desired);
    }
    return cur;
  }

  async check(keys: string[]): Promise<boolean> {
    const s = this.live('check');
    return keys.every((k) => s.data.has(k));
  }

  async wait(keys: string[], opts?: OpOptions): Promise<void> {
    const s = this.live('wait');
    await s.waitFor(keys, this.t(opts), opts?.signal, `wait([${keys.join(', ')}])`);
  }

  async deleteKey(key: string): Promise<boolean> {
    return this.live('deleteKey').data.delete(key);
  }

  async numKeys(): Promise<number> {
    return this.live('numKeys').data.size;
  }

  async append(key: string, value: StoreValue): Promise<void> {
    const s = this.live('append');
    const cur = s.data.get(key);
    const add = toBytes(value);
    if (!cur) return s.put(key, add);
    const out = new Uint8Array(cur.length + add.length);
    out.set(cur);
    out.set(add, cur.length);
    s.put(key, out);
  }

  async multiGet(keys: string[], opts?: OpOptions): Promise<Uint8Array[]> {
    const s = this.live('multiGet');
    await s.waitFor(keys, this.t(opts), opts?.signal, `multiGet([${keys.join(', ')}])`);
    return keys.map((k) => s.data.get(k)!);
  }

  async multiSet(keys: string[], values: StoreValue[]): Promise<void> {
    const s = this.live('multiSet');
    keys.forEach((k, i) => s.put(k, toBytes(values[i])));
  }

  async ping(): Promise<number> {
    this.live('ping');
    return 0;
  }

  async close(): Promise<void> {
    this.closed = true;
  }
}
