/**
 * An independent writer of tensor-dict frames, straight from docs/wire-format.md, for tests: it
 * can write any byte sequence (wrong magic, lying lengths, bad UTF-8…), which the real encoder
 * refuses to do. Also a seeded PRNG for the fuzz test.
 */

export const MAGIC = [0x47, 0x43, 0x54, 0x44]; // 'GCTD'

export class RawFrame {
  readonly b: number[] = [];

  u8(v: number): this { this.b.push(v & 0xff); return this; }
  u16(v: number): this { return this.u8(v).u8(v >>> 8); }
  u32(v: number): this { return this.u16(v & 0xffff).u16(Math.floor(v / 0x10000)); }
  u64(v: bigint | number): this {
    const x = BigInt(v);
    return this.u32(Number(x & 0xffffffffn)).u32(Number(x >> 32n));
  }
  bytes(v: ArrayLike<number>): this { for (let i = 0; i < v.length; i++) this.u8(v[i]); return this; }

  header(count: number, o: { magic?: number[]; version?: number; flags?: number } = {}): this {
    return this.bytes(o.magic ?? MAGIC).u16(o.version ?? 1).u16(o.flags ?? 0).u32(count);
  }

  /** kind (0 tensor, 1 value), key length, key bytes (UTF-8 of a string, or raw bytes). */
  key(kind: number, key: string | number[]): this {
    const k = typeof key === 'string' ? Array.from(new TextEncoder().encode(key)) : key;
    return this.u8(kind).u16(k.length).bytes(k);
  }

  value(key: string | number[], blob: ArrayLike<number>, o: { blobLen?: number } = {}): this {
    return this.key(1, key).u32(o.blobLen ?? blob.length).bytes(blob);
  }

  tensor(key: string | number[], t: {
    dtype: number; dims: Array<bigint | number>; nbytes: bigint | number;
    flags?: number; device?: string | number[]; index?: number; ndim?: number; kind?: number;
  }): this {
    const dev = typeof t.device === 'object' ? t.device : Array.from(new TextEncoder().encode(t.device ?? 'cpu'));
    this.key(t.kind ?? 0, key).u8(t.dtype).u8(t.flags ?? 0).u8(dev.length).bytes(dev).u16(t.index ?? 0).u8(t.ndim ?? t.dims.length);
    for (const d of t.dims) this.u64(d);
    return this.u64(t.nbytes);
  }

  /** Zero bytes up to the next multiple of 8 (the payload alignment). */
  pad8(): this { while (this.b.length % 8) this.u8(0); return this; }

  done(): Uint8Array { return Uint8Array.from(this.b); }
}

export { prng } from '../helpers/prng.js';

export const hex = (b: Uint8Array): string => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('hex');
export const unhex = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, 'hex'));
