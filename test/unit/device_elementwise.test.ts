// The host codecs for device data (used by the conformance suite and backends that read results),
// pinned to bit patterns written down by hand from the format definitions (IEEE 754 binary16,
// bfloat16 = the top half of binary32, OCP FP8 E4M3FN / E5M2).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { checkReduce, decodeMiniFloat, encodeMiniFloat, MINIFLOATS, readElement, writeElement } from '../../host/device/elementwise.js';
import { isGroupcommError, ErrorCode } from '../../host/base/errors.js';

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

test('checkReduce: every op exists for every dtype except avg on bool', () => {
  for (const op of ['sum', 'prod', 'max', 'min', 'avg'] as const) checkReduce('int32', op);
  checkReduce('float8_e5m2', 'avg');
  checkReduce('bool', 'max');
  assert.throws(() => checkReduce('bool', 'avg'), (e: unknown) => isGroupcommError(e, ErrorCode.INVALID_ARGUMENT));
  assert.throws(() => checkReduce('float32', 'mean' as never), (e: unknown) => isGroupcommError(e, ErrorCode.INVALID_ARGUMENT));
});

test('readElement / writeElement: little-endian, integers wrap like C, minifloats round', () => {
  const dv = new DataView(new ArrayBuffer(8));
  writeElement('int8', dv, 0, 200);
  assert.is(readElement('int8', dv, 0), -56);
  writeElement('uint64', dv, 0, -1n);
  assert.is(readElement('uint64', dv, 0), 2n ** 64n - 1n);
  writeElement('float16', dv, 1, 1);
  assert.is(dv.getUint16(2, true), 0x3c00);
  assert.is(readElement('float16', dv, 1), 1);
  writeElement('bool', dv, 0, 5);
  assert.is(readElement('bool', dv, 0), 1);
});

test.run();
