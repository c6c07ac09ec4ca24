/**
 * The key-value store contract every layer above uses (the TCP store client, PrefixStore and
 * test helpers implement it). Semantics follow PyTorch's c10d Store.
 */
import type { OpOptions } from '../base/deadline.js';
import type { CloseOptions } from '../base/lifecycle.js';

export type StoreValue = Uint8Array | string;

/** Options of Store.publish. */
export interface PublishOptions extends OpOptions {
  /** The caller will not change the values again: the store may send them on as they are. */
  handOver?: boolean;
}

/** A push stream of the keys written under one prefix (Store.subscribe). */
export interface Subscription {
  /** Ends the stream (closes its connection). Idempotent. */
  close(): void;
  /** Called once when the stream ends: with the reason, or with nothing after close(). */
  onClose(fn: (error?: Error) => void): void;
}

export interface Store {
  /** Creates or overwrites `key`; wakes waiters. */
  set(key: string, value: StoreValue, opts?: OpOptions): Promise<void>;
  /** Waits until `key` exists (bounded by timeoutMs), then returns its value. */
  get(key: string, opts?: OpOptions): Promise<Uint8Array>;
  /** Adds `delta` to the decimal integer stored at `key` (0 if absent); returns the new value. */
  add(key: string, delta: number, opts?: OpOptions): Promise<number>;
  /**
   * torch's COMPARE_SET: missing key + empty expected → store desired; missing key + non-empty
   * expected → store nothing, return expected; equal → store desired; else return current.
   */
  compareSet(key: string, expected: StoreValue, desired: StoreValue, opts?: OpOptions): Promise<Uint8Array>;
  /** True when every key exists; never blocks. */
  check(keys: string[], opts?: OpOptions): Promise<boolean>;
  /** Resolves when every key exists; rejects with ERR_GROUPCOMM_TIMEOUT naming the missing keys. */
  wait(keys: string[], opts?: OpOptions): Promise<void>;
  /** True when the key existed. */
  deleteKey(key: string, opts?: OpOptions): Promise<boolean>;
  /** Number of keys on the server (all of them: not scoped by prefix, as in torch). */
  numKeys(opts?: OpOptions): Promise<number>;
  /** Appends to `key`, creating it when absent; wakes waiters. */
  append(key: string, value: StoreValue, opts?: OpOptions): Promise<void>;
  /**
   * Optional: get, then delete the key (a consuming read of a key written once and read once).
   * A store may do both in one request; callers fall back to get + deleteKey without it.
   */
  take?(key: string, opts?: OpOptions): Promise<Uint8Array>;
  /**
   * Optional: deletes the keys without reporting whether they existed; resolves once the request
   * is sent. For cleanup that nobody waits for (a store may then skip the reply altogether).
   */
  discard?(keys: string[], opts?: OpOptions): Promise<void>;
  /**
   * Optional: from now on, every key written (set/multiSet) under `prefix` (which ends in '/') is
   * handed to `onMessage` instead of being stored, in the order the writes were applied; keys
   * already stored under it are handed over first. One subscriber per prefix. Resolves with
   * undefined when the store cannot push (a torch server): callers then read keys as usual.
   */
  subscribe?(prefix: string, onMessage: (key: string, value: Uint8Array) => void, opts?: OpOptions): Promise<Subscription | undefined>;
  /**
   * Optional: writes keys meant for a subscriber (see subscribe), like set (one key) or
   * multiSet, as cheaply as the store can: it need not remember the write for later reads
   * through this client (do not read these keys back through it), and a store in this process
   * may apply it at once. Resolves once the write is handed over. With `handOver`, the caller
   * gives the values away (it never changes them afterwards), so the store may send them on
   * without copying them first.
   */
  publish?(keys: string[], values: Uint8Array[], opts?: PublishOptions): Promise<void>;
  /**
   * Optional: true when publish() hands writes to a server in this process (it applies them at
   * once). A value published to many subscribers is then written to their sockets by this
   * process whether it sends them the value or each of them fetches one stored copy: sending
   * costs no more upload, and saves every reader a round trip (pg/messages.ts, bcastSend).
   */
  readonly publishesLocally?: boolean;
  /** Waits for all keys, then returns their values in order. */
  multiGet(keys: string[], opts?: OpOptions): Promise<Uint8Array[]>;
  multiSet(keys: string[], values: StoreValue[], opts?: OpOptions): Promise<void>;
  /** Round trip to the server; resolves with the time it took in milliseconds. */
  ping(opts?: OpOptions): Promise<number>;
  /**
   * Closes this client (not the server it talks to), gracefully: see base/lifecycle.ts.
   * Idempotent.
   */
  close(opts?: CloseOptions): Promise<void>;
  /** Optional: closes this client now; calls in flight reject with ERR_GROUPCOMM_ABORTED. */
  abort?(reason?: unknown): Promise<void>;
}
