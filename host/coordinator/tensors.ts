/**
 * The coordinator's tensor collectives. Each picks its channel once (io.channel: the CPU group,
 * the device communicator, or the local channel of a group of one) and calls the one collective
 * shape they share (host/core/collectives.ts). Collectives along a dim other than 0 reorder
 * blocks around the channel's rank-major (dim 0) operation.
 *
 * Each runs its checks of the caller's arguments when it is called and returns what runs in the
 * queue: a call refused on one rank takes no collective number there (queue.ts), so the group
 * stays in step when the caller mends the arguments and calls again.
 */
import { numel, type DType, type Tensor } from '../core/tensor.js';
import { checkReduce } from '../device/elementwise.js';
import { checkOutAliasing } from '../core/alias.js';
import { checkRank } from './ops.js';
import { catShape, normDim, outerCount, scatterShape } from './dims.js';
import type { GroupIo } from './io.js';
import { checkDeviceCall } from './check.js';
import type { CoordinatorOutOptions, CoordinatorReduceOptions } from './types.js';
import { isPreMulSum } from '../core/premul.js';
import { invalidArgument } from '../base/errors.js';
import type { Collectives } from '../core/collectives.js';
import type { Run } from './queue.js';

export function broadcast(io: GroupIo, tensor: Tensor, src: number, opts: CoordinatorOutOptions): Run<Tensor> {
  checkRank(src, io.worldSize, 'broadcast', 'src');
  const ch = io.channel(tensor, 'broadcast');
  const out = io.output(opts.out, tensor.shape, tensor, 'broadcast');
  if (out) checkOutAliasing(out, tensor, true, 'broadcast');
  return async (b) => {
    await checkDeviceCall(io, ch, { collective: 'broadcast', dtype: tensor.dtype, root: src, shape: tensor.shape }, b);
    return ch.broadcast(tensor, { src, out, ...b.next() });
  };
}

/**
 * The op exists for the dtype (checked here too, so that an unknown op is refused before the call
 * is queued); premulSum on the device communicator needs the backend to say it has it
 * (capabilities.premulSum).
 */
function checkOp(io: GroupIo, ch: Collectives<Tensor>, dtype: DType, op: CoordinatorReduceOptions['op'], what: string): void {
  checkReduce(dtype, op ?? 'sum');
  if (isPreMulSum(op) && ch === io.net?.comm && !io.backend?.capabilities.premulSum) {
    throw invalidArgument(`${what}: premulSum on ${io.device} needs a backend with capabilities.premulSum; '${io.backend?.name}' has none (CPU tensors take it)`);
  }
}

export function allReduce(io: GroupIo, tensor: Tensor, opts: CoordinatorReduceOptions): Run<Tensor> {
  const ch = io.channel(tensor, 'allReduce');
  checkOp(io, ch, tensor.dtype, opts.op, 'allReduce');
  const out = io.output(opts.out, tensor.shape, tensor, 'allReduce');
  if (out) checkOutAliasing(out, tensor, true, 'allReduce');
  return async (b) => {
    await checkDeviceCall(io, ch, { collective: 'allReduce', dtype: tensor.dtype, op: opts.op ?? 'sum', shape: tensor.shape }, b);
    return ch.allReduce(tensor, { op: opts.op, out, ...b.next() });
  };
}

export function allGather(io: GroupIo, tensor: Tensor, dim: number, opts: CoordinatorOutOptions): Run<Tensor> {
  const ch = io.channel(tensor, 'allGather');
  const d = normDim(dim, tensor.shape.length, 'allGather');
  const shape = catShape(tensor.shape, d, io.worldSize);
  const out = io.output(opts.out, shape, tensor, 'allGather');
  const outer = outerCount(tensor.shape, d);
  if (out) checkOutAliasing(out, tensor, false, 'allGather');
  // What every rank's call is checked by (the channel sees a flat tensor).
  const call = { shape: tensor.shape, dim: d };
  return async (b) => {
    await checkDeviceCall(io, ch, { collective: 'allGather', dtype: tensor.dtype, ...call }, b);
    // The channels gather rank-major (dim 0); other dims need one block transpose after.
    if (outer === 1) return shaped(await ch.allGather(flat(tensor), { out: out && flat(out), call, ...b.next() }), out, shape);
    const stage = await ch.allGather(flat(tensor), { call, ...b.next() });
    return io.reordered(stage, out, shape, tensor, io.worldSize, outer);
  };
}

export function gather(io: GroupIo, tensor: Tensor, dst: number, dim: number, opts: CoordinatorOutOptions): Run<Tensor | undefined> {
  checkRank(dst, io.worldSize, 'gather', 'dst');
  const ch = io.channel(tensor, 'gather');
  const d = normDim(dim, tensor.shape.length, 'gather');
  const shape = catShape(tensor.shape, d, io.worldSize);
  const out = io.rankInGroup === dst ? io.output(opts.out, shape, tensor, 'gather') : undefined;
  const outer = outerCount(tensor.shape, d);
  if (out) checkOutAliasing(out, tensor, false, 'gather');
  const call = { shape: tensor.shape, dim: d };
  return async (b) => {
    await checkDeviceCall(io, ch, { collective: 'gather', dtype: tensor.dtype, root: dst, ...call }, b);
    if (outer === 1) {
      const r = await ch.gather(flat(tensor), { dst, out: out && flat(out), call, ...b.next() });
      return r && shaped(r, out, shape);
    }
    const stage = await ch.gather(flat(tensor), { dst, call, ...b.next() });
    return stage && io.reordered(stage, out, shape, tensor, io.worldSize, outer);
  };
}

export function reduceScatter(io: GroupIo, tensor: Tensor, dim: number, opts: CoordinatorReduceOptions): Run<Tensor> {
  const ch = io.channel(tensor, 'reduceScatter');
  checkOp(io, ch, tensor.dtype, opts.op, 'reduceScatter');
  const d = normDim(dim, tensor.shape.length, 'reduceScatter');
  const shape = scatterShape(tensor.shape, d, io.worldSize, 'reduceScatter');
  const out = io.output(opts.out, shape, tensor, 'reduceScatter');
  const outer = outerCount(tensor.shape, d);
  if (out) checkOutAliasing(out, tensor, false, 'reduceScatter');
  const call = { shape: tensor.shape, dim: d };
  return async (b) => {
    await checkDeviceCall(io, ch, { collective: 'reduceScatter', dtype: tensor.dtype, op: opts.op ?? 'sum', ...call }, b);
    if (outer === 1) return shaped(await ch.reduceScatter(flat(tensor), { op: opts.op, out: out && flat(out), call, ...b.next() }), out, shape);
    // (outer, ws, block) → (ws, outer, block): each rank's slice becomes one contiguous block.
    const src = io.allocLike(tensor.shape, tensor);
    try {
      io.reorder(tensor, src, outer, io.worldSize);
      return shaped(await ch.reduceScatter(flat(src), { op: opts.op, out: out && flat(out), call, ...b.next() }), out, shape);
    } finally {
      io.free(src);
    }
  };
}

/** The same memory seen as a 1-d tensor (the layers below work on element counts). */
function flat(t: Tensor): Tensor {
  return { dtype: t.dtype, shape: [numel(t.shape)], device: t.device, data: t.data };
}

/** The caller's `out`, or the channel's new (flat) result seen in the collective's shape. */
function shaped(r: Tensor, out: Tensor | undefined, shape: number[]): Tensor {
  return out ?? { dtype: r.dtype, shape: [...shape], device: r.device, data: r.data };
}
