/**
 * The shared-memory link (same-host peers): payloads go through a ring in a shm segment
 * (../shm.ts), the socket carries only their headers as doorbells, in order with the frames that
 * still go over TCP (smaller, larger, goodbyes). Send side: ShmLink; receive side: RingReader,
 * which the parser (inbound.ts) reads doorbell payloads from.
 *
 * Flow control: when the ring is full the sender queues the frame — and every later frame to
 * that peer, to keep the order — until the receiver's next wake-up (a u32 on the connection it
 * reads from, each time it has freed another ⅛ of the ring). SendRing's bound on the frame size
 * makes a waiting sender always fit after the last wake-up, so a full ring cannot deadlock.
 */
import type net from 'node:net';
import { DOORBELL_SIZE, HEADER_SIZE, KIND_SHM, writeHeader, type FrameHeader } from '../wire.js';
import { RecvRing, SendRing, type Segment } from '../shm.js';
import type { RingSource } from './inbound.js';
import { COPY_BELOW, type SidePool } from './sink.js';
import type { Link, LinkEvents, SendOptions, WriteDone } from './link.js';
import { TcpLink } from './tcp.js';

export interface ShmLinkOptions {
  peer: number;
  /** The accepted connection from the peer (doorbells and TCP frames go out on it). */
  socket: net.Socket;
  /** The segment this rank created and offered in its ACK. */
  seg: Segment;
  events: LinkEvents;
  pool: SidePool;
  /** Frames from this size on go through the ring (smaller ones are cheaper as one socket write). */
  minBytes: number;
  /** The peer answered the offer: true when it mapped the ring (else every frame goes over TCP). */
  onAnswer: (mapped: boolean) => void;
}

const copyHeader = (f: FrameHeader): FrameHeader => ({ kind: f.kind, tag: f.tag, seq: f.seq, slot: f.slot });

const BELL_BYTES = HEADER_SIZE + DOORBELL_SIZE;
/** Doorbells gathered into one socket write at most (a pipelined ring rings a few per turn). */
const MAX_BELLS = 64;

export class ShmLink implements Link {
  readonly peer: number;
  private readonly tcp: TcpLink;
  private readonly minBytes: number;
  /** Set once the peer has mapped the segment. */
  private ring: SendRing | undefined;
  /** Sends waiting for ring space; later sends queue behind them to keep the order. */
  private q: (() => boolean)[] = [];
  private closed = false;
  /**
   * Doorbells rung during this turn of the event loop, written together once the turn's
   * synchronous work is done (a microtask): one write and one wake-up of the receiver for all
   * the segments a read callback forwarded, instead of one each. Any frame that goes over the
   * socket itself flushes them first, so the stream order stays the send order.
   */
  private bells: Buffer | undefined;
  private bellCount = 0;
  private bellDones: WriteDone[] = [];
  private flushQueued = false;
  private readonly flushBells = (): void => {
    this.flushQueued = false;
    const n = this.bellCount;
    if (n === 0) return;
    const b = this.bells!;
    const dones = this.bellDones;
    this.bells = undefined;
    this.bellCount = 0;
    this.bellDones = [];
    this.tcp.writeRaw(b.subarray(0, n * BELL_BYTES), n === 1 ? dones[0] : (err) => {
      for (const d of dones) d(err);
    });
  };

  constructor(o: ShmLinkOptions) {
    this.peer = o.peer;
    this.minBytes = o.minBytes;
    const { seg } = o;
    // The dialer answers the offer with a u32 (1: mapped, 0: could not), then sends a u32
    // "space freed" wake-up now and then; nothing else may arrive on a send-side socket.
    let acc: Buffer = Buffer.alloc(0);
    let answered = false;
    const onData = (d: Buffer) => {
      acc = acc.length ? Buffer.concat([acc, d]) : d;
      let i = 0;
      for (; acc.length - i >= 4; i += 4) {
        if (answered) continue;
        answered = true;
        seg.unlink();
        const mapped = acc.readUInt32LE(i) === 1;
        if (mapped) this.ring = new SendRing(seg);
        else seg.close();
        o.onAnswer(mapped);
      }
      acc = acc.subarray(i);
      if (answered) this.drain();
    };
    this.tcp = new TcpLink({ peer: o.peer, socket: o.socket, events: o.events, pool: o.pool, onData });
    o.socket.on('close', () => seg.unlink());
  }

  get transport(): 'tcp' | 'shm' {
    return this.ring ? 'shm' : 'tcp';
  }

  send(frame: FrameHeader, payload: Uint8Array, opts: SendOptions, done: WriteDone): void {
    if (this.tcp.destroyed) {
      done(new Error(`no connection to rank ${this.peer}`));
      return;
    }
    const n = payload.byteLength;
    const copy = opts.copy === true;
    const ring = this.ring;
    if (ring && n >= this.minBytes && n <= ring.maxFrame) {
      if (this.q.length === 0 && this.ringWrite(ring, frame, payload, done)) return;
      // No room yet: keep our own copy if the caller may reuse its memory at once.
      const f = copyHeader(frame);
      const p = copy || n <= COPY_BELOW ? payload.slice() : payload;
      this.q.push(() => this.ringWrite(ring, f, p, done));
      return;
    }
    if (this.q.length > 0) {
      // Frames to a peer stay in order: this one waits behind those waiting for ring space.
      const f = copyHeader(frame);
      const p = copy || n <= COPY_BELOW ? payload.slice() : payload;
      this.q.push(() => {
        this.flushBells();
        this.tcp.write(f, p, copy, done);
        return true;
      });
      return;
    }
    this.flushBells();
    this.tcp.write(frame, payload, copy, done);
  }

  /** Copies the payload into the ring and rings the doorbell; false when there is no room yet. */
  private ringWrite(ring: SendRing, frame: FrameHeader, payload: Uint8Array, done: WriteDone): boolean {
    if (this.tcp.destroyed || this.closed || ring.seg.closed) {
      done(new Error(`no connection to rank ${this.peer}`));
      return true;
    }
    const pos = ring.put(payload);
    if (pos < 0) return false;
    if (this.bellCount === MAX_BELLS) this.flushBells();
    const b = (this.bells ??= Buffer.allocUnsafe(MAX_BELLS * BELL_BYTES));
    const off = this.bellCount * BELL_BYTES;
    writeHeader(b, off, frame, DOORBELL_SIZE, KIND_SHM);
    b.writeDoubleLE(pos, off + HEADER_SIZE);
    b.writeDoubleLE(payload.byteLength, off + HEADER_SIZE + 8);
    this.bellCount++;
    this.bellDones.push(done);
    if (!this.flushQueued) {
      this.flushQueued = true;
      queueMicrotask(this.flushBells);
    }
    return true;
  }

  /** A wake-up: send what waited for ring space, in order, until one still does not fit. */
  private drain(): void {
    const q = this.q;
    while (q.length > 0 && q[0]()) q.shift();
  }

  close(): void {
    this.flushBells();
    this.closed = true;
    this.tcp.close();
    this.q.length = 0;
  }

  destroy(): void {
    this.flushBells(); // their writes then fail with the connection, so nobody waits on them
    this.tcp.destroy();
  }
}

/** The receiving side of a ring: where the parser copies doorbell payloads from. */
export class RingReader implements RingSource {
  private readonly ring: RecvRing;

  /** `wakeSocket`: the connection this rank dialed to the sender (wake-ups go back on it). */
  constructor(private readonly seg: Segment, private readonly wakeSocket: net.Socket) {
    this.ring = new RecvRing(seg);
  }

  get open(): boolean {
    return !this.seg.closed;
  }

  at(pos: number, n: number): Uint8Array | undefined {
    return this.ring.at(pos, n);
  }

  release(pos: number, n: number): void {
    if (!this.ring.release(pos, n)) return;
    // The sender may be waiting for ring space: wake it.
    const s = this.wakeSocket;
    if (s.destroyed) return;
    const b = Buffer.allocUnsafe(4);
    b.writeUInt32LE(1, 0);
    s.write(b);
  }
}
