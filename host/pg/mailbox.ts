/**
 * Where a rank's incoming messages wait for it. Every message of a group is a store key
 * `{ns}to/{dst}/{tag}` written by its sender (see group.ts for the tags); a Mailbox reads the ones
 * addressed to this rank, each exactly once, and leaves nothing behind in the store.
 *
 * Two ways to read, same keys and same results:
 *   PushMailbox  the store pushes every key under `{ns}to/{rank}/` to this rank the moment it is
 *                written (Store.subscribe; a groupcomm server): no request per message, one
 *                store hop from writer to reader, nothing stored. Messages that arrive before
 *                their receive is called wait here, in this process.
 *   PollMailbox  a consuming read per message (Store.take, else get + delete), for stores that
 *                cannot push (a torch TCPStore). Reads of one lane (one source, or the
 *                collectives) queue behind each other: while message k is missing so is k+1, and
 *                one parked wait per lane is enough.
 */
import { abortedError, type GroupcommError } from '../base/errors.js';
import { AlarmClock, anySignal, guard, simpleTimeout, type Alarm, type TimedOptions } from '../base/deadline.js';
import type { Store, Subscription } from '../store/types.js';
import { lifeController } from '../base/lifecycle.js';

/** A take still waiting `leadMs` before its deadline calls `fn` (once). */
export interface Early {
  leadMs: number;
  fn: () => void;
}

export interface Mailbox {
  /**
   * Resolves with the messages `tags` (in that order) once all arrived, consuming them. `lane`
   * names the stream they belong to (messages of one lane are taken in order). Rejects with
   * ERR_GROUPCOMM_TIMEOUT whose `keys` are the tags still missing, or ERR_GROUPCOMM_ABORTED
   * (the signal fired) whose `keys` are the tags it had not got.
   */
  take(tags: string[], lane: string, o: TimedOptions, what: string, early?: Early): Promise<Uint8Array[]>;
  /** Stops receiving; pending takes fail with `reason`. */
  close(reason: GroupcommError): void;
}

/**
 * Builds the mailbox of `rank`: push when the store can, poll otherwise. `discard` deletes keys
 * a poll read consumed (the group's cleanup path, which destroy() waits for).
 */
export async function openMailbox(
  store: Store, inbox: string, o: TimedOptions, discard: (keys: string[]) => void, spinUs = 0,
): Promise<Mailbox> {
  if (store.subscribe) {
    const box = new PushMailbox(spinUs);
    const sub = await store.subscribe(inbox, (key, value) => box.deliver(key.slice(inbox.length), value), o);
    if (sub) {
      box.attach(sub);
      return box;
    }
  }
  return new PollMailbox(store, inbox, discard);
}

interface Waiter {
  tags: string[];
  got: (Uint8Array | undefined)[];
  left: number;
  /** Resolved, rejected or given up. */
  done: boolean;
  resolve(v: Uint8Array[]): void;
  reject(e: unknown): void;
  alarm?: Alarm;
  warn?: Alarm;
  signal?: AbortSignal;
  onAbort?: () => void;
}

/** The tags of `w` that have not arrived. */
function missingOf(w: Waiter): string[] {
  return w.tags.filter((_, i) => w.got[i] === undefined);
}

export class PushMailbox implements Mailbox {
  /** Tags under this prefix go to `onIntercept` instead of the box (collective.ts: queries to the hub). */
  interceptPrefix?: string;
  onIntercept?: (tag: string, value: Uint8Array) => void;
  /** Arrived, not yet taken. */
  readonly #box = new Map<string, Uint8Array>();
  /** Tag → the take waiting for it. */
  readonly #waiting = new Map<string, Waiter>();
  /** Tags whose take gave up: dropped on arrival instead of kept forever. */
  readonly #abandoned = new Set<string>();
  readonly #clock = new AlarmClock();
  #sub?: Subscription;
  #failure?: GroupcommError | Error;

  /**
   * @param spinUs after a take finds its message missing, keep the event loop turning (without
   *   blocking it: setImmediate, which polls for I/O without sleeping) for this long before it
   *   may sleep. A message that arrives meanwhile is read by a process that is awake; waking a
   *   sleeping one costs tens of µs on virtual machines (an inter-processor interrupt). 0: off.
   */
  constructor(readonly spinUs = 0) {}

  attach(sub: Subscription): void {
    this.#sub = sub;
    sub.onClose((e) => {
      if (e) this.#fail(e);
    });
  }

  /** Called by the subscription for every key pushed to this rank. */
  deliver(tag: string, value: Uint8Array): void {
    if (this.interceptPrefix !== undefined && tag.startsWith(this.interceptPrefix)) {
      this.onIntercept?.(tag, value);
      return;
    }
    if (this.#abandoned.delete(tag)) return;
    const w = this.#waiting.get(tag);
    if (!w) {
      this.#box.set(tag, value);
      return;
    }
    this.#waiting.delete(tag);
    w.got[w.tags.indexOf(tag)] = value;
    if (--w.left === 0 && this.#settle(w)) w.resolve(w.got as Uint8Array[]);
  }

  take(tags: string[], _lane: string, o: TimedOptions, what: string, early?: Early): Promise<Uint8Array[]> {
    if (this.#failure) return Promise.reject(this.#failure);
    if (o.signal?.aborted) {
      // Given up before it began: its messages are dropped, now or when they arrive.
      for (const t of tags) if (!this.#box.delete(t)) this.#abandoned.add(t);
      return Promise.reject(abortedError(`${what} aborted`, { keys: tags, cause: o.signal.reason }));
    }
    const got: (Uint8Array | undefined)[] = new Array(tags.length);
    let left = tags.length;
    for (let i = 0; i < tags.length; i++) {
      const v = this.#box.get(tags[i]);
      if (v !== undefined) {
        this.#box.delete(tags[i]);
        got[i] = v;
        left--;
      }
    }
    if (left === 0) return Promise.resolve(got as Uint8Array[]);
    let w!: Waiter;
    const p = new Promise<Uint8Array[]>((resolve, reject) => {
      w = { tags, got, left, done: false, resolve, reject };
    });
    for (let i = 0; i < tags.length; i++) if (got[i] === undefined) this.#waiting.set(tags[i], w);
    // The deadline (and the early call) share this mailbox's one timer: see AlarmClock.
    const t0 = performance.now();
    w.alarm = this.#clock.add(o.timeoutMs, () => this.#giveUp(w, simpleTimeout(what, o.timeoutMs, { keys: missingOf(w) })(performance.now() - t0)));
    if (early) w.warn = this.#clock.add(Math.max(0, o.timeoutMs - early.leadMs), early.fn);
    const signal = o.signal;
    if (signal) {
      w.onAbort = () => this.#giveUp(w, abortedError(`${what} aborted`, { keys: missingOf(w), cause: signal.reason }));
      w.signal = signal;
      signal.addEventListener('abort', w.onAbort, { once: true });
    }
    if (this.spinUs > 0) spin(p, this.spinUs);
    return p;
  }

  /** Marks `w` finished and drops its deadline; false when it already was. */
  #settle(w: Waiter): boolean {
    if (w.done) return false;
    w.done = true;
    w.alarm?.cancel();
    w.warn?.cancel();
    if (w.onAbort) w.signal!.removeEventListener('abort', w.onAbort);
    return true;
  }

  /** The caller stopped waiting (deadline, abort). */
  #giveUp(w: Waiter, e: GroupcommError): void {
    if (!this.#settle(w)) return;
    // Whatever arrives later for a take that gave up is dropped, so the next op on the same lane
    // (which has the next tag) never sees it.
    for (const t of missingOf(w)) {
      if (this.#waiting.get(t) === w) this.#waiting.delete(t);
      this.#abandoned.add(t);
    }
    w.reject(e);
  }

  /** Which of `tags` have arrived and are not taken yet (held in the box or by a waiting take). */
  arrived(tags: string[]): boolean[] {
    return tags.map((t) => {
      if (this.#box.has(t)) return true;
      const w = this.#waiting.get(t);
      if (w) return false;
      // Part of a take still waiting for others: it holds what already came.
      for (const x of this.#waiting.values()) {
        const i = x.tags.indexOf(t);
        if (i >= 0) return x.got[i] !== undefined;
      }
      return false;
    });
  }

  close(reason: GroupcommError): void {
    this.#fail(reason);
    this.#sub?.close();
  }

  #fail(e: GroupcommError | Error): void {
    if (this.#failure) return;
    this.#failure = e;
    const ws = new Set(this.#waiting.values());
    this.#waiting.clear();
    for (const w of ws) if (this.#settle(w)) w.reject(e);
  }
}

/** Turns the event loop until `p` settles or `us` passed (see PushMailbox's spinUs). */
function spin(p: Promise<unknown>, us: number): void {
  const until = performance.now() + us / 1000;
  let settled = false;
  const stop = () => { settled = true; };
  p.then(stop, stop);
  const tick = () => {
    if (!settled && performance.now() < until) setImmediate(tick);
  };
  setImmediate(tick);
}

export class PollMailbox implements Mailbox {
  readonly #lanes = new Map<string, Promise<unknown>>();
  #failure?: GroupcommError;
  /** Aborted by close(): the store reads in flight give up too (the store may outlive the group). */
  readonly #stop = lifeController();

  constructor(private readonly store: Store, private readonly inbox: string, private readonly discard: (keys: string[]) => void) {}

  take(tags: string[], lane: string, o: TimedOptions, what: string): Promise<Uint8Array[]> {
    if (this.#failure) return Promise.reject(this.#failure);
    const keys = tags.map((t) => this.inbox + t);
    const deadline = performance.now() + o.timeoutMs;
    let gaveUp = false;
    // Runs once the previous take of this lane settled, under this take's own deadline: a take
    // queued behind a slow one still times out on time, and one that gave up before its turn
    // never sends its request.
    const go = () => {
      if (gaveUp) return Promise.reject(abortedError(`${what}: gave up before its turn`));
      const lo = { timeoutMs: Math.max(1, deadline - performance.now()), signal: anySignal([o.signal, this.#stop.signal]) };
      if (keys.length === 1) {
        if (this.store.take) return this.store.take(keys[0], lo).then((v) => [v]);
        return this.store.get(keys[0], lo).then((v) => this.#consumed(keys, [v]));
      }
      return this.store.multiGet(keys, lo).then((vs) => this.#consumed(keys, vs));
    };
    const prev = this.#lanes.get(lane) ?? Promise.resolve();
    const inner = prev.then(go, go);
    const settled = inner.catch(() => {});
    this.#lanes.set(lane, settled);
    settled.then(() => { if (this.#lanes.get(lane) === settled) this.#lanes.delete(lane); });
    return guard(inner, {
      timeoutMs: o.timeoutMs,
      signal: o.signal,
      what,
      // An abort names every tag, as PushMailbox's names the ones it still lacked: a poll take
      // holds none until its read returns them all.
      fields: { keys: tags },
      onTimeout: simpleTimeout(what, o.timeoutMs), // keys: set below
      cancel: () => { gaveUp = true; },
    }).catch(async (e) => {
      if ((e as GroupcommError).code !== 'ERR_GROUPCOMM_TIMEOUT') throw e;
      // Name the tags still missing (what a timeout error's `keys` promise), whichever timer
      // fired: guard's names the tags, the store read's own (due at the same moment) its key.
      let missing = tags;
      if (tags.length > 1) {
        const present = await Promise.all(keys.map((k) => this.store.check([k], { timeoutMs: 2000 }).catch(() => false)));
        missing = tags.filter((_, i) => !present[i]);
        if (missing.length === 0) missing = tags;
      }
      (e as { keys?: string[] }).keys = missing;
      throw e;
    });
  }

  /** Deletes what a plain get read (nobody waits for that). */
  #consumed(keys: string[], values: Uint8Array[]): Uint8Array[] {
    this.discard(keys);
    return values;
  }

  close(reason: GroupcommError): void {
    this.#failure ??= reason;
    this.#stop.abort(reason);
  }
}
