// The host reference codecs and reductions (used by the cpu plugin and the conformance suite),
// pinned to bit patterns written down by hand from the format definitions (IEEE 754 binary16,
// bfloat16 = the top half of binary32, OCP FP8 E4M3FN / E5M2).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { decodeMiniFloat, encodeMiniFloat, MINIFLOATS, reduceInto } from '../../host/device/elementwise.js';
import { isGroupcommError, ErrorCode } from '../../host/errors.js';

const { float16: F16, bfloat16: BF16, float8_e4m3fn: E4M3, float8_e5m2: E5M2 } = MINIFLOATS;

test('float16 encodings: 1, -2, 65504 (max), 2^-24 (smallest subnormal), inf on overflow, NaN', () => {
  assert.is(encodeMiniFloat(1, F16), 0x3c00);
  assert.is(encodeMiniFloat(-2, F16), 0xc000);
  assert.is(encodeMiniFloat(65504, F16), 0x7bff);
  assert.is(encodeMiniFloat(2 ** -24, F16), 0x0001);
  assert.is(encodeMiniFloat(1e6, F16), 0x7c00);
  assert.is(encodeMiniFloat(NaN, F16) & 0x7e00, 0x7e00);
  assert.is(encodeMiniFloat(-0, F16), 0x8000);
});

test('float16 rounds to nearest even: 1 + 2^-11 → 1, 1 + 3·2^-11 → 1 + 2^-9', () => {
  assert.is(encodeMiniFloat(1 + 2 ** -11, F16), 0x3c00);
  assert.is(encodeMiniFloat(1 + 3 * 2 ** -11, F16), 0x3c02);
});

test('bfloat16 encodings: 1 = 0x3f80, 3 = 0x4040, -1 = 0xbf80', () => {
  assert.is(encodeMiniFloat(1, BF16), 0x3f80);
  assert.is(encodeMiniFloat(3, BF16), 0x4040);
  assert.is(encodeMiniFloat(-1, BF16), 0xbf80);
});

test('float8_e4m3fn: 1 = 0x38, 448 = 0x7e (max), no infinity (overflow → NaN 0x7f), 2^-9 = 0x01', () => {
  assert.is(encodeMiniFloat(1, E4M3), 0x38);
  assert.is(encodeMiniFloat(448, E4M3), 0x7e);
  assert.is(encodeMiniFloat(1000, E4M3), 0x7f);
  assert.is(encodeMiniFloat(2 ** -9, E4M3), 0x01);
  assert.ok(Number.isNaN(decodeMiniFloat(0x7f, E4M3)));
  assert.is(decodeMiniFloat(0x7e, E4M3), 448);
});

test('float8_e5m2: 1 = 0x3c, 57344 = 0x7b (max), 0x7c = inf', () => {
  assert.is(encodeMiniFloat(1, E5M2), 0x3c);
  assert.is(encodeMiniFloat(57344, E5M2), 0x7b);
  assert.is(decodeMiniFloat(0x7c, E5M2), Infinity);
  assert.is(encodeMiniFloat(1e9, E5M2), 0x7c);
});

test('every float16 bit pattern that is not NaN survives decode → encode', () => {
  for (let b = 0; b < 0x10000; b++) {
    const v = decodeMiniFloat(b, F16);
    if (Number.isNaN(v)) continue;
    if (encodeMiniFloat(v, F16) !== b) assert.unreachable(`0x${b.toString(16)} → ${v} → 0x${encodeMiniFloat(v, F16).toString(16)}`);
  }
});

const bytes = (a: ArrayBufferView) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

test('integer sums wrap like C (int8 100 + 100 = -56) and products wrap (uint32)', () => {
  const out = new Int8Array(1);
  reduceInto('int8', 'sum', bytes(out), [bytes(new Int8Array([100])), bytes(new Int8Array([100]))]);
  assert.is(out[0], -56);
  const o2 = new Uint32Array(1);
  reduceInto('uint32', 'prod', bytes(o2), [bytes(new Uint32Array([0x10000])), bytes(new Uint32Array([0x10001]))]);
  assert.is(o2[0], 0x10000);
});

test('int64 reduces exactly beyond 2^53', () => {
  const out = new BigInt64Array(1);
  reduceInto('int64', 'sum', bytes(out), [bytes(new BigInt64Array([2n ** 60n])), bytes(new BigInt64Array([3n]))]);
  assert.is(out[0], 2n ** 60n + 3n);
});

test('bool: sum and max are OR, prod and min are AND', () => {
  const parts = [bytes(new Uint8Array([1, 0, 0])), bytes(new Uint8Array([1, 1, 0]))];
  for (const [op, want] of [['sum', [1, 1, 0]], ['max', [1, 1, 0]], ['prod', [1, 0, 0]], ['min', [1, 0, 0]]] as const) {
    const out = new Uint8Array(3);
    reduceInto('bool', op, out, parts);
    assert.equal([...out], want, op);
  }
});

test('avg is for floating point only', () => {
  const out = new Float32Array(1);
  reduceInto('float32', 'avg', bytes(out), [bytes(new Float32Array([1])), bytes(new Float32Array([2]))]);
  assert.is(out[0], 1.5);
  assert.throws(() => reduceInto('int32', 'avg', new Uint8Array(4), [new Uint8Array(4)]), (e: unknown) => isGroupcommError(e, ErrorCode.INVALID_ARGUMENT));
});

test('parts of the wrong size are refused', () => {
  assert.throws(() => reduceInto('float32', 'sum', new Uint8Array(8), [new Uint8Array(4)]), (e: unknown) => isGroupcommError(e, ErrorCode.INVALID_ARGUMENT));
});

test.run();
