/**
 * The channel of a group of one rank: every collective is a local copy, under the same
 * aliasing contract as the CPU group and device communicators (a new tensor, or `out`; in place
 * only for allReduce and broadcast), so the coordinator picks a channel once per tensor and
 * has no world-size-1 branch in any collective.
 */
import type { OpOptions } from '../base/deadline.js';
import { invalidArgument } from '../base/errors.js';
import { checkOutAliasing } from '../core/alias.js';
import {
  gatheredShape, type BroadcastOptions, type Collectives, type GatherOptions, type OutOptions, type ReduceOptions,
} from '../core/collectives.js';
import { numel, type DType, type Tensor } from '../core/tensor.js';
import { checkReduce } from '../device/elementwise.js';
import { isPreMulSum, type PreMulSum } from '../core/premul.js';

export interface LocalIo {
  /** A new tensor on `device`. */
  empty(shape: number[], dtype: DType, device: string): Tensor;
  /** Copies src's bytes into dst (same byte size). */
  copy(dst: Tensor, src: Tensor): void;
  /** Multiplies t's elements by premulSum's scalar, in place (a sum over one rank of scaled inputs). */
  scale(t: Tensor, op: PreMulSum): void;
}

export class LocalChannel implements Collectives<Tensor> {
  readonly rank = 0;
  readonly worldSize = 1;
  constructor(private readonly io: LocalIo) {}

  /** The result: `out` (checked: dtype, elements, aliasing) or a new tensor, holding a copy of `input`. */
  private result(input: Tensor, out: Tensor | undefined, shape: number[], inPlace: boolean, what: string): Tensor {
    if (out === undefined) {
      const t = this.io.empty(shape, input.dtype, input.device);
      this.io.copy(t, input);
      return t;
    }
    if (out.dtype !== input.dtype || numel(out.shape) !== numel(shape) || out.device !== input.device) {
      throw invalidArgument(`${what}: out must hold ${numel(shape)} × ${input.dtype} on ${input.device}, got [${out.shape.join(', ')}] ${out.dtype} on ${out.device}`);
    }
    if (!checkOutAliasing(out, input, inPlace, what)) this.io.copy(out, input);
    return out;
  }

  async allReduce(input: Tensor, opts: ReduceOptions = {}): Promise<Tensor> {
    const op = opts.op ?? 'sum';
    checkReduce(input.dtype, op);
    return this.scaled(this.result(input, opts.out, input.shape, true, 'allReduce'), op);
  }

  async allGather(input: Tensor, opts: OutOptions = {}): Promise<Tensor> {
    return this.result(input, opts.out, gatheredShape(input.shape, 1), false, 'allGather');
  }

  async reduceScatter(input: Tensor, opts: ReduceOptions = {}): Promise<Tensor> {
    const op = opts.op ?? 'sum';
    checkReduce(input.dtype, op);
    return this.scaled(this.result(input, opts.out, input.shape, false, 'reduceScatter'), op);
  }

  /** A sum of one rank's scaled input is that input scaled (premulSum); every other op leaves one input as it is. */
  private scaled(t: Tensor, op: ReduceOptions['op']): Tensor {
    if (isPreMulSum(op)) this.io.scale(t, op);
    return t;
  }

  async broadcast(tensor: Tensor, opts: BroadcastOptions): Promise<Tensor> {
    return this.result(tensor, opts.out, tensor.shape, true, 'broadcast');
  }

  async gather(input: Tensor, opts: GatherOptions): Promise<Tensor | undefined> {
    return this.result(input, opts.out, gatheredShape(input.shape, 1), false, 'gather');
  }

  async allToAll(input: Tensor, opts: OutOptions = {}): Promise<Tensor> {
    return this.result(input, opts.out, input.shape, false, 'allToAll');
  }

  async send(_tensor: Tensor, _dst: number, _opts?: OpOptions): Promise<void> {
    throw invalidArgument('send: a group of one rank has no peer');
  }

  async recv(_dst: Tensor, _src: number, _opts?: OpOptions): Promise<Tensor> {
    throw invalidArgument('recv: a group of one rank has no peer');
  }

  async barrier(_opts?: OpOptions): Promise<void> {}
}
