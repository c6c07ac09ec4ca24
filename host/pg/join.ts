/**
 * The join of a process group: every rank learns the group's epoch and knows that every other
 * rank joined before `create` resolves.
 *
 * Keys (g = groupName; they live next to other groups' keys on a shared store):
 *   g/epoch       counter; rank 0 bumps it once per creation — the epoch E
 *   g/open        E of the incarnation now joining or live (decimal); deleted by rank 0's destroy
 *   g/E/join/r    rank r (r > 0) has joined E; deleted by rank 0 once all joined
 *   g/E/all       every rank joined E; deleted by rank 0's destroy
 *
 * Why it is safe to re-create a group on a store that still holds an old incarnation:
 * - a rank that reads a stale g/open whose E/all exists knows E is a finished incarnation (E/all
 *   appears only after rank 0 saw this very rank's join key) and polls g/open until it changes;
 * - a rank that joined an abandoned E (its rank 0 died, or destroyed it) notices g/open moving on
 *   while it waits, deletes its join key there, and joins the new epoch.
 * Everything after the join carries E in its keys, so nothing of an old incarnation is read.
 */
import type { Store } from '../store/types.js';
import { isGroupcommError, timeoutError } from '../base/errors.js';
import { sleep } from '../base/deadline.js';

/** How often a waiting rank re-reads g/open to notice that its epoch was abandoned. */
const REPOLL_MS = 500;
/** Pause before re-reading a g/open that still names a finished incarnation. */
const STALE_PAUSE_MS = 20;

export interface JoinSpec {
  store: Store;
  groupName: string;
  rank: number;
  worldSize: number;
  deadline: number;
  signal?: AbortSignal;
}

const left = (deadline: number) => Math.max(1, deadline - performance.now());
const dec = new TextDecoder();

export const joinKeys = {
  epoch: (g: string) => `${g}/epoch`,
  open: (g: string) => `${g}/open`,
  join: (g: string, e: number, r: number) => `${g}/${e}/join/${r}`,
  all: (g: string, e: number) => `${g}/${e}/all`,
};

/** Ranks among 1..worldSize-1 whose join key is missing (best effort: [] when the store fails). */
async function missingJoins(s: JoinSpec, epoch: number): Promise<number[]> {
  const out: number[] = [];
  try {
    const checks = [];
    for (let r = 1; r < s.worldSize; r++) checks.push(s.store.check([joinKeys.join(s.groupName, epoch, r)], { timeoutMs: 2000 }));
    (await Promise.all(checks)).forEach((ok, i) => ok || out.push(i + 1));
  } catch {
    // The store is gone too; the caller's error already says what timed out.
  }
  return out;
}

/**
 * Who has not joined, as seen a little before the deadline (at most 500 ms, a quarter of the
 * timeout): at the deadline itself the ranks that timed out a moment earlier have already taken
 * their join keys back, and would be named with the ones that never came.
 */
function snapshotMissing(s: JoinSpec, epoch: () => number): { get(): Promise<number[]>; cancel(): void } {
  const total = left(s.deadline);
  const lead = Math.min(500, total / 4);
  let early: Promise<number[]> | undefined;
  const timer = setTimeout(() => { if (epoch() >= 0) early = missingJoins(s, epoch()); }, Math.max(0, total - lead));
  return {
    async get() {
      const now = await missingJoins(s, epoch());
      if (!early) return now;
      const before = await early;
      // Named: missing then and still missing now (a rank that came late is not named).
      const both = before.filter((r) => now.includes(r));
      return both.length ? both : now;
    },
    cancel: () => clearTimeout(timer),
  };
}

function joinTimeout(s: JoinSpec, epoch: number, missing: number[], timeoutMs: number, cause: unknown) {
  const who = missing.length ? `ranks [${missing.join(', ')}] never joined` : 'rank 0 never completed the join';
  return timeoutError(
    `create(group '${s.groupName}', epoch ${epoch}) timed out on rank ${s.rank} of ${s.worldSize}: ${who}. ` +
    'Are all ranks started with the same host/port/worldSize? Raise timeoutMs or GROUPCOMM_TIMEOUT_MS.',
    { rank: s.rank, peerRanks: missing.length ? missing : [0], timeoutMs, cause },
  );
}

/** Rank 0: opens a new epoch and waits for every other rank's join key. */
async function hostJoin(s: JoinSpec, timeoutMs: number): Promise<number> {
  const g = s.groupName;
  let epoch = -1;
  // A store request of rank 0's own that times out (near the deadline it gets as little as
  // 1 ms) is the join's timeout too, naming the step and its key — not a bare store timeout.
  const step = async <T>(key: string, p: Promise<T>): Promise<T> => {
    try {
      return await p;
    } catch (e) {
      if (!isGroupcommError(e, 'ERR_GROUPCOMM_TIMEOUT')) throw e;
      throw timeoutError(
        `create(group '${g}'${epoch >= 0 ? `, epoch ${epoch}` : ''}) timed out on rank 0 of ${s.worldSize}: ` +
        `the store did not take ${key} in time. Raise timeoutMs or GROUPCOMM_TIMEOUT_MS.`,
        { rank: s.rank, key, timeoutMs, cause: e },
      );
    }
  };
  epoch = await step(joinKeys.epoch(g), s.store.add(joinKeys.epoch(g), 1, { timeoutMs: left(s.deadline), signal: s.signal }));
  await step(joinKeys.open(g), s.store.set(joinKeys.open(g), String(epoch), { timeoutMs: left(s.deadline), signal: s.signal }));
  const keys = [];
  for (let r = 1; r < s.worldSize; r++) keys.push(joinKeys.join(g, epoch, r));
  const snap = snapshotMissing(s, () => epoch);
  try {
    for (;;) {
      try {
        await s.store.wait(keys, { timeoutMs: Math.min(REPOLL_MS, left(s.deadline)), signal: s.signal });
        break;
      } catch (e) {
        if (!isGroupcommError(e, 'ERR_GROUPCOMM_TIMEOUT')) throw e;
        if (performance.now() >= s.deadline) throw joinTimeout(s, epoch, await snap.get(), timeoutMs, e);
      }
      // The previous incarnation's rank 0 deletes g/open in its cleanup, which may run after
      // this one set it (a group re-created while the old one is still leaving): the members
      // would block on it until their timeout. Open the epoch again.
      const o = { timeoutMs: left(s.deadline), signal: s.signal };
      if (!(await step(joinKeys.open(g), s.store.check([joinKeys.open(g)], o)))) {
        await step(joinKeys.open(g), s.store.set(joinKeys.open(g), String(epoch), o));
      }
    }
  } finally {
    snap.cancel();
  }
  await step(joinKeys.all(g, epoch), s.store.set(joinKeys.all(g, epoch), '1', { timeoutMs: left(s.deadline), signal: s.signal }));
  for (const k of keys) s.store.deleteKey(k).catch(() => {});
  return epoch;
}

/** Ranks > 0: find the epoch rank 0 opened, announce ourselves, wait for the others. */
async function memberJoin(s: JoinSpec, timeoutMs: number): Promise<number> {
  const g = s.groupName;
  const opts = () => ({ timeoutMs: left(s.deadline), signal: s.signal });
  let epoch = -1;
  const snap = snapshotMissing(s, () => epoch);
  try {
    return await memberLoop();
  } catch (e) {
    // A store request timed out: the join's timeout, named like it. (Near the deadline, left()
    // gives a request as little as 1 ms, so any of them may be the one.) A timeout that already
    // names its ranks is a joinTimeout of memberLoop's own.
    if (!isGroupcommError(e, 'ERR_GROUPCOMM_TIMEOUT') || e.peerRanks !== undefined) throw e;
    let missing: number[] = [];
    if (epoch >= 0) {
      missing = (await snap.get()).filter((r) => r !== s.rank);
      s.store.deleteKey(joinKeys.join(g, epoch, s.rank)).catch(() => {});
    }
    throw joinTimeout(s, epoch, missing, timeoutMs, e);
  } finally {
    snap.cancel();
  }
  async function memberLoop(): Promise<number> {
    for (;;) {
      const open = Number(dec.decode(await s.store.get(joinKeys.open(g), opts())));
      if (open !== epoch) {
        // Leaving an abandoned epoch: take our join key back so it does not linger.
        if (epoch >= 0) s.store.deleteKey(joinKeys.join(g, epoch, s.rank)).catch(() => {});
        if (await s.store.check([joinKeys.all(g, open)], opts())) {
          // A finished incarnation whose rank 0 has not cleaned up yet: wait for the next one.
          if (performance.now() >= s.deadline) throw joinTimeout(s, open, [], timeoutMs, undefined);
          await sleep(STALE_PAUSE_MS, s.signal);
          continue;
        }
        epoch = open;
        await s.store.set(joinKeys.join(g, epoch, s.rank), '1', opts());
      }
      try {
        await s.store.wait([joinKeys.all(g, epoch)], { timeoutMs: Math.min(REPOLL_MS, left(s.deadline)), signal: s.signal });
        return epoch;
      } catch (e) {
        // Before the deadline: a re-poll of g/open. At the deadline: the join's timeout (above).
        if (!isGroupcommError(e, 'ERR_GROUPCOMM_TIMEOUT') || performance.now() >= s.deadline) throw e;
      }
    }
  }
}

/** Runs the join; resolves with the epoch once all ranks joined. */
export function join(s: JoinSpec, timeoutMs: number): Promise<number> {
  return s.rank === 0 ? hostJoin(s, timeoutMs) : memberJoin(s, timeoutMs);
}
