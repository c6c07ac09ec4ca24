/**
 * Tensor dicts between ranks (broadcast and point to point), as vLLM does it: the metadata
 * first — one frame from the WASM core with keys, tensor descriptors and msgpack'd values —
 * over the store channel, then each non-empty tensor over its data channel (CPU group for CPU
 * tensors, device communicator for device tensors), in dict order.
 *
 * Two departures, both for fewer round trips: when a dict's CPU tensors are small (together at
 * most GROUPCOMM_INLINE_CPU_BYTES), they ride inside the frame — a 32-entry dict of small tensors is one
 * store round trip instead of 33 operations. Otherwise CPU tensors up to PACK_CPU_MAX_BYTES each
 * are packed into one buffer and moved by one CPU-group operation; larger CPU tensors and
 * device tensors move one by one, in dict order, as in vLLM.
 */
import type { OpOptions } from '../base/deadline.js';
import { invalidArgument, protocolError } from '../base/errors.js';
import { bytesOf, fromBytes, isCpu, isTensor, numel, tensor, type Tensor, type DType, type CpuTensor } from '../core/tensor.js';
import { decodeTensorDict, encodeTensorDict, fillTensorDict, type TensorDict } from './tensor_dict.js';
import type { Collectives } from '../core/collectives.js';
import type { StatelessProcessGroup } from '../pg/group.js';
import type { Deadline } from '../base/deadline.js';
import { setting } from '../base/config.js';

export type { TensorDict };

/**
 * CPU tensors of a dict travel inside the metadata frame when they total at most this
 * (GROUPCOMM_INLINE_CPU_BYTES, read once per process: every dict transfer asks).
 */
const inlineCpuBytes = () => setting('GROUPCOMM_INLINE_CPU_BYTES');

/** What a dict transfer needs from its coordinator. */
export interface DictIo {
  pg: StatelessProcessGroup;
  /** The metadata frame of a broadcast (the store channel, or the message queue when the group has one). */
  broadcastObj(obj: unknown, src: number, opts: OpOptions & { timeoutMs: number }): Promise<unknown>;
  /** This rank's device for device tensors. */
  device: string;
  /** The channel that carries a tensor (INVALID_ARGUMENT when the group cannot carry it). */
  channel(t: Tensor, what: string): Collectives<Tensor>;
  empty(shape: number[], dtype: DType, device: string): Tensor;
  free(t: Tensor): void;
}

export interface Direction {
  kind: 'broadcast' | 'p2p';
  /** broadcast: the source; p2p: the other side (dst when sending, src when receiving). */
  peer: number;
}

function cpuBytes(dict: TensorDict): number {
  let n = 0;
  for (const v of Object.values(dict)) if (isTensor(v) && isCpu(v)) n += (v.data as CpuTensor['data']).byteLength;
  return n;
}

/**
 * CPU tensors of at most this many bytes that do not ride in the frame are packed into one
 * buffer and moved with ONE CPU-group operation instead of one each (24 tensors of 64 KiB: one
 * broadcast of 1.5 MiB, not 24 of 64 KiB). Both sides derive the packing from the frame's
 * descriptors with this rule, so it is a fixed constant of the protocol, not a knob.
 */
export const PACK_CPU_MAX_BYTES = 1 << 20;
const PACK_ALIGN = 8;

interface Packing {
  /** Indices (into the tensor list) of the packed tensors, in order. */
  packed: number[];
  /** Byte offset of each packed tensor in the pack (8-aligned, so every dtype's view is aligned). */
  offsets: number[];
  bytes: number;
}

function packing(list: readonly { device: string; nbytes: number }[]): Packing {
  const p: Packing = { packed: [], offsets: [], bytes: 0 };
  list.forEach((t, i) => {
    if (t.device !== 'cpu' || t.nbytes === 0 || t.nbytes > PACK_CPU_MAX_BYTES) return;
    p.packed.push(i);
    p.offsets.push(p.bytes);
    p.bytes += Math.ceil(t.nbytes / PACK_ALIGN) * PACK_ALIGN;
  });
  // One tensor gains nothing from packing (and would cost a copy).
  if (p.packed.length < 2) return { packed: [], offsets: [], bytes: 0 };
  return p;
}

const byteLen = (t: Tensor) => (isCpu(t) ? t.data.byteLength : (t.data as { nbytes: number }).nbytes);

/** The sending side (the broadcast source, or the sender of a point-to-point dict). */
export async function sendDict(io: DictIo, dict: TensorDict, dir: Direction, b: Deadline): Promise<void> {
  for (const v of Object.values(dict)) if (isTensor(v)) io.channel(v, 'tensor dict');
  const { frame, tensors } = encodeTensorDict(dict, { inlineCpu: cpuBytes(dict) <= inlineCpuBytes() });
  if (dir.kind === 'broadcast') await io.broadcastObj(frame, dir.peer, b.next());
  else await io.pg.sendObj(frame, dir.peer, b.next());
  const pack = packing(tensors.map((t) => ({ device: t.device, nbytes: numel(t.shape) === 0 ? 0 : byteLen(t) })));
  if (pack.bytes > 0) {
    const buf = new Uint8Array(pack.bytes);
    pack.packed.forEach((i, k) => buf.set(bytesOf(tensors[i] as CpuTensor), pack.offsets[k]));
    await moveTensor(io, tensor(buf), dir, true, b.next());
  }
  const packed = new Set(pack.packed);
  for (let i = 0; i < tensors.length; i++) {
    if (numel(tensors[i].shape) === 0 || packed.has(i)) continue;
    await moveTensor(io, tensors[i], dir, true, b.next());
  }
}

/** The receiving side; resolves with a new dict. */
export async function receiveDict(io: DictIo, dir: Direction, b: Deadline): Promise<TensorDict> {
  const frame = dir.kind === 'broadcast'
    ? await io.broadcastObj(undefined, dir.peer, b.next())
    : await io.pg.recvObj(dir.peer, b.next());
  if (!(frame instanceof Uint8Array)) {
    throw protocolError(`tensor dict from group rank ${dir.peer}: expected a metadata frame, got ${typeof frame}`, { peerRank: dir.peer });
  }
  const { dict, slots } = decodeTensorDict(frame);
  const tensors: Tensor[] = [];
  try {
    // vLLM keeps only the device *type*: a sender's cuda:3 tensor lands on this rank's cuda device.
    const devices = slots.map((s) => (s.device === 'cpu' ? 'cpu' : sameType(s.device, io.device, s.key)));
    const pack = packing(slots.map((s, i) => ({ device: devices[i], nbytes: s.nbytes })));
    const packedAt = new Map(pack.packed.map((i, k) => [i, pack.offsets[k]]));
    let buf: Uint8Array | undefined;
    if (pack.bytes > 0) {
      buf = new Uint8Array(pack.bytes);
      await moveTensor(io, tensor(buf), dir, false, b.next());
    }
    for (let i = 0; i < slots.length; i++) {
      const s = slots[i];
      const at = packedAt.get(i);
      // Packed tensors are views of the one received buffer (8-aligned offsets: any dtype fits).
      const t = at !== undefined ? fromBytes(buf!.subarray(at, at + s.nbytes), s.dtype, s.shape) : io.empty(s.shape, s.dtype, devices[i]);
      tensors.push(t);
      if (at === undefined && s.nbytes > 0) await moveTensor(io, t, dir, false, b.next());
    }
    fillTensorDict(dict, slots, tensors);
  } catch (e) {
    // Nobody will ever see these tensors: give device memory back.
    for (const t of tensors) io.free(t);
    throw e;
  }
  return dict;
}

function sameType(sender: string, mine: string, key: string): string {
  const type = (d: string) => d.split(':')[0];
  if (type(sender) !== type(mine)) {
    throw invalidArgument(`tensor dict key '${key}': the sender's tensor is on ${sender}, this rank has no ${type(sender)} device (its device is ${mine})`, { key });
  }
  return mine;
}

/** One tensor of a dict over its channel; a receiver's tensor is its destination (filled in place). */
async function moveTensor(io: DictIo, t: Tensor, dir: Direction, sending: boolean, o: OpOptions): Promise<void> {
  const ch = io.channel(t, 'tensor dict');
  if (dir.kind === 'broadcast') await ch.broadcast(t, { src: dir.peer, out: t, ...o });
  else if (sending) await ch.send(t, dir.peer, o);
  else await ch.recv(t, dir.peer, o);
}
