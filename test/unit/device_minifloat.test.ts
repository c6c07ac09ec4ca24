/**
 * The small float codecs (host/device/elementwise.ts) across every bit pattern of all four
 * formats: decode → encode is the identity, each format's landmark values (smallest subnormal,
 * largest subnormal, smallest normal, largest finite) decode to what the format defines, and
 * midpoints between neighbours (every pair of the 8-bit formats, a spread of the 16-bit ones)
 * round to the even one (just above or below it rounds to the nearer one), including the subnormal range and the step past the largest finite value
 * (inf, or NaN for float8_e4m3fn). device_elementwise.test.ts has the hand-picked cases.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { MINIFLOATS, decodeMiniFloat, encodeMiniFloat, readElement, writeElement } from '../../host/device/elementwise.js';
import type { DType } from '../../host/core/tensor.js';

type Name = keyof typeof MINIFLOATS;
const NAMES = Object.keys(MINIFLOATS) as Name[];
const width = (n: Name) => 1 + MINIFLOATS[n].exp + MINIFLOATS[n].man;
const hex = (b: number) => '0x' + b.toString(16);

/** [smallest subnormal, largest subnormal, smallest normal, largest finite, NaN bits, +inf bits or undefined]. */
const LANDMARKS: Record<Name, [number, number, number, number, number, number | undefined]> = {
  float16: [2 ** -24, 1023 * 2 ** -24, 2 ** -14, 65504, 0x7e00, 0x7c00],
  bfloat16: [2 ** -133, 127 * 2 ** -133, 2 ** -126, (2 - 2 ** -7) * 2 ** 127, 0x7fc0, 0x7f80],
  float8_e4m3fn: [2 ** -9, 7 * 2 ** -9, 2 ** -6, 448, 0x7f, undefined],
  float8_e5m2: [2 ** -16, 3 * 2 ** -16, 2 ** -14, 57344, 0x7e, 0x7c],
};

/** The largest positive finite pattern (patterns of one sign are ordered like their values). */
function maxFinite(n: Name): number {
  const m = MINIFLOATS[n];
  return m.ieee ? (((1 << m.exp) - 1) << m.man) - 1 : (((1 << m.exp) - 1) << m.man) | ((1 << m.man) - 2);
}

test('landmark values decode as each format defines them; NaN and infinity patterns', () => {
  for (const n of NAMES) {
    const m = MINIFLOATS[n];
    const [sub, maxSub, minNormal, max, nan, inf] = LANDMARKS[n];
    const signBit = 1 << (width(n) - 1);
    assert.is(decodeMiniFloat(1, m), sub, `${n} smallest subnormal`);
    assert.is(decodeMiniFloat((1 << m.man) - 1, m), maxSub, `${n} largest subnormal`);
    assert.is(decodeMiniFloat(1 << m.man, m), minNormal, `${n} smallest normal`);
    assert.is(decodeMiniFloat(maxFinite(n), m), max, `${n} largest finite`);
    assert.is(decodeMiniFloat(maxFinite(n) | signBit, m), -max, `${n} lowest finite`);
    assert.is(decodeMiniFloat(signBit | 1, m), -sub, `${n} negative subnormal`);
    assert.ok(Object.is(decodeMiniFloat(signBit, m), -0), `${n} -0`);
    assert.ok(Number.isNaN(decodeMiniFloat(nan, m)), `${n} NaN pattern`);
    assert.is(encodeMiniFloat(NaN, m), nan, `${n} NaN encoding`);
    assert.is(encodeMiniFloat(sub, m), 1);
    assert.is(encodeMiniFloat(-max, m), maxFinite(n) | signBit);
    assert.is(encodeMiniFloat(-0, m), signBit);
    assert.is(encodeMiniFloat(0, m), 0);
    if (inf !== undefined) {
      assert.is(decodeMiniFloat(inf, m), Infinity);
      assert.is(decodeMiniFloat(inf | signBit, m), -Infinity);
      assert.is(encodeMiniFloat(Infinity, m), inf);
      assert.is(encodeMiniFloat(-Infinity, m), inf | signBit);
      assert.is(encodeMiniFloat(1e300, m), inf);
    } else {
      // e4m3fn has no infinity: overflow and ±inf are NaN (sign kept), as torch does.
      assert.is(encodeMiniFloat(Infinity, m), nan);
      assert.is(encodeMiniFloat(-Infinity, m), nan | signBit);
      assert.is(encodeMiniFloat(1e300, m), nan);
      assert.ok(Number.isNaN(decodeMiniFloat(nan | signBit, m)));
    }
    assert.is(encodeMiniFloat(1e-300, m), 0, `${n} underflow to +0`);
    assert.is(encodeMiniFloat(-1e-300, m), signBit, `${n} underflow to -0`);
  }
});

test('non-NaN bit patterns (all of the 8-bit formats) survive decode → encode', () => {
  for (const n of NAMES) {
    const m = MINIFLOATS[n];
    const low = 1 << (m.man + 2);
    for (let bits = 0; bits < 2 ** width(n); bits++) {
      // 16-bit formats: the subnormals and first normals of each sign, then every 7th pattern
      // (device_elementwise.test.ts runs all float16 patterns).
      const mag = bits & ((1 << (width(n) - 1)) - 1);
      if (width(n) > 8 && mag >= low && bits % 7 !== 0) continue;
      const v = decodeMiniFloat(bits, m);
      if (Number.isNaN(v)) continue;
      const back = encodeMiniFloat(v, m);
      if (back !== bits) assert.unreachable(`${n} ${hex(bits)} → ${v} → ${hex(back)}`);
    }
  }
});

test('midpoints round to the even neighbour, and just off a midpoint to the nearer one (both signs)', () => {
  for (const n of NAMES) {
    const m = MINIFLOATS[n];
    const signBit = 1 << (width(n) - 1);
    // 8-bit formats: every pair. 16-bit ones: the subnormals and the first normals, the top of
    // the range, and every 61st pair between (all of them takes seconds on a loaded machine).
    const top = maxFinite(n);
    const firstNormals = 1 << (m.man + 1);
    for (let k = 0; k < top; k++) {
      if (width(n) > 8 && k > firstNormals && k < top - 8 && k % 61 !== 0) continue;
      const lo = decodeMiniFloat(k, m);
      const hi = decodeMiniFloat(k + 1, m);
      const mid = (lo + hi) / 2;
      const eps = (hi - lo) / 1024;
      const even = k % 2 === 0 ? k : k + 1;
      for (const [x, want, what] of [[mid, even, 'midpoint'], [mid + eps, k + 1, 'above'], [mid - eps, k, 'below']] as const) {
        const got = encodeMiniFloat(x, m);
        if (got !== want) assert.unreachable(`${n} ${what} ${x} between ${hex(k)} and ${hex(k + 1)}: ${hex(got)}, expected ${hex(want)}`);
        const neg = encodeMiniFloat(-x, m);
        if (neg !== (want | signBit)) assert.unreachable(`${n} -${what} ${-x}: ${hex(neg)}, expected ${hex(want | signBit)}`);
      }
    }
  }
});

test('past the largest finite value: the midpoint rounds to even, above it is inf (NaN for e4m3fn)', () => {
  for (const n of NAMES) {
    const m = MINIFLOATS[n];
    const top = maxFinite(n);
    const max = decodeMiniFloat(top, m);
    const step = max - decodeMiniFloat(top - 1, m);
    const over = LANDMARKS[n][5] ?? LANDMARKS[n][4];
    // IEEE formats: top is odd (all mantissa bits set), so the tie goes up, to inf. e4m3fn's
    // top (0x7e) is even: 464 rounds to 448 as in torch, anything above it is NaN.
    assert.is(encodeMiniFloat(max + step / 2, m), top % 2 === 0 ? top : over, `${n} max + half a step`);
    assert.is(encodeMiniFloat(max + step / 2 + step / 64, m), over, `${n} just over max + half a step`);
    assert.is(encodeMiniFloat(max + step * 4, m), over, `${n} far past max`);
    assert.is(encodeMiniFloat(max + step / 2 - step / 64, m), top, `${n} just under max + half a step`);
  }
});

test('just below a power of two (where Math.log2 rounds up to it) and rounding up into the next binade', () => {
  for (const n of NAMES) {
    const m = MINIFLOATS[n];
    const [sub, , minNormal, max] = LANDMARKS[n];
    for (let k = Math.ceil(Math.log2(sub)) + 1; 2 ** k <= max; k++) {
      const below = 2 ** k * (1 - 2 ** -53);
      assert.is(encodeMiniFloat(below, m), encodeMiniFloat(2 ** k, m), `${n} 2^${k} - ulp`);
      assert.is(encodeMiniFloat(-below, m), encodeMiniFloat(-(2 ** k), m), `${n} -(2^${k} - ulp)`);
    }
    assert.is(encodeMiniFloat(minNormal * (1 - 2 ** -53), m), 1 << m.man, `${n} just under the smallest normal`);
  }
  // The mantissa rounding up past the largest binade: e4m3fn's 500 has exponent 8 and rounds to
  // 512, which needs exponent 9: beyond the format, so NaN (not a carry into the sign bit).
  assert.is(encodeMiniFloat(500, MINIFLOATS.float8_e4m3fn), 0x7f);
  assert.is(encodeMiniFloat(-500, MINIFLOATS.float8_e4m3fn), 0xff);
  assert.is(encodeMiniFloat(65520, MINIFLOATS.float16), 0x7c00);
  assert.is(encodeMiniFloat(3.99, MINIFLOATS.float8_e5m2), 0x44, 'rounds up to 4: exponent + 1, mantissa 0');
});

test('readElement / writeElement for every dtype at index 1: its bytes only, little-endian, wrapped or rounded', () => {
  // [dtype, value written, value read back, the 16-byte buffer after the write (filled with aa)]
  const a = (n: number) => 'aa'.repeat(n);
  const cases: [DType, number | bigint, number | bigint, string][] = [
    ['int8', -2, -2, 'aa' + 'fe' + a(14)],
    ['int8', 200, -56, 'aa' + 'c8' + a(14)],
    ['uint8', 257, 1, 'aa' + '01' + a(14)],
    ['uint8', 2, 2, 'aa' + '02' + a(14)], // not bool's 1
    ['bool', 5, 1, 'aa' + '01' + a(14)],
    ['bool', 0, 0, 'aa' + '00' + a(14)],
    ['int16', -2, -2, a(2) + 'feff' + a(12)],
    ['int16', 40000, -25536, a(2) + '409c' + a(12)],
    ['int32', -2, -2, a(4) + 'feffffff' + a(8)],
    ['uint32', 2 ** 32 + 3, 3, a(4) + '03000000' + a(8)],
    ['uint32', -1, 2 ** 32 - 1, a(4) + 'ffffffff' + a(8)],
    ['int64', 2n ** 63n, -(2n ** 63n), a(8) + '0000000000000080'],
    ['int64', 5, 5n, a(8) + '0500000000000000'],
    ['uint64', -2n, 2n ** 64n - 2n, a(8) + 'feffffffffffffff'],
    ['float32', 1.5, 1.5, a(4) + '0000c03f' + a(8)],
    ['float32', 0.1, Math.fround(0.1), a(4) + 'cdcccc3d' + a(8)],
    ['float64', -2, -2, a(8) + '00000000000000c0'],
    ['float16', -2, -2, a(2) + '00c0' + a(12)],
    ['bfloat16', 1, 1, a(2) + '803f' + a(12)],
    ['bfloat16', 3, 3, a(2) + '4040' + a(12)],
    ['float8_e4m3fn', 1, 1, 'aa' + '38' + a(14)],
    ['float8_e5m2', -1, -1, 'aa' + 'bc' + a(14)],
  ];
  for (const [dtype, v, back, bytes] of cases) {
    const buf = new Uint8Array(16).fill(0xaa);
    const dv = new DataView(buf.buffer);
    writeElement(dtype, dv, 1, v);
    assert.is(Buffer.from(buf).toString('hex'), bytes, `${dtype} ${v}`);
    assert.is(readElement(dtype, dv, 1), back, `${dtype} ${v} read back`);
  }
});

test.run();
