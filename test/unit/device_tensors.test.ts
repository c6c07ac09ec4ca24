/**
 * The device-tensor helpers every communicator uses before issuing anything
 * (host/device/tensors.ts), over a recording in-memory backend (a test double; the real cpu
 * backend is in device_memory.test.ts): buffer shape checks, device/index matching, sub-buffer
 * bounds, peer ranks with their fields, and the `out` contract of deviceOutput (allocate and free
 * on failure, or check dtype, count and aliasing).
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  checkDeviceTensor, checkPeer, deviceOutput, deviceString, emptyOn, freeTensor, fromDevice, isDeviceBuffer, subBuffer, toDevice,
} from '../../host/device/tensors.js';
import { isGroupcommError, type GroupcommError } from '../../host/base/errors.js';
import type { DeviceBuffer, Tensor } from '../../host/core/tensor.js';

const INVALID = 'ERR_GROUPCOMM_INVALID_ARGUMENT';
function invalid(f: () => unknown, what: string): GroupcommError {
  try {
    f();
  } catch (e) {
    assert.ok(isGroupcommError(e, INVALID), `${what}: ${e}`);
    return e as GroupcommError;
  }
  assert.unreachable(`${what}: accepted`);
  throw new Error('unreachable');
}

/** Host memory posing as a device: ptr = index of the allocation × 2^32. */
function fakeBackend() {
  const mem = new Map<bigint, Uint8Array>();
  const freed: bigint[] = [];
  let next = 1n;
  const backend = {
    deviceType: 'fake',
    alloc(n: number, index: number): DeviceBuffer { const ptr = (next++ << 32n) | BigInt(index); mem.set(ptr, new Uint8Array(n)); return { ptr, nbytes: n }; },
    free(b: DeviceBuffer) { freed.push(b.ptr); mem.delete(b.ptr); },
    copyFromHost(d: DeviceBuffer, src: Uint8Array) { mem.get(d.ptr)!.set(src); },
    copyToHost(dst: Uint8Array, s: DeviceBuffer) { dst.set(mem.get(s.ptr)!.subarray(0, dst.length)); },
  };
  return { backend: backend as never, mem, freed };
}

const buf = (nbytes: number): DeviceBuffer => ({ ptr: 4096n, nbytes });
const t = (device: string, shape: number[], data: unknown, dtype = 'float32'): Tensor => ({ dtype, shape, device, data } as never);

test('isDeviceBuffer: a bigint ptr and a safe non-negative integer size', () => {
  assert.ok(isDeviceBuffer({ ptr: 0n, nbytes: 0 }));
  for (const v of [null, undefined, 5, { ptr: 1, nbytes: 4 }, { ptr: 1n, nbytes: -1 }, { ptr: 1n, nbytes: 1.5 }, { ptr: 1n, nbytes: 2 ** 53 }, { ptr: 1n }]) {
    assert.not.ok(isDeviceBuffer(v), JSON.stringify(v, (_k, x) => (typeof x === 'bigint' ? `${x}n` : x)));
  }
});

test('checkDeviceTensor: type and index must match; the buffer must hold the shape (larger is fine)', () => {
  const ok = checkDeviceTensor(t('fake:2', [2, 3], buf(24)), 'fake', 2, 'op');
  assert.equal(ok, { buf: buf(24), count: 6, nbytes: 24 });
  assert.equal(checkDeviceTensor(t('fake:5', [2], buf(100)), 'fake', undefined, 'op'), { buf: buf(100), count: 2, nbytes: 8 }, 'any index');
  assert.is(checkDeviceTensor(t('fake', [1], buf(4)), 'fake', 0, 'op').count, 1, "'fake' is index 0");
  invalid(() => checkDeviceTensor(undefined, 'fake', 0, 'op'), 'undefined');
  invalid(() => checkDeviceTensor(null as never, 'fake', 0, 'op'), 'null');
  invalid(() => checkDeviceTensor(7 as never, 'fake', 0, 'op'), 'number');
  invalid(() => checkDeviceTensor(t('fake:1', [1], buf(4)), 'fake', 0, 'op'), 'other index');
  invalid(() => checkDeviceTensor(t('other:0', [1], buf(4)), 'fake', 0, 'op'), 'other type');
  invalid(() => checkDeviceTensor(t('other:0', [1], buf(4)), 'fake', undefined, 'op'), 'other type, any index');
  invalid(() => checkDeviceTensor(t('Fake!', [1], buf(4)), 'fake', 0, 'op'), 'bad device string');
  invalid(() => checkDeviceTensor(t('fake:0', [1], new Float32Array(1)), 'fake', 0, 'op'), 'not a buffer');
  invalid(() => checkDeviceTensor(t('fake:0', [2, 3], buf(23)), 'fake', 0, 'op'), 'one byte short');
  assert.match(invalid(() => checkDeviceTensor(t('fake:1', [1], buf(4)), 'fake', 0, 'allReduce'), 'msg').message, /^allReduce: /);
});

test('the errors name the operation, the device the tensor is on and the device wanted', () => {
  const m = (f: () => unknown) => invalid(f, 'message').message;
  assert.match(m(() => checkDeviceTensor(t('fake:1', [1], buf(4)), 'fake', 0, 'op')), "op: tensor is on 'fake:1', this communicator works on 'fake:0'");
  assert.match(m(() => checkDeviceTensor(t('other:0', [1], buf(4)), 'fake', undefined, 'op')), "works on 'fake:*'");
  const { backend } = fakeBackend();
  assert.match(m(() => fromDevice(backend, t('other:0', [1], buf(4)))), /^fromDevice: /);
  const input = t('fake:0', [1], buf(4));
  const spec = { input, count: 1, shape: [1], inPlace: false, what: 'broadcast', device: 'fake:0', alloc: () => buf(4), free: () => {},
    check: (x: Tensor | undefined, what: string) => checkDeviceTensor(x, 'fake', 0, what) };
  assert.match(m(() => deviceOutput({ ...spec, out: t('fake:1', [1], buf(4)) })), /^broadcast out: /);
});

test('subBuffer: pointer arithmetic within bounds only', () => {
  assert.equal(subBuffer(buf(100), 10, 90), { ptr: 4106n, nbytes: 90 });
  assert.equal(subBuffer(buf(100), 100, 0), { ptr: 4196n, nbytes: 0 });
  assert.equal(subBuffer(buf(100), 0, 100), { ptr: 4096n, nbytes: 100 });
  invalid(() => subBuffer(buf(100), 10, 91), 'past the end');
  invalid(() => subBuffer(buf(100), -1, 1), 'negative offset');
  invalid(() => subBuffer(buf(100), 1, -1), 'negative size');
});

test('checkPeer: an integer rank in [0, worldSize), with rank and peerRank fields', () => {
  checkPeer(0, 4, 'send', 1);
  checkPeer(3, 4, 'send', 1);
  for (const r of [-1, 4, 1.5, NaN]) {
    const e = invalid(() => checkPeer(r, 4, 'send', 1), String(r));
    assert.is(e.rank, 1);
    assert.ok(Object.is(e.peerRank, r));
  }
});

test('emptyOn / toDevice / fromDevice / freeTensor over a backend', () => {
  const { backend, mem, freed } = fakeBackend();
  assert.is(deviceString(backend, 3), 'fake:3');
  const shape = [2, 2];
  const e = emptyOn(backend, shape, 'int16', 1);
  assert.equal(e.shape, [2, 2]);
  assert.is.not(e.shape, shape, 'the shape is copied');
  assert.is(e.device, 'fake:1');
  assert.is((e.data as DeviceBuffer).nbytes, 8);
  const src = { dtype: 'float32', shape: [3], device: 'cpu', data: Float32Array.of(1, 2, 3) } as const;
  const d = toDevice(backend, src as never, 2);
  assert.is(d.device, 'fake:2');
  const back = fromDevice(backend, d);
  assert.equal(Array.from(back.data as Float32Array), [1, 2, 3]);
  assert.is(back.device, 'cpu');
  assert.equal(back.shape, [3]);
  assert.is.not(back.shape, d.shape);
  assert.is(fromDevice(backend, src as never), src as never, 'a CPU tensor is returned as is');
  freeTensor(backend, d);
  assert.equal(freed, [(d.data as DeviceBuffer).ptr]);
  freeTensor(backend, src as never);
  freeTensor(backend, t('fake:0', [1], { nbytes: 4 }));
  assert.is(freed.length, 1, 'CPU tensors and non-buffers are not freed');
  assert.ok(mem.size >= 1);
});

test('deviceOutput: allocates a result (freed if the op fails), or checks out\'s dtype, count and aliasing', async () => {
  const allocated: DeviceBuffer[] = [];
  const freed: DeviceBuffer[] = [];
  const input = t('fake:0', [4], { ptr: 1n << 40n, nbytes: 16 });
  const spec = {
    input, count: 4, shape: [2, 2], inPlace: false, what: 'allGather', device: 'fake:0',
    check: (x: Tensor | undefined, what: string) => checkDeviceTensor(x, 'fake', 0, what),
    alloc: (n: number) => { const b = { ptr: BigInt(allocated.length + 1) << 20n, nbytes: n }; allocated.push(b); return b; },
    free: (b: DeviceBuffer) => { freed.push(b); },
    fields: { rank: 2 },
  };
  const r = deviceOutput({ ...spec, out: undefined });
  assert.equal(r.tensor.shape, [2, 2]);
  assert.is(r.tensor.dtype, 'float32');
  assert.is(r.tensor.device, 'fake:0');
  assert.equal(r.at, { buf: allocated[0], count: 4, nbytes: 16 });
  assert.is(allocated[0].nbytes, 16);
  assert.is(r.inPlace, false);
  assert.is(await r.settle(Promise.resolve(5)), 5);
  assert.equal(freed, []);
  await r.settle(Promise.reject(new Error('op failed'))).then(() => assert.unreachable('resolved'), (e) => assert.is((e as Error).message, 'op failed'));
  assert.equal(freed, [allocated[0]], 'freed when the op fails');
  // A given out: checked, never freed.
  const out = t('fake:0', [4], { ptr: 1n << 41n, nbytes: 16 });
  const g = deviceOutput({ ...spec, out });
  assert.is(g.tensor, out);
  assert.is(g.inPlace, false);
  await g.settle(Promise.reject(new Error('x'))).catch(() => {});
  assert.is(freed.length, 1);
  assert.is(invalid(() => deviceOutput({ ...spec, out: t('fake:0', [4], { ptr: 1n << 41n, nbytes: 16 }, 'int32') }), 'dtype').rank, 2);
  assert.is(invalid(() => deviceOutput({ ...spec, out: t('fake:0', [5], { ptr: 1n << 41n, nbytes: 20 }) }), 'count').rank, 2);
  invalid(() => deviceOutput({ ...spec, out: t('fake:1', [4], { ptr: 1n << 41n, nbytes: 16 }) }), 'device');
  invalid(() => deviceOutput({ ...spec, out: input }), 'in place where not allowed');
  const ip = deviceOutput({ ...spec, inPlace: true, out: input });
  assert.is(ip.inPlace, true);
});

test.run();
