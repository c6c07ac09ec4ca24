// Hostile input: seeded random and mutated frames. Every case must end in either a valid decode
// (which then re-encodes to the very same bytes, with every tensor's sizes consistent) or a
// PROTOCOL error carrying a decode code. A WebAssembly trap (RuntimeError) or any other exception
// fails the test, and the core must still work afterwards.
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { encodeFrame, decodeFrame, frameErrorName, FRAME_LIMITS, type FrameEntry } from '../../host/core/frame.js';
import { dtypeInfo, DTYPE_NAMES } from '../../host/core/dtype.js';
import { ErrorCode, isGroupcommError, type GroupcommError } from '../../host/base/errors.js';
import { packageRoot } from '../../host/base/pkgroot.js';
import { prng, unhex } from '../golden/raw.js';

const CASES = Number(process.env.GROUPCOMM_FUZZ_CASES ?? 100_000);
const SEED = Number(process.env.GROUPCOMM_FUZZ_SEED ?? 0x5eed);

const rnd = prng(SEED);
const int = (n: number) => Math.floor(rnd() * n);
const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)];

const KEY_CHARS = ['a', 'b', 'k', '_', '0', 'é', 'ж', '日', '🚀', '\u0000'];
const DEVICES = ['cpu', 'cpu', 'cuda:0', 'cuda:3', 'xpu:1', 'npu:65535'];

function randomEntries(): FrameEntry[] {
  const n = int(6);
  const entries: FrameEntry[] = [];
  const seen = new Set<string>();
  for (let i = 0; i < n; i++) {
    let key = '';
    for (let k = int(5); k > 0; k--) key += pick(KEY_CHARS);
    if (seen.has(key)) continue;
    seen.add(key);
    if (rnd() < 0.35) {
      entries.push({ key, kind: 'value', blob: Uint8Array.from({ length: int(10) }, () => int(256)) });
      continue;
    }
    const dtype = pick(DTYPE_NAMES);
    const ndim = rnd() < 0.05 ? int(FRAME_LIMITS.maxNdim + 1) : int(4);
    const shape = Array.from({ length: ndim }, () => (ndim > 6 ? 1 + int(2) : int(5)));
    const nbytes = shape.reduce((a, b) => a * b, 1) * dtypeInfo(dtype)!.itemSize;
    const device = pick(DEVICES);
    const e: FrameEntry = { key, kind: 'tensor', dtype, shape, device, nbytes };
    if (device === 'cpu' && rnd() < 0.7) e.payload = Uint8Array.from({ length: nbytes }, () => int(256));
    entries.push(e);
  }
  return entries;
}

const INTERESTING = [0, 1, 2, 7, 8, 15, 16, 17, 0x7f, 0x80, 0xff, 0xffff, 0x7fffffff, 0xffffffff];

function mutate(src: Uint8Array, corpus: Uint8Array[]): Uint8Array {
  const b = Uint8Array.from(src);
  switch (int(8)) {
    case 0: { // bit flips
      for (let k = 1 + int(4); k > 0 && b.length; k--) b[int(b.length)] ^= 1 << int(8);
      return b;
    }
    case 1: // truncation
      return b.subarray(0, int(b.length + 1));
    case 2: { // extension
      const out = new Uint8Array(b.length + 1 + int(16));
      out.set(b);
      for (let i = b.length; i < out.length; i++) out[i] = rnd() < 0.5 ? 0 : int(256);
      return out;
    }
    case 3: { // tamper with a length/count/dim-sized field: write an interesting u16/u32/u64
      if (b.length < 2) return b;
      const at = int(b.length - 1);
      const dv = new DataView(b.buffer);
      const v = rnd() < 0.5 ? pick(INTERESTING) : int(b.length * 2);
      const width = pick([2, 4, 8]);
      if (at + width > b.length) dv.setUint16(at, v & 0xffff, true);
      else if (width === 2) dv.setUint16(at, v & 0xffff, true);
      else if (width === 4) dv.setUint32(at, v >>> 0, true);
      else dv.setBigUint64(at, rnd() < 0.3 ? 2n ** 53n + BigInt(int(3)) - 1n : BigInt(v), true);
      return b;
    }
    case 4: { // an interesting byte
      if (b.length) b[int(b.length)] = pick(INTERESTING) & 0xff;
      return b;
    }
    case 5: { // splice a slice of another frame in
      const other = pick(corpus);
      const from = int(other.length + 1);
      const piece = other.subarray(from, from + int(24));
      const at = int(b.length + 1);
      const out = new Uint8Array(b.length + piece.length);
      out.set(b.subarray(0, at));
      out.set(piece, at);
      out.set(b.subarray(at), at + piece.length);
      return out;
    }
    case 6: { // drop a range
      const at = int(b.length + 1);
      const n = int(9);
      const out = new Uint8Array(Math.max(0, b.length - n));
      out.set(b.subarray(0, at).subarray(0, out.length));
      if (at < out.length) out.set(b.subarray(at + n).subarray(0, out.length - at), at);
      return out;
    }
    default: // an unchanged valid frame
      return b;
  }
}

function randomBytes(withHeader: boolean): Uint8Array {
  const b = Uint8Array.from({ length: int(64) }, () => int(256));
  if (withHeader && b.length >= 12) {
    b.set([0x47, 0x43, 0x54, 0x44, 1, 0, 0, 0]);
    new DataView(b.buffer).setUint32(8, int(6), true);
  }
  return b;
}

/** Checks a successful decode: sizes consistent, payloads exact, bytes reproduced. */
function checkValid(bytes: Uint8Array, entries: FrameEntry[]): void {
  for (const e of entries) {
    if (e.kind !== 'tensor') continue;
    const info = dtypeInfo(e.dtype);
    assert.ok(info, 'decoded dtype is known');
    let prod = BigInt(info!.itemSize);
    for (const d of e.shape) {
      assert.ok(Number.isSafeInteger(d) && d >= 0, 'dims are exact integers');
      prod *= BigInt(d);
    }
    assert.is(BigInt(e.nbytes), prod, 'nbytes = dims × itemsize');
    if (e.payload) {
      assert.is(e.device, 'cpu');
      assert.is(e.payload.byteLength, e.nbytes, 'payload length = nbytes');
    }
  }
  const again = encodeFrame(entries);
  assert.ok(again.length === bytes.length && again.every((v, i) => v === bytes[i]), 're-encoding gives the same bytes');
}

test(`${CASES} random and mutated frames: a valid frame or a decode error, never a trap`, () => {
  const golden = JSON.parse(fs.readFileSync(path.join(packageRoot(), 'test', 'golden', 'frames.json'), 'utf8')) as { frames: Array<{ hex: string }> };
  const corpus = golden.frames.map((g) => unhex(g.hex));
  for (let i = 0; i < 200; i++) corpus.push(encodeFrame(randomEntries()));
  const counts = new Map<string, number>();
  const t0 = Date.now();
  for (let i = 0; i < CASES; i++) {
    const r = rnd();
    const bytes = r < 0.05 ? randomBytes(false) : r < 0.15 ? randomBytes(true) : r < 0.25 ? encodeFrame(randomEntries()) : mutate(pick(corpus), corpus);
    let entries: FrameEntry[];
    try {
      entries = decodeFrame(bytes);
    } catch (e) {
      if (e instanceof WebAssembly.RuntimeError) assert.unreachable(`case ${i}: the core trapped: ${e.message}`);
      if (!isGroupcommError(e, ErrorCode.PROTOCOL)) throw e;
      const name = frameErrorName((e as GroupcommError).detail!);
      assert.ok(!name.startsWith('UNKNOWN'), `case ${i}: ${name}`);
      counts.set(name, (counts.get(name) ?? 0) + 1);
      continue;
    }
    checkValid(bytes, entries);
    counts.set('valid', (counts.get('valid') ?? 0) + 1);
  }
  const summary = [...counts].sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k}=${v}`).join(' ');
  console.log(`# fuzz seed ${SEED}: ${CASES} cases in ${Date.now() - t0} ms: ${summary}`);
  // The generator must reach deep into the format, not stop at the magic.
  assert.ok((counts.get('valid') ?? 0) > CASES * 0.05, 'enough valid frames');
  assert.ok(counts.size >= 12, `only ${counts.size} outcomes: ${summary}`);
  // Still usable after all that.
  for (const g of corpus.slice(0, 5)) assert.ok(Array.isArray(decodeFrame(g)));
});

test('100k entries: the table grows, a duplicate is found among them, the core stays usable', () => {
  const key = (i: number) => String(i).padStart(6, '0');
  const entries: FrameEntry[] = Array.from({ length: 100_000 }, (_, i) => ({ key: key(i), kind: 'value', blob: Uint8Array.of(0xc0) }));
  const bytes = encodeFrame(entries);
  assert.is(decodeFrame(bytes).length, 100_000);
  // The last entry ends with: key (6 bytes), blob length (4), blob (1). Rename it to entry 0's key.
  bytes.set(new TextEncoder().encode(key(0)), bytes.length - 1 - 4 - 6);
  assert.throws(() => decodeFrame(bytes), /DUPLICATE_KEY, byte \d+, entry 99999/);
  assert.is(decodeFrame(encodeFrame(entries.slice(0, 1))).length, 1);
});

test.run();
