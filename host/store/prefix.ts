/**
 * PrefixStore: a view of another store in which every key `k` becomes `${prefix}/${k}`. Views
 * nest like torch's (PrefixStore('a', PrefixStore('b', s)).set('k') writes 'b/a/k'), so groups can
 * share one server without their keys colliding. numKeys is not scoped: it counts the server's keys.
 *
 * A view owns nothing: close() and abort() end the view (later calls through it are refused;
 * abort() rejects the calls in flight through it), never the store it wraps — close that one
 * yourself.
 */
import { anySignal, effectiveTimeout, settled, type OpOptions } from '../base/deadline.js';
import { abortedError, destroyedError, invalidArgument } from '../base/errors.js';
import { asyncDispose, type CloseOptions, lifeController, reasonSuffix } from '../base/lifecycle.js';
import type { PublishOptions, Store, StoreValue, Subscription } from './types.js';

export class PrefixStore implements Store {
  /** Calls in flight through this view, each with its reject (for abort()). */
  readonly #inFlight = new Map<Promise<unknown>, (e: unknown) => void>();
  #closing: Promise<void> | undefined;
  /** Aborted by abort() (or a close() that gave up): cancels the calls in flight in the wrapped store too. */
  readonly #life = lifeController();

  constructor(readonly prefix: string, readonly inner: Store) {
    if (typeof prefix !== 'string') throw invalidArgument('PrefixStore: prefix must be a string');
  }

  private k(key: string): string {
    return `${this.prefix}/${key}`;
  }

  /** The caller's options plus this view's signal (the same object when the caller gave none). */
  #o(opts?: OpOptions): OpOptions {
    return { timeoutMs: opts?.timeoutMs, signal: anySignal([opts?.signal, this.#life.signal]) };
  }

  /** Runs one call on the wrapped store: refused once the view is closed, rejected by abort(). */
  #op<T>(fn: () => Promise<T>): Promise<T> {
    if (this.#closing) return Promise.reject(destroyedError(`PrefixStore '${this.prefix}' was closed`));
    let p: Promise<T>;
    try {
      p = fn();
    } catch (e) {
      return Promise.reject(e);
    }
    let reject!: (e: unknown) => void;
    const out = new Promise<T>((res, rej) => {
      reject = rej;
      p.then(res, rej);
    });
    const done = out.then(() => {}, () => {});
    this.#inFlight.set(done, reject);
    void done.then(() => this.#inFlight.delete(done));
    return out;
  }
  /** The innermost store under any number of PrefixStores. */
  get underlying(): Store {
    let s: Store = this.inner;
    while (s instanceof PrefixStore) s = s.inner;
    return s;
  }

  set(key: string, value: StoreValue, opts?: OpOptions) { return this.#op(() => this.inner.set(this.k(key), value, this.#o(opts))); }
  get(key: string, opts?: OpOptions) { return this.#op(() => this.inner.get(this.k(key), this.#o(opts))); }
  take(key: string, opts?: OpOptions): Promise<Uint8Array> {
    return this.#op(async () => {
      const k = this.k(key);
      if (this.inner.take) return this.inner.take(k, this.#o(opts));
      const v = await this.inner.get(k, this.#o(opts));
      this.inner.deleteKey(k).catch(() => {});
      return v;
    });
  }
  discard(keys: string[], opts?: OpOptions): Promise<void> {
    return this.#op(async () => {
      const ks = keys.map((k) => this.k(k));
      if (this.inner.discard) return this.inner.discard(ks, this.#o(opts));
      await Promise.all(ks.map((k) => this.inner.deleteKey(k, this.#o(opts))));
    });
  }
  subscribe(prefix: string, onMessage: (key: string, value: Uint8Array) => void, opts?: OpOptions): Promise<Subscription | undefined> {
    return this.#op(async () => {
      if (!this.inner.subscribe) return undefined;
      const cut = this.prefix.length + 1;
      return this.inner.subscribe(this.k(prefix), (k, v) => onMessage(k.slice(cut), v), this.#o(opts));
    });
  }
  add(key: string, delta: number, opts?: OpOptions) { return this.#op(() => this.inner.add(this.k(key), delta, this.#o(opts))); }
  compareSet(key: string, expected: StoreValue, desired: StoreValue, opts?: OpOptions) {
    return this.#op(() => this.inner.compareSet(this.k(key), expected, desired, this.#o(opts)));
  }
  check(keys: string[], opts?: OpOptions) { return this.#op(() => this.inner.check(keys.map((k) => this.k(k)), this.#o(opts))); }
  wait(keys: string[], opts?: OpOptions) { return this.#op(() => this.inner.wait(keys.map((k) => this.k(k)), this.#o(opts))); }
  deleteKey(key: string, opts?: OpOptions) { return this.#op(() => this.inner.deleteKey(this.k(key), this.#o(opts))); }
  numKeys(opts?: OpOptions) { return this.#op(() => this.inner.numKeys(this.#o(opts))); }
  append(key: string, value: StoreValue, opts?: OpOptions) { return this.#op(() => this.inner.append(this.k(key), value, this.#o(opts))); }
  multiGet(keys: string[], opts?: OpOptions) { return this.#op(() => this.inner.multiGet(keys.map((k) => this.k(k)), this.#o(opts))); }
  multiSet(keys: string[], values: StoreValue[], opts?: OpOptions) {
    return this.#op(() => this.inner.multiSet(keys.map((k) => this.k(k)), values, this.#o(opts)));
  }
  publish(keys: string[], values: Uint8Array[], opts?: PublishOptions): Promise<void> {
    return this.#op(() => {
      const ks = keys.map((k) => this.k(k));
      return this.inner.publish ? this.inner.publish(ks, values, { ...this.#o(opts), handOver: opts?.handOver }) : this.inner.multiSet(ks, values, this.#o(opts));
    });
  }
  /** The wrapped store's (a view adds nothing between this process and the server). */
  get publishesLocally(): boolean {
    return this.inner.publishesLocally === true;
  }
  ping(opts?: OpOptions) { return this.#op(() => this.inner.ping(this.#o(opts))); }
  /**
   * Ends the view, not the wrapped store: refuses new calls, and waits for the calls in flight
   * through it (within `timeoutMs`, default GROUPCOMM_TIMEOUT_MS, and until `signal` fires; then
   * they are rejected as by abort()). Idempotent.
   */
  close(opts: CloseOptions = {}): Promise<void> {
    this.#closing ??= (async () => {
      const timeoutMs = effectiveTimeout(opts);
      if (!await settled(this.#inFlight.keys(), { timeoutMs, signal: opts.signal })) {
        this.#abortCalls(opts.signal?.aborted ? opts.signal.reason : `close() waited ${timeoutMs}ms for the calls in flight`);
      }
    })();
    return this.#closing;
  }

  /** Ends the view now: calls in flight through it reject with ERR_GROUPCOMM_ABORTED. Idempotent. */
  abort(reason?: unknown): Promise<void> {
    if (!this.#life.signal.aborted) {
      this.#abortCalls(reason);
      this.#closing ??= Promise.resolve();
    }
    return this.#closing!;
  }

  async [asyncDispose](): Promise<void> {
    await this.close();
  }

  #abortCalls(reason: unknown): void {
    const why = reasonSuffix(reason);
    const err = abortedError(`PrefixStore '${this.prefix}' was aborted${why}`, { cause: reason });
    for (const reject of this.#inFlight.values()) reject(err);
    this.#life.abort(err);
  }
}
