/**
 * The coordinator's object and tensor-dict operations: objects and dict metadata travel over the
 * store channel (StatelessProcessGroup), a dict's tensors over the CPU group or the device
 * communicator (dict.ts). Sends to this rank itself, and every point-to-point operation in a
 * group of one, go through the loopback queue (io.self) instead. The collectives check their
 * arguments when called, before they are queued (tensors.ts says why).
 */
import type { Deadline } from '../base/deadline.js';
import type { Run } from './queue.js';
import { invalidArgument, mismatchError } from '../base/errors.js';
import { isTensor } from '../core/tensor.js';
import { checkRank } from './ops.js';
import { copyTensor } from './copy.js';
import { receiveDict, sendDict, type TensorDict } from './dict.js';
import type { GroupIo } from './io.js';

export function broadcastObject<T>(io: GroupIo, obj: T | undefined, src: number): Run<T> {
  checkRank(src, io.worldSize, 'broadcastObject', 'src');
  return async (b) => {
    if (!io.net) return obj as T;
    return (await io.broadcastObj(io.rankInGroup === src ? obj : undefined, src, b.next())) as T;
  };
}

export function broadcastObjectList<T>(io: GroupIo, list: T[], src: number): Run<T[]> {
  checkRank(src, io.worldSize, 'broadcastObjectList', 'src');
  if (!Array.isArray(list)) throw invalidArgument('broadcastObjectList: list must be an array');
  return async (b) => {
    if (!io.net) return list;
    const got = (await io.broadcastObj(io.rankInGroup === src ? list : undefined, src, b.next())) as T[];
    if (io.rankInGroup === src) return list;
    return fillList(list, got, src);
  };
}

/** Fills `list` in place with the elements src sent; INVALID_ARGUMENT (list untouched) when the lengths differ. */
export function fillList<T>(list: T[], got: unknown, src: number): T[] {
  if (!Array.isArray(got) || got.length !== list.length) {
    throw invalidArgument(`broadcastObjectList: rank ${src} sent ${Array.isArray(got) ? got.length : 'no'} elements, this rank's list has ${list.length}`, { peerRank: src });
  }
  for (let i = 0; i < got.length; i++) list[i] = got[i];
  return list;
}

export async function sendObject(io: GroupIo, obj: unknown, dst: number, b: Deadline): Promise<void> {
  checkRank(dst, io.worldSize, 'sendObject', 'dst');
  if (dst === io.rankInGroup || !io.net) { io.self.push(structuredClone(obj)); return; }
  await io.net.pg.sendObj(obj, dst, b.next());
}

export async function recvObject<T>(io: GroupIo, src: number, b: Deadline): Promise<T> {
  checkRank(src, io.worldSize, 'recvObject', 'src');
  if (src === io.rankInGroup || !io.net) return io.takeSelf('recvObject') as T;
  return (await io.net.pg.recvObj(src, b.next())) as T;
}

/**
 * Every member enters it as its collective #n: the store channel's barrier carries n (a few
 * bytes instead of none), so ranks whose earlier calls differed (a broadcastObject on one, a
 * barrier on another: the store channel numbers broadcasts apart from collectives, so the
 * next barriers would pair up silently) fail with MISMATCH naming the calls, which `callsAt`
 * asks the others for (failure path only).
 */
export async function barrier(io: GroupIo, b: Deadline, n: number, callsAt: (n: number) => Promise<Map<number, string>>): Promise<void> {
  const pg = io.net?.pg;
  if (!pg) return;
  const at = await pg.allGatherObj(n, b.next());
  const off = at.map((m, r) => [r, m] as const).filter(([, m]) => m !== n);
  if (off.length === 0) return;
  // The first index where the calls may differ: the lowest either side entered this barrier as.
  const first = Math.min(n, ...off.map(([, m]) => Number(m)).filter(Number.isInteger));
  const names = await callsAt(first).catch(() => new Map<number, string>());
  const ranks = off.map(([r]) => r);
  throw mismatchError(`barrier (collective #${n} here): ${off.map(([r, m]) => `group rank ${r} entered it as its collective #${m}`).join(', ')}: ` +
    `the ranks' earlier calls differ (collective #${first}: ${[...names].map(([r, w]) => `${w} on group rank ${r}`).join(', ') || '?'}` +
    ')', { rank: io.rankInGroup, peerRanks: ranks, peerRank: ranks.length === 1 ? ranks[0] : undefined });
}

export function broadcastTensorDict(io: GroupIo, dict: TensorDict | undefined, src: number): Run<TensorDict> {
  checkRank(src, io.worldSize, 'broadcastTensorDict', 'src');
  if (io.rankInGroup === src) checkDict(dict, 'broadcastTensorDict');
  return async (b) => {
    const dio = io.dictIo();
    if (!dio) return dict!;
    if (io.rankInGroup === src) {
      await sendDict(dio, dict!, { kind: 'broadcast', peer: src }, b);
      return dict!;
    }
    return receiveDict(dio, { kind: 'broadcast', peer: src }, b);
  };
}

export async function sendTensorDict(io: GroupIo, dict: TensorDict, dst: number | undefined, b: Deadline): Promise<void> {
  const to = dst ?? io.ring.next;
  checkRank(to, io.worldSize, 'sendTensorDict', 'dst');
  checkDict(dict, 'sendTensorDict');
  const dio = io.dictIo();
  if (to === io.rankInGroup || !dio) { io.self.push(cloneDict(dict, io)); return; }
  await sendDict(dio, dict, { kind: 'p2p', peer: to }, b);
}

export async function recvTensorDict(io: GroupIo, src: number | undefined, b: Deadline): Promise<TensorDict> {
  const from = src ?? io.ring.prev;
  checkRank(from, io.worldSize, 'recvTensorDict', 'src');
  const dio = io.dictIo();
  if (from === io.rankInGroup || !dio) return io.takeSelf('recvTensorDict') as TensorDict;
  return receiveDict(dio, { kind: 'p2p', peer: from }, b);
}

function checkDict(d: unknown, what: string): asserts d is TensorDict {
  if (typeof d !== 'object' || d === null || Array.isArray(d) || d instanceof Map) {
    throw invalidArgument(`${what}: the source must pass a plain object of tensors and values`);
  }
}

/** A deep copy of a dict for a self-send: tensors copied so the sender may reuse its buffers. */
function cloneDict(d: TensorDict, io: GroupIo): TensorDict {
  const out: TensorDict = {};
  for (const [k, v] of Object.entries(d)) {
    if (isTensor(v)) {
      out[k] = copyTensor(io.backend, io.empty(v.shape, v.dtype, v.device), v);
    } else out[k] = structuredClone(v);
  }
  return out;
}
