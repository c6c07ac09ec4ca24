/**
 * Values the process group puts under store keys. Every value starts with a 4-byte header —
 * magic "gc", format version, kind — so a reader can tell an object from a tensor (a mismatch
 * is a clear error, not a hang on a key that never appears, as in vLLM) and garbage from both.
 *
 *   object: 67 63 01 01 | msgpack bytes
 *   object with raw segments:
 *           67 63 01 03 | u32 count | u32 body length | count × u64 segment length | body |
 *           segments, each starting 8-byte aligned (zero padding)
 *           The body is msgpack in which every typed array of SEGMENT_MIN_BYTES or more is an
 *           extension naming its segment (index) and class: msgpack would copy those bytes
 *           through its own growing buffer, which costs milliseconds per MiB; here they are
 *           copied once into the value, and read back as views where alignment allows.
 *   tensor: 67 63 01 02 | dtype code u8 | ndim u8 | 0 0 | ndim × u64 LE dims | raw element bytes
 *
 * Tensor bytes are raw (not msgpack): the element bytes start 8-byte aligned. Decoding treats
 * every byte as untrusted; anything malformed throws ERR_GROUPCOMM_PROTOCOL naming the key and
 * the rank that wrote it.
 */
import { addExtension, Packr, RESERVE_START_SPACE } from 'msgpackr';
import { dtypeByCode, dtypeInfo, type DType } from '../core/dtype.js';
import { invalidArgument, protocolError } from '../base/errors.js';
import { BASE_EXTENSIONS, checkMsgpack } from '../core/msgpack_guard.js';
import { bytesOf, isCpu, numel, type Tensor } from '../core/tensor.js';

const MAGIC0 = 0x67; // 'g'
const MAGIC1 = 0x63; // 'c'
const VERSION = 1;
export const KIND_OBJECT = 1;
export const KIND_TENSOR = 2;
export const KIND_OBJECT_SEGMENTS = 3;
/** Typed arrays at least this big travel as raw segments next to the msgpack body. */
const SEGMENT_MIN_BYTES = 4096;
const HEADER = 4;
/** Far beyond any real tensor; bounds the header a hostile writer can make us parse. */
const MAX_NDIM = 64;

// msgpack has one "map" type, and msgpackr decodes it as a plain object when
// `useRecords: false`, so a Map with number keys would come back as an object with string keys.
// Maps travel as an extension holding their entries instead. msgpackr checks `constructor ===
// Map` before consulting extensions, so Maps are swapped for this private box before packing.
class MapBox {
  constructor(readonly entries: unknown[][]) {}
}
const MAP_EXT = 0x4d; // 'M'; msgpackr's own extension codes are 0x42, 0x62, 0x65, 0x69, 0x70, 0x73, 0x74, 0x78, 0xff
addExtension({
  Class: MapBox,
  type: MAP_EXT,
  write: (box: MapBox) => box.entries,
  // Untrusted input: only a list of [key, value] pairs makes a Map; anything else is garbage.
  read: (entries: unknown) => {
    if (!Array.isArray(entries) || !entries.every((e) => Array.isArray(e) && e.length === 2)) {
      throw new Error('malformed Map extension');
    }
    return new Map(entries as [unknown, unknown][]);
  },
});

/** A typed array that travels as raw segment `index` (see KIND_OBJECT_SEGMENTS). */
class SegmentRef {
  constructor(readonly index: number, readonly cls: string) {}
}
const SEGMENT_EXT = 0x53; // 'S'
type TypedArrayClass = { new(buf: ArrayBufferLike, off: number, len: number): ArrayBufferView; BYTES_PER_ELEMENT: number };
/** Exactly these classes (not subclasses such as Buffer, which msgpack decodes as its own type). */
const SEGMENT_CLASSES: Record<string, TypedArrayClass> = Object.fromEntries(
  [Uint8Array, Int8Array, Uint8ClampedArray, Uint16Array, Int16Array, Uint32Array, Int32Array,
    Float32Array, Float64Array, BigInt64Array, BigUint64Array].map((c) => [c.name, c as unknown as TypedArrayClass]),
);
/** The segments of the value being decoded (decoding is synchronous, one value at a time). */
let reading: { value: Uint8Array; at: number[]; len: number[]; used: boolean[] } | undefined;
addExtension({
  Class: SegmentRef,
  type: SEGMENT_EXT,
  write: (r: SegmentRef) => [r.index, r.cls],
  read: (x: unknown) => {
    if (!reading || !Array.isArray(x) || x.length !== 2 || !Number.isInteger(x[0]) || typeof x[1] !== 'string') throw new Error('malformed segment reference');
    const [i, name] = x as [number, string];
    const cls = Object.hasOwn(SEGMENT_CLASSES, name) ? SEGMENT_CLASSES[name] : undefined;
    if (!cls || i < 0 || i >= reading.at.length || reading.used[i]) throw new Error(`bad segment reference ${i} (${String(name).slice(0, 20)})`);
    reading.used[i] = true;
    const size = cls.BYTES_PER_ELEMENT;
    const len = reading.len[i];
    if (len % size !== 0) throw new Error(`segment ${i} of ${len} bytes is not a whole number of ${name} elements`);
    const v = reading.value;
    const off = v.byteOffset + reading.at[i];
    // A view where the element alignment allows (always for bytes), else a copy.
    if (off % size === 0) return new cls(v.buffer, off, len / size);
    const copy = new Uint8Array(len);
    copy.set(v.subarray(reading.at[i], reading.at[i] + len));
    return new cls(copy.buffer, 0, len / size);
  },
});

// Untrusted input: no structured clone; checkMsgpack admits only the extensions written here.
const packr = new Packr({ useRecords: false, moreTypes: true, structuredClone: false });
const ALLOWED = new Map<number, number>([...BASE_EXTENSIONS, [MAP_EXT, 1], [SEGMENT_EXT, 1]]);

/** Decodes a msgpack body from a peer: checked first, and any failure is the caller's PROTOCOL. */
function unpackChecked(body: Uint8Array): unknown {
  checkMsgpack(body, ALLOWED);
  return packr.unpack(body);
}

/**
 * `v` with every Map replaced by a MapBox and every big typed array by a SegmentRef (its bytes
 * go to `segs`); containers are copied only along paths that hold one.
 */
function boxMaps(v: unknown, segs: ArrayBufferView[], depth = 0): unknown {
  // msgpack would silently turn these into nil; say so instead.
  if (typeof v === 'function' || typeof v === 'symbol') throw invalidArgument(`cannot send a ${typeof v} (objects carry data only)`);
  if (typeof v !== 'object' || v === null || v instanceof Date) return v;
  // Receivers refuse these extensions (docs/security.md): say so at the sender.
  if (v instanceof RegExp || v instanceof Error) throw invalidArgument(`cannot send a ${v.constructor.name} (objects carry data only; send its text)`);
  if (ArrayBuffer.isView(v)) {
    const name = v.constructor.name;
    if (v.byteLength < SEGMENT_MIN_BYTES || !Object.hasOwn(SEGMENT_CLASSES, name) || v.constructor !== SEGMENT_CLASSES[name]) return v;
    segs.push(v);
    return new SegmentRef(segs.length - 1, name);
  }
  if (depth > 512) throw invalidArgument('object is nested more than 512 levels deep (or is cyclic)');
  if (v instanceof Map) {
    return new MapBox([...v].map(([k, x]) => [boxMaps(k, segs, depth + 1), boxMaps(x, segs, depth + 1)]));
  }
  if (Array.isArray(v)) {
    let out: unknown[] | undefined;
    for (let i = 0; i < v.length; i++) {
      const x = boxMaps(v[i], segs, depth + 1);
      if (x !== v[i]) (out ??= v.slice())[i] = x;
    }
    return out ?? v;
  }
  if (v instanceof Set) {
    let changed = false;
    const items = [...v].map((x) => {
      const y = boxMaps(x, segs, depth + 1);
      changed ||= y !== x;
      return y;
    });
    return changed ? new Set(items) : v;
  }
  if (Object.getPrototypeOf(v) === Object.prototype) {
    let out: Record<string, unknown> | undefined;
    for (const k of Object.keys(v)) {
      const x = (v as Record<string, unknown>)[k];
      const y = boxMaps(x, segs, depth + 1);
      if (y !== x) (out ??= { ...(v as Record<string, unknown>) })[k] = y;
    }
    return out ?? v;
  }
  return v;
}

/**
 * True when boxMaps would return `v` itself: no Map, Set, class instance, big typed array,
 * function or symbol anywhere in it (the common case of plain data). An allocation-free scan
 * that lets encodeObject skip boxMaps; false sends anything doubtful to boxMaps, which decides
 * (and rejects what must be rejected).
 */
function plain(v: unknown, depth: number): boolean {
  if (typeof v !== 'object' || v === null) return typeof v !== 'function' && typeof v !== 'symbol';
  if (depth > 512) return false;
  if (Array.isArray(v)) {
    for (let i = 0; i < v.length; i++) if (!plain(v[i], depth + 1)) return false;
    return true;
  }
  if (Object.getPrototypeOf(v) !== Object.prototype) return v instanceof Date || (ArrayBuffer.isView(v) && v.byteLength < SEGMENT_MIN_BYTES);
  for (const k in v) if (!plain((v as Record<string, unknown>)[k], depth + 1)) return false;
  return true;
}

function header(kind: number, out: Uint8Array): void {
  out[0] = MAGIC0;
  out[1] = MAGIC1;
  out[2] = VERSION;
  out[3] = kind;
}

/** Encodes an object; INVALID_ARGUMENT when msgpack cannot represent it. */
export function encodeObject(obj: unknown): Uint8Array {
  const segs: ArrayBufferView[] = [];
  let out: Uint8Array;
  try {
    const boxed = plain(obj, 0) ? obj : boxMaps(obj, segs);
    if (segs.length) return withSegments(packr.pack(boxed), segs);
    // msgpackr leaves HEADER bytes free in front of the encoding: no second copy of a big value.
    // The result is a slice of msgpackr's buffer that later packs do not overwrite.
    out = packr.pack(boxed, RESERVE_START_SPACE | HEADER);
  } catch (e) {
    if ((e as { code?: string }).code === 'ERR_GROUPCOMM_INVALID_ARGUMENT') throw e;
    throw invalidArgument(`cannot encode object: ${(e as Error).message}`, { cause: e });
  }
  header(KIND_OBJECT, out);
  return out;
}

const align8 = (n: number) => (n + 7) & ~7;

/** KIND_OBJECT_SEGMENTS: header, tables, body, then each segment 8-byte aligned. */
function withSegments(body: Uint8Array, segs: ArrayBufferView[]): Uint8Array {
  const head = HEADER + 8 + 8 * segs.length;
  let size = align8(head + body.length);
  for (const v of segs) size = align8(size + v.byteLength);
  // allocUnsafe: every byte is written below (segments and padding), and it is a fresh buffer.
  const out = Buffer.allocUnsafe(size);
  header(KIND_OBJECT_SEGMENTS, out);
  out.writeUInt32LE(segs.length, 4);
  out.writeUInt32LE(body.length, 8);
  segs.forEach((v, i) => {
    out.writeUInt32LE(v.byteLength % 0x1_0000_0000, 12 + 8 * i);
    out.writeUInt32LE(Math.floor(v.byteLength / 0x1_0000_0000), 16 + 8 * i);
  });
  out.set(body, head);
  let at = head + body.length;
  for (const v of segs) {
    const a = align8(at);
    out.fill(0, at, a);
    out.set(new Uint8Array(v.buffer, v.byteOffset, v.byteLength), a);
    at = a + v.byteLength;
  }
  out.fill(0, at, size);
  return new Uint8Array(out.buffer, out.byteOffset, out.length);
}

/** Where a value came from, for error messages. */
export interface Origin {
  key: string;
  src: number;
}

function bad(what: string, o: Origin, cause?: unknown): Error {
  return protocolError(`${what} under key '${o.key}' (written by rank ${o.src})`, { key: o.key, peerRank: o.src, cause });
}

function checkHeader(bytes: Uint8Array, kind: number, o: Origin): void {
  if (bytes.length < HEADER || bytes[0] !== MAGIC0 || bytes[1] !== MAGIC1) throw bad('not a groupcomm value', o);
  if (bytes[2] !== VERSION) throw bad(`value format version ${bytes[2]} (this build reads ${VERSION})`, o);
  if (bytes[3] !== kind) {
    const name = (k: number) => (k === KIND_OBJECT ? 'an object' : k === KIND_TENSOR ? 'a tensor' : `kind ${k}`);
    throw bad(`expected ${name(kind)} but found ${name(bytes[3])} (sender and receiver called different ops)`, o);
  }
}

export function decodeObject(bytes: Uint8Array, o: Origin): unknown {
  if (bytes.length >= HEADER && bytes[3] === KIND_OBJECT_SEGMENTS) return decodeSegments(bytes, o);
  checkHeader(bytes, KIND_OBJECT, o);
  try {
    return unpackChecked(bytes.subarray(HEADER));
  } catch (e) {
    throw bad(`undecodable object (${(e as Error).message.slice(0, 120)})`, o, e);
  }
}

function decodeSegments(bytes: Uint8Array, o: Origin): unknown {
  checkHeader(bytes, KIND_OBJECT_SEGMENTS, o);
  if (bytes.length < HEADER + 8) throw bad('truncated object header', o);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const count = dv.getUint32(4, true);
  const bodyLen = dv.getUint32(8, true);
  const head = HEADER + 8 + 8 * count;
  if (count === 0 || head > bytes.length || bodyLen > bytes.length - head) throw bad('truncated object header', o);
  const at: number[] = [];
  const len: number[] = [];
  let end = head + bodyLen;
  for (let i = 0; i < count; i++) {
    const n = dv.getUint32(12 + 8 * i, true) + dv.getUint32(16 + 8 * i, true) * 0x1_0000_0000;
    const a = align8(end);
    if (n > bytes.length || a + n > bytes.length) throw bad(`segment ${i} of ${n} bytes runs past the value`, o);
    at.push(a);
    len.push(n);
    end = a + n;
  }
  reading = { value: bytes, at, len, used: new Array(count).fill(false) };
  try {
    return unpackChecked(bytes.subarray(head, head + bodyLen));
  } catch (e) {
    throw bad(`undecodable object (${(e as Error).message.slice(0, 120)})`, o, e);
  } finally {
    reading = undefined;
  }
}

/** Encodes a CPU tensor as header + raw bytes. */
export function encodeTensor(t: Tensor): Uint8Array {
  checkCpuTensor(t, 'send');
  const info = dtypeInfo(t.dtype)!;
  const data = bytesOf(t as Parameters<typeof bytesOf>[0]);
  const head = 8 + 8 * t.shape.length;
  const out = new Uint8Array(head + data.byteLength);
  header(KIND_TENSOR, out);
  out[4] = info.code;
  out[5] = t.shape.length;
  const dv = new DataView(out.buffer, out.byteOffset, out.byteLength);
  t.shape.forEach((d, i) => dv.setBigUint64(8 + 8 * i, BigInt(d), true));
  out.set(data, head);
  return out;
}

export interface DecodedTensor {
  dtype: DType;
  shape: number[];
  /** The element bytes, aliasing the value read from the store. */
  bytes: Uint8Array;
}

export function decodeTensor(bytes: Uint8Array, o: Origin): DecodedTensor {
  checkHeader(bytes, KIND_TENSOR, o);
  if (bytes.length < 8) throw bad('truncated tensor header', o);
  const info = dtypeByCode(bytes[4]);
  if (!info) throw bad(`unknown dtype code ${bytes[4]}`, o);
  const ndim = bytes[5];
  if (ndim > MAX_NDIM) throw bad(`tensor with ${ndim} dims (limit ${MAX_NDIM})`, o);
  const head = 8 + 8 * ndim;
  if (bytes.length < head) throw bad('truncated tensor header', o);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const shape: number[] = [];
  for (let i = 0; i < ndim; i++) {
    const d = dv.getBigUint64(8 + 8 * i, true);
    if (d > BigInt(Number.MAX_SAFE_INTEGER)) throw bad(`tensor dim ${d} out of range`, o);
    shape.push(Number(d));
  }
  // Multiply with an early exit so a hostile shape cannot overflow into a matching size.
  const room = bytes.length - head;
  let size = shape.includes(0) ? 0 : info.itemSize;
  for (const d of shape) {
    if (size > room) break;
    size *= d;
  }
  if (size !== room) {
    throw bad(`tensor [${shape.join(', ')}] ${info.name} does not match its ${room} data bytes`, o);
  }
  return { dtype: info.name, shape, bytes: bytes.subarray(head) };
}

export function checkCpuTensor(t: Tensor, op: string): void {
  if (typeof t !== 'object' || t === null || !dtypeInfo(t.dtype) || !Array.isArray(t.shape)) {
    throw invalidArgument(`${op}: expected a Tensor ({ dtype, shape, device, data })`);
  }
  if (!isCpu(t)) {
    throw invalidArgument(`${op}: the process group carries CPU tensors only (got device '${t.device}'); use the device communicator`);
  }
  const n = numel(t.shape);
  const data = t.data as ArrayBufferView;
  if (!ArrayBuffer.isView(data) || data.byteLength !== n * dtypeInfo(t.dtype)!.itemSize) {
    throw invalidArgument(`${op}: tensor data holds ${(data as ArrayBufferView)?.byteLength} bytes, shape [${t.shape.join(', ')}] ${t.dtype} needs ${n * dtypeInfo(t.dtype)!.itemSize}`);
  }
}

/** Copies a received tensor into `t` after checking that they describe the same thing. */
export function fillTensor(t: Tensor, got: DecodedTensor, op: string, o: Origin): void {
  if (got.dtype !== t.dtype || got.shape.length !== t.shape.length || got.shape.some((d, i) => d !== t.shape[i])) {
    throw invalidArgument(
      `${op}: rank ${o.src} sent [${got.shape.join(', ')}] ${got.dtype} but the tensor passed here is [${t.shape.join(', ')}] ${t.dtype} (key '${o.key}')`,
      { key: o.key, peerRank: o.src },
    );
  }
  bytesOf(t as Parameters<typeof bytesOf>[0]).set(got.bytes);
}
