/** TcpStore's request encoding: the frames its operations send, and reply conversions. */
import { invalidArgument, protocolError } from '../base/errors.js';
import { Frame, Op, WAIT_GET_DELETE } from './protocol.js';
import type { StoreValue } from './types.js';

export const u64 = 8;

export function keyFrame(op: number, key: Uint8Array): Buffer {
  return new Frame(1 + u64 + key.length).u8(op).bytes(key).done();
}

/** key + value; a big value travels as its own buffer (no copy into the frame). */
export function keyValueFrame(op: number, key: Uint8Array, value: Uint8Array): Buffer | Buffer[] {
  if (value.length >= 64 * 1024) {
    const head = new Frame(1 + u64 + key.length + u64).u8(op).bytes(key).u64(value.length).done();
    return [head, Buffer.from(value.buffer, value.byteOffset, value.length)];
  }
  return new Frame(1 + 2 * u64 + key.length + value.length).u8(op).bytes(key).bytes(value).done();
}

/** WAIT_GET: flags, then the key list as WAIT has it. */
export function waitGetFrame(keys: Uint8Array[], del: boolean): Buffer {
  let size = 2 + u64;
  for (const k of keys) size += u64 + k.length;
  const f = new Frame(size).u8(Op.WAIT_GET).u8(del ? WAIT_GET_DELETE : 0).u64(keys.length);
  for (const k of keys) f.bytes(k);
  return f.done();
}

/** MULTI_SET: count, then key and value of each. */
export function multiSetFrame(wks: Uint8Array[], vs: Uint8Array[]): Buffer {
  let size = 1 + u64;
  for (let i = 0; i < wks.length; i++) size += 2 * u64 + wks[i].length + vs[i].length;
  const f = new Frame(size).u8(Op.MULTI_SET).u64(wks.length);
  for (let i = 0; i < wks.length; i++) f.bytes(wks[i]).bytes(vs[i]);
  return f.done();
}

export function valueBytes(v: StoreValue): Uint8Array {
  if (typeof v === 'string') return Buffer.from(v, 'utf8');
  if (v instanceof Uint8Array) return v;
  throw invalidArgument(`store values are Uint8Array or string, got ${typeof v}`);
}

export function safeNumber(v: bigint, what: string): number {
  const n = Number(v);
  if (!Number.isSafeInteger(n)) throw protocolError(`${what} returned ${v}, beyond Number's exact range`);
  return n;
}
