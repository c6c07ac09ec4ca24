/**
 * The coordinator's tensor-dict format at its edges (host/coordinator/tensor_dict.ts), written
 * for the mutation run (issue 20): every refusal names its key and keeps its cause, a shape must
 * be non-negative safe integers, a device buffer may be larger than its tensor (a CPU array may
 * not), a slot may declare exactly maxBytes, a '__proto__' key is an ordinary own property, and
 * a value that holds one object twice travels as two copies (no structured-clone references).
 * The main cases are in tensor_dict.test.ts.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { decodeTensorDict, encodeTensorDict, fillTensorDict } from '../../host/coordinator/tensor_dict.js';
import { isGroupcommError, type GroupcommError } from '../../host/base/errors.js';
import type { Tensor } from '../../host/core/tensor.js';

/** The GroupcommError `f` throws (of `code`). */
function thrown(f: () => unknown, code: string): GroupcommError & { cause?: unknown } {
  try {
    f();
  } catch (e) {
    assert.ok(isGroupcommError(e, code as never), String(e));
    return e as GroupcommError;
  }
  assert.unreachable(`no ${code}`);
  throw new Error('unreachable');
}
const INVALID = 'ERR_GROUPCOMM_INVALID_ARGUMENT';
const PROTOCOL = 'ERR_GROUPCOMM_PROTOCOL';
const dev = (shape: number[], nbytes: number, device = 'cuda:0'): Tensor => ({ dtype: 'float32', shape, device, data: { nbytes } } as never);
const cpu = (shape: unknown, data: Float32Array): Tensor => ({ dtype: 'float32', shape, device: 'cpu', data } as never);

test('a shape must be an array of non-negative safe integers; the error names the key', () => {
  for (const shape of [[-1], [1.5], [NaN], [2 ** 53], [1, -2]]) {
    const e = thrown(() => encodeTensorDict({ k: cpu(shape, new Float32Array(1)) }), INVALID);
    assert.is(e.key, 'k', JSON.stringify(shape));
  }
  // A device buffer's size check (>=) would not catch these: the shape check must.
  for (const shape of [[-1], [1.5], [2, -3]]) {
    assert.is(thrown(() => encodeTensorDict({ g: dev(shape, 1 << 20) }), INVALID).key, 'g', JSON.stringify(shape));
  }
  assert.is(encodeTensorDict({ k: cpu([0, 3], new Float32Array(0)) }).tensors.length, 1, 'zero-size dims are fine');
});

test('a CPU tensor\'s data must match its shape exactly; a device buffer may be larger', () => {
  assert.is(thrown(() => encodeTensorDict({ a: cpu([2], new Float32Array(3)) }), INVALID).key, 'a', 'CPU data longer than the shape');
  assert.is(thrown(() => encodeTensorDict({ b: cpu([2], new Float32Array(1)) }), INVALID).key, 'b');
  assert.is(encodeTensorDict({ d: dev([2], 64) }).tensors.length, 1, 'device buffer larger than needed');
  assert.is(encodeTensorDict({ d: dev([2], 8) }).tensors.length, 1, 'exactly');
  assert.is(thrown(() => encodeTensorDict({ d: dev([2], 7) }), INVALID).key, 'd');
});

test('only a plain object is a dict', () => {
  for (const d of ['abc', 5, true, [1], new Map(), null]) thrown(() => encodeTensorDict(d as never), INVALID);
});

test('a value msgpack cannot encode is refused with its key and the encoder\'s error as cause', () => {
  const e = thrown(() => encodeTensorDict({ s: Symbol('x') }), INVALID);
  assert.is(e.key, 's');
  assert.ok(e.cause !== undefined, 'cause kept');
});

test('an object referenced twice inside a value travels as two copies', () => {
  const shared = { x: 1 };
  const { frame } = encodeTensorDict({ v: { a: shared, b: shared, c: [shared] } });
  assert.equal(decodeTensorDict(frame).dict, { v: { a: { x: 1 }, b: { x: 1 }, c: [{ x: 1 }] } });
});

test('decode: garbage is a PROTOCOL error with a cause; a slot may declare exactly maxBytes', () => {
  const e = thrown(() => decodeTensorDict(Uint8Array.of(0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8)), PROTOCOL);
  assert.ok(e.message.startsWith('bad tensor-dict frame'), e.message);
  const { frame } = encodeTensorDict({ t: dev([4], 16) });
  assert.is(decodeTensorDict(frame, { maxBytes: 16 }).slots[0].nbytes, 16);
  const big = thrown(() => decodeTensorDict(frame, { maxBytes: 15 }), PROTOCOL);
  assert.is(big.key, 't');
});

test('a __proto__ key decodes as an ordinary (writable, configurable, enumerable) own property', () => {
  const src: Record<string, unknown> = {};
  Object.defineProperty(src, '__proto__', { value: 5, enumerable: true, writable: true, configurable: true });
  const { dict } = decodeTensorDict(encodeTensorDict(src).frame);
  const d = Object.getOwnPropertyDescriptor(dict, '__proto__');
  assert.equal(d, { value: 5, enumerable: true, writable: true, configurable: true });
  assert.is(Object.getPrototypeOf(dict), Object.prototype);
  // Also for a tensor slot and an inline tensor under that key.
  const t: Record<string, unknown> = {};
  Object.defineProperty(t, '__proto__', { value: dev([1], 4), enumerable: true, writable: true, configurable: true });
  const slotDict = decodeTensorDict(encodeTensorDict(t).frame);
  assert.ok(Object.prototype.hasOwnProperty.call(slotDict.dict, '__proto__'));
  assert.is(Object.getPrototypeOf(slotDict.dict), Object.prototype);
  fillTensorDict(slotDict.dict, slotDict.slots, [{ dtype: 'float32', shape: [1], device: 'cuda:0', data: { nbytes: 4 } } as never]);
  assert.is(Object.getPrototypeOf(slotDict.dict), Object.prototype);
  assert.equal((Object.getOwnPropertyDescriptor(slotDict.dict, '__proto__')!.value as Tensor).shape, [1]);
});

test('fillTensorDict refuses a tensor of another dtype, rank or dim, naming the slot\'s key', () => {
  const { frame, tensors } = encodeTensorDict({ t: dev([2, 3], 24) });
  const { dict, slots } = decodeTensorDict(frame);
  const f32 = (shape: number[]) => ({ dtype: 'float32', shape, device: 'cuda:0', data: { nbytes: 24 } }) as never;
  for (const [t, what] of [
    [{ dtype: 'int32', shape: [2, 3], device: 'cuda:0', data: { nbytes: 24 } }, 'dtype'],
    [f32([6]), 'rank'], [f32([2, 3, 1]), 'rank'], [f32([3, 2]), 'dims'], [f32([2, 4]), 'last dim'], ['x', 'not a tensor'],
  ] as const) {
    assert.is(thrown(() => fillTensorDict(dict, slots, [t as never]), INVALID).key, 't', what);
  }
  assert.is(dict.t, undefined, 'nothing placed by a refused call');
  fillTensorDict(dict, slots, tensors);
  assert.is(dict.t, tensors[0]);
  thrown(() => fillTensorDict(dict, slots, []), INVALID);
  thrown(() => fillTensorDict(dict, [], tensors), INVALID);
});

test.run();
