/**
 * Tensor = { dtype, shape, device, data }. CPU data is a TypedArray (float16, bfloat16 and the
 * float8 types, which JS lacks, are held as their raw bits in Uint16Array / Uint8Array).
 * Device data is a plugin-owned buffer `{ ptr, nbytes }`; `device` is 'cpu' or 'type:index'.
 */
import { dtypeInfo, DTYPE_NAMES, type DType } from './dtype.js';
import { invalidArgument } from '../base/errors.js';

export type { DType };
export { DTYPE_NAMES };

export type TypedArray =
  | Int8Array | Uint8Array | Int16Array | Uint16Array | Int32Array | Uint32Array
  | BigInt64Array | BigUint64Array | Float32Array | Float64Array;

/** Memory owned by a device plugin. `ptr` is the device address. */
export interface DeviceBuffer {
  ptr: bigint;
  nbytes: number;
}

export interface Tensor {
  dtype: DType;
  shape: number[];
  /** 'cpu', or a device such as 'cuda:0'. */
  device: string;
  data: TypedArray | DeviceBuffer;
}

/**
 * A tensor in host memory. `A` is the class of its data: `tensor(new Float32Array(n))` is a
 * `CpuTensor<Float32Array>`, so `t.data[0]` is a number and collectives given it return the same
 * type. Without an argument, any TypedArray.
 */
export interface CpuTensor<A extends TypedArray = TypedArray> extends Tensor {
  device: 'cpu';
  data: A;
}

/** The TypedArray class that holds a CPU tensor of each dtype (what arrayClassOf returns). */
export interface ArrayOfDType {
  int8: Int8Array; uint8: Uint8Array; int16: Int16Array; int32: Int32Array; uint32: Uint32Array;
  int64: BigInt64Array; uint64: BigUint64Array; float16: Uint16Array; float32: Float32Array;
  float64: Float64Array; bfloat16: Uint16Array; float8_e4m3fn: Uint8Array; float8_e5m2: Uint8Array;
  bool: Uint8Array;
}

/** The data type of a CPU tensor of dtype `D` (`ArrayOf<'float32'>` is Float32Array). */
export type ArrayOf<D extends DType> = D extends keyof ArrayOfDType ? ArrayOfDType[D] : TypedArray;

type ArrayCtor = { new (n: number): TypedArray; new (b: ArrayBufferLike, off: number, len: number): TypedArray; BYTES_PER_ELEMENT: number };

const CTOR: Record<DType, ArrayCtor> = {
  int8: Int8Array, uint8: Uint8Array, int32: Int32Array, uint32: Uint32Array,
  int64: BigInt64Array, uint64: BigUint64Array, float16: Uint16Array, float32: Float32Array,
  float64: Float64Array, bfloat16: Uint16Array, float8_e4m3fn: Uint8Array,
  float8_e5m2: Uint8Array, bool: Uint8Array, int16: Int16Array,
} as unknown as Record<DType, ArrayCtor>;

/** The TypedArray class that holds a CPU tensor of `dtype`. */
export function arrayClassOf(dtype: DType): ArrayCtor {
  const c = CTOR[dtype];
  if (!c) throw invalidArgument(`unknown dtype '${dtype}'; expected one of ${DTYPE_NAMES.join(', ')}`);
  return c;
}

export function itemSize(dtype: DType): number {
  const info = dtypeInfo(dtype);
  if (!info) throw invalidArgument(`unknown dtype '${dtype}'`);
  return info.itemSize;
}

export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

export function nbytes(t: Tensor): number {
  return numel(t.shape) * itemSize(t.dtype);
}

export function isCpu(t: Tensor): t is CpuTensor {
  return t.device === 'cpu';
}

export function isTensor(v: unknown): v is Tensor {
  if (typeof v !== 'object' || v === null) return false;
  const t = v as Tensor;
  return typeof t.dtype === 'string' && Array.isArray(t.shape) && typeof t.device === 'string' &&
    typeof t.data === 'object' && t.data !== null && dtypeInfo(t.dtype) !== undefined;
}

export function parseDevice(device: string): { type: string; index: number } {
  const m = /^([a-z][a-z0-9_]*)(?::(\d+))?$/.exec(device);
  if (!m) throw invalidArgument(`bad device '${device}'; expected 'cpu' or 'type:index'`);
  return { type: m[1], index: m[2] === undefined ? 0 : Number(m[2]) };
}

function checkShape(shape: readonly number[]): void {
  for (const d of shape) {
    if (!Number.isSafeInteger(d) || d < 0) throw invalidArgument(`bad shape [${shape.join(', ')}]: dims must be integers >= 0`);
  }
}

function inferDtype(a: TypedArray): DType {
  if (a instanceof Float32Array) return 'float32';
  if (a instanceof Float64Array) return 'float64';
  if (a instanceof Int32Array) return 'int32';
  if (a instanceof Uint32Array) return 'uint32';
  if (a instanceof BigInt64Array) return 'int64';
  if (a instanceof BigUint64Array) return 'uint64';
  if (a instanceof Int8Array) return 'int8';
  if (a instanceof Int16Array) return 'int16';
  if (a instanceof Uint8Array) return 'uint8';
  throw invalidArgument(`cannot infer a dtype from ${(a as object).constructor.name}; pass { dtype } (float16 / bfloat16 use Uint16Array)`);
}

/** A CPU tensor over `data` (not copied). The shape defaults to 1-d. */
export function tensor<A extends TypedArray>(data: A, opts: { dtype?: DType; shape?: number[] } = {}): CpuTensor<A> {
  const dtype = opts.dtype ?? inferDtype(data);
  const C = arrayClassOf(dtype);
  if (data.BYTES_PER_ELEMENT !== C.BYTES_PER_ELEMENT) {
    throw invalidArgument(`dtype ${dtype} needs ${C.name} (or same-width) data, got ${data.constructor.name}`);
  }
  const shape = opts.shape ?? [data.length];
  checkShape(shape);
  if (numel(shape) !== data.length) {
    throw invalidArgument(`shape [${shape.join(', ')}] holds ${numel(shape)} elements, data has ${data.length}`);
  }
  return { dtype, shape: [...shape], device: 'cpu', data };
}

/** A zero-filled CPU tensor. Device tensors come from a device backend's `empty`. */
export function empty<D extends DType = 'float32'>(shape: number[], dtype: D = 'float32' as D, device = 'cpu'): CpuTensor<ArrayOf<D>> {
  if (device !== 'cpu') throw invalidArgument(`empty(): device '${device}' needs its backend; use coordinator.empty() or backend.alloc()`);
  checkShape(shape);
  const C = arrayClassOf(dtype);
  return { dtype, shape: [...shape], device: 'cpu', data: new C(numel(shape)) as ArrayOf<D> };
}

/** The bytes of a CPU tensor, aliasing its memory. */
export function bytesOf(t: CpuTensor): Uint8Array {
  const d = t.data;
  return new Uint8Array(d.buffer, d.byteOffset, d.byteLength);
}

/** A CPU tensor that aliases `bytes` when they are aligned for the dtype, else a copy. */
export function fromBytes<D extends DType>(bytes: Uint8Array, dtype: D, shape: number[]): CpuTensor<ArrayOf<D>> {
  const C = arrayClassOf(dtype);
  const n = numel(shape);
  if (n * C.BYTES_PER_ELEMENT !== bytes.byteLength) {
    throw invalidArgument(`fromBytes: ${bytes.byteLength} bytes do not hold ${n} × ${dtype}`);
  }
  if (bytes.byteOffset % C.BYTES_PER_ELEMENT === 0) {
    return { dtype, shape: [...shape], device: 'cpu', data: new C(bytes.buffer, bytes.byteOffset, n) as ArrayOf<D> };
  }
  const data = new C(n);
  new Uint8Array(data.buffer).set(bytes);
  return { dtype, shape: [...shape], device: 'cpu', data: data as ArrayOf<D> };
}
