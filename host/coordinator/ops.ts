/**
 * Argument checks shared by the coordinator's methods. (Its per-operation deadline and signal
 * plumbing is base/deadline.ts's Deadline and anySignal.)
 */
import { invalidArgument } from '../base/errors.js';

/** Throws unless `r` is a rank of a group of `ws` ranks. */
export function checkRank(r: number, ws: number, what: string, role: string): void {
  if (!Number.isInteger(r) || r < 0 || r >= ws) {
    throw invalidArgument(`${what}: ${role} ${r} is not a rank of this group (expected an integer in [0, ${ws}))`, { peerRank: r });
  }
}
