/**
 * Leaving a process group (group.ts's close and reclaim): the departure handshake, deleting the
 * keys that outlive their operations, and holding dead ranks' mailboxes. The class passes its
 * state (GroupState) by reference; its public methods and their contracts stay in group.ts.
 */
import { destroyedError, isGroupcommError } from '../base/errors.js';
import { anySignal, Deadline, settled, type OpOptions } from '../base/deadline.js';
import type { CloseOptions } from '../base/lifecycle.js';
import { logger } from '../base/log.js';
import type { Subscription } from '../store/types.js';
import { joinKeys } from './join.js';
import type { Messages, MessagesOptions } from './messages.js';

const log = logger('PG');

/** The process group's state these functions read and change (the class's fields, by reference). */
export interface GroupState extends MessagesOptions {
  msgs: Messages;
  /** Fired by abort(): cuts short a close() in progress. */
  life: AbortController;
  /** Ranks reclaim() was told are dead. */
  dead: Set<number>;
  /** Dead ranks' mailboxes this rank holds. */
  sinks: Map<number, Subscription>;
  /** close() or abort() was called. */
  closing: () => boolean;
}

/** reclaim()'s work (group.ts, where its contract is): resolves with the ranks whose mailbox this rank holds. */
export async function reclaimMailboxes(st: GroupState, ranks: number[], opts: OpOptions): Promise<number[]> {
  for (const r of ranks) st.dead.add(r);
  const store = st.store;
  if (!store.subscribe || st.worldSize === 1) return [];
  const until = performance.now() + (opts.timeoutMs ?? Math.min(1000, st.timeoutMs));
  await Promise.all(ranks.filter((r) => !st.sinks.has(r)).map(async (r) => {
    for (;;) {
      try {
        const left = Math.max(1, until - performance.now());
        const sub = await store.subscribe!(st.msgs.inbox(r), () => {}, { timeoutMs: left, signal: opts.signal });
        if (!sub) return;
        if (st.closing() || st.sinks.has(r)) return sub.close();
        st.sinks.set(r, sub);
        log.debug(`group '${st.groupName}' epoch ${st.epoch} rank ${st.rank}: holds dead rank ${r}'s mailbox`);
        return;
      } catch (e) {
        // Taken: the server has not seen the dead rank's connection close yet, or another
        // survivor holds it. Anything else (the store is gone) ends the attempt too.
        if (!isGroupcommError(e, 'ERR_GROUPCOMM_INVALID_ARGUMENT') || performance.now() >= until || opts.signal?.aborted) {
          log.debug(`reclaim of rank ${r}'s mailbox on rank ${st.rank}: ${(e as Error).message}`);
          return;
        }
        await new Promise((res) => setTimeout(res, 20));
      }
    }
  }));
  return [...st.sinks.keys()];
}

/** close()'s work (group.ts): wait for the ops in flight, depart, delete the leftovers, close the store. */
export async function closeGroup(st: GroupState, opts: CloseOptions, abort: (reason: unknown) => Promise<void>, closeSinks: () => void): Promise<void> {
  const d = Deadline.of(opts, st.timeoutMs, `close of group '${st.groupName}' on rank ${st.rank}`);
  const signal = anySignal([opts.signal, st.life.signal]);
  // Cleanups queued by finished ops add requests while we wait; drain until nothing is left.
  while (st.tracker.pending.size && !st.life.signal.aborted) {
    st.tracker.drain();
    if (!await settled(st.tracker.pending, { timeoutMs: Math.max(1, d.remainingMs()), signal })) {
      // Not awaited: abort() returns this very close's promise.
      void abort(opts.signal?.aborted ? opts.signal.reason : `close() waited ${d.timeoutMs}ms for the operations in flight`);
    }
  }
  const left = () => ({ timeoutMs: Math.max(1, d.remainingMs()), signal });
  try {
    // The lowest surviving rank (rank 0 unless reclaim() was told it died) leaves last.
    const leader = [...Array(st.worldSize).keys()].find((r) => !st.dead.has(r))!;
    if (st.worldSize > 1 && !signal?.aborted) {
      const bye = st.msgs.ns + 'bye';
      if (st.rank !== leader) {
        const n = await st.store.add(bye, 1, left());
        if (n === st.worldSize - 1 - st.dead.size) await st.store.set(bye + '/all', '1', left());
      } else if (st.worldSize - st.dead.size > 1) {
        await st.store.wait([bye + '/all'], left());
      }
    }
    // Every survivor has left: the large broadcast values a dead reader never acknowledged go.
    if (st.dead.size > 0 && !signal?.aborted) await discardStored(st, left());
    if (st.rank === leader && !signal?.aborted) await cleanup(st, left());
  } catch (e) {
    // Departure is best effort: a peer that died must not make close throw or hang forever.
    log.warn(`close of group '${st.groupName}' epoch ${st.epoch} on rank ${st.rank}: ${(e as Error).message}`);
  } finally {
    st.msgs.mailbox?.close(destroyedError(`group '${st.groupName}' was closed`, { rank: st.rank }));
    closeSinks();
    if (st.ownsStore) await st.store.close().catch(() => {});
  }
}

/** Deletes the stored broadcast values (and their ack counters) this rank wrote or read. */
export async function discardStored(st: GroupState, o: OpOptions): Promise<void> {
  const keys = st.msgs.stored.flatMap((k) => [k, k + '/ack']);
  st.msgs.stored.length = 0;
  for (let i = 0; i < keys.length; i += 4096) {
    const part = keys.slice(i, i + 4096);
    if (st.store.discard) await st.store.discard(part, o);
    else await Promise.all(part.map((k) => st.store.deleteKey(k, o)));
  }
}

/** Rank 0, after everyone departed: delete the keys that outlive their operations. */
export async function cleanup(st: GroupState, o: OpOptions): Promise<void> {
  const g = st.groupName;
  // g/open first: from now on a re-creating rank blocks until the next epoch opens.
  const keys = [joinKeys.open(g), joinKeys.all(g, st.epoch), st.msgs.ns + 'bye', st.msgs.ns + 'bye/all'];
  await Promise.all(keys.map((k) => st.store.deleteKey(k, o)));
  // The epoch counter goes too, unless a newer incarnation has bumped it meanwhile: a store
  // that hosts many short-lived groups must not keep one key per name forever. A later group
  // of this name starts again at epoch 1; every key of this one is gone by now.
  const epochKey = joinKeys.epoch(g);
  if (await st.store.check([epochKey], o)) {
    const now = Number(new TextDecoder().decode(await st.store.get(epochKey, o)));
    if (now === st.epoch) await st.store.deleteKey(epochKey, o);
  }
}
