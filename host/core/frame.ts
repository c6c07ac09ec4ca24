/**
 * Typed access to the core's tensor-dict frame codec (assembly/frame.ts; the bytes are described
 * in docs/wire-format.md). This layer knows nothing about msgpack or Tensor objects: an entry is
 * a key plus either a tensor descriptor (with optional inline CPU bytes) or an opaque value blob.
 * host/coordinator/tensor_dict.ts builds dicts on top of it.
 *
 *   encodeFrame(entries) → Uint8Array          throws INVALID_ARGUMENT on a bad entry
 *   decodeFrame(bytes)   → FrameEntry[]        throws PROTOCOL (detail = FRAME_ERR code) on bad bytes
 *
 * Pointers never leave this file. Inputs go through two grow-only Scratch regions (one per
 * direction; each keeps the size of the largest frame seen); outputs are copied out of core
 * memory, so nothing returned aliases the core.
 */
import { coreConstantTable, getCore, Scratch } from './loader.js';
import { dtypeInfo, dtypeByCode, type DType } from './dtype.js';
import { invalidArgument, protocolError } from '../base/errors.js';

export type FrameEntry = FrameTensorEntry | FrameValueEntry;

export interface FrameTensorEntry {
  key: string;
  kind: 'tensor';
  dtype: DType;
  shape: number[];
  /** 'cpu' or 'type:index' (e.g. 'cuda:3'). */
  device: string;
  nbytes: number;
  /** CPU tensors only: the bytes carried inside the frame. Decoded payloads are fresh copies. */
  payload?: Uint8Array;
}

export interface FrameValueEntry {
  key: string;
  kind: 'value';
  /** Opaque bytes (tensor_dict puts msgpack there). A decoded blob is a view of the input frame. */
  blob: Uint8Array;
}

/**
 * Decode error codes, read from the core (assembly/frame.ts FRAME_ERR_<NAME>);
 * `GroupcommError.detail` carries one. BAD_VALUE is raised by host/coordinator/tensor_dict.ts
 * (a value blob is not valid msgpack); the core only reserves its number.
 */
const FRAME_ERROR_NAMES = [
  'TRUNCATED', 'BAD_MAGIC', 'BAD_VERSION', 'BAD_FLAGS', 'TOO_MANY_ENTRIES', 'BAD_KIND', 'BAD_UTF8',
  'DUPLICATE_KEY', 'BAD_DTYPE', 'BAD_DEVICE', 'NDIM_LIMIT', 'DIM_TOO_LARGE', 'SIZE_OVERFLOW',
  'NBYTES_MISMATCH', 'INLINE_NOT_CPU', 'PAYLOAD_OUT_OF_BOUNDS', 'BAD_PADDING', 'TRAILING_BYTES',
  'KEY_TOO_LONG', 'FRAME_TOO_LARGE', 'BAD_VALUE',
] as const;
export type FrameErrorName = (typeof FRAME_ERROR_NAMES)[number];

export const FrameError = coreConstantTable(
  Object.fromEntries(FRAME_ERROR_NAMES.map((n) => [n, `FRAME_ERR_${n}`])) as Record<FrameErrorName, `FRAME_ERR_${FrameErrorName}`>);
/** A FrameError code (a number; `frameErrorName` gives its name). */
export type FrameError = number;

// Texts that state a limit take it from the core when they are made.
const ERROR_TEXT: Readonly<Record<FrameErrorName, string | (() => string)>> = {
  TRUNCATED: 'truncated: the frame ends inside a field',
  BAD_MAGIC: 'bad magic: not a groupcomm tensor-dict frame',
  BAD_VERSION: 'unsupported frame version',
  BAD_FLAGS: 'reserved flag bits set',
  TOO_MANY_ENTRIES: 'too many entries',
  BAD_KIND: 'unknown entry kind',
  BAD_UTF8: 'key is not valid UTF-8',
  DUPLICATE_KEY: 'duplicate key',
  BAD_DTYPE: 'unknown dtype code',
  BAD_DEVICE: () => `bad device (type must be [a-z][a-z0-9_]{0,${FRAME_LIMITS.maxDeviceTypeBytes - 1}}; cpu has index 0)`,
  NDIM_LIMIT: 'too many dimensions',
  DIM_TOO_LARGE: () => `dimension out of range (integers 0..2^${Math.log2(FRAME_LIMITS.maxDim + 1)}-1)`,
  SIZE_OVERFLOW: 'tensor size overflows the limit',
  NBYTES_MISMATCH: 'nbytes does not match dims × itemsize',
  INLINE_NOT_CPU: 'inline payload on a non-CPU tensor',
  PAYLOAD_OUT_OF_BOUNDS: 'inline payload out of bounds',
  BAD_PADDING: 'nonzero padding',
  TRAILING_BYTES: 'trailing bytes after the frame',
  KEY_TOO_LONG: 'key too long',
  FRAME_TOO_LARGE: 'frame too large',
  BAD_VALUE: 'value blob is not valid msgpack',
};

/** The name of a FrameError code, e.g. 'DUPLICATE_KEY'. */
export function frameErrorName(code: number): string {
  for (const [name, c] of Object.entries(FrameError)) if (c === code) return name;
  return `UNKNOWN_${code}`;
}

function errorText(code: number): string {
  const name = frameErrorName(code);
  if (!Object.hasOwn(ERROR_TEXT, name)) return `error ${code}`;
  const t = ERROR_TEXT[name as FrameErrorName];
  return typeof t === 'string' ? t : t();
}

/** Limits of the frame format (docs/wire-format.md), read from the core. */
export const FRAME_LIMITS = coreConstantTable({
  version: 'FRAME_VERSION',
  maxNdim: 'FRAME_MAX_NDIM',
  maxEntries: 'FRAME_MAX_ENTRIES',
  maxKeyBytes: 'FRAME_MAX_KEY_BYTES',
  maxDeviceTypeBytes: 'FRAME_MAX_DEVICE_TYPE_BYTES',
  maxDeviceIndex: 'FRAME_MAX_DEVICE_INDEX',
  maxDim: 'FRAME_MAX_DIM',
  maxTensorBytes: 'FRAME_MAX_TENSOR_BYTES',
  maxFrameBytes: 'FRAME_MAX_FRAME_BYTES',
  payloadAlign: 'FRAME_PAYLOAD_ALIGN',
});

const encScratch = new Scratch();
const decScratch = new Scratch();

// ---- UTF-8 (keys are short; a JS loop beats a TextEncoder call for them) ------------------------

/** Writes `s` as UTF-8 at `pos`; returns the end, or -1 when `s` has a lone surrogate. */
function writeUtf8(u8: Uint8Array, pos: number, s: string): number {
  for (let i = 0; i < s.length; i++) {
    let c = s.charCodeAt(i);
    if (c < 0x80) { u8[pos++] = c; continue; }
    if (c < 0x800) {
      u8[pos++] = 0xc0 | (c >> 6);
      u8[pos++] = 0x80 | (c & 63);
      continue;
    }
    if (c >= 0xd800 && c <= 0xdfff) {
      const d = s.charCodeAt(i + 1);
      if (c > 0xdbff || !(d >= 0xdc00 && d <= 0xdfff)) return -1;
      c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
      i++;
      u8[pos++] = 0xf0 | (c >> 18);
      u8[pos++] = 0x80 | ((c >> 12) & 63);
      u8[pos++] = 0x80 | ((c >> 6) & 63);
      u8[pos++] = 0x80 | (c & 63);
      continue;
    }
    u8[pos++] = 0xe0 | (c >> 12);
    u8[pos++] = 0x80 | ((c >> 6) & 63);
    u8[pos++] = 0x80 | (c & 63);
  }
  return pos;
}

const utf8 = new TextDecoder();

/** Bytes the core already validated as UTF-8. */
function readUtf8(b: Uint8Array, off: number, len: number): string {
  let s = '';
  for (let i = off, end = off + len; i < end; i++) {
    const c = b[i];
    if (c >= 0x80) return utf8.decode(b.subarray(off, end));
    s += String.fromCharCode(c);
  }
  return s;
}

// ---- devices -------------------------------------------------------------------------------

// Both limits are the core's: the type's length, and as many index digits as the largest index
// has (the value is checked below).
let deviceRe: RegExp | undefined;
const parsedDevices = new Map<string, [string, number]>();

function parseFrameDevice(device: string, key: string): [string, number] {
  let d = parsedDevices.get(device);
  if (d) return d;
  deviceRe ??= new RegExp(`^([a-z][a-z0-9_]{0,${FRAME_LIMITS.maxDeviceTypeBytes - 1}})` +
    `(?::(\\d{1,${String(FRAME_LIMITS.maxDeviceIndex).length}}))?$`);
  const m = deviceRe.exec(device);
  const index = m && m[2] !== undefined ? Number(m[2]) : 0;
  if (!m || index > FRAME_LIMITS.maxDeviceIndex || (m[1] === 'cpu' && index !== 0)) {
    throw invalidArgument(`tensor '${key}': bad device '${device}'; expected 'cpu' or 'type:index' ` +
      `(type [a-z][a-z0-9_]{0,${FRAME_LIMITS.maxDeviceTypeBytes - 1}}, index 0..${FRAME_LIMITS.maxDeviceIndex})`, { key });
  }
  d = [m[1], index];
  if (parsedDevices.size > 256) parsedDevices.clear(); // a bound, not a policy: devices are few
  parsedDevices.set(device, d);
  return d;
}

function deviceName(type: string, index: number): string {
  return type === 'cpu' ? 'cpu' : type + ':' + index;
}

// ---- encode ------------------------------------------------------------------------------------

/** Encodes entries into one frame (metadata plus inline payloads). Keys must be distinct. */
export function encodeFrame(entries: readonly FrameEntry[]): Uint8Array {
  const n = entries.length;
  if (n > FRAME_LIMITS.maxEntries) throw invalidArgument(`frame: ${n} entries exceed the limit of ${FRAME_LIMITS.maxEntries}`);
  // Scratch layout: n specs, then f64 dims, then key / device-type / blob bytes.
  let dimsBytes = 0;
  let bytes = 0;
  for (const e of entries) {
    bytes += e.key.length * 3;
    if (e.kind === 'value') bytes += e.blob.byteLength;
    else {
      if (e.shape.length > FRAME_LIMITS.maxNdim) {
        throw invalidArgument(`tensor '${e.key}': ${e.shape.length} dims exceed the limit of ${FRAME_LIMITS.maxNdim}`, { key: e.key });
      }
      dimsBytes += e.shape.length * 8;
      bytes += 16;
    }
  }
  const c = getCore();
  const SPEC = c.consts.FRAME_SPEC_BYTES;
  const base = encScratch.ensure(n * SPEC + dimsBytes + bytes);
  const u8 = c.u8();
  const dv = c.dv();
  let dimPos = base + n * SPEC;
  let pos = dimPos + dimsBytes;
  for (let i = 0; i < n; i++) {
    const e = entries[i];
    const s = base + i * SPEC;
    const keyEnd = writeUtf8(u8, pos, e.key);
    if (keyEnd < 0) throw invalidArgument(`key ${JSON.stringify(e.key)} has a lone UTF-16 surrogate; keys must be well-formed strings`, { key: e.key });
    dv.setUint32(s + 4, pos, true);
    dv.setUint32(s + 8, keyEnd - pos, true);
    pos = keyEnd;
    if (e.kind === 'value') {
      dv.setUint8(s, 1);
      u8.set(e.blob, pos);
      dv.setUint32(s + 24, pos, true);
      dv.setUint32(s + 28, e.blob.byteLength, true);
      pos += e.blob.byteLength;
      continue;
    }
    const info = dtypeInfo(e.dtype);
    if (!info) throw invalidArgument(`tensor '${e.key}': unknown dtype '${e.dtype}'`, { key: e.key });
    const [type, index] = parseFrameDevice(e.device, e.key);
    const inline = e.payload !== undefined;
    if (inline && e.payload!.byteLength !== e.nbytes) {
      throw invalidArgument(`tensor '${e.key}': payload has ${e.payload!.byteLength} bytes, descriptor says ${e.nbytes}`, { key: e.key });
    }
    dv.setUint8(s, 0);
    dv.setUint8(s + 1, info.code);
    dv.setUint8(s + 2, e.shape.length);
    dv.setUint8(s + 3, inline ? 1 : 0);
    dv.setUint32(s + 12, pos, true);
    dv.setUint32(s + 16, type.length, true);
    for (let k = 0; k < type.length; k++) u8[pos++] = type.charCodeAt(k);
    dv.setUint32(s + 20, index, true);
    dv.setUint32(s + 24, dimPos, true);
    for (const d of e.shape) {
      dv.setFloat64(dimPos, d, true);
      dimPos += 8;
    }
    dv.setFloat64(s + 32, e.nbytes, true);
  }
  const x = c.exports;
  const metaLen = x.frameEncode(base, n);
  if (metaLen < 0) {
    const entry = x.frameErrorEntry();
    const key = entry >= 0 ? entries[entry].key : undefined;
    throw invalidArgument(`frame encode: ${errorText(-metaLen)}` +
      (key !== undefined ? ` (entry ${entry}, key ${JSON.stringify(key)})` : ''), { key, detail: -metaLen });
  }
  const frame = new Uint8Array(x.frameTotalLength());
  const outPtr = x.frameOutPtr() >>> 0;
  frame.set(c.u8().subarray(outPtr, outPtr + metaLen));
  const dv2 = c.dv(); // the call may have grown memory
  for (let i = 0; i < n; i++) {
    const e = entries[i];
    if (e.kind === 'tensor' && e.payload !== undefined) frame.set(e.payload, dv2.getUint32(base + i * SPEC + 40, true));
  }
  return frame;
}

/** A fresh copy (`Buffer#slice` would alias, so never call `.slice` on caller bytes). */
function copyBytes(b: Uint8Array, off: number, len: number): Uint8Array {
  const out = new Uint8Array(len);
  out.set(b.subarray(off, off + len));
  return out;
}

// ---- decode ------------------------------------------------------------------------------------

/**
 * Validates and decodes a frame from an untrusted peer. Keys, blobs and payloads are read from
 * `frame` itself, the record table from core memory: blobs are views of `frame`, payloads are
 * fresh (hence aligned) copies, and nothing aliases core memory.
 */
export function decodeFrame(frame: Uint8Array): FrameEntry[] {
  if (!(frame instanceof Uint8Array)) throw invalidArgument('decodeFrame: expected a Uint8Array');
  const c = getCore();
  const x = c.exports;
  if (frame.byteLength > FRAME_LIMITS.maxFrameBytes) {
    throw protocolError(`tensor-dict frame of ${frame.byteLength} bytes exceeds the limit of ${FRAME_LIMITS.maxFrameBytes}`,
      { detail: FrameError.FRAME_TOO_LARGE });
  }
  const ptr = decScratch.ensure(Math.max(frame.byteLength, 1));
  c.u8().set(frame, ptr);
  const count = x.frameDecode(ptr, frame.byteLength);
  if (count < 0) {
    const code = -count;
    const entry = x.frameErrorEntry();
    throw protocolError(`bad tensor-dict frame: ${errorText(code)} ` +
      `(${frameErrorName(code)}, byte ${x.frameErrorOffset()}${entry >= 0 ? `, entry ${entry}` : ''}, ` +
      `frame of ${frame.byteLength} bytes)`, { detail: code });
  }
  const dv = c.dv();
  const RECORD = c.consts.FRAME_RECORD_BYTES;
  const table = x.frameTablePtr() >>> 0;
  const fdv = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
  const entries: FrameEntry[] = new Array(count);
  for (let i = 0; i < count; i++) {
    const r = table + i * RECORD;
    const key = readUtf8(frame, dv.getUint32(r, true), dv.getUint32(r + 4, true));
    const at = dv.getUint32(r + 24, true);
    if (dv.getUint8(r + 8) === 1) {
      entries[i] = { key, kind: 'value', blob: frame.subarray(at, at + dv.getUint32(r + 28, true)) };
      continue;
    }
    const ndim = dv.getUint8(r + 10);
    const shape: number[] = new Array(ndim);
    // Each dim is <= 2^53 - 1 (checked by the core), so hi * 2^32 + lo is exact.
    for (let k = 0; k < ndim; k++) shape[k] = fdv.getUint32(at + k * 8 + 4, true) * 0x100000000 + fdv.getUint32(at + k * 8, true);
    const devOff = dv.getUint32(r + 16, true);
    const devLen = dv.getUint32(r + 20, true);
    const nbytes = dv.getFloat64(r + 32, true);
    const e: FrameTensorEntry = {
      key,
      kind: 'tensor',
      dtype: dtypeByCode(dv.getUint8(r + 9))!.name,
      shape,
      device: deviceName(readUtf8(frame, devOff, devLen), dv.getUint32(r + 12, true)),
      nbytes,
    };
    if (dv.getUint8(r + 11) & 1) {
      const off = dv.getUint32(r + 40, true);
      e.payload = copyBytes(frame, off, nbytes);
    }
    entries[i] = e;
  }
  return entries;
}
