/**
 * OrderedOps, the part of a communicator that is the same for every backend: operations issued strictly in
 * call order (NCCL requires every rank to issue collectives in the same order, and callers do
 * not always await each one), per-call deadlines, and the ready → aborted / closed states.
 *
 * A timeout or an aborted signal while an operation is in flight aborts the whole communicator:
 * after a partial collective the peers' state is unknown (NCCL cannot resume either), so the
 * honest answer is a dead communicator that says why, not a hang on the next call.
 */
import { effectiveTimeout, type OpOptions } from '../base/deadline.js';
import { lifeController } from '../base/lifecycle.js';
import {
  abortedError, destroyedError, ErrorCode, isGroupcommError, timeoutError, type GroupcommError, type GroupcommErrorFields,
} from '../base/errors.js';

export type CommState = 'ready' | 'aborted' | 'closed';

/** Failures after which the peers' state is unknown: the communicator cannot go on. */
const FATAL = new Set<string>([ErrorCode.TIMEOUT, ErrorCode.ABORTED, ErrorCode.PEER_LOST, ErrorCode.PROTOCOL]);

export class OrderedOps {
  state: CommState = 'ready';
  /** Aborted when the communicator dies; every in-flight operation listens to it. */
  readonly lifetime = lifeController();
  private tail: Promise<unknown> = Promise.resolve();
  private abortReason = '';
  /** Calls in flight, told when the communicator dies (cheaper than a listener per call). */
  private readonly onDeath = new Set<(reason: unknown) => void>();

  constructor(
    private readonly label: string,
    private readonly rank: number,
    private readonly defaultTimeoutMs: number,
    /** Called once when the communicator dies (CUDA: ncclCommAbort). Must not throw. */
    private readonly onFatal: (reason: string) => Promise<void> | void,
  ) {}

  /** Rejects at once when the communicator can no longer run operations. */
  assertUsable(what: string): void {
    if (this.state === 'closed') throw destroyedError(`${what}: ${this.label} on rank ${this.rank} was closed`, { rank: this.rank });
    if (this.state === 'aborted') throw abortedError(`${what}: ${this.label} on rank ${this.rank} was aborted (${this.abortReason})`, { rank: this.rank });
  }

  /**
   * Runs `fn` after every earlier operation has settled, bounded by the call's timeout (which
   * also counts the wait in the queue). `fn` receives a signal that fires if the communicator
   * dies or the call is given up, and must stop waiting when it does.
   *
   * Per call this costs one timer and, only when the caller passes a signal, one AbortController
   * (creating one costs microseconds on Node, as much as a small NCCL operation): without a
   * caller signal `fn` gets the communicator's own lifetime signal, which a timeout of a started
   * call fires anyway (the communicator is aborted), and a queued call that timed out is never
   * started. The communicator's death reaches the call through `onDeath` callbacks, not listeners.
   */
  run<T>(what: string, opts: OpOptions | undefined, fn: (signal: AbortSignal) => Promise<T>, fields: GroupcommErrorFields = {}): Promise<T> {
    try { this.assertUsable(what); } catch (e) { return Promise.reject(e); }
    const timeoutMs = effectiveTimeout(opts, this.defaultTimeoutMs);
    const fullFields = { rank: this.rank, ...fields };
    const label = `${what} on rank ${this.rank}`;
    const caller = opts?.signal;
    // A call with its own signal gets its own controller: the caller's abort must end only it.
    const callCtl = caller ? new AbortController() : undefined;
    const bodySignal = callCtl ? callCtl.signal : this.lifetime.signal;
    let givenUp = false;
    let started = false;
    let settle: ((err: GroupcommError) => void) | undefined;
    const onDeath = (reason: unknown) => settle?.(abortedError(`${label} aborted`, { ...fullFields, cause: reason }));
    const body = this.tail.then(async () => {
      this.assertUsable(what);
      if (givenUp || callCtl?.signal.aborted) throw abortedError(`${what} given up before it started`, { rank: this.rank });
      started = true;
      try {
        return await fn(bodySignal);
      } catch (e) {
        // The body's own deadline (a store wait, a peer's socket) can fire before ours: the
        // communicator is just as dead, and must say so before the caller sees this error.
        // This call reports its own error, not the abort it causes: detach it first.
        if (isGroupcommError(e) && FATAL.has(e.code)) {
          this.onDeath.delete(onDeath);
          void this.abort(`${what} failed: ${e.message}`);
        }
        throw e;
      }
    });
    this.tail = body.catch(() => {});
    const cancel = (err: GroupcommError) => {
      givenUp = true;
      if (callCtl && !callCtl.signal.aborted) callCtl.abort(err);
      if (started) void this.abort(`${what} ${err.code === 'ERR_GROUPCOMM_TIMEOUT' ? 'timed out' : 'was aborted'}`);
    };
    if (caller?.aborted) {
      const err = abortedError(`${label} aborted`, { ...fullFields, cause: caller.reason });
      cancel(err);
      body.catch(() => {});
      return Promise.reject(err);
    }
    const t0 = performance.now();
    return new Promise<T>((resolve, reject) => {
      let done = false;
      const finish = () => {
        done = true;
        clearTimeout(timer);
        this.onDeath.delete(onDeath);
        caller?.removeEventListener('abort', onCaller);
      };
      settle = (err) => {
        if (done) return;
        finish();
        cancel(err);
        reject(err);
      };
      const onCaller = () => settle!(abortedError(`${label} aborted`, { ...fullFields, cause: caller?.reason }));
      const timer = setTimeout(() => settle!(timeoutError(
        `${what} timed out after ${timeoutMs}ms on rank ${this.rank} (${this.label}); the communicator is aborted. ` +
        'Set timeoutMs, or run with GROUPCOMM_DEBUG=info', { ...fullFields, timeoutMs, elapsedMs: performance.now() - t0 })), timeoutMs);
      this.onDeath.add(onDeath);
      caller?.addEventListener('abort', onCaller, { once: true });
      body.then((v) => { if (!done) { finish(); resolve(v); } }, (e) => { if (!done) { finish(); reject(e); } });
    });
  }

  /** Kills the communicator (idempotent); in-flight and queued operations reject with ABORTED. */
  async abort(reason: string): Promise<void> {
    if (this.state !== 'ready') return;
    this.state = 'aborted';
    this.abortReason = reason;
    this.lifetime.abort(abortedError(`${this.label} on rank ${this.rank} aborted: ${reason}`, { rank: this.rank }));
    this.notifyDeath();
    await this.onFatal(reason);
  }

  /** Marks the communicator closed; returns false when it already was (close is idempotent). */
  markClosed(): boolean {
    if (this.state === 'closed') return false;
    const wasReady = this.state === 'ready';
    this.state = 'closed';
    if (wasReady) {
      this.lifetime.abort(destroyedError(`${this.label} on rank ${this.rank} closed`, { rank: this.rank }));
      this.notifyDeath();
    }
    return true;
  }

  private notifyDeath(): void {
    const calls = [...this.onDeath];
    this.onDeath.clear();
    for (const c of calls) c(this.lifetime.signal.reason);
  }

  /** Waits for every operation issued so far to settle (used by close and synchronize). */
  drain(): Promise<void> {
    return this.tail.then(() => {});
  }
}
