// The process group's value format byte for byte (host/pg/codec.ts, its header comment is the
// spec), and the errors a user sees when a value is not what the receiving op expects: each
// names the op, the key and the writing rank, with its code and fields. Written to kill the
// survivors of `npm run mutate -- --files host/pg/codec.ts` (issue 20).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { pack } from 'msgpackr';
import {
  checkCpuTensor, decodeObject, decodeTensor, encodeObject, encodeTensor, fillTensor, KIND_OBJECT, KIND_OBJECT_SEGMENTS, KIND_TENSOR,
} from '../../host/pg/codec.js';
import { isGroupcommError } from '../../host/base/errors.js';
import { tensor, type Tensor } from '../../host/core/tensor.js';

const O = { key: 'pg/x/to/1/p/0/7', src: 5 };

/** Runs `f`, which must throw a GroupcommError of `code` whose message matches `re`; returns it. */
function throwsGc(f: () => unknown, code: string, re: RegExp): { code: string; key?: string; peerRank?: number; message: string } {
  try {
    f();
  } catch (e) {
    assert.ok(isGroupcommError(e), `not a GroupcommError: ${e}`);
    assert.is((e as { code: string }).code, code, (e as Error).message);
    assert.match((e as Error).message, re);
    return e as never;
  }
  assert.unreachable(`expected ${code} ${re}`);
  throw new Error('unreachable');
}

/** A protocol error naming the key and the writer, as every malformed value must give. */
function malformed(f: () => unknown, re: RegExp): void {
  const e = throwsGc(f, 'ERR_GROUPCOMM_PROTOCOL', re);
  assert.is(e.key, O.key);
  assert.is(e.peerRank, O.src);
  assert.ok(e.message.includes(`under key '${O.key}' (written by rank ${O.src})`), e.message);
}

const u8 = (...b: number[]) => Uint8Array.from(b);

test('headers: magic "gc", version 1, kind; objects are the msgpack bytes after it', () => {
  assert.equal([KIND_OBJECT, KIND_TENSOR, KIND_OBJECT_SEGMENTS], [1, 2, 3]);
  const o = encodeObject({ a: [1, 'x'] });
  assert.equal([...o.subarray(0, 4)], [0x67, 0x63, 1, 1]);
  assert.equal(Buffer.from(o.subarray(4)), Buffer.from(pack({ a: [1, 'x'] })));
  const big = encodeObject({ v: new Float64Array(1024) });
  assert.equal([...big.subarray(0, 4)], [0x67, 0x63, 1, 3]);
  const t = encodeTensor(tensor(new Float32Array([1.5, -2]), { shape: [1, 2] }));
  assert.equal([...t.subarray(0, 8)], [0x67, 0x63, 1, 2, 7, 2, 0, 0]);
});

test('tensor layout: dims as u64 LE, then the raw element bytes, 8-byte aligned; decode gives a view', () => {
  const x = tensor(BigInt64Array.from([1n, -2n, 3n, 70000000000n, 5n, 6n]), { shape: [3, 2] });
  const b = encodeTensor(x);
  assert.is(b.length, 8 + 16 + 48);
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  assert.is(dv.getBigUint64(8, true), 3n);
  assert.is(dv.getBigUint64(16, true), 2n);
  assert.equal(Buffer.from(b.subarray(24)), Buffer.from(x.data.buffer));
  const d = decodeTensor(b, O);
  assert.equal(d, { dtype: 'int64', shape: [3, 2], bytes: b.subarray(24) });
  assert.is(d.bytes.buffer, b.buffer, 'the element bytes alias the value');
  // 0-d and empty tensors.
  const s = decodeTensor(encodeTensor(tensor(new Float32Array([4]), { shape: [] })), O);
  assert.equal([s.shape, s.bytes.length], [[], 4]);
  const e = decodeTensor(encodeTensor(tensor(new Int32Array(0), { shape: [4, 0, 3] })), O);
  assert.equal([e.shape, e.bytes.length], [[4, 0, 3], 0]);
});

test('not a groupcomm value, another version, the other kind: PROTOCOL errors that say which', () => {
  const obj = encodeObject(1);
  const ten = encodeTensor(tensor(new Uint8Array([1])));
  for (const b of [u8(), u8(0x67, 0x63, 1), u8(0x67, 0x64, 1, 1, 0), u8(0x66, 0x63, 1, 1, 0)]) {
    malformed(() => decodeObject(b, O), /^not a groupcomm value/);
    malformed(() => decodeTensor(b, O), /^not a groupcomm value/);
  }
  malformed(() => decodeObject(u8(0x67, 0x63, 2, 1, 0xc0), O), /^value format version 2 \(this build reads 1\)/);
  malformed(() => decodeTensor(u8(0x67, 0x63, 0, 2, 0, 0, 0, 0), O), /^value format version 0 \(this build reads 1\)/);
  malformed(() => decodeObject(ten, O), /^expected an object but found a tensor \(sender and receiver called different ops\)/);
  malformed(() => decodeTensor(obj, O), /^expected a tensor but found an object \(sender/);
  malformed(() => decodeTensor(encodeObject({ v: new Uint8Array(5000) }), O), /^expected a tensor but found kind 3 /);
  malformed(() => decodeObject(u8(0x67, 0x63, 1, 9, 0xc0), O), /^expected an object but found kind 9 /);
  malformed(() => decodeObject(u8(0x67, 0x63, 1, 1, 0x92, 0x01), O), /^undecodable object \(/);
  malformed(() => decodeObject(u8(0x67, 0x63, 1, 1), O), /^undecodable object \(/);
  // The same bytes after a valid header decode: the checks look at bytes 0..3 only.
  assert.is(decodeObject(u8(0x67, 0x63, 1, 1, 0xc0), O), null);
});

test('hostile tensor headers: truncated, unknown dtype, too many dims, dims out of range or not matching the bytes', () => {
  const t = (...rest: number[]) => u8(0x67, 0x63, 1, 2, ...rest);
  malformed(() => decodeTensor(t(7, 0, 0), O), /^truncated tensor header/);
  malformed(() => decodeTensor(t(200, 0, 0), O), /^truncated tensor header/);
  malformed(() => decodeTensor(t(200, 0, 0, 0), O), /^unknown dtype code 200/);
  assert.equal(decodeTensor(t(7, 0, 0, 0, 1, 2, 3, 4), O).shape, [], '0-d float32: 4 bytes');
  malformed(() => decodeTensor(t(7, 0, 0, 0, 1, 2, 3), O), /^tensor \[\] float32 does not match its 3 data bytes/);
  malformed(() => decodeTensor(t(7, 65, 0, 0, ...new Array(65 * 8).fill(0)), O), /^tensor with 65 dims \(limit 64\)/);
  const dims64 = t(1, 64, 0, 0, ...new Array(64 * 8).fill(0));
  assert.equal(decodeTensor(dims64, O).shape.length, 64, '64 dims are allowed');
  malformed(() => decodeTensor(t(7, 2, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0), O), /^truncated tensor header/);
  const huge = new Uint8Array(16);
  new DataView(huge.buffer).setBigUint64(8, 2n ** 53n, true);
  huge.set([0x67, 0x63, 1, 2, 7, 1, 0, 0]);
  malformed(() => decodeTensor(huge, O), /^tensor dim 9007199254740992 out of range/);
  new DataView(huge.buffer).setBigUint64(8, 2n ** 53n - 1n, true);
  malformed(() => decodeTensor(huge, O), /^tensor \[9007199254740991\] float32 does not match its 0 data bytes/);
  // A shape whose product overflows must not wrap around to the real size.
  const ovf = new Uint8Array(8 + 24 + 8);
  ovf.set([0x67, 0x63, 1, 2, 1, 3, 0, 0]);
  const dv = new DataView(ovf.buffer);
  dv.setBigUint64(8, 2n ** 40n, true);
  dv.setBigUint64(16, 2n ** 40n, true);
  dv.setBigUint64(24, 0n, true);
  assert.equal(decodeTensor(ovf.subarray(0, 32), O).shape, [2 ** 40, 2 ** 40, 0], 'a zero dim: no bytes');
  malformed(() => decodeTensor(ovf, O), /does not match its 8 data bytes/);
  dv.setBigUint64(24, 2n ** 40n, true);
  malformed(() => decodeTensor(ovf, O), /^tensor \[1099511627776, 1099511627776, 1099511627776\] uint8 does not match its 8 data bytes/);
  // Two dims of 2 and 4 data bytes of uint8 match; 5 bytes do not.
  const ok = u8(0x67, 0x63, 1, 2, 1, 2, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 9, 9, 9, 9);
  assert.equal(decodeTensor(ok, O).shape, [2, 2]);
  malformed(() => decodeTensor(u8(...ok, 9), O), /^tensor \[2, 2\] uint8 does not match its 5 data bytes/);
});

test('checkCpuTensor: what is not a CPU tensor, or whose data does not match its shape, is refused naming the op', () => {
  const bad = (t: unknown, re: RegExp) => throwsGc(() => checkCpuTensor(t as Tensor, 'myop'), 'ERR_GROUPCOMM_INVALID_ARGUMENT', re);
  bad(null, /^myop: expected a Tensor \(\{ dtype, shape, device, data \}\)/);
  bad(7, /^myop: expected a Tensor/);
  bad({ dtype: 'float33', shape: [1], device: 'cpu', data: new Float32Array(1) }, /^myop: expected a Tensor/);
  bad({ dtype: 'float32', shape: 1, device: 'cpu', data: new Float32Array(1) }, /^myop: expected a Tensor/);
  bad({ dtype: 'float32', shape: [1], device: 'cuda:0', data: new Float32Array(1) }, /^myop: the process group carries CPU tensors only \(got device 'cuda:0'\); use the device communicator/);
  bad({ dtype: 'float32', shape: [2, 3], device: 'cpu', data: new Float32Array(5) }, /^myop: tensor data holds 20 bytes, shape \[2, 3\] float32 needs 24$/);
  bad({ dtype: 'float32', shape: [1], device: 'cpu', data: [1] }, /^myop: tensor data holds undefined bytes, shape \[1\] float32 needs 4$/);
  bad({ dtype: 'float32', shape: [1], device: 'cpu', data: undefined }, /^myop: tensor data holds undefined bytes, shape \[1\] float32 needs 4$/);
  checkCpuTensor(tensor(new Float64Array(6), { shape: [2, 3] }), 'myop');
  checkCpuTensor({ dtype: 'uint8', shape: [4], device: 'cpu', data: new Float32Array(1) } as Tensor, 'myop');
  throwsGc(() => encodeTensor({ dtype: 'float32', shape: [1], device: 'cuda:1', data: new Float32Array(1) } as Tensor), 'ERR_GROUPCOMM_INVALID_ARGUMENT', /^send: the process group carries CPU tensors only/);
});

test('fillTensor: a received tensor of another dtype or shape is refused naming both, the writer and the key; a match is copied in', () => {
  const got = decodeTensor(encodeTensor(tensor(Int32Array.from([1, 2, 3, 4, 5, 6]), { shape: [2, 3] })), O);
  const refuse = (t: Tensor) => {
    const e = throwsGc(() => fillTensor(t, got, 'recv', O), 'ERR_GROUPCOMM_INVALID_ARGUMENT',
      /^recv: rank 5 sent \[2, 3\] int32 but the tensor passed here is \[[\d, ]*\] \w+ \(key 'pg\/x\/to\/1\/p\/0\/7'\)$/);
    assert.is(e.key, O.key);
    assert.is(e.peerRank, O.src);
    return e;
  };
  assert.match(refuse(tensor(new Float32Array(6), { shape: [2, 3] })).message, /is \[2, 3\] float32 /);
  assert.match(refuse(tensor(new Int32Array(6), { shape: [3, 2] })).message, /is \[3, 2\] int32 /);
  assert.match(refuse(tensor(new Int32Array(6), { shape: [6] })).message, /is \[6\] int32 /);
  refuse(tensor(new Int32Array(6), { shape: [2, 3, 1] }));
  assert.match(refuse(tensor(new Int32Array(8), { shape: [2, 4] })).message, /is \[2, 4\] int32 /);
  const into = tensor(new Int32Array(6), { shape: [2, 3] });
  fillTensor(into, got, 'recv', O);
  assert.equal([...into.data], [1, 2, 3, 4, 5, 6]);
});

test('objects: what msgpack cannot carry is refused up front; Maps, Sets, Dates and nested containers round-trip', () => {
  throwsGc(() => encodeObject(() => 1), 'ERR_GROUPCOMM_INVALID_ARGUMENT', /^cannot send a function \(objects carry data only\)/);
  throwsGc(() => encodeObject({ a: [Symbol('s')] }), 'ERR_GROUPCOMM_INVALID_ARGUMENT', /^cannot send a symbol/);
  throwsGc(() => encodeObject(new Map([[1, () => 2]])), 'ERR_GROUPCOMM_INVALID_ARGUMENT', /^cannot send a function/);
  throwsGc(() => encodeObject(new Set([Symbol.iterator])), 'ERR_GROUPCOMM_INVALID_ARGUMENT', /^cannot send a symbol/);
  // Receivers refuse RegExp and Error extensions: the sender says so instead of sending them.
  throwsGc(() => encodeObject({ r: [/x/g] }), 'ERR_GROUPCOMM_INVALID_ARGUMENT', /^cannot send a RegExp \(objects carry data only; send its text\)$/);
  throwsGc(() => encodeObject(new Map([[1, new TypeError('t')]])), 'ERR_GROUPCOMM_INVALID_ARGUMENT', /^cannot send a TypeError /);
  const cyclic: Record<string, unknown> = {};
  cyclic.self = cyclic;
  const cyclicArray: unknown[] = [new Map()];
  cyclicArray.push(cyclicArray);
  const cyclicMap = new Map<unknown, unknown>();
  cyclicMap.set('me', cyclicMap);
  const cyclicSet = new Set<unknown>();
  cyclicSet.add(cyclicSet);
  const keyCycle = new Map<unknown, unknown>();
  keyCycle.set(keyCycle, 1);
  for (const c of [cyclic, cyclicArray, cyclicMap, cyclicSet, keyCycle]) {
    throwsGc(() => encodeObject(c), 'ERR_GROUPCOMM_INVALID_ARGUMENT', /^object is nested more than 512 levels deep \(or is cyclic\)$/);
  }
  // The limit: a Map under 512 levels of arrays is sent, under 513 it is refused.
  const nest = (n: number) => { let d: unknown = new Map([[1, 2]]); for (let i = 0; i < n; i++) d = [d]; return d; };
  encodeObject(nest(512));
  throwsGc(() => encodeObject(nest(513)), 'ERR_GROUPCOMM_INVALID_ARGUMENT', /nested more than 512 levels/);
  // Whatever else fails while encoding is an INVALID_ARGUMENT too, with the cause kept.
  const boom = new Error('getter exploded');
  const e = throwsGc(() => encodeObject({ get x() { throw boom; } }), 'ERR_GROUPCOMM_INVALID_ARGUMENT', /^cannot encode object: getter exploded$/);
  assert.is((e as { cause?: unknown }).cause, boom);
  let deep: unknown = 1;
  for (let i = 0; i < 300; i++) deep = [deep];
  assert.equal(decodeObject(encodeObject(deep), O), deep, '300 levels are fine');
  const v = {
    m: new Map<unknown, unknown>([[1, 'one'], ['k', new Map([[2, [3]]])]]),
    s: new Set([1, 'a', new Map([[0, 0]])]),
    d: new Date(1_700_000_000_000),
    list: [{ x: new Map([[true, null]]) }, new Set()],
    small: new Uint16Array([1, 2]),
  };
  const back = decodeObject(encodeObject(v), O) as typeof v;
  assert.ok(back.m instanceof Map && back.m.get(1) === 'one');
  assert.equal([...(back.m.get('k') as Map<number, number[]>)], [[2, [3]]]);
  assert.ok(back.s instanceof Set && back.s.has(1) && back.s.has('a'));
  assert.ok([...back.s].some((x) => x instanceof Map));
  assert.is(back.d.getTime(), v.d.getTime());
  const first = back.list[0] as { x: Map<boolean, null> };
  assert.ok(first.x instanceof Map && first.x.has(true));
  assert.ok(back.list[1] instanceof Set);
  assert.equal([...back.small], [1, 2]);
  // Plain data is sent as it is (not rebuilt) and comes back equal.
  const plain = { a: 1, b: ['x', { c: null, d: 2.5 }], e: new Date(5), f: new Uint8Array(3) };
  assert.equal(decodeObject(encodeObject(plain), O), plain);
  // A class instance is not plain data: it travels as its own enumerable fields.
  class P { constructor(readonly q = 4) {} }
  assert.equal(decodeObject(encodeObject({ p: new P() }), O), { p: { q: 4 } });
  // The Map extension: 'M' (0x4d), then its entries as msgpack. Anything but a list of pairs is
  // a protocol error saying so, not a Map.
  assert.equal(Buffer.from(encodeObject(new Map([[1, 2]]))).toString('hex'), '67630101d44d0091920102');
  for (const entries of [[0x01], [0x91, 0x91, 0x01], [0x91, 0x93, 0x01, 0x02, 0x03], [0x92, 0x92, 0x01, 0x02, 0x01], [0xc0]]) {
    malformed(() => decodeObject(u8(0x67, 0x63, 1, 1, 0xd4, 0x4d, 0x00, ...entries), O), /^undecodable object \(malformed Map extension\)/);
  }
  assert.equal([...(decodeObject(u8(0x67, 0x63, 1, 1, 0xd4, 0x4d, 0x00, 0x90), O) as Map<unknown, unknown>)], [], 'no entries: an empty Map');
});

test('kind 3 layout: count, body length, u64 segment lengths, body, then each segment 8-byte aligned with zero padding', () => {
  const a = new Uint8Array(4097).fill(0xaa);
  const b = new Float64Array(512).fill(-1);
  const enc = encodeObject({ a, b, n: 1 });
  const dv = new DataView(enc.buffer, enc.byteOffset, enc.byteLength);
  assert.is(dv.getUint32(4, true), 2, 'count');
  const body = dv.getUint32(8, true);
  assert.is(dv.getUint32(12, true), 4097);
  assert.is(dv.getUint32(16, true), 0, 'high word of the first length');
  assert.is(dv.getUint32(20, true), 4096);
  assert.is(dv.getUint32(24, true), 0);
  const head = 4 + 8 + 16;
  const segA = (head + body + 7) & ~7;
  for (let i = head + body; i < segA; i++) assert.is(enc[i], 0, `padding byte ${i} after the body`);
  assert.ok(enc.subarray(segA, segA + 4097).every((x) => x === 0xaa));
  const segB = (segA + 4097 + 7) & ~7;
  for (let i = segA + 4097; i < segB; i++) assert.is(enc[i], 0, `padding byte ${i} after segment 0`);
  assert.is(enc.length, segB + 4096);
  assert.is(enc.length % 8, 0);
  const back = decodeObject(enc, O) as { a: Uint8Array; b: Float64Array; n: number };
  assert.equal([back.a.length, back.b.length, back.n, back.b[511]], [4097, 512, 1, -1]);
  malformed(() => decodeObject(enc.subarray(0, 11), O), /^truncated object header/);
});

/** A segment reference (extension 'S': [index, class name]) and a hand-built kind-3 value around a body. */
const ref = (i: unknown, cls: unknown) => Buffer.concat([Buffer.from([0xd4, 0x53, 0x00]), pack([i, cls])]);
function kind3(body: Uint8Array, lens: number[]): Uint8Array {
  const head = 12 + 8 * lens.length;
  let size = (head + body.length + 7) & ~7;
  for (const l of lens) size += (l + 7) & ~7;
  const out = new Uint8Array(size);
  const dv = new DataView(out.buffer);
  out.set([0x67, 0x63, 1, 3]);
  dv.setUint32(4, lens.length, true);
  dv.setUint32(8, body.length, true);
  lens.forEach((l, i) => dv.setUint32(12 + 8 * i, l, true));
  out.set(body, head);
  return out;
}

test('hostile segment references and tables: the error says what is wrong', () => {
  const one = (i: unknown, cls: unknown, len = 4096) => kind3(Buffer.concat([Buffer.from([0x91]), ref(i, cls)]), [len]);
  assert.ok(decodeObject(one(0, 'Uint8Array'), O) instanceof Array);
  malformed(() => decodeObject(one(0, 'Float32Array', 4098), O), /\(segment 0 of 4098 bytes is not a whole number of Float32Array elements\)/);
  malformed(() => decodeObject(one(1, 'Uint8Array'), O), /\(bad segment reference 1 \(Uint8Array\)\)/);
  malformed(() => decodeObject(one(-1, 'Uint8Array'), O), /\(bad segment reference -1 \(Uint8Array\)\)/);
  malformed(() => decodeObject(one(0, 'DataView'), O), /\(bad segment reference 0 \(DataView\)\)/);
  malformed(() => decodeObject(one(0, 'X'.repeat(40)), O), new RegExp(`\\(bad segment reference 0 \\(${'X'.repeat(20)}\\)\\)`));
  malformed(() => decodeObject(kind3(Buffer.concat([Buffer.from([0x92]), ref(0, 'Uint8Array'), ref(0, 'Uint8Array')]), [4096]), O), /\(bad segment reference 0 \(Uint8Array\)\)/);
  for (const x of [[0.5, 'Uint8Array'], ['0', 'Uint8Array'], [0, 7], [0, 'Uint8Array', 1], 5]) {
    const body = Buffer.concat([Buffer.from([0x91, 0xd4, 0x53, 0x00]), pack(x)]);
    malformed(() => decodeObject(kind3(body, [4096]), O), /\(malformed segment reference\)/);
  }
  // Outside a kind-3 value there are no segments to name.
  malformed(() => decodeObject(Buffer.concat([Buffer.from([0x67, 0x63, 1, 1]), ref(0, 'Uint8Array')]), O), /\(malformed segment reference\)/);
  // Tables: a count of 0, a body or a segment past the value's end.
  const body = Buffer.concat([Buffer.from([0x91]), ref(0, 'Uint8Array')]);
  const zero = kind3(body, [4096]);
  new DataView(zero.buffer).setUint32(4, 0, true);
  malformed(() => decodeObject(zero, O), /^truncated object header/);
  const long = kind3(body, [4096]);
  new DataView(long.buffer).setUint32(8, long.length - 20 + 1, true);
  malformed(() => decodeObject(long, O), /^truncated object header/);
  const exact = kind3(body, [4096]);
  malformed(() => decodeObject(exact.subarray(0, exact.length - 1), O), /^segment 0 of 4096 bytes runs past the value/);
  const big = kind3(body, [4096]);
  new DataView(big.buffer).setUint32(16, 1, true);
  malformed(() => decodeObject(big, O), /^segment 0 of 4294971392 bytes runs past the value/);
  malformed(() => decodeObject(u8(0x67, 0x63, 1, 3, 1, 0, 0, 0, 0, 0, 0), O), /^truncated object header/);
  malformed(() => decodeObject(u8(0x67, 0x63, 1, 3, 1, 0, 0, 0, 0, 0, 0, 0), O), /^truncated object header/);
  // An undecodable body names msgpack's complaint, cut to 120 characters.
  const e = throwsGc(() => decodeObject(kind3(Buffer.from([0x92, 0x01]), [4096]), O), 'ERR_GROUPCOMM_PROTOCOL', /^undecodable object \(.+\) under key/);
  assert.ok(/\((.{1,120})\) under key/.test(e.message));
});

test('an object referenced twice travels as two copies: no structured-clone references on the wire', () => {
  const shared = { x: 1, list: [1, 2] };
  const bytes = encodeObject({ a: shared, b: shared, c: [shared] });
  // msgpackr's structured clone would write the second occurrence as a reference extension
  // (0xd6 0x70), which decodeObject refuses from a peer.
  for (let i = 0; i + 1 < bytes.length; i++) assert.not.ok(bytes[i] === 0xd6 && (bytes[i + 1] === 0x70 || bytes[i + 1] === 0x69), `reference extension at byte ${i}`);
  assert.equal(decodeObject(bytes, O), { a: { x: 1, list: [1, 2] }, b: { x: 1, list: [1, 2] }, c: [{ x: 1, list: [1, 2] }] });
});

test.run();
