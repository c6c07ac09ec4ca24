/**
 * Timeouts and cancellation, written once. Every blocking call in groupcomm takes
 * `{ timeoutMs, signal }` and funnels through `guard`, which makes sure the timer and the abort
 * listener are removed when the operation ends (no leaked listeners on long-lived signals).
 */
import { abortedError, GroupcommError, timeoutError, type GroupcommErrorFields } from './errors.js';

export interface OpOptions {
  /** Give up after this many milliseconds (default: the object's own timeoutMs). */
  timeoutMs?: number;
  /** Abort the operation; it then rejects with ERR_GROUPCOMM_ABORTED. */
  signal?: AbortSignal;
}

function envTimeout(): number {
  const v = Number(process.env.GROUPCOMM_TIMEOUT_MS);
  return Number.isFinite(v) && v > 0 ? v : 300_000;
}

/** One default for every layer (torch mixes 5 min and 30 min); override per object or per call. */
export const DEFAULT_TIMEOUT_MS = envTimeout();

export function effectiveTimeout(opts: OpOptions | undefined, fallback: number): number {
  const t = opts?.timeoutMs ?? fallback;
  return t > 0 && Number.isFinite(t) ? t : fallback;
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
