/**
 * The coordinator's variable-size collectives: allGatherv / reduceScatterv along any dim with
 * per-rank sizes (vLLM's all_gatherv / reduce_scatterv), and allToAll with per-rank splits
 * along dim 0 (torch's all_to_all_single; vLLM's expert-parallel dispatch / combine).
 *
 * They run on the CPU group's dim-0 versions (host/cpu/variable.ts). A tensor split at dim d is
 * `outer × S[d] × inner`; seen as `[S[d], outer·inner]` its bytes are one contiguous block per
 * rank, so the CPU group gathers them rank-major and one variable block transpose (below) puts
 * them in `outer`-major order — nothing to do when outer is 1 (dim 0, or leading dims of 1).
 * reduceScatterv does the inverse move before reducing.
 *
 * Device tensors use the device communicator's optional allGatherv / reduceScatterv / allToAllv
 * when it has them and no transpose is needed (outer 1); otherwise they go through host memory
 * over the CPU group (a copy each way).
 *
 * Sizes are checked on every rank against the caller's tensor, and across ranks by the CPU
 * group (each peer's view travels with its data; a disagreement fails naming both ranks).
 * This rank's checks run when the coordinator method is called, before the call is queued
 * (tensors.ts says why).
 */
import { invalidArgument } from '../base/errors.js';
import { checkOutAliasing } from '../core/alias.js';
import { bytesOf, empty, fromBytes, isCpu, itemSize, numel, type CpuTensor, type Tensor } from '../core/tensor.js';
import { counts } from '../cpu/variable.js';
import { checkReduce } from '../device/elementwise.js';
import { normDim, outerCount } from './dims.js';
import type { GroupIo } from './io.js';
import type { CoordinatorOutOptions, CoordinatorReduceOptions, CoordinatorSplitOptions } from './types.js';
import { isPreMulSum } from '../core/premul.js';
import type { Run } from './queue.js';

/** Every rank's `tensor` (sizes[r] along `dim` on rank r) concatenated along `dim` in group-rank order. */
export function allGatherv(io: GroupIo, t: Tensor, sizes: readonly number[] | undefined, dim: number, opts: CoordinatorOutOptions): Run<Tensor> {
  const what = 'allGatherv';
  io.channel(t, what);
  const d = normDim(dim, t.shape.length, what);
  const sz = sizesFor(io, t, sizes, d, what);
  const shape = withDim(t.shape, d, sum(sz));
  const out = io.output(opts.out, shape, t, what);
  if (out) checkOutAliasing(out, t, false, what);
  const outer = outerCount(t.shape, d);
  const rest = inner(t.shape, d);
  return async (b) => {
    const cpu = io.net?.cpu;
    if (!cpu) return single(io, t, out, shape);
    const comm = io.net?.comm;
    if (!isCpu(t) && comm?.allGatherv && outer === 1) {
      const r = await comm.allGatherv(rows(t, sz[io.rankInGroup], rest), { sizes: sz, out: out && rows(out, sum(sz), rest), ...b.next() });
      return out ?? { ...r, shape };
    }
    const x = onHost(io, t);
    const staged = await cpu.allGatherv(rows(x, sz[io.rankInGroup], outer * rest), { sizes: sz, ...b.next() });
    return deliver(io, t, out, shape, (dst) => interleave(bytesOf(staged), dst, sz, outer, rest * itemSize(t.dtype)));
  };
}

/** The reduction of every rank's `tensor` (Σ sizes along `dim`); rank r keeps its sizes[r] along `dim`. */
export function reduceScatterv(io: GroupIo, t: Tensor, sizes: readonly number[] | undefined, dim: number, opts: CoordinatorReduceOptions): Run<Tensor> {
  const what = 'reduceScatterv';
  io.channel(t, what);
  if (t.shape.length === 0) throw invalidArgument(`${what}: cannot scatter a 0-d tensor`);
  checkReduce(t.dtype, opts.op ?? 'sum');
  const d = normDim(dim, t.shape.length, what);
  const sz = sizes === undefined ? equalSplit(t.shape[d], io.worldSize, what, d) : counts(sizes, io.worldSize, `${what} sizes`);
  if (sum(sz) !== t.shape[d]) {
    throw invalidArgument(`${what}: dim ${d} has size ${t.shape[d]}, the sizes [${sz.join(', ')}] add up to ${sum(sz)}`, { rank: io.rankInGroup });
  }
  const shape = withDim(t.shape, d, sz[io.rankInGroup]);
  const out = io.output(opts.out, shape, t, what);
  if (out) checkOutAliasing(out, t, false, what);
  const outer = outerCount(t.shape, d);
  const rest = inner(t.shape, d);
  return async (b) => {
    const cpu = io.net?.cpu;
    if (!cpu) return single(io, t, out, shape, opts.op);
    const comm = io.net?.comm;
    // premulSum on a backend without it: through host memory over the CPU group, which has it.
    if (!isCpu(t) && comm?.reduceScatterv && outer === 1 && (!isPreMulSum(opts.op) || io.backend?.capabilities.premulSum)) {
      const r = await comm.reduceScatterv(rows(t, sum(sz), rest), { sizes: sz, op: opts.op, out: out && rows(out, sz[io.rankInGroup], rest), ...b.next() });
      return out ?? { ...r, shape };
    }
    let x = onHost(io, t);
    if (outer > 1) {
      const rm = empty([numel(t.shape)], t.dtype);
      deinterleave(bytesOf(x), bytesOf(rm), sz, outer, rest * itemSize(t.dtype));
      x = rm;
    }
    const r = await cpu.reduceScatterv(rows(x, sum(sz), outer * rest), { sizes: sz, op: opts.op, ...b.next() });
    return deliver(io, t, out, shape, (dst) => dst.set(bytesOf(r)));
  };
}

/** Rows of `tensor` (dim 0) to each rank by `inputSplits`; the result holds what each rank sent here, by `outputSplits`. */
export function allToAll(io: GroupIo, t: Tensor, opts: CoordinatorSplitOptions): Run<Tensor> {
  const what = 'allToAll';
  io.channel(t, what);
  if (t.shape.length === 0) throw invalidArgument(`${what}: a 0-d tensor has no rows to split`);
  const P = io.worldSize;
  const ins = opts.inputSplits === undefined ? equalSplit(t.shape[0], P, `${what} input`, 0) : counts(opts.inputSplits, P, `${what} inputSplits`);
  const outs = opts.outputSplits === undefined ? equalSplit(t.shape[0], P, `${what} output`, 0) : counts(opts.outputSplits, P, `${what} outputSplits`);
  if (sum(ins) !== t.shape[0]) throw invalidArgument(`${what}: dim 0 has ${t.shape[0]} rows, inputSplits add up to ${sum(ins)}`, { rank: io.rankInGroup });
  const shape = withDim(t.shape, 0, sum(outs));
  const out = io.output(opts.out, shape, t, what);
  if (out) checkOutAliasing(out, t, false, what);
  if (!io.net?.cpu && ins[0] !== outs[0]) throw invalidArgument(`${what}: a group of one sends itself ${ins[0]} rows but expects ${outs[0]}`);
  return async (b) => {
    const cpu = io.net?.cpu;
    if (!cpu) return single(io, t, out, shape);
    const rowElems = inner(t.shape, 0);
    const comm = io.net?.comm;
    if (!isCpu(t) && comm?.allToAllv) {
      const r = await comm.allToAllv(rows(t, t.shape[0], rowElems), { inputSplits: ins, outputSplits: outs, out: out && rows(out, sum(outs), rowElems), ...b.next() });
      return out ?? { ...r, shape };
    }
    const x = onHost(io, t);
    const r = await cpu.allToAll(rows(x, t.shape[0], rowElems), { inputSplits: ins, outputSplits: outs, ...b.next() });
    return deliver(io, t, out, shape, (dst) => dst.set(bytesOf(r)));
  };
}

// ---- helpers ---------------------------------------------------------------------------------------

const sum = (a: readonly number[]): number => a.reduce((x, y) => x + y, 0);
/** Elements after dim `d` (a 0-d tensor counts as [1]). */
const inner = (shape: readonly number[], d: number): number => shape.slice(d + 1).reduce((a, c) => a * c, 1);

function withDim(shape: readonly number[], d: number, n: number): number[] {
  const s = shape.length === 0 ? [1] : [...shape];
  s[d] = n;
  return s;
}

function equalSplit(n: number, P: number, what: string, d: number): number[] {
  if (n % P !== 0) throw invalidArgument(`${what}: dim ${d} has size ${n}, not divisible by the world size ${P}; pass the sizes`);
  return Array.from({ length: P }, () => n / P);
}

/** allGatherv's sizes: given (checked against this rank's tensor) or, like vLLM without sizes, equal. */
function sizesFor(io: GroupIo, t: Tensor, sizes: readonly number[] | undefined, d: number, what: string): number[] {
  const mine = t.shape.length === 0 ? 1 : t.shape[d];
  if (sizes === undefined) return Array.from({ length: io.worldSize }, () => mine);
  const sz = counts(sizes, io.worldSize, `${what} sizes`);
  if (sz[io.rankInGroup] !== mine) {
    throw invalidArgument(`${what}: group rank ${io.rankInGroup}'s tensor has ${mine} along dim ${d}, sizes[${io.rankInGroup}] says ${sz[io.rankInGroup]}`, { rank: io.rankInGroup });
  }
  return sz;
}

/** The same memory seen as `[n, rowElems]` (the CPU group and device communicators count rows along dim 0). */
function rows<T extends Tensor>(x: T, n: number, rowElems: number): T {
  return { ...x, shape: [n, rowElems] };
}

/** A CPU tensor with `t`'s elements: `t` itself on the CPU, a host copy of a device tensor. */
function onHost(io: GroupIo, t: Tensor): CpuTensor {
  if (isCpu(t)) return t;
  const h = empty([numel(t.shape)], t.dtype);
  io.copyInto(h, t);
  return h;
}

/** Writes the result's bytes (by `fill`) into `out` or a new tensor of `t`'s kind, on `t`'s device. */
function deliver(io: GroupIo, t: Tensor, out: Tensor | undefined, shape: number[], fill: (dst: Uint8Array) => void): Tensor {
  if (isCpu(t) && (!out || isCpu(out))) {
    const dst = (out as CpuTensor | undefined) ?? empty(shape, t.dtype);
    fill(bytesOf(dst));
    return dst;
  }
  const host = new Uint8Array(numel(shape) * itemSize(t.dtype));
  fill(host);
  const dst = out ?? io.allocLike(shape, t);
  io.copyInto(dst, fromBytes(host, t.dtype, shape));
  return dst;
}

/** A group of one: the result is a copy of the input (after the same checks as a real group). */
async function single(io: GroupIo, t: Tensor, out: Tensor | undefined, shape: number[], op?: CoordinatorReduceOptions['op']): Promise<Tensor> {
  const r = op === undefined
    ? await io.local.allGather(t, {})
    : await io.local.reduceScatter(t, { op });
  if (out) { io.copyInto(out, r); io.free(r); return out; }
  return { ...r, shape };
}

/** Rank-major blocks `(r: outer × sizes[r] × inner)` → `(outer, Σ sizes, inner)`; `inner` in bytes. */
export function interleave(src: Uint8Array, dst: Uint8Array, sizes: readonly number[], outer: number, inner: number): void {
  if (outer === 1) { dst.set(src); return; }
  const total = sum(sizes) * inner;
  let from = 0;
  let col = 0;
  for (const s of sizes) {
    const n = s * inner;
    for (let o = 0; o < outer; o++) dst.set(src.subarray(from + o * n, from + (o + 1) * n), o * total + col);
    from += outer * n;
    col += n;
  }
}

/** The inverse of interleave: `(outer, Σ sizes, inner)` → rank-major blocks. */
export function deinterleave(src: Uint8Array, dst: Uint8Array, sizes: readonly number[], outer: number, inner: number): void {
  if (outer === 1) { dst.set(src); return; }
  const total = sum(sizes) * inner;
  let to = 0;
  let col = 0;
  for (const s of sizes) {
    const n = s * inner;
    for (let o = 0; o < outer; o++) dst.set(src.subarray(o * total + col, o * total + col + n), to + o * n);
    to += outer * n;
    col += n;
  }
}
