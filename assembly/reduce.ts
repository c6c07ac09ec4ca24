// Reduction kernels: dst = op(dst, src) over n elements, for every dtype.
//
// Semantics (the host's reduce wrapper documents the same rules to users):
// - Op codes equal NCCL's ncclRedOp_t (sum 0, prod 1, max 2, min 3, avg 4) so the device plugin
//   can pass them through. `reduce` treats avg as sum; the caller divides once at the end with
//   `reduceDivide` (avg = sum, then divide by the number of contributions).
// - Integers wrap around (two's complement) for sum and prod; min/max respect signedness.
//   Integer avg truncates toward zero (C / NCCL semantics), after a sum that may have wrapped.
// - Floats follow IEEE 754 with round-to-nearest-even. min/max are the IEEE 754-2019
//   minimum/maximum (what WebAssembly's f32.min/f32x4.min compute and what torch.minimum /
//   torch.maximum do): a NaN in either operand gives NaN, and -0 < +0, so min(-0, +0) = -0 and
//   max(-0, +0) = +0 whatever the operand order.
// - float16, bfloat16 and the float8 types are widened to f32, combined in f32, and rounded back
//   with round-to-nearest-even. f32 carries more than 2p+2 significand bits for each of them, so
//   the double rounding is innocuous: results equal a correctly rounded operation in the narrow
//   type. Subnormals are kept (no flush to zero). Every NaN result is written as one canonical
//   quiet NaN: float16 0x7e00, bfloat16 0x7fc0, float8_e4m3fn 0x7f, float8_e5m2 0x7f (NaN signs
//   and payloads carry no meaning, and WebAssembly does not define them).
// - float8_e4m3fn has no infinity; like torch (c10::Float8_e4m3fn) a result beyond the largest
//   finite value (448) after rounding, or an infinite input, becomes NaN with the sign kept
//   (0x7f / 0xff). float8_e5m2 is IEEE-like: overflow rounds to ±inf.
// - bool bytes are read as false (0) or true (anything else) and written as 0 or 1:
//   sum and max are logical or, prod and min are logical and. avg is refused for bool.
import {
  DTYPE_INT8, DTYPE_UINT8, DTYPE_INT16, DTYPE_INT32, DTYPE_UINT32, DTYPE_INT64, DTYPE_UINT64,
  DTYPE_FLOAT16, DTYPE_FLOAT32, DTYPE_FLOAT64, DTYPE_BFLOAT16, DTYPE_FLOAT8_E4M3FN,
  DTYPE_FLOAT8_E5M2, DTYPE_BOOL,
} from './dtype';

export const REDUCE_SUM: i32 = 0;
export const REDUCE_PROD: i32 = 1;
export const REDUCE_MAX: i32 = 2;
export const REDUCE_MIN: i32 = 3;
export const REDUCE_AVG: i32 = 4;

export const REDUCE_OK: i32 = 0;
export const REDUCE_ERR_OP: i32 = 1;
export const REDUCE_ERR_DTYPE: i32 = 2;
export const REDUCE_ERR_DIVISOR: i32 = 3;

const SUM = REDUCE_SUM;
const PROD = REDUCE_PROD;
const MAX = REDUCE_MAX;
const MIN = REDUCE_MIN;

// Op markers. The op reaches the loops as a type parameter, not as a value: AssemblyScript
// resolves sizeof<O>() at compile time, so every (dtype, op) pair compiles to its own
// branch-free loop. (With the op passed as a constant argument instead, binaryen merged the
// four near-identical loops back into one that tested the op on every vector.)
type OpSum = u8;
type OpProd = u16;
type OpMax = u32;
type OpMin = u64;

// ---------------------------------------------------------------------------------------------
// Narrow float formats <-> f32. One generic codec parameterised by exponent bits E, mantissa
// bits M, and whether the format is "fn" (finite + NaN only: no infinities, the all-ones code is
// NaN). All parameters are constants at every call site, so the optimizer folds them.

// @ts-ignore: decorator
@inline function decodeNarrow(bits: u32, E: u32, M: u32, fn: bool): f32 {
  const bias: u32 = (1 << (E - 1)) - 1;
  const emax: u32 = (1 << E) - 1;
  const mmask: u32 = (1 << M) - 1;
  const neg = (bits >> (E + M)) & 1;
  const e = (bits >> M) & emax;
  const m = bits & mmask;
  if (e == 0) {
    // Subnormal (or zero): m units of 2^(1 - bias - M); exact in f32.
    const v = <f32>m * reinterpret<f32>((128 - bias - M) << 23);
    return neg ? -v : v;
  }
  if (fn) {
    if (e == emax && m == mmask) return NaN;
  } else if (e == emax) {
    if (m != 0) return NaN;
    return neg ? -Infinity : Infinity;
  }
  return reinterpret<f32>((neg << 31) | ((e - bias + 127) << 23) | (m << (23 - M)));
}

// @ts-ignore: decorator
@inline function encodeNarrow(x: f32, E: u32, M: u32, fn: bool, nanBits: u32): u32 {
  const bias: i32 = (1 << (E - 1)) - 1;
  const emax: u32 = (1 << E) - 1;
  const bits = reinterpret<u32>(x);
  const sign = (bits >> 31) << (E + M);
  const a = bits & 0x7fffffff;
  if (a > 0x7f800000) return nanBits;
  // The first code that is not finite: infinity for IEEE-like formats, NaN for fn formats.
  const limit: u32 = fn ? nanBits : emax << M;
  const e = <i32>(a >> 23) - 127 + bias;
  const shift: u32 = 23 - M;
  let r: u32;
  let rem: u32;
  let half: u32;
  if (e >= 1) {
    if (e > <i32>emax + 1) return sign | limit;
    r = (<u32>e << M) | ((a & 0x7fffff) >> shift);
    rem = a & ((1 << shift) - 1);
    half = 1 << (shift - 1);
  } else {
    if (a < 0x00800000) return sign; // f32 subnormals are far below every narrow format
    const s = shift + 1 - <u32>e;
    if (s > 25) return sign;
    const sig = (a & 0x7fffff) | 0x800000;
    r = sig >> s;
    rem = sig & ((1 << s) - 1);
    half = 1 << (s - 1);
  }
  // Round to nearest, ties to even; a carry out of the mantissa correctly bumps the exponent.
  if (rem > half || (rem == half && (r & 1) != 0)) r++;
  if (r >= limit) return sign | limit;
  return sign | r;
}

// @ts-ignore: decorator
@inline function f16ToF32(h: u32): f32 { return decodeNarrow(h, 5, 10, false); }
// @ts-ignore: decorator
@inline function f32ToF16(x: f32): u32 { return encodeNarrow(x, 5, 10, false, 0x7e00); }
// @ts-ignore: decorator
@inline function e4m3ToF32(h: u32): f32 { return decodeNarrow(h, 4, 3, true); }
// @ts-ignore: decorator
@inline function f32ToE4m3(x: f32): u32 { return encodeNarrow(x, 4, 3, true, 0x7f); }
// @ts-ignore: decorator
@inline function e5m2ToF32(h: u32): f32 { return decodeNarrow(h, 5, 2, false); }
// @ts-ignore: decorator
@inline function f32ToE5m2(x: f32): u32 { return encodeNarrow(x, 5, 2, false, 0x7f); }

// @ts-ignore: decorator
@inline function bf16ToF32(h: u32): f32 { return reinterpret<f32>(h << 16); }
// @ts-ignore: decorator
@inline function f32ToBf16(x: f32): u32 {
  const b = reinterpret<u32>(x);
  if ((b & 0x7fffffff) > 0x7f800000) return 0x7fc0;
  // Adding 0x7fff plus the lowest kept bit rounds to nearest, ties to even; overflow carries
  // into the exponent and lands exactly on infinity.
  return (b + 0x7fff + ((b >> 16) & 1)) >> 16;
}

/** Exported for tests: narrow float bits -> f32 for dtype (float16, bfloat16, float8_*). */
export function narrowToF32(dtype: i32, bits: u32): f32 {
  switch (dtype) {
    case DTYPE_FLOAT16: return f16ToF32(bits);
    case DTYPE_BFLOAT16: return bf16ToF32(bits);
    case DTYPE_FLOAT8_E4M3FN: return e4m3ToF32(bits);
    case DTYPE_FLOAT8_E5M2: return e5m2ToF32(bits);
    default: return NaN;
  }
}

/** Exported for tests: f32 -> narrow float bits (round to nearest even), or 0xffffffff. */
export function f32ToNarrow(dtype: i32, x: f32): u32 {
  switch (dtype) {
    case DTYPE_FLOAT16: return f32ToF16(x);
    case DTYPE_BFLOAT16: return f32ToBf16(x);
    case DTYPE_FLOAT8_E4M3FN: return f32ToE4m3(x);
    case DTYPE_FLOAT8_E5M2: return f32ToE5m2(x);
    default: return 0xffffffff;
  }
}

// ---------------------------------------------------------------------------------------------
// Scalar element operations.

// @ts-ignore: decorator
@inline function opInt<T, O>(a: T, b: T): T {
  if (sizeof<O>() == sizeof<OpSum>()) return <T>(a + b);
  if (sizeof<O>() == sizeof<OpProd>()) return <T>(a * b);
  if (sizeof<O>() == sizeof<OpMax>()) return a > b ? a : b;
  return a < b ? a : b;
}

// @ts-ignore: decorator
@inline function opFloat<T, O>(a: T, b: T): T {
  if (sizeof<O>() == sizeof<OpSum>()) return a + b;
  if (sizeof<O>() == sizeof<OpProd>()) return a * b;
  if (sizeof<O>() == sizeof<OpMax>()) return max<T>(a, b); // f32.max / f64.max: NaN-propagating, +0 > -0
  return min<T>(a, b);
}

// Scalar loop over elements [from, n), for integer and f32/f64 element types.
// @ts-ignore: decorator
@inline function scalarLoop<T, O>(dst: usize, src: usize, from: usize, n: usize): void {
  const sz = <usize>sizeof<T>();
  const end = n * sz;
  for (let i = from * sz; i < end; i += sz) {
    const a = load<T>(dst + i);
    const b = load<T>(src + i);
    if (isFloat<T>()) store<T>(dst + i, opFloat<T, O>(a, b));
    else store<T>(dst + i, opInt<T, O>(a, b));
  }
}

// ---------------------------------------------------------------------------------------------
// SIMD element operations on 16-byte vectors of lane type T.

// @ts-ignore: decorator
@inline function mulI8x16(a: v128, b: v128): v128 {
  // No i8x16.mul: multiply as 16-bit lanes and keep the low byte of each product.
  const lo = i16x8.extmul_low_i8x16_u(a, b);
  const hi = i16x8.extmul_high_i8x16_u(a, b);
  return i8x16.shuffle(lo, hi, 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
}

// @ts-ignore: decorator
@inline function vop<T, O>(a: v128, b: v128): v128 {
  if (sizeof<O>() == sizeof<OpSum>()) return v128.add<T>(a, b);
  if (sizeof<O>() == sizeof<OpProd>()) {
    if (sizeof<T>() == 1) return mulI8x16(a, b);
    return v128.mul<T>(a, b);
  }
  if (isInteger<T>() && sizeof<T>() == 8) {
    // No i64x2.min/max and no unsigned i64x2 compare: flip the sign bit for unsigned lanes.
    let x = a;
    let y = b;
    if (!isSigned<T>()) {
      const bias = i64x2.splat(<i64>0x8000000000000000);
      x = v128.xor(a, bias);
      y = v128.xor(b, bias);
    }
    const aGreater = i64x2.gt_s(x, y);
    if (sizeof<O>() == sizeof<OpMax>()) return v128.bitselect(a, b, aGreater);
    return v128.bitselect(b, a, aGreater);
  }
  if (sizeof<O>() == sizeof<OpMax>()) return v128.max<T>(a, b);
  return v128.min<T>(a, b);
}

// Whole 32-byte blocks with SIMD, the rest scalar; handles every length.
function vecLoop<T, O>(dst: usize, src: usize, n: usize): void {
  const bytes = n * <usize>sizeof<T>();
  const end = bytes & ~<usize>31;
  for (let i: usize = 0; i < end; i += 32) {
    const p = dst + i;
    const q = src + i;
    const r0 = vop<T, O>(v128.load(p), v128.load(q));
    const r1 = vop<T, O>(v128.load(p, 16), v128.load(q, 16));
    v128.store(p, r0);
    v128.store(p, r1, 16);
  }
  scalarLoop<T, O>(dst, src, end / <usize>sizeof<T>(), n);
}

function reduceVec<T>(op: i32, dst: usize, src: usize, n: usize): void {
  if (op == SUM) vecLoop<T, OpSum>(dst, src, n);
  else if (op == PROD) vecLoop<T, OpProd>(dst, src, n);
  else if (op == MAX) vecLoop<T, OpMax>(dst, src, n);
  else vecLoop<T, OpMin>(dst, src, n);
}

// ---------------------------------------------------------------------------------------------
// bool: normalize to 0/1, then or (sum, max) / and (prod, min).

function reduceBool(op: i32, dst: usize, src: usize, n: usize): void {
  const isOr = op == SUM || op == MAX;
  const zero = i8x16.splat(0);
  const one = i8x16.splat(1);
  const end = n & ~<usize>15;
  for (let i: usize = 0; i < end; i += 16) {
    const a = i8x16.ne(v128.load(dst + i), zero);
    const b = i8x16.ne(v128.load(src + i), zero);
    v128.store(dst + i, v128.and(isOr ? v128.or(a, b) : v128.and(a, b), one));
  }
  for (let i = end; i < n; i++) {
    const a = load<u8>(dst + i) != 0;
    const b = load<u8>(src + i) != 0;
    store<u8>(dst + i, <u8>(isOr ? a || b : a && b));
  }
}

// ---------------------------------------------------------------------------------------------
// bfloat16 with SIMD: 8 lanes widened to two f32x4, combined, rounded back.

// @ts-ignore: decorator
@inline function fop<O>(a: v128, b: v128): v128 {
  if (sizeof<O>() == sizeof<OpSum>()) return f32x4.add(a, b);
  if (sizeof<O>() == sizeof<OpProd>()) return f32x4.mul(a, b);
  if (sizeof<O>() == sizeof<OpMax>()) return f32x4.max(a, b);
  return f32x4.min(a, b);
}

// @ts-ignore: decorator
@inline function bf16Round(x: v128): v128 {
  const lsb = v128.and(i32x4.shr_u(x, 16), i32x4.splat(1));
  const r = i32x4.shr_u(i32x4.add(i32x4.add(x, i32x4.splat(0x7fff)), lsb), 16);
  return v128.bitselect(i32x4.splat(0x7fc0), r, f32x4.ne(x, x));
}

function bf16Loop<O>(dst: usize, src: usize, n: usize): void {
  const zero = i32x4.splat(0);
  const end = (n & ~<usize>7) << 1;
  for (let i: usize = 0; i < end; i += 16) {
    const a = v128.load(dst + i);
    const b = v128.load(src + i);
    // Put each 16-bit value in the high half of a 32-bit lane: that is its f32.
    const alo = i8x16.shuffle(zero, a, 0, 1, 16, 17, 2, 3, 18, 19, 4, 5, 20, 21, 6, 7, 22, 23);
    const ahi = i8x16.shuffle(zero, a, 0, 1, 24, 25, 2, 3, 26, 27, 4, 5, 28, 29, 6, 7, 30, 31);
    const blo = i8x16.shuffle(zero, b, 0, 1, 16, 17, 2, 3, 18, 19, 4, 5, 20, 21, 6, 7, 22, 23);
    const bhi = i8x16.shuffle(zero, b, 0, 1, 24, 25, 2, 3, 26, 27, 4, 5, 28, 29, 6, 7, 30, 31);
    const rlo = bf16Round(fop<O>(alo, blo));
    const rhi = bf16Round(fop<O>(ahi, bhi));
    v128.store(dst + i, i16x8.narrow_i32x4_u(rlo, rhi));
  }
  for (let i = end; i < n << 1; i += 2) {
    const r = opFloat<f32, O>(bf16ToF32(load<u16>(dst + i)), bf16ToF32(load<u16>(src + i)));
    store<u16>(dst + i, <u16>f32ToBf16(r));
  }
}

function reduceBf16(op: i32, dst: usize, src: usize, n: usize): void {
  if (op == SUM) bf16Loop<OpSum>(dst, src, n);
  else if (op == PROD) bf16Loop<OpProd>(dst, src, n);
  else if (op == MAX) bf16Loop<OpMax>(dst, src, n);
  else bf16Loop<OpMin>(dst, src, n);
}

// ---------------------------------------------------------------------------------------------
// float16 and float8 with SIMD: the same codec as decodeNarrow/encodeNarrow, four u32 lanes at
// a time, mostly in integer arithmetic (no tables). All compared values are below 2^31, so
// signed compares (one instruction each on x86) are exact.

// @ts-ignore: decorator
@inline function narrowToF32x4(h: v128, E: u32, M: u32, fn: bool): v128 {
  // h: four u32 lanes holding narrow-float codes.
  const bias: u32 = (1 << (E - 1)) - 1;
  const emax: u32 = (1 << E) - 1;
  const sign = i32x4.shl(v128.and(h, i32x4.splat(1 << (E + M))), 31 - (E + M));
  const em = v128.and(h, i32x4.splat((1 << (E + M)) - 1));
  const moved = i32x4.shl(em, 23 - M);
  // Normal: rebias the exponent.
  const normal = i32x4.add(moved, i32x4.splat((127 - bias) << 23));
  // Subnormal or zero: the mantissa counts units of 2^(1 - bias - M).
  const sub = f32x4.mul(f32x4.convert_i32x4_s(em), f32x4.splat(reinterpret<f32>((128 - bias - M) << 23)));
  let mag = v128.bitselect(sub, normal, i32x4.lt_s(em, i32x4.splat(1 << M)));
  if (fn) {
    // Only the all-ones code is NaN.
    mag = v128.bitselect(f32x4.splat(NaN), mag, i32x4.eq(em, i32x4.splat((1 << (E + M)) - 1)));
  } else {
    // All-ones exponent: infinity or NaN, mantissa kept.
    const special = v128.or(moved, i32x4.splat(0x7f800000));
    mag = v128.bitselect(special, mag, i32x4.gt_s(em, i32x4.splat((emax << M) - 1)));
  }
  return v128.or(mag, sign);
}

// @ts-ignore: decorator
@inline function f32x4ToNarrow(x: v128, E: u32, M: u32, fn: bool, nanBits: u32): v128 {
  // Result: four u32 lanes holding narrow-float codes.
  const bias: u32 = (1 << (E - 1)) - 1;
  const emax: u32 = (1 << E) - 1;
  const shift: u32 = 23 - M;
  const limit: u32 = fn ? nanBits : emax << M;
  const sign = i32x4.shr_u(v128.and(x, i32x4.splat(0x80000000)), 31 - (E + M));
  const a = v128.and(x, i32x4.splat(0x7fffffff));
  // Normal range: rebias, round to nearest even at `shift`, clamp to the first non-finite code
  // (infinity, or NaN for fn formats: torch's overflow-to-NaN). Below the normal range the
  // rebias wraps; those lanes take the subnormal result instead.
  const rebased = i32x4.sub(a, i32x4.splat((127 - bias) << 23));
  const lsb = v128.and(i32x4.shr_u(rebased, shift), i32x4.splat(1));
  let normal = i32x4.shr_u(i32x4.add(i32x4.add(rebased, i32x4.splat((1 << (shift - 1)) - 1)), lsb), shift);
  normal = i32x4.min_s(normal, i32x4.splat(limit));
  // Below the smallest normal: adding 2^(1 - bias - M + 23) puts the f32 ulp at the format's
  // subnormal unit, so the hardware's round-to-nearest-even rounds, and the low bits are the code.
  const magic = i32x4.splat((151 - bias - M) << 23);
  const sub = i32x4.sub(f32x4.add(a, magic), magic);
  let mag = v128.bitselect(sub, normal, i32x4.lt_s(a, i32x4.splat((128 - bias) << 23)));
  // NaN is canonical and unsigned; everything else keeps its sign.
  const isNan = i32x4.gt_s(a, i32x4.splat(0x7f800000));
  mag = v128.bitselect(i32x4.splat(nanBits), mag, isNan);
  return v128.or(mag, v128.andnot(sign, isNan));
}

function f16Loop<O>(dst: usize, src: usize, n: usize): void {
  const end = (n & ~<usize>7) << 1;
  for (let i: usize = 0; i < end; i += 16) {
    const a = v128.load(dst + i);
    const b = v128.load(src + i);
    const rlo = f32x4ToNarrow(fop<O>(
      narrowToF32x4(i32x4.extend_low_i16x8_u(a), 5, 10, false),
      narrowToF32x4(i32x4.extend_low_i16x8_u(b), 5, 10, false)), 5, 10, false, 0x7e00);
    const rhi = f32x4ToNarrow(fop<O>(
      narrowToF32x4(i32x4.extend_high_i16x8_u(a), 5, 10, false),
      narrowToF32x4(i32x4.extend_high_i16x8_u(b), 5, 10, false)), 5, 10, false, 0x7e00);
    v128.store(dst + i, i16x8.narrow_i32x4_u(rlo, rhi));
  }
  for (let i = end; i < n << 1; i += 2) {
    const r = opFloat<f32, O>(f16ToF32(load<u16>(dst + i)), f16ToF32(load<u16>(src + i)));
    store<u16>(dst + i, <u16>f32ToF16(r));
  }
}

function reduceF16(op: i32, dst: usize, src: usize, n: usize): void {
  if (op == SUM) f16Loop<OpSum>(dst, src, n);
  else if (op == PROD) f16Loop<OpProd>(dst, src, n);
  else if (op == MAX) f16Loop<OpMax>(dst, src, n);
  else f16Loop<OpMin>(dst, src, n);
}

// One quarter (4 lanes) of a 16-byte float8 vector: widen, combine, round back.
// @ts-ignore: decorator
@inline function fp8Quarter<O>(a: v128, b: v128, E: u32, M: u32, fn: bool): v128 {
  return f32x4ToNarrow(fop<O>(narrowToF32x4(a, E, M, fn), narrowToF32x4(b, E, M, fn)), E, M, fn, 0x7f);
}

// @ts-ignore: decorator
@inline function fp8Loop<O>(dst: usize, src: usize, n: usize, E: u32, M: u32, fn: bool): void {
  const end = n & ~<usize>15;
  for (let i: usize = 0; i < end; i += 16) {
    const a = v128.load(dst + i);
    const b = v128.load(src + i);
    const a0 = i16x8.extend_low_i8x16_u(a);
    const a1 = i16x8.extend_high_i8x16_u(a);
    const b0 = i16x8.extend_low_i8x16_u(b);
    const b1 = i16x8.extend_high_i8x16_u(b);
    const r0 = fp8Quarter<O>(i32x4.extend_low_i16x8_u(a0), i32x4.extend_low_i16x8_u(b0), E, M, fn);
    const r1 = fp8Quarter<O>(i32x4.extend_high_i16x8_u(a0), i32x4.extend_high_i16x8_u(b0), E, M, fn);
    const r2 = fp8Quarter<O>(i32x4.extend_low_i16x8_u(a1), i32x4.extend_low_i16x8_u(b1), E, M, fn);
    const r3 = fp8Quarter<O>(i32x4.extend_high_i16x8_u(a1), i32x4.extend_high_i16x8_u(b1), E, M, fn);
    v128.store(dst + i, i8x16.narrow_i16x8_u(i16x8.narrow_i32x4_u(r0, r1), i16x8.narrow_i32x4_u(r2, r3)));
  }
  for (let i = end; i < n; i++) {
    const r = opFloat<f32, O>(
      decodeNarrow(load<u8>(dst + i), E, M, fn), decodeNarrow(load<u8>(src + i), E, M, fn));
    store<u8>(dst + i, <u8>encodeNarrow(r, E, M, fn, 0x7f));
  }
}

function reduceE4m3(op: i32, dst: usize, src: usize, n: usize): void {
  if (op == SUM) fp8Loop<OpSum>(dst, src, n, 4, 3, true);
  else if (op == PROD) fp8Loop<OpProd>(dst, src, n, 4, 3, true);
  else if (op == MAX) fp8Loop<OpMax>(dst, src, n, 4, 3, true);
  else fp8Loop<OpMin>(dst, src, n, 4, 3, true);
}

function reduceE5m2(op: i32, dst: usize, src: usize, n: usize): void {
  if (op == SUM) fp8Loop<OpSum>(dst, src, n, 5, 2, false);
  else if (op == PROD) fp8Loop<OpProd>(dst, src, n, 5, 2, false);
  else if (op == MAX) fp8Loop<OpMax>(dst, src, n, 5, 2, false);
  else fp8Loop<OpMin>(dst, src, n, 5, 2, false);
}

// ---------------------------------------------------------------------------------------------
// Entry points.

/**
 * dst[i] = op(dst[i], src[i]) for i in [0, n). dst and src may be unaligned; they must either
 * be the same region or not overlap. avg reduces as sum (finish with `reduceDivide`).
 * Returns REDUCE_OK, REDUCE_ERR_OP or REDUCE_ERR_DTYPE.
 */
export function reduce(op: i32, dtype: i32, dst: usize, src: usize, n: usize): i32 {
  if (op < SUM || op > REDUCE_AVG) return REDUCE_ERR_OP;
  if (op == REDUCE_AVG) {
    if (dtype == DTYPE_BOOL) return REDUCE_ERR_OP;
    op = SUM;
  }
  switch (dtype) {
    case DTYPE_INT8: reduceVec<i8>(op, dst, src, n); break;
    case DTYPE_UINT8: reduceVec<u8>(op, dst, src, n); break;
    case DTYPE_INT16: reduceVec<i16>(op, dst, src, n); break;
    case DTYPE_INT32: reduceVec<i32>(op, dst, src, n); break;
    case DTYPE_UINT32: reduceVec<u32>(op, dst, src, n); break;
    case DTYPE_INT64: reduceVec<i64>(op, dst, src, n); break;
    case DTYPE_UINT64: reduceVec<u64>(op, dst, src, n); break;
    case DTYPE_FLOAT32: reduceVec<f32>(op, dst, src, n); break;
    case DTYPE_FLOAT64: reduceVec<f64>(op, dst, src, n); break;
    case DTYPE_FLOAT16: reduceF16(op, dst, src, n); break;
    case DTYPE_BFLOAT16: reduceBf16(op, dst, src, n); break;
    case DTYPE_FLOAT8_E4M3FN: reduceE4m3(op, dst, src, n); break;
    case DTYPE_FLOAT8_E5M2: reduceE5m2(op, dst, src, n); break;
    case DTYPE_BOOL: reduceBool(op, dst, src, n); break;
    default: return REDUCE_ERR_DTYPE;
  }
  return REDUCE_OK;
}

// @ts-ignore: decorator
@inline function divInt<T>(ptr: usize, n: usize, d: i32): void {
  const sz = <usize>sizeof<T>();
  const end = n * sz;
  if (sizeof<T>() == 8) {
    for (let i: usize = 0; i < end; i += sz) {
      store<T>(ptr + i, load<T>(ptr + i) / <T>d);
    }
  } else if (isSigned<T>()) {
    for (let i: usize = 0; i < end; i += sz) store<T>(ptr + i, <T>(<i32>load<T>(ptr + i) / d));
  } else {
    for (let i: usize = 0; i < end; i += sz) store<T>(ptr + i, <T>(<u32>load<T>(ptr + i) / <u32>d));
  }
}

/**
 * ptr[i] = ptr[i] / divisor for i in [0, n): the last step of avg. Integers truncate toward
 * zero; floats divide with round-to-nearest-even in the dtype's precision (narrow floats in f32,
 * then rounded, which is correctly rounded). bool has no average (REDUCE_ERR_DTYPE).
 * Returns REDUCE_OK, REDUCE_ERR_DTYPE or REDUCE_ERR_DIVISOR (divisor < 1).
 */
export function reduceDivide(dtype: i32, ptr: usize, n: usize, divisor: i32): i32 {
  if (divisor < 1) return REDUCE_ERR_DIVISOR;
  const df = <f32>divisor;
  switch (dtype) {
    case DTYPE_INT8: divInt<i8>(ptr, n, divisor); break;
    case DTYPE_UINT8: divInt<u8>(ptr, n, divisor); break;
    case DTYPE_INT16: divInt<i16>(ptr, n, divisor); break;
    case DTYPE_INT32: divInt<i32>(ptr, n, divisor); break;
    case DTYPE_UINT32: divInt<u32>(ptr, n, divisor); break;
    case DTYPE_INT64: divInt<i64>(ptr, n, divisor); break;
    case DTYPE_UINT64: divInt<u64>(ptr, n, divisor); break;
    case DTYPE_FLOAT32: {
      // Division, not multiplication by 1/divisor: only division is correctly rounded.
      const vd = f32x4.splat(df);
      const end = (n & ~<usize>3) << 2;
      for (let i: usize = 0; i < end; i += 16) v128.store(ptr + i, f32x4.div(v128.load(ptr + i), vd));
      for (let i = end; i < n << 2; i += 4) store<f32>(ptr + i, load<f32>(ptr + i) / df);
      break;
    }
    case DTYPE_FLOAT64: {
      const dd = <f64>divisor;
      const vd = f64x2.splat(dd);
      const end = (n & ~<usize>1) << 3;
      for (let i: usize = 0; i < end; i += 16) v128.store(ptr + i, f64x2.div(v128.load(ptr + i), vd));
      for (let i = end; i < n << 3; i += 8) store<f64>(ptr + i, load<f64>(ptr + i) / dd);
      break;
    }
    case DTYPE_FLOAT16: {
      const vd = f32x4.splat(df);
      const end = (n & ~<usize>7) << 1;
      for (let i: usize = 0; i < end; i += 16) {
        const a = v128.load(ptr + i);
        const lo = f32x4ToNarrow(f32x4.div(narrowToF32x4(i32x4.extend_low_i16x8_u(a), 5, 10, false), vd), 5, 10, false, 0x7e00);
        const hi = f32x4ToNarrow(f32x4.div(narrowToF32x4(i32x4.extend_high_i16x8_u(a), 5, 10, false), vd), 5, 10, false, 0x7e00);
        v128.store(ptr + i, i16x8.narrow_i32x4_u(lo, hi));
      }
      for (let i = end; i < n << 1; i += 2) store<u16>(ptr + i, <u16>f32ToF16(f16ToF32(load<u16>(ptr + i)) / df));
      break;
    }
    case DTYPE_BFLOAT16: {
      const vd = f32x4.splat(df);
      const zero = i32x4.splat(0);
      const end = (n & ~<usize>7) << 1;
      for (let i: usize = 0; i < end; i += 16) {
        const a = v128.load(ptr + i);
        const lo = i8x16.shuffle(zero, a, 0, 1, 16, 17, 2, 3, 18, 19, 4, 5, 20, 21, 6, 7, 22, 23);
        const hi = i8x16.shuffle(zero, a, 0, 1, 24, 25, 2, 3, 26, 27, 4, 5, 28, 29, 6, 7, 30, 31);
        v128.store(ptr + i, i16x8.narrow_i32x4_u(bf16Round(f32x4.div(lo, vd)), bf16Round(f32x4.div(hi, vd))));
      }
      for (let i = end; i < n << 1; i += 2) store<u16>(ptr + i, <u16>f32ToBf16(bf16ToF32(load<u16>(ptr + i)) / df));
      break;
    }
    case DTYPE_FLOAT8_E4M3FN:
      for (let i: usize = 0; i < n; i++) {
        store<u8>(ptr + i, <u8>f32ToE4m3(e4m3ToF32(load<u8>(ptr + i)) / df));
      }
      break;
    case DTYPE_FLOAT8_E5M2:
      for (let i: usize = 0; i < n; i++) {
        store<u8>(ptr + i, <u8>f32ToE5m2(e5m2ToF32(load<u8>(ptr + i)) / df));
      }
      break;
    default: return REDUCE_ERR_DTYPE;
  }
  return REDUCE_OK;
}
