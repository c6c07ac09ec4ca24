import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { encodeTensorDict, decodeTensorDict, fillTensorDict } from '../../host/coordinator/tensor_dict.js';
import { encodeFrame, FrameError } from '../../host/core/frame.js';
import { getCore } from '../../host/core/loader.js';
import { tensor, empty, type Tensor, type CpuTensor } from '../../host/core/tensor.js';
import { ErrorCode, isGroupcommError, type GroupcommError } from '../../host/base/errors.js';
import { prng } from '../golden/raw.js';

const dev = (dtype: Tensor['dtype'], shape: number[], device: string, nbytes: number): Tensor =>
  ({ dtype, shape, device, data: { ptr: 0x1000n, nbytes } });

function sample() {
  return {
    input_ids: tensor(new BigInt64Array([1n, 2n, 3n, 4n]), { shape: [2, 2] }),
    kv: dev('bfloat16', [2, 16, 8], 'cuda:3', 512),
    meta: { step: 7, name: 'prefill', lens: [3, 1], nested: { ok: true, none: null } },
    mask: tensor(new Uint8Array([1, 0, 1]), { dtype: 'bool' }),
    scale: 0.5,
  };
}

test('encode: tensors become descriptors and leave in dict order; values become blobs', () => {
  const d = sample();
  const { frame, tensors } = encodeTensorDict(d);
  assert.equal(tensors, [d.input_ids, d.kv, d.mask]);
  const { dict, slots } = decodeTensorDict(frame);
  assert.equal(Object.keys(dict), ['input_ids', 'kv', 'meta', 'mask', 'scale']);
  assert.equal(slots, [
    { key: 'input_ids', dtype: 'int64', shape: [2, 2], device: 'cpu', nbytes: 32 },
    { key: 'kv', dtype: 'bfloat16', shape: [2, 16, 8], device: 'cuda:3', nbytes: 512 },
    { key: 'mask', dtype: 'bool', shape: [3], device: 'cpu', nbytes: 3 },
  ]);
  assert.is(dict.input_ids, undefined, 'slot keys wait for fillTensorDict');
  assert.equal(dict.meta, d.meta);
  assert.is(dict.scale, 0.5);
});

test('fillTensorDict places received tensors; the dict then equals the original', () => {
  const d = sample();
  const { frame, tensors } = encodeTensorDict(d);
  const { dict, slots } = decodeTensorDict(frame);
  // The receiver allocates from the slots and "receives" into them.
  const received = slots.map((s, i) => (s.device === 'cpu' ? tensor((tensors[i] as CpuTensor).data.slice(), { dtype: s.dtype, shape: s.shape }) : tensors[i]));
  fillTensorDict(dict, slots, received);
  assert.equal(dict, d);
});

test('inlineCpu: CPU tensors travel in the frame as aligned copies; device tensors never do', () => {
  const d = sample();
  const { frame, tensors } = encodeTensorDict(d, { inlineCpu: true });
  assert.equal(tensors, [d.kv]);
  const { dict, slots } = decodeTensorDict(frame);
  assert.equal(slots.map((s) => s.key), ['kv']);
  const ids = dict.input_ids as CpuTensor;
  assert.ok(ids.data instanceof BigInt64Array);
  assert.equal(ids, d.input_ids);
  assert.is(ids.data.byteOffset, 0);
  assert.ok(ids.data.buffer !== getCore().memory.buffer && ids.data.buffer !== frame.buffer);
  frame.fill(0);
  assert.equal(Array.from(ids.data as BigInt64Array), [1n, 2n, 3n, 4n], 'no aliasing of the frame either');
  assert.equal(dict.mask, d.mask);
});

test('every dtype round-trips inline with the right TypedArray class', () => {
  const cases: Array<[Tensor['dtype'], new (n: number) => ArrayLike<number | bigint>]> = [
    ['int8', Int8Array], ['uint8', Uint8Array], ['int16', Int16Array], ['int32', Int32Array], ['uint32', Uint32Array],
    ['int64', BigInt64Array], ['uint64', BigUint64Array], ['float16', Uint16Array], ['bfloat16', Uint16Array],
    ['float32', Float32Array], ['float64', Float64Array], ['float8_e4m3fn', Uint8Array], ['float8_e5m2', Uint8Array], ['bool', Uint8Array],
  ];
  const d: Record<string, Tensor> = {};
  for (const [dtype] of cases) {
    const t = empty([3], dtype);
    new Uint8Array(t.data.buffer).forEach((_, i, a) => (a[i] = (i * 37 + dtype.length) & 0xff));
    d[dtype] = t;
  }
  const { dict } = decodeTensorDict(encodeTensorDict(d, { inlineCpu: true }).frame);
  for (const [dtype, C] of cases) {
    const t = dict[dtype] as CpuTensor;
    assert.ok(t.data instanceof C, dtype);
    assert.equal(new Uint8Array(t.data.buffer), new Uint8Array((d[dtype] as CpuTensor).data.buffer), dtype);
  }
});

test('0-d and empty tensors', () => {
  const d = {
    scalar: tensor(new Float32Array([2.5]), { shape: [] }),
    none: empty([0], 'int32'),
    hollow: empty([3, 0, 2], 'float64'),
    devEmpty: dev('float16', [0, 4], 'cuda:1', 0),
  };
  const { frame, tensors } = encodeTensorDict(d, { inlineCpu: true });
  assert.equal(tensors, [d.devEmpty]);
  const { dict, slots } = decodeTensorDict(frame);
  assert.equal(dict.scalar, d.scalar);
  assert.equal(dict.none, d.none);
  assert.equal(dict.hollow, d.hollow);
  assert.equal(slots, [{ key: 'devEmpty', dtype: 'float16', shape: [0, 4], device: 'cuda:1', nbytes: 0 }]);
});

test('nested values: typed arrays, bigint, Date, Set, undefined, null; a Map comes back as an object', () => {
  const value = {
    f32: new Float32Array([1.5, -2]), u8: new Uint8Array([9, 8]), big: 2n ** 70n, neg: -5n,
    when: new Date(1_700_000_000_000), set: new Set(['a', 'b']), undef: undefined, nil: null,
    deep: [[1, [2, [3, { four: 4 }]]]], str: 'ünïcødé 🚀',
    buf: Buffer.from([1, 2, 3]),
  };
  const map = new Map<string, unknown>([['x', 1], ['y', [2]]]);
  const { dict } = decodeTensorDict(encodeTensorDict({ value, map }).frame);
  const v = dict.value as typeof value;
  assert.equal({ ...v, buf: undefined }, { ...value, buf: undefined });
  assert.equal(Array.from(v.buf), [1, 2, 3]);
  assert.equal(dict.map, { x: 1, y: [2] });
});

test('tensors nested inside a value travel inside its blob (as in vLLM)', () => {
  const inner = tensor(new Int32Array([5, 6]));
  const { frame, tensors } = encodeTensorDict({ meta: { t: inner } });
  assert.equal(tensors, []);
  const meta = decodeTensorDict(frame).dict.meta as { t: CpuTensor };
  assert.equal(meta.t, inner);
});

test('decoded values never alias the frame', () => {
  const { frame } = encodeTensorDict({ b: Buffer.from([1, 2, 3]), u: new Uint8Array([4, 5]) });
  const { dict } = decodeTensorDict(frame);
  frame.fill(0);
  assert.equal(Array.from(dict.b as Uint8Array), [1, 2, 3]);
  assert.equal(Array.from(dict.u as Uint8Array), [4, 5]);
});

test("a '__proto__' key is an own key, never the prototype", () => {
  const src = JSON.parse('{"__proto__": {"polluted": true}, "a": 1}');
  const { dict } = decodeTensorDict(encodeTensorDict(src).frame);
  assert.equal(Object.keys(dict), ['__proto__', 'a']);
  assert.is(Object.getPrototypeOf(dict), Object.prototype);
  assert.is((dict as { polluted?: boolean }).polluted, undefined);
  assert.is(({} as { polluted?: boolean }).polluted, undefined);
});

test('unicode keys and key order survive', () => {
  const d = { 'é': 1, '日本語': 2, '🚀🚀': 3, '': 4, 'ключ': tensor(new Float32Array(1)) };
  const { frame, tensors } = encodeTensorDict(d);
  const { dict, slots } = decodeTensorDict(frame);
  fillTensorDict(dict, slots, tensors);
  assert.equal(Object.keys(dict), Object.keys(d));
  assert.equal(dict, d);
});

test('a value blob that is not msgpack is a PROTOCOL error with detail BAD_VALUE', () => {
  const bad = [
    new Uint8Array(0), Uint8Array.of(0xc7, 1, 0x74, 99), Uint8Array.of(0x92, 1), Uint8Array.of(0xc0, 0xc0),
    Uint8Array.of(0xdd, 0xff, 0xff, 0xff, 0xff), Uint8Array.of(0xc6, 0xff, 0xff, 0xff, 0xff), // huge claimed lengths
  ];
  for (const blob of bad) {
    const frame = encodeFrame([{ key: 'k', kind: 'value', blob }]);
    try {
      decodeTensorDict(frame);
      assert.unreachable('should fail');
    } catch (e) {
      assert.ok(isGroupcommError(e, ErrorCode.PROTOCOL), String(e));
      assert.is((e as GroupcommError).detail, FrameError.BAD_VALUE);
      assert.is((e as GroupcommError).key, 'k');
    }
  }
});

test('bad frames from decodeTensorDict are PROTOCOL errors with the decode code', () => {
  const { frame } = encodeTensorDict(sample());
  try {
    decodeTensorDict(frame.subarray(0, frame.length - 1));
    assert.unreachable('should fail');
  } catch (e) {
    assert.ok(isGroupcommError(e, ErrorCode.PROTOCOL));
    assert.is((e as GroupcommError).detail, FrameError.TRUNCATED);
  }
});

test('mutated dict frames (values included) decode or fail with PROTOCOL, nothing else', () => {
  const rnd = prng(7);
  const frames = [encodeTensorDict(sample()).frame, encodeTensorDict(sample(), { inlineCpu: true }).frame];
  let ok = 0;
  for (let i = 0; i < 5000; i++) {
    const b = Uint8Array.from(frames[i & 1]);
    for (let k = 1 + Math.floor(rnd() * 3); k > 0; k--) b[Math.floor(rnd() * b.length)] = Math.floor(rnd() * 256);
    try {
      decodeTensorDict(b);
      ok++;
    } catch (e) {
      if (!isGroupcommError(e, ErrorCode.PROTOCOL)) throw e;
    }
  }
  assert.ok(ok > 0 && ok < 5000, `${ok} of 5000 decoded`);
});

test('caller mistakes are INVALID_ARGUMENT', () => {
  const bad = (f: () => unknown, name: string) =>
    assert.throws(f, (e: unknown) => isGroupcommError(e, ErrorCode.INVALID_ARGUMENT), name);
  bad(() => encodeTensorDict(null as never), 'null dict');
  bad(() => encodeTensorDict(new Map() as never), 'Map dict');
  bad(() => encodeTensorDict([1] as never), 'array dict');
  bad(() => encodeTensorDict({ s: Symbol('x') }), 'value msgpack cannot encode');
  bad(() => encodeTensorDict({ t: { dtype: 'float32', shape: [4], device: 'cpu', data: new Float32Array(3) } }), 'data shorter than shape');
  bad(() => encodeTensorDict({ t: dev('float32', [4], 'cuda:0', 15) }), 'device buffer too small');
  bad(() => encodeTensorDict({ t: dev('float32', [4], 'CUDA', 16) }), 'bad device');
  const { frame, tensors } = encodeTensorDict(sample());
  const { dict, slots } = decodeTensorDict(frame);
  bad(() => fillTensorDict(dict, slots, tensors.slice(1)), 'too few tensors');
  bad(() => fillTensorDict(dict, slots, [tensors[1], tensors[0], tensors[2]]), 'wrong dtype / shape');
  bad(() => fillTensorDict(dict, slots, [tensor(new BigInt64Array(4)), tensors[1], tensor(new Uint8Array(3))]), 'uint8 for bool');
});

test.run();
