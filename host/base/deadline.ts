/**
 * Timeouts and cancellation, written once. Every blocking call in groupcomm takes
 * `{ timeoutMs, signal }`:
 * - `effectiveTimeout` computes the timeout of one call (the call's, else the object's, else
 *   `defaultTimeoutMs()`, which is GROUPCOMM_TIMEOUT_MS or 300 s);
 * - `Deadline` carries one deadline across the several steps of one operation;
 * - `anySignal` combines signals (the caller's and an object's own, say);
 * - `guard` races a promise against the timeout and the signal and makes sure the timer and the
 *   abort listener are removed when the operation ends (no leaked listeners on long-lived
 *   signals); `settled` waits for promises within a deadline (graceful close).
 */
import { setting } from './config.js';
import { abortedError, GroupcommError, timeoutError, type GroupcommErrorFields } from './errors.js';

export interface OpOptions {
  /** Give up after this many milliseconds (default: the object's own timeoutMs). */
  timeoutMs?: number;
  /** Abort the operation; it then rejects with ERR_GROUPCOMM_ABORTED. */
  signal?: AbortSignal;
}

/**
 * One default for every layer (torch mixes 5 min and 30 min): GROUPCOMM_TIMEOUT_MS, else 300 s.
 * Read when needed; throws ERR_GROUPCOMM_CONFIG when the variable holds a bad value.
 */
export function defaultTimeoutMs(): number {
  return setting('GROUPCOMM_TIMEOUT_MS');
}

/** OpOptions with the timeout worked out (what a step of an operation is handed). */
export interface TimedOptions extends OpOptions {
  timeoutMs: number;
}

const positive = (t: number | undefined): t is number => t !== undefined && t > 0 && Number.isFinite(t);

/**
 * The timeout of one call: `opts.timeoutMs` when it is a positive number, else `fallbackMs`
 * (the object's timeout) when it is one, else `defaultTimeoutMs()`.
 */
export function effectiveTimeout(opts: OpOptions | undefined, fallbackMs?: number): number {
  const t = opts?.timeoutMs;
  if (positive(t)) return t;
  return positive(fallbackMs) ? fallbackMs : defaultTimeoutMs();
}

/**
 * One deadline spanning several calls: an operation that does a metadata broadcast and then
 * several tensor broadcasts must finish within the one `timeoutMs` the caller gave, so each step
 * gets what is left of it, not a fresh full timeout.
 */
export class Deadline {
  /** performance.now() at which it passes. */
  readonly at: number;

  constructor(readonly timeoutMs: number, readonly signal: AbortSignal | undefined, private readonly what: string) {
    this.at = performance.now() + timeoutMs;
  }

  /** The deadline of a call made with `opts` on an object whose own timeout is `fallbackMs`. */
  static of(opts: OpOptions | undefined, fallbackMs: number | undefined, what: string): Deadline {
    return new Deadline(effectiveTimeout(opts, fallbackMs), opts?.signal, what);
  }

  /** Whole milliseconds left (0 once passed). */
  remainingMs(): number {
    return Math.max(0, Math.floor(this.at - performance.now()));
  }

  /** Options for the next step; throws ERR_GROUPCOMM_TIMEOUT when nothing is left. */
  next(): TimedOptions {
    const left = this.remainingMs();
    if (left <= 0) throw timeoutError(`${this.what} timed out after ${this.timeoutMs}ms`, { timeoutMs: this.timeoutMs });
    return { timeoutMs: left, signal: this.signal };
  }
}

/** `AbortSignal.any` where the runtime has it; a small fallback otherwise. */
export function anySignal(signals: (AbortSignal | undefined)[]): AbortSignal | undefined {
  const list = signals.filter((s): s is AbortSignal => s !== undefined);
  if (list.length <= 1) return list[0];
  const any = (AbortSignal as unknown as { any?: (s: AbortSignal[]) => AbortSignal }).any;
  if (any) return any(list);
  const c = new AbortController();
  for (const s of list) {
    if (s.aborted) { c.abort(s.reason); break; }
    s.addEventListener('abort', () => c.abort(s.reason), { once: true });
  }
  return c.signal;
}

/**
 * Resolves true once every promise in `ps` has settled, or false when `timeoutMs` passes or
 * `signal` fires first (never rejects). What graceful close() uses to wait for operations in
 * flight before it gives up on them.
 */
export function settled(ps: Iterable<Promise<unknown>>, opts: { timeoutMs: number; signal?: AbortSignal }): Promise<boolean> {
  const all = [...ps];
  if (all.length === 0) return Promise.resolve(true);
  if (opts.signal?.aborted) return Promise.resolve(false);
  return new Promise<boolean>((resolve) => {
    const done = (v: boolean) => {
      clearTimeout(timer);
      opts.signal?.removeEventListener('abort', onAbort);
      resolve(v);
    };
    const onAbort = () => done(false);
    const timer = setTimeout(() => done(false), opts.timeoutMs);
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    void Promise.allSettled(all).then(() => done(true));
  });
}

export interface GuardSpec {
  timeoutMs: number;
  signal?: AbortSignal;
  /** Builds the timeout error; called only on timeout, so it can list who is still missing. */
  onTimeout: (elapsedMs: number) => GroupcommError;
  /** What was being done, for the abort message. */
  what: string;
  fields?: GroupcommErrorFields;
  /** Undo side effects when the caller gives up (cancel a wait, drop a waiter). */
  cancel?: (err: GroupcommError) => void;
}

/** Races `p` against the deadline and the signal; the loser's resources are released. */
export function guard<T>(p: Promise<T>, spec: GuardSpec): Promise<T> {
  const { signal } = spec;
  if (signal?.aborted) {
    const err = abortedError(`${spec.what} aborted`, { ...spec.fields, cause: signal.reason });
    spec.cancel?.(err);
    p.catch(() => {});
    return Promise.reject(err);
  }
  const t0 = performance.now();
  return new Promise<T>((resolve, reject) => {
    let done = false;
    const finish = () => {
      done = true;
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
    };
    const fail = (err: GroupcommError) => {
      if (done) return;
      finish();
      spec.cancel?.(err);
      reject(err);
    };
    const onAbort = () =>
      fail(abortedError(`${spec.what} aborted`, { ...spec.fields, cause: signal?.reason }));
    const timer = setTimeout(() => fail(spec.onTimeout(performance.now() - t0)), spec.timeoutMs);
    signal?.addEventListener('abort', onAbort, { once: true });
    p.then(
      (v) => { if (!done) { finish(); resolve(v); } },
      (e) => { if (!done) { finish(); reject(e); } },
    );
  });
}

/** A plain timeout error for `what`, naming the fields given. */
export function simpleTimeout(what: string, timeoutMs: number, fields: GroupcommErrorFields = {}) {
  return (elapsedMs: number) =>
    timeoutError(`${what} timed out after ${timeoutMs}ms`, { ...fields, timeoutMs, elapsedMs });
}

/** setTimeout as a promise that an AbortSignal can cut short. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(abortedError('sleep aborted', { cause: signal.reason }));
    const onAbort = () => {
      clearTimeout(t);
      reject(abortedError('sleep aborted', { cause: signal?.reason }));
    };
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** A deadline registered with an AlarmClock. */
export interface Alarm {
  /** performance.now() at which it fires. */
  readonly at: number;
  /** Removes it (it will not fire). Idempotent. */
  cancel(): void;
}

/**
 * Many deadlines on one timer, for hot paths where nearly every deadline is cancelled long
 * before it is due (a message that arrives in microseconds against a timeout of minutes): adding
 * and cancelling is a Set operation, where a timer each would cost a setTimeout and a
 * clearTimeout per operation. The timer is armed for the earliest deadline and, when it fires,
 * fires what is due and re-arms for the rest. While no deadline is registered the timer does not
 * keep the process alive.
 */
export class AlarmClock {
  readonly #alarms = new Set<{ at: number; fire: () => void }>();
  #timer: ReturnType<typeof setTimeout> | undefined;
  /** When the armed timer fires (Infinity: none armed). */
  #armedAt = Infinity;

  /** Calls `fire` once, `ms` from now, unless cancelled first. */
  add(ms: number, fire: () => void): Alarm {
    const a = { at: performance.now() + ms, fire };
    this.#alarms.add(a);
    if (a.at < this.#armedAt) this.#arm(a.at);
    else if (this.#alarms.size === 1) this.#timer?.ref?.();
    const alarms = this.#alarms;
    const clock = this;
    return {
      at: a.at,
      cancel() {
        if (alarms.delete(a) && alarms.size === 0) clock.#timer?.unref?.();
      },
    };
  }

  #arm(at: number): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#armedAt = at;
    this.#timer = setTimeout(() => this.#ring(), Math.max(0, at - performance.now()));
  }

  #ring(): void {
    this.#timer = undefined;
    this.#armedAt = Infinity;
    const now = performance.now();
    let next = Infinity;
    const due: (() => void)[] = [];
    for (const a of this.#alarms) {
      if (a.at <= now + 1) {
        this.#alarms.delete(a);
        due.push(a.fire);
      } else if (a.at < next) {
        next = a.at;
      }
    }
    if (next < Infinity) this.#arm(next);
    for (const fire of due) fire();
  }
}
