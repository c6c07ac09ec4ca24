/**
 * The order a coordinator's operations run in: one after the other in call order (even when the
 * caller does not await each one), each under one deadline and the group's failure state
 * (faults.ts). abort() — or the group's failure, through the same lifetime signal — ends the one
 * in flight at once, whatever channel it waits on.
 */
import { anySignal, Deadline, effectiveTimeout, type OpOptions } from '../base/deadline.js';
import { abortedError, isGroupcommError } from '../base/errors.js';
import { lifeController, reasonSuffix } from '../base/lifecycle.js';
import { traceOp, type Logger } from '../base/log.js';
import { isTensor, nbytes } from '../core/tensor.js';
import { explainError } from './create.js';
import type { GroupFaults } from './faults.js';

/** Point-to-point operations: not numbered as collectives (the members need not all call them). */
const P2P = /^(send|recv)/;

const traceBytes = (v: unknown): number | undefined => (isTensor(v) ? nbytes(v) : undefined);

/**
 * What an operation runs once every earlier one has settled, under its deadline; `n`: its
 * collective number (-1 for point to point). The caller's arguments are checked before it is
 * made, so a refused call is never queued and never numbered.
 */
export type Run<T> = (b: Deadline, n: number) => Promise<T>;

export interface QueueOptions {
  /** The group's name in errors (`${groupName}_${index}`). */
  label: string;
  /** This process's global rank and the group's global ranks (errors name peers by both). */
  rank: number;
  ranks: readonly number[];
  /** The default of an operation's timeoutMs. */
  timeoutMs: number;
  /** Set when GROUPCOMM_DEBUG=trace: each operation logs one line (base/log.ts traceOp). */
  tracer?: Logger;
}

export class OpQueue {
  /** Fires on abort() and on the group's failure (faults.ts is given it). */
  readonly life = lifeController();
  #tail: Promise<unknown> = Promise.resolve();
  #aborted = false;
  #faults: GroupFaults | undefined;

  constructor(private readonly o: QueueOptions) {}

  /** The group's failure state (made with this queue's `life`, so it comes after the queue). */
  set faults(f: GroupFaults) { this.#faults = f; }

  /** abort() was called, or close() gave up waiting for the operations in flight. */
  get aborted(): boolean { return this.#aborted; }

  /** Settles once every operation queued so far has settled (never rejects). */
  get idle(): Promise<unknown> { return this.#tail; }

  /** Rejects the operation in flight and every queued one with ABORTED (`cause`: reason). */
  abort(reason: unknown): void {
    this.#aborted = true;
    this.life.abort(abortedError(`group ${this.o.label} was aborted${reasonSuffix(reason)}`, { cause: reason }));
  }

  /** Adds the group's name and the global rank of a named peer to a lower layer's error. */
  explain(e: unknown, what: string): unknown {
    return explainError(e, what, this.o.label, this.o.rank, this.o.ranks);
  }

  /**
   * Runs `fn` after every earlier operation. `published`: what the operation can still return
   * once the group has failed, without any channel (a broadcast the message queue's writer
   * published before it died); undefined when nothing.
   */
  run<T>(what: string, opts: OpOptions | undefined, fn: Run<T>,
    published?: () => { value: T } | undefined): Promise<T> {
    const timeoutMs = effectiveTimeout(opts, this.o.timeoutMs);
    const faults = this.#faults!;
    // Collectives are numbered in call order (every member calls them in the same order), so a
    // timeout can ask the others whether they reached this one; point to point is not counted.
    const n = P2P.test(what) ? -1 : faults.calls++;
    if (n >= 0) faults.record(n, what);
    const run = async () => {
      // Queued before close(), so it runs, unless the group was aborted meanwhile.
      if (this.#aborted) throw this.explain(this.life.signal.reason, what);
      if (faults.failure) {
        const got = published?.();
        if (got) return got.value;
        throw this.explain(faults.failure, what);
      }
      const signal = anySignal([opts?.signal, this.life.signal]);
      faults.busy++;
      try {
        return await fn(new Deadline(timeoutMs, signal, `${this.o.label}.${what}`), n);
      } catch (e) {
        // A channel that the abort closed under the operation fails it with its own ABORTED,
        // which does not say why (close() gave up waiting, or abort()'s reason): the queue's does.
        if (this.#aborted) throw this.explain(isGroupcommError(e, 'ERR_GROUPCOMM_ABORTED') ? this.life.signal.reason : e, what);
        const judged = await faults.judge(e, n, what, timeoutMs);
        const got = faults.failure ? published?.() : undefined;
        if (got) return got.value;
        throw this.explain(judged, what);
      } finally {
        faults.busy--;
      }
    };
    const p = this.#tail.then(run, run);
    this.#tail = p.catch(() => {});
    // bytes: the result tensor's size (tensor ops); peers: the other members' global ranks.
    const { tracer, rank, ranks } = this.o;
    return tracer ? traceOp(tracer, what, traceBytes, ranks.filter((r) => r !== rank), p) : p;
  }
}
