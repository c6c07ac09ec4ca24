// The cpu backend's "device" memory and the device-tensor helpers every backend shares.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { checkDeviceTensor, emptyOn, freeTensor, fromDevice, subBuffer, toDevice } from '../../host/device/tensors.js';
import { isGroupcommError, ErrorCode } from '../../host/base/errors.js';
import { tensor } from '../../host/core/tensor.js';
import { resolveBackend, toHost } from '../../host/device/registry.js';
import { CpuBackend } from '../../plugins/cpu/index.js';

const bad = (e: unknown) => isGroupcommError(e, ErrorCode.INVALID_ARGUMENT);

test('alloc gives zero-filled memory; copies round-trip; free is idempotent', () => {
  const b = new CpuBackend();
  const buf = b.alloc(8, 0);
  assert.is(typeof buf.ptr, 'bigint');
  const out = new Uint8Array(8).fill(7);
  b.copyToHost(out, buf);
  assert.equal([...out], [0, 0, 0, 0, 0, 0, 0, 0]);
  b.copyFromHost(buf, new Uint8Array([1, 2, 3]));
  b.copyToHost(out, buf);
  assert.equal([...out.subarray(0, 4)], [1, 2, 3, 0]);
  b.free(buf);
  b.free(buf);
  assert.is(b.memory.liveCount, 0);
});

test('pointer arithmetic addresses inside an allocation, as on a device', () => {
  const b = new CpuBackend();
  const buf = b.alloc(16, 0);
  b.copyFromHost(buf, new Uint8Array(16).map((_, i) => i));
  const part = new Uint8Array(4);
  b.copyToHost(part, subBuffer(buf, 8, 4));
  assert.equal([...part], [8, 9, 10, 11]);
  assert.throws(() => subBuffer(buf, 14, 4), bad);
});

test('freed, foreign and overrunning pointers are refused, not read', () => {
  const b = new CpuBackend();
  const buf = b.alloc(4, 0);
  assert.throws(() => b.copyFromHost(buf, new Uint8Array(5)), bad);
  assert.throws(() => b.copyToHost(new Uint8Array(4), { ptr: 0xdead_0000_0000n, nbytes: 4 }), bad);
  b.free(buf);
  assert.throws(() => b.copyToHost(new Uint8Array(4), buf), bad);
  assert.throws(() => b.alloc(4, -1), bad);
});

test('toDevice / fromDevice / toHost round-trip a tensor on device host:0 (and host:3: every index is host memory)', async () => {
  const b = new CpuBackend();
  const d = toDevice(b, tensor(new Float32Array([1.5, -2, 3]), { shape: [3] }));
  assert.is(d.device, 'host:0');
  assert.equal([...(fromDevice(b, d).data as Float32Array)], [1.5, -2, 3]);
  assert.equal([...((await toHost(d, b)).data as Float32Array)], [1.5, -2, 3]);
  freeTensor(b, d);
  const d3 = toDevice(b, tensor(new Int32Array([4, 5])), 3);
  assert.is(d3.device, 'host:3');
  assert.equal([...((await toHost(d3, b)).data as Int32Array)], [4, 5]);
  freeTensor(b, d3);
});

test('toHost(t) copies through the loaded backend that owns the device type; an unknown type is refused', async () => {
  const cpu = await resolveBackend('cpu');
  const d = toDevice(cpu, tensor(new Float64Array([0.5, 7])), 1);
  assert.equal([...((await toHost(d)).data as Float64Array)], [0.5, 7]);
  freeTensor(cpu, d);
  const cpuT = tensor(new Int8Array([1]));
  assert.is(await toHost(cpuT), cpuT);
  await toHost({ dtype: 'int8', shape: [1], device: 'nodev:0', data: { ptr: 0n, nbytes: 1 } }).then(
    () => assert.unreachable('copied'), (e) => assert.ok(bad(e) && /nodev:0/.test((e as Error).message), String(e)));
});

test('checkDeviceTensor refuses another device, a non-buffer and a buffer too small for the shape', () => {
  const b = new CpuBackend();
  const t = emptyOn(b, [4], 'float32');
  assert.is(checkDeviceTensor(t, 'host', 0, 'x').nbytes, 16);
  assert.throws(() => checkDeviceTensor(t, 'cuda', 0, 'x'), bad);
  assert.throws(() => checkDeviceTensor({ ...t, device: 'host:1' }, 'host', 0, 'x'), bad);
  assert.throws(() => checkDeviceTensor({ ...t, shape: [5] }, 'host', 0, 'x'), bad);
  assert.throws(() => checkDeviceTensor({ ...t, data: new Float32Array(4) }, 'host', 0, 'x'), bad);
  freeTensor(b, t);
});

test.run();
