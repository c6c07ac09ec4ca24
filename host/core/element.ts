/**
 * Element codecs for the dtypes JavaScript lacks (float16, bfloat16, float8_e4m3fn,
 * float8_e5m2: round to nearest even, e4m3fn overflow → NaN as torch does) and per-element
 * access to little-endian bytes of any dtype. Re-exported by host/device/elementwise.ts (the
 * plugin kit); here so that the layers below the device layer (premul.ts) use them too.
 */
import type { DType } from './dtype.js';

export interface MiniFloat { exp: number; man: number; bias: number; /** IEEE-style inf/NaN (else e4m3fn: no inf, one NaN) */ ieee: boolean }
const F16: MiniFloat = { exp: 5, man: 10, bias: 15, ieee: true };
const BF16: MiniFloat = { exp: 8, man: 7, bias: 127, ieee: true };
const E4M3FN: MiniFloat = { exp: 4, man: 3, bias: 7, ieee: false };
const E5M2: MiniFloat = { exp: 5, man: 2, bias: 15, ieee: true };

const MINI: Partial<Record<DType, MiniFloat>> = { float16: F16, bfloat16: BF16, float8_e4m3fn: E4M3FN, float8_e5m2: E5M2 };

function roundHalfEven(q: number): number {
  const f = Math.floor(q);
  const d = q - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

/** Bits of `x` in the small float format `m` (round to nearest even; overflow → inf, or NaN for e4m3fn). */
export function encodeMiniFloat(x: number, m: MiniFloat): number {
  const width = 1 + m.exp + m.man;
  const sign = x < 0 || Object.is(x, -0) ? 1 << (width - 1) : 0;
  const expAll = (1 << m.exp) - 1;
  const nan = m.ieee ? (expAll << m.man) | (1 << (m.man - 1)) : (expAll << m.man) | ((1 << m.man) - 1);
  if (Number.isNaN(x)) return nan;
  const a = Math.abs(x);
  if (a === 0) return sign;
  const inf = m.ieee ? sign | (expAll << m.man) : sign | nan;
  if (a === Infinity) return inf;
  const minExp = 1 - m.bias;
  let e = Math.floor(Math.log2(a));
  if (2 ** e > a) e--;
  if (2 ** (e + 1) <= a) e++;
  let bits: number;
  if (e < minExp) {
    // Subnormal: a = q · 2^(minExp - man); q rounding up to 2^man lands on the smallest normal.
    bits = roundHalfEven(a / 2 ** (minExp - m.man));
  } else {
    let q = roundHalfEven(a / 2 ** (e - m.man));
    if (q === 2 ** (m.man + 1)) { q = 2 ** m.man; e++; }
    const field = e + m.bias;
    const maxField = m.ieee ? expAll - 1 : expAll;
    if (field > maxField) return inf;
    bits = (field << m.man) | (q - 2 ** m.man);
    if (!m.ieee && bits === ((expAll << m.man) | ((1 << m.man) - 1))) return inf; // e4m3fn: that pattern is NaN
  }
  return sign | bits;
}

export function decodeMiniFloat(bits: number, m: MiniFloat): number {
  const width = 1 + m.exp + m.man;
  const s = (bits >> (width - 1)) & 1 ? -1 : 1;
  const field = (bits >> m.man) & ((1 << m.exp) - 1);
  const mant = bits & ((1 << m.man) - 1);
  const expAll = (1 << m.exp) - 1;
  if (m.ieee && field === expAll) return mant ? NaN : s * Infinity;
  if (!m.ieee && field === expAll && mant === (1 << m.man) - 1) return NaN;
  if (field === 0) return s * mant * 2 ** (1 - m.bias - m.man);
  return s * (1 + mant / 2 ** m.man) * 2 ** (field - m.bias);
}

export const MINIFLOATS = { float16: F16, bfloat16: BF16, float8_e4m3fn: E4M3FN, float8_e5m2: E5M2 } as const;

/** Element `i` of `bytes` (little-endian) as a number, or a bigint for the 64-bit integers. */
export function readElement(dtype: DType, dv: DataView, i: number): number | bigint {
  switch (dtype) {
    case 'int8': return dv.getInt8(i);
    case 'uint8': case 'bool': return dv.getUint8(i);
    case 'int16': return dv.getInt16(i * 2, true);
    case 'int32': return dv.getInt32(i * 4, true);
    case 'uint32': return dv.getUint32(i * 4, true);
    case 'int64': return dv.getBigInt64(i * 8, true);
    case 'uint64': return dv.getBigUint64(i * 8, true);
    case 'float32': return dv.getFloat32(i * 4, true);
    case 'float64': return dv.getFloat64(i * 8, true);
    case 'float16': case 'bfloat16': return decodeMiniFloat(dv.getUint16(i * 2, true), MINI[dtype]!);
    case 'float8_e4m3fn': case 'float8_e5m2': return decodeMiniFloat(dv.getUint8(i), MINI[dtype]!);
  }
}

/** Writes `v` as element `i`, wrapping integers like C and rounding floats to nearest even. */
export function writeElement(dtype: DType, dv: DataView, i: number, v: number | bigint): void {
  switch (dtype) {
    case 'int8': return dv.setInt8(i, Number(v));
    case 'uint8': return dv.setUint8(i, Number(v));
    case 'bool': return dv.setUint8(i, v ? 1 : 0);
    case 'int16': return dv.setInt16(i * 2, Number(v), true);
    case 'int32': return dv.setInt32(i * 4, Number(v), true);
    case 'uint32': return dv.setUint32(i * 4, Number(v), true);
    case 'int64': return dv.setBigInt64(i * 8, BigInt.asIntN(64, BigInt(v)), true);
    case 'uint64': return dv.setBigUint64(i * 8, BigInt.asUintN(64, BigInt(v)), true);
    case 'float32': return dv.setFloat32(i * 4, Number(v), true);
    case 'float64': return dv.setFloat64(i * 8, Number(v), true);
    case 'float16': case 'bfloat16': return dv.setUint16(i * 2, encodeMiniFloat(Number(v), MINI[dtype]!), true);
    case 'float8_e4m3fn': case 'float8_e5m2': return dv.setUint8(i, encodeMiniFloat(Number(v), MINI[dtype]!));
  }
}

