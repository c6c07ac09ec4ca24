/**
 * Golden-vector specs: a JSON description of a tensor dict that builds the same dict on every
 * runtime. Plain JSON values stand for themselves; tagged objects stand for what JSON lacks:
 *   {"$tensor": {dtype, shape, device, hex}}       a CPU tensor with exactly these bytes
 *   {"$tensor": {dtype, shape, device, nbytes}}    a device tensor (described, never carried)
 *   {"$typed": "Float32Array", "hex": "…"}         a typed array with exactly these bytes
 *   {"$bigint": "123"}  {"$date": 1700000000000}  {"$undefined": true}
 *   {"$map": [[k, v], …]}  {"$set": [v, …]}  {"$num": "NaN" | "Infinity" | "-Infinity" | "-0"}
 */
import type { Tensor, DType } from '../../host/core/tensor.js';
import { arrayClassOf } from '../../host/core/tensor.js';
import { unhex, hex } from './raw.js';

export type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

export interface GoldenCase {
  name: string;
  /** Why this vector exists. */
  about: string;
  inlineCpu: boolean;
  /** Entries in order (a list, so that order is explicit in the file). */
  dict: Array<[string, Json]>;
}

type TypedCtor = new (b: ArrayBuffer) => ArrayBufferView;
const TYPED: Record<string, TypedCtor> = {
  Int8Array, Uint8Array, Int16Array, Uint16Array, Int32Array, Uint32Array,
  Float32Array, Float64Array, BigInt64Array, BigUint64Array,
} as unknown as Record<string, TypedCtor>;

function freshBuffer(h: string): ArrayBuffer {
  const b = unhex(h);
  const out = new ArrayBuffer(b.byteLength);
  new Uint8Array(out).set(b);
  return out;
}

export function buildValue(s: Json): unknown {
  if (Array.isArray(s)) return s.map(buildValue);
  if (s === null || typeof s !== 'object') return s;
  if ('$tensor' in s) {
    const t = s.$tensor as { dtype: DType; shape: number[]; device: string; hex?: string; nbytes?: number };
    if (t.device === 'cpu') {
      const C = arrayClassOf(t.dtype);
      const buf = freshBuffer(t.hex!);
      return { dtype: t.dtype, shape: t.shape, device: 'cpu', data: new C(buf, 0, buf.byteLength / C.BYTES_PER_ELEMENT) } as Tensor;
    }
    return { dtype: t.dtype, shape: t.shape, device: t.device, data: { ptr: 0n, nbytes: t.nbytes! } } as Tensor;
  }
  if ('$typed' in s) return new TYPED[s.$typed as string](freshBuffer(s.hex as string));
  if ('$bigint' in s) return BigInt(s.$bigint as string);
  if ('$date' in s) return new Date(s.$date as number);
  if ('$undefined' in s) return undefined;
  if ('$num' in s) return Number(s.$num);
  if ('$map' in s) return new Map((s.$map as Array<[Json, Json]>).map(([k, v]) => [buildValue(k), buildValue(v)]));
  if ('$set' in s) return new Set((s.$set as Json[]).map(buildValue));
  const o: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(s)) o[k] = buildValue(v);
  return o;
}

export function buildDict(c: GoldenCase): Record<string, unknown> {
  const d: Record<string, unknown> = {};
  for (const [k, v] of c.dict) d[k] = buildValue(v);
  return d;
}

/**
 * A form two dicts can be compared in: tensors and typed arrays by their bytes (so NaN bit
 * patterns count), Maps as the plain objects msgpack turns them into.
 */
export function comparable(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(comparable);
  if (v instanceof Map) {
    const o: Record<string, unknown> = {};
    for (const [k, x] of v) o[String(k)] = comparable(x);
    return o;
  }
  if (v instanceof Set) return { $set: [...v].map(comparable) };
  if (ArrayBuffer.isView(v)) return { $typed: v.constructor.name, hex: hex(new Uint8Array(v.buffer, v.byteOffset, v.byteLength)) };
  if (v instanceof Date) return { $date: v.getTime() };
  if (typeof v === 'bigint') return { $bigint: String(v) };
  if (typeof v === 'number' && (Number.isNaN(v) || Object.is(v, -0))) return { $num: Object.is(v, -0) ? '-0' : 'NaN' };
  if (v !== null && typeof v === 'object') {
    const o: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) o[k] = comparable(x);
    return o;
  }
  return v;
}
