/**
 * Element-wise reductions in the WebAssembly core: `dst = op(dst, src)`, for every dtype.
 *
 * Two ways in:
 * - `reduceBytes(op, dtype, dst, src)`: host bytes. They are copied through one reused scratch
 *   region in core memory, in chunks of at most CHUNK_BYTES, so core memory stays small and
 *   nothing is allocated per call once the region exists.
 * - `allocCoreBuffer(sizeBytes)` + `reduceAt(op, dtype, dstPtr, srcPtr, count)`: for callers
 *   that keep their buffers in core memory (receive straight into `view()`), no copy at all.
 *
 * avg = sum, then `finishAvg` (or `finishAvgAt`) once on the final result: the kernels reduce
 * avg exactly like sum, so partial results combine like partial sums.
 *
 * reduceBytes takes any host bytes except views of core memory itself (growing the scratch
 * region may detach them; such callers use reduceAt). reduceAt regions must be equal (in place)
 * or disjoint.
 *
 * Semantics (assembly/reduce.ts has the details):
 * - integers wrap around (two's complement); integer avg truncates toward zero;
 * - floats are IEEE with round-to-nearest-even; min/max propagate NaN and order -0 < +0
 *   (torch.minimum / torch.maximum); float16, bfloat16, float8 are computed in f32 and rounded
 *   back once (correctly rounded); NaN results are written as a canonical quiet NaN;
 * - float8_e4m3fn has no infinity: overflow becomes NaN (torch's convention);
 * - bool: sum/max = logical or, prod/min = logical and, results are 0/1; avg is refused.
 */
import { coreConstantTable, getCore, Scratch, type CoreExports } from './loader.js';
import { dtypeInfo, type DType } from './dtype.js';
import { invalidArgument } from '../base/errors.js';

export type ReduceOp = 'sum' | 'prod' | 'min' | 'max' | 'avg';

/** Every reduce op, for argument checks and messages. */
export const REDUCE_OPS: readonly ReduceOp[] = Object.freeze(['sum', 'prod', 'min', 'max', 'avg']);

/** ncclRedOp_t values, read from the core (REDUCE_SUM, …). */
export const REDUCE_OP_CODES: Readonly<Record<ReduceOp, number>> = coreConstantTable({
  sum: 'REDUCE_SUM', prod: 'REDUCE_PROD', max: 'REDUCE_MAX', min: 'REDUCE_MIN', avg: 'REDUCE_AVG',
});

/**
 * Largest piece reduceBytes copies into core memory at once (per operand). 256 KiB keeps both
 * operands of a piece in L2 between the copy in, the kernel and the copy out; it measured
 * faster than 1 MiB pieces here, and the call overhead per piece is well under a microsecond.
 */
export const CHUNK_BYTES = 1 << 18;

let core: CoreExports | undefined;
const k = (): CoreExports => (core ??= getCore().exports);

// The core's op and result codes as plain fields, read once: the hot path compares against
// them on every call (REDUCE_OP_CODES reads through getters).
let codes: { ops: Record<string, number>; ok: number; errOp: number; errDtype: number; errDivisor: number } | undefined;
function codesOf() {
  if (codes) return codes;
  const c = getCore().consts;
  return (codes = { ops: { ...REDUCE_OP_CODES }, ok: c.REDUCE_OK, errOp: c.REDUCE_ERR_OP, errDtype: c.REDUCE_ERR_DTYPE, errDivisor: c.REDUCE_ERR_DIVISOR });
}

function opCode(op: ReduceOp): number {
  const ops = codesOf().ops;
  const c = typeof op === 'string' && Object.hasOwn(ops, op) ? ops[op] : undefined;
  if (c === undefined) {
    throw invalidArgument(`unknown reduce op '${String(op)}'; expected one of sum, prod, min, max, avg`);
  }
  return c;
}

function dtypeOf(dtype: DType, op?: ReduceOp): { code: number; itemSize: number } {
  const info = typeof dtype === 'string' ? dtypeInfo(dtype) : undefined;
  if (!info) throw invalidArgument(`unknown dtype '${String(dtype)}'`);
  if (op === 'avg' && dtype === 'bool') throw invalidArgument(`avg is not defined for bool (use sum or max for "any", prod or min for "all")`);
  return info;
}

function check(rc: number, what: string): void {
  const c = codesOf();
  if (rc === c.ok) return;
  if (rc === c.errOp) throw invalidArgument(`${what}: the core refused the op`);
  if (rc === c.errDtype) throw invalidArgument(`${what}: the core refused the dtype`);
  if (rc === c.errDivisor) throw invalidArgument(`${what}: divisor must be >= 1`);
  throw invalidArgument(`${what}: core error ${rc}`);
}

function checkRange(ptr: number, bytes: number, what: string): void {
  const limit = getCore().memory.buffer.byteLength;
  if (!Number.isInteger(ptr) || ptr <= 0 || ptr + bytes > limit) {
    throw invalidArgument(`${what}: [${ptr}, ${ptr + bytes}) is not inside core memory (${limit} bytes)`);
  }
}

const scratch = new Scratch();

/**
 * dst = op(dst, src), element-wise, on host bytes. dst and src must have the same length, a
 * multiple of the dtype's item size; any byte offset is fine. avg reduces like sum.
 * With `a`: dst = op(a, src) (same length; may be dst itself), at no extra cost — both operands
 * pass through the scratch region anyway, so a caller keeps its input and needs no copy of it.
 */
export function reduceBytes(op: ReduceOp, dtype: DType, dst: Uint8Array, src: Uint8Array, a: Uint8Array = dst): void {
  const code = opCode(op);
  const { code: dt, itemSize } = dtypeOf(dtype, op);
  const total = dst.byteLength;
  if (src.byteLength !== total || a.byteLength !== total) {
    throw invalidArgument(`reduce ${op}/${dtype}: dst has ${total} bytes but src has ${src.byteLength}${a === dst ? '' : ` and a ${a.byteLength}`}`);
  }
  if (total % itemSize !== 0) {
    throw invalidArgument(`reduce ${op}/${dtype}: ${total} bytes is not a whole number of ${itemSize}-byte elements`);
  }
  if (total === 0) return;
  // Whole elements per chunk; the chunk size is a multiple of every item size.
  const chunk = Math.min(total, CHUNK_BYTES);
  const base = scratch.ensure(2 * chunk);
  if (dst.byteLength !== total || src.byteLength !== total || a.byteLength !== total) {
    throw invalidArgument(`reduce ${op}/${dtype}: an operand was a view of core memory and was detached when it grew; use allocCoreBuffer + reduceAt`);
  }
  const x = k();
  const core = getCore();
  if (total === chunk) {
    // One piece: no subarrays on the way in (the common small-message case).
    const u8 = core.u8();
    u8.set(a, base);
    u8.set(src, base + chunk);
    check(x.reduce(code, dt, base, base + chunk, total / itemSize), `reduce ${op}/${dtype}`);
    dst.set(core.u8().subarray(base, base + total));
    return;
  }
  for (let off = 0; off < total; off += chunk) {
    const len = Math.min(chunk, total - off);
    const u8 = core.u8();
    u8.set(a.subarray(off, off + len), base);
    u8.set(src.subarray(off, off + len), base + chunk);
    check(x.reduce(code, dt, base, base + chunk, len / itemSize), `reduce ${op}/${dtype}`);
    dst.set(core.u8().subarray(base, base + len), off);
  }
}

/**
 * dst = op(srcs[0], srcs[1], …) element-wise, left to right (the order a chain of reduceBytes
 * calls in that order gives, so the bytes are the same), in one pass over dst: each piece of
 * every input is copied into core memory once, reduced there into an accumulator, and the
 * result copied out once. With `divisor` (avg), the result is divided by it before it leaves
 * (finishAvg's rounding). dst may be one of the inputs (equal, not partly overlapping). The
 * CPU group's shared-memory allReduce reduces its slice of every rank's segment with it.
 */
export function reduceMany(op: ReduceOp, dtype: DType, dst: Uint8Array, srcs: readonly Uint8Array[], divisor?: number): void {
  const code = opCode(op);
  const { code: dt, itemSize } = dtypeOf(dtype, op);
  const total = dst.byteLength;
  if (srcs.length === 0) throw invalidArgument(`reduceMany ${op}/${dtype}: no inputs`);
  for (const s of srcs) {
    if (s.byteLength !== total) throw invalidArgument(`reduceMany ${op}/${dtype}: dst has ${total} bytes but an input has ${s.byteLength}`);
  }
  if (total % itemSize !== 0) {
    throw invalidArgument(`reduceMany ${op}/${dtype}: ${total} bytes is not a whole number of ${itemSize}-byte elements`);
  }
  if (divisor !== undefined) checkDivisor(divisor);
  if (total === 0) return;
  const chunk = Math.min(total, CHUNK_BYTES);
  const base = scratch.ensure(2 * chunk);
  const x = k();
  const core = getCore();
  for (let off = 0; off < total; off += chunk) {
    const len = Math.min(chunk, total - off);
    const n = len / itemSize;
    const u8 = core.u8();
    u8.set(srcs[0].subarray(off, off + len), base);
    for (let i = 1; i < srcs.length; i++) {
      u8.set(srcs[i].subarray(off, off + len), base + chunk);
      check(x.reduce(code, dt, base, base + chunk, n), `reduce ${op}/${dtype}`);
    }
    if (divisor !== undefined) check(x.reduceDivide(dt, base, n, divisor), `avg ${dtype}`);
    dst.set(u8.subarray(base, base + len), off);
  }
}

/** The last step of avg: every element of buf divided by worldSize (see the header). */
export function finishAvg(dtype: DType, buf: Uint8Array, worldSize: number): void {
  const { code: dt, itemSize } = dtypeOf(dtype, 'avg');
  checkDivisor(worldSize);
  const total = buf.byteLength;
  if (total % itemSize !== 0) {
    throw invalidArgument(`avg ${dtype}: ${total} bytes is not a whole number of ${itemSize}-byte elements`);
  }
  if (total === 0) return;
  const chunk = Math.min(total, CHUNK_BYTES);
  const base = scratch.ensure(chunk);
  if (buf.byteLength !== total) {
    throw invalidArgument(`avg ${dtype}: buf was a view of core memory and was detached when it grew; use finishAvgAt`);
  }
  const core = getCore();
  for (let off = 0; off < total; off += chunk) {
    const len = Math.min(chunk, total - off);
    core.u8().set(buf.subarray(off, off + len), base);
    check(k().reduceDivide(dt, base, len / itemSize, worldSize), `avg ${dtype}`);
    buf.set(core.u8().subarray(base, base + len), off);
  }
}

function checkDivisor(worldSize: number): void {
  if (!Number.isInteger(worldSize) || worldSize < 1 || worldSize > 0x7fffffff) {
    throw invalidArgument(`avg: worldSize must be an integer >= 1, got ${worldSize}`);
  }
}

/** A region of core memory owned by the caller. */
export interface CoreBuffer {
  /** Byte address in core memory; stable for the buffer's life. */
  readonly ptr: number;
  readonly sizeBytes: number;
  /** A fresh Uint8Array over the region (core memory may have grown since the last call). */
  view(): Uint8Array;
  /** Releases the region; idempotent. The buffer must not be used afterwards. */
  free(): void;
}

/** Allocates `sizeBytes` of core memory, 16-byte aligned. */
export function allocCoreBuffer(sizeBytes: number): CoreBuffer {
  if (!Number.isInteger(sizeBytes) || sizeBytes < 0 || sizeBytes > 0x7fff_0000) {
    throw invalidArgument(`allocCoreBuffer: sizeBytes must be an integer in [0, 2^31), got ${sizeBytes}`);
  }
  const core = getCore();
  // Zero-sized buffers still get a real address so that ptr is always valid.
  let ptr = core.alloc(Math.max(sizeBytes, 16));
  const size = sizeBytes;
  return {
    get ptr() { return ptr; },
    sizeBytes: size,
    view() {
      if (ptr === 0) throw invalidArgument('CoreBuffer used after free()');
      return new Uint8Array(core.memory.buffer, ptr, size);
    },
    free() {
      if (ptr !== 0) core.free(ptr);
      ptr = 0;
    },
  };
}

/**
 * dst = op(dst, src) for `count` elements at core addresses (from CoreBuffer.ptr, plus byte
 * offsets). The regions must be equal or disjoint. avg reduces like sum.
 */
export function reduceAt(op: ReduceOp, dtype: DType, dstPtr: number, srcPtr: number, count: number): void {
  const code = opCode(op);
  const { code: dt, itemSize } = dtypeOf(dtype, op);
  if (!Number.isInteger(count) || count < 0) throw invalidArgument(`reduceAt: count must be an integer >= 0, got ${count}`);
  if (count === 0) return;
  const bytes = count * itemSize;
  checkRange(dstPtr, bytes, 'reduceAt dst');
  checkRange(srcPtr, bytes, 'reduceAt src');
  if (dstPtr !== srcPtr && dstPtr < srcPtr + bytes && srcPtr < dstPtr + bytes) {
    throw invalidArgument(`reduceAt: dst [${dstPtr}, ${dstPtr + bytes}) and src [${srcPtr}, ${srcPtr + bytes}) overlap; use equal or disjoint regions`);
  }
  check(k().reduce(code, dt, dstPtr, srcPtr, count), `reduce ${op}/${dtype}`);
}

/** finishAvg for `count` elements at a core address. */
export function finishAvgAt(dtype: DType, ptr: number, count: number, worldSize: number): void {
  const { code: dt, itemSize } = dtypeOf(dtype, 'avg');
  checkDivisor(worldSize);
  if (!Number.isInteger(count) || count < 0) throw invalidArgument(`finishAvgAt: count must be an integer >= 0, got ${count}`);
  if (count === 0) return;
  checkRange(ptr, count * itemSize, 'finishAvgAt');
  check(k().reduceDivide(dt, ptr, count, worldSize), `avg ${dtype}`);
}
