/**
 * A plain-TypeScript codec for the same v1 frame (docs/wire-format.md), with the same checks, so
 * the benchmark can say what the WebAssembly core buys. Bench-only: the library uses the core.
 * It speaks the FrameEntry shape of host/core/frame.ts and must produce identical bytes.
 */
import { dtypeInfo, dtypeByCode } from '../host/core/dtype.js';
import { protocolError } from '../host/base/errors.js';
import type { FrameEntry, FrameTensorEntry } from '../host/core/frame.js';

const MAGIC = 0x44544347;
const MAX_NDIM = 16;
const MAX = Number.MAX_SAFE_INTEGER;
const enc = new TextEncoder();
const dec = new TextDecoder('utf-8', { fatal: true });
const DEVICE_RE = /^([a-z][a-z0-9_]{0,15})(?::(\d{1,5}))?$/;

export function encodeFrameTs(entries: readonly FrameEntry[]): Uint8Array {
  const keys = entries.map((e) => enc.encode(e.key));
  const devs: Array<[Uint8Array, number] | undefined> = [];
  let size = 12;
  entries.forEach((e, i) => {
    size += 3 + keys[i].length;
    if (e.kind === 'value') size += 4 + e.blob.length;
    else {
      const m = DEVICE_RE.exec(e.device);
      if (!m) throw new Error(`bad device ${e.device}`);
      devs[i] = [enc.encode(m[1]), m[2] ? Number(m[2]) : 0];
      size += 3 + devs[i]![0].length + 3 + e.shape.length * 8 + 8;
    }
  });
  if (new Set(entries.map((e) => e.key)).size !== entries.length) throw new Error('duplicate key');
  let total = size;
  const offsets: number[] = [];
  entries.forEach((e, i) => {
    if (e.kind === 'tensor' && e.payload) {
      total = (total + 7) & ~7;
      offsets[i] = total;
      total += e.nbytes;
    }
  });
  const out = new Uint8Array(total);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, MAGIC, true);
  dv.setUint16(4, 1, true);
  dv.setUint32(8, entries.length, true);
  let p = 12;
  entries.forEach((e, i) => {
    out[p] = e.kind === 'tensor' ? 0 : 1;
    dv.setUint16(p + 1, keys[i].length, true);
    out.set(keys[i], p + 3);
    p += 3 + keys[i].length;
    if (e.kind === 'value') {
      dv.setUint32(p, e.blob.length, true);
      out.set(e.blob, p + 4);
      p += 4 + e.blob.length;
      return;
    }
    const info = dtypeInfo(e.dtype)!;
    const [type, index] = devs[i]!;
    let n = info.itemSize;
    for (const d of e.shape) n *= d;
    if (n !== e.nbytes || e.shape.length > MAX_NDIM) throw new Error('bad tensor');
    out[p] = info.code;
    out[p + 1] = e.payload ? 1 : 0;
    out[p + 2] = type.length;
    out.set(type, p + 3);
    p += 3 + type.length;
    dv.setUint16(p, index, true);
    out[p + 2] = e.shape.length;
    p += 3;
    for (const d of e.shape) { dv.setBigUint64(p, BigInt(d), true); p += 8; }
    dv.setBigUint64(p, BigInt(e.nbytes), true);
    p += 8;
    if (e.payload) out.set(e.payload, offsets[i]);
  });
  return out;
}

export function decodeFrameTs(b: Uint8Array): FrameEntry[] {
  const bad = (what: string) => protocolError(`bad tensor-dict frame: ${what}`);
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const need = (p: number, n: number) => { if (b.length - p < n) throw bad('truncated'); };
  need(0, 12);
  if (dv.getUint32(0, true) !== MAGIC) throw bad('magic');
  if (dv.getUint16(4, true) !== 1) throw bad('version');
  if (dv.getUint16(6, true) !== 0) throw bad('flags');
  const count = dv.getUint32(8, true);
  if (count > (b.length - 12) / 7) throw bad('truncated');
  const entries: FrameEntry[] = [];
  const seen = new Set<string>();
  let p = 12;
  for (let i = 0; i < count; i++) {
    need(p, 3);
    const kind = b[p];
    const keyLen = dv.getUint16(p + 1, true);
    if (kind > 1) throw bad('kind');
    p += 3;
    need(p, keyLen);
    const key = dec.decode(b.subarray(p, p + keyLen)); // fatal: throws on invalid UTF-8
    if (seen.has(key)) throw bad('duplicate key');
    seen.add(key);
    p += keyLen;
    if (kind === 1) {
      need(p, 4);
      const n = dv.getUint32(p, true);
      p += 4;
      need(p, n);
      entries.push({ key, kind: 'value', blob: b.subarray(p, p + n) });
      p += n;
      continue;
    }
    need(p, 3);
    const info = dtypeByCode(b[p]);
    const flags = b[p + 1];
    const devLen = b[p + 2];
    if (!info) throw bad('dtype');
    if (flags > 1) throw bad('flags');
    p += 3;
    need(p, devLen + 3);
    const type = String.fromCharCode(...b.subarray(p, p + devLen));
    if (!/^[a-z][a-z0-9_]{0,15}$/.test(type)) throw bad('device');
    p += devLen;
    const index = dv.getUint16(p, true);
    if (type === 'cpu' && index !== 0) throw bad('device');
    if (flags && type !== 'cpu') throw bad('inline');
    const ndim = b[p + 2];
    if (ndim > MAX_NDIM) throw bad('ndim');
    p += 3;
    need(p, ndim * 8 + 8);
    const shape: number[] = [];
    let n = BigInt(info.itemSize);
    for (let k = 0; k < ndim; k++) {
      const d = dv.getBigUint64(p + k * 8, true);
      if (d > BigInt(MAX)) throw bad('dim');
      shape.push(Number(d));
      n *= d;
    }
    if (n > BigInt(MAX) && !shape.includes(0)) throw bad('overflow');
    p += ndim * 8;
    if (dv.getBigUint64(p, true) !== n) throw bad('nbytes');
    p += 8;
    const e: FrameTensorEntry = { key, kind: 'tensor', dtype: info.name, shape, device: type === 'cpu' ? 'cpu' : `${type}:${index}`, nbytes: Number(n) };
    if (flags) e.payload = new Uint8Array(0); // filled below, once the metadata part ends
    entries.push(e);
  }
  for (const e of entries) {
    if (e.kind !== 'tensor' || !e.payload) continue;
    const off = (p + 7) & ~7;
    if (off + e.nbytes > b.length) throw bad('payload');
    for (let q = p; q < off; q++) if (b[q] !== 0) throw bad('padding');
    e.payload = b.slice(off, off + e.nbytes);
    p = off + e.nbytes;
  }
  if (p !== b.length) throw bad('trailing bytes');
  return entries;
}
