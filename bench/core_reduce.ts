/**
 * Reduce-sum throughput of the WebAssembly core against a plain TypeScript loop, in one run:
 * float32, bfloat16 and int32 at 4 KiB, 1 MiB and 64 MiB (quick: 4 KiB and 1 MiB).
 *   wasm         reduceAt on buffers that live in core memory (no copies)
 *   wasm-copy    reduceBytes on host Uint8Arrays (copied through the core's scratch region)
 *   ts-baseline  a straightforward TypedArray loop (bfloat16: bits -> f32, add, round to
 *                nearest even back to bits)
 * gbps = bytes of one input / median time. Before timing, every impl runs on the same inputs
 * and its result is compared with ts-baseline's: mismatching elements go to the row's `wrong`.
 */
import { median, type Report } from './report.js';
import { allocCoreBuffer, reduceAt, reduceBytes, type CoreBuffer } from '../host/core/reduce.js';
import type { DType } from '../host/core/dtype.js';

type BenchDType = 'float32' | 'bfloat16' | 'int32';

const KiB = 1024;
const MiB = 1024 * KiB;

// Scratch for the bfloat16 baseline's bit casts.
const castU32 = new Uint32Array(1);
const castF32 = new Float32Array(castU32.buffer);

// The baseline: one monomorphic loop per dtype, on views created once (what a careful
// TypeScript implementation would do).
function tsSumF32(a: Float32Array, b: Float32Array): void {
  for (let i = 0; i < a.length; i++) a[i] += b[i];
}

function tsSumI32(a: Int32Array, b: Int32Array): void {
  for (let i = 0; i < a.length; i++) a[i] = (a[i] + b[i]) | 0;
}

function tsSumBf16(a: Uint16Array, b: Uint16Array): void {
  const u = castU32;
  const f = castF32;
  for (let i = 0; i < a.length; i++) {
    u[0] = a[i] << 16;
    const x = f[0];
    u[0] = b[i] << 16;
    f[0] = x + f[0];
    const bits = u[0];
    a[i] = (bits & 0x7fffffff) > 0x7f800000 ? 0x7fc0 : (bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16;
  }
}

/** A closure that sums src into dst with the plain TypeScript loop for dtype. */
function tsSum(dtype: BenchDType, dst: Uint8Array, src: Uint8Array): () => void {
  if (dtype === 'float32') {
    const a = new Float32Array(dst.buffer, dst.byteOffset, dst.byteLength >> 2);
    const b = new Float32Array(src.buffer, src.byteOffset, src.byteLength >> 2);
    return () => tsSumF32(a, b);
  }
  if (dtype === 'int32') {
    const a = new Int32Array(dst.buffer, dst.byteOffset, dst.byteLength >> 2);
    const b = new Int32Array(src.buffer, src.byteOffset, src.byteLength >> 2);
    return () => tsSumI32(a, b);
  }
  const a = new Uint16Array(dst.buffer, dst.byteOffset, dst.byteLength >> 1);
  const b = new Uint16Array(src.buffer, src.byteOffset, src.byteLength >> 1);
  return () => tsSumBf16(a, b);
}

/** Well-behaved inputs (no NaN/Inf, no subnormals) so that repeated sums stay ordinary. */
function fill(dtype: BenchDType, out: Uint8Array, seed: number): void {
  let s = seed >>> 0;
  const next = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32);
  if (dtype === 'float32') {
    const a = new Float32Array(out.buffer, out.byteOffset, out.byteLength >> 2);
    for (let i = 0; i < a.length; i++) a[i] = next() - 0.5;
  } else if (dtype === 'int32') {
    const a = new Int32Array(out.buffer, out.byteOffset, out.byteLength >> 2);
    for (let i = 0; i < a.length; i++) a[i] = (next() * 2 ** 32) | 0;
  } else {
    const a = new Uint16Array(out.buffer, out.byteOffset, out.byteLength >> 1);
    castF32[0] = 0;
    for (let i = 0; i < a.length; i++) {
      castF32[0] = next() - 0.5;
      a[i] = castU32[0] >>> 16;
    }
  }
}

function countWrong(dtype: BenchDType, got: Uint8Array, want: Uint8Array): number {
  const size = dtype === 'bfloat16' ? 2 : 4;
  let wrong = 0;
  for (let i = 0; i < got.length; i += size) {
    for (let b = 0; b < size; b++) {
      if (got[i + b] !== want[i + b]) { wrong++; break; }
    }
  }
  return wrong;
}

/**
 * Median µs per call of fn over `samples` timed batches of `inner` calls, after a warm-up of
 * at least 3 batches and 100 ms, so that both engines' optimizing tiers (V8 TurboFan, JSC OMG)
 * have compiled the code being timed.
 */
function time(fn: () => void, samples: number, inner: number): number {
  const warmUntil = performance.now() + 100;
  for (let i = 0; i < 3 || performance.now() < warmUntil; i++) for (let j = 0; j < inner; j++) fn();
  const ts: number[] = [];
  for (let s = 0; s < samples; s++) {
    const t0 = performance.now();
    for (let j = 0; j < inner; j++) fn();
    ts.push(((performance.now() - t0) * 1000) / inner);
  }
  return median(ts);
}

/**
 * Runs every impl of every dtype on small buffers for a while before anything is timed: the
 * engines compile hot code in tiers (JSC needed more than the per-case warm-up to reach its
 * optimizing wasm tier), and the first case measured should not pay for that.
 */
function prewarm(dtypes: BenchDType[]): void {
  const size = 64 * KiB;
  const a = new Uint8Array(size);
  const b = new Uint8Array(size);
  const ca = allocCoreBuffer(size);
  const cb = allocCoreBuffer(size);
  try {
    const until = performance.now() + 300;
    while (performance.now() < until) {
      for (const dtype of dtypes) {
        fill(dtype, a, 3);
        fill(dtype, b, 4);
        const count = size / (dtype === 'bfloat16' ? 2 : 4);
        for (let i = 0; i < 20; i++) {
          reduceAt('sum', dtype, ca.ptr, cb.ptr, count);
          reduceBytes('sum', dtype, a, b);
        }
        tsSum(dtype, a, b)();
      }
    }
  } finally {
    ca.free();
    cb.free();
  }
}

export async function runReduce(report: Report, opts: { quick?: boolean } = {}): Promise<void> {
  const sizes = opts.quick ? [4 * KiB, MiB] : [4 * KiB, MiB, 64 * MiB];
  const dtypes: BenchDType[] = ['float32', 'bfloat16', 'int32'];
  report.section('reduce sum: WebAssembly core vs a plain TypeScript loop');
  // The widest cells before the first row, so the columns line up from the start.
  const big = sizes[sizes.length - 1];
  const widest = [{ name: 'reduce_sum', impl: 'ts-baseline', dtype: 'bfloat16', size_bytes: big, count: big / 2, median_us: big / 200, gbps: 99.999, wrong: 0 }];
  prewarm(dtypes);
  for (const size of sizes) {
    // Host inputs, core buffers: allocated and touched once per size (first-touch page faults
    // are very slow on this machine), reused for every dtype.
    const hostA = new Uint8Array(size);
    const hostB = new Uint8Array(size);
    const initA = new Uint8Array(size);
    const coreA: CoreBuffer = allocCoreBuffer(size);
    const coreB: CoreBuffer = allocCoreBuffer(size);
    try {
      for (const dtype of dtypes) {
        fill(dtype, initA, 1);
        fill(dtype, hostB, 2);
        coreB.view().set(hostB);
        // Correctness first: all impls from the same inputs, compared with the TS loop.
        const want = initA.slice();
        tsSum(dtype, want, hostB)();
        hostA.set(initA);
        reduceBytes('sum', dtype as DType, hostA, hostB);
        const wrongCopy = countWrong(dtype, hostA, want);
        coreA.view().set(initA);
        reduceAt('sum', dtype as DType, coreA.ptr, coreB.ptr, size / (dtype === 'bfloat16' ? 2 : 4));
        const wrongWasm = countWrong(dtype, coreA.view(), want);

        const count = size / (dtype === 'bfloat16' ? 2 : 4);
        // About 64 MiB of input per sample batch for small sizes; fewer samples when quick.
        const inner = Math.max(1, Math.floor((opts.quick ? 8 * MiB : 32 * MiB) / size));
        const samples = size >= 64 * MiB ? (opts.quick ? 3 : 5) : opts.quick ? 7 : 15;
        const ptrA = coreA.ptr;
        const ptrB = coreB.ptr;
        const cases: Array<[string, () => void, number]> = [
          ['wasm', () => reduceAt('sum', dtype, ptrA, ptrB, count), wrongWasm],
          ['wasm-copy', () => reduceBytes('sum', dtype, hostA, hostB), wrongCopy],
          ['ts-baseline', tsSum(dtype, hostA, hostB), 0],
        ];
        for (const [impl, fn, wrong] of cases) {
          // Restart from the same values so that no impl sums into overflowed data.
          hostA.set(initA);
          coreA.view().set(initA);
          const us = time(fn, samples, inner);
          report.add({
            name: 'reduce_sum', impl, dtype, op: 'sum', size_bytes: size, count,
            median_us: us, gbps: size / us / 1e3, wrong,
          }, widest);
        }
      }
    } finally {
      coreA.free();
      coreB.free();
    }
  }
}
