/**
 * The device conformance suite's cases: what every DeviceBackendV1 must do, checked against host
 * references computed here, independently of any backend (exact integer arithmetic with
 * BigInt, float64 for floating point, then the dtype's wrap-around or rounding tolerance;
 * integer avg truncates toward zero).
 *
 * Cases (gloo-style parametrisation): every op × every dtype × every reduce op at an odd element
 * count, results into `out`; a size sweep (0, 1, 1000, 65536); every op with a result the
 * communicator allocates and, for allReduce and broadcast, in place; a barrier; then failure
 * behaviour: bad arguments, refused overlaps, issue order, close twice, creation timeout, op
 * timeout, signal abort, abort(); with capabilities.split, a split (SPLIT_CASE). Every case
 * also checks that no input was written.
 * ./run.ts runs them on one rank.
 */
import { decodeMiniFloat, MINIFLOATS } from '../device/elementwise.js';
import type { DeviceBackendV1, ReduceOp } from '../device/types.js';
import { REDUCE_OPS } from '../device/types.js';
import { DTYPE_NAMES, arrayClassOf, type CpuTensor, type DType } from '../core/tensor.js';
import { dtypeInfo } from '../core/dtype.js';

export type Kind = 'allReduce' | 'reduceScatter' | 'allGather' | 'broadcast' | 'sendRecv' | 'gather' | 'allToAll' | 'barrier';

/** Where a case's result goes: a tensor passed as `out`, one the communicator allocates, or the input (in place). */
export type ResultMode = 'out' | 'new' | 'inPlace';

export interface Case {
  id: string; kind: Kind; dtype: DType; op?: ReduceOp; count: number; root?: number; mode: ResultMode;
  /** A premulSum(premul) reduction (op is then 'sum', for the inputs). */
  premul?: number;
}

/** premulSum's factors in the cases: an integer dtype truncates 2.7 to 2 (NCCL's scalar of the tensor's dtype); 0.5 is exact in every float dtype. */
export const premulFactor = (dtype: DType): number => (isFloat(dtype) ? 0.5 : 2.7);

export const FAILURE_CASES = [
  'bad arguments and an out overlapping the input (in place only for allReduce and broadcast) fail locally; the communicator keeps working',
  'operations issued without await run in call order',
  'close twice resolves ([Symbol.asyncDispose] too); later operations fail with ERR_GROUPCOMM_DESTROYED',
  'createCommunicator times out when a rank never joins',
  'an operation past its timeoutMs fails with ERR_GROUPCOMM_TIMEOUT naming the rank, then the communicator is aborted',
  'an aborted signal fails the operation with ERR_GROUPCOMM_ABORTED',
  'abort() fails the operation in flight and every later one with ERR_GROUPCOMM_ABORTED',
] as const;
/**
 * Run for backends with capabilities.split, at world sizes 2 and up, on a communicator of its
 * own. With a bare bootstrap a backend may refuse split (it may need the store for the
 * sub-group's connections): then every rank must get ERR_GROUPCOMM_PLUGIN_UNAVAILABLE.
 */
export const SPLIT_CASE = 'split by color and key (ncclCommSplit semantics): children ordered by key, no color gets undefined, child and parent both work' as const;

/** The colors split uses at a world size: at least one child of two or more, and from 3 ranks a rank with no color. */
export function splitColor(worldSize: number, rank: number): number {
  const table: Record<number, number[]> = { 2: [0, 0], 3: [0, -1, 0], 4: [1, -1, 0, 1] };
  return table[worldSize]?.[rank] ?? (rank === 1 ? -1 : rank % 2);
}

/** Failure cases that need a peer that stays silent (world size 2 and up). */
const NEEDS_PEER = new Set<string>(FAILURE_CASES.slice(3));

const isFloat = (d: DType) => dtypeInfo(d)!.isFloat;

/** Every case for a world size; cases the backend does not support are returned in `unsupported`. */
export function conformanceCases(backend: Pick<DeviceBackendV1, 'capabilities'>, worldSize: number): { cases: Case[]; failures: string[]; unsupported: Case[] } {
  const cases: Case[] = [];
  const unsupported: Case[] = [];
  const N = 13;
  for (const dtype of DTYPE_NAMES) {
    for (const kind of ['allReduce', 'reduceScatter'] as const) {
      for (const op of REDUCE_OPS) {
        if (op === 'avg' && dtype === 'bool') continue;
        const c: Case = { id: `${kind} ${dtype} ${op} n=${N}`, kind, dtype, op, count: N, mode: 'out' };
        (backend.capabilities.reduceDtypes.includes(dtype) ? cases : unsupported).push(c);
      }
      if (dtype !== 'bool' && backend.capabilities.premulSum) {
        const f = premulFactor(dtype);
        const c: Case = { id: `${kind} ${dtype} premulSum(${f}) n=${N}`, kind, dtype, op: 'sum', premul: f, count: N, mode: 'out' };
        const refused = worldSize === 1 && !!backend.capabilities.premulSumRefusedAtOneRank?.includes(dtype);
        (backend.capabilities.reduceDtypes.includes(dtype) && !refused ? cases : unsupported).push(c);
      }
    }
    cases.push({ id: `allGather ${dtype} n=${N}`, kind: 'allGather', dtype, count: N, mode: 'out' });
    cases.push({ id: `broadcast ${dtype} n=${N} root=${worldSize - 1}`, kind: 'broadcast', dtype, count: N, root: worldSize - 1, mode: 'out' });
    if (worldSize > 1) cases.push({ id: `send/recv ${dtype} n=${N}`, kind: 'sendRecv', dtype, count: N, mode: 'out' });
    cases.push({ id: `gather ${dtype} n=${N} root=0`, kind: 'gather', dtype, count: N, root: 0, mode: 'out' });
    cases.push({ id: `allToAll ${dtype} n=${N}×${worldSize}`, kind: 'allToAll', dtype, count: N, mode: 'out' });
  }
  for (const count of [0, 1, 1000, 65536]) {
    cases.push({ id: `allReduce float32 sum n=${count}`, kind: 'allReduce', dtype: 'float32', op: 'sum', count, mode: 'out' });
    cases.push({ id: `allGather float32 n=${count}`, kind: 'allGather', dtype: 'float32', count, mode: 'out' });
  }
  cases.push({ id: `gather int32 n=13 root=${worldSize - 1}`, kind: 'gather', dtype: 'int32', count: 13, root: worldSize - 1, mode: 'out' });
  // The aliasing contract: a result the communicator allocates (no out), and in place.
  const last = worldSize - 1;
  for (const [kind, op, root] of [['allReduce', 'sum'], ['reduceScatter', 'max'], ['allGather'], ['broadcast', undefined, last], ['gather', undefined, last], ['allToAll']] as const) {
    const base = { kind, dtype: 'float32' as const, op, count: N, root };
    cases.push({ ...base, id: `${kind} float32${op ? ` ${op}` : ''} n=${N}${root === undefined ? '' : ` root=${root}`}, result allocated by the communicator`, mode: 'new' });
    if (kind === 'allReduce' || kind === 'broadcast') cases.push({ ...base, id: `${kind} float32${op ? ` ${op}` : ''} n=${N}${root === undefined ? '' : ` root=${root}`}, in place (out = input)`, mode: 'inPlace' });
  }
  cases.push({ id: 'barrier: resolves only once every rank has called it', kind: 'barrier', dtype: 'int32', count: 0, mode: 'new' });
  const failures: string[] = FAILURE_CASES.filter((f) => worldSize > 1 || !NEEDS_PEER.has(f));
  if (backend.capabilities.split && worldSize > 1) failures.push(SPLIT_CASE);
  return { cases, failures, unsupported };
}

// ---- inputs and references ------------------------------------------------------------------

/** Rank `rank`'s input value at element i, as an exact number; small so that results stay exact. */
export function inputValue(dtype: DType, op: ReduceOp | undefined, rank: number, i: number): number {
  const k = (rank * 3 + i) % 5;
  if (dtype === 'bool') return (rank + i) % 2;
  const signed = isFloat(dtype) || dtypeInfo(dtype)!.isSigned;
  if (op === 'prod') return signed ? [-1, 1, 2][(rank + i) % 3] : [1, 2][(rank + i) % 2];
  if (op === 'sum' && (dtype === 'int8' || dtype === 'uint8')) return 60 + k; // wraps at 4 ranks: checks C semantics
  if (dtype === 'float8_e4m3fn' || dtype === 'float8_e5m2') return signed ? k - 2 : k;
  return signed ? k - 2 : k;
}

function toBits(dtype: DType, v: number): number {
  // Inputs are small integers: their encodings are written down by hand, not computed by the
  // code under test (the unit test for elementwise pins the encoder separately).
  const table: Record<string, Record<number, number>> = {
    float16: { [-2]: 0xc000, [-1]: 0xbc00, 0: 0, 1: 0x3c00, 2: 0x4000, 3: 0x4200, 4: 0x4400 },
    bfloat16: { [-2]: 0xc000, [-1]: 0xbf80, 0: 0, 1: 0x3f80, 2: 0x4000, 3: 0x4040, 4: 0x4080 },
    float8_e4m3fn: { [-2]: 0xc0, [-1]: 0xb8, 0: 0, 1: 0x38, 2: 0x40, 3: 0x44, 4: 0x48 },
    float8_e5m2: { [-2]: 0xc0, [-1]: 0xbc, 0: 0, 1: 0x3c, 2: 0x40, 3: 0x42, 4: 0x44 },
  };
  const b = table[dtype]?.[v];
  if (b === undefined) throw new Error(`no hand encoding of ${v} for ${dtype}`);
  return b;
}

/** A CPU tensor of `count` inputs for `rank` (block `b` of a multi-block input uses element index b*count+i). */
export function makeInput(dtype: DType, op: ReduceOp | undefined, rank: number, count: number, offset = 0): CpuTensor {
  const C = arrayClassOf(dtype);
  const a = new C(count);
  for (let i = 0; i < count; i++) {
    const v = inputValue(dtype, op, rank, offset + i);
    if (MINIFLOATS[dtype as keyof typeof MINIFLOATS]) (a as Uint16Array)[i] = toBits(dtype, v);
    else if (dtype === 'int64' || dtype === 'uint64') (a as BigInt64Array)[i] = BigInt(v);
    else (a as Int32Array)[i] = v;
  }
  return { dtype, shape: [count], device: 'cpu', data: a };
}

/** Element i of a CPU tensor as a number (exact for every value these tests produce). */
export function valueAt(t: CpuTensor, i: number): number {
  const m = MINIFLOATS[t.dtype as keyof typeof MINIFLOATS];
  const raw = (t.data as unknown as ArrayLike<number | bigint>)[i];
  return m ? decodeMiniFloat(Number(raw), m) : Number(raw);
}

function wrapInt(dtype: DType, v: bigint): number {
  const bits = dtypeInfo(dtype)!.itemSize * 8;
  return Number(dtypeInfo(dtype)!.isSigned ? BigInt.asIntN(bits, v) : BigInt.asUintN(bits, v));
}

/** The reduction of every rank's element i, per the contract (wrap for integers, exact for floats). */
export function expectedReduce(dtype: DType, op: ReduceOp, worldSize: number, i: number): number {
  const vals = Array.from({ length: worldSize }, (_, r) => inputValue(dtype, op, r, i));
  if (dtype === 'bool') return (op === 'sum' || op === 'max') ? Math.max(...vals) : Math.min(...vals);
  switch (op) {
    case 'max': return Math.max(...vals);
    case 'min': return Math.min(...vals);
    case 'avg': {
      const sum = vals.reduce((a, b) => a + b, 0);
      return isFloat(dtype) ? sum / worldSize : Math.trunc(sum / worldSize); // integers: NCCL's SumPostDiv truncates
    }
    case 'sum': return isFloat(dtype) ? vals.reduce((a, b) => a + b, 0) : wrapInt(dtype, vals.reduce((a, b) => a + BigInt(b), 0n));
    case 'prod': return isFloat(dtype) ? vals.reduce((a, b) => a * b, 1) : wrapInt(dtype, vals.reduce((a, b) => a * BigInt(b), 1n));
  }
}

/** premulSum(factor) of every rank's element i: each input times the factor as the dtype holds it (integers truncate it, products wrap), summed. */
export function expectedPremul(dtype: DType, factor: number, worldSize: number, i: number): number {
  const vals = Array.from({ length: worldSize }, (_, r) => inputValue(dtype, 'sum', r, i));
  if (isFloat(dtype)) return vals.reduce((a, v) => a + v * factor, 0);
  const s = BigInt(Math.trunc(factor));
  return wrapInt(dtype, vals.reduce((a, v) => a + BigInt(v) * s, 0n));
}

/** Relative tolerance: exact for integers; about half an ulp of the dtype for floats (avg rounds). */
const TOL: Partial<Record<DType, number>> = { float32: 1e-6, float64: 1e-12, float16: 1e-3, bfloat16: 8e-3, float8_e4m3fn: 0.07, float8_e5m2: 0.13 };

function close(dtype: DType, got: number, want: number): boolean {
  const tol = TOL[dtype] ?? 0;
  return tol === 0 ? got === want : Math.abs(got - want) <= tol * Math.max(1, Math.abs(want));
}

export function compare(what: string, dtype: DType, got: CpuTensor, want: (i: number) => number, n: number): string | null {
  for (let i = 0; i < n; i++) {
    const g = valueAt(got, i), w = want(i);
    if (!close(dtype, g, w)) return `${what}: element ${i} is ${g}, expected ${w}`;
  }
  return null;
}

