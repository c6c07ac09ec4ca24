/**
 * A deliberately plain scalar reference for the reduce kernels, written independently of
 * assembly/reduce.ts: narrow floats are decoded to JS numbers by their definition, combined in
 * f64, and rounded to the narrow format by exact arithmetic (scale by the ulp, round half to
 * even), not by bit tricks. f64 has more than 2p+2 bits for every narrow format and for f32,
 * so combining in f64 and rounding once gives the correctly rounded result.
 */
import type { DType } from '../../host/core/dtype.js';

export interface NarrowFormat {
  E: number;
  M: number;
  /** Finite-and-NaN format: no infinities, the all-ones code is NaN, overflow gives NaN. */
  fn: boolean;
  nan: number;
}

export const NARROW: Partial<Record<DType, NarrowFormat>> = {
  float16: { E: 5, M: 10, fn: false, nan: 0x7e00 },
  bfloat16: { E: 8, M: 7, fn: false, nan: 0x7fc0 },
  float8_e4m3fn: { E: 4, M: 3, fn: true, nan: 0x7f },
  float8_e5m2: { E: 5, M: 2, fn: false, nan: 0x7f },
};

export function decodeNarrow(f: NarrowFormat, code: number): number {
  const bias = 2 ** (f.E - 1) - 1;
  const emax = 2 ** f.E - 1;
  const neg = (code >> (f.E + f.M)) & 1;
  const e = (code >> f.M) & emax;
  const m = code & (2 ** f.M - 1);
  const s = neg ? -1 : 1;
  if (f.fn && e === emax && m === 2 ** f.M - 1) return NaN;
  if (!f.fn && e === emax) return m ? NaN : s * Infinity;
  if (e === 0) return s * m * 2 ** (1 - bias - f.M);
  return s * (1 + m / 2 ** f.M) * 2 ** (e - bias);
}

function roundHalfEven(q: number): number {
  const fl = Math.floor(q);
  const frac = q - fl;
  if (frac > 0.5) return fl + 1;
  if (frac < 0.5) return fl;
  return fl % 2 === 0 ? fl : fl + 1;
}

/** floor(log2(a)) for a > 0, exactly (Math.log2 alone may be off by one near powers of 2). */
function binade(a: number): number {
  if (a === 0) return -Infinity;
  let e = Math.floor(Math.log2(a));
  while (2 ** e > a) e--;
  while (2 ** (e + 1) <= a) e++;
  return e;
}

export function encodeNarrow(f: NarrowFormat, x: number): number {
  if (Number.isNaN(x)) return f.nan;
  const bias = 2 ** (f.E - 1) - 1;
  const emax = 2 ** f.E - 1;
  const signBit = x < 0 || Object.is(x, -0) ? 2 ** (f.E + f.M) : 0;
  const a = Math.abs(x);
  // Largest finite value: IEEE formats stop one binade below all-ones; fn formats use the top
  // binade except its all-ones mantissa.
  const maxFinite = f.fn
    ? (2 - 2 / 2 ** f.M) * 2 ** (emax - bias)
    : (2 - 1 / 2 ** f.M) * 2 ** (emax - 1 - bias);
  const overflow = signBit + (f.fn ? f.nan : emax * 2 ** f.M);
  if (a === Infinity) return overflow;
  const minNormalExp = 1 - bias;
  const e = Math.max(minNormalExp, binade(a));
  const ulp = 2 ** (e - f.M);
  const v = roundHalfEven(a / ulp) * ulp;
  if (v > maxFinite) return overflow;
  if (v < 2 ** minNormalExp) return signBit + v / 2 ** (minNormalExp - f.M);
  const ve = binade(v);
  const m = (v / 2 ** ve - 1) * 2 ** f.M;
  return signBit + (ve + bias) * 2 ** f.M + m;
}

/** torch.minimum / torch.maximum on numbers: NaN wins, -0 < +0. */
export function fmin(a: number, b: number): number {
  if (Number.isNaN(a) || Number.isNaN(b)) return NaN;
  if (a === 0 && b === 0) return Object.is(a, -0) || Object.is(b, -0) ? -0 : 0;
  return a < b ? a : b;
}
export function fmax(a: number, b: number): number {
  if (Number.isNaN(a) || Number.isNaN(b)) return NaN;
  if (a === 0 && b === 0) return Object.is(a, 0) || Object.is(b, 0) ? 0 : -0;
  return a > b ? a : b;
}

export type Op = 'sum' | 'prod' | 'min' | 'max';

function applyNum(op: Op, a: number, b: number): number {
  switch (op) {
    case 'sum': return a + b;
    case 'prod': return a * b;
    case 'min': return fmin(a, b);
    case 'max': return fmax(a, b);
  }
}

type IntArr = Int8Array | Uint8Array | Int16Array | Int32Array | Uint32Array;
const INT_CTORS: Partial<Record<DType, new (b: ArrayBuffer) => IntArr>> = {
  int8: Int8Array, uint8: Uint8Array, int16: Int16Array, int32: Int32Array, uint32: Uint32Array,
};

/** dst = op(dst, src) on raw little-endian bytes (fresh aligned copies are fine). */
export function referenceReduce(op: Op, dtype: DType, dst: Uint8Array, src: Uint8Array): Uint8Array {
  const out = dst.slice();
  const s = src.slice();
  const nf = NARROW[dtype];
  if (dtype === 'bool') {
    for (let i = 0; i < out.length; i++) {
      const a = out[i] !== 0;
      const b = s[i] !== 0;
      out[i] = (op === 'sum' || op === 'max' ? a || b : a && b) ? 1 : 0;
    }
  } else if (nf) {
    const two = nf.E + nf.M + 1 === 16;
    const get = (u: Uint8Array, i: number) => (two ? u[2 * i] | (u[2 * i + 1] << 8) : u[i]);
    const n = two ? out.length / 2 : out.length;
    for (let i = 0; i < n; i++) {
      const r = encodeNarrow(nf, applyNum(op, decodeNarrow(nf, get(out, i)), decodeNarrow(nf, get(s, i))));
      if (two) { out[2 * i] = r & 0xff; out[2 * i + 1] = r >> 8; } else out[i] = r;
    }
  } else if (dtype === 'float32' || dtype === 'float64') {
    const C = dtype === 'float32' ? Float32Array : Float64Array;
    const A = new C(out.buffer);
    const B = new C(s.buffer);
    for (let i = 0; i < A.length; i++) A[i] = applyNum(op, A[i], B[i]); // store rounds to f32 once
  } else if (dtype === 'int64' || dtype === 'uint64') {
    const C = dtype === 'int64' ? BigInt64Array : BigUint64Array;
    const A = new C(out.buffer);
    const B = new C(s.buffer);
    for (let i = 0; i < A.length; i++) {
      const a = A[i], b = B[i];
      A[i] = op === 'sum' ? a + b : op === 'prod' ? a * b : op === 'min' ? (a < b ? a : b) : (a > b ? a : b);
    }
  } else {
    const C = INT_CTORS[dtype]!;
    const A = C === undefined ? undefined : new C(out.buffer);
    const B = new C(s.buffer);
    for (let i = 0; i < A!.length; i++) {
      const a = A![i], b = B[i];
      // Typed-array stores wrap; Math.imul keeps 32-bit products exact before wrapping.
      A![i] = op === 'sum' ? a + b : op === 'prod' ? Math.imul(a, b) : op === 'min' ? Math.min(a, b) : Math.max(a, b);
    }
  }
  return out;
}

/** The avg finish: each element divided by d (integers truncate toward zero). */
export function referenceDivide(dtype: DType, buf: Uint8Array, d: number): Uint8Array {
  const out = buf.slice();
  const nf = NARROW[dtype];
  if (nf) {
    const two = nf.E + nf.M + 1 === 16;
    const n = two ? out.length / 2 : out.length;
    for (let i = 0; i < n; i++) {
      const c = two ? out[2 * i] | (out[2 * i + 1] << 8) : out[i];
      const r = encodeNarrow(nf, decodeNarrow(nf, c) / d);
      if (two) { out[2 * i] = r & 0xff; out[2 * i + 1] = r >> 8; } else out[i] = r;
    }
  } else if (dtype === 'float32' || dtype === 'float64') {
    const A = dtype === 'float32' ? new Float32Array(out.buffer) : new Float64Array(out.buffer);
    for (let i = 0; i < A.length; i++) A[i] = A[i] / d;
  } else if (dtype === 'int64' || dtype === 'uint64') {
    const A = dtype === 'int64' ? new BigInt64Array(out.buffer) : new BigUint64Array(out.buffer);
    for (let i = 0; i < A.length; i++) A[i] = A[i] / BigInt(d);
  } else {
    const A = new INT_CTORS[dtype]!(out.buffer);
    for (let i = 0; i < A.length; i++) A[i] = Math.trunc(A[i] / d);
  }
  return out;
}

export { prng } from '../helpers/prng.js';
