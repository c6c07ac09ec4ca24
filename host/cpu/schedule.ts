/**
 * One group's schedules and segment plans, computed by the WebAssembly core (host/core/layout.ts)
 * and kept for the group's life: the algorithms in algorithms.ts only look them up, so who
 * talks to whom, and how a buffer is cut into frames, has one implementation (the core's).
 *
 * Per group: ring neighbours, the ring's block per step (per shift), the recursive-doubling and
 * dissemination partners, the direct-exchange order; per root: the binomial tree and the chain;
 * per (bytes, itemSize): the segment plan of the ring (parts = P) and of the chain (parts = 1),
 * in a small map that is cleared when it fills (a workload of many sizes recomputes; a loop
 * over the same sizes never does). Plans of more than 4096 segments are not kept (at most
 * 64 KiB each, so a group's cache stays within a few MiB).
 */
import {
  binomialTree, chainNeighbors, directPeers, disseminationPartners, recursiveDoubling, ringBlocks,
  ringNeighbors, segmentPlan, type BinomialTree, type RecursiveDoublingPlan, type SegmentPlan,
} from '../core/layout.js';

export type { BinomialTree, RecursiveDoublingPlan, SegmentPlan };

/** Segment plans kept per group and kind (ring / chain); the map is cleared beyond this. */
const MAX_PLANS = 64;
/** Larger plans (a tiny chunkBytes on a big tensor) are computed per operation, not kept. */
const MAX_KEPT_SEGMENTS = 1 << 12;

export class Schedules {
  private ringNb: { next: number; prev: number } | undefined;
  private blocks = new Map<number, Int32Array>();
  private rd: RecursiveDoublingPlan | undefined;
  private barrier: { sendTo: Int32Array; recvFrom: Int32Array } | undefined;
  private direct: { sendTo: Int32Array; recvFrom: Int32Array } | undefined;
  private trees = new Map<number, BinomialTree>();
  private chains = new Map<number, { prev: number; next: number }>();
  private ringPlans = new Map<number, SegmentPlan>();
  private chainPlans = new Map<number, SegmentPlan>();

  constructor(readonly rank: number, readonly worldSize: number, readonly chunkBytes: number) {}

  ring(): { next: number; prev: number } {
    return (this.ringNb ??= ringNeighbors(this.rank, this.worldSize));
  }

  /** Block sent at step s is entry s; the block received at step s is entry s + 1 (2P - 1 entries). */
  ringBlocks(shift: number): Int32Array {
    let b = this.blocks.get(shift);
    if (!b) this.blocks.set(shift, (b = ringBlocks(this.rank, this.worldSize, shift, 2 * this.worldSize - 1)));
    return b;
  }

  tree(root: number): BinomialTree {
    let t = this.trees.get(root);
    if (!t) this.trees.set(root, (t = binomialTree(this.rank, root, this.worldSize)));
    return t;
  }

  chain(root: number): { prev: number; next: number } {
    let c = this.chains.get(root);
    if (!c) this.chains.set(root, (c = chainNeighbors(this.rank, root, this.worldSize)));
    return c;
  }

  recursiveDoubling(): RecursiveDoublingPlan {
    return (this.rd ??= recursiveDoubling(this.rank, this.worldSize));
  }

  dissemination(): { sendTo: Int32Array; recvFrom: Int32Array } {
    return (this.barrier ??= disseminationPartners(this.rank, this.worldSize));
  }

  directPeers(): { sendTo: Int32Array; recvFrom: Int32Array } {
    return (this.direct ??= directPeers(this.rank, this.worldSize));
  }

  /** The ring's segments of a `bytes`-byte buffer: P blocks, K segments each. */
  ringSegments(bytes: number, itemSize: number): SegmentPlan {
    return this.plan(this.ringPlans, bytes, itemSize, this.worldSize);
  }

  /** The chain's segments of a `bytes`-byte buffer: one block of K segments. */
  chainSegments(bytes: number, itemSize: number): SegmentPlan {
    return this.plan(this.chainPlans, bytes, itemSize, 1);
  }

  private plan(cache: Map<number, SegmentPlan>, bytes: number, itemSize: number, parts: number): SegmentPlan {
    // itemSize is 1, 2, 4 or 8, so bytes·16 + itemSize names the pair (exact below 2^49 bytes).
    const key = bytes * 16 + itemSize;
    let p = cache.get(key);
    if (!p) {
      p = segmentPlan(bytes / itemSize, parts, itemSize, this.chunkBytes);
      if (p.offsets.length > MAX_KEPT_SEGMENTS) return p;
      if (cache.size >= MAX_PLANS) cache.clear();
      cache.set(key, p);
    }
    return p;
  }
}
