/**
 * The CPU group's argument checks (tensors, ranks, reduce ops, `out`, tags) and what a
 * collective's body reads from its group (CallContext). Every check throws synchronously, so a
 * bad call rejects before anything is queued (group.ts start()). Each error carries this rank.
 */
import { invalidArgument, isGroupcommError, withContext } from '../base/errors.js';
import { empty, isCpu, itemSize, numel, type CpuTensor, type Tensor } from '../core/tensor.js';
import { checkOutAliasing } from '../core/alias.js';
import type { OutOptions } from '../core/collectives.js';
import { reduceBytes, REDUCE_OPS, type ReduceOp } from '../core/reduce.js';
import { isPreMulSum, premulScalar, type ReduceOpSpec } from '../core/premul.js';
import type { Pipeline, Staging } from './algorithms.js';
import type { Exchange } from './exchange.js';
import type { CallShape } from './fingerprint.js';
import type { SharedSegments } from './segments.js';
import type { BinomialTree, Schedules } from './schedule.js';

/** The shape and dim a call is checked by: the caller's own view (OutOptions.call) when it gave one. */
export function callOf(x: CpuTensor, opts: OutOptions<CpuTensor> | undefined): { shape: readonly number[]; dim?: number } {
  return opts?.call ?? { shape: x.shape };
}

/** A collective's call shape (its fingerprint) and its body, run once its turn comes. */
export type Prepared<T> = [CallShape, (ex: Exchange) => Promise<T>];

/** One group's rank, size, tuning and schedules, with the checks; built once by its constructor. */
export class CallContext {
  constructor(readonly rank: number, readonly worldSize: number, readonly smallBytes: number, readonly tuning: Pipeline,
    readonly staging: Staging, readonly plans: Schedules, readonly segments?: SharedSegments) {}

  cpu(t: Tensor | undefined, what: string): CpuTensor {
    if (!t || typeof t !== 'object' || !isCpu(t) || !ArrayBuffer.isView((t as CpuTensor).data)) {
      throw invalidArgument(`${what}: expected a CPU tensor`, { rank: this.rank });
    }
    const ct = t as CpuTensor;
    const n = numel(ct.shape) * itemSize(ct.dtype);
    if (ct.data.byteLength !== n) throw invalidArgument(`${what}: shape [${ct.shape.join(', ')}] of ${ct.dtype} needs ${n} bytes, data has ${ct.data.byteLength}`, { rank: this.rank });
    return ct;
  }

  peer(r: number, what: string, allowSelf: boolean): number {
    if (!Number.isInteger(r) || r < 0 || r >= this.worldSize || (!allowSelf && r === this.rank)) {
      throw invalidArgument(`${what}: rank ${r} is not ${allowSelf ? 'a rank' : 'another rank'} of this group of ${this.worldSize}`, { rank: this.rank });
    }
    return r;
  }

  reduceOp(op: unknown): ReduceOpSpec {
    if (isPreMulSum(op)) return op;
    const o = (op ?? 'sum') as ReduceOpSpec;
    if (!REDUCE_OPS.includes(o as never)) throw invalidArgument(`unknown reduce op '${String(op)}'; expected one of ${REDUCE_OPS.join(', ')}, or premulSum(factor)`, { rank: this.rank });
    return o;
  }

  /**
   * `out` if given (checked for dtype and shape, and against the input by the aliasing rule:
   * the input itself only where `inPlace` allows it), else a new tensor.
   */
  output(out: CpuTensor | undefined, dtype: CpuTensor['dtype'], shape: number[], input: CpuTensor | undefined, what: string, inPlace = false): { t: CpuTensor; inPlace: boolean } {
    if (!out) return { t: empty(shape, dtype), inPlace: false };
    const o = this.cpu(out, `${what} out`);
    if (o.dtype !== dtype) throw invalidArgument(`${what}: out has dtype ${o.dtype}, expected ${dtype}`, { rank: this.rank });
    if (o.shape.length !== shape.length || o.shape.some((d, i) => d !== shape[i])) {
      throw invalidArgument(`${what}: out has shape [${o.shape.join(', ')}], expected [${shape.join(', ')}]`, { rank: this.rank });
    }
    return { t: o, inPlace: input !== undefined && checkOutAliasing(o, input, inPlace, what, { rank: this.rank }) };
  }

  /** The reduction of two partial results: avg and premulSum (inputs scaled first, bodies.ts) combine as sums. */
  reducer(op: ReduceOpSpec, dtype: CpuTensor['dtype']) {
    if (op === 'avg' && dtype === 'bool') throw invalidArgument('avg is not defined for bool (sum or max for "any", prod or min for "all")', { rank: this.rank });
    // Refused here (bool, an integer factor out of range), before anything is sent, naming this rank.
    if (isPreMulSum(op)) {
      try { premulScalar(dtype, op); } catch (e) { throw isGroupcommError(e) ? withContext(e, e.message, { rank: this.rank }) : e; }
    }
    const k = this.kernelOp(op);
    return (dst: Uint8Array, src: Uint8Array, a?: Uint8Array) => reduceBytes(k, dtype, dst, src, a);
  }

  /** The kernel op a reduction runs (avg and premulSum combine as sums). */
  kernelOp(op: ReduceOpSpec): ReduceOp {
    return op === 'avg' || isPreMulSum(op) ? 'sum' : op;
  }

  tree(root: number): BinomialTree {
    return this.plans.tree(root);
  }

  tagOf(tag: unknown): number {
    const t = tag ?? 0;
    if (!Number.isInteger(t) || (t as number) < 0 || (t as number) > 0xffffffff) throw invalidArgument(`tag must be an integer in [0, 2^32), got ${String(tag)}`, { rank: this.rank });
    return t as number;
  }
}
