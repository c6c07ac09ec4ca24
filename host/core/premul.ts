/**
 * The pre-multiplied sum, NCCL's `ncclRedOpCreatePreMulSum` and PyTorch's
 * `_make_nccl_premul_sum(factor)`: every rank's input is multiplied by a scalar, then the products
 * are summed. `premulSum(factor)` makes the op object that reductions accept as `op`, beside the
 * names 'sum', 'prod', 'min', 'max', 'avg'.
 *
 * The scalar has the tensor's dtype, as NCCL's (ncclScalarHostImmediate: a host value of the
 * reduction's datatype): for an integer dtype the factor is truncated toward zero (C's
 * conversion) and must fit the dtype, else ERR_GROUPCOMM_INVALID_ARGUMENT; for a float dtype it
 * is rounded to the dtype (float16 0.1 is 0.0999755859375). Each product is then computed in the
 * dtype: integers wrap around (two's complement), floats are rounded once to the dtype. bool has
 * no pre-multiplied sum. Every rank must pass the same factor; it is not compared across ranks
 * (NCCL does not either).
 */
import { invalidArgument } from '../base/errors.js';
import { dtypeInfo, type DType } from './dtype.js';
import { readElement, writeElement } from './element.js';
import type { ReduceOp } from './reduce.js';

/** The op object of a pre-multiplied sum; make it with premulSum(). */
export interface PreMulSum {
  readonly kind: 'premulSum';
  readonly factor: number;
}

/** What a reduction takes as `op`: a reduce op's name, or a premulSum(factor) object. */
export type ReduceOpSpec = ReduceOp | PreMulSum;

/** A frozen pre-multiplied-sum op: `allReduce(x, { op: premulSum(0.5) })` sums x / 2 over the ranks. */
export function premulSum(factor: number): PreMulSum {
  if (typeof factor !== 'number' || !Number.isFinite(factor)) throw invalidArgument(`premulSum: factor must be a finite number, got ${String(factor)}`);
  return Object.freeze({ kind: 'premulSum' as const, factor });
}

export function isPreMulSum(op: unknown): op is PreMulSum {
  return typeof op === 'object' && op !== null && (op as { kind?: unknown }).kind === 'premulSum';
}

/** The op's name in messages and fingerprints: 'premulSum' for the object. */
export function opName(op: ReduceOpSpec): ReduceOp | 'premulSum' {
  return isPreMulSum(op) ? 'premulSum' : op;
}

const INT_RANGE: Partial<Record<DType, [number, number]>> = {
  int8: [-128, 127], uint8: [0, 255], int16: [-32768, 32767], int32: [-(2 ** 31), 2 ** 31 - 1], uint32: [0, 2 ** 32 - 1],
  int64: [-(2 ** 63), 2 ** 63 - 1], uint64: [0, 2 ** 64 - 1],
};

/**
 * The scalar as the tensor's dtype holds it (the value NCCL is given): integers truncated toward
 * zero and range-checked (a bigint for the 64-bit ones), floats rounded to the dtype.
 */
export function premulScalar(dtype: DType, op: PreMulSum): number | bigint {
  const f = op.factor;
  if (typeof f !== 'number' || !Number.isFinite(f)) throw invalidArgument(`premulSum: factor must be a finite number, got ${String(f)}`);
  if (dtype === 'bool') throw invalidArgument('premulSum is not defined for bool (a product with a scalar has no bool meaning)');
  if (!dtypeInfo(dtype)) throw invalidArgument(`unknown dtype '${String(dtype)}'`);
  const range = INT_RANGE[dtype];
  if (range) {
    const t = Math.trunc(f) + 0; // -0 → 0
    // 2^63 - 1 and 2^64 - 1 round up to powers of two as doubles: the bound itself is outside.
    if (t < range[0] || t > range[1] || (dtype.endsWith('64') && t === range[1])) {
      throw invalidArgument(`premulSum: factor ${f} is ${t} as ${dtype} (truncated toward zero, as NCCL's scalar of the tensor's dtype), outside [${range[0]}, ${range[1]}]`);
    }
    return dtype.endsWith('64') ? BigInt(t) : t;
  }
  // Round to the dtype through its own encoding.
  const one = new DataView(new ArrayBuffer(8));
  writeElement(dtype, one, 0, f);
  return readElement(dtype, one, 0) as number;
}

/** The scalar's bytes in the dtype (little-endian): what ncclRedOpCreatePreMulSum reads with ncclScalarHostImmediate. */
export function premulScalarBytes(dtype: DType, op: PreMulSum): Uint8Array {
  const s = premulScalar(dtype, op);
  const b = new Uint8Array(dtypeInfo(dtype)!.itemSize);
  writeElement(dtype, new DataView(b.buffer), 0, s);
  return b;
}

/**
 * dst[i] = src[i] · scalar, in the dtype's arithmetic (integers wrap, floats round once); dst and
 * src have the same length (they may be the same bytes).
 */
export function scaleBytes(dtype: DType, dst: Uint8Array, src: Uint8Array, op: PreMulSum): void {
  const s = premulScalar(dtype, op);
  const size = dtypeInfo(dtype)!.itemSize;
  if (dst.byteLength !== src.byteLength || dst.byteLength % size !== 0) {
    throw invalidArgument(`premulSum: ${src.byteLength} bytes into ${dst.byteLength}, not whole ${dtype} elements of the same count`);
  }
  const n = dst.byteLength / size;
  const aligned = dst.byteOffset % size === 0 && src.byteOffset % size === 0;
  const typed = aligned ? TYPED[dtype] : undefined;
  if (typed) {
    const d = new typed(dst.buffer, dst.byteOffset, n) as unknown as ArrayLike<number> & { [i: number]: number };
    const x = new typed(src.buffer, src.byteOffset, n) as unknown as ArrayLike<number>;
    // 32-bit integers: Math.imul is the product modulo 2^32, which the store narrows further.
    if (dtype === 'float32' || dtype === 'float64') for (let i = 0; i < n; i++) d[i] = x[i] * (s as number);
    else for (let i = 0; i < n; i++) d[i] = Math.imul(x[i], s as number);
    return;
  }
  // 64-bit integers (bigint), the small floats (decoded, multiplied exactly in float64, rounded
  // once on encoding), and unaligned views.
  const dv = new DataView(dst.buffer, dst.byteOffset, dst.byteLength);
  const sv = new DataView(src.buffer, src.byteOffset, src.byteLength);
  for (let i = 0; i < n; i++) {
    const v = readElement(dtype, sv, i);
    writeElement(dtype, dv, i, typeof v === 'bigint' ? v * (s as bigint) : v * (s as number));
  }
}

type Typed = new (b: ArrayBufferLike, off: number, n: number) => ArrayLike<number>;
const TYPED: Partial<Record<DType, Typed>> = {
  int8: Int8Array, uint8: Uint8Array, int16: Int16Array, int32: Int32Array, uint32: Uint32Array, float32: Float32Array, float64: Float64Array,
};
