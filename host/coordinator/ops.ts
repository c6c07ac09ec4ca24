/**
 * Per-operation plumbing shared by the coordinator's methods: one deadline for a whole
 * multi-step operation, the group's abort signal merged with the caller's, and range checks.
 */
import { DEFAULT_TIMEOUT_MS, type OpOptions } from '../base/deadline.js';
import { invalidArgument, timeoutError } from '../base/errors.js';

/**
 * A deadline spanning several calls: an operation that does a metadata broadcast and then
 * several tensor broadcasts must finish within the one `timeoutMs` the caller gave, so each step
 * gets what is left of it, not a fresh full timeout.
 */
export class Budget {
  private readonly end: number;
  constructor(readonly timeoutMs: number, readonly signal: AbortSignal | undefined, private what: string) {
    this.end = performance.now() + timeoutMs;
  }
  /** Options for the next step; throws a timeout when nothing is left. */
  next(): OpOptions {
    const left = Math.floor(this.end - performance.now());
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

export function defaultTimeout(t: number | undefined): number {
  return t !== undefined && t > 0 && Number.isFinite(t) ? t : DEFAULT_TIMEOUT_MS;
}

/** Throws unless `r` is a rank of a group of `ws` ranks. */
export function checkRank(r: number, ws: number, what: string, role: string): void {
  if (!Number.isInteger(r) || r < 0 || r >= ws) {
    throw invalidArgument(`${what}: ${role} ${r} is not a rank of this group (expected an integer in [0, ${ws}))`, { peerRank: r });
  }
}
