// Objects on the wire (host/pg/codec.ts): typed arrays of 4096 bytes or more travel as raw
// segments next to the msgpack body (kind 3), decoded as views where alignment allows and copied
// where it does not. Hostile encodings (edited valid ones, random byte flips) must give
// ERR_GROUPCOMM_PROTOCOL naming key and writer, never a crash or a wrong object.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { pack } from 'msgpackr';
import { decodeObject, encodeObject } from '../../host/pg/codec.js';
import { isGroupcommError } from '../../host/base/errors.js';
import { prng } from '../helpers/prng.js';

type TA = Exclude<ArrayBufferView, DataView>;
type TAClass = { new(n: number): TA; new(b: ArrayBufferLike, off: number, len: number): TA; BYTES_PER_ELEMENT: number; name: string };
const CLASSES: TAClass[] = [Uint8Array, Int8Array, Uint8ClampedArray, Uint16Array, Int16Array, Uint32Array,
  Int32Array, Float32Array, Float64Array, BigInt64Array, BigUint64Array] as unknown as TAClass[];
const O = { key: 'pg/test/to/1/p/0/0', src: 3 };
const kind = (b: Uint8Array) => b[3];

/** A typed array of `cls` with `n` elements of varied, class-dependent values. */
function filled(cls: TAClass, n: number, seed = 1): TA {
  const a = new cls(n) as any;
  const big = cls === (BigInt64Array as unknown) || cls === (BigUint64Array as unknown);
  for (let i = 0; i < n; i++) {
    const x = Math.imul(i + seed, 2654435761) ^ (i << 3);
    a[i] = big ? BigInt.asIntN(64, BigInt(x) * 4294967311n) : cls.name.startsWith('Float') ? x / 1024 : x;
  }
  return a;
}

function sameArray(got: unknown, want: TA, what: string): void {
  assert.ok(got !== null && typeof got === 'object', `${what}: not an object`);
  assert.is((got as object).constructor, want.constructor, `${what}: class ${(got as object).constructor.name} instead of ${want.constructor.name}`);
  const g = got as TA;
  assert.is((g as any).length, (want as any).length, `${what}: length`);
  assert.ok(Buffer.from(g.buffer, g.byteOffset, g.byteLength).equals(Buffer.from(want.buffer, want.byteOffset, want.byteLength)), `${what}: bytes differ`);
}

function protocolErr(bytes: Uint8Array, what: string): Error {
  try {
    const v = decodeObject(bytes, O);
    assert.unreachable(`${what}: decoded to ${String(v).slice(0, 60)} instead of failing`);
  } catch (e) {
    if ((e as Error).name === 'Assertion') throw e;
    assert.ok(isGroupcommError(e, 'ERR_GROUPCOMM_PROTOCOL'), `${what}: ${e}`);
    assert.is((e as any).key, O.key, what);
    assert.is((e as any).peerRank, O.src, what);
    assert.match((e as Error).message, O.key, what);
    return e as Error;
  }
  throw new Error('unreachable');
}

test('every segment class: below 4096 bytes plain msgpack (kind 1), from 4096 bytes raw segments (kind 3); values, class and length survive', () => {
  for (const cls of CLASSES) {
    const size = cls.BYTES_PER_ELEMENT;
    const small = filled(cls, Math.floor(4095 / size));
    const encSmall = encodeObject({ a: small });
    assert.is(kind(encSmall), 1, `${cls.name} of ${small.byteLength} bytes`);
    sameArray((decodeObject(encSmall, O) as any).a, small, `${cls.name} small`);
    for (const n of [4096 / size, 4096 / size + 3, 70_000]) {
      const v = filled(cls, n, n);
      const enc = encodeObject({ a: v, tag: cls.name });
      assert.is(kind(enc), 3, `${cls.name} of ${v.byteLength} bytes`);
      const dv = new DataView(enc.buffer, enc.byteOffset, enc.byteLength);
      assert.is(dv.getUint32(4, true), 1, 'one segment');
      assert.is(dv.getUint32(12, true), v.byteLength, 'segment length');
      const got = decodeObject(enc, O) as any;
      assert.is(got.tag, cls.name);
      sameArray(got.a, v, `${cls.name} x${n}`);
    }
  }
});

test('several segments of different classes in one object, nested in arrays, Maps and Sets, next to small arrays and plain values', () => {
  const f64 = filled(Float64Array as unknown as TAClass, 1000);
  const u8 = filled(Uint8Array as unknown as TAClass, 5001);
  const i16 = filled(Int16Array as unknown as TAClass, 3000);
  const b64 = filled(BigUint64Array as unknown as TAClass, 600);
  const f32 = filled(Float32Array as unknown as TAClass, 1025);
  const tiny = new Int32Array([1, -2, 3]);
  const obj = {
    list: [1, f64, 'x', [u8, tiny]],
    m: new Map<unknown, unknown>([['k', i16], [7, { deep: new Set([b64, 'y']) }]]),
    s: new Set<unknown>([f32]),
    n: 2n ** 65n,
    d: new Date(1_700_000_000_000),
  };
  const enc = encodeObject(obj);
  assert.is(kind(enc), 3);
  assert.is(new DataView(enc.buffer, enc.byteOffset).getUint32(4, true), 5, 'five segments');
  const got = decodeObject(enc, O) as any;
  assert.is(got.list[0], 1);
  assert.is(got.list[2], 'x');
  sameArray(got.list[1], f64, 'f64 in array');
  sameArray(got.list[3][0], u8, 'u8 in nested array');
  sameArray(got.list[3][1], tiny, 'small Int32Array');
  assert.ok(got.m instanceof Map);
  sameArray(got.m.get('k'), i16, 'i16 in Map');
  const set = got.m.get(7).deep;
  assert.ok(set instanceof Set && set.size === 2 && set.has('y'));
  sameArray([...set].find((x: unknown) => x !== 'y'), b64, 'BigUint64Array in Set in Map');
  assert.ok(got.s instanceof Set);
  sameArray([...got.s][0], f32, 'f32 in Set');
  assert.is(got.n, 2n ** 65n);
  assert.is(got.d.getTime(), obj.d.getTime());
  // The sender's object is untouched.
  assert.is(obj.list[1], f64);
  assert.ok(obj.m.get('k') === i16);
});

test('the same typed array referenced twice comes back twice, each whole', () => {
  const v = filled(Float32Array as unknown as TAClass, 2048);
  const enc = encodeObject({ a: v, b: [v], c: new Map([['v', v]]) });
  const got = decodeObject(enc, O) as any;
  sameArray(got.a, v, 'a');
  sameArray(got.b[0], v, 'b[0]');
  sameArray(got.c.get('v'), v, 'c.v');
});

test('views at odd byte offsets send exactly their own elements', () => {
  const backing = filled(Uint8Array as unknown as TAClass, 40_000) as Uint8Array;
  const slice = backing.subarray(3, 30_003) as Uint8Array;
  const buf = new Uint8Array(slice).buffer; // an ArrayBuffer whose byte 0 is backing[3]
  const f64 = new Float64Array(buf, 8, 700);
  const u16 = new Uint16Array(slice.buffer, 10, 2500);
  const u8 = slice.subarray(1, 5002);
  const i8 = new Int8Array(backing.buffer, 7, 4099);
  const got = decodeObject(encodeObject({ f64, u16, u8, i8 }), O) as any;
  sameArray(got.f64, f64, 'Float64Array at offset 8 of a slice');
  assert.is(got.f64[0], new DataView(buf).getFloat64(8, true));
  sameArray(got.u16, u16, 'Uint16Array at offset 10');
  sameArray(got.u8, u8, 'Uint8Array subarray at offset 4');
  assert.is(got.u8[0], backing[4]);
  assert.is(got.u8.length, 5001);
  sameArray(got.i8, i8, 'Int8Array at offset 7');
});

test('decoded segments are views into the received value when aligned, and correct copies when the value starts at an odd offset', () => {
  const f64 = filled(Float64Array as unknown as TAClass, 1000);
  const i32 = filled(Int32Array as unknown as TAClass, 1500);
  const u8 = filled(Uint8Array as unknown as TAClass, 4500);
  const enc = encodeObject({ f64, i32, u8 });
  const aligned = decodeObject(enc, O) as any;
  assert.is(aligned.f64.buffer, enc.buffer, 'aligned: a view, not a copy');
  for (const shift of [1, 2, 3, 4, 5, 6, 7]) {
    const shifted = new Uint8Array(enc.length + shift);
    shifted.set(enc, shift);
    const got = decodeObject(shifted.subarray(shift), O) as any;
    sameArray(got.f64, f64, `f64 shifted by ${shift}`);
    sameArray(got.i32, i32, `i32 shifted by ${shift}`);
    sameArray(got.u8, u8, `u8 shifted by ${shift}`);
    assert.is.not(got.f64.buffer, shifted.buffer, 'misaligned Float64Array: a copy');
    assert.is(got.u8.buffer, shifted.buffer, 'bytes: always a view');
  }
});

test('Buffer values decode as they did before segments existed (a Buffer from a Buffer, never a segment)', () => {
  const small = Buffer.from([1, 2, 3]);
  const big = Buffer.alloc(6000, 9);
  const plain = encodeObject({ small, big });
  assert.is(kind(plain), 1, 'Buffers never become segments');
  const withSeg = encodeObject({ small, big, seg: new Float32Array(1024).fill(2.5) });
  assert.is(kind(withSeg), 3);
  for (const [name, conv] of [['Buffer', (b: Uint8Array) => Buffer.from(b)], ['Uint8Array', (b: Uint8Array) => new Uint8Array(b)]] as const) {
    const a = decodeObject(conv(plain), O) as any;
    const b = decodeObject(conv(withSeg), O) as any;
    for (const k of ['small', 'big']) {
      assert.is(Buffer.isBuffer(b[k]), Buffer.isBuffer(a[k]), `${k} from a ${name}: same class with and without segments`);
      assert.is(b[k].constructor, a[k].constructor);
      assert.ok(Buffer.from(b[k]).equals(k === 'small' ? small : big));
    }
    // Before segments, a Buffer came back as a Buffer exactly when the received value was one.
    assert.is(Buffer.isBuffer(b.small), name === 'Buffer');
    assert.ok(b.seg instanceof Float32Array && b.seg.length === 1024 && b.seg[1023] === 2.5);
  }
});

// ---- hostile encodings -------------------------------------------------------------------------

/** A segment reference as msgpackr writes it: fixext1 0x53 0x00, then the value [index, class]. */
const ref = (i: unknown, cls: unknown) => Buffer.concat([Buffer.from([0xd4, 0x53, 0x00]), pack([i, cls])]);
/** A msgpack array of the given encoded items. */
const arr = (items: Uint8Array[]) => Buffer.concat([Buffer.from([0x90 | items.length]), ...items]);

/** A kind-3 value with the given body and segment lengths (u64 lo, hi); segments are zero bytes. */
function build(body: Uint8Array, lens: (number | [number, number])[], o: { count?: number; bodyLen?: number; dataBytes?: number } = {}): Uint8Array {
  const head = 12 + 8 * lens.length;
  let size = (head + body.length + 7) & ~7;
  const total = lens.reduce<number>((s, l) => s + (typeof l === 'number' ? ((l + 7) & ~7) : 0), 0);
  size += o.dataBytes ?? total;
  const out = new Uint8Array(size);
  const dv = new DataView(out.buffer);
  out.set([0x67, 0x63, 0x01, 0x03]);
  dv.setUint32(4, o.count ?? lens.length, true);
  dv.setUint32(8, o.bodyLen ?? body.length, true);
  lens.forEach((l, i) => {
    const [lo, hi] = typeof l === 'number' ? [l, 0] : l;
    dv.setUint32(12 + 8 * i, lo, true);
    dv.setUint32(16 + 8 * i, hi, true);
  });
  out.set(body, head);
  return out;
}

test('hand-built kind-3 values decode (the builder used by the hostile cases is faithful)', () => {
  const got = decodeObject(build(arr([ref(0, 'Float64Array'), ref(1, 'Uint8Array')]), [4096, 5000]), O) as any;
  assert.ok(got[0] instanceof Float64Array && got[0].length === 512);
  assert.ok(got[1] instanceof Uint8Array && got[1].length === 5000);
});

test('hostile segment headers: count 0, body or segment past the end, truncated tables', () => {
  const body = arr([ref(0, 'Float64Array')]);
  protocolErr(build(body, [], { count: 0 }), 'segment count 0');
  protocolErr(build(pack({ a: 1 }), []), 'segment count 0, a body without references');
  protocolErr(build(body, [4096], { bodyLen: 1_000_000 }), 'body length beyond the value');
  protocolErr(build(body, [4096], { bodyLen: 0xffffffff }), 'body length 2^32-1');
  protocolErr(build(body, [4096], { dataBytes: 4095 }), 'segment one byte past the end');
  protocolErr(build(body, [4096, 8], { dataBytes: 4096 }), 'second segment past the end');
  protocolErr(build(body, [[0, 1]]), 'segment length 2^32');
  protocolErr(build(body, [[0xffffffff, 0xffffffff]]), 'segment length 2^64-1');
  protocolErr(build(body, [4096], { count: 0x7fffffff }), 'count far beyond the table');
  protocolErr(new Uint8Array([0x67, 0x63, 0x01, 0x03, 1, 0, 0]), 'truncated header');
  protocolErr(new Uint8Array([0x67, 0x63, 0x01, 0x03]), 'header only');
  const valid = encodeObject({ a: new Float64Array(600) });
  protocolErr(valid.subarray(0, valid.length - 9), 'valid value cut short into its segment');
});

test('hostile segment references: wrong element size, index out of range or reused, unknown or prototype class names', () => {
  protocolErr(build(arr([ref(0, 'Float64Array')]), [4100]), 'segment length not a multiple of 8');
  protocolErr(build(arr([ref(0, 'Int32Array')]), [4098]), 'segment length not a multiple of 4');
  protocolErr(build(arr([ref(0, 'Uint16Array')]), [4097]), 'segment length not a multiple of 2');
  protocolErr(build(arr([ref(1, 'Uint8Array')]), [4096]), 'index out of range');
  protocolErr(build(arr([ref(-1, 'Uint8Array')]), [4096]), 'negative index');
  protocolErr(build(arr([ref(0.5, 'Uint8Array')]), [4096]), 'fractional index');
  protocolErr(build(arr([ref('0', 'Uint8Array')]), [4096]), 'string index');
  protocolErr(build(arr([ref(0, 'Uint8Array'), ref(0, 'Uint8Array')]), [4096]), 'same index twice');
  protocolErr(build(arr([ref(0, 'Uint8Array'), ref(0, 'Float64Array')]), [4096, 4096]), 'same index twice, other class');
  for (const name of ['Object', '__proto__', 'constructor', 'toString', 'hasOwnProperty', 'DataView', 'Buffer', 'Array', 'Float16Array', '', 'uint8array']) {
    protocolErr(build(arr([ref(0, name)]), [4096]), `class name '${name}'`);
  }
  protocolErr(build(arr([ref(0, 7)]), [4096]), 'class name not a string');
  protocolErr(build(Buffer.concat([Buffer.from([0xd4, 0x53, 0x00]), pack(5)]), [4096]), 'reference not an array');
  protocolErr(build(Buffer.concat([Buffer.from([0xd4, 0x53, 0x00]), pack([0, 'Uint8Array', 1])]), [4096]), 'reference of three items');
  // A segment reference inside a plain msgpack value (kind 1) has no segments to name.
  protocolErr(Buffer.concat([Buffer.from([0x67, 0x63, 0x01, 0x01]), ref(0, 'Uint8Array')]), 'reference in a kind-1 value');
});

test('a failed decode leaves no state behind: a later plain value cannot reach the failed value\'s segments; valid values decode', () => {
  const v = filled(Float32Array as unknown as TAClass, 2000);
  const refInPlain = Buffer.concat([Buffer.from([0x67, 0x63, 0x01, 0x01]), ref(0, 'Uint8Array')]);
  protocolErr(build(arr([ref(0, 'Nope')]), [4096]), 'unknown class');
  protocolErr(refInPlain, 'reference in kind 1 after a failed kind-3 decode');
  sameArray(decodeObject(encodeObject(v), O), v, 'after a failure');
  protocolErr(refInPlain, 'reference in kind 1 after a good kind-3 decode');
});

test('fuzz: random byte flips in valid segment encodings give a value or ERR_GROUPCOMM_PROTOCOL, nothing else', () => {
  const rand = prng(0x5e9);
  const seeds = [
    encodeObject({ a: filled(Float64Array as unknown as TAClass, 600), b: 'x' }),
    encodeObject([filled(Uint8Array as unknown as TAClass, 4097), new Map([[1, filled(Int16Array as unknown as TAClass, 2100)]]), new Set([filled(BigInt64Array as unknown as TAClass, 513)])]),
    encodeObject({ m: new Map([['k', filled(Float32Array as unknown as TAClass, 1024)]]), n: 3n, d: new Date(5), s: 'str' }),
  ];
  let failed = 0, decoded = 0;
  for (let iter = 0; iter < 4000; iter++) {
    const src = seeds[iter % seeds.length];
    const b = new Uint8Array(src);
    const dv = new DataView(b.buffer);
    const head = 12 + 8 * dv.getUint32(4, true) + dv.getUint32(8, true);
    const flips = 1 + Math.floor(rand() * 4);
    for (let f = 0; f < flips; f++) {
      // Mostly the header, tables and body, where the structure is; sometimes anywhere.
      const at = rand() < 0.85 ? Math.floor(rand() * head) : Math.floor(rand() * b.length);
      b[at] = rand() < 0.5 ? b[at] ^ (1 << Math.floor(rand() * 8)) : Math.floor(rand() * 256);
    }
    const cut = rand() < 0.1 ? b.subarray(0, Math.floor(rand() * b.length)) : b;
    try {
      decodeObject(cut, O);
      decoded++;
    } catch (e) {
      assert.ok(isGroupcommError(e, 'ERR_GROUPCOMM_PROTOCOL'), `iteration ${iter}: ${(e as Error)?.stack ?? e}`);
      assert.is((e as any).key, O.key);
      failed++;
    }
  }
  assert.ok(failed > 100, `${failed} of 4000 flips were rejected`);
  assert.ok(decoded + failed === 4000);
});

test.run();
