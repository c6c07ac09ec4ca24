/**
 * The cuda communicator's fixed-size collectives (allReduce, allGather, reduceScatter, broadcast,
 * gather, allToAll) and send/recv: each checks its tensors and issues one NCCL call, or one NCCL group, through
 * the communicator's issue() (communicator.ts: own stream, device set after awaits, deferred
 * frees, async errors polled, errors mapped). The communicator lends its private parts as a
 * VariableIo (variable.ts); comm and stream are read at enqueue time.
 */
import {
  checkPeer, gatheredShape, invalidArgument, scatteredShape,
  type BroadcastOptions, type GatherOptions, type OpOptions, type OutOptions, type ReduceOptions, type Tensor,
} from 'groupcomm/plugin';
import { NcclDataType } from './transport.js';
import type { VariableIo } from './variable.js';

export async function allReduce(io: VariableIo, input: Tensor, opts: ReduceOptions = {}): Promise<Tensor> {
  const i = io.t(input, 'allReduce');
  const a = io.reduceArgs(input.dtype, opts.op ?? 'sum');
  const o = io.output(opts.out, input, i.count, input.shape, true, 'allReduce');
  return o.settle(io.issue('allReduce', opts, () => {
    const op = io.redOp(a);
    try { io.rc(io.libs.nccl.ncclAllReduce(i.buf.ptr, o.at.buf.ptr, i.count, a.type, op, io.comm(), io.stream()), 'ncclAllReduce'); } finally { io.freeOp(a, op); }
  }, o.tensor));
}

export async function allGather(io: VariableIo, input: Tensor, opts: OutOptions = {}): Promise<Tensor> {
  const i = io.t(input, 'allGather');
  const o = io.output(opts.out, input, i.count * io.worldSize, gatheredShape(input.shape, io.worldSize), false, 'allGather');
  return o.settle(io.issue('allGather', opts, () => io.rc(io.libs.nccl.ncclAllGather(i.buf.ptr, o.at.buf.ptr, i.nbytes, NcclDataType.ncclUint8, io.comm(), io.stream()), 'ncclAllGather'), o.tensor));
}

export async function reduceScatter(io: VariableIo, input: Tensor, opts: ReduceOptions = {}): Promise<Tensor> {
  const i = io.t(input, 'reduceScatter');
  io.splits(i.count, 'reduceScatter');
  const a = io.reduceArgs(input.dtype, opts.op ?? 'sum');
  const P = io.worldSize;
  const shape = input.shape.length > 0 && input.shape[0] % P === 0 ? scatteredShape(input.shape, P) : [i.count / P];
  const o = io.output(opts.out, input, i.count / P, shape, false, 'reduceScatter');
  return o.settle(io.issue('reduceScatter', opts, () => {
    const op = io.redOp(a);
    try { io.rc(io.libs.nccl.ncclReduceScatter(i.buf.ptr, o.at.buf.ptr, o.at.count, a.type, op, io.comm(), io.stream()), 'ncclReduceScatter'); } finally { io.freeOp(a, op); }
  }, o.tensor));
}

export async function broadcast(io: VariableIo, tensor: Tensor, opts: BroadcastOptions): Promise<Tensor> {
  const i = io.t(tensor, 'broadcast');
  const src = opts?.src;
  checkPeer(src, io.worldSize, 'broadcast', io.rank);
  const o = io.output(opts.out, tensor, i.count, tensor.shape, true, 'broadcast');
  // NCCL reads the send buffer on the root only and writes the receive buffer everywhere.
  return o.settle(io.issue('broadcast', opts, () => io.rc(io.libs.nccl.ncclBroadcast(i.buf.ptr, o.at.buf.ptr, i.nbytes, NcclDataType.ncclUint8, src, io.comm(), io.stream()), 'ncclBroadcast'), o.tensor, src));
}

export async function gather(io: VariableIo, input: Tensor, opts: GatherOptions): Promise<Tensor | undefined> {
  const i = io.t(input, 'gather');
  const dst = opts?.dst;
  checkPeer(dst, io.worldSize, 'gather', io.rank);
  const { nccl } = io.libs;
  if (io.rank !== dst) {
    return io.issue('gather', opts, () => io.grouped('gather', () => io.rc(nccl.ncclSend(i.buf.ptr, i.nbytes, NcclDataType.ncclUint8, dst, io.comm(), io.stream()), 'ncclSend')), undefined, dst);
  }
  const o = io.output(opts.out, input, i.count * io.worldSize, gatheredShape(input.shape, io.worldSize), false, 'gather');
  return o.settle(io.issue('gather', opts, () => io.grouped('gather', () => {
    for (let r = 0; r < io.worldSize; r++) {
      const at = o.at.buf.ptr + BigInt(r * i.nbytes);
      if (r === dst) io.libs.cuda.copyOnStream(at, i.buf.ptr, i.nbytes, io.stream());
      else io.rc(nccl.ncclRecv(at, i.nbytes, NcclDataType.ncclUint8, r, io.comm(), io.stream()), 'ncclRecv');
    }
  }), o.tensor, dst));
}

export async function allToAll(io: VariableIo, input: Tensor, opts: OutOptions = {}): Promise<Tensor> {
  const i = io.t(input, 'allToAll');
  io.splits(i.count, 'allToAll');
  const o = io.output(opts.out, input, i.count, input.shape, false, 'allToAll');
  const block = i.nbytes / io.worldSize;
  const { nccl } = io.libs;
  return o.settle(io.issue('allToAll', opts, () => io.grouped('allToAll', () => {
    for (let r = 0; r < io.worldSize; r++) {
      const s = i.buf.ptr + BigInt(r * block), d = o.at.buf.ptr + BigInt(r * block);
      if (r === io.rank) { io.libs.cuda.copyOnStream(d, s, block, io.stream()); continue; }
      io.rc(nccl.ncclSend(s, block, NcclDataType.ncclUint8, r, io.comm(), io.stream()), 'ncclSend');
      io.rc(nccl.ncclRecv(d, block, NcclDataType.ncclUint8, r, io.comm(), io.stream()), 'ncclRecv');
    }
  }), o.tensor));
}

export async function send(io: VariableIo, tensor: Tensor, dst: number, opts?: OpOptions): Promise<void> {
  const x = io.t(tensor, 'send');
  checkPeer(dst, io.worldSize, 'send', io.rank);
  if (dst === io.rank) throw invalidArgument('send: destination is this rank', { rank: io.rank });
  return io.issue('send', opts, () => io.rc(io.libs.nccl.ncclSend(x.buf.ptr, x.nbytes, NcclDataType.ncclUint8, dst, io.comm(), io.stream()), 'ncclSend'), undefined, dst);
}

export async function recv(io: VariableIo, dst: Tensor, src: number, opts?: OpOptions): Promise<Tensor> {
  const x = io.t(dst, 'recv');
  checkPeer(src, io.worldSize, 'recv', io.rank);
  if (src === io.rank) throw invalidArgument('recv: source is this rank', { rank: io.rank });
  return io.issue('recv', opts, () => io.rc(io.libs.nccl.ncclRecv(x.buf.ptr, x.nbytes, NcclDataType.ncclUint8, src, io.comm(), io.stream()), 'ncclRecv'), dst, src);
}
