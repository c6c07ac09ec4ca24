/**
 * Sub-groups of a coordinator (coordinator.ts's split), like torch's `split_group`: every member
 * of the parent calls it with the same partition `groupRanks` (lists of the parent's global
 * ranks); each listed rank gets the coordinator of its list, the others undefined.
 *
 * The device communicator of each sub-group is derived from the parent's with the backend's
 * split() (ncclCommSplit; capabilities.split) when the parent has one: no new unique id, no
 * bootstrap over the store. A device split is collective over ALL of the parent's ranks (NCCL:
 * a rank outside every list passes NCCL_SPLIT_NOCOLOR), which is why the whole parent calls
 * this and not only the new groups' members. Without the capability (or without a parent
 * communicator) the sub-group's communicator is bootstrapped the normal way.
 *
 * The sub-group's store channel and CPU group are created the normal way, with the parent's
 * group store as the rendezvous (under a key prefix of this split's own), and the parent's
 * secret, host and backend.
 */
import { invalidArgument } from '../base/errors.js';
import type { Deadline, OpOptions } from '../base/deadline.js';
import { findGroup, type GroupLayout } from '../core/layout.js';
import { empty as emptyCpu, type CpuTensor } from '../core/tensor.js';
import type { CpuGroup } from '../cpu/group.js';
import type { DeviceBackendV1, DeviceCommunicatorV1 } from '../device/types.js';
import { PrefixStore } from '../store/prefix.js';
import type { Store } from '../store/types.js';
import type { CoordinatorOptions } from './types.js';
import { openGroup, type OpenedGroup } from './create.js';

export interface CoordinatorSubgroupOptions extends OpOptions {
  /**
   * Disjoint lists of global ranks, each a subset of the parent's ranks, in the order that makes
   * their group ranks; the same on every member of the parent (checked). A parent rank in no
   * list resolves with undefined. `timeoutMs` bounds the split and is the new groups' default.
   */
  groupRanks: number[][];
  /** Base of the new groups' names (default `${parent's label}.split${n}`). */
  groupName?: string;
  /** As CoordinatorOptions.useMessageQueueBroadcaster, for the new groups. Default false. */
  useMessageQueueBroadcaster?: boolean;
}

/** What a sub-group inherits from the parent's create options. */
export type Inherited = Pick<CoordinatorOptions, 'host' | 'secret' | 'insecure' | 'globalWorldSize' | 'useDeviceCommunicator'>;

/** The parent's parts a split needs. */
export interface SplitParent {
  rank: number;
  ranks: readonly number[];
  localRank: number;
  label: string;
  timeoutMs: number;
  inherited: Inherited;
  backend: DeviceBackendV1 | undefined;
  store: Store | undefined;
  cpu: CpuGroup | undefined;
  comm: DeviceCommunicatorV1 | undefined;
}

/** A checked split: this rank's layout in it (undefined: in no list) and the new groups' create options. */
export interface SplitPlan {
  layout: GroupLayout | undefined;
  options: CoordinatorOptions;
}

/** Checks the options against the parent on this rank (nothing sent): INVALID_ARGUMENT. */
export function planSplit(p: SplitParent, o: CoordinatorSubgroupOptions, seq: number): SplitPlan {
  if (!o || typeof o !== 'object') throw invalidArgument('split: options object with groupRanks required');
  const groupRanks = o.groupRanks;
  if (!Array.isArray(groupRanks) || groupRanks.length === 0 || !groupRanks.every(Array.isArray)) {
    throw invalidArgument(`split: groupRanks must be a non-empty array of rank lists, got ${JSON.stringify(groupRanks)}`);
  }
  const members = new Set(p.ranks);
  for (const g of groupRanks) {
    for (const r of g) {
      if (!members.has(r)) throw invalidArgument(`split: rank ${String(r)} of groupRanks is not a member of the parent group [${p.ranks.join(', ')}]`, { rank: p.rank });
    }
  }
  const mine = groupRanks.some((g) => g.includes(p.rank));
  // findGroup checks the lists (disjoint, not empty, integers); a rank in none checks them as a listed rank would.
  const first = groupRanks.find((g) => g.length > 0)?.[0] ?? p.rank;
  const layout = findGroup(groupRanks, mine ? p.rank : first, p.inherited.globalWorldSize);
  const groupName = o.groupName ?? `${p.label}.split${seq}`;
  const options: CoordinatorOptions = {
    ...p.inherited, groupRanks, globalRank: p.rank, localRank: p.localRank, groupName,
    useMessageQueueBroadcaster: o.useMessageQueueBroadcaster, timeoutMs: o.timeoutMs ?? p.timeoutMs,
  };
  return { layout: mine ? layout : undefined, options };
}

/** 32-bit FNV-1a of a string: the split's arguments, compared across the parent's ranks. */
function fnv(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return h | 0;
}

/**
 * Every parent rank must pass the same partition and name: each one's hash is gathered over the
 * parent's CPU group, so all of them fail alike (INVALID_ARGUMENT naming who differs from group
 * rank 0) instead of some waiting out a device split that the others never join.
 */
export async function agreeOnSplit(p: SplitParent, o: CoordinatorOptions, b: Deadline): Promise<void> {
  if (!p.cpu) return;
  const mine: CpuTensor = emptyCpu([1], 'int32');
  (mine.data as Int32Array)[0] = fnv(JSON.stringify([o.groupRanks, o.groupName, !!o.useMessageQueueBroadcaster]));
  const all = (await p.cpu.allGather(mine, b.next())).data as Int32Array;
  const differ = [...all.keys()].filter((r) => all[r] !== all[0]);
  if (differ.length) {
    throw invalidArgument(`split: group ranks [${differ.join(', ')}] passed other groupRanks, groupName or useMessageQueueBroadcaster than group rank 0`,
      { rank: p.rank, peerRanks: differ });
  }
}

/**
 * The device split on every parent rank: the sub-group's communicator (ranks ordered as in its
 * list), or undefined where this rank is in no list, in a list of one (a group of one has no
 * communicator), or the backend cannot split (the caller bootstraps one the normal way then).
 */
export async function splitDevice(p: SplitParent, plan: SplitPlan, b: Deadline): Promise<DeviceCommunicatorV1 | undefined> {
  const comm = p.comm;
  if (!comm || !p.backend?.capabilities.split || typeof comm.split !== 'function') return undefined;
  const l = plan.layout;
  const color = l && l.ranks.length > 1 ? l.groupIndex : -1;
  const wireName = l ? `${plan.options.groupName}_${l.groupIndex}` : undefined;
  const child = await comm.split({ color, key: l?.rankInGroup ?? 0, name: wireName, ...b.next() });
  if (!child) return undefined;
  if (!l || child.rank !== l.rankInGroup || child.worldSize !== l.ranks.length) {
    await child.close({ timeoutMs: 1 }).catch(() => {});
    throw invalidArgument(`split: the device split gave rank ${child.rank} of ${child.worldSize}, expected group rank ${l?.rankInGroup} of ${l?.ranks.length}`, { rank: p.rank });
  }
  return child;
}

/** The rendezvous of this split's groups: the parent's group store, under a prefix no other split uses. */
export function splitRendezvous(p: SplitParent, seq: number): PrefixStore | undefined {
  return p.store ? new PrefixStore(`groupcomm/split/${p.label}/${seq}`, p.store) : undefined;
}

/**
 * The split itself, as the parent's operation `split` (in its call order, under its deadline):
 * the partition agreed on, the device communicator split on every parent rank, then on the
 * members the new group opened (create.ts's openGroup, adopting the split communicator) and
 * built by `build` (the coordinator's constructor path). Undefined on a rank in no list.
 */
export async function runSplit<G>(p: SplitParent, plan: SplitPlan, seq: number, b: Deadline,
  build: (o: CoordinatorOptions, opened: OpenedGroup, how: string) => G): Promise<G | undefined> {
  await agreeOnSplit(p, plan.options, b);
  const comm = await splitDevice(p, plan, b);
  if (!plan.layout) return undefined;
  const rendezvous = splitRendezvous(p, seq);
  const creation = creationSignal(b.signal);
  try {
    const o: CoordinatorOptions = { ...plan.options, rendezvous, signal: creation.signal, timeoutMs: b.next().timeoutMs };
    const opened = await openGroup(o, { backend: p.backend, comm });
    const how = comm ? 'its device communicator split' : opened.ch.comm ? 'its device communicator bootstrapped' : 'no device communicator';
    // The new group's own default timeout is the one asked for, not what was left of it.
    const timeoutMs = plan.options.timeoutMs ?? opened.timeoutMs;
    return build({ ...o, timeoutMs }, { ...opened, timeoutMs }, how);
  } catch (e) {
    await comm?.close({ timeoutMs: 1 }).catch(() => {});
    throw e;
  } finally {
    creation.detach();
    await rendezvous?.close().catch(() => {});
  }
}

/**
 * A signal that follows `signal` until `detach()`: creation may hand its signal to channels
 * that keep it (a subscription), and the parent's later abort must not reach the sub-group.
 */
export function creationSignal(signal: AbortSignal | undefined): { signal: AbortSignal; detach(): void } {
  const c = new AbortController();
  if (signal?.aborted) c.abort(signal.reason);
  const on = () => c.abort(signal!.reason);
  signal?.addEventListener('abort', on, { once: true });
  return { signal: c.signal, detach: () => signal?.removeEventListener('abort', on) };
}
