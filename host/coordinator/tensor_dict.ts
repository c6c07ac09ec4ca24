/**
 * Tensor dicts on the wire: the split of vLLM's `_split_tensor_dict`, encoded as one metadata
 * frame by the WebAssembly core (docs/wire-format.md).
 *
 *   encodeTensorDict(dict, { inlineCpu }) → { frame, tensors }
 *     Walks the dict in key order (Object.keys). A Tensor value becomes a descriptor (dtype,
 *     shape, device, nbytes) and the tensor goes to `tensors`, in order; with `inlineCpu`, CPU
 *     tensors travel inside the frame instead (device tensors never do). Any other value,
 *     nested containers included, becomes a msgpack blob (tensors nested inside such a value
 *     travel inside its blob, as in vLLM).
 *   decodeTensorDict(frame) → { dict, slots }
 *     Validates the frame (untrusted bytes) and rebuilds the dict. Inline CPU tensors are
 *     materialised as CpuTensors over fresh, aligned memory. Every other tensor is a slot, in
 *     frame order, whose key is already in `dict` (value undefined) so the key order survives.
 *   fillTensorDict(dict, slots, tensors)
 *     Puts the received tensors (one per slot, same order) into the dict after checking each
 *     against its slot's dtype and shape.
 *
 * Transport (the coordinator and process group): the frame goes through the store channel, then
 * each slot's tensor over the data channel; a slot with nbytes 0 needs no transfer.
 *
 * Values use one msgpackr Packr ({ useRecords: false, moreTypes: true, copyBuffers: true,
 * structuredClone: false }), and a received blob is checked first (core/msgpack_guard.ts: no
 * Error, RegExp or structured-clone extensions, no "__proto__" key): decoding never runs code, typed arrays, bigint, Date, Set, undefined round-trip, a Map comes
 * back as a plain object (msgpack has one map type), and decoded values never alias the frame.
 */
import { Packr } from 'msgpackr';
import { encodeFrame, decodeFrame, FrameError, type FrameEntry } from '../core/frame.js';
import { invalidArgument, isGroupcommError, protocolError } from '../base/errors.js';
import { setting } from '../base/config.js';
import { BASE_EXTENSIONS, checkMsgpack } from '../core/msgpack_guard.js';
import {
  arrayClassOf, bytesOf, isTensor, itemSize, numel,
  type CpuTensor, type DeviceBuffer, type DType, type Tensor, type TypedArray,
} from '../core/tensor.js';

// Untrusted input: no structured clone; checkMsgpack admits only the extensions this module writes.
const packr = new Packr({ useRecords: false, moreTypes: true, copyBuffers: true, structuredClone: false });
const ALLOWED = new Map<number, number>(BASE_EXTENSIONS);

export type TensorDict = Record<string, unknown>;

/** A tensor the receiver still has to get over the data channel. */
export interface TensorSlot {
  key: string;
  dtype: DType;
  shape: number[];
  /** The sender's device ('cpu', 'cuda:3', …); the receiver picks its own device of that type. */
  device: string;
  nbytes: number;
}

export interface EncodedTensorDict {
  frame: Uint8Array;
  /** The tensors that are not inside the frame, in dict order (one per receiver slot). */
  tensors: Tensor[];
}

export interface DecodedTensorDict {
  dict: TensorDict;
  slots: TensorSlot[];
}

function isPlainDict(d: unknown): d is TensorDict {
  return typeof d === 'object' && d !== null && !Array.isArray(d) && !ArrayBuffer.isView(d) &&
    !(d instanceof Map) && !(d instanceof Set) && !isTensor(d);
}

// `dict[key] = v` with key '__proto__' would replace the prototype instead of adding a key; a
// peer must not be able to do that.
function put(dict: TensorDict, key: string, v: unknown): void {
  if (key === '__proto__') Object.defineProperty(dict, key, { value: v, enumerable: true, writable: true, configurable: true });
  else dict[key] = v;
}

function tensorNbytes(t: Tensor, key: string): number {
  if (!Array.isArray(t.shape) || !t.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    throw invalidArgument(`tensor '${key}': shape must be integers >= 0, got ${JSON.stringify(t.shape)}`, { key });
  }
  const n = numel(t.shape) * itemSize(t.dtype);
  const have = t.device === 'cpu' ? (t.data as TypedArray).byteLength : (t.data as DeviceBuffer).nbytes;
  if (t.device === 'cpu' ? have !== n : !(have >= n)) {
    throw invalidArgument(`tensor '${key}': ${t.dtype}[${t.shape.join(', ')}] needs ${n} bytes, its data has ${have}`, { key });
  }
  return n;
}

export function encodeTensorDict(dict: TensorDict, opts: { inlineCpu?: boolean } = {}): EncodedTensorDict {
  if (!isPlainDict(dict)) throw invalidArgument('encodeTensorDict: expected a plain object mapping keys to values');
  const inlineCpu = opts.inlineCpu === true;
  const keys = Object.keys(dict);
  const entries: FrameEntry[] = new Array(keys.length);
  const tensors: Tensor[] = [];
  for (let i = 0; i < keys.length; i++) {
    const key = keys[i];
    const v = dict[key];
    if (isTensor(v)) {
      const nbytes = tensorNbytes(v, key);
      if (inlineCpu && v.device === 'cpu') {
        entries[i] = { key, kind: 'tensor', dtype: v.dtype, shape: v.shape, device: 'cpu', nbytes, payload: bytesOf(v as CpuTensor) };
      } else {
        entries[i] = { key, kind: 'tensor', dtype: v.dtype, shape: v.shape, device: v.device, nbytes };
        tensors.push(v);
      }
      continue;
    }
    let blob: Uint8Array;
    try {
      blob = packr.pack(v);
    } catch (e) {
      throw invalidArgument(`value '${key}' cannot be encoded with msgpack: ${(e as Error).message}`, { key, cause: e });
    }
    entries[i] = { key, kind: 'value', blob };
  }
  return { frame: encodeFrame(entries), tensors };
}

/**
 * Decodes a frame from a peer. Only GroupcommErrors escape (PROTOCOL for anything malformed),
 * and no slot may declare more than `maxBytes` (GROUPCOMM_MAX_DECODE_BYTES, 4 GiB): the
 * receiver allocates a slot's size before its data arrives.
 */
export function decodeTensorDict(frame: Uint8Array, opts: { maxBytes?: number } = {}): DecodedTensorDict {
  try {
    return decodeUnchecked(frame, opts.maxBytes ?? setting('GROUPCOMM_MAX_DECODE_BYTES'));
  } catch (e) {
    if (isGroupcommError(e)) throw e;
    throw protocolError(`bad tensor-dict frame: ${(e as Error)?.message ?? e}`, { cause: e });
  }
}

function decodeUnchecked(frame: Uint8Array, maxBytes: number): DecodedTensorDict {
  const entries = decodeFrame(frame);
  const dict: TensorDict = {};
  const slots: TensorSlot[] = [];
  for (const e of entries) {
    if (e.kind === 'value') {
      let v: unknown;
      try {
        checkMsgpack(e.blob, ALLOWED);
        v = packr.unpack(e.blob);
      } catch (err) {
        throw protocolError(`bad tensor-dict frame: value '${e.key}' is not valid msgpack (${(err as Error).message})`,
          { key: e.key, detail: FrameError.BAD_VALUE, cause: err });
      }
      put(dict, e.key, v);
    } else if (e.payload) {
      // The payload is a fresh copy at offset 0, so the view is aligned for every dtype.
      const C = arrayClassOf(e.dtype);
      const t: CpuTensor = { dtype: e.dtype, shape: e.shape, device: 'cpu', data: new C(e.payload.buffer, 0, e.nbytes / C.BYTES_PER_ELEMENT) };
      put(dict, e.key, t);
    } else {
      if (!(e.nbytes <= maxBytes)) {
        throw protocolError(`bad tensor-dict frame: tensor '${e.key}' declares ${e.nbytes} bytes, above GROUPCOMM_MAX_DECODE_BYTES (${maxBytes})`, { key: e.key });
      }
      slots.push({ key: e.key, dtype: e.dtype, shape: e.shape, device: e.device, nbytes: e.nbytes });
      put(dict, e.key, undefined);
    }
  }
  return { dict, slots };
}

export function fillTensorDict(dict: TensorDict, slots: readonly TensorSlot[], tensors: readonly Tensor[]): void {
  if (tensors.length !== slots.length) {
    throw invalidArgument(`fillTensorDict: ${slots.length} slots but ${tensors.length} tensors`);
  }
  for (let i = 0; i < slots.length; i++) {
    const s = slots[i];
    const t = tensors[i];
    if (!isTensor(t) || t.dtype !== s.dtype || t.shape.length !== s.shape.length || t.shape.some((d, k) => d !== s.shape[k])) {
      const got = isTensor(t) ? `${t.dtype}[${t.shape.join(', ')}]` : typeof t;
      throw invalidArgument(`fillTensorDict: tensor ${i} for key '${s.key}' is ${got}, expected ${s.dtype}[${s.shape.join(', ')}]`, { key: s.key });
    }
    put(dict, s.key, t);
  }
}
