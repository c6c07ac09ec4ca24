/**
 * The server's data: keys and values, FIFO queues, and who waits for which key. No I/O here;
 * the server parses requests, calls these methods, and writes what they return. Semantics are
 * torch's (its libuv server), with the differences listed in docs/store.md.
 *
 * Keys are latin1 strings: one char per wire byte, an exact and reversible image of whatever
 * bytes the client sent. Values up to SMALL_VALUE_BYTES are latin1 strings too (a string header
 * plus the bytes: the cheapest small object a JS engine has); larger ones are Buffers that no one
 * else writes to, so deleting a key gives its memory back.
 */

export type Value = string | Buffer;

export const SMALL_VALUE_BYTES = 256;

/** A protocol violation by one client: its connection is closed, nothing else happens. */
export class Violation extends Error {}

/** What the table needs to know about a waiting connection. */
export interface Waiter {
  /** Keys of the current WAIT still missing (torch: one count per connection). */
  waitCount: number;
  waitKeys: string[] | null;
  closed: boolean;
}

const I64_MAX = 0x7fffffffffffffffn;
const I64_MIN = -0x8000000000000000n;

/** C's strtoll on a stored value: leading white space, a sign, digits; the rest is ignored. */
export function strtoll(v: Value): bigint {
  const s = typeof v === 'string' ? v : v.toString('latin1');
  const m = /^[ \t\n\v\f\r]*([+-]?)0*(\d+)/.exec(s);
  if (!m) throw new Violation('ADD on a value that is not a decimal integer');
  // More than 19 significant digits is out of range whatever they are; deciding that before
  // BigInt() keeps a value of millions of digits from stalling the event loop for seconds.
  if (m[2].length > 19) throw new Violation('ADD on a value out of int64 range');
  const n = BigInt(m[1] + m[2]);
  if (n > I64_MAX || n < I64_MIN) throw new Violation('ADD on a value out of int64 range');
  return n;
}

/** The bytes buf[a, b) as a stored value. */
export function valueOf(buf: Buffer, a: number, b: number): Value {
  if (b - a <= SMALL_VALUE_BYTES) return buf.toString('latin1', a, b);
  // A value filling most of its read buffer is kept as a view of it (the Inbox never writes
  // over parsed bytes, and each read is a fresh buffer): big values are not copied again.
  if (2 * (b - a) >= buf.length) return buf.subarray(a, b);
  const v = Buffer.allocUnsafeSlow(b - a);
  buf.copy(v, 0, a, b);
  return v;
}

function equals(v: Value, buf: Buffer, a: number, b: number): boolean {
  if (v.length !== b - a) return false;
  if (typeof v === 'string') return buf.toString('latin1', a, b) === v;
  return buf.subarray(a, b).equals(v);
}

export function bytesOf(v: Value): Buffer {
  return typeof v === 'string' ? Buffer.from(v, 'latin1') : v;
}

export class KeyTable<W extends Waiter> {
  private readonly kv = new Map<string, Value>();
  private readonly queues = new Map<string, Value[]>();
  private readonly waiters = new Map<string, W[]>();
  /** In-process observers of a key (waitForWorkers); called after every write to it. */
  private readonly watchers = new Map<string, Set<() => void>>();

  /**
   * @param wake called when a waiter's WAIT is satisfied (the server answers STOP_WAITING)
   * @param alwaysExists keys that CHECK and WAIT see as present without being stored
   */
  constructor(private readonly wake: (w: W) => void, private readonly alwaysExists: Set<string>) {}

  get size(): number {
    return this.kv.size;
  }

  get(key: string): Value | undefined {
    return this.kv.get(key);
  }

  /**
   * Removes and returns every stored key starting with `prefix`, in insertion order (a
   * subscription's backlog). A scan of all keys: subscriptions are made once per group.
   */
  takePrefix(prefix: string): [string, Value][] {
    const out: [string, Value][] = [];
    for (const [k, v] of this.kv) if (k.startsWith(prefix)) out.push([k, v]);
    for (const [k] of out) this.kv.delete(k);
    return out;
  }

  /** Stores and wakes the key's waiters and watchers. */
  set(key: string, v: Value): void {
    this.kv.set(key, v);
    const list = this.waiters.get(key);
    if (list) {
      this.waiters.delete(key);
      for (const w of list) {
        if (w.closed || w.waitCount === 0) continue;
        if (--w.waitCount === 0) {
          w.waitKeys = null;
          this.wake(w);
        }
      }
    }
    this.notify(key);
  }

  /** Does not touch waiters: a key counted as present for a WAIT stays counted. */
  delete(key: string): boolean {
    return this.kv.delete(key);
  }

  /** A key exists when it has a value or, as in torch's libuv server, a non-empty queue. */
  exists(key: string): boolean {
    if (this.kv.has(key) || this.alwaysExists.has(key)) return true;
    const q = this.queues.get(key);
    return q !== undefined && q.length > 0;
  }

  /** ADD: the value is decimal text; a missing key starts at 0. */
  add(key: string, delta: bigint): bigint {
    const old = this.kv.get(key);
    const n = (old === undefined ? 0n : strtoll(old)) + delta;
    if (n > I64_MAX || n < I64_MIN) throw new Violation('ADD overflows int64');
    this.set(key, n.toString());
    return n;
  }

  /**
   * torch's COMPARE_SET, with expected = buf[ea, eb) and desired = buf[da, db); returns the reply.
   * Waiters are woken only when something is stored (torch libuv wakes them in every case).
   */
  compareSet(key: string, buf: Buffer, ea: number, eb: number, da: number, db: number): Value {
    const cur = this.kv.get(key);
    if (cur === undefined ? ea === eb : equals(cur, buf, ea, eb)) {
      const v = valueOf(buf, da, db);
      this.set(key, v);
      return v;
    }
    // A missing key with a non-empty expected value stores nothing and echoes expected.
    return cur ?? valueOf(buf, ea, eb);
  }

  /** APPEND: creates the key when absent; never edits a stored value in place. */
  append(key: string, buf: Buffer, a: number, b: number, maxValueBytes: number): void {
    const old = this.kv.get(key);
    if (old === undefined) return this.set(key, valueOf(buf, a, b));
    const total = old.length + (b - a);
    if (total > maxValueBytes) throw new Violation(`APPEND grows a value past maxValueBytes ${maxValueBytes}`);
    if (total <= SMALL_VALUE_BYTES && typeof old === 'string') return this.set(key, old + buf.toString('latin1', a, b));
    // A new buffer: replies already queued may still hold `old`.
    const v = Buffer.allocUnsafeSlow(total);
    bytesOf(old).copy(v, 0);
    buf.copy(v, old.length, a, b);
    this.set(key, v);
  }

  /** A push satisfies one waiter (the oldest), not all of them. */
  queuePush(key: string, v: Value): void {
    let q = this.queues.get(key);
    if (!q) this.queues.set(key, (q = []));
    q.push(v);
    const list = this.waiters.get(key);
    if (!list) return;
    while (list.length) {
      const w = list.shift()!;
      if (w.closed || w.waitCount === 0) continue;
      if (--w.waitCount === 0) {
        w.waitKeys = null;
        this.wake(w);
      }
      break;
    }
    if (list.length === 0) this.waiters.delete(key);
  }

  /** The queue's length before the pop, and the oldest value when there was one. */
  queuePop(key: string): [number, Value | undefined] {
    const q = this.queues.get(key);
    if (!q || q.length === 0) return [0, undefined];
    const len = q.length;
    const v = q.shift()!;
    if (q.length === 0) this.queues.delete(key);
    return [len, v];
  }

  queueLen(key: string): number {
    return this.queues.get(key)?.length ?? 0;
  }

  /**
   * WAIT: true when every key exists now; otherwise registers `w` under each missing key (a
   * connection's previous WAIT is replaced) and `wake(w)` fires once all of them were written.
   */
  wait(w: W, keys: string[]): boolean {
    this.cancelWait(w);
    let missing = 0;
    for (const k of keys) {
      if (this.exists(k)) continue;
      missing++;
      let list = this.waiters.get(k);
      if (!list) this.waiters.set(k, (list = []));
      list.push(w);
    }
    if (missing === 0) return true;
    w.waitCount = missing;
    w.waitKeys = keys;
    return false;
  }

  /** CANCEL_WAIT, or a closed connection: forget `w`'s registrations. */
  cancelWait(w: W): void {
    if (!w.waitKeys) return;
    for (const k of w.waitKeys) {
      const list = this.waiters.get(k);
      if (!list) continue;
      const rest = list.filter((x) => x !== w);
      if (rest.length) this.waiters.set(k, rest);
      else this.waiters.delete(k);
    }
    w.waitKeys = null;
    w.waitCount = 0;
  }

  watch(key: string, fn: () => void): () => void {
    let s = this.watchers.get(key);
    if (!s) this.watchers.set(key, (s = new Set()));
    s.add(fn);
    return () => {
      s!.delete(fn);
      if (s!.size === 0 && this.watchers.get(key) === s) this.watchers.delete(key);
    };
  }

  /** Calls every watcher of `key` (or of every key): after a write, or when the server closes. */
  notify(key?: string): void {
    const sets = key === undefined ? [...this.watchers.values()] : [this.watchers.get(key)];
    for (const s of sets) if (s) for (const fn of [...s]) fn();
  }
}
