/**
 * The CPU group's argument checks (host/cpu/checks.ts CallContext), called directly: what each
 * accepts and refuses, with ERR_GROUPCOMM_INVALID_ARGUMENT carrying this rank; the `out`
 * contract (dtype, shape, aliasing), the reduce op and its combining function, tags.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { CallContext, callOf } from '../../host/cpu/checks.js';
import { Staging } from '../../host/cpu/algorithms.js';
import { Schedules } from '../../host/cpu/schedule.js';
import { isGroupcommError, type GroupcommError } from '../../host/base/errors.js';
import { premulSum } from '../../host/core/premul.js';
import { REDUCE_OPS } from '../../host/core/reduce.js';
import type { CpuTensor } from '../../host/core/tensor.js';

const plans = new Schedules(2, 4, 1 << 16);
const c = new CallContext(2, 4, 4096, { chunkBytes: 1 << 16, window: 2, plans }, new Staging(), plans);
const f32 = (...v: number[]): CpuTensor => ({ dtype: 'float32', shape: [v.length], device: 'cpu', data: Float32Array.from(v) });

function invalid(f: () => unknown, what: string): GroupcommError {
  try {
    f();
  } catch (e) {
    assert.ok(isGroupcommError(e, 'ERR_GROUPCOMM_INVALID_ARGUMENT'), `${what}: ${e}`);
    assert.is((e as GroupcommError).rank, 2, `${what}: the error carries this rank`);
    return e as GroupcommError;
  }
  assert.unreachable(`${what}: accepted`);
  throw new Error('unreachable');
}

test('cpu(): a CPU tensor whose data holds exactly its shape', () => {
  const t = f32(1, 2, 3);
  assert.is(c.cpu(t, 'op'), t);
  const e = invalid(() => c.cpu({ ...t, shape: [2] }, 'allReduce'), 'too few elements');
  assert.match(e.message, /^allReduce: shape \[2\] of float32 needs 8 bytes, data has 12$/);
  invalid(() => c.cpu({ ...t, shape: [4] }, 'op'), 'too many');
  invalid(() => c.cpu(undefined, 'op'), 'undefined');
  invalid(() => c.cpu(null as never, 'op'), 'null');
  invalid(() => c.cpu(5 as never, 'op'), 'number');
  invalid(() => c.cpu({ ...t, device: 'cuda:0' }, 'op'), 'device');
  invalid(() => c.cpu({ ...t, data: [1, 2, 3] } as never, 'op'), 'data not a typed array');
  assert.match(invalid(() => c.cpu(null as never, 'gather'), 'msg').message, /^gather: expected a CPU tensor$/);
});

test('callOf: the caller\'s view when given, else the tensor\'s shape', () => {
  const t = f32(1, 2);
  assert.equal(callOf(t, undefined), { shape: [2] });
  assert.equal(callOf(t, {}), { shape: [2] });
  assert.equal(callOf(t, { call: { shape: [1, 2], dim: 1 } } as never), { shape: [1, 2], dim: 1 });
});

test('peer(): an integer rank of the group; itself only when allowed', () => {
  assert.is(c.peer(0, 'send', false), 0);
  assert.is(c.peer(3, 'send', false), 3);
  assert.is(c.peer(2, 'broadcast', true), 2);
  assert.match(invalid(() => c.peer(2, 'send', false), 'self').message, 'is not another rank of this group of 4');
  assert.match(invalid(() => c.peer(4, 'root', true), 'past the end').message, 'rank 4 is not a rank of this group of 4');
  for (const r of [-1, 1.5, NaN]) invalid(() => c.peer(r, 'send', true), String(r));
});

test('reduceOp(): sum by default, the known names, a premulSum as given; anything else refused', () => {
  assert.is(c.reduceOp(undefined), 'sum');
  assert.is(c.reduceOp(null), 'sum');
  for (const op of REDUCE_OPS) assert.is(c.reduceOp(op), op);
  const p = premulSum(0.5);
  assert.is(c.reduceOp(p), p);
  invalid(() => c.reduceOp('mean'), 'mean');
  invalid(() => c.reduceOp(3), 'number');
});

test('reducer(): avg and premulSum combine as sums; avg and premulSum refused on bool', () => {
  const run = (op: Parameters<typeof c.reducer>[0], a: number[], b: number[]) => {
    const dst = Float32Array.from(a);
    c.reducer(op, 'float32')(new Uint8Array(dst.buffer), new Uint8Array(Float32Array.from(b).buffer));
    return Array.from(dst);
  };
  assert.equal(run('sum', [1, 5], [2, 3]), [3, 8]);
  assert.equal(run('avg', [1, 5], [2, 3]), [3, 8]);
  assert.equal(run(premulSum(3), [1, 5], [2, 3]), [3, 8]);
  assert.equal(run('max', [1, 5], [2, 3]), [2, 5]);
  assert.equal(run('min', [1, 5], [2, 3]), [1, 3]);
  invalid(() => c.reducer('avg', 'bool'), 'avg bool');
  invalid(() => c.reducer(premulSum(2), 'bool'), 'premulSum bool');
  invalid(() => c.reducer(premulSum(1e10), 'int8'), 'factor out of int8');
  c.reducer('sum', 'bool');
  c.reducer(premulSum(2), 'int8');
});

test('output(): a new tensor, or `out` checked for dtype, shape and aliasing', () => {
  const made = c.output(undefined, 'int32', [2, 3], undefined, 'allGather');
  assert.is(made.inPlace, false);
  assert.is(made.t.dtype, 'int32');
  assert.equal(made.t.shape, [2, 3]);
  assert.is(made.t.data.length, 6);
  const input = f32(1, 2, 3, 4);
  const out = f32(0, 0, 0, 0);
  assert.equal(c.output(out, 'float32', [4], input, 'allReduce'), { t: out, inPlace: false });
  assert.equal(c.output(out, 'float32', [4], undefined, 'recv'), { t: out, inPlace: false });
  assert.equal(c.output(input, 'float32', [4], input, 'allReduce', true), { t: input, inPlace: true });
  assert.match(invalid(() => c.output(input, 'float32', [4], input, 'allGather'), 'in place not allowed').message, 'cannot run in place');
  assert.match(invalid(() => c.output(out, 'int32', [4], input, 'allReduce'), 'dtype').message, 'out has dtype float32, expected int32');
  assert.match(invalid(() => c.output(out, 'float32', [2, 2], input, 'allReduce'), 'rank differs').message, 'out has shape [4], expected [2, 2]');
  const o22 = { ...f32(0, 0, 0, 0), shape: [2, 2] };
  invalid(() => c.output(o22, 'float32', [4, 1], input, 'allReduce'), 'dims differ');
  invalid(() => c.output(o22, 'float32', [2, 3], input, 'allReduce'), 'last dim differs');
  invalid(() => c.output(out, 'float32', [4, 1], input, 'allReduce'), 'a prefix of the expected shape');
  assert.match(invalid(() => c.output({ ...out, shape: [5] }, 'float32', [5], input, 'scatter'), 'bad out').message, /^scatter out: /);
});

test('tree(): the group\'s binomial tree for that root', () => {
  assert.is(c.tree(1), plans.tree(1));
});

test('tagOf(): 0 by default, an integer in [0, 2^32)', () => {
  assert.is(c.tagOf(undefined), 0);
  assert.is(c.tagOf(7), 7);
  assert.is(c.tagOf(0xffffffff), 0xffffffff);
  for (const t of [-1, 2 ** 32, 1.5, '3', NaN]) invalid(() => c.tagOf(t), String(t));
});

test.run();
