/**
 * The coordinator's small pure helpers: unique group names (host/coordinator/names.ts), dims
 * and block transposes (dims.ts), and copies between tensors of one group (copy.ts; device
 * tensors through the real cpu plugin's host-memory backend).
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { lookupName, registeredNames, registerName, releaseName, reserveName } from '../../host/coordinator/names.js';
import { catShape, normDim, outerCount, scatterShape, transposeBlocks } from '../../host/coordinator/dims.js';
import { copyTensor, reorderTensor } from '../../host/coordinator/copy.js';
import { isGroupcommError, type GroupcommError } from '../../host/base/errors.js';
import { backend as cpu } from '../../plugins/cpu/index.js';
import type { Tensor } from '../../host/core/tensor.js';

function invalid(f: () => unknown, what: string): GroupcommError {
  try {
    f();
  } catch (e) {
    assert.ok(isGroupcommError(e, 'ERR_GROUPCOMM_INVALID_ARGUMENT'), `${what}: ${e}`);
    return e as GroupcommError;
  }
  assert.unreachable(`${what}: accepted`);
  throw new Error('unreachable');
}

test('names: the lowest free index per base; a released name is reused; release is idempotent', () => {
  assert.is(reserveName('tp'), 'tp:0');
  assert.is(reserveName('tp'), 'tp:1');
  assert.is(reserveName('tp'), 'tp:2');
  assert.is(reserveName('pp'), 'pp:0', 'each base counts on its own');
  releaseName('tp:1');
  assert.is(reserveName('tp'), 'tp:1');
  releaseName('tp:0');
  releaseName('tp:0');
  assert.is(reserveName('tp'), 'tp:0');
  assert.is(reserveName('tp'), 'tp:3');
  // A base containing ':' is cut at its last one.
  assert.is(reserveName('a:b'), 'a:b:0');
  releaseName('a:b:0');
  assert.is(reserveName('a:b'), 'a:b:0');
  releaseName('never:7');
  // Once every index of a base is released it starts again at 0.
  for (const n of ['tp:0', 'tp:1', 'tp:2', 'tp:3']) releaseName(n);
  assert.is(reserveName('tp'), 'tp:0');
});

test('names: a registered owner is found until its name is released; the list is sorted', () => {
  const a = { id: 'a' };
  const b = { id: 'b' };
  const na = reserveName('zz');
  const nb = reserveName('mm');
  registerName(na, a);
  registerName(nb, b);
  assert.is(lookupName(na), a);
  assert.is(lookupName('nothing:0'), undefined);
  const names = registeredNames();
  assert.ok(names.includes(na) && names.includes(nb));
  assert.equal(names, [...names].sort());
  assert.ok(names.indexOf(nb) < names.indexOf(na));
  releaseName(na);
  assert.is(lookupName(na), undefined);
  assert.not.ok(registeredNames().includes(na));
  assert.is(reserveName('zz'), na, 'released: the index is free again');
  releaseName(na);
  releaseName(nb);
});

test('normDim: negative dims count from the end; out of range or non-integer refused; 0-d acts as 1-d', () => {
  assert.is(normDim(0, 3, 'g'), 0);
  assert.is(normDim(2, 3, 'g'), 2);
  assert.is(normDim(-1, 3, 'g'), 2);
  assert.is(normDim(-3, 3, 'g'), 0);
  assert.is(normDim(0, 0, 'g'), 0);
  assert.is(normDim(-1, 0, 'g'), 0);
  for (const [d, n] of [[3, 3], [-4, 3], [1, 0], [-2, 0], [0.5, 3], [NaN, 3]]) invalid(() => normDim(d, n, 'allGather'), `${d} of ${n}`);
  assert.match(invalid(() => normDim(3, 3, 'allGather'), 'msg').message, 'expected -3..2');
});

test('outerCount and the shapes of a gather and a scatter along a dim', () => {
  assert.is(outerCount([2, 3, 4], 0), 1);
  assert.is(outerCount([2, 3, 4], 1), 2);
  assert.is(outerCount([2, 3, 4], 2), 6);
  assert.equal(catShape([2, 3], 1, 4), [2, 12]);
  assert.equal(catShape([2, 3], 0, 4), [8, 3]);
  assert.equal(catShape([], 0, 4), [4]);
  const s = [8, 6];
  assert.equal(catShape(s, 0, 2), [16, 6]);
  assert.equal(s, [8, 6], 'the input shape is not changed');
  assert.equal(scatterShape(s, 1, 3, 'rs'), [8, 2]);
  assert.equal(scatterShape(s, 0, 4, 'rs'), [2, 6]);
  assert.equal(s, [8, 6]);
  invalid(() => scatterShape([], 0, 2, 'rs'), '0-d');
  assert.match(invalid(() => scatterShape([8, 6], 1, 4, 'rs'), 'not divisible').message, 'dim 1 has size 6, not divisible by the world size 4');
});

test('transposeBlocks: (a, b, block) → (b, a, block); sizes must match', () => {
  const src = Uint8Array.from({ length: 12 }, (_, i) => i);
  const dst = new Uint8Array(12);
  transposeBlocks(src, dst, 2, 3, 2); // blocks 0..5 as [[0,1,2],[3,4,5]] → [[0,3],[1,4],[2,5]]
  assert.equal([...dst], [0, 1, 6, 7, 2, 3, 8, 9, 4, 5, 10, 11]);
  const back = new Uint8Array(12);
  transposeBlocks(dst, back, 3, 2, 2);
  assert.equal([...back], [...src]);
  const one = new Uint8Array(12);
  transposeBlocks(src, one, 1, 6, 2);
  assert.equal([...one], [...src]);
  transposeBlocks(src, one.fill(0), 6, 1, 2);
  assert.equal([...one], [...src]);
  invalid(() => transposeBlocks(src, new Uint8Array(11), 2, 3, 2), 'dst short');
  invalid(() => transposeBlocks(new Uint8Array(13), dst, 2, 3, 2), 'src long');
});

const f32 = (v: number[], shape = [v.length]): Tensor => ({ dtype: 'float32', shape, device: 'cpu', data: Float32Array.from(v) });
function onDevice(v: number[], shape = [v.length]): Tensor {
  const data = cpu.alloc(v.length * 4, 0);
  const src = Float32Array.from(v);
  cpu.copyFromHost(data, new Uint8Array(src.buffer));
  return { dtype: 'float32', shape, device: `${cpu.deviceType}:0`, data };
}
function values(t: Tensor): number[] {
  if (t.device === 'cpu') return [...(t.data as Float32Array)];
  const out = new Float32Array(t.shape.reduce((a, b) => a * b, 1));
  cpu.copyToHost(new Uint8Array(out.buffer), t.data as never);
  return [...out];
}

test('copyTensor: CPU to CPU, to and from a device, device to device; sizes must match; a backend must fit', () => {
  const a = f32([1, 2, 3, 4]);
  const b = f32([0, 0, 0, 0], [2, 2]);
  assert.is(copyTensor(undefined, b, a), b);
  assert.equal(values(b), [1, 2, 3, 4]);
  assert.is(copyTensor(undefined, a, a), a);
  const d = onDevice([0, 0, 0, 0]);
  copyTensor(cpu, d, f32([5, 6, 7, 8]));
  assert.equal(values(d), [5, 6, 7, 8]);
  const c = f32([0, 0, 0, 0]);
  copyTensor(cpu, c, d);
  assert.equal(values(c), [5, 6, 7, 8]);
  const d2 = onDevice([0, 0, 0, 0]);
  copyTensor(cpu, d2, d);
  assert.equal(values(d2), [5, 6, 7, 8]);
  assert.match(invalid(() => copyTensor(undefined, f32([0, 0, 0]), a), 'size').message, 'copy: 16 bytes do not fit 12');
  invalid(() => copyTensor(undefined, f32([0, 0, 0, 0]), d), 'no backend');
  invalid(() => copyTensor(undefined, d, a), 'no backend for the destination');
  invalid(() => copyTensor({ ...cpu, deviceType: 'other' } as never, c, d), 'backend of another type');
  for (const t of [d, d2]) cpu.free(t.data as never);
});

test('reorderTensor: the block transpose on CPU tensors and through host copies for device ones', () => {
  const src = f32([0, 1, 2, 3, 4, 5]);
  const dst = f32([0, 0, 0, 0, 0, 0]);
  reorderTensor(undefined, src, dst, 2, 3); // blocks of one element
  assert.equal(values(dst), [0, 3, 1, 4, 2, 5]);
  const dsrc = onDevice([0, 1, 2, 3, 4, 5, 6, 7]);
  const ddst = onDevice(new Array(8).fill(0));
  reorderTensor(cpu, dsrc, ddst, 2, 2); // blocks of two elements
  assert.equal(values(ddst), [0, 1, 4, 5, 2, 3, 6, 7]);
  const cdst = f32(new Array(8).fill(0));
  reorderTensor(cpu, dsrc, cdst, 2, 2);
  assert.equal(values(cdst), [0, 1, 4, 5, 2, 3, 6, 7]);
  const d3 = onDevice(new Array(8).fill(0));
  reorderTensor(cpu, f32([0, 1, 2, 3, 4, 5, 6, 7]), d3, 4, 2);
  assert.equal(values(d3), [0, 2, 4, 6, 1, 3, 5, 7]);
  for (const t of [dsrc, ddst, d3]) cpu.free(t.data as never);
});

test.run();
