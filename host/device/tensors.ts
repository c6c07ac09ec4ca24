/**
 * Device tensors: allocation on a backend, host round trips, and the argument checks every
 * communicator runs before issuing anything (so a bad call fails locally and sends nothing).
 */
import { invalidArgument } from '../base/errors.js';
import {
  arrayClassOf, bytesOf, isCpu, itemSize, numel, parseDevice,
  type CpuTensor, type DeviceBuffer, type DType, type Tensor,
} from '../core/tensor.js';
import type { DeviceBackendV1 } from './types.js';

export function deviceString(backend: Pick<DeviceBackendV1, 'deviceType'>, deviceIndex: number): string {
  return `${backend.deviceType}:${deviceIndex}`;
}

export function isDeviceBuffer(v: unknown): v is DeviceBuffer {
  const b = v as DeviceBuffer;
  return typeof v === 'object' && v !== null && typeof b.ptr === 'bigint' && Number.isSafeInteger(b.nbytes) && b.nbytes >= 0;
}

/** A new device tensor of `shape` × `dtype` on `backend`'s device `deviceIndex`. Free it with freeTensor. */
export function emptyOn(backend: DeviceBackendV1, shape: number[], dtype: DType, deviceIndex = 0): Tensor {
  const n = numel(shape) * itemSize(dtype);
  return { dtype, shape: [...shape], device: deviceString(backend, deviceIndex), data: backend.alloc(n, deviceIndex) };
}

/** A device copy of a CPU tensor. */
export function toDevice(backend: DeviceBackendV1, t: CpuTensor, deviceIndex = 0): Tensor {
  const d = emptyOn(backend, t.shape, t.dtype, deviceIndex);
  backend.copyFromHost(d.data as DeviceBuffer, bytesOf(t));
  return d;
}

/** A CPU copy of a device tensor of `backend`. */
export function fromDevice(backend: DeviceBackendV1, t: Tensor): CpuTensor {
  if (isCpu(t)) return t;
  const C = arrayClassOf(t.dtype);
  const out = new C(numel(t.shape));
  const buf = checkDeviceTensor(t, backend.deviceType, undefined, 'fromDevice').buf;
  backend.copyToHost(new Uint8Array(out.buffer, out.byteOffset, out.byteLength), buf);
  return { dtype: t.dtype, shape: [...t.shape], device: 'cpu', data: out };
}

export function freeTensor(backend: DeviceBackendV1, t: Tensor): void {
  if (!isCpu(t) && isDeviceBuffer(t.data)) backend.free(t.data);
}

export interface CheckedTensor {
  buf: DeviceBuffer;
  count: number;
  nbytes: number;
}

/**
 * Verifies that `t` is a device tensor of `deviceType` (and `deviceIndex` when given) whose
 * buffer holds its elements; returns the buffer, element count and byte size.
 */
export function checkDeviceTensor(t: Tensor | undefined, deviceType: string, deviceIndex: number | undefined, what: string): CheckedTensor {
  if (!t || typeof t !== 'object') throw invalidArgument(`${what}: expected a tensor, got ${t === null ? 'null' : typeof t}`);
  let dev;
  try { dev = parseDevice(t.device); } catch { throw invalidArgument(`${what}: bad device '${t.device}'`); }
  if (dev.type !== deviceType || (deviceIndex !== undefined && dev.index !== deviceIndex)) {
    const want = deviceIndex === undefined ? `${deviceType}:*` : `${deviceType}:${deviceIndex}`;
    throw invalidArgument(`${what}: tensor is on '${t.device}', this communicator works on '${want}'`);
  }
  if (!isDeviceBuffer(t.data)) throw invalidArgument(`${what}: tensor data is not a DeviceBuffer { ptr: bigint, nbytes }`);
  const count = numel(t.shape);
  const nbytes = count * itemSize(t.dtype);
  if (nbytes > t.data.nbytes) throw invalidArgument(`${what}: shape [${t.shape.join(', ')}] × ${t.dtype} needs ${nbytes} bytes, buffer has ${t.data.nbytes}`);
  return { buf: t.data, count, nbytes };
}

/** Checks a pair whose element counts must relate as `output = factor × input` (and equal dtypes). */
export function checkPair(output: CheckedTensor, outT: Tensor, input: CheckedTensor, inT: Tensor, factor: number, what: string): void {
  if (outT.dtype !== inT.dtype) throw invalidArgument(`${what}: output is ${outT.dtype}, input is ${inT.dtype}`);
  if (output.count !== input.count * factor) {
    throw invalidArgument(`${what}: output has ${output.count} elements, expected ${factor} × ${input.count} = ${factor * input.count}`);
  }
}

/** The sub-buffer at `offset` bytes of `nbytes` (pointer arithmetic, as on a device). */
export function subBuffer(buf: DeviceBuffer, offset: number, nbytes: number): DeviceBuffer {
  if (offset < 0 || nbytes < 0 || offset + nbytes > buf.nbytes) throw invalidArgument(`subBuffer [${offset}, ${offset + nbytes}) is outside a ${buf.nbytes}-byte buffer`);
  return { ptr: buf.ptr + BigInt(offset), nbytes };
}

export function checkPeer(r: number, worldSize: number, what: string, rank: number): void {
  if (!Number.isInteger(r) || r < 0 || r >= worldSize) throw invalidArgument(`${what}: rank ${r} is outside [0, ${worldSize})`, { rank, peerRank: r });
}

/**
 * gather's operands, checked the same way by every backend: the input on every rank, and on
 * `dst` only an output of worldSize × the input. `check` is the backend's device-tensor check.
 */
export function checkGatherArgs(
  output: Tensor | undefined, input: Tensor, dst: number, rank: number, worldSize: number,
  check: (t: Tensor | undefined, what: string) => CheckedTensor,
): { i: CheckedTensor; o?: CheckedTensor } {
  const i = check(input, 'gather input');
  checkPeer(dst, worldSize, 'gather', rank);
  if (rank !== dst) return { i };
  const o = check(output, 'gather output');
  checkPair(o, output!, i, input, worldSize, 'gather');
  return { i, o };
}
