/**
 * Deterministic test inputs for the CPU group: every rank can build every other rank's input
 * from (rank, seed), so each rank computes the expected result of a collective by itself.
 *
 * Values are small integers, chosen per dtype and op so that every partial result is exact
 * (fp8 sums stay within 0..8, products are powers of two ≤ 256, …): then the order in which an
 * algorithm combines the inputs cannot change the bytes, and results compare bit for bit.
 * The expected value of a reduction is the core's own reduce applied to the inputs locally in
 * rank order: what is tested here is that the group combines exactly every rank's contribution,
 * block by block; the arithmetic of the kernels has its own tests.
 */
import { arrayClassOf, bytesOf, type CpuTensor, type DType } from '../../../host/core/tensor.js';
import { finishAvg, reduceBytes, type ReduceOp } from '../../../host/core/reduce.js';

export const ALL_DTYPES: DType[] = [
  'int8', 'uint8', 'int32', 'uint32', 'int64', 'uint64', 'float16', 'float32', 'float64',
  'bfloat16', 'float8_e4m3fn', 'float8_e5m2', 'bool', 'int16',
];
export const ALL_OPS: ReduceOp[] = ['sum', 'prod', 'min', 'max', 'avg'];

// Bits of the small non-negative integer n (exactly representable) in a narrow float format.
function narrowFloatBits(n: number, expBits: number, manBits: number): number {
  if (n === 0) return 0;
  const e = Math.floor(Math.log2(n));
  const bias = (1 << (expBits - 1)) - 1;
  const m = Math.round((n / 2 ** e - 1) * 2 ** manBits);
  return ((e + bias) << manBits) | m;
}

function encode(dtype: DType, n: number): number | bigint {
  switch (dtype) {
    case 'float16': return narrowFloatBits(n, 5, 10);
    case 'bfloat16': return narrowFloatBits(n, 8, 7);
    case 'float8_e4m3fn': return narrowFloatBits(n, 4, 3);
    case 'float8_e5m2': return narrowFloatBits(n, 5, 2);
    case 'int64': case 'uint64': return BigInt(n);
    default: return n;
  }
}

/** The value range that keeps `op` exact for `dtype` over up to 8 ranks. */
function valueOf(dtype: DType, op: ReduceOp | undefined, h: number): number {
  const fp8 = dtype.startsWith('float8');
  if (dtype === 'bool') return op === 'prod' ? (h % 7 === 0 ? 0 : 1) : h % 2;
  if (op === 'prod') return 1 + (h % 2);
  if (op === 'sum' || op === 'avg') return fp8 ? h % 2 : h % 9;
  return fp8 ? h % 9 : h % 100;
}

export function input(dtype: DType, op: ReduceOp | undefined, rank: number, seed: number, count: number, shape = [count]): CpuTensor {
  const C = arrayClassOf(dtype);
  const data = new C(count);
  for (let i = 0; i < count; i++) {
    const h = ((i * 7919 + rank * 104729 + seed * 31337) >>> 0) % 1000003;
    (data as unknown as (number | bigint)[])[i] = encode(dtype, valueOf(dtype, op, h)) as never;
  }
  return { dtype, shape, device: 'cpu', data };
}

/** The reduction of every rank's input, computed locally with the core's kernels. */
export function expectedReduce(dtype: DType, op: ReduceOp, worldSize: number, seed: number, count: number): Uint8Array {
  const acc = bytesOf(input(dtype, op, 0, seed, count)).slice();
  for (let r = 1; r < worldSize; r++) {
    reduceBytes(op === 'avg' ? 'sum' : op, dtype, acc, bytesOf(input(dtype, op, r, seed, count)));
  }
  if (op === 'avg') finishAvg(dtype, acc, worldSize);
  return acc;
}

export function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.byteLength === b.byteLength && Buffer.compare(Buffer.from(a.buffer, a.byteOffset, a.byteLength), Buffer.from(b.buffer, b.byteOffset, b.byteLength)) === 0;
}
