/**
 * The golden tensor dicts. frames.json stores each with the exact bytes of its v1 frame; the
 * golden test checks that this list and the file agree, so adding or changing a case means
 * regenerating the file (GROUPCOMM_UPDATE_GOLDEN=1) and reviewing the diff. Changing the bytes
 * of an existing case is a format change: that needs a version bump, not a regeneration.
 */
import { DTYPE_NAMES, type DType } from '../../host/core/tensor.js';
import type { GoldenCase, Json } from './spec.js';

const ITEM: Record<DType, number> = {
  int8: 1, uint8: 1, int32: 4, uint32: 4, int64: 8, uint64: 8, float16: 2, float32: 4, float64: 8,
  bfloat16: 2, float8_e4m3fn: 1, float8_e5m2: 1, bool: 1, int16: 2,
};

/** Deterministic bytes: every byte value shows up, so byte-order mistakes cannot hide. */
function pattern(n: number, seed: number): string {
  let s = '';
  for (let i = 0; i < n; i++) s += ((seed * 31 + i * 131 + 7) & 0xff).toString(16).padStart(2, '0');
  return s;
}

function cpu(dtype: DType, shape: number[], seed = 1): Json {
  const n = shape.reduce((a, b) => a * b, 1) * ITEM[dtype];
  const bytes = dtype === 'bool' ? Array.from({ length: n }, (_, i) => (i % 3 === 0 ? '01' : '00')).join('') : pattern(n, seed);
  return { $tensor: { dtype, shape, device: 'cpu', hex: bytes } };
}

function device(dtype: DType, shape: number[], dev: string): Json {
  return { $tensor: { dtype, shape, device: dev, nbytes: shape.reduce((a, b) => a * b, 1) * ITEM[dtype] } };
}

export const CASES: GoldenCase[] = [
  { name: 'empty_dict', about: 'no entries: the 12-byte header alone', inlineCpu: false, dict: [] },
  ...DTYPE_NAMES.map((dtype, i): GoldenCase => ({
    name: `dtype_${dtype}`,
    about: `a ${dtype} tensor inline, next to the same dtype described only`,
    inlineCpu: true,
    dict: [['x', cpu(dtype, [2, 3], i)], ['on_gpu', device(dtype, [5], 'cuda:0')]],
  })),
  {
    name: 'scalars_0d',
    about: '0-d tensors (shape []) inline and described',
    inlineCpu: true,
    dict: [['loss', cpu('float32', [], 3)], ['step', cpu('int64', [], 4)], ['dev_scalar', device('bfloat16', [], 'cuda:1')]],
  },
  {
    name: 'empty_tensors',
    about: 'tensors with a zero dim: no payload bytes, still aligned',
    inlineCpu: true,
    dict: [['a', cpu('float32', [0])], ['b', cpu('int8', [3, 0, 2])], ['c', device('float16', [0, 4096], 'cuda:2')], ['d', cpu('uint8', [1], 9)]],
  },
  {
    name: 'shape_8d',
    about: '8-d shapes, inline and on a device',
    inlineCpu: true,
    dict: [['t8', cpu('float16', [1, 2, 1, 2, 1, 2, 1, 2], 5)], ['d8', device('float32', [2, 2, 2, 2, 2, 2, 2, 2], 'cuda:7')]],
  },
  {
    name: 'shape_16d',
    about: 'the ndim limit (16) itself',
    inlineCpu: false,
    dict: [['t16', device('int8', new Array(16).fill(1), 'cuda:0')]],
  },
  {
    name: 'unicode_keys',
    about: 'keys in 1- to 4-byte UTF-8: accents, CJK, Cyrillic, emoji (a surrogate pair in JS), the empty key',
    inlineCpu: true,
    dict: [['café', 1], ['日本語のキー', 'value'], ['ключ', [1, 2]], ['🚀🔥', cpu('int16', [2], 6)], ['', null], ['a\u0000b', true]],
  },
  {
    name: 'nested_values',
    about: 'values with nesting and the types msgpackr moreTypes adds',
    inlineCpu: false,
    dict: [
      ['config', { model: 'llama', layers: 32, rope: { theta: 10000.5, scaling: null }, flags: [true, false] }],
      ['typed', { $typed: 'Float32Array', hex: '0000c03f000020c1' }],
      ['bytes', { $typed: 'Uint8Array', hex: '00ff10' }],
      ['big', { $bigint: '-12345678901234567890' }],
      ['when', { $date: 1700000000123 }],
      ['tags', { $set: ['a', 'b'] }],
      ['missing', { $undefined: true }],
      ['lookup', { $map: [['x', 1], ['y', { $map: [['z', [1, 2, 3]]] }]] }],
      ['deep', [[[[[{ leaf: 'deep' }]]]]]],
      ['nan', { $num: 'NaN' }],
      ['inf', { $num: '-Infinity' }],
    ],
  },
  {
    name: 'device_indices',
    about: 'device types and indices: cuda:0, cuda:3, xpu:1, the largest index, a 16-byte type',
    inlineCpu: true,
    dict: [
      ['c0', device('float32', [4], 'cuda:0')], ['c3', device('bfloat16', [2, 8], 'cuda:3')],
      ['x1', device('int32', [3], 'xpu:1')], ['n', device('uint8', [1], 'npu:65535')],
      ['long', device('int64', [1], 'abcdefghijklmno_:2')],
    ],
  },
  {
    name: 'inline_alignment',
    about: 'odd-sized inline payloads: each starts at a multiple of 8 with zero padding',
    inlineCpu: true,
    dict: [['p1', cpu('uint8', [1], 1)], ['p3', cpu('int8', [3], 2)], ['p5', cpu('bool', [5])], ['p8', cpu('float64', [1], 4)], ['p2', cpu('float16', [1], 5)]],
  },
  {
    name: 'cpu_not_inline',
    about: 'CPU tensors described only (inlineCpu off): they go over the data channel',
    inlineCpu: false,
    dict: [['ids', cpu('int64', [4], 1)], ['mask', cpu('bool', [4])], ['n', 4]],
  },
  {
    name: 'vllm_like',
    about: 'a dict shaped like a vLLM step: ids and positions inline, KV on cuda:3, metadata values',
    inlineCpu: true,
    dict: [
      ['input_ids', cpu('int64', [1, 8], 11)],
      ['positions', cpu('int32', [8], 12)],
      ['kv_cache', device('bfloat16', [2, 4, 16, 8], 'cuda:3')],
      ['attn_metadata', { seq_lens: [5, 3], max_seq_len: 5, is_prompt: true, slot_mapping: { $typed: 'Int32Array', hex: '0100000002000000' } }],
      ['sampling', { temperature: 0.7, top_p: 0.95, seed: null }],
      ['virtual_engine', 0],
    ],
  },
];
