/**
 * The process group's bookkeeping of work in flight: every operation is tracked (close() waits
 * for it) and can be rejected at once by abort(); fire-and-forget cleanups (deletes, broadcast
 * acks) are queued to ride along with the group's next write.
 */
import { logger } from '../base/log.js';

const log = logger('PG');

/** How long queued cleanups wait for a write to ride along with (see later()). */
const CLEANUP_DELAY_MS = 2;

export class OpTracker {
  /** Operations and cleanups in flight; close() waits until none is left. */
  readonly pending = new Set<Promise<unknown>>();
  /** Rejects of the operations in flight, for abort() to reject them at once. */
  readonly #rejects = new Set<(e: unknown) => void>();
  #cleanups: [string, () => Promise<unknown>][] = [];
  #cleanupTimer: { timer: ReturnType<typeof setTimeout>; resolve: () => void } | undefined;

  /** Runs an op: turns sync throws into rejections, tracks it, and lets abortAll() reject it at once. */
  run<T>(fn: () => Promise<T> | T): Promise<T> {
    let p: Promise<T>;
    try {
      p = Promise.resolve(fn());
    } catch (e) {
      return Promise.reject(e);
    }
    this.track(p);
    return new Promise<T>((resolve, reject) => {
      this.#rejects.add(reject);
      p.then(
        (v) => { this.#rejects.delete(reject); resolve(v); },
        (e) => { this.#rejects.delete(reject); reject(e); },
      );
    });
  }

  track(p: Promise<unknown>): void {
    this.pending.add(p);
    const done = () => this.pending.delete(p);
    p.then(done, done);
  }

  /**
   * Fire-and-forget cleanup (deletes, broadcast acks), still awaited by destroy(). Queued, not
   * sent at once: the next write this group issues (a send, a broadcast, a collective's part)
   * takes the queue along in the same write, and a short timer sends whatever is still queued
   * when no write comes. Reads do not take it: right after a collective or a receive, this
   * rank's next request is usually a read that someone is about to answer, and a cleanup sent
   * then is one more request for the store to handle (and, for a store hosted by a rank, one
   * more wake-up of that rank) exactly when the answer is due.
   */
  later(what: string, fn: () => Promise<unknown>): void {
    this.#cleanups.push([what, fn]);
    if (this.#cleanupTimer) return;
    this.track(new Promise<void>((resolve) => {
      this.#cleanupTimer = { timer: setTimeout(() => this.drain(), CLEANUP_DELAY_MS), resolve };
    }));
  }

  /** Sends the queued cleanups now (called right after an op issued its own write). */
  drain(): void {
    const t = this.#cleanupTimer;
    if (t) {
      this.#cleanupTimer = undefined;
      clearTimeout(t.timer);
      t.resolve();
    }
    if (!this.#cleanups.length) return;
    const batch = this.#cleanups;
    this.#cleanups = [];
    for (const [w, f] of batch) {
      let q: Promise<unknown>;
      try {
        q = f();
      } catch (e) {
        q = Promise.reject(e);
      }
      this.track(q.catch((e) => log.debug(`${w} failed: ${(e as Error).message}`)));
    }
  }

  /** abort(): rejects every operation in flight with `err` and drops the queued cleanups. */
  abortAll(err: unknown): void {
    for (const reject of this.#rejects) reject(err);
    this.#rejects.clear();
    this.#cleanups = [];
    if (this.#cleanupTimer) {
      clearTimeout(this.#cleanupTimer.timer);
      this.#cleanupTimer.resolve();
      this.#cleanupTimer = undefined;
    }
  }
}
