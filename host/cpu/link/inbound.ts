/**
 * The inbound side of one peer: a byte-level parser for the stream read from the connection this
 * rank dialed to it (the ACK first, then frames), whatever link the peer sends on — a shm link's
 * doorbells arrive on the same stream, in order with the frames that still travel over TCP.
 *
 * Incoming frames are routed by key (kind, tag, seq) to a `Sink` the operation registered (sink.ts); a
 * frame whose operation has not started yet is kept (copied) until it registers; frames of an
 * operation that was abandoned (timeout, abort) are skipped. Sinks are called synchronously from
 * the read callback, so an operation can consume a frame (reduce it, forward it) before the next
 * frame needs the same staging buffer.
 *
 * Limits are checked on the header, before a payload byte is read or a buffer allocated. A stream
 * that breaks the protocol is reported once through `InboundEvents.malformed` and everything after
 * it is ignored: the owner (the mesh) closes that peer's connections; nothing is thrown.
 */
import { constants as bufferConstants } from 'node:buffer';
import { mismatchError, protocolError, type GroupcommError } from '../../base/errors.js';
import { ACK_SIZE, CHALLENGE_SIZE, DOORBELL_SIZE, HEADER_SIZE, KIND_BYE, KIND_COLL, KIND_PING, KIND_SHM, KIND_VERDICT, readHeader } from '../wire.js';
import { describeCall } from '../fingerprint.js';
import { deliver, frameKey, mismatched, routeKey, SidePool, type Pending, type Sink } from './sink.js';

/** What the parser tells its owner; each is called synchronously from `feed`. */
export interface InboundEvents {
  /**
   * The acceptor's CHALLENGE (CHALLENGE_SIZE bytes) that opens the stream, before the ACK; the
   * mesh answers it with its HELLO. Without this event the stream starts with the ACK.
   */
  challenge?(bytes: Uint8Array): void;
  /** The ACK that follows (ACK_SIZE bytes; the view is reused after the call). */
  ack(bytes: Uint8Array): void;
  /** The peer's goodbye: it leaves on purpose and everything it sent came before. */
  bye(): void;
  /** The peer found that our call for collective `seq` differed from its own (`theirFp`). */
  verdict?(seq: number, theirFp: number): void;
  /** The stream broke the protocol (reported once; the parser ignores the rest of it). */
  malformed(why: string): void;
}

/** Where doorbell payloads are: the receiving side of a shm link (link/shm.ts). */
export interface RingSource {
  /** False once the ring is unmapped (the group is closing): doorbells are then ignored. */
  readonly open: boolean;
  /** The payload a doorbell names (a view into the ring), or undefined when that is outside the ring. */
  at(pos: number, n: number): Uint8Array | undefined;
  /** Frees the ring up to `pos + n` (and wakes the sender when it is due). */
  release(pos: number, n: number): void;
}

/** What every collective's route key starts with (routeKey: kind, tag 0, then the seq). */
const COLL_PREFIX = frameKey(KIND_COLL, 0, 0).slice(0, -1);
const COLL_CHAR = COLL_PREFIX.charCodeAt(0);

/** Payload still to come above which reads go straight into the frame's destination. */
export const DIRECT_READ_MIN = 64 * 1024;

/**
 * The largest payload a frame may declare: the largest typed array this runtime can allocate.
 * No sender has a larger payload (it is a view of a typed array), and a frame that arrives before
 * its operation needs a buffer of its declared size, so a larger length is refused unread.
 */
export const MAX_FRAME_BYTES: number = bufferConstants.MAX_LENGTH;

/** Parses one peer's incoming byte stream: the ACK first, then frames. Tolerates any chunking. */
export class Inbound {
  private hdr = new Uint8Array(HEADER_SIZE);
  private hdrFill = 0;
  private ackFill = 0;
  private ack = new Uint8Array(ACK_SIZE);
  private challengeFill = 0;
  private challengeBuf = new Uint8Array(CHALLENGE_SIZE);
  private challenged: boolean;
  acked = false;
  /** The stream broke the protocol: nothing after that point is parsed. */
  private broken = false;
  // The frame being received.
  private dest: Uint8Array | null = null;
  private destOff = 0;
  private remaining = 0;
  private sink: Sink | undefined;
  private slot = 0;
  private key = '';
  /** The tag of the frame being read (a collective's fingerprint). */
  private tag = 0;
  private skipping = false;
  /** Bytes read so far: the mesh's liveness check only asks whether it moved. */
  bytesIn = 0;
  /** The current frame is a doorbell: its payload waits in `ring`. */
  private bell = false;
  private bellBuf = new Uint8Array(DOORBELL_SIZE);
  /** The shared-memory ring this peer writes into (set from the ACK when it offered one). */
  ring: RingSource | undefined;
  /** Keys of abandoned operations: their late frames are dropped. */
  private readonly discarded = new Set<string>();
  /** Frames whose operation has not registered yet, per key, in arrival order. */
  private readonly early = new Map<string, Pending[]>();
  private readonly sinks = new Map<string, Sink>();
  private readonly pool = new SidePool();

  /** `recvBuf`: the reused receive buffer (reads that do not go straight into place land here). */
  /**
   * `maxFrameBytes`: the largest payload a frame may declare (this rank's limit, told to the
   * peer in the HELLO); a larger one is a protocol violation, refused before any allocation.
   */
  constructor(readonly peer: number, private recvBuf: Uint8Array, private events: InboundEvents, private readonly maxFrameBytes = MAX_FRAME_BYTES) {
    this.challenged = events.challenge === undefined;
  }

  /**
   * The connection dropped before its ACK (mesh.ts dials again): the next one starts with a
   * fresh CHALLENGE. No frame can have arrived yet; registered sinks stay.
   */
  restartHandshake(): void {
    if (this.acked) return;
    this.challenged = this.events.challenge === undefined;
    this.challengeFill = 0;
    this.ackFill = 0;
  }

  /** Routes frames with `key` to `sink`, first handing over any that came early. */
  register(key: string, sink: Sink): void {
    this.sinks.set(key, sink);
    const early = this.early.get(key);
    if (sink.fingerprint !== undefined && this.early.size > (early ? 1 : 0) && this.stray(key, sink)) return;
    if (!early) return;
    this.early.delete(key);
    for (const f of early) deliver(sink, key, this.peer, f.slot, f.buf, this.pool, f.tag);
  }

  /**
   * Collectives run one after the other, and every frame a peer sends for one is read before it
   * ends here: a frame still kept for an earlier collective was sent for a call this rank made
   * differently (a 2-rank broadcast where both took themselves as the root: nobody receives,
   * so nothing else compares). Fails `sink`'s collective naming the earlier one; true if so.
   * Only looked for when frames are kept besides this collective's own (rare, never per frame).
   */
  private stray(key: string, sink: Sink): boolean {
    if (!key.startsWith(COLL_PREFIX)) return false;
    const seq = Number(key.slice(COLL_PREFIX.length));
    for (const [k, q] of this.early) {
      if (!k.startsWith(COLL_PREFIX)) continue;
      const n = Number(k.slice(COLL_PREFIX.length));
      if (!(n < seq)) continue;
      this.early.delete(k);
      this.failStray(sink, n, q[0].tag, seq);
      return true;
    }
    return false;
  }

  private failStray(sink: Sink, n: number, tag: number, seq: number): void {
    sink.fail(mismatchError(`rank ${this.peer} sent a frame for collective #${n} (its call: ${describeCall(tag)}), ` +
      `which this rank had finished without expecting one from it (this rank's call #${n} differed: did both take themselves ` +
      `as the root?); found at collective #${seq}`, { peerRank: this.peer }));
  }

  unregister(key: string): void {
    this.sinks.delete(key);
  }

  /** Drops every frame of `key`, now and later (an abandoned operation). */
  discard(key: string): void {
    this.discarded.add(key);
    this.sinks.delete(key);
    this.early.delete(key);
  }

  /**
   * Where the next read lands (onread's buffer generator, called before every read): straight
   * into the current frame's destination while a large part of its payload is still to come —
   * the kernel then copies into the tensor or staging buffer itself — else the reused buffer.
   */
  nextBuffer(): Uint8Array {
    if (this.remaining >= DIRECT_READ_MIN && this.dest && !this.skipping) {
      return this.dest.subarray(this.destOff, this.destOff + this.remaining);
    }
    return this.recvBuf;
  }

  /** `n` bytes were read into `buf` (the buffer `nextBuffer` returned). */
  feed(buf: Uint8Array, n: number): void {
    this.bytesIn += n;
    if (buf.buffer !== this.recvBuf.buffer) {
      // A direct read (see nextBuffer): the bytes are already where they belong.
      this.destOff += n;
      this.remaining -= n;
      if (this.remaining === 0) this.complete();
      return;
    }
    let i = 0;
    if (this.broken) return;
    if (!this.challenged) {
      const k = Math.min(n, CHALLENGE_SIZE - this.challengeFill);
      this.challengeBuf.set(buf.subarray(0, k), this.challengeFill);
      this.challengeFill += k;
      i = k;
      if (this.challengeFill < CHALLENGE_SIZE) return;
      this.challenged = true;
      this.events.challenge!(this.challengeBuf);
      if (i === n || this.broken) return;
    }
    if (!this.acked) {
      const k = Math.min(n - i, ACK_SIZE - this.ackFill);
      this.ack.set(buf.subarray(i, i + k), this.ackFill);
      this.ackFill += k;
      i += k;
      if (this.ackFill < ACK_SIZE) return;
      this.acked = true;
      this.events.ack(this.ack);
    }
    while (i < n && !this.broken) {
      if (this.remaining === 0 && this.hdrFill < HEADER_SIZE) {
        const k = Math.min(n - i, HEADER_SIZE - this.hdrFill);
        this.hdr.set(buf.subarray(i, i + k), this.hdrFill);
        this.hdrFill += k;
        i += k;
        if (this.hdrFill < HEADER_SIZE) return;
        this.begin();
        if (this.remaining === 0) this.complete();
        continue;
      }
      const k = Math.min(n - i, this.remaining);
      if (!this.skipping) this.dest!.set(buf.subarray(i, i + k), this.destOff);
      this.destOff += k;
      this.remaining -= k;
      i += k;
      if (this.remaining === 0) this.complete();
    }
  }

  /** Reports a protocol violation once and stops parsing this stream. */
  private malformed(why: string): void {
    this.broken = true;
    this.skipping = true;
    this.remaining = 0;
    this.dest = null;
    this.events.malformed(why);
  }

  private begin(): void {
    const h = readHeader(this.hdr, 0);
    if (!Number.isSafeInteger(h.length) || h.length < 0) {
      this.malformed(`frame length ${h.length} is not a byte count`);
      return;
    }
    if (h.length > this.maxFrameBytes) {
      this.malformed(`frame length ${h.length} is above the negotiated maximum of ${this.maxFrameBytes} bytes (GROUPCOMM_CPU_MAX_FRAME_BYTES)`);
      return;
    }
    if (h.kind === KIND_PING) {
      this.skipping = true;
      this.remaining = h.length;
      return;
    }
    if (h.kind === KIND_BYE) {
      this.skipping = true;
      this.remaining = h.length;
      this.events.bye();
      return;
    }
    if (h.kind === KIND_VERDICT) {
      this.skipping = true;
      this.remaining = h.length;
      this.events.verdict?.(h.seq, h.tag);
      return;
    }
    this.bell = false;
    if (h.kind & KIND_SHM) {
      if (!this.ring || h.length !== DOORBELL_SIZE) {
        this.malformed(this.ring ? `doorbell of ${h.length} bytes` : 'doorbell without a shared-memory ring');
        return;
      }
      // The doorbell's 16 bytes are read here; the payload is matched in complete().
      this.bell = true;
      this.key = routeKey(h.kind & ~KIND_SHM, h.tag, h.seq);
      this.tag = h.tag;
      this.slot = h.slot;
      this.remaining = DOORBELL_SIZE;
      this.destOff = 0;
      this.skipping = false;
      this.dest = this.bellBuf;
      return;
    }
    this.key = routeKey(h.kind, h.tag, h.seq);
    this.tag = h.tag;
    this.slot = h.slot;
    this.remaining = h.length;
    this.destOff = 0;
    this.skipping = false;
    this.sink = this.sinks.get(this.key);
    this.dest = null;
    if (this.sink && mismatched(this.sink, h.tag, this.peer, this.key)) {
      this.sink = undefined;
      this.skipping = true;
    } else if (this.sink) {
      let d: Uint8Array | null;
      try {
        d = this.sink.dest(h.slot, h.length);
      } catch (e) {
        this.sink.fail(e as GroupcommError);
        d = null;
        this.skipping = true;
      }
      if (d && d.byteLength !== h.length) {
        this.sink.fail(protocolError(
          `frame ${this.key} slot ${h.slot} from rank ${this.peer} has ${h.length} bytes, expected ${d.byteLength}: the ranks called different collectives or sizes`,
          { peerRank: this.peer }));
        this.skipping = true;
      } else if (d) {
        this.dest = d;
      }
    } else if (this.discarded.has(this.key)) {
      this.skipping = true;
    }
    if (!this.skipping && !this.dest) {
      try {
        this.dest = this.pool.get(h.length);
      } catch (e) {
        // Within the limit but more than this process can allocate now: that link goes, not the process.
        this.malformed(`cannot allocate ${h.length} bytes for a frame: ${(e as Error).message}`);
      }
    }
  }

  private complete(): void {
    this.hdrFill = 0;
    if (this.skipping) return;
    if (this.bell) {
      this.bell = false;
      this.dest = null;
      this.ringFrame();
      return;
    }
    const buf = this.dest!;
    this.dest = null;
    if (this.sink) {
      this.sink.done(this.slot, buf);
      return;
    }
    // The operation may have registered while this frame was arriving into a side buffer:
    // it then gets the frame the way early frames are handed over (copied into its dest).
    const late = this.sinks.get(this.key);
    if (late) {
      deliver(late, this.key, this.peer, this.slot, buf, this.pool, this.tag);
      return;
    }
    this.keepEarly(this.key, this.slot, buf, this.tag);
  }

  private keepEarly(key: string, slot: number, buf: Uint8Array, tag: number): void {
    // A collective frame kept while a later collective is registered is a stray (see stray).
    if (this.sinks.size > 0 && key.charCodeAt(0) === COLL_CHAR && key.startsWith(COLL_PREFIX)) {
      const n = Number(key.slice(COLL_PREFIX.length));
      for (const [k, sink] of this.sinks) {
        if (k.startsWith(COLL_PREFIX) && Number(k.slice(COLL_PREFIX.length)) > n) {
          this.failStray(sink, n, tag, Number(k.slice(COLL_PREFIX.length)));
          return;
        }
      }
    }
    let q = this.early.get(key);
    if (!q) this.early.set(key, (q = []));
    q.push({ slot, buf, tag });
  }

  /**
   * A frame whose payload is in the shared-memory ring: copy it out to where it belongs (the
   * sink's dest, or a side buffer if its operation has not started), free the ring space, then
   * hand it over — the same routing as a frame read from the socket.
   */
  private ringFrame(): void {
    const ring = this.ring!;
    if (!ring.open) return;
    const dv = new DataView(this.bellBuf.buffer, this.bellBuf.byteOffset, DOORBELL_SIZE);
    const pos = dv.getFloat64(0, true);
    const n = dv.getFloat64(8, true);
    const src = Number.isSafeInteger(pos) && Number.isSafeInteger(n) && n >= 0 ? ring.at(pos, n) : undefined;
    if (!src) {
      this.malformed(`doorbell for ${n} bytes at ring position ${pos} is outside the ring`);
      return;
    }
    const key = this.key;
    const slot = this.slot;
    const tag = this.tag;
    const sink = this.sinks.get(key);
    let out: Uint8Array | null = null;
    let failed = false;
    if (sink && mismatched(sink, tag, this.peer, key)) {
      failed = true;
    } else if (sink) {
      try {
        if (sink.consume?.(slot, src)) {
          ring.release(pos, n);
          return;
        }
        out = sink.dest(slot, n);
      } catch (e) {
        sink.fail(e as GroupcommError);
        failed = true;
      }
      if (!failed && out && out.byteLength !== n) {
        sink.fail(protocolError(
          `frame ${key} slot ${slot} from rank ${this.peer} has ${n} bytes, expected ${out.byteLength}: the ranks called different collectives or sizes`,
          { peerRank: this.peer }));
        failed = true;
      }
    }
    const drop = failed || (!sink && this.discarded.has(key));
    if (!drop) {
      if (!out) {
        try {
          out = this.pool.get(n);
        } catch (e) {
          this.malformed(`cannot allocate ${n} bytes for a frame: ${(e as Error).message}`);
          return;
        }
      }
      out.set(src);
    }
    ring.release(pos, n);
    if (drop) return;
    if (sink) {
      sink.done(slot, out!);
      return;
    }
    const late = this.sinks.get(key);
    if (late) {
      deliver(late, key, this.peer, slot, out!, this.pool, tag);
      return;
    }
    this.keepEarly(key, slot, out!, tag);
  }
}
