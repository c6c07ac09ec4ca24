/**
 * The cuda communicator's variable-size collectives (capabilities.variableCollectives), sizes in
 * rows of dim 0, each one NCCL group issued like every other operation (the communicator's
 * issue(): own stream, device set after awaits, deferred frees, async errors polled, errors mapped):
 *
 * - allGatherv: one ncclBroadcast per root inside ncclGroupStart/End, root r's rows to their
 *   place in the result (what vLLM's PyNcclCommunicator.all_gatherv does); a byte copy as ncclUint8.
 * - reduceScatterv: one ncclReduce per root inside a group, root r receiving the reduction of
 *   every rank's rows for r (vLLM's reduce_scatterv); the dtype's NCCL type and op.
 * - allToAllv: grouped ncclSend/ncclRecv per peer with its split, the own block copied on the
 *   stream (PyTorch's all_to_all_single with splits).
 *
 * Roots and peers with no rows are left out: every rank leaves out the same ones when the sizes
 * agree. NCCL cannot check that they agree (neither does vLLM): the coordinator's callers pass
 * the same sizes everywhere; a disagreement shows as a size mismatch or a timeout, not a result.
 */
import { dtypeInfo, invalidArgument, type AllToAllSplitsOptions, type CheckedTensor, type DeviceOutput, type DType, type OpOptions, type ReduceOpSpec, type SizesOptions, type SizesReduceOptions, type Tensor } from 'groupcomm/plugin';
import type { CudaOpOptions, NcclLibs, NcclReduceArgs } from './nccl.js';
import { NcclDataType } from './transport.js';

/** What these collectives (and fixed.ts's) need of a CudaCommunicator (its private parts, lent by it). */
export interface VariableIo {
  readonly rank: number;
  readonly worldSize: number;
  readonly libs: NcclLibs;
  comm(): bigint;
  stream(): bigint;
  t(t: Tensor | undefined, what: string): CheckedTensor;
  output(out: Tensor | undefined, input: Tensor, count: number, shape: number[], inPlace: boolean, what: string): DeviceOutput;
  /** Enqueues on the caller's stream (opts.stream) or the communicator's own; stream() is that stream while enqueue runs. */
  issue<T>(what: string, opts: CudaOpOptions | undefined, enqueue: () => void, result: T, peerRank?: number): Promise<T>;
  grouped(what: string, body: () => void): void;
  rc(rc: number, what: string): void;
  reduceArgs(dtype: DType, op: ReduceOpSpec): NcclReduceArgs;
  /** The ncclRedOp_t to pass: `a.op`, or for premulSum one created now (after the device is set, inside enqueue). */
  redOp(a: NcclReduceArgs): number;
  /** Destroys an op redOp created (premulSum), once the NCCL call that uses it has returned; nothing otherwise. */
  freeOp(a: NcclReduceArgs, op: number): void;
  splits(count: number, what: string): void;
}

const sum = (a: readonly number[]): number => a.reduce((x, y) => x + y, 0);

/** Rows per rank (dim 0) checked, and the bytes of one row. */
function rowsOf(io: VariableIo, t: Tensor, v: unknown, what: string): { counts: number[]; rowBytes: number; rowElems: number } {
  if (t.shape.length === 0) throw invalidArgument(`${what}: a 0-d tensor has no rows`, { rank: io.rank });
  if (!Array.isArray(v) || v.length !== io.worldSize || !v.every((x) => Number.isSafeInteger(x) && x >= 0)) {
    throw invalidArgument(`${what}: expected ${io.worldSize} integers >= 0 (one per rank), got ${JSON.stringify(v)}`, { rank: io.rank });
  }
  const rowElems = t.shape.slice(1).reduce((a, b) => a * b, 1);
  return { counts: [...v], rowElems, rowBytes: rowElems * dtypeInfo(t.dtype)!.itemSize };
}

/** Byte offsets of each rank's block, given rows per rank. */
function offsets(counts: readonly number[], rowBytes: number): number[] {
  const at: number[] = [];
  let k = 0;
  for (const c of counts) { at.push(k); k += c * rowBytes; }
  return at;
}

export function allGatherv(io: VariableIo, input: Tensor, opts: SizesOptions): Promise<Tensor> {
  const i = io.t(input, 'allGatherv');
  const { counts: sizes, rowElems, rowBytes } = rowsOf(io, input, opts?.sizes, 'allGatherv sizes');
  if (input.shape[0] !== sizes[io.rank]) throw invalidArgument(`allGatherv: rank ${io.rank}'s input has ${input.shape[0]} rows, sizes[${io.rank}] says ${sizes[io.rank]}`, { rank: io.rank });
  const total = sum(sizes);
  const o = io.output(opts.out, input, total * rowElems, [total, ...input.shape.slice(1)], false, 'allGatherv');
  const at = offsets(sizes, rowBytes);
  const { nccl } = io.libs;
  return o.settle(io.issue('allGatherv', opts, () => io.grouped('allGatherv', () => {
    for (let r = 0; r < io.worldSize; r++) {
      if (sizes[r] === 0) continue;
      // NCCL reads the send buffer on the root only.
      io.rc(nccl.ncclBroadcast(i.buf.ptr, o.at.buf.ptr + BigInt(at[r]), sizes[r] * rowBytes, NcclDataType.ncclUint8, r, io.comm(), io.stream()), 'ncclBroadcast (allGatherv)');
    }
  }), o.tensor));
}

export function reduceScatterv(io: VariableIo, input: Tensor, opts: SizesReduceOptions): Promise<Tensor> {
  const i = io.t(input, 'reduceScatterv');
  const a = io.reduceArgs(input.dtype, opts?.op ?? 'sum');
  const { counts: sizes, rowElems, rowBytes } = rowsOf(io, input, opts?.sizes, 'reduceScatterv sizes');
  if (input.shape[0] !== sum(sizes)) throw invalidArgument(`reduceScatterv: ${input.shape[0]} rows, the sizes add up to ${sum(sizes)}`, { rank: io.rank });
  const o = io.output(opts.out, input, sizes[io.rank] * rowElems, [sizes[io.rank], ...input.shape.slice(1)], false, 'reduceScatterv');
  const at = offsets(sizes, rowBytes);
  const { nccl } = io.libs;
  return o.settle(io.issue('reduceScatterv', opts, () => {
    const op = io.redOp(a);
    try {
      io.grouped('reduceScatterv', () => {
        for (let r = 0; r < io.worldSize; r++) {
          if (sizes[r] === 0) continue;
          // The receive buffer is written on the root only (NCCL ignores it elsewhere).
          io.rc(nccl.ncclReduce(i.buf.ptr + BigInt(at[r]), o.at.buf.ptr, sizes[r] * rowElems, a.type, op, r, io.comm(), io.stream()), 'ncclReduce (reduceScatterv)');
        }
      });
    } finally {
      io.freeOp(a, op); // after ncclGroupEnd: the group's calls have all been issued
    }
  }, o.tensor));
}

export function allToAllv(io: VariableIo, input: Tensor, opts: AllToAllSplitsOptions = {}): Promise<Tensor> {
  const i = io.t(input, 'allToAllv');
  const rows = input.shape[0];
  const P = io.worldSize;
  const equal = () => { io.splits(rows ?? 0, 'allToAllv'); return Array.from({ length: P }, () => rows / P); };
  const ins = rowsOf(io, input, opts.inputSplits ?? equal(), 'allToAllv inputSplits');
  const outs = rowsOf(io, input, opts.outputSplits ?? equal(), 'allToAllv outputSplits').counts;
  if (sum(ins.counts) !== rows) throw invalidArgument(`allToAllv: ${rows} rows, inputSplits add up to ${sum(ins.counts)}`, { rank: io.rank });
  if (ins.counts[io.rank] !== outs[io.rank]) {
    throw invalidArgument(`allToAllv: rank ${io.rank} sends itself ${ins.counts[io.rank]} rows (inputSplits) but expects ${outs[io.rank]} (outputSplits)`, { rank: io.rank });
  }
  const total = sum(outs);
  const o = io.output(opts.out, input, total * ins.rowElems, [total, ...input.shape.slice(1)], false, 'allToAllv');
  const src = offsets(ins.counts, ins.rowBytes), dst = offsets(outs, ins.rowBytes);
  const { nccl } = io.libs;
  return o.settle(io.issue('allToAllv', opts, () => io.grouped('allToAllv', () => {
    for (let r = 0; r < P; r++) {
      const s = i.buf.ptr + BigInt(src[r]), d = o.at.buf.ptr + BigInt(dst[r]);
      if (r === io.rank) { io.libs.cuda.copyOnStream(d, s, ins.counts[r] * ins.rowBytes, io.stream()); continue; }
      if (ins.counts[r] > 0) io.rc(nccl.ncclSend(s, ins.counts[r] * ins.rowBytes, NcclDataType.ncclUint8, r, io.comm(), io.stream()), 'ncclSend (allToAllv)');
      if (outs[r] > 0) io.rc(nccl.ncclRecv(d, outs[r] * ins.rowBytes, NcclDataType.ncclUint8, r, io.comm(), io.stream()), 'ncclRecv (allToAllv)');
    }
  }), o.tensor));
}
