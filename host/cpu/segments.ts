/**
 * The shared-segment allReduce (docs/cpu-group.md, "Shared-segment allReduce"): when every rank
 * of a group of 3 to 8 is on this host, a large allReduce skips the ring and reduces straight
 * out of the other ranks' memory. Each rank owns one shared segment (a Segment of shm.ts, named,
 * owned and reclaimed by its rules) of BUFFERS buffers of `chunkBytes`, and maps every peer's
 * once, on the group's first such allReduce; the mappings are reused by every later one.
 *
 * Per chunk of the tensor, on every rank:
 *   write    copy (premulSum: scale) the input's chunk into its own buffer;
 *   reduce   once every peer has written it: reduce ITS slice of the chunk out of all P
 *            buffers in one pass (core reduceMany; avg divides there), into its own buffer;
 *   copy out once every peer has reduced its slice: copy slice p of rank p's buffer out.
 * One copy in, one reduce pass, one copy out, against the ring's copy into and out of a
 * ring per step. Each slice is reduced by one rank, in rank order, so every rank gets the same
 * bytes (the same a chain of reduceBytes calls in rank order gives).
 *
 * Step t of the loop reduces chunk t−1, writes chunk t, signals STEP(t), then copies chunk t−2
 * out. One signal per step says all a peer needs (see allReduce()); the copy out comes after it,
 * off the critical path, which is why there are 4 buffers: chunk t reuses chunk t−4's, which
 * every peer copied out before its STEP(t−1). Signals are empty frames of the operation's
 * Exchange (the fingerprint in every tag still catches a mismatched call; STEP(0) carries the
 * byte count to catch a size mismatch), so timeouts name the ranks not heard from, and aborts
 * and a lost peer fail the wait like any other.
 *
 * Setup (one round of offers, one of answers, inside the first such allReduce): each rank offers
 * its host id and segment name ('' when it uses TCP only or could not create one); every rank
 * maps every peer's and answers whether it could; only if every answer is yes do all use the
 * path from then on, else all fall back to the ring for the group's life (every rank decides
 * from the same answers). Each owner then unlinks its name: nothing stays in /dev/shm. A failed
 * shared-segment allReduce turns the path off on this rank (a peer may still read its buffers
 * for that operation); a peer that still takes it then fails with a size mismatch, not garbage.
 */
import { invalidArgument, mismatchError } from '../base/errors.js';
import type { Logger } from '../base/log.js';
import type { DType } from '../core/dtype.js';
import { reduceMany, type ReduceOp } from '../core/reduce.js';
import type { Exchange } from './exchange.js';
import { hostId, Segment } from './shm.js';

/** Buffers per segment: chunk t is written while t−1 is reduced and t−2, t−3 may still be copied out. */
const BUFFERS = 4;
/** Bytes of segments a rank maps at most (its own and every peer's); the chunk shrinks to fit. */
export const MAX_MAPPED_BYTES = 24 << 20;
/** Groups of fewer ranks keep the ring (measured: no gain at 2 ranks). */
export const MIN_RANKS = 3;
/**
 * Groups of more ranks keep the ring: every rank signals every peer per chunk (P² small frames
 * per chunk in all) and connects every pair, and the chunk shrinks with P.
 */
export const MAX_RANKS = 8;
const OFFER = 0xfffffff0;
const ANSWER = 0xfffffff1;
const EMPTY = new Uint8Array(0);

export interface SegmentOptions {
  rank: number;
  worldSize: number;
  /** allReduce from this many bytes takes the path (0: never). */
  minBytes: number;
  chunkBytes: number;
  /** False when this rank uses TCP only (it then offers nothing, and the group keeps the ring). */
  shm: boolean;
  log: Logger;
}

/** One allReduce: input and result bytes (may be the same memory), the kernel op and the extras. */
export interface SegmentReduce {
  input: Uint8Array;
  out: Uint8Array;
  dtype: DType;
  itemSize: number;
  /** The kernel's op (avg and premulSum reduce as sum). */
  op: ReduceOp;
  /** avg: divide each reduced slice by this. */
  divisor?: number;
  /** premulSum: writes the scaled input chunk into the segment instead of a copy. */
  scale?: (dst: Uint8Array, src: Uint8Array) => void;
}

/** The chunk a group of `worldSize` uses: `chunkBytes`, lowered so P segments fit MAX_MAPPED_BYTES. */
export function segmentChunkBytes(chunkBytes: number, worldSize: number): number {
  const cap = Math.floor(MAX_MAPPED_BYTES / (BUFFERS * Math.max(1, worldSize)));
  return Math.max(4096, Math.min(chunkBytes, cap)) & ~63;
}

export class SharedSegments {
  private state: 'unknown' | 'on' | 'off';
  /** Every rank's segment data (this rank's own at its index), once set up. */
  private views: Uint8Array[] = [];
  private segs: Segment[] = [];
  private busy = 0;
  /** The buffer the next operation's first chunk goes to (the same on every rank). */
  private next = 0;
  private closed = false;
  readonly chunkBytes: number;

  constructor(private readonly o: SegmentOptions) {
    this.chunkBytes = segmentChunkBytes(o.chunkBytes, o.worldSize);
    this.state = o.worldSize >= MIN_RANKS && o.worldSize <= MAX_RANKS && o.minBytes > 0 ? 'unknown' : 'off';
  }

  /** Whether an allReduce of `bytes` goes this way (once setup agrees; see setup()). */
  wants(bytes: number): boolean {
    return this.state !== 'off' && !this.closed && bytes >= this.o.minBytes;
  }

  /** 'on' once every rank mapped every segment (tests and the bench). */
  get active(): boolean {
    return this.state === 'on';
  }

  /**
   * Runs the setup rounds the first time (every rank of the group reaches it in the same
   * allReduce: the same size threshold) and says whether the path is on.
   */
  async setup(ex: Exchange): Promise<boolean> {
    if (this.state !== 'unknown') return this.state === 'on';
    const { rank, worldSize: P, log } = this.o;
    const peers = [...Array(P - 1).keys()].map((i) => (rank + 1 + i) % P);
    const size = BUFFERS * this.chunkBytes;
    let own: Segment | undefined;
    const mapped: Segment[] = [];
    this.busy++;
    try {
      if (this.o.shm) {
        try { own = Segment.create(size); } catch (e) { log.debug(`shared-segment allReduce off: ${(e as Error).message}`); }
      }
      const host = own ? hostId() : '';
      const offer = new TextEncoder().encode(`${host}\n${this.chunkBytes}\n${own?.name ?? ''}`);
      for (const p of peers) ex.send(p, OFFER, offer, true);
      const offers = await Promise.all(peers.map((p) => ex.recv(p, OFFER)));
      let ok = own !== undefined && host !== '';
      const views: Uint8Array[] = new Array(P);
      for (let i = 0; ok && i < peers.length; i++) {
        const [h, c, name] = new TextDecoder().decode(offers[i]).split('\n');
        if (h !== host || Number(c) !== this.chunkBytes || !name) { ok = false; break; }
        try {
          const s = Segment.open(name, size, false, `${size} bytes`, (n) => n === size);
          mapped.push(s);
          views[peers[i]] = s.ring;
        } catch (e) {
          log.debug(`shared-segment allReduce off: rank ${peers[i]}'s segment: ${(e as Error).message}`);
          ok = false;
        }
      }
      const answer = new Uint8Array([ok ? 1 : 0]);
      for (const p of peers) ex.send(p, ANSWER, answer, true);
      const answers = await Promise.all(peers.map((p) => ex.recv(p, ANSWER, new Uint8Array(1))));
      // Every peer has mapped our segment or given up: the name can go.
      own?.unlink();
      if (ok && answers.every((a) => a[0] === 1)) {
        views[rank] = own!.ring;
        this.views = views;
        this.segs = [own!, ...mapped];
        this.state = 'on';
        log.debug(`shared-segment allReduce on (${BUFFERS} × ${this.chunkBytes} bytes per rank)`);
        return true;
      }
    } catch (e) {
      this.state = 'off';
      own?.close();
      for (const s of mapped) s.close();
      throw e;
    } finally {
      this.busy--;
      if (this.closed && this.busy === 0) this.unmap();
    }
    this.state = 'off';
    own?.close();
    for (const s of mapped) s.close();
    return false;
  }

  /** The allReduce itself (setup() said yes). */
  async allReduce(ex: Exchange, r: SegmentReduce): Promise<void> {
    const { rank, worldSize: P } = this.o;
    const peers = [...Array(P - 1).keys()].map((i) => (rank + 1 + i) % P);
    const s = r.itemSize;
    const C = this.chunkBytes;
    const per = Math.floor(C / s); // elements per chunk
    if (per < 1) throw invalidArgument(`allReduce: ${s}-byte elements do not fit a ${C}-byte chunk`, { rank });
    const E = r.input.byteLength / s;
    const K = Math.ceil(E / per);
    const views = this.views;
    const own = views[rank];
    const first = this.next;
    const count = (k: number) => Math.min(per, E - k * per);
    const buffer = (k: number) => ((first + k) % BUFFERS) * C;
    // Slice p of chunk k: elements [lo(n, p), lo(n, p + 1)) of its n.
    const lo = (n: number, p: number) => Math.floor((n * p) / P);
    const sizes = peers.map(() => new Float64Array(1));
    const wait = async (t: number) => {
      if (t > 0) return Promise.all(peers.map((p) => ex.recv(p, t, EMPTY)));
      // STEP(0) carries the byte count: a peer that called another size is named.
      await Promise.all(peers.map((p, i) => ex.recv(p, 0, new Uint8Array(sizes[i].buffer))));
      sizes.forEach((v, i) => {
        if (v[0] !== r.input.byteLength) {
          throw mismatchError(`rank ${rank}: allReduce of ${r.input.byteLength} bytes here, ${v[0]} on rank ${peers[i]}: the ranks called different sizes`,
            { rank, peerRank: peers[i] });
        }
      });
    };
    const signal = (t: number) => {
      const payload = t === 0 ? new Uint8Array(new Float64Array([r.input.byteLength]).buffer) : EMPTY;
      for (const p of peers) ex.send(p, t, payload);
    };
    const write = (k: number) => {
      const off = k * per * s;
      const dst = own.subarray(buffer(k), buffer(k) + count(k) * s);
      const src = r.input.subarray(off, off + count(k) * s);
      if (r.scale) r.scale(dst, src);
      else dst.set(src);
    };
    const reduce = (k: number) => {
      const n = count(k);
      const a = buffer(k) + lo(n, rank) * s;
      const b = buffer(k) + lo(n, rank + 1) * s;
      reduceMany(r.op, r.dtype, own.subarray(a, b), views.map((v) => v.subarray(a, b)), r.divisor);
      // This rank's own slice goes out now, while it is still in cache (copyOut skips it).
      r.out.set(own.subarray(a, b), k * per * s + lo(n, rank) * s);
    };
    const copyOut = (k: number) => {
      const n = count(k);
      const at = k * per * s;
      for (let p = 0; p < P; p++) {
        const a = lo(n, p) * s, b = lo(n, p + 1) * s;
        if (b > a && p !== rank) r.out.set(views[p].subarray(buffer(k) + a, buffer(k) + b), at + a);
      }
    };
    this.busy++;
    try {
      // Step t: reduce chunk t−1, write chunk t, signal STEP(t), copy chunk t−2 out. STEP(t−1)
      // from every peer says: chunk t−1 is written (reduce it), chunk t−2 is reduced (copy it
      // out), and chunk t−4, whose buffer chunk t reuses, is copied out.
      for (let t = 0; t <= K + 1; t++) {
        if (t >= 1) await wait(t - 1);
        if (t >= 1 && t <= K) reduce(t - 1);
        if (t < K) write(t);
        if (t <= K) signal(t);
        if (t >= 2) copyOut(t - 2);
      }
      // The next operation starts at the next buffer: its first writes reuse buffers that this
      // one's last copies out (on slower peers) may still read only once it heard from them.
      this.next = (first + K) % BUFFERS;
    } catch (e) {
      // A peer may still read this rank's buffers for this operation: stop using them.
      this.state = 'off';
      throw e;
    } finally {
      this.busy--;
      if (this.closed && this.busy === 0) this.unmap();
    }
  }

  /** Unmaps every segment once no operation is using them (the names are long gone). */
  close(): void {
    this.closed = true;
    if (this.busy === 0) this.unmap();
  }

  private unmap(): void {
    for (const s of this.segs) s.close();
    this.segs = [];
    this.views = [];
  }
}
