/**
 * The process group's options (create, destroy) and how long a receive spins before it sleeps
 * (spinUs). group.ts re-exports the types.
 */
import os from 'node:os';
import { invalidArgument } from '../base/errors.js';
import { setting } from '../base/config.js';
import type { CloseOptions } from '../base/lifecycle.js';
import { IS_BUN } from '../base/runtime.js';
import type { Store } from '../store/types.js';
import type { ReduceOp } from '../core/reduce.js';

export interface ProcessGroupOptions {
  /** Address of the store server (rank 0 listens there unless `store` is given). Default 127.0.0.1. */
  host?: string;
  /** Port of the store server; rank 0 may pass 0 only together with `store`. */
  port?: number;
  rank: number;
  worldSize: number;
  /** Deadline of create() and default of every op (default GROUPCOMM_TIMEOUT_MS or 300 s). */
  timeoutMs?: number;
  /** Use this store instead of hosting/connecting one; the group then never closes it. */
  store?: Store;
  /**
   * The job secret for the store this group hosts or connects to (default GROUPCOMM_SECRET).
   * Rank 0 refuses a non-loopback `host` without one unless `insecure` (docs/security.md).
   */
  secret?: string | Uint8Array;
  /** Allow a non-loopback `host` without a secret (logged as a warning). Default GROUPCOMM_INSECURE. */
  insecure?: boolean;
  /** Namespace of the group's keys; groups sharing one store need distinct names. Default 'pg'. */
  groupName?: string;
  /**
   * How long a receive whose message has not arrived keeps this process awake before it may
   * sleep (µs; the event loop keeps running). Default GROUPCOMM_PG_SPIN_US, else
   * DEFAULT_SPIN_US when worldSize is at most the number of CPUs here, else 0 (ranks competing
   * for CPUs would take it from each other). Always 0 by default under Bun (see spinUs()).
   */
  spinUs?: number;
  signal?: AbortSignal;
}

/** Options of destroy(), the older name of close(). */
export interface DestroyOptions extends CloseOptions {
  /**
   * Skip waiting for this rank's unfinished ops and the departure handshake (after a failure;
   * rank 0 then may close the server under the others' feet): abort() instead of close().
   */
  force?: boolean;
}

/** The reduce ops of the core (kept as an alias for readability at call sites). */
export type ReduceOpName = ReduceOp;

/** See ProcessGroupOptions.spinUs: measured on a 2-vCPU VM, 50–100 µs cut a 2-rank round trip by a third. */
const DEFAULT_SPIN_US = 100;

export function spinUs(worldSize: number, given: number | undefined): number {
  const v = given ?? setting('GROUPCOMM_PG_SPIN_US');
  if (v !== undefined) {
    if (!(Number.isFinite(v) && v >= 0)) throw invalidArgument(`spinUs must be a non-negative number of microseconds, got ${v}`);
    return v;
  }
  // Bun runs the immediates it has queued before it polls for I/O again, so a spin there holds
  // back the very message it waits for (measured: 2-rank round trip 154 µs with it, 97 without).
  if (IS_BUN) return 0;
  return worldSize <= os.availableParallelism() ? DEFAULT_SPIN_US : 0;
}
