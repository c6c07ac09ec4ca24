import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  reduceBytes, reduceMany, finishAvg, allocCoreBuffer, reduceAt, finishAvgAt, CHUNK_BYTES, type ReduceOp,
} from '../../host/core/reduce.js';
import { DTYPE_NAMES, dtypeInfo, type DType } from '../../host/core/dtype.js';
import { getCore } from '../../host/core/loader.js';
import { ErrorCode, isGroupcommError } from '../../host/base/errors.js';
import {
  NARROW, decodeNarrow, encodeNarrow, referenceReduce, referenceDivide, prng, type Op,
} from './reduce_reference.js';

const OPS: Op[] = ['sum', 'prod', 'min', 'max'];
const LENGTHS = [
  ...Array.from({ length: 71 }, (_, i) => i),
  95, 96, 97, 127, 128, 129, 255, 256, 257, 511, 512, 513, 1000, 1023, 1024, 1025,
];
const MAX_N = 1025;

const f32bits = (u: number) => new Float32Array(new Uint32Array([u]).buffer)[0];

const F32_SPECIAL = [0, -0, Infinity, -Infinity, NaN, f32bits(1), -f32bits(1), f32bits(0x7fffff),
  f32bits(0x800000), 3.4028234663852886e38, -3.4028234663852886e38, 1, -1, 0.5];
const F64_SPECIAL = [0, -0, Infinity, -Infinity, NaN, 5e-324, -5e-324, 2.2250738585072014e-308,
  Number.MAX_VALUE, -Number.MAX_VALUE, 1, -1, 0.1];
const I64_SPECIAL = [0n, 1n, 2n ** 63n, 2n ** 63n - 1n, 2n ** 64n - 1n, 2n ** 32n];

/** Extreme codes for integers and narrow floats: 0, 1, all ones, sign bit, max, ±1 and 1.5. */
function extremesOf(dtype: DType): number[] {
  const bits = dtypeInfo(dtype)!.itemSize * 8;
  const out = [0, 1, 2 ** bits - 1, 2 ** (bits - 1), 2 ** (bits - 1) - 1, 2 ** bits - 2];
  const nf = NARROW[dtype];
  if (nf) out.push(encodeNarrow(nf, 1), encodeNarrow(nf, -1), encodeNarrow(nf, 1.5));
  return out;
}
const EXTREMES = new Map(DTYPE_NAMES.map((d) => [d, extremesOf(d)]));

/** Random element bytes for dtype, rich in the values that break kernels. */
function randomBytes(dtype: DType, n: number, rnd: () => number): Uint8Array {
  const size = dtypeInfo(dtype)!.itemSize;
  const out = new Uint8Array(n * size);
  const dv = new DataView(out.buffer);
  const pick = <T>(xs: T[]) => xs[Math.floor(rnd() * xs.length)];
  const u32 = () => Math.floor(rnd() * 2 ** 32);
  const extremes = EXTREMES.get(dtype)!;
  for (let i = 0; i < n; i++) {
    const p = i * size;
    const r = rnd();
    switch (dtype) {
      case 'bool': out[p] = pick([0, 0, 1, 1, 2, 255]); break;
      case 'float32': {
        const v = r < 0.3 ? pick(F32_SPECIAL) : r < 0.7 ? Math.round((rnd() - 0.5) * 200) / 8 : f32bits(u32());
        dv.setFloat32(p, v, true);
        break;
      }
      case 'float64': {
        if (r < 0.3) dv.setFloat64(p, pick(F64_SPECIAL), true);
        else if (r < 0.7) dv.setFloat64(p, (rnd() - 0.5) * 1e6, true);
        else { dv.setUint32(p, u32(), true); dv.setUint32(p + 4, u32(), true); }
        break;
      }
      case 'int64': case 'uint64': {
        if (r < 0.3) dv.setBigUint64(p, pick(I64_SPECIAL), true);
        else if (r < 0.5) dv.setBigInt64(p, BigInt(Math.round((rnd() - 0.5) * 1000)), true);
        else { dv.setUint32(p, u32(), true); dv.setUint32(p + 4, u32(), true); }
        break;
      }
      default: {
        // Integers and narrow floats: raw random bits (which for the narrow floats covers
        // subnormals, NaNs and infinities), plus the extremes and small values.
        const v = r < 0.25 ? pick(extremes) : r < 0.4 ? Math.floor(rnd() * 8) : u32() % 2 ** (size * 8);
        for (let b = 0; b < size; b++) out[p + b] = Math.floor(v / 2 ** (8 * b)) & 0xff;
      }
    }
  }
  return out;
}

/** Byte equality, except that any NaN equals any NaN for f32/f64 (WebAssembly leaves NaN bits open). */
function sameResult(dtype: DType, got: Uint8Array, want: Uint8Array): string | undefined {
  if (got.length !== want.length) return `length ${got.length} != ${want.length}`;
  if (dtype === 'float32' || dtype === 'float64') {
    const C = dtype === 'float32' ? Float32Array : Float64Array;
    const g = new C(got.slice().buffer);
    const w = new C(want.slice().buffer);
    for (let i = 0; i < g.length; i++) {
      if (!(Object.is(g[i], w[i]) || (Number.isNaN(g[i]) && Number.isNaN(w[i])))) return `element ${i}: got ${g[i]}, want ${w[i]}`;
    }
    return undefined;
  }
  const size = dtypeInfo(dtype)!.itemSize;
  for (let i = 0; i < got.length; i++) {
    if (got[i] !== want[i]) {
      const e = Math.floor(i / size);
      const hex = (u: Uint8Array) => Array.from(u.subarray(e * size, e * size + size)).map((x) => x.toString(16)).join(' ');
      return `element ${e}: got bytes ${hex(got)}, want ${hex(want)}`;
    }
  }
  return undefined;
}

const isInvalid = (e: unknown) => isGroupcommError(e, ErrorCode.INVALID_ARGUMENT);

// The kernels through reduceAt at unaligned addresses, every length in LENGTHS, every op.
for (const dtype of DTYPE_NAMES) {
  test(`reduce ${dtype}: sum/prod/min/max match the reference, lengths 0..1025, unaligned`, () => {
    const size = dtypeInfo(dtype)!.itemSize;
    const rnd = prng(0x5eed + dtypeInfo(dtype)!.code);
    const dstBuf = allocCoreBuffer(MAX_N * size + 32);
    const srcBuf = allocCoreBuffer(MAX_N * size + 32);
    try {
      for (const n of LENGTHS) {
        for (const op of OPS) {
          // Vary both byte offsets so the 16-byte SIMD blocks straddle alignment differently.
          const dOff = (n * 7 + op.length) % 16;
          const sOff = (n * 3 + 5) % 16;
          const a = randomBytes(dtype, n, rnd);
          const b = randomBytes(dtype, n, rnd);
          dstBuf.view().set(a, dOff);
          srcBuf.view().set(b, sOff);
          reduceAt(op, dtype, dstBuf.ptr + dOff, srcBuf.ptr + sOff, n);
          const got = dstBuf.view().slice(dOff, dOff + n * size);
          const bad = sameResult(dtype, got, referenceReduce(op, dtype, a, b));
          if (bad) assert.unreachable(`${op} ${dtype} n=${n} offsets ${dOff}/${sOff}: ${bad}`);
          // src is read-only for the kernel.
          assert.equal(srcBuf.view().slice(sOff, sOff + n * size), b, `${op} ${dtype} n=${n}: src changed`);
        }
      }
    } finally {
      dstBuf.free();
      srcBuf.free();
    }
  });
}

test('reduceBytes: host bytes at odd offsets, every dtype and op, one call per case', () => {
  const rnd = prng(77);
  for (const dtype of DTYPE_NAMES) {
    const size = dtypeInfo(dtype)!.itemSize;
    for (const op of OPS) {
      const n = 37;
      const a = randomBytes(dtype, n, rnd);
      const b = randomBytes(dtype, n, rnd);
      const dstHost = new Uint8Array(n * size + 3);
      const srcHost = new Uint8Array(n * size + 5);
      dstHost.set(a, 3);
      srcHost.set(b, 5);
      reduceBytes(op, dtype, dstHost.subarray(3), srcHost.subarray(5));
      const bad = sameResult(dtype, dstHost.slice(3), referenceReduce(op, dtype, a, b));
      if (bad) assert.unreachable(`${op} ${dtype}: ${bad}`);
    }
  }
});

test('reduceBytes: inputs larger than one chunk are reduced in pieces, all of them', () => {
  const rnd = prng(9);
  // 2.5 chunks of float32 and an odd-sized tail of bfloat16.
  for (const [dtype, bytes] of [['float32', CHUNK_BYTES * 2.5], ['bfloat16', CHUNK_BYTES + 6]] as Array<[DType, number]>) {
    const n = bytes / dtypeInfo(dtype)!.itemSize;
    const a = randomBytes(dtype, n, rnd);
    const b = randomBytes(dtype, n, rnd);
    const dst = a.slice();
    reduceBytes('sum', dtype, dst, b);
    const bad = sameResult(dtype, dst, referenceReduce('sum', dtype, a, b));
    if (bad) assert.unreachable(`${dtype}: ${bad}`);
  }
});

test('reduceBytes with a separate first operand: dst = op(a, src), a and src untouched, one chunk and several, odd offsets', () => {
  const rnd = prng(11);
  for (const [dtype, bytes, op] of [['float32', 4000, 'sum'], ['int64', CHUNK_BYTES * 2 + 24, 'max'], ['float16', CHUNK_BYTES + 6, 'prod']] as Array<[DType, number, Op]>) {
    const n = bytes / dtypeInfo(dtype)!.itemSize;
    const a = randomBytes(dtype, n, rnd);
    const b = randomBytes(dtype, n, rnd);
    const aCopy = a.slice();
    const bCopy = b.slice();
    // dst at an odd byte offset, holding garbage that must not leak into the result.
    const dst = new Uint8Array(bytes + 3).fill(0x5a).subarray(3);
    reduceBytes(op, dtype, dst, b, a);
    const bad = sameResult(dtype, dst, referenceReduce(op, dtype, a, b));
    if (bad) assert.unreachable(`${dtype}: ${bad}`);
    assert.equal(a, aCopy, `${dtype}: a changed`);
    assert.equal(b, bCopy, `${dtype}: src changed`);
  }
  assert.throws(() => reduceBytes('sum', 'float32', new Uint8Array(8), new Uint8Array(8), new Uint8Array(4)), (e: unknown) => isGroupcommError(e) && e.code === ErrorCode.INVALID_ARGUMENT);
});

test('reduceMany: the bytes of a reduceBytes chain in input order, for 1 to 5 inputs, pieces, odd offsets, in place, avg divisor', () => {
  const rnd = prng(77);
  for (const dtype of ['float32', 'bfloat16', 'int64', 'uint8', 'bool', 'float8_e4m3fn'] as DType[]) {
    const size = dtypeInfo(dtype)!.itemSize;
    for (const op of [...OPS, 'avg'] as ReduceOp[]) {
      if (op === 'avg' && dtype === 'bool') continue;
      for (const count of [0, 3, 1001, (CHUNK_BYTES / size) + 5]) {
        for (const k of [1, 2, 5]) {
          // Views at an odd offset into larger buffers: host bytes need no alignment.
          const srcs = Array.from({ length: k }, () => {
            const b = new Uint8Array(count * size + 3);
            for (let i = 0; i < b.length; i++) b[i] = (rnd() * 256) | 0;
            return b.subarray(3);
          });
          const want = srcs[0].slice();
          for (let i = 1; i < k; i++) reduceBytes(op, dtype, want, srcs[i]);
          if (op === 'avg') finishAvg(dtype, want, 7);
          const dst = new Uint8Array(count * size);
          const keep = srcs.map((s) => s.slice());
          reduceMany(op, dtype, dst, srcs, op === 'avg' ? 7 : undefined);
          assert.equal(dst, want, `${dtype} ${op} n=${count} k=${k}`);
          assert.equal(srcs, keep, `${dtype} ${op}: inputs untouched`);
          // In place: dst is the last input.
          reduceMany(op, dtype, srcs[k - 1], srcs, op === 'avg' ? 7 : undefined);
          assert.equal(srcs[k - 1].slice(), want, `${dtype} ${op} n=${count} k=${k} in place`);
        }
      }
    }
  }
  assert.throws(() => reduceMany('sum', 'float32', new Uint8Array(8), [new Uint8Array(8), new Uint8Array(4)]), /an input has 4/);
  assert.throws(() => reduceMany('sum', 'float32', new Uint8Array(8), []), /no inputs/);
  assert.throws(() => reduceMany('sum', 'float32', new Uint8Array(6), [new Uint8Array(6)]), /whole number/);
  assert.throws(() => reduceMany('sum', 'float32', new Uint8Array(8), [new Uint8Array(8)], 0), /must be an integer >= 1/);
});

test('avg: sum of three contributions then finishAvg (and finishAvgAt) matches sum-then-divide', () => {
  const rnd = prng(4242);
  const world = 3;
  for (const dtype of DTYPE_NAMES) {
    if (dtype === 'bool') continue;
    const size = dtypeInfo(dtype)!.itemSize;
    for (const n of [0, 1, 15, 33, 130]) {
      const parts = Array.from({ length: world }, () => randomBytes(dtype, n, rnd));
      let want = parts[0];
      for (let r = 1; r < world; r++) want = referenceReduce('sum', dtype, want, parts[r]);
      want = referenceDivide(dtype, want, world);
      const got = parts[0].slice();
      for (let r = 1; r < world; r++) reduceBytes('avg', dtype, got, parts[r]);
      finishAvg(dtype, got, world);
      const bad = sameResult(dtype, got, want);
      if (bad) assert.unreachable(`avg ${dtype} n=${n}: ${bad}`);
      // The pointer variant on the same data.
      const buf = allocCoreBuffer(n * size + 1);
      const at = parts[0].slice();
      for (let r = 1; r < world; r++) reduceBytes('sum', dtype, at, parts[r]);
      buf.view().set(at, 1);
      finishAvgAt(dtype, buf.ptr + 1, n, world);
      const bad2 = sameResult(dtype, buf.view().slice(1, 1 + n * size), want);
      buf.free();
      if (bad2) assert.unreachable(`finishAvgAt ${dtype} n=${n}: ${bad2}`);
    }
  }
});

test('finishAvg: divisors 1, 2, 7 and 1000 on every dtype, SIMD body and tail', () => {
  const rnd = prng(777);
  for (const dtype of DTYPE_NAMES) {
    if (dtype === 'bool') continue;
    for (const d of [1, 2, 7, 1000]) {
      const data = randomBytes(dtype, 45, rnd);
      const got = data.slice();
      finishAvg(dtype, got, d);
      const bad = sameResult(dtype, got, referenceDivide(dtype, data, d));
      if (bad) assert.unreachable(`divide ${dtype} by ${d}: ${bad}`);
    }
  }
});

test('integer avg truncates toward zero; sums wrap around first', () => {
  const a = new Int32Array([7, -7, 2147483647, 5]);
  const b = new Int32Array([0, 0, 1, 0]);
  const dst = new Uint8Array(a.buffer.slice(0));
  reduceBytes('avg', 'int32', dst, new Uint8Array(b.buffer));
  finishAvg('int32', dst, 2);
  // 7/2 -> 3, -7/2 -> -3 (not -4), 2^31-1 + 1 wraps to -2^31, /2 -> -2^30.
  assert.equal(Array.from(new Int32Array(dst.buffer)), [3, -3, -(2 ** 30), 2]);
  const u = new Uint8Array([250, 10]);
  reduceBytes('sum', 'uint8', u, new Uint8Array([10, 10]));
  assert.equal(Array.from(u), [4, 20]); // 260 wraps to 4
});

// Known bit patterns, computed by hand from the format definitions.
const FIXED: Array<[DType, ReduceOp, number, number, number, string]> = [
  ['float16', 'sum', 0x3c00, 0x3c00, 0x4000, '1 + 1 = 2'],
  ['float16', 'sum', 0x6800, 0x3c00, 0x6800, '2048 + 1 ties to even 2048'],
  ['float16', 'sum', 0x6801, 0x3c00, 0x6802, '2050 + 1 ties to even 2052'],
  ['float16', 'sum', 0x7bff, 0x4c00, 0x7c00, '65504 + 16 rounds to inf'],
  ['float16', 'sum', 0x7bff, 0x4b00, 0x7bff, '65504 + 14 stays 65504'],
  ['float16', 'sum', 0x0001, 0x0001, 0x0002, 'subnormal + subnormal'],
  ['float16', 'sum', 0x03ff, 0x0001, 0x0400, 'largest subnormal + smallest = smallest normal'],
  ['float16', 'prod', 0x0001, 0x3800, 0x0000, '2^-24 * 0.5 ties to even 0'],
  ['float16', 'prod', 0x0003, 0x3800, 0x0002, '3 * 2^-24 * 0.5 ties to even 2 * 2^-24'],
  ['float16', 'sum', 0x7c00, 0xfc00, 0x7e00, 'inf + -inf = canonical NaN'],
  ['float16', 'min', 0x8000, 0x0000, 0x8000, 'min(-0, +0) = -0'],
  ['float16', 'max', 0x8000, 0x0000, 0x0000, 'max(-0, +0) = +0'],
  ['float16', 'max', 0x7d00, 0x3c00, 0x7e00, 'max(NaN, 1) = NaN'],
  ['float16', 'min', 0x3c00, 0xfe01, 0x7e00, 'min(1, -NaN) = canonical NaN'],
  ['bfloat16', 'sum', 0x3f80, 0x3b80, 0x3f80, '1 + 2^-8 ties to even 1'],
  ['bfloat16', 'sum', 0x3f81, 0x3b80, 0x3f82, '(1 + 2^-7) + 2^-8 ties to even'],
  ['bfloat16', 'sum', 0x7f7f, 0x7f7f, 0x7f80, 'max + max = inf'],
  ['bfloat16', 'sum', 0x0001, 0x0001, 0x0002, 'subnormal + subnormal'],
  ['bfloat16', 'prod', 0x4040, 0x4040, 0x4110, '3 * 3 = 9'],
  ['bfloat16', 'sum', 0xffc1, 0x3f80, 0x7fc0, 'NaN + 1 = canonical NaN'],
  ['bfloat16', 'min', 0x0000, 0x8000, 0x8000, 'min(+0, -0) = -0'],
  ['float8_e4m3fn', 'sum', 0x38, 0x38, 0x40, '1 + 1 = 2'],
  ['float8_e4m3fn', 'sum', 0x7e, 0x58, 0x7e, '448 + 16 ties to even 448'],
  ['float8_e4m3fn', 'sum', 0x7e, 0x60, 0x7f, '448 + 32 overflows to NaN'],
  ['float8_e4m3fn', 'sum', 0xfe, 0xe0, 0xff, '-448 - 32 overflows to NaN, sign kept'],
  ['float8_e4m3fn', 'sum', 0x01, 0x01, 0x02, 'subnormal + subnormal'],
  ['float8_e4m3fn', 'max', 0x7f, 0x38, 0x7f, 'max(NaN, 1) = NaN'],
  ['float8_e5m2', 'sum', 0x3c, 0x3c, 0x40, '1 + 1 = 2'],
  ['float8_e5m2', 'sum', 0x7b, 0x7b, 0x7c, '57344 + 57344 = inf'],
  ['float8_e5m2', 'sum', 0x7c, 0xfc, 0x7f, 'inf - inf = NaN'],
  ['float8_e5m2', 'prod', 0x01, 0x38, 0x00, '2^-16 * 0.5 ties to even 0'],
];

test('fixed bit patterns for float16, bfloat16 and float8', () => {
  for (const [dtype, op, a, b, want, why] of FIXED) {
    const size = dtypeInfo(dtype)!.itemSize;
    const enc = (v: number) => (size === 2 ? new Uint8Array([v & 0xff, v >> 8]) : new Uint8Array([v]));
    // Also check the reference itself on the same vector, so a wrong expectation cannot hide.
    const viaRef = referenceReduce(op as Op, dtype, enc(a), enc(b));
    for (const n of [1, 40]) {
      // n = 40 puts the pattern through the SIMD body as well as the scalar tail.
      const dst = new Uint8Array(n * size);
      const src = new Uint8Array(n * size);
      for (let i = 0; i < n; i++) { dst.set(enc(a), i * size); src.set(enc(b), i * size); }
      reduceBytes(op, dtype, dst, src);
      for (let i = 0; i < n; i++) {
        const got = size === 2 ? dst[i * 2] | (dst[i * 2 + 1] << 8) : dst[i];
        assert.is(got.toString(16), want.toString(16), `${dtype} ${why} (element ${i} of ${n})`);
      }
    }
    const ref = size === 2 ? viaRef[0] | (viaRef[1] << 8) : viaRef[0];
    assert.is(ref.toString(16), want.toString(16), `reference: ${dtype} ${why}`);
  }
});

test('float32/float64 min/max: NaN propagates, -0 < +0 in either order', () => {
  for (const dtype of ['float32', 'float64'] as DType[]) {
    const C = dtype === 'float32' ? Float32Array : Float64Array;
    const a = new C([-0, 0, NaN, 1, -Infinity, 0]);
    const b = new C([0, -0, 1, NaN, NaN, 0]);
    const mn = new C(a);
    reduceBytes('min', dtype, new Uint8Array(mn.buffer), new Uint8Array(b.buffer));
    const mx = new C(a);
    reduceBytes('max', dtype, new Uint8Array(mx.buffer), new Uint8Array(b.buffer));
    assert.ok(Object.is(mn[0], -0) && Object.is(mn[1], -0), `${dtype} min zeros`);
    assert.ok(Object.is(mx[0], 0) && Object.is(mx[1], 0), `${dtype} max zeros`);
    for (const i of [2, 3, 4]) assert.ok(Number.isNaN(mn[i]) && Number.isNaN(mx[i]), `${dtype} NaN at ${i}`);
  }
});

test('bool: sum/max are or, prod/min are and, output normalized to 0/1', () => {
  const a = [0, 0, 1, 2, 255, 7];
  const b = [0, 3, 0, 1, 0, 9];
  const run = (op: ReduceOp) => {
    const d = new Uint8Array(a);
    reduceBytes(op, 'bool', d, new Uint8Array(b));
    return Array.from(d);
  };
  assert.equal(run('sum'), [0, 1, 1, 1, 1, 1]);
  assert.equal(run('max'), [0, 1, 1, 1, 1, 1]);
  assert.equal(run('prod'), [0, 0, 0, 1, 0, 1]);
  assert.equal(run('min'), [0, 0, 0, 1, 0, 1]);
});

test('float8: every pair of codes, every op, both formats (exhaustive)', () => {
  for (const dtype of ['float8_e4m3fn', 'float8_e5m2'] as DType[]) {
    const a = new Uint8Array(65536);
    const b = new Uint8Array(65536);
    for (let i = 0; i < 65536; i++) { a[i] = i >> 8; b[i] = i & 0xff; }
    for (const op of OPS) {
      const got = a.slice();
      reduceBytes(op, dtype, got, b);
      const bad = sameResult(dtype, got, referenceReduce(op, dtype, a, b));
      if (bad) assert.unreachable(`${op} ${dtype}: ${bad}`);
    }
  }
});

test('float16 and bfloat16 codecs: every code decodes exactly and re-encodes to itself', () => {
  const x = getCore().exports;
  for (const dtype of ['float16', 'bfloat16', 'float8_e4m3fn', 'float8_e5m2'] as DType[]) {
    const nf = NARROW[dtype]!;
    const code = dtypeInfo(dtype)!.code;
    const count = 2 ** (nf.E + nf.M + 1);
    for (let c = 0; c < count; c++) {
      const want = decodeNarrow(nf, c);
      const got = x.narrowToF32(code, c) as number;
      if (!(Object.is(got, want) || (Number.isNaN(got) && Number.isNaN(want)))) {
        assert.unreachable(`${dtype} decode 0x${c.toString(16)}: got ${got}, want ${want}`);
      }
      const back = x.f32ToNarrow(code, want) >>> 0;
      const expect = Number.isNaN(want) ? nf.nan : c;
      if (back !== expect) assert.unreachable(`${dtype} encode ${want}: got 0x${back.toString(16)}, want 0x${expect.toString(16)}`);
    }
  }
});

test('f32 -> narrow rounding matches exact round-half-even on 200k random f32 values', () => {
  const x = getCore().exports;
  const rnd = prng(123);
  const f = new Float32Array(1);
  const u = new Uint32Array(f.buffer);
  for (const dtype of ['float16', 'bfloat16', 'float8_e4m3fn', 'float8_e5m2'] as DType[]) {
    const nf = NARROW[dtype]!;
    const code = dtypeInfo(dtype)!.code;
    for (let i = 0; i < 50_000; i++) {
      // Half the samples near the format's range (exponent within +-20 of 0), half any bits.
      if (i % 2) u[0] = Math.floor(rnd() * 2 ** 32);
      else f[0] = (rnd() - 0.5) * 2 ** Math.floor(rnd() * 40 - 24);
      const got = x.f32ToNarrow(code, f[0]) >>> 0;
      const want = encodeNarrow(nf, f[0]);
      if (got !== want) assert.unreachable(`${dtype} encode ${f[0]} (0x${u[0].toString(16)}): got 0x${got.toString(16)}, want 0x${want.toString(16)}`);
    }
  }
});

test('errors: bad op, bad dtype, length mismatch, partial elements, bool avg, bad divisor, bad pointers', () => {
  const b4 = () => new Uint8Array(4);
  assert.throws(() => reduceBytes('mean' as ReduceOp, 'float32', b4(), b4()), isInvalid);
  assert.throws(() => reduceBytes('sum', 'complex64' as DType, b4(), b4()), isInvalid);
  assert.throws(() => reduceBytes('sum', 'float32', b4(), new Uint8Array(8)), isInvalid);
  assert.throws(() => reduceBytes('sum', 'float32', new Uint8Array(6), new Uint8Array(6)), isInvalid);
  assert.throws(() => reduceBytes('avg', 'bool', b4(), b4()), isInvalid);
  assert.throws(() => finishAvg('bool', b4(), 2), isInvalid);
  assert.throws(() => finishAvg('float32', b4(), 0), isInvalid);
  assert.throws(() => finishAvg('float32', b4(), 1.5), isInvalid);
  assert.throws(() => finishAvg('int64', new Uint8Array(4), 2), isInvalid);
  const buf = allocCoreBuffer(64);
  const limit = getCore().memory.buffer.byteLength;
  assert.throws(() => reduceAt('sum', 'float32', buf.ptr, limit - 8, 4), isInvalid);
  assert.throws(() => reduceAt('sum', 'float32', 0, buf.ptr, 4), isInvalid);
  assert.throws(() => reduceAt('sum', 'float32', buf.ptr, buf.ptr, -1), isInvalid);
  assert.throws(() => reduceAt('sum', 'float32', buf.ptr, buf.ptr + 4, 4), isInvalid); // partial overlap
  assert.throws(() => finishAvgAt('float32', buf.ptr, 4, 0), isInvalid);
  // The core also refuses on its own (the wrapper's checks are not the only guard).
  const x = getCore().exports;
  assert.is(x.reduce(9, 7, buf.ptr, buf.ptr, 1), 1);
  assert.is(x.reduce(0, 99, buf.ptr, buf.ptr, 1), 2);
  assert.is(x.reduceDivide(7, buf.ptr, 1, 0), 3);
  assert.is(x.reduceDivide(12, buf.ptr, 1, 2), 2);
  buf.free();
  assert.throws(() => buf.view(), isInvalid);
  buf.free(); // idempotent
});

test('CoreBuffer: view() follows memory growth; reduceAt works in place (dst === src)', () => {
  const buf = allocCoreBuffer(16);
  new Float32Array(buf.view().buffer, buf.ptr, 4).set([1, 2, 3, 4]);
  // Force growth with a large allocation, then check the old contents through a fresh view.
  const big = allocCoreBuffer(8 << 20);
  const v = new Float32Array(buf.view().buffer, buf.ptr, 4);
  assert.equal(Array.from(v), [1, 2, 3, 4]);
  reduceAt('sum', 'float32', buf.ptr, buf.ptr, 4);
  assert.equal(Array.from(new Float32Array(buf.view().buffer, buf.ptr, 4)), [2, 4, 6, 8]);
  big.free();
  buf.free();
});

test.run();
