/**
 * Every member of a group must describe it the same way (`groupRanks`): a rank that passed
 * other ranks for the group of the same name would otherwise meet the others halfway — a mesh
 * handshake refused for "world size differs" on one rank, a reset connection or a timeout on
 * the other. Instead each one gets ERR_GROUPCOMM_MISMATCH naming both views (docs/coordinator.md,
 * "Failures"), checked through the group's own store beside the join, at no cost per operation:
 *
 * - group rank 0 writes its view of the group into its store (in process) before anyone can
 *   reach it (before the port record is published);
 * - every other member reads it (one store round trip, before it joins) and compares it with
 *   its own; on a difference it leaves its own view under the group's mismatch key and fails
 *   without joining;
 * - group rank 0 and the members whose view matched wait on that key while they create the
 *   group, and fail with the same MISMATCH as soon as it appears — unless the reporter is no
 *   member in their view (it failed alone, and they can still form the group they agree on).
 */
import { isGroupcommError, mismatchError, type GroupcommError } from '../base/errors.js';
import type { OpOptions } from '../base/deadline.js';
import type { GroupLayout } from '../core/layout.js';
import type { Store } from '../store/types.js';

/** How one rank sees its group. */
interface View { ranks: number[]; globalRank: number; groupRank: number }

const enc = new TextEncoder();
const dec = new TextDecoder();
const hostKey = (wire: string) => `groupcomm/members/${wire}/host`;
const mismatchKey = (wire: string) => `groupcomm/members/${wire}/mismatch`;

const viewOf = (l: GroupLayout): View => ({ ranks: l.ranks, globalRank: l.ranks[l.rankInGroup], groupRank: l.rankInGroup });
const list = (r: readonly number[]) => `[${r.join(', ')}]`;

function parse(b: Uint8Array, line = 0): View | undefined {
  try {
    // The mismatch key is appended to: one JSON line per member that found a difference.
    const v = JSON.parse(dec.decode(b).split('\n')[line]) as View;
    return Array.isArray(v?.ranks) && v.ranks.every(Number.isInteger) && Number.isInteger(v.globalRank) && Number.isInteger(v.groupRank) ? v : undefined;
  } catch {
    return undefined;
  }
}

/** Which fields differ between two views, in words ("groupRanks", "world size"). */
function differ(a: View, b: View): string {
  return a.ranks.length !== b.ranks.length ? 'groupRanks and world size differ' : 'groupRanks differ';
}

/** Group rank 0: its view, written before the group's store is announced. */
export function publishView(store: Store, layout: GroupLayout, wire: string, opts: OpOptions): Promise<void> {
  return store.set(hostKey(wire), JSON.stringify(viewOf(layout)), opts);
}

/**
 * A member: reads group rank 0's view and compares it with its own. On a difference it tells
 * group rank 0 (its view under the mismatch key) and rejects with MISMATCH; else resolves.
 */
export async function checkView(store: Store, layout: GroupLayout, wire: string, opts: OpOptions): Promise<void> {
  const mine = viewOf(layout);
  const host = parse(await store.get(hostKey(wire), opts));
  if (!host || (host.ranks.length === mine.ranks.length && host.ranks.every((r, i) => r === mine.ranks[i]))) return;
  await store.append(mismatchKey(wire), enc.encode(`${JSON.stringify(mine)}\n`), { timeoutMs: opts.timeoutMs }).catch(() => {});
  throw mismatchError(`group '${wire}': ${differ(host, mine)}: group rank 0 (global rank ${host.globalRank}) has groupRanks ` +
    `${list(host.ranks)} (world size ${host.ranks.length}); here (group rank ${mine.groupRank}, global rank ${mine.globalRank}): ` +
    `${list(mine.ranks)} (world size ${mine.ranks.length}). Every member must pass the same groupRanks`, { rank: mine.groupRank, peerRank: 0, peerRanks: [0] });
}

/** The MISMATCH a member reported (its view under the mismatch key), seen from this rank. */
function reported(layout: GroupLayout, wire: string, b: Uint8Array): GroupcommError | undefined {
  const theirs = parse(b);
  if (!theirs) return undefined;
  const mine = viewOf(layout);
  const at = mine.ranks.indexOf(theirs.globalRank);
  const where = at < 0 ? 'not a member here' : `group rank ${at} here`;
  return mismatchError(`group '${wire}': ${differ(mine, theirs)}: global rank ${theirs.globalRank} (${where}, group rank ${theirs.groupRank} ` +
    `in its view) has groupRanks ${list(theirs.ranks)} (world size ${theirs.ranks.length}); here (group rank ${mine.groupRank}, global rank ` +
    `${mine.globalRank}): ${list(mine.ranks)} (world size ${mine.ranks.length}). Every member must pass the same groupRanks`,
  { rank: mine.groupRank, peerRank: at < 0 ? undefined : at, peerRanks: at < 0 ? [] : [at] });
}

/**
 * While the group is being created (rank 0, and every member whose view matched rank 0's):
 * rejects with MISMATCH once a member reports a difference; never resolves otherwise (abort
 * `opts.signal` when create is over). Rank 0 waits in process; a member's wait is one pending
 * request on a wait connection that the store client reuses later.
 */
export async function watchViews(store: Store, layout: GroupLayout, wire: string, opts: OpOptions): Promise<never> {
  const b = await store.get(mismatchKey(wire), opts);
  const e = reported(layout, wire, b);
  // A report from a rank that is no member here (it named itself into this group by another
  // groupRanks) does not stop the members from forming the group they agree on: it failed alone
  // (before joining: checkView runs first).
  if (e && e.peerRank === undefined) {
    await new Promise((_, reject) => {
      if (opts.signal?.aborted) reject(opts.signal.reason);
      opts.signal?.addEventListener('abort', () => reject(opts.signal!.reason), { once: true });
    });
  }
  throw e ?? mismatchError(`group '${wire}': a member's view of the group differs (unreadable report)`, { rank: layout.rankInGroup });
}

/**
 * After a create failed: the MISMATCH a member reported, if there is one (waiting up to `ms` for
 * it: a mesh refusal can come a moment before the report does; 0: only what is there now).
 */
export async function reportedMismatch(store: Store, layout: GroupLayout, wire: string, ms: number): Promise<GroupcommError | undefined> {
  try {
    if (ms <= 0 && !await store.check([mismatchKey(wire)], { timeoutMs: 200 })) return undefined;
    return reported(layout, wire, await store.get(mismatchKey(wire), { timeoutMs: Math.max(ms, 200) }));
  } catch (e) {
    if (!isGroupcommError(e)) throw e;
    return undefined;
  }
}
