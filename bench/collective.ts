/**
 * The collective benches' view of one collective call: the method shape (the one place that
 * knows it), the case geometry as nccl-tests defines it, bus-bandwidth factors, and data that
 * lets every rank check every result without holding anyone else's tensor.
 *
 * In place, as the aliasing contract says (docs/cpu-group.md): the input passed as `out`.
 * allReduce and broadcast have both forms; allGather and reduceScatter refuse any overlap of
 * input and output, so they have only the out-of-place form (nccl-tests' in-place allGather, the
 * input as a slice of the output, is not offered).
 */
import { empty, bytesOf, itemSize, type CpuTensor, type DType } from '../host/core/tensor.js';
import { finishAvg, reduceBytes, type ReduceOp } from '../host/core/reduce.js';
import type { CpuGroup } from '../host/cpu/group.js';

export const COLL_OPS = ['allReduce', 'broadcast', 'allGather', 'reduceScatter', 'barrier'] as const;
export type CollOp = (typeof COLL_OPS)[number];

/** Datatypes the benches fill and check (every value an exact small integer in each). */
export const BENCH_DTYPES = ['float32', 'float64', 'float16', 'bfloat16', 'int8', 'uint8', 'int16', 'int32', 'uint32', 'int64', 'uint64'] as const;

export type Place = 'oop' | 'ip';

/** Whether `op` can run in this form: allReduce and broadcast have both, the others out of place only. */
export function offered(op: CollOp, place: Place): boolean {
  if (op === 'barrier') return place === 'oop';
  if (op === 'allReduce' || op === 'broadcast') return true;
  return place === 'oop';
}

export interface CallOptions {
  redop: ReduceOp;
  root: number;
}

/** One collective call; in place when `out === input` (the aliasing contract's in-place form). */
export function call(g: CpuGroup, op: CollOp, input: CpuTensor, out: CpuTensor, o: CallOptions): Promise<unknown> {
  switch (op) {
    case 'allReduce':
      return g.allReduce(input, { op: o.redop, out });
    case 'broadcast':
      return g.broadcast(input, { src: o.root, out });
    case 'allGather':
      return g.allGather(input, { out });
    case 'reduceScatter':
      return g.reduceScatter(input, { op: o.redop, out });
    case 'barrier':
      return g.barrier();
  }
}

/** nccl-tests' bus-bandwidth factor (doc/PERFORMANCE.md): busbw = algbw × factor. */
export function busFactor(op: CollOp, n: number): number {
  if (op === 'allReduce') return (2 * (n - 1)) / n;
  if (op === 'allGather' || op === 'reduceScatter') return (n - 1) / n;
  return 1;
}

/** Whether the op takes a reduction operator / a root (the table prints the others as none / -1). */
export const reduces = (op: CollOp) => op === 'allReduce' || op === 'reduceScatter';
export const rooted = (op: CollOp) => op === 'broadcast';

/**
 * A case's element counts as nccl-tests has them: `count` is the larger buffer's (allGather: the
 * output; reduceScatter: the input), rounded down to a multiple of the world size where blocks
 * are per rank; size = count × item size.
 */
export function geometry(op: CollOp, bytes: number, dtype: DType, n: number): { count: number; inCount: number; outCount: number } {
  const item = itemSize(dtype);
  if (op === 'barrier') return { count: 0, inCount: 0, outCount: 0 };
  let count = Math.floor(bytes / item);
  if (op === 'allGather' || op === 'reduceScatter') count = Math.max(n, Math.floor(count / n) * n);
  else count = Math.max(1, count);
  if (op === 'allGather') return { count, inCount: count / n, outCount: count };
  if (op === 'reduceScatter') return { count, inCount: count, outCount: count / n };
  return { count, inCount: count, outCount: count };
}

// ---- data: rank r's element i is 1 + ((i + r) mod 2), in the case's dtype ----------------------

/** The bytes of the small integer k (1 or 2) in `dtype`. */
function encode(dtype: DType, k: number): Uint8Array {
  const b = new Uint8Array(itemSize(dtype));
  const v = new DataView(b.buffer);
  switch (dtype) {
    case 'float32': v.setFloat32(0, k, true); break;
    case 'float64': v.setFloat64(0, k, true); break;
    case 'float16': v.setUint16(0, k === 1 ? 0x3c00 : 0x4000, true); break;
    case 'bfloat16': v.setUint16(0, k === 1 ? 0x3f80 : 0x4000, true); break;
    case 'int64': case 'uint64': v.setBigUint64(0, BigInt(k), true); break;
    default: b[0] = k; // little-endian integers of 1, 2 and 4 bytes
  }
  return b;
}

/** Two elements: rank r's values at even and odd indices (offset by `shift` elements). */
function pair(dtype: DType, r: number, shift = 0): Uint8Array {
  const a = encode(dtype, 1 + ((shift + r) & 1));
  const b = encode(dtype, 1 + ((shift + 1 + r) & 1));
  const p = new Uint8Array(a.length * 2);
  p.set(a);
  p.set(b, a.length);
  return p;
}

/** Fills `t` with rank r's values (the pattern repeats every two elements). */
export function fill(t: CpuTensor, r: number): void {
  const buf = bytesOf(t);
  const p = pair(t.dtype, r);
  if (buf.length === 0) return;
  buf.set(p.subarray(0, Math.min(p.length, buf.length)));
  for (let have = p.length; have < buf.length; have *= 2) buf.copyWithin(have, 0, Math.min(have, buf.length - have));
}

export function poison(t: CpuTensor): void {
  bytesOf(t).fill(0); // 0 is neither 1 nor 2 in every dtype
}

export function alloc(count: number, dtype: DType): CpuTensor {
  return empty([count], dtype);
}

/** Every rank's pair folded with `redop`: the expected values at even and odd indices. */
function reducedPair(dtype: DType, n: number, redop: ReduceOp): Uint8Array {
  const acc = pair(dtype, 0);
  for (let r = 1; r < n; r++) reduceBytes(redop === 'avg' ? 'sum' : redop, dtype, acc, pair(dtype, r));
  if (redop === 'avg') finishAvg(dtype, acc, n);
  return acc;
}

/** Elements of `out` that differ from what `op` must leave on `rank`. */
export function countWrong(op: CollOp, out: CpuTensor, rank: number, n: number, o: CallOptions): number {
  const item = itemSize(out.dtype);
  const got = bytesOf(out);
  const count = got.length / item;
  // expected(i) = pat[(i + shift) & 1], with pat per block for allGather
  const check = (pat: Uint8Array, from: number, to: number, shift: number): number => {
    let bad = 0;
    for (let i = from; i < to; i++) {
      const e = ((i + shift) & 1) * item;
      const g = i * item;
      for (let b = 0; b < item; b++) {
        if (got[g + b] !== pat[e + b]) {
          bad++;
          break;
        }
      }
    }
    return bad;
  };
  if (op === 'allReduce') return check(reducedPair(out.dtype, n, o.redop), 0, count, 0);
  if (op === 'reduceScatter') return check(reducedPair(out.dtype, n, o.redop), 0, count, (rank * count) & 1);
  if (op === 'broadcast') return check(pair(out.dtype, o.root), 0, count, 0);
  if (op === 'allGather') {
    const per = count / n;
    let bad = 0;
    for (let p = 0; p < n; p++) bad += check(pair(out.dtype, p), p * per, (p + 1) * per, -p * per);
    return bad;
  }
  return 0;
}
