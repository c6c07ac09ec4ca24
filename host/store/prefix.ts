/**
 * PrefixStore: a view of another store in which every key `k` becomes `${prefix}/${k}`. Views
 * nest like torch's (PrefixStore('a', PrefixStore('b', s)).set('k') writes 'b/a/k'), so groups can
 * share one server without their keys colliding. numKeys is not scoped: it counts the server's keys.
 */
import type { OpOptions } from '../base/deadline.js';
import { invalidArgument } from '../base/errors.js';
import type { Store, StoreValue, Subscription } from './types.js';

export class PrefixStore implements Store {
  constructor(readonly prefix: string, readonly inner: Store) {
    if (typeof prefix !== 'string') throw invalidArgument('PrefixStore: prefix must be a string');
  }

  private k(key: string): string {
    return `${this.prefix}/${key}`;
  }

  /** The innermost store under any number of PrefixStores. */
  get underlying(): Store {
    let s: Store = this.inner;
    while (s instanceof PrefixStore) s = s.inner;
    return s;
  }

  set(key: string, value: StoreValue, opts?: OpOptions) { return this.inner.set(this.k(key), value, opts); }
  get(key: string, opts?: OpOptions) { return this.inner.get(this.k(key), opts); }
  async take(key: string, opts?: OpOptions): Promise<Uint8Array> {
    const k = this.k(key);
    if (this.inner.take) return this.inner.take(k, opts);
    const v = await this.inner.get(k, opts);
    this.inner.deleteKey(k).catch(() => {});
    return v;
  }
  async discard(keys: string[], opts?: OpOptions): Promise<void> {
    const ks = keys.map((k) => this.k(k));
    if (this.inner.discard) return this.inner.discard(ks, opts);
    await Promise.all(ks.map((k) => this.inner.deleteKey(k, opts)));
  }
  async subscribe(prefix: string, onMessage: (key: string, value: Uint8Array) => void, opts?: OpOptions): Promise<Subscription | undefined> {
    if (!this.inner.subscribe) return undefined;
    const cut = this.prefix.length + 1;
    return this.inner.subscribe(this.k(prefix), (k, v) => onMessage(k.slice(cut), v), opts);
  }
  add(key: string, delta: number, opts?: OpOptions) { return this.inner.add(this.k(key), delta, opts); }
  compareSet(key: string, expected: StoreValue, desired: StoreValue, opts?: OpOptions) {
    return this.inner.compareSet(this.k(key), expected, desired, opts);
  }
  check(keys: string[], opts?: OpOptions) { return this.inner.check(keys.map((k) => this.k(k)), opts); }
  wait(keys: string[], opts?: OpOptions) { return this.inner.wait(keys.map((k) => this.k(k)), opts); }
  deleteKey(key: string, opts?: OpOptions) { return this.inner.deleteKey(this.k(key), opts); }
  numKeys(opts?: OpOptions) { return this.inner.numKeys(opts); }
  append(key: string, value: StoreValue, opts?: OpOptions) { return this.inner.append(this.k(key), value, opts); }
  multiGet(keys: string[], opts?: OpOptions) { return this.inner.multiGet(keys.map((k) => this.k(k)), opts); }
  multiSet(keys: string[], values: StoreValue[], opts?: OpOptions) {
    return this.inner.multiSet(keys.map((k) => this.k(k)), values, opts);
  }
  publish(keys: string[], values: Uint8Array[], opts?: OpOptions): Promise<void> {
    const ks = keys.map((k) => this.k(k));
    return this.inner.publish ? this.inner.publish(ks, values, opts) : this.inner.multiSet(ks, values, opts);
  }
  ping(opts?: OpOptions) { return this.inner.ping(opts); }
  /** Does nothing: a view does not own the store it wraps; close that one yourself. */
  async close(): Promise<void> {}
}
