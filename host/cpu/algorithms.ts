/**
 * The collective algorithms, written against one operation's Exchange. All of them work on raw
 * bytes; element boundaries come in as `itemSize`, and reductions as a callback into the core.
 * Who talks to whom and how a buffer is cut into frames come from the core too, through the
 * group's Schedules (schedule.ts): nothing here computes a schedule or a segment itself.
 *
 * Large messages: a pipelined ring (every block split into segments, `window` segments of the
 * first step in flight, each later segment sent as soon as the one it depends on arrived).
 * Small messages: recursive doubling (allReduce), binomial tree (broadcast), dissemination
 * (barrier), direct exchange (gather, scatter, allToAll).
 */
import type { Exchange } from './exchange.js';
import type { Sink } from './mesh.js';
import { protocolError } from '../base/errors.js';
import type { BinomialTree, RecursiveDoublingPlan, Schedules } from './schedule.js';

/** dst = op(a, src) element-wise; `a` defaults to dst (in place). */
export type ReduceFn = (dst: Uint8Array, src: Uint8Array, a?: Uint8Array) => void;

export interface Tuning {
  /** Bytes per pipelined segment. */
  chunkBytes: number;
  /** Segments of the first ring step in flight at once. */
  window: number;
}

/** What the pipelined algorithms get from their group: its tuning and its schedules. */
export interface Pipeline extends Tuning {
  /** Schedules and segment plans from the core, for this group and chunkBytes. */
  plans: Schedules;
}

/** Staging memory reused by every operation of a group (grow-only). */
export class Staging {
  private bufs: Uint8Array[] = [];
  get(i: number, size: number): Uint8Array {
    const b = this.bufs[i];
    if (b && b.byteLength >= size) return b.subarray(0, size);
    // Zero-filled on purpose: the pages get touched now, once, not on the hot path later.
    const n = new Uint8Array(Math.max(size, b ? b.byteLength * 2 : 0));
    this.bufs[i] = n;
    return n.subarray(0, size);
  }
}

export interface RingSpec {
  buf: Uint8Array;
  itemSize: number;
  /** Total steps, and how many of the first ones reduce (the rest copy). */
  steps: number;
  reduceSteps: number;
  /** Block sent at step s is (rank - s + shift) mod P (Schedules.ringBlocks). */
  shift: number;
  reduce?: ReduceFn;
  /**
   * This rank's contribution when it is not already in `buf` (out of place): step 0 sends its
   * block from here and each reduce step combines the received segment with this block's part
   * of `input`, writing into `buf`. No copy of the input into `buf` is then needed: every block
   * of `buf` is written by the ring (reduced once, or received in a copy step). Only where the
   * ring writes every block it later reads: allReduce's 2(P−1) steps, and reduceScatter, whose
   * caller keeps only its own block (the last one reduced).
   */
  input?: Uint8Array;
  tuning: Pipeline;
  staging: Staging;
}

/**
 * The pipelined ring: at step s every rank sends one block to rank+1 and receives one from
 * rank-1. Reduce steps add the received segment into the local block (reduce-scatter); copy
 * steps receive straight into place (all-gather). A segment is forwarded the moment it is
 * complete, so all steps overlap; only the first step is paced by the window.
 *
 * Sending straight from `buf` is safe: a segment is overwritten only by data that went around
 * the ring after the peer had received our copy, i.e. after the kernel took our bytes.
 */
export async function ring(ex: Exchange, spec: RingSpec): Promise<void> {
  if (ex.size === 1 || spec.steps === 0) return;
  const plans = spec.tuning.plans;
  const { segments: K, offsets, lengths } = plans.ringSegments(spec.buf.byteLength, spec.itemSize);
  const seg = (b: number, k: number, from = spec.buf) => {
    const i = b * K + k;
    return from.subarray(offsets[i], offsets[i] + lengths[i]);
  };
  const input = spec.input ?? spec.buf;
  const { next: right, prev: left } = plans.ring();
  const blocks = plans.ringBlocks(spec.shift);
  const sendBlock = (s: number) => blocks[s];
  const recvBlock = (s: number) => blocks[s + 1];
  const total = spec.steps * K;
  const W = Math.max(1, spec.tuning.window);

  let received = 0;
  let resolveDone!: () => void;
  const done = new Promise<void>((res) => (resolveDone = res));
  const sink: Sink = {
    dest(slot, length) {
      const s = Math.floor(slot / K);
      const k = slot % K;
      if (s >= spec.steps) throw protocolError(`ring frame for step ${s} of ${spec.steps}`, { peerRank: left });
      if (s < spec.reduceSteps) return spec.staging.get(0, length);
      return seg(recvBlock(s), k);
    },
    // A reduce step's segment still in the peer's shared-memory ring is reduced straight from
    // there, one copy fewer than receiving it into staging first (docs/cpu-group.md).
    consume(slot, src) {
      if (Math.floor(slot / K) >= spec.reduceSteps) return false;
      arrived(slot, src);
      return true;
    },
    done: arrived,
    fail(e) {
      ex.fail(e);
    },
  };
  function arrived(slot: number, data: Uint8Array): void {
    const s = Math.floor(slot / K);
    const k = slot % K;
    const target = seg(recvBlock(s), k);
    if (s < spec.reduceSteps) {
      if (target.byteLength !== data.byteLength) throw protocolError(`ring segment of ${data.byteLength} bytes, expected ${target.byteLength}`, { peerRank: left });
      // A block is received at most once in the reduce steps, so its local part is still the input's.
      spec.reduce!(target, data, seg(recvBlock(s), k, input));
    }
    if (s + 1 < spec.steps) ex.send(right, (s + 1) * K + k, target);
    if (s === 0 && k + W < K) ex.send(right, k + W, seg(sendBlock(0), k + W, input));
    if (++received === total) resolveDone();
  }
  ex.stream(left, total, sink);
  for (let k = 0; k < Math.min(W, K); k++) ex.send(right, k, seg(sendBlock(0), k, input));
  await Promise.race([done, ex.failed()]);
}

/** Broadcast along a chain rooted at `root`, segment by segment (large messages). */
export async function chainBroadcast(ex: Exchange, buf: Uint8Array, root: number, itemSize: number, tuning: Pipeline): Promise<void> {
  const { segments: K, offsets, lengths } = tuning.plans.chainSegments(buf.byteLength, itemSize);
  const seg = (k: number) => buf.subarray(offsets[k], offsets[k] + lengths[k]);
  const { prev, next } = tuning.plans.chain(root);
  if (prev < 0) {
    if (next >= 0) for (let k = 0; k < K; k++) ex.send(next, k, seg(k));
    return;
  }
  let received = 0;
  let resolveDone!: () => void;
  const done = new Promise<void>((res) => (resolveDone = res));
  ex.stream(prev, K, {
    dest: (slot) => seg(slot),
    done: (slot) => {
      if (next >= 0) ex.send(next, slot, seg(slot));
      if (++received === K) resolveDone();
    },
    fail: (e) => ex.fail(e),
  });
  await Promise.race([done, ex.failed()]);
}

/** Binomial-tree broadcast (small messages): ceil(log2 P) rounds of whole-buffer messages. */
export async function treeBroadcast(ex: Exchange, buf: Uint8Array, tree: BinomialTree): Promise<void> {
  if (tree.parent >= 0) await ex.recv(tree.parent, 0, buf);
  for (const child of tree.children) ex.send(child, 0, buf);
}

/**
 * Recursive doubling allReduce (small messages): log2 P exchanges of the whole buffer. Ranks
 * beyond the largest power of two first fold into a partner and get the result at the end
 * (the plan comes from the core's layout). Both partners of an exchange combine the same two
 * values, so every rank ends with identical bytes.
 */
export async function recursiveDoubling(ex: Exchange, buf: Uint8Array, reduce: ReduceFn, staging: Staging, plan: RecursiveDoublingPlan): Promise<void> {
  const FOLD = 0xfffffffe;
  const RESULT = 0xffffffff;
  if (plan.isExtra) {
    ex.send(plan.foldPartner, FOLD, buf, true);
    await ex.recv(plan.foldPartner, RESULT, buf);
    return;
  }
  if (plan.foldPartner >= 0) reduce(buf, await ex.recv(plan.foldPartner, FOLD, staging.get(0, buf.byteLength)));
  for (let step = 0; step < plan.partners.length; step++) {
    const partner = plan.partners[step];
    // Copied: `buf` changes right after, while the write may still be queued.
    ex.send(partner, step, buf, true);
    reduce(buf, await ex.recv(partner, step, staging.get(0, buf.byteLength)));
  }
  if (plan.foldPartner >= 0) ex.send(plan.foldPartner, RESULT, buf);
}

/** Dissemination barrier: ceil(log2 P) rounds of empty frames. */
export async function dissemination(ex: Exchange, partners: { sendTo: Int32Array; recvFrom: Int32Array }): Promise<void> {
  const empty = new Uint8Array(0);
  for (let k = 0; k < partners.sendTo.length; k++) {
    ex.send(partners.sendTo[k], k, empty);
    await ex.recv(partners.recvFrom[k], k, empty);
  }
}

/**
 * Every rank sends `sendPart(peer)` to every peer and receives into `recvPart(peer)`, all in
 * flight at once (allToAll, and gather/scatter with one side empty). Peers are visited in the
 * core's order (rank+1, rank+2, … for sends) so that not everyone sends to the same rank first.
 */
export async function exchangeAll(
  ex: Exchange,
  sendPart: ((peer: number) => Uint8Array) | undefined,
  recvPart: ((peer: number) => Uint8Array) | undefined,
  peers: { sendTo: Int32Array; recvFrom: Int32Array },
): Promise<void> {
  const waits: Promise<Uint8Array>[] = [];
  if (recvPart) for (const from of peers.recvFrom) waits.push(ex.recv(from, 0, recvPart(from)));
  if (sendPart) for (const to of peers.sendTo) ex.send(to, 0, sendPart(to));
  await Promise.all(waits);
}
