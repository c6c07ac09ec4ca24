import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { dtypeInfo, dtypeByCode, DTYPE_NAMES } from '../../host/core/dtype.js';
import { tensor, empty, itemSize, fromBytes, bytesOf } from '../../host/core/tensor.js';
import { GroupcommError, isGroupcommError, ErrorCode } from '../../host/base/errors.js';

// Source: nccl.h (NCCL 2.24+) ncclDataType_t: ncclInt8=0, ncclUint8=1, ncclInt32=2, ncclUint32=3,
// ncclInt64=4, ncclUint64=5, ncclFloat16=6, ncclFloat32=7, ncclFloat64=8, ncclBfloat16=9,
// ncclFloat8e4m3=10, ncclFloat8e5m2=11.
const EXPECTED: Array<[string, number, number]> = [
  ['int8', 1, 0], ['uint8', 1, 1], ['int32', 4, 2], ['uint32', 4, 3], ['int64', 8, 4],
  ['uint64', 8, 5], ['float16', 2, 6], ['float32', 4, 7], ['float64', 8, 8], ['bfloat16', 2, 9],
  ['float8_e4m3fn', 1, 10], ['float8_e5m2', 1, 11], ['bool', 1, -1], ['int16', 2, -1],
];

test('dtype table: item sizes and NCCL enum values', () => {
  assert.is(DTYPE_NAMES.length, EXPECTED.length);
  for (const [name, size, nccl] of EXPECTED) {
    const info = dtypeInfo(name)!;
    assert.ok(info, name);
    assert.is(info.itemSize, size, name);
    assert.is(info.ncclType, nccl, name);
    assert.is(dtypeByCode(info.code)!.name, name);
  }
  assert.is(dtypeInfo('complex64'), undefined);
});

test('tensor(): infers dtype, checks shape, aliases data', () => {
  const a = new Float32Array([1, 2, 3, 4, 5, 6]);
  const t = tensor(a, { shape: [2, 3] });
  assert.is(t.dtype, 'float32');
  assert.equal(t.shape, [2, 3]);
  assert.is(t.data, a);
  assert.is(itemSize('bfloat16'), 2);
  assert.throws(() => tensor(a, { shape: [4, 2] }), (e: unknown) => isGroupcommError(e, ErrorCode.INVALID_ARGUMENT));
  assert.throws(() => tensor(new Uint16Array(2)), (e: unknown) => isGroupcommError(e, ErrorCode.INVALID_ARGUMENT));
  const h = tensor(new Uint16Array(2), { dtype: 'bfloat16' });
  assert.is(h.dtype, 'bfloat16');
});

test('empty() and fromBytes() round-trip bytes', () => {
  const e = empty([0, 3], 'int64');
  assert.is(e.data.length, 0);
  const src = tensor(new Int32Array([7, -8, 9]));
  const back = fromBytes(bytesOf(src).slice(), 'int32', [3]);
  assert.equal(Array.from(back.data as Int32Array), [7, -8, 9]);
  // Unaligned bytes are copied, not mis-viewed.
  const buf = new Uint8Array(13);
  buf.set(bytesOf(src), 1);
  const un = fromBytes(buf.subarray(1), 'int32', [3]);
  assert.equal(Array.from(un.data as Int32Array), [7, -8, 9]);
});

test('errors carry a stable code and the actors', () => {
  const e = new GroupcommError(ErrorCode.TIMEOUT, 'x', { rank: 1, peerRanks: [2, 3], key: 'k' });
  assert.ok(e instanceof Error);
  assert.is(e.code, 'ERR_GROUPCOMM_TIMEOUT');
  assert.equal(e.peerRanks, [2, 3]);
  assert.ok(isGroupcommError(e));
  assert.not.ok(isGroupcommError(new Error('x')));
});

test.run();
