/**
 * One operation's view of the mesh: its frames (one key), the receives it is waiting for, the
 * writes not yet flushed, and a single way to fail. Algorithms are written against this.
 */
import { isGroupcommError, peerLeftError, protocolError, withRank, type GroupcommError } from '../base/errors.js';
import { routeKey, type Sink } from './link/sink.js';
import { KIND_COLL } from './wire.js';
import type { FrameHeader, SendOptions } from './link/link.js';
import type { Mesh } from './mesh.js';

/** MISMATCH errors made from a peer's verdict (group.ts): not told back. */
export const told = new WeakSet<GroupcommError>();

const COPY: SendOptions = Object.freeze({ copy: true });
const NO_COPY: SendOptions = Object.freeze({ copy: false });

interface Posted {
  dest: Uint8Array | undefined;
  resolve: (b: Uint8Array) => void;
}

export class Exchange {
  readonly key: string;
  private registered = new Set<number>();
  private posted = new Map<number, Map<number, Posted>>();
  private arrived = new Map<number, Map<number, Uint8Array>>();
  private streams = new Map<number, Sink>();
  /** Receives still expected, per peer (for timeout messages). */
  private expecting = new Map<number, number>();
  private writes = 0;
  private flushWaiter: (() => void) | undefined;
  private failure: GroupcommError | undefined;
  private failWaiters = new Set<(e: GroupcommError) => void>();
  finished = false;
  /** This operation's frame header, reused for every send (a link reads it during the call only). */
  private readonly frame: FrameHeader;

  /**
   * `peers`: the only peers whose frames carry this key (point-to-point keys repeat across
   * peers); undefined for collectives, whose keys are unique to the group. A collective's `tag`
   * is its call's fingerprint (fingerprint.ts): sent in every frame, checked on every frame in.
   */
  constructor(readonly mesh: Mesh, readonly kind: number, readonly tag: number, readonly seq: number, readonly peers?: number[]) {
    this.key = routeKey(kind, tag, seq);
    this.frame = { kind, tag, seq, slot: 0 };
  }

  get rank(): number { return this.mesh.rank; }
  get size(): number { return this.mesh.worldSize; }

  /** Ranks this operation is still waiting to hear from. */
  waitingOn(): number[] {
    return [...this.expecting].filter(([, n]) => n > 0).map(([p]) => p).sort((a, b) => a - b);
  }

  private expect(peer: number, d: number): void {
    this.expecting.set(peer, (this.expecting.get(peer) ?? 0) + d);
  }

  private ensureSink(peer: number): void {
    if (this.registered.has(peer) || this.finished) return;
    this.registered.add(peer);
    const sink: Sink = {
      dest: (slot, len) => {
        const st = this.streams.get(peer);
        if (st) return st.dest(slot, len);
        return this.posted.get(peer)?.get(slot)?.dest ?? null;
      },
      done: (slot, buf) => {
        if (this.finished) return;
        const st = this.streams.get(peer);
        if (st) {
          this.expect(peer, -1);
          try {
            st.done(slot, buf);
          } catch (e) {
            this.fail(e as GroupcommError);
          }
          return;
        }
        const p = this.posted.get(peer)?.get(slot);
        if (p) {
          this.expect(peer, -1);
          this.posted.get(peer)!.delete(slot);
          p.resolve(buf);
          return;
        }
        // Early: not counted here, since no receive counted it yet (recv takes it uncounted; a
        // stream, which counts every frame, counts it down when it is handed over).
        let m = this.arrived.get(peer);
        if (!m) this.arrived.set(peer, (m = new Map()));
        m.set(slot, buf);
      },
      consume: (slot, src) => {
        if (this.finished) return false;
        const st = this.streams.get(peer);
        if (!st?.consume) return false;
        let used: boolean;
        try {
          used = st.consume(slot, src);
        } catch (e) {
          this.expect(peer, -1);
          this.fail(e as GroupcommError);
          return true;
        }
        if (used) this.expect(peer, -1);
        return used;
      },
      // The parser's errors name the peer; the caller's rank is this operation's to add.
      fail: (e) => this.fail(withRank(e, this.rank) as GroupcommError),
      fingerprint: this.kind === KIND_COLL ? this.tag : undefined,
    };
    this.mesh.register(peer, this.key, sink);
  }

  /**
   * Resolves when frame `slot` from `peer` has arrived, written into `dest` (whose length must
   * match) or, without `dest`, in a buffer of its own.
   */
  recv(peer: number, slot: number, dest?: Uint8Array): Promise<Uint8Array> {
    if (this.failure) return Promise.reject(this.failure);
    const early = this.arrived.get(peer)?.get(slot);
    if (early) {
      this.arrived.get(peer)!.delete(slot);
      if (!dest) return Promise.resolve(early);
      if (early.byteLength !== dest.byteLength) return Promise.reject(this.mismatch(peer, slot, early.byteLength, dest.byteLength));
      dest.set(early);
      return Promise.resolve(dest);
    }
    this.expect(peer, 1);
    return new Promise<Uint8Array>((resolve, reject) => {
      let m = this.posted.get(peer);
      if (!m) this.posted.set(peer, (m = new Map()));
      m.set(slot, { dest, resolve });
      const onFail = (e: GroupcommError) => reject(e);
      this.failWaiters.add(onFail);
      this.ensureSink(peer);
      this.checkDeparted(peer);
    });
  }

  /** Hands every frame from `peer` to `sink` (synchronously, as it completes); expects `count`. */
  stream(peer: number, count: number, sink: Sink): void {
    this.streams.set(peer, sink);
    this.expect(peer, count);
    this.ensureSink(peer);
    // Frames from `peer` that came before the stream, while this operation was receiving from
    // it already (the shared-segment setup, which may end on the ring), go to the stream now.
    const early = this.arrived.get(peer);
    if (early?.size) {
      this.arrived.delete(peer);
      for (const [slot, buf] of early) {
        if (this.finished) break;
        this.expect(peer, -1);
        this.handOver(sink, peer, slot, buf);
      }
    }
    this.checkDeparted(peer);
  }

  /** An early frame to a stream, the way the parser hands it one (link/inbound.ts deliver). */
  private handOver(sink: Sink, peer: number, slot: number, buf: Uint8Array): void {
    try {
      if (sink.consume?.(slot, buf)) return;
      const d = sink.dest(slot, buf.byteLength);
      if (d && d.byteLength !== buf.byteLength) throw this.mismatch(peer, slot, buf.byteLength, d.byteLength);
      if (d) d.set(buf);
      sink.done(slot, d ?? buf);
    } catch (e) {
      this.fail(e as GroupcommError);
    }
  }

  /** Fails this operation if it still expects frames from `peer`, which has left the group. */
  checkDeparted(peer: number): void {
    if (this.mesh.departed.has(peer) && (this.expecting.get(peer) ?? 0) > 0) {
      this.fail(peerLeftError(
        `rank ${this.rank}: rank ${peer} left the group (destroyed its end on purpose) while this operation still expected data from it`,
        { rank: this.rank, peerRank: peer }));
    }
  }

  private mismatch(peer: number, slot: number, got: number, want: number): GroupcommError {
    return protocolError(
      `frame slot ${slot} from rank ${peer} has ${got} bytes, expected ${want}: the ranks called different collectives or sizes`,
      { rank: this.rank, peerRank: peer });
  }

  /**
   * Sends frame `slot` to `peer`; `copy`: the caller may change `payload` at once (else see
   * Link.send for when it may be changed again).
   */
  send(peer: number, slot: number, payload: Uint8Array, copy = false): void {
    if (this.failure) return;
    this.writes++;
    this.frame.slot = slot;
    this.mesh.send(peer, this.frame, payload, copy ? COPY : NO_COPY, (err) => {
      // A frame the peer would refuse (its maximum) fails the operation here, naming it. Any
      // other failed write means a lost connection, which the mesh reports with the peer's
      // name; counting it as done only keeps flushed() from waiting forever.
      if (isGroupcommError(err)) this.fail(err);
      this.writes--;
      if (this.writes === 0 && this.flushWaiter) {
        const w = this.flushWaiter;
        this.flushWaiter = undefined;
        w();
      }
    });
  }

  /** Resolves once the kernel has taken every byte this operation wrote. */
  flushed(): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    if (this.writes === 0) return Promise.resolve();
    return new Promise((resolve, reject) => {
      this.flushWaiter = resolve;
      this.failWaiters.add(reject);
    });
  }

  /** A promise that rejects when the operation fails (for state machines driven by streams). */
  failed(): Promise<never> {
    return new Promise((_, reject) => {
      if (this.failure) reject(this.failure);
      else this.failWaiters.add(reject);
    });
  }

  fail(err: GroupcommError): void {
    if (this.failure || this.finished) return;
    this.failure = err;
    // A frame of another call from that peer: tell it, since a peer that only sends in this
    // collective compares nothing (not for a verdict it told us: it knows).
    if (err.code === 'ERR_GROUPCOMM_MISMATCH' && this.kind === KIND_COLL && err.peerRank !== undefined && !told.has(err)) {
      this.mesh.sendVerdict(err.peerRank, this.seq, this.tag);
    }
    for (const w of this.failWaiters) w(err);
    this.failWaiters.clear();
    this.release(true);
  }

  /** Stops routing this operation's frames; `abandon` also drops any that arrive later. */
  release(abandon: boolean): void {
    this.finished = true;
    if (abandon) this.mesh.discard(this.key, this.peers);
    else for (const p of this.registered) this.mesh.unregister(p, this.key);
    this.posted.clear();
    this.arrived.clear();
    this.streams.clear();
  }
}
