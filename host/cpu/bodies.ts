/**
 * The CPU group's collectives, one function each (group.ts calls them through start()): the
 * synchronous checks, the call shape that is fingerprinted, and the body that runs the
 * algorithms (algorithms.ts) over the call's Exchange.
 */
import { invalidArgument } from '../base/errors.js';
import type { OpOptions } from '../base/deadline.js';
import { bytesOf, itemSize, type CpuTensor } from '../core/tensor.js';
import { checkOutAliasing } from '../core/alias.js';
import {
  gatheredShape, scatteredShape,
  type AllToAllSplitsOptions, type BroadcastOptions, type GatherOptions, type OutOptions as OutOpts, type ReduceOptions as ReduceOpts,
} from '../core/collectives.js';
import { finishAvg } from '../core/reduce.js';
import { isPreMulSum, scaleBytes } from '../core/premul.js';
import { chainBroadcast, exchangeAll, recursiveDoubling, ring, treeBroadcast } from './algorithms.js';
import type { CallShape } from './fingerprint.js';
import { callOf, type CallContext, type Prepared } from './checks.js';

type ReduceOptions = ReduceOpts<CpuTensor>;
type OutOptions = OutOpts<CpuTensor>;

/** broadcast's checks (thrown before anything is queued) and its body (group.ts broadcast). */
export function prepareBroadcast(c: CallContext, tensor: CpuTensor, opts: BroadcastOptions<CpuTensor>): Prepared<CpuTensor> {
  const x = c.cpu(tensor, 'broadcast');
  const src = c.peer(opts?.src, 'broadcast src', true);
  const { t: out, inPlace } = c.output(opts.out, x.dtype, x.shape, x, 'broadcast', true);
  return [{ collective: 'broadcast', dtype: x.dtype, root: src, ...callOf(x, opts) }, async (ex) => {
    const buf = bytesOf(out);
    // The source sends from the result tensor, so its input is only read (copied) here.
    if (c.rank === src && !inPlace) buf.set(bytesOf(x));
    if (buf.byteLength <= c.smallBytes) await treeBroadcast(ex, buf, c.tree(src));
    else await chainBroadcast(ex, buf, src, itemSize(x.dtype), c.tuning);
    return out;
  }];
}

/** allReduce's checks (thrown before anything is queued) and its body (group.ts allReduce). */
export function prepareAllReduce(c: CallContext, input: CpuTensor, opts: ReduceOptions): Prepared<CpuTensor> {
  const x = c.cpu(input, 'allReduce');
  const op = c.reduceOp(opts.op);
  const reduce = c.reducer(op, x.dtype);
  const { t: out, inPlace } = c.output(opts.out, x.dtype, x.shape, x, 'allReduce', true);
  return [{ collective: 'allReduce', dtype: x.dtype, op, ...callOf(x, opts) }, async (ex) => {
    const buf = bytesOf(out);
    // Large, every rank on this host: straight out of the shared segments (segments.ts).
    const seg = c.segments;
    if (seg?.wants(buf.byteLength) && await seg.setup(ex)) {
      await seg.allReduce(ex, {
        input: bytesOf(x), out: buf, dtype: x.dtype, itemSize: itemSize(x.dtype), op: c.kernelOp(op),
        divisor: op === 'avg' ? c.worldSize : undefined,
        scale: isPreMulSum(op) ? (d, s) => scaleBytes(x.dtype, d, s, op) : undefined,
      });
      return out;
    }
    // The algorithms reduce in place: out of place, they run on the result after a copy.
    const useRing = buf.byteLength > c.smallBytes && buf.byteLength >= c.worldSize * itemSize(x.dtype) && c.worldSize > 1;
    // premulSum: this rank's input, scaled, is its part of the sum.
    if (isPreMulSum(op)) scaleBytes(x.dtype, buf, bytesOf(x), op);
    else if (!inPlace && !useRing) buf.set(bytesOf(x));
    // Out of place, the ring reads the input where it is and writes every block of the result
    // itself: no copy of the input first (one pass over the buffer fewer).
    const input = !inPlace && !isPreMulSum(op) ? bytesOf(x) : undefined;
    if (!useRing) {
      await recursiveDoubling(ex, buf, reduce, c.staging, c.plans.recursiveDoubling());
    } else {
      await ring(ex, {
        buf, input, itemSize: itemSize(x.dtype), steps: 2 * (c.worldSize - 1), reduceSteps: c.worldSize - 1,
        shift: 0, reduce, tuning: c.tuning, staging: c.staging,
      });
    }
    if (op === 'avg') {
      await ex.flushed(); // the last forwarded segments are still being written from `buf`
      finishAvg(x.dtype, buf, c.worldSize);
    }
    return out;
  }];
}

/** allGather's checks (thrown before anything is queued) and its body (group.ts allGather). */
export function prepareAllGather(c: CallContext, input: CpuTensor, opts: OutOptions): Prepared<CpuTensor> {
  const x = c.cpu(input, 'allGather');
  const { t: out } = c.output(opts.out, x.dtype, gatheredShape(x.shape, c.worldSize), x, 'allGather');
  return [{ collective: 'allGather', dtype: x.dtype, ...callOf(x, opts) }, async (ex) => {
    const o = bytesOf(out);
    const mine = bytesOf(x);
    o.set(mine, c.rank * mine.byteLength);
    await ring(ex, {
      buf: o, itemSize: itemSize(x.dtype), steps: c.worldSize - 1, reduceSteps: 0,
      shift: 0, tuning: c.tuning, staging: c.staging,
    });
    return out;
  }];
}

/** reduceScatter's checks (thrown before anything is queued) and its body (group.ts reduceScatter). */
export function prepareReduceScatter(c: CallContext, input: CpuTensor, opts: ReduceOptions): Prepared<CpuTensor> {
  const x = c.cpu(input, 'reduceScatter');
  const op = c.reduceOp(opts.op);
  const P = c.worldSize;
  if (x.shape.length === 0 || x.shape[0] % P !== 0) {
    throw invalidArgument(`reduceScatter: dim 0 of [${x.shape.join(', ')}] must be a multiple of the world size ${P}`);
  }
  const { t: out } = c.output(opts.out, x.dtype, scatteredShape(x.shape, P), x, 'reduceScatter');
  const reduce = c.reducer(op, x.dtype);
  return [{ collective: 'reduceScatter', dtype: x.dtype, op, ...callOf(x, opts) }, async (ex) => {
    const inBytes = bytesOf(x);
    const o = bytesOf(out);
    // The ring writes into a reused work buffer, reading this rank's part from the input where
    // it is (premulSum: from its scaled copy), so the input stays intact without a copy of it.
    const work = c.staging.get(1, inBytes.byteLength);
    const pre = isPreMulSum(op);
    if (pre) scaleBytes(x.dtype, work, inBytes, op);
    else if (P === 1) work.set(inBytes);
    await ring(ex, {
      buf: work, input: pre ? undefined : inBytes, itemSize: itemSize(x.dtype), steps: P - 1, reduceSteps: P - 1,
      shift: -1, reduce, tuning: c.tuning, staging: c.staging,
    });
    o.set(work.subarray(c.rank * o.byteLength, (c.rank + 1) * o.byteLength));
    if (op === 'avg') finishAvg(x.dtype, o, P);
    return out;
  }];
}

/** gather's checks (thrown before anything is queued) and its body (group.ts gather). */
export function prepareGather(c: CallContext, input: CpuTensor, opts: GatherOptions<CpuTensor>): Prepared<CpuTensor | undefined> {
  const x = c.cpu(input, 'gather');
  const dst = c.peer(opts?.dst, 'gather dst', true);
  const mine = bytesOf(x);
  const n = mine.byteLength;
  const call: CallShape = { collective: 'gather', dtype: x.dtype, root: dst, ...callOf(x, opts) };
  if (c.rank !== dst) {
    return [call, async (ex) => {
      ex.send(dst, 0, mine);
      return undefined;
    }];
  }
  const { t: out } = c.output(opts.out, x.dtype, gatheredShape(x.shape, c.worldSize), x, 'gather');
  return [call, async (ex) => {
    const o = bytesOf(out);
    o.set(mine, c.rank * n);
    await exchangeAll(ex, undefined, (p) => o.subarray(p * n, (p + 1) * n), c.plans.directPeers());
    return out;
  }];
}

/** scatter's checks (thrown before anything is queued) and its body (group.ts scatter). */
export function prepareScatter(c: CallContext, t: CpuTensor | undefined, opts: OpOptions & { src: number; out: CpuTensor }): Prepared<CpuTensor> {
  const src = c.peer(opts?.src, 'scatter src', true);
  const out = c.cpu(opts?.out, 'scatter out');
  const o = bytesOf(out);
  const n = o.byteLength;
  const call: CallShape = { collective: 'scatter', dtype: out.dtype, root: src, shape: out.shape };
  if (c.rank !== src) {
    return [call, async (ex) => {
      await ex.recv(src, 0, o);
      return out;
    }];
  }
  const x = c.cpu(t, 'scatter');
  const want = gatheredShape(out.shape, c.worldSize);
  if (x.dtype !== out.dtype || x.shape.length !== want.length || x.shape.some((d, i) => d !== want[i])) {
    throw invalidArgument(`scatter: input is ${x.dtype}[${x.shape.join(', ')}], expected ${out.dtype}[${want.join(', ')}] for out ${out.dtype}[${out.shape.join(', ')}]`);
  }
  const input = bytesOf(x);
  checkOutAliasing(out, x, false, 'scatter', { rank: c.rank });
  return [call, async (ex) => {
    o.set(input.subarray(c.rank * n, (c.rank + 1) * n));
    await exchangeAll(ex, (p) => input.subarray(p * n, (p + 1) * n), undefined, c.plans.directPeers());
    return out;
  }];
}

/** allToAll's checks (thrown before anything is queued) and its body (group.ts allToAll). */
export function prepareAllToAll(c: CallContext, input: CpuTensor, opts: OutOptions & AllToAllSplitsOptions<CpuTensor>): Prepared<CpuTensor> {
  const x = c.cpu(input, 'allToAll');
  const P = c.worldSize;
  if (x.shape.length === 0 || x.shape[0] % P !== 0) {
    throw invalidArgument(`allToAll: dim 0 of [${x.shape.join(', ')}] must be a multiple of the world size ${P}`);
  }
  const { t: out } = c.output(opts.out, x.dtype, [...x.shape], x, 'allToAll');
  return [{ collective: 'allToAll', dtype: x.dtype, ...callOf(x, opts) }, async (ex) => {
    const inBytes = bytesOf(x);
    const o = bytesOf(out);
    const n = inBytes.byteLength / P;
    o.set(inBytes.subarray(c.rank * n, (c.rank + 1) * n), c.rank * n);
    await exchangeAll(ex, (p) => inBytes.subarray(p * n, (p + 1) * n), (p) => o.subarray(p * n, (p + 1) * n), c.plans.directPeers());
    return out;
  }];
}
