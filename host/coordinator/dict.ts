/**
 * Tensor dicts between ranks (broadcast and point to point), as vLLM does it: the metadata
 * first — one frame from the WASM core with keys, tensor descriptors and msgpack'd values —
 * over the store channel, then each non-empty tensor over its data channel (CPU group for CPU
 * tensors, device communicator for device tensors), in dict order.
 *
 * One departure: when a dict's CPU tensors are small (together at most INLINE_CPU_BYTES), they
 * ride inside the frame. A 32-entry dict of small tensors is then one store round trip instead
 * of 33 operations; large tensors still go over the CPU group, which is much faster than the
 * store for bulk data.
 */
import type { OpOptions } from '../deadline.js';
import { invalidArgument, protocolError } from '../errors.js';
import { isCpu, isTensor, numel, type Tensor, type DType, type CpuTensor } from '../tensor.js';
import { decodeTensorDict, encodeTensorDict, fillTensorDict, type TensorDict } from '../tensor_dict.js';
import type { StatelessProcessGroup } from '../pg/group.js';
import type { CpuGroup } from '../cpu/group.js';
import type { DeviceCommunicatorV1 } from '../device/types.js';
import type { Budget } from './ops.js';

export type { TensorDict };

/** CPU tensors of a dict travel inside the metadata frame when they total at most this. */
export const INLINE_CPU_BYTES = envBytes('GROUPCOMM_INLINE_CPU_BYTES', 64 * 1024);

function envBytes(name: string, fallback: number): number {
  const v = Number(process.env[name]);
  return Number.isFinite(v) && v >= 0 ? v : fallback;
}

/** What a dict transfer needs from its coordinator. */
export interface DictIo {
  pg: StatelessProcessGroup;
  cpu: CpuGroup;
  comm: DeviceCommunicatorV1 | undefined;
  /** This rank's device for device tensors. */
  device: string;
  route(t: Tensor, what: string): 'cpu' | 'device';
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

/** The sending side (the broadcast source, or the sender of a point-to-point dict). */
export async function sendDict(io: DictIo, dict: TensorDict, dir: Direction, b: Budget): Promise<void> {
  for (const v of Object.values(dict)) if (isTensor(v)) io.route(v, 'tensor dict');
  const { frame, tensors } = encodeTensorDict(dict, { inlineCpu: cpuBytes(dict) <= INLINE_CPU_BYTES });
  if (dir.kind === 'broadcast') await io.pg.broadcastObj(frame, dir.peer, b.next());
  else await io.pg.sendObj(frame, dir.peer, b.next());
  for (const t of tensors) {
    if (numel(t.shape) === 0) continue;
    await moveTensor(io, t, dir, true, b.next());
  }
}

/** The receiving side; resolves with a new dict. */
export async function receiveDict(io: DictIo, dir: Direction, b: Budget): Promise<TensorDict> {
  const frame = dir.kind === 'broadcast'
    ? await io.pg.broadcastObj(undefined, dir.peer, b.next())
    : await io.pg.recvObj(dir.peer, b.next());
  if (!(frame instanceof Uint8Array)) {
    throw protocolError(`tensor dict from group rank ${dir.peer}: expected a metadata frame, got ${typeof frame}`, { peerRank: dir.peer });
  }
  const { dict, slots } = decodeTensorDict(frame);
  const tensors: Tensor[] = [];
  try {
    for (const s of slots) {
      // vLLM keeps only the device *type*: a sender's cuda:3 tensor lands on this rank's cuda device.
      const device = s.device === 'cpu' ? 'cpu' : sameType(s.device, io.device, s.key);
      const t = io.empty(s.shape, s.dtype, device);
      tensors.push(t);
      if (s.nbytes > 0) await moveTensor(io, t, dir, false, b.next());
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

async function moveTensor(io: DictIo, t: Tensor, dir: Direction, sending: boolean, o: OpOptions): Promise<void> {
  const onDevice = !isCpu(t);
  if (onDevice && !io.comm) {
    throw invalidArgument(`tensor dict: a ${t.device} tensor needs a device communicator (create the group with useDeviceCommunicator)`);
  }
  if (dir.kind === 'broadcast') {
    if (onDevice) await io.comm!.broadcast(t, dir.peer, o);
    else await io.cpu.broadcast(t as CpuTensor, { src: dir.peer, ...o });
  } else if (sending) {
    if (onDevice) await io.comm!.send(t, dir.peer, o);
    else await io.cpu.send(t as CpuTensor, dir.peer, o);
  } else {
    if (onDevice) await io.comm!.recv(t, dir.peer, o);
    else await io.cpu.recv(t as CpuTensor, dir.peer, o);
  }
}
