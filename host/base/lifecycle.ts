/**
 * The lifecycle words every long-lived object of groupcomm uses (the store client and server,
 * PrefixStore, the process group, the CPU group, the coordinator):
 *
 * - `close(opts?)`: graceful. New operations are refused at once (ERR_GROUPCOMM_DESTROYED); the
 *   ones in flight may finish, within `opts.timeoutMs` (default: the object's timeout) and until
 *   `opts.signal` fires; whatever is still running then is aborted as by `abort()`. Then the
 *   object's departure protocol runs (the process group's goodbye handshake, the CPU mesh's
 *   goodbye frames) and its resources are released. Never rejects because a peer is gone.
 * - `abort(reason?)`: immediate and local. Operations in flight reject with
 *   ERR_GROUPCOMM_ABORTED (`cause`: the reason) before abort() returns; no departure protocol;
 *   resources are released (the returned promise says when; it never rejects).
 * - Both are idempotent, and each returns the promise of the first close or abort. Operations
 *   called afterwards reject with ERR_GROUPCOMM_DESTROYED.
 * - `[Symbol.asyncDispose]()` is close(), so `await using g = await X.create(…)` works.
 *
 * Device communicators (host/device/types.ts) use the same three words, but both close and
 * abort are local there (no departure protocol), and abort's reason is a string.
 */
import { setMaxListeners } from 'node:events';
import type { OpOptions } from './deadline.js';

/** Options of close(): how long the graceful part may take, and a signal that cuts it short. */
export type CloseOptions = OpOptions;

/**
 * `Symbol.asyncDispose`, or its registered stand-in on a runtime that lacks it (Node before 20.4):
 * there the method keeps a stable name instead of being keyed "undefined"; `await using` itself
 * needs the real symbol anyway.
 */
export const asyncDispose: typeof Symbol.asyncDispose =
  (Symbol as { asyncDispose?: symbol }).asyncDispose as typeof Symbol.asyncDispose ??
  Symbol.for('Symbol.asyncDispose') as typeof Symbol.asyncDispose;

/** What close() and abort() on an object look like (for code that closes many kinds). */
export interface Closable {
  close(opts?: CloseOptions): Promise<void>;
  abort(reason?: unknown): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

/** The `: reason` suffix an abort's message carries (nothing when no reason was given). */
export function reasonSuffix(reason: unknown): string {
  return reason === undefined ? '' : `: ${reason instanceof Error ? reason.message : String(reason)}`;
}

/**
 * The AbortController of a long-lived object's own lifetime. Its signal is attached to every
 * operation in flight on the object (each removes its listener when it settles), so sixteen ranks
 * of one process waiting on one PrefixStore are normal concurrency, not a leak: Node's
 * "11 abort listeners" warning is turned off for this signal only (a caller's own signal keeps it).
 */
export function lifeController(): AbortController {
  const c = new AbortController();
  setMaxListeners(0, c.signal);
  return c;
}
