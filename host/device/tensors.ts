/**
 * Device tensors: allocation on a backend, host round trips, and the argument checks every
 * communicator runs before issuing anything (so a bad call fails locally and sends nothing),
 * result tensors under the aliasing contract (host/core/collectives.ts) included.
 */
import { invalidArgument, type GroupcommErrorFields } from '../base/errors.js';
import { checkOutAliasing } from '../core/alias.js';
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

/** The sub-buffer at `offset` bytes of `nbytes` (pointer arithmetic, as on a device). */
export function subBuffer(buf: DeviceBuffer, offset: number, nbytes: number): DeviceBuffer {
  if (offset < 0 || nbytes < 0 || offset + nbytes > buf.nbytes) throw invalidArgument(`subBuffer [${offset}, ${offset + nbytes}) is outside a ${buf.nbytes}-byte buffer`);
  return { ptr: buf.ptr + BigInt(offset), nbytes };
}

export function checkPeer(r: number, worldSize: number, what: string, rank: number): void {
  if (!Number.isInteger(r) || r < 0 || r >= worldSize) throw invalidArgument(`${what}: rank ${r} is outside [0, ${worldSize})`, { rank, peerRank: r });
}

/** A communicator's result: the checked `out`, or a tensor it allocated for the call. */
export interface DeviceOutput {
  tensor: Tensor;
  at: CheckedTensor;
  /** `out` is the input itself (allowed for allReduce and broadcast only). */
  inPlace: boolean;
  /** Passes `p` through; when it rejects, frees the result if this call allocated it. */
  settle<T>(p: Promise<T>): Promise<T>;
}

export interface DeviceOutputSpec {
  /** What the caller passed as `out` (undefined: allocate). */
  out: Tensor | undefined;
  /** The operation's input: `out` is checked against it by the aliasing rule. */
  input: Tensor;
  /** Elements the result holds; `out` must have exactly these and the input's dtype. */
  count: number;
  /** Shape of an allocated result. */
  shape: number[];
  /** Whether `out` may be the input itself. */
  inPlace: boolean;
  what: string;
  /** The communicator's device as a tensor's `device` string ('cuda:1'). */
  device: string;
  /** The backend's device-tensor check (checkDeviceTensor bound to its device). */
  check(t: Tensor | undefined, what: string): CheckedTensor;
  /** Device memory for an allocated result, and its release when the operation fails. */
  alloc(nbytes: number): DeviceBuffer;
  free(buf: DeviceBuffer): void;
  fields?: GroupcommErrorFields;
}

/**
 * The aliasing contract for a device communicator, written once: `out` is checked (device,
 * dtype, element count, overlap with the input) or a result is allocated. Call it after the
 * input checks and before issuing anything; wrap the operation's Promise in `settle`.
 */
export function deviceOutput(s: DeviceOutputSpec): DeviceOutput {
  if (s.out === undefined) {
    const buf = s.alloc(s.count * itemSize(s.input.dtype));
    const tensor: Tensor = { dtype: s.input.dtype, shape: [...s.shape], device: s.device, data: buf };
    const at = { buf, count: s.count, nbytes: buf.nbytes };
    return { tensor, at, inPlace: false, settle: (p) => p.catch((e) => { s.free(buf); throw e; }) };
  }
  const at = s.check(s.out, `${s.what} out`);
  if (s.out.dtype !== s.input.dtype) throw invalidArgument(`${s.what}: out is ${s.out.dtype}, input is ${s.input.dtype}`, s.fields);
  if (at.count !== s.count) throw invalidArgument(`${s.what}: out has ${at.count} elements, the result has ${s.count}`, s.fields);
  const inPlace = checkOutAliasing(s.out, s.input, s.inPlace, s.what, s.fields);
  return { tensor: s.out, at, inPlace, settle: (p) => p };
}
