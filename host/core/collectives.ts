/**
 * The one collective shape every layer that moves tensors implements: the CPU group
 * (CpuGroup, host/cpu), device communicators (DeviceCommunicatorV1, host/device and plugins/*)
 * and, with vLLM's positional conveniences added, the coordinator. vLLM's cpu_communicator
 * implements the same base class as its device communicators for the same reason: the layer
 * above picks a channel once per tensor and calls one method.
 *
 * The aliasing contract, the same in every layer:
 * - A tensor passed as an input is never written.
 * - A result goes into `out` when the caller passes one (checked: dtype, size, device), else
 *   into a newly allocated tensor; the Promise resolves with that tensor.
 * - In place is `out` given as the input itself (the same memory): allowed for allReduce and
 *   broadcast. Any other overlap between `out` and the input (partial overlap, or any overlap
 *   for allGather, reduceScatter, gather and allToAll) is refused with
 *   ERR_GROUPCOMM_INVALID_ARGUMENT before anything is sent.
 * - recv's tensor argument is its destination and is written; send's is an input.
 *
 * The types and the result shapes; the implementations live in their layers, the memory
 * checks in ./alias.ts.
 */
import type { OpOptions } from '../base/deadline.js';
import type { ReduceOpSpec } from './premul.js';
import type { Tensor } from './tensor.js';

export interface OutOptions<T extends Tensor = Tensor> extends OpOptions {
  /** Where the result goes (else a new tensor). */
  out?: T;
  /**
   * The caller's view of the call when it reshapes the tensor first (the coordinator flattens,
   * and moves `dim` to 0): checked across ranks by a channel that checks calls (the CPU group's
   * frame fingerprint); others ignore it.
   */
  call?: { shape: readonly number[]; dim?: number };
}

export interface ReduceOptions<T extends Tensor = Tensor> extends OutOptions<T> {
  /** Reduction operator (default 'sum'). */
  op?: ReduceOpSpec;
}

export interface BroadcastOptions<T extends Tensor = Tensor> extends OutOptions<T> {
  /** The rank whose tensor every rank ends up with. */
  src: number;
}

export interface GatherOptions<T extends Tensor = Tensor> extends OutOptions<T> {
  /** The rank that receives the gathered tensor; the others resolve with undefined. */
  dst: number;
}

/** allGatherv's and reduceScatterv's options: dim-0 counts per rank. */
export interface SizesOptions<T extends Tensor = Tensor> extends OutOptions<T> {
  /**
   * Rows (dim-0 entries) per rank, in rank order, the same on every rank: allGatherv's rank r
   * contributes sizes[r] rows; reduceScatterv's rank r gets sizes[r] rows of the reduction.
   */
  sizes: readonly number[];
}

export interface SizesReduceOptions<T extends Tensor = Tensor> extends SizesOptions<T> {
  /** Reduction operator (default 'sum'). */
  op?: ReduceOpSpec;
}

/** allToAll with per-rank splits (torch's all_to_all_single): either side omitted means equal blocks. */
export interface AllToAllSplitsOptions<T extends Tensor = Tensor> extends OutOptions<T> {
  /** Rows of the input, in order, that go to rank 0, 1, …; must sum to the input's dim 0. */
  inputSplits?: readonly number[];
  /** Rows of the result, in order, that came from rank 0, 1, …; rank p's inputSplits[me] must equal this rank's outputSplits[p]. */
  outputSplits?: readonly number[];
}

/** Collectives and point to point over one group, on tensors of type T (ranks are group ranks). */
export interface Collectives<T extends Tensor = Tensor> {
  readonly rank: number;
  readonly worldSize: number;
  /** The elementwise reduction of every rank's `input`. In place: `out: input`. */
  allReduce(input: T, opts?: ReduceOptions<T>): Promise<T>;
  /** Every rank's `input` concatenated along dim 0 in rank order (a 0-d input gathers as [P]). */
  allGather(input: T, opts?: OutOptions<T>): Promise<T>;
  /** `input` ([P·n, …]) reduced over every rank; rank r gets block r ([n, …]). */
  reduceScatter(input: T, opts?: ReduceOptions<T>): Promise<T>;
  /** `src`'s tensor on every rank (others pass a tensor of the same dtype and shape). In place: `out: tensor`. */
  broadcast(tensor: T, opts: BroadcastOptions<T>): Promise<T>;
  /** allGather's result on `dst` only; the other ranks resolve with undefined. */
  gather(input: T, opts: GatherOptions<T>): Promise<T | undefined>;
  /** Block p of `input` ([P·n, …]) goes to rank p; block p of the result came from rank p. */
  allToAll(input: T, opts?: OutOptions<T>): Promise<T>;
  /** Sends `tensor` to `dst`; pairs in order with `dst`'s recv. */
  send(tensor: T, dst: number, opts?: OpOptions): Promise<void>;
  /** Fills `dst` (same dtype and size as what `src` sent) and resolves with it. */
  recv(dst: T, src: number, opts?: OpOptions): Promise<T>;
  /** Resolves once every rank has called it. */
  barrier(opts?: OpOptions): Promise<void>;
}

/** allGather's and gather's result shape: [P·d0, …] (a 0-d input gathers as [P]). */
export function gatheredShape(shape: readonly number[], worldSize: number): number[] {
  return shape.length === 0 ? [worldSize] : [worldSize * shape[0], ...shape.slice(1)];
}

/** reduceScatter's result shape for an input whose dim 0 divides by the world size: [d0/P, …]. */
export function scatteredShape(shape: readonly number[], worldSize: number): number[] {
  return [shape[0] / worldSize, ...shape.slice(1)];
}
