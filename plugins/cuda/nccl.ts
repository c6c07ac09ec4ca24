/**
 * What the cuda communicator and its collectives share: the device type, the dtypes and ops NCCL
 * reduces (and how a reduction maps to NCCL's type and op), the completion polling's pace, and
 * the libraries a communicator is given (NcclLibs). communicator.ts re-exports the public names.
 */
import { checkReduce, dtypeInfo, invalidArgument, isPreMulSum, premulScalarBytes, type DType, type OpOptions, type ReduceOp, type ReduceOpSpec } from 'groupcomm/plugin';
import type { CudaRuntime } from './memory.js';
import { koffi, NcclDataType, NcclRedOp, type FnTable } from './transport.js';

export const DEVICE_TYPE = 'cuda';

/** Dtypes NCCL reduces on every GPU it supports (fp8 needs sm_90; int16 has no NCCL type). */
export const CUDA_REDUCE_DTYPES: readonly DType[] = [
  'int8', 'uint8', 'int32', 'uint32', 'int64', 'uint64', 'float16', 'float32', 'float64', 'bfloat16', 'bool',
];
/** With NCCL >= 2.24 and every device sm_90 or later, fp8 reduces too. */
export const CUDA_FP8_REDUCE_DTYPES: readonly DType[] = [...CUDA_REDUCE_DTYPES, 'float8_e4m3fn', 'float8_e5m2'];

const OPS: Record<ReduceOp, number> = { sum: NcclRedOp.ncclSum, prod: NcclRedOp.ncclProd, max: NcclRedOp.ncclMax, min: NcclRedOp.ncclMin, avg: NcclRedOp.ncclAvg };

/**
 * A reduction's NCCL datatype and op. premulSum has no fixed op: `scalar` then holds the factor's
 * bytes in the dtype, and each operation creates the op with ncclRedOpCreatePreMulSum
 * (ncclScalarHostImmediate) and destroys it once the NCCL call has returned (communicator.ts redOp).
 */
export interface NcclReduceArgs { type: number; op: number; scalar?: Uint8Array }

/**
 * fp8 dtypes NCCL cannot scale at world size 1: its one-rank path (ncclLaunchOneRank, which
 * runs avg and premulSum as a scaling kernel when there is one rank) guards its fp8 cases with
 * `__CUDA_ARCH__ >= 900` in host code, where that macro is never defined, so NCCL answers
 * ncclInvalidArgument (from 2.24, with fp8, to the newest source read), and a non-blocking
 * communicator keeps that error: seen on an H200 with NCCL 2.28.9. avg is the input itself
 * there and goes as sum (a plain copy); premulSum is refused before NCCL sees it
 * (capabilities.premulSumRefusedAtOneRank).
 */
export const ONE_RANK_UNSCALED: readonly DType[] = ['float8_e4m3fn', 'float8_e5m2'];

/**
 * The NCCL type and op for a reduction; bool reduces as uint8 with OR = max and AND = min.
 * `worldSize`, the communicator's: at 1, fp8 may not scale (ONE_RANK_UNSCALED).
 */
export function ncclReduceArgs(dtype: DType, op: ReduceOpSpec, allowed: readonly DType[] = CUDA_REDUCE_DTYPES, worldSize?: number): NcclReduceArgs {
  checkReduce(dtype, op);
  if (!allowed.includes(dtype)) {
    throw invalidArgument(`the cuda backend cannot reduce ${dtype} here (NCCL has no ${dtype} reduction, or not on these GPUs / this NCCL); see capabilities.reduceDtypes`);
  }
  if (worldSize === 1 && ONE_RANK_UNSCALED.includes(dtype)) {
    if (isPreMulSum(op)) throw invalidArgument(`premulSum on ${dtype} at world size 1: NCCL has no one-rank ${dtype} scaling kernel (ncclLaunchOneRank answers invalid argument); see capabilities.premulSumRefusedAtOneRank`);
    if (op === 'avg') return { type: dtypeInfo(dtype)!.ncclType, op: NcclRedOp.ncclSum };
  }
  if (isPreMulSum(op)) return { type: dtypeInfo(dtype)!.ncclType, op: -1, scalar: premulScalarBytes(dtype, op) };
  if (dtype === 'bool') return { type: NcclDataType.ncclUint8, op: op === 'sum' || op === 'max' ? NcclRedOp.ncclMax : NcclRedOp.ncclMin };
  return { type: dtypeInfo(dtype)!.ncclType, op: OPS[op as ReduceOp] };
}

/**
 * The pause between two completion polls: the first few on the next event-loop turn
 * (setImmediate, microseconds: small messages finish within them), then timers (Node rounds
 * them up to 1 ms), kind to the CPU for long operations.
 */
export function pollPause(spins: number): Promise<void> {
  if (spins < 64) return new Promise((resolve) => setImmediate(resolve));
  return new Promise((resolve) => setTimeout(resolve, 1));
}

/**
 * A CUDA stream (cudaStream_t) of the caller's: a bigint (koffi 3's pointer; PyTorch's
 * `torch.cuda.current_stream().cuda_stream`), or a pointer object koffi can take the address of;
 * 0n or null is the legacy default stream.
 */
export type CudaStream = bigint | object | null;

/** The cuda communicator's per-call options: `stream` runs the operation on the caller's stream. */
export interface CudaOpOptions extends OpOptions {
  stream?: CudaStream;
}

/** `stream` as the handle NCCL takes (undefined: the communicator's own); INVALID_ARGUMENT for anything else. */
export function callerStream(stream: unknown, what: string, rank: number): bigint | undefined {
  if (stream === undefined) return undefined;
  if (stream === null) return 0n;
  if (typeof stream === 'bigint' && stream >= 0n && stream < 1n << 64n) return stream;
  if (typeof stream === 'object') {
    try { return BigInt(koffi().address(stream)); } catch { /* not a pointer */ }
  }
  throw invalidArgument(`${what}: stream must be a cudaStream_t (a bigint or a koffi pointer; 0n or null: the legacy default stream), got ${typeof stream === 'bigint' ? stream : typeof stream}`, { rank });
}

/** NCCL_SPLIT_NOCOLOR (nccl.h): this rank takes no part in the new communicator. */
export const NCCL_SPLIT_NOCOLOR = -1;

/** How long completion is polled without yielding to the event loop (ms; 20 µs). */
export const SPIN_MS = 0.02;

export interface NcclLibs {
  cuda: CudaRuntime; nccl: FnTable; ncclVersion: number; ncclPath: string;
  /** What reductions take here (capabilities.reduceDtypes: fp8 only on sm_90+ with NCCL 2.24+). */
  reduceDtypes: readonly DType[];
}
