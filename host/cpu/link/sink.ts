/**
 * Where a received frame goes: the `Sink` an operation registers with a peer's parser
 * (inbound.ts), the keys frames are routed by, the check of a collective's fingerprint, and the
 * hand-over of a frame that arrived before its operation (kept in a recycled side buffer).
 */
import { mismatchError, protocolError, type GroupcommError } from '../../base/errors.js';
import { KIND_COLL } from '../wire.js';
import { describeMismatch } from '../fingerprint.js';

/** Receives the frames of one operation from one peer. */
export interface Sink {
  /** Where frame `slot`'s payload goes (exactly `length` bytes), or null to have it copied aside. */
  dest(slot: number, length: number): Uint8Array | null;
  /** The frame is complete; `buf` is the dest given (or the copy). Called synchronously. */
  done(slot: number, buf: Uint8Array): void;
  /**
   * Optional: offered a complete payload where it already lies in memory the receiver reads
   * anyway (a shared-memory ring, a side buffer), before `dest` is asked. Returning true means
   * the sink used `src` synchronously (e.g. reduced it into place: one copy fewer) and the frame
   * is done; false (or throwing, which fails the sink) falls back to `dest` and `done`. `src` is
   * only valid during the call: the ring space is freed right after.
   */
  consume?(slot: number, src: Uint8Array): boolean;
  /** The frame did not fit what was expected (a collective mismatch). */
  fail(err: GroupcommError): void;
  /**
   * A collective's fingerprint (fingerprint.ts): its frames carry it in the header's tag, and a
   * frame with another one fails the operation (ERR_GROUPCOMM_MISMATCH). Undefined: not checked.
   */
  readonly fingerprint?: number;
}

/**
 * Collective frames are routed by (kind, seq) alone: their tag is the call's fingerprint, which
 * is checked (mismatched), not matched.
 */
export const routeKey = (kind: number, tag: number, seq: number) => frameKey(kind, kind === KIND_COLL ? 0 : tag, seq);

export const frameKey = (kind: number, tag: number, seq: number) => `${kind}:${tag}:${seq}`;

/** Fails `sink` when a frame's tag says its sender made another call; true if it did. */
export function mismatched(sink: Sink, tag: number, peer: number, key: string): boolean {
  if (sink.fingerprint === undefined || sink.fingerprint === tag) return false;
  const d = describeMismatch(sink.fingerprint, tag, peer);
  sink.fail(mismatchError(`rank ${peer} made a different call for collective #${key.slice(key.lastIndexOf(':') + 1)}: ${d.text}`, { peerRank: peer }));
  return true;
}

/** Frames up to this size are sent as one copied buffer (one write; caller may reuse at once). */
export const COPY_BELOW = 64 * 1024;

export interface Pending {
  slot: number;
  buf: Uint8Array;
  /** The header's tag (a collective's fingerprint, checked when its operation registers). */
  tag: number;
}

/** Hands a frame that was received into a side buffer to its sink (copied into the sink's dest). */
export function deliver(sink: Sink, key: string, peer: number, slot: number, buf: Uint8Array, pool: SidePool, tag: number): void {
  if (mismatched(sink, tag, peer, key)) return;
  let d: Uint8Array | null;
  try {
    if (sink.consume?.(slot, buf)) {
      pool.put(buf);
      return;
    }
    d = sink.dest(slot, buf.byteLength);
  } catch (e) {
    sink.fail(e as GroupcommError);
    return;
  }
  if (d && d.byteLength !== buf.byteLength) {
    sink.fail(protocolError(`frame ${key} slot ${slot} from rank ${peer} has ${buf.byteLength} bytes, expected ${d.byteLength}: the ranks called different collectives or sizes`, { peerRank: peer }));
    return;
  }
  if (d) {
    d.set(buf);
    pool.put(buf);
  }
  sink.done(slot, d ?? buf);
}

/**
 * Recycled side buffers for frames that arrive before their operation (a peer one op ahead).
 * Fresh memory costs a page fault per 4 KiB on first touch (tens of µs each here), which for
 * pipelined rings is most of the time if every early segment gets a new allocation.
 */
export class SidePool {
  private free: Uint8Array[] = [];
  get(n: number): Uint8Array {
    for (let i = this.free.length - 1; i >= 0; i--) {
      const b = this.free[i];
      if (b.byteLength >= n) {
        this.free.splice(i, 1);
        return b.subarray(0, n);
      }
    }
    return new Uint8Array(n);
  }
  /** Takes back a buffer that is no longer used; only buffers of a useful size are kept. */
  put(b: Uint8Array): void {
    if (b.buffer.byteLength < 4096 || b.buffer.byteLength > (64 << 20) || this.free.length >= 16) return;
    this.free.push(new Uint8Array(b.buffer, 0, b.buffer.byteLength));
  }
}

