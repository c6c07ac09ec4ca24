import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { encodeFrame, decodeFrame, FrameError, frameErrorName, FRAME_LIMITS, type FrameEntry } from '../../host/core/frame.js';
import fs from 'node:fs';
import path from 'node:path';
import { getCore } from '../../host/core/loader.js';
import { packageRoot } from '../../host/base/pkgroot.js';
import { ErrorCode, isGroupcommError, type GroupcommError } from '../../host/base/errors.js';
import { RawFrame } from '../golden/raw.js';

// dtype codes used below (assembly/dtype.ts)
const INT8 = 0, UINT8 = 1, INT64 = 4, FLOAT32 = 7, BFLOAT16 = 9;

/** The FrameError code a decode fails with, or 0 when it succeeds. */
function code(bytes: Uint8Array): number {
  try {
    decodeFrame(bytes);
    return 0;
  } catch (e) {
    if (!isGroupcommError(e, ErrorCode.PROTOCOL)) throw e;
    return (e as GroupcommError).detail!;
  }
}

function expectCode(bytes: Uint8Array, want: number): void {
  const got = code(bytes);
  assert.is(frameErrorName(got), frameErrorName(want));
}

const valid = () => new RawFrame().header(2)
  .tensor('w', { dtype: FLOAT32, dims: [2, 3], nbytes: 24, device: 'cuda', index: 3 })
  .value('v', [0xc0]);

test('encodeFrame writes exactly the bytes of the documented layout', () => {
  const entries: FrameEntry[] = [
    { key: 'w', kind: 'tensor', dtype: 'float32', shape: [2, 3], device: 'cuda:3', nbytes: 24 },
    { key: 'v', kind: 'value', blob: Uint8Array.of(0xc0) },
    { key: 'c', kind: 'tensor', dtype: 'int8', shape: [3], device: 'cpu', nbytes: 3, payload: Uint8Array.of(1, 2, 3) },
    { key: 'd', kind: 'tensor', dtype: 'uint8', shape: [1], device: 'cpu', nbytes: 1, payload: Uint8Array.of(9) },
  ];
  const want = new RawFrame().header(4)
    .tensor('w', { dtype: FLOAT32, dims: [2, 3], nbytes: 24, device: 'cuda', index: 3 })
    .value('v', [0xc0])
    .tensor('c', { dtype: INT8, dims: [3], nbytes: 3, flags: 1 })
    .tensor('d', { dtype: UINT8, dims: [1], nbytes: 1, flags: 1 })
    .pad8().bytes([1, 2, 3]).pad8().bytes([9]).done();
  assert.equal(Array.from(encodeFrame(entries)), Array.from(want));
});

test('decodeFrame returns every field, payloads as aligned copies outside core memory', () => {
  const bytes = new RawFrame().header(3)
    .tensor('w', { dtype: BFLOAT16, dims: [2, 0, 5], nbytes: 0, device: 'xpu', index: 65535 })
    .value('', [0x93, 1, 2, 3])
    .tensor('c', { dtype: INT64, dims: [], nbytes: 8, flags: 1 })
    .pad8().u64(-2n & 0xffffffffffffffffn).done();
  const e = decodeFrame(bytes);
  assert.equal(e[0], { key: 'w', kind: 'tensor', dtype: 'bfloat16', shape: [2, 0, 5], device: 'xpu:65535', nbytes: 0 });
  assert.equal(e[1].kind === 'value' && Array.from(e[1].blob), [0x93, 1, 2, 3]);
  assert.is(e[1].key, '');
  const c = e[2];
  assert.ok(c.kind === 'tensor' && c.payload);
  if (c.kind !== 'tensor' || !c.payload) return;
  assert.equal(c.shape, []);
  assert.is(c.payload.byteOffset, 0);
  assert.ok(c.payload.buffer !== getCore().memory.buffer);
  assert.is(new BigInt64Array(c.payload.buffer)[0], -2n);
});

test('round trip: decode(encode(entries)) = entries, and re-encoding gives the same bytes', () => {
  const entries: FrameEntry[] = [
    { key: '日本語🚀', kind: 'tensor', dtype: 'float8_e5m2', shape: [1, 2, 1, 2, 1, 2, 1, 2], device: 'cuda:0', nbytes: 16 },
    { key: 'nul\u0000key', kind: 'value', blob: Uint8Array.of(0xa1, 0x61) },
    // The largest size allowed: just under 2^53 bytes.
    { key: 'big', kind: 'tensor', dtype: 'float64', shape: [2 ** 40 - 1, 2 ** 10], device: 'cuda:1', nbytes: (2 ** 40 - 1) * 2 ** 10 * 8 },
    { key: 'huge-but-empty', kind: 'tensor', dtype: 'int32', shape: [Number.MAX_SAFE_INTEGER, 0], device: 'cpu', nbytes: 0, payload: new Uint8Array(0) },
    { key: 'sixteen', kind: 'tensor', dtype: 'bool', shape: new Array(16).fill(1), device: 'cpu', nbytes: 1, payload: Uint8Array.of(1) },
  ];
  const bytes = encodeFrame(entries);
  const back = decodeFrame(bytes);
  assert.equal(back.map((e) => ({ ...e, payload: undefined, blob: undefined })), entries.map((e) => ({ ...e, payload: undefined, blob: undefined })));
  assert.equal(Array.from(encodeFrame(back)), Array.from(bytes));
});

test('the worked example in docs/wire-format.md is what the encoder writes', () => {
  const doc = fs.readFileSync(path.join(packageRoot(), 'docs', 'wire-format.md'), 'utf8');
  const block = doc.split('### Example')[1].split('```')[1];
  const rows = block.split('\n').filter((l) => l.includes('|'));
  let at = 0;
  const bytes: number[] = [];
  for (const row of rows) {
    const [offset, ...hexes] = row.split('|')[0].trim().split(/\s+/);
    assert.is(Number(offset), at, `offset column of: ${row}`);
    for (const h of hexes) bytes.push(parseInt(h, 16));
    at = bytes.length;
  }
  const frame = encodeFrame([{ key: 'x', kind: 'tensor', dtype: 'int8', shape: [3], device: 'cpu', nbytes: 3, payload: Uint8Array.of(1, 2, 3) }]);
  assert.equal(bytes, Array.from(frame));
});

test('a frame at an odd offset inside a larger buffer (as read off a socket) decodes the same', () => {
  const bytes = encodeFrame([
    { key: 'd', kind: 'tensor', dtype: 'int64', shape: [2 ** 33, 0], device: 'cuda:2', nbytes: 0 },
    { key: 'c', kind: 'tensor', dtype: 'float64', shape: [1], device: 'cpu', nbytes: 8, payload: new Uint8Array(new Float64Array([Math.PI]).buffer) },
  ]);
  const big = new Uint8Array(bytes.length + 8);
  big.set(bytes, 3);
  const e = decodeFrame(big.subarray(3, 3 + bytes.length));
  assert.equal(e[0], { key: 'd', kind: 'tensor', dtype: 'int64', shape: [2 ** 33, 0], device: 'cuda:2', nbytes: 0 });
  assert.ok(e[1].kind === 'tensor' && e[1].payload);
  if (e[1].kind === 'tensor' && e[1].payload) assert.is(new Float64Array(e[1].payload.buffer)[0], Math.PI);
});

test('an empty frame is 12 bytes and decodes to no entries', () => {
  const b = encodeFrame([]);
  assert.equal(Array.from(b), new RawFrame().header(0).b);
  assert.equal(decodeFrame(b), []);
});

// ---- one asserted test per decode error ----

test('error TRUNCATED: the input ends inside the header, a key, a blob, dims or nbytes', () => {
  const full = valid().done();
  for (let n = 0; n < full.length; n++) expectCode(full.subarray(0, n), FrameError.TRUNCATED);
  // A blob length pointing past the end.
  expectCode(new RawFrame().header(1).value('k', [1, 2], { blobLen: 3 }).done(), FrameError.TRUNCATED);
  // An entry count that cannot fit in the bytes given (rejected before any table is sized).
  expectCode(new RawFrame().header(1_000_000).value('k', [0xc0]).done(), FrameError.TRUNCATED);
});

test('error BAD_MAGIC', () => {
  expectCode(new RawFrame().header(0, { magic: [0x47, 0x43, 0x54, 0x45] }).done(), FrameError.BAD_MAGIC);
  expectCode(Uint8Array.of(0x7b, 0x22, 0x61, 0x22, 0x3a, 0x31, 0x7d, 0, 0, 0, 0, 0), FrameError.BAD_MAGIC);
});

test('error BAD_VERSION: version 0 and 2 are refused', () => {
  expectCode(new RawFrame().header(0, { version: 0 }).done(), FrameError.BAD_VERSION);
  expectCode(new RawFrame().header(0, { version: 2 }).done(), FrameError.BAD_VERSION);
});

test('error BAD_FLAGS: reserved header flags and tensor flag bits', () => {
  expectCode(new RawFrame().header(0, { flags: 1 }).done(), FrameError.BAD_FLAGS);
  expectCode(new RawFrame().header(1).tensor('t', { dtype: INT8, dims: [1], nbytes: 1, flags: 2 }).done(), FrameError.BAD_FLAGS);
});

test('error TOO_MANY_ENTRIES: count above the limit', () => {
  expectCode(new RawFrame().header(FRAME_LIMITS.maxEntries + 1).done(), FrameError.TOO_MANY_ENTRIES);
  expectCode(new RawFrame().header(0xffffffff).done(), FrameError.TOO_MANY_ENTRIES);
});

test('error BAD_KIND', () => {
  expectCode(new RawFrame().header(1).tensor('t', { kind: 2, dtype: INT8, dims: [1], nbytes: 1 }).done(), FrameError.BAD_KIND);
});

test('error BAD_UTF8: overlong, surrogate, truncated, out of range, stray continuation', () => {
  const bad = [
    [0xc0, 0xaf], [0xc1, 0xbf], [0xe0, 0x80, 0xaf], [0xf0, 0x80, 0x80, 0xaf], // overlong
    [0xed, 0xa0, 0x80], [0xed, 0xbf, 0xbf], // UTF-16 surrogates
    [0x61, 0xe6, 0x97], [0xf0, 0x9f, 0x9a], [0xc3], // truncated sequences
    [0xf4, 0x90, 0x80, 0x80], [0xf5, 0x80, 0x80, 0x80], [0xff], // above U+10FFFF / never valid
    [0x80], [0x61, 0xbf], [0xe6, 0x41, 0x80], // stray or missing continuation bytes
  ];
  for (const k of bad) expectCode(new RawFrame().header(1).value(k, [0xc0]).done(), FrameError.BAD_UTF8);
  // The boundaries that are valid.
  for (const k of [[0x7f], [0xc2, 0x80], [0xe0, 0xa0, 0x80], [0xed, 0x9f, 0xbf], [0xee, 0x80, 0x80], [0xf0, 0x90, 0x80, 0x80], [0xf4, 0x8f, 0xbf, 0xbf]]) {
    assert.is(code(new RawFrame().header(1).value(k, [0xc0]).done()), 0, JSON.stringify(k));
  }
});

test('error DUPLICATE_KEY: between values, tensors and mixed; names the later entry', () => {
  expectCode(new RawFrame().header(2).value('a', [1]).value('a', [2]).done(), FrameError.DUPLICATE_KEY);
  expectCode(new RawFrame().header(3).value('a', [1]).tensor('b', { dtype: INT8, dims: [], nbytes: 1 }).tensor('b', { dtype: INT8, dims: [], nbytes: 1 }).done(), FrameError.DUPLICATE_KEY);
  expectCode(new RawFrame().header(2).value('', [1]).value('', [2]).done(), FrameError.DUPLICATE_KEY);
  // Many distinct keys then one repeat far apart.
  const f = new RawFrame().header(1001);
  for (let i = 0; i < 1000; i++) f.value('k' + i, [0xc0]);
  f.value('k17', [0xc0]);
  try {
    decodeFrame(f.done());
    assert.unreachable('should fail');
  } catch (e) {
    assert.is((e as GroupcommError).detail, FrameError.DUPLICATE_KEY);
    assert.match((e as Error).message, /entry 1000/);
  }
  // Same length, different bytes: not a duplicate.
  assert.is(code(new RawFrame().header(2).value('ab', [1]).value('ba', [2]).done()), 0);
});

test('error BAD_DTYPE: codes 14 and 255', () => {
  expectCode(new RawFrame().header(1).tensor('t', { dtype: 14, dims: [1], nbytes: 1 }).done(), FrameError.BAD_DTYPE);
  expectCode(new RawFrame().header(1).tensor('t', { dtype: 255, dims: [1], nbytes: 1 }).done(), FrameError.BAD_DTYPE);
});

test('error BAD_DEVICE: empty, uppercase, leading digit, too long, cpu with an index', () => {
  for (const device of ['', 'CUDA', '1cuda', 'cu-da', 'a'.repeat(17)]) {
    expectCode(new RawFrame().header(1).tensor('t', { dtype: INT8, dims: [1], nbytes: 1, device }).done(), FrameError.BAD_DEVICE);
  }
  expectCode(new RawFrame().header(1).tensor('t', { dtype: INT8, dims: [1], nbytes: 1, device: 'cpu', index: 1 }).done(), FrameError.BAD_DEVICE);
  assert.is(code(new RawFrame().header(1).tensor('t', { dtype: INT8, dims: [1], nbytes: 1, device: 'a'.repeat(16) }).done()), 0);
});

test('error NDIM_LIMIT: 17 dims are refused, 16 accepted', () => {
  const ones = (n: number) => new Array(n).fill(1);
  expectCode(new RawFrame().header(1).tensor('t', { dtype: INT8, dims: ones(17), nbytes: 1 }).done(), FrameError.NDIM_LIMIT);
  expectCode(new RawFrame().header(1).tensor('t', { dtype: INT8, dims: [], ndim: 255, nbytes: 1 }).done(), FrameError.NDIM_LIMIT);
  assert.is(code(new RawFrame().header(1).tensor('t', { dtype: INT8, dims: ones(16), nbytes: 1 }).done()), 0);
});

test('error DIM_TOO_LARGE: a dim above 2^53-1, even next to a zero dim', () => {
  expectCode(new RawFrame().header(1).tensor('t', { dtype: INT8, dims: [2n ** 53n], nbytes: 0 }).done(), FrameError.DIM_TOO_LARGE);
  expectCode(new RawFrame().header(1).tensor('t', { dtype: INT8, dims: [0, 2n ** 64n - 1n], nbytes: 0 }).done(), FrameError.DIM_TOO_LARGE);
});

test('error SIZE_OVERFLOW: dims × itemsize overflowing u64 or the 2^53-1 limit', () => {
  // 2^32 × 2^32 × 8 wraps u64 to 0; a careless decoder would accept nbytes 0.
  expectCode(new RawFrame().header(1).tensor('t', { dtype: INT64, dims: [2 ** 32, 2 ** 32], nbytes: 0 }).done(), FrameError.SIZE_OVERFLOW);
  expectCode(new RawFrame().header(1).tensor('t', { dtype: INT64, dims: [2 ** 50, 16], nbytes: 2n ** 57n }).done(), FrameError.SIZE_OVERFLOW);
  expectCode(new RawFrame().header(1).tensor('t', { dtype: INT8, dims: [2n ** 53n - 1n, 2], nbytes: 0 }).done(), FrameError.SIZE_OVERFLOW);
  // The same huge dims with a zero dim are an empty tensor.
  assert.is(code(new RawFrame().header(1).tensor('t', { dtype: INT64, dims: [2 ** 32, 2 ** 32, 0], nbytes: 0 }).done()), 0);
  assert.is(code(new RawFrame().header(1).tensor('t', { dtype: INT8, dims: [2n ** 53n - 1n], nbytes: 2n ** 53n - 1n }).done()), 0);
});

test('error NBYTES_MISMATCH', () => {
  expectCode(new RawFrame().header(1).tensor('t', { dtype: FLOAT32, dims: [2, 3], nbytes: 23 }).done(), FrameError.NBYTES_MISMATCH);
  expectCode(new RawFrame().header(1).tensor('t', { dtype: FLOAT32, dims: [], nbytes: 0 }).done(), FrameError.NBYTES_MISMATCH);
});

test('error INLINE_NOT_CPU: a device tensor never carries a payload', () => {
  expectCode(new RawFrame().header(1).tensor('t', { dtype: INT8, dims: [1], nbytes: 1, flags: 1, device: 'cuda' }).pad8().u8(7).done(), FrameError.INLINE_NOT_CPU);
});

test('error PAYLOAD_OUT_OF_BOUNDS: an inline payload past the end', () => {
  const f = new RawFrame().header(1).tensor('t', { dtype: FLOAT32, dims: [4], nbytes: 16, flags: 1 }).pad8().bytes(new Array(15).fill(0));
  expectCode(f.done(), FrameError.PAYLOAD_OUT_OF_BOUNDS);
  // No room even for the alignment padding.
  expectCode(new RawFrame().header(1).tensor('t', { dtype: INT8, dims: [1], nbytes: 1, flags: 1 }).done(), FrameError.PAYLOAD_OUT_OF_BOUNDS);
});

test('error BAD_PADDING: nonzero bytes before an aligned payload', () => {
  const f = new RawFrame().header(1).tensor('t', { dtype: INT8, dims: [1], nbytes: 1, flags: 1 });
  assert.ok(f.b.length % 8 !== 0, 'the test needs padding to exist');
  f.u8(0x55).pad8().u8(1);
  expectCode(f.done(), FrameError.BAD_PADDING);
});

test('error TRAILING_BYTES: after the entries, and after the last payload', () => {
  expectCode(new RawFrame().header(1).value('k', [0xc0]).u8(0).done(), FrameError.TRAILING_BYTES);
  expectCode(new RawFrame().header(0).u8(0).done(), FrameError.TRAILING_BYTES);
  expectCode(new RawFrame().header(1).tensor('t', { dtype: INT8, dims: [1], nbytes: 1, flags: 1 }).pad8().u8(1).u8(0).done(), FrameError.TRAILING_BYTES);
});

test('decode errors are PROTOCOL errors whose message names the check, byte and entry', () => {
  const bytes = valid().done();
  bytes[12 + 3 + 1] = 99; // entry 0's dtype byte (after kind, key length and the 1-byte key)
  try {
    decodeFrame(bytes);
    assert.unreachable('should fail');
  } catch (e) {
    assert.ok(isGroupcommError(e, ErrorCode.PROTOCOL));
    assert.is((e as GroupcommError).detail, FrameError.BAD_DTYPE);
    assert.match((e as Error).message, /BAD_DTYPE, byte 16, entry 0/);
  }
  assert.is(decodeFrame(valid().done()).length, 2, 'the core is still usable');
});

// ---- encode-side validation: caller mistakes are INVALID_ARGUMENT, never a bad frame ----

test('encodeFrame refuses what no valid frame can hold', () => {
  const t = (over: Partial<FrameEntry & { kind: 'tensor' }>): FrameEntry =>
    ({ key: 'k', kind: 'tensor', dtype: 'int8', shape: [2], device: 'cpu', nbytes: 2, ...over }) as FrameEntry;
  const cases: Array<[string, FrameEntry[]]> = [
    ['lone surrogate key', [{ key: 'a\ud800', kind: 'value', blob: Uint8Array.of(0xc0) }]],
    ['17 dims', [t({ shape: new Array(17).fill(1), nbytes: 1 })]],
    ['negative dim', [t({ shape: [-1], nbytes: -1 })]],
    ['fractional dim', [t({ shape: [1.5], nbytes: 1.5 })]],
    ['nbytes mismatch', [t({ nbytes: 3 })]],
    ['size overflow', [t({ dtype: 'int64', shape: [2 ** 40, 2 ** 40], nbytes: 2 ** 83 })]],
    ['uppercase device', [t({ device: 'CUDA:0' })]],
    ['cpu with an index', [t({ device: 'cpu:1' })]],
    ['device index too large', [t({ device: 'cuda:65536' })]],
    ['inline device tensor', [t({ device: 'cuda:0', payload: Uint8Array.of(1, 2) })]],
    ['payload of the wrong size', [t({ payload: Uint8Array.of(1) })]],
    ['unknown dtype', [t({ dtype: 'complex64' as never })]],
    ['key too long', [{ key: 'x'.repeat(0x10000), kind: 'value', blob: Uint8Array.of(0xc0) }]],
    ['duplicate keys', [t({}), t({})]],
  ];
  for (const [name, entries] of cases) {
    assert.throws(() => encodeFrame(entries), (e: unknown) => isGroupcommError(e, ErrorCode.INVALID_ARGUMENT), name);
  }
  assert.is(encodeFrame([t({})]).length > 0, true, 'the core is still usable');
});

test.run();
