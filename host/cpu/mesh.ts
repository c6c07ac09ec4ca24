/**
 * The TCP mesh of one CPU group: two one-way connections per pair of ranks.
 *
 * Every rank dials every peer and only ever *reads* from the sockets it dialed, and only ever
 * *writes* to the sockets it accepted. Why: Node reaches ~3 GiB/s on loopback only with
 * `net.connect({ onread })` (one reused receive buffer, no allocation per read), and `onread`
 * exists only on the dialing side (Bun hangs on the server-side equivalent). Two connections per
 * pair also keep the handshake symmetric and the setup order-free: nobody waits on who dials.
 *
 * Incoming frames are routed by key (kind, tag, seq) to a `Sink` the operation registered; a
 * frame whose operation has not started yet is kept (copied) until it registers; frames of an
 * operation that was abandoned (timeout, abort) are skipped. Sinks are called synchronously from
 * the read callback, so an operation can consume a frame (reduce it, forward it) before the next
 * frame needs the same staging buffer.
 *
 * Same-host peers (transport 'auto' / 'shm') move payloads through shared-memory rings
 * (shm.ts): the sender copies a frame's payload into the ring and writes only its header, as a
 * doorbell, on the socket; the receiver copies it out and routes it like any other frame.
 */
import net from 'node:net';
import type { Store } from '../store/types.js';
import { bindError, GroupcommError, peerLostError, protocolError, timeoutError, abortedError } from '../base/errors.js';
import { logger, type Logger } from '../base/log.js';
import {
  ACK_SIZE, HEADER_SIZE, HELLO_FIXED, MAGIC, MAX_NAME_BYTES, Status, VERSION, decodeAck,
  decodeHelloFixed, encodeAck, encodeHello, KIND_BYE, readHeader, statusText, writeHeader,
  KIND_SHM, DOORBELL_SIZE, WANT_SHM, WANT_TCP,
} from './wire.js';
import { hostId, RecvRing, Segment, SendRing } from './shm.js';

/** How a group's ranks on one host talk: 'auto' and 'shm' use shared memory for same-host peers. */
export type Transport = 'auto' | 'tcp' | 'shm';

/** Receives the frames of one operation from one peer. */
export interface Sink {
  /** Where frame `slot`'s payload goes (exactly `length` bytes), or null to have it copied aside. */
  dest(slot: number, length: number): Uint8Array | null;
  /** The frame is complete; `buf` is the dest given (or the copy). Called synchronously. */
  done(slot: number, buf: Uint8Array): void;
  /** The frame did not fit what was expected (a collective mismatch). */
  fail(err: GroupcommError): void;
}

export interface MeshOptions {
  store: Store;
  rank: number;
  worldSize: number;
  groupName: string;
  epoch: number;
  host: string;
  port: number;
  timeoutMs: number;
  signal?: AbortSignal;
  /** Bytes of the reused receive buffer per peer. */
  recvBufferBytes: number;
  /**
   * Settings that decide how collectives cut messages into frames: every rank must use the
   * same ones, so they travel in the handshake and a rank with others is refused.
   */
  framing: { chunkBytes: number; smallBytes: number };
  /** 'tcp': sockets only; 'auto' / 'shm': shared-memory rings for same-host peers ('shm' warns on a fallback). */
  transport: Transport;
  /** Payload bytes of each shared-memory ring (a power of two). */
  shmRingBytes: number;
  /**
   * Frames from this size on go through the ring when there is one; smaller ones are cheaper
   * as one socket write (a ring adds a copy and saves little kernel copying).
   */
  shmMinBytes: number;
}

export const frameKey = (kind: number, tag: number, seq: number) => `${kind}:${tag}:${seq}`;

/** Payload still to come above which reads go straight into the frame's destination. */
const DIRECT_READ_MIN = 64 * 1024;

/** Frames up to this size are sent as one copied buffer (one write; caller may reuse at once). */
const COPY_BELOW = 64 * 1024;


interface Pending {
  slot: number;
  buf: Uint8Array;
}

/** Hands a frame that was received into a side buffer to its sink (copied into the sink's dest). */
function deliver(sink: Sink, key: string, peer: number, slot: number, buf: Uint8Array, pool: SidePool): void {
  let d: Uint8Array | null;
  try {
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
class SidePool {
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

/** Parses one peer's incoming byte stream: the ACK first, then frames. Tolerates any chunking. */
class Inbound {
  private hdr = new Uint8Array(HEADER_SIZE);
  private hdrFill = 0;
  private ackFill = 0;
  private ack = new Uint8Array(ACK_SIZE);
  acked = false;
  // The frame being received.
  private dest: Uint8Array | null = null;
  private destOff = 0;
  private remaining = 0;
  private sink: Sink | undefined;
  private slot = 0;
  private key = '';
  private skipping = false;
  /** The current frame is a doorbell: its payload waits in `ring`. */
  private bell = false;
  private bellBuf = new Uint8Array(DOORBELL_SIZE);
  /** The shared-memory ring this peer writes into (set from the ACK when it offered one). */
  ring: RecvRing | undefined;
  /** Keys of abandoned operations: their late frames are dropped. */
  readonly discarded = new Set<string>();
  /** Frames whose operation has not registered yet, per key, in arrival order. */
  readonly early = new Map<string, Pending[]>();
  readonly sinks = new Map<string, Sink>();
  readonly pool = new SidePool();

  constructor(private mesh: Mesh, readonly peer: number, private recvBuf: Uint8Array) {}

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

  feed(buf: Uint8Array, n: number): void {
    if (buf.buffer !== this.recvBuf.buffer) {
      // A direct read (see nextBuffer): the bytes are already where they belong.
      this.destOff += n;
      this.remaining -= n;
      if (this.remaining === 0) this.complete();
      return;
    }
    let i = 0;
    if (!this.acked) {
      const k = Math.min(n, ACK_SIZE - this.ackFill);
      this.ack.set(buf.subarray(0, k), this.ackFill);
      this.ackFill += k;
      i = k;
      if (this.ackFill < ACK_SIZE) return;
      this.acked = true;
      this.mesh.onAck(this.peer, this.ack);
    }
    while (i < n) {
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

  private begin(): void {
    const h = readHeader(this.hdr, 0);
    if (!Number.isSafeInteger(h.length) || h.length < 0) {
      this.mesh.protocolFailure(this.peer, `frame length ${h.length} is not a byte count`);
      this.skipping = true;
      this.remaining = 0;
      return;
    }
    if (h.kind === KIND_BYE) {
      this.skipping = true;
      this.remaining = h.length;
      this.mesh.onBye(this.peer);
      return;
    }
    this.bell = false;
    if (h.kind & KIND_SHM) {
      if (!this.ring || h.length !== DOORBELL_SIZE) {
        this.mesh.protocolFailure(this.peer, this.ring ? `doorbell of ${h.length} bytes` : 'doorbell without a shared-memory ring');
        this.skipping = true;
        this.remaining = h.length;
        return;
      }
      // The doorbell's 16 bytes are read here; the payload is matched in complete().
      this.bell = true;
      this.key = frameKey(h.kind & ~KIND_SHM, h.tag, h.seq);
      this.slot = h.slot;
      this.remaining = DOORBELL_SIZE;
      this.destOff = 0;
      this.skipping = false;
      this.dest = this.bellBuf;
      return;
    }
    this.key = frameKey(h.kind, h.tag, h.seq);
    this.slot = h.slot;
    this.remaining = h.length;
    this.destOff = 0;
    this.skipping = false;
    this.sink = this.sinks.get(this.key);
    this.dest = null;
    if (this.sink) {
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
    if (!this.skipping && !this.dest) this.dest = this.pool.get(h.length);
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
      deliver(late, this.key, this.peer, this.slot, buf, this.pool);
      return;
    }
    let q = this.early.get(this.key);
    if (!q) this.early.set(this.key, (q = []));
    q.push({ slot: this.slot, buf });
  }

  /**
   * A frame whose payload is in the shared-memory ring: copy it out to where it belongs (the
   * sink's dest, or a side buffer if its operation has not started), free the ring space, then
   * hand it over — the same routing as a frame read from the socket.
   */
  private ringFrame(): void {
    const ring = this.ring!;
    if (this.mesh.isClosing || ring.seg.closed) return;
    const dv = new DataView(this.bellBuf.buffer, this.bellBuf.byteOffset, DOORBELL_SIZE);
    const pos = dv.getFloat64(0, true);
    const n = dv.getFloat64(8, true);
    const src = Number.isSafeInteger(pos) && Number.isSafeInteger(n) && n >= 0 ? ring.at(pos, n) : undefined;
    if (!src) {
      this.mesh.protocolFailure(this.peer, `doorbell for ${n} bytes at ring position ${pos} is outside the ring`);
      return;
    }
    const key = this.key;
    const slot = this.slot;
    const sink = this.sinks.get(key);
    let out: Uint8Array | null = null;
    let failed = false;
    if (sink) {
      try {
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
      if (!out) out = this.pool.get(n);
      out.set(src);
    }
    if (ring.release(pos, n)) this.mesh.credit(this.peer);
    if (drop) return;
    if (sink) {
      sink.done(slot, out!);
      return;
    }
    const late = this.sinks.get(key);
    if (late) {
      deliver(late, key, this.peer, slot, out!, this.pool);
      return;
    }
    let q = this.early.get(key);
    if (!q) this.early.set(key, (q = []));
    q.push({ slot, buf: out! });
  }
}

export class Mesh {
  readonly rank: number;
  readonly worldSize: number;
  readonly log: Logger;
  private server: net.Server | undefined;
  private inbound: (Inbound | undefined)[];
  private dialed: (net.Socket | undefined)[];
  private out: (net.Socket | undefined)[];
  private strangers = new Set<net.Socket>();
  private closing = false;
  private lostHandler: (err: GroupcommError) => void = () => {};
  private departHandler: (peer: number) => void = () => {};
  /** Peers that said goodbye (destroyed their group): no more frames will come from them. */
  readonly departed = new Set<number>();
  private readyCheck: () => void = () => {};
  private setupError: ((e: GroupcommError) => void) | undefined;
  address: { host: string; port: number } = { host: '', port: 0 };
  /** Recycled buffers for copied frames; a buffer returns when its write has completed. */
  private sendPool = new SidePool();
  /** Per peer: the ring we write into (shared memory), if that link uses one. */
  private sendRing: (SendRing | undefined)[];
  /** Per peer: sends waiting for ring space; later sends queue behind them to keep the order. */
  private sendQ: (() => boolean)[][];
  /** Per peer: the accepted connection finished its handshake (shm offer answered). */
  private outReady: boolean[];
  /** Every segment this rank mapped (unmapped on close). */
  private segments: Segment[] = [];

  private constructor(private opts: MeshOptions) {
    this.rank = opts.rank;
    this.worldSize = opts.worldSize;
    this.log = logger('CPU', `${opts.groupName} rank ${opts.rank}/${opts.worldSize}`);
    this.inbound = new Array(opts.worldSize).fill(undefined);
    this.dialed = new Array(opts.worldSize).fill(undefined);
    this.out = new Array(opts.worldSize).fill(undefined);
    this.sendRing = new Array(opts.worldSize).fill(undefined);
    this.sendQ = Array.from({ length: opts.worldSize }, () => []);
    this.outReady = new Array(opts.worldSize).fill(false);
  }

  get isClosing(): boolean {
    return this.closing;
  }

  /** How this rank talks to `peer`: both directions over shared memory, both over TCP, or mixed. */
  transportOf(peer: number): 'self' | 'tcp' | 'shm' | 'mixed' {
    if (peer === this.rank) return 'self';
    const a = this.sendRing[peer] !== undefined;
    const b = this.inbound[peer]?.ring !== undefined;
    return a && b ? 'shm' : !a && !b ? 'tcp' : 'mixed';
  }

  /** Receiver side: the peer may be waiting for ring space; wake it (on the connection we dialed). */
  credit(peer: number): void {
    const s = this.dialed[peer];
    if (!s || s.destroyed) return;
    const b = Buffer.allocUnsafe(4);
    b.writeUInt32LE(1, 0);
    s.write(b);
  }

  private drain(peer: number): void {
    const q = this.sendQ[peer];
    while (q.length > 0 && q[0]()) q.shift();
  }

  private fallback(peer: number, why: string): void {
    const msg = `rank ${peer}: shared memory not used, falling back to TCP (${why})`;
    if (this.opts.transport === 'shm') this.log.warn(msg);
    else this.log.info(msg);
  }

  /** Listens, publishes this rank's address, dials every peer and waits for every handshake. */
  static async connect(opts: MeshOptions): Promise<Mesh> {
    const m = new Mesh(opts);
    try {
      await m.setup();
    } catch (e) {
      m.close();
      throw e;
    }
    return m;
  }

  /** Called once with the first connection loss after setup (the group is unusable after it). */
  onLost(fn: (err: GroupcommError) => void): void {
    this.lostHandler = fn;
  }

  /** Called when a peer destroys its group on purpose (after its last frame to us). */
  onDeparted(fn: (peer: number) => void): void {
    this.departHandler = fn;
  }

  onBye(peer: number): void {
    if (this.departed.has(peer)) return;
    this.departed.add(peer);
    this.log.debug(`rank ${peer} left the group`);
    this.departHandler(peer);
  }

  private prefix(): string {
    return `groupcomm/cpu/${this.opts.groupName}/${this.opts.epoch}`;
  }

  private async setup(): Promise<void> {
    const { store, rank, worldSize, timeoutMs, signal } = this.opts;
    const t0 = performance.now();
    const left = () => Math.max(1, timeoutMs - (performance.now() - t0));
    if (worldSize === 1) return;
    await this.listen();
    const keys = [...Array(worldSize).keys()].map((r) => `${this.prefix()}/addr/${r}`);
    await store.set(keys[rank], `${this.address.host}:${this.address.port}`, { timeoutMs: left(), signal });
    const peers = keys.filter((_, r) => r !== rank);
    const addrs = await store.multiGet(peers, { timeoutMs: left(), signal });
    const addrOf = new Map<number, string>();
    let i = 0;
    for (let r = 0; r < worldSize; r++) if (r !== rank) addrOf.set(r, Buffer.from(addrs[i++]).toString('utf8'));

    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        const missing = this.missingPeers();
        fail(timeoutError(
          `CPU group '${this.opts.groupName}' rank ${rank}: mesh not connected after ${timeoutMs}ms; no handshake with ranks ${missing.join(', ')}`,
          { rank, peerRanks: missing, timeoutMs }));
      }, left());
      const onAbort = () => fail(abortedError('CPU group setup aborted', { rank, cause: signal?.reason }));
      signal?.addEventListener('abort', onAbort, { once: true });
      const cleanup = () => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        this.readyCheck = () => {};
        this.setupError = undefined;
      };
      const fail = (e: GroupcommError) => { cleanup(); reject(e); };
      this.setupError = fail;
      this.readyCheck = () => {
        if (this.missingPeers().length === 0) { cleanup(); resolve(); }
      };
      for (const [r, a] of addrOf) this.dial(r, a, keys[r], performance.now() + left());
    });
    // Everyone is here: stop listening (the port is free again) and drop unfinished strangers.
    this.server?.close();
    this.server = undefined;
    for (const s of this.strangers) s.destroy();
    this.strangers.clear();
    // Every peer has read our address (it connected to us): drop the key so the store does not
    // grow, and a later group of the same name and epoch cannot find a stale address.
    store.deleteKey(keys[rank], { timeoutMs: left() }).catch((e) => this.log.debug(`could not delete ${keys[rank]}: ${e}`));
  }

  private missingPeers(): number[] {
    const m: number[] = [];
    for (let r = 0; r < this.worldSize; r++) {
      if (r !== this.rank && !(this.outReady[r] && this.inbound[r]?.acked)) m.push(r);
    }
    return m;
  }

  private listen(): Promise<void> {
    return new Promise((resolve, reject) => {
      const srv = net.createServer((s) => this.onConnection(s));
      const onError = (e: Error) => reject(bindError(`CPU group '${this.opts.groupName}' rank ${this.opts.rank}`, this.opts.host, this.opts.port, e));
      srv.once('error', onError);
      srv.listen(this.opts.port, this.opts.host, () => {
        srv.off('error', onError);
        srv.on('error', (e) => this.log.warn(`listener error: ${e.message}`));
        const a = srv.address() as net.AddressInfo;
        this.address = { host: this.opts.host, port: a.port };
        this.server = srv;
        resolve();
      });
    });
  }

  /** An accepted socket: read and check its HELLO, then keep it as the send side to that rank. */
  private onConnection(s: net.Socket): void {
    if (this.closing) { s.destroy(); return; }
    s.setNoDelay(true);
    this.strangers.add(s);
    let got: Buffer = Buffer.alloc(0);
    const who = `${s.remoteAddress}:${s.remotePort}`;
    const refuse = (status: number, detail: string) => {
      this.log.warn(`refused connection from ${who}: ${statusText(status)} (${detail})`);
      s.off('data', onData);
      s.end(encodeAck(status, this.rank));
      setTimeout(() => s.destroy(), 100).unref?.();
    };
    const onData = (d: Buffer) => {
      got = got.length ? Buffer.concat([got, d]) : d;
      if (got.length < HELLO_FIXED) return;
      const h = decodeHelloFixed(got);
      if (h.magic !== MAGIC) return refuse(Status.BAD_MAGIC, `magic 0x${h.magic.toString(16)}`);
      if (h.version !== VERSION) return refuse(Status.BAD_VERSION, `version ${h.version}`);
      if (h.nameLen > MAX_NAME_BYTES) return refuse(Status.WRONG_GROUP, `name of ${h.nameLen} bytes`);
      // After the name: u8 want, u8 hostIdLen, hostId.
      const tail = HELLO_FIXED + h.nameLen;
      if (got.length < tail + 2) return;
      const helloLen = tail + 2 + got[tail + 1];
      if (got.length < helloLen) return;
      if (got.length > helloLen) return refuse(Status.BAD_MAGIC, 'bytes after the HELLO');
      const name = got.subarray(HELLO_FIXED, tail).toString('utf8');
      const want = got[tail];
      const theirHost = got.subarray(tail + 2, helloLen).toString('utf8');
      if (name !== this.opts.groupName) return refuse(Status.WRONG_GROUP, `group '${name}', this is '${this.opts.groupName}'`);
      if (h.epoch !== this.opts.epoch) return refuse(Status.WRONG_EPOCH, `epoch ${h.epoch}, this is ${this.opts.epoch}`);
      if (h.worldSize !== this.worldSize) return refuse(Status.WRONG_SIZE, `world size ${h.worldSize}, this is ${this.worldSize}`);
      if (h.rank >= this.worldSize || h.rank === this.rank) return refuse(Status.BAD_RANK, `rank ${h.rank}`);
      const f = this.opts.framing;
      if (h.chunkBytes !== f.chunkBytes || h.smallBytes !== f.smallBytes) {
        return refuse(Status.WRONG_TUNING, `chunkBytes ${h.chunkBytes} / smallBytes ${h.smallBytes}, this rank uses ${f.chunkBytes} / ${f.smallBytes}`);
      }
      if (this.out[h.rank]) return refuse(Status.DUPLICATE, `rank ${h.rank}`);
      s.off('data', onData);
      this.strangers.delete(s);
      this.out[h.rank] = s;
      const peer = h.rank;
      const seg = this.offerShm(peer, want, theirHost);
      if (seg) {
        // The dialer answers the offer with a u32 (1: mapped, 0: could not), then sends a u32
        // "space freed" wake-up now and then; nothing else may arrive on a send-side socket.
        let acc: Buffer = Buffer.alloc(0);
        let answered = false;
        s.on('data', (d: Buffer) => {
          acc = acc.length ? Buffer.concat([acc, d]) : d;
          let i = 0;
          for (; acc.length - i >= 4; i += 4) {
            if (answered) continue;
            answered = true;
            seg.unlink();
            if (acc.readUInt32LE(i) === 1) {
              this.sendRing[peer] = new SendRing(seg);
              this.log.debug(`rank ${peer}: sending through shared memory (${seg.ringBytes} byte ring)`);
            } else {
              this.fallback(peer, 'the peer could not map the segment');
              seg.close();
            }
            this.outReady[peer] = true;
            this.readyCheck();
          }
          acc = acc.subarray(i);
          if (answered) this.drain(peer);
        });
        s.on('close', () => seg.unlink());
      } else {
        s.on('data', () => this.protocolFailure(peer, 'unexpected bytes on the send-side connection'));
        this.outReady[peer] = true;
      }
      this.watch(s, peer, 'write');
      s.write(encodeAck(Status.OK, this.rank, seg ? { ringBytes: seg.ringBytes, name: seg.name } : undefined));
      this.log.debug(`accepted rank ${peer} from ${who}`);
      this.readyCheck();
    };
    s.on('data', onData);
    s.on('error', () => {});
    s.on('close', () => this.strangers.delete(s));
  }

  /** Creates the ring for sending to `peer` when both sides want shm and share a host; else undefined. */
  private offerShm(peer: number, want: number, theirHost: string): Segment | undefined {
    if (this.opts.transport === 'tcp' || want !== WANT_SHM) return undefined;
    const mine = hostId();
    if (!mine || theirHost !== mine) {
      this.log.debug(`rank ${peer} is on another host (${theirHost || 'unknown'}): TCP`);
      return undefined;
    }
    try {
      const seg = Segment.create(this.opts.shmRingBytes);
      this.segments.push(seg);
      return seg;
    } catch (e) {
      this.fallback(peer, (e as Error).message);
      return undefined;
    }
  }

  private dial(peer: number, firstAddr: string, key: string, deadline: number): void {
    let addr = firstAddr;
    const buffer = Buffer.alloc(this.opts.recvBufferBytes); // zero-filled: its pages are touched once, here
    const inbound = new Inbound(this, peer, buffer);
    this.inbound[peer] = inbound;
    const attempt = () => {
      if (this.closing) return;
      let connected = false;
      const cut = addr.lastIndexOf(':');
      const host = addr.slice(0, cut);
      const port = Number(addr.slice(cut + 1));
      const s = net.connect({
        host, port,
        onread: { buffer: () => inbound.nextBuffer(), callback: (n: number, b: Uint8Array) => { inbound.feed(b, n); return true; } },
      } as net.NetConnectOpts);
      s.on('connect', () => {
        connected = true;
        s.setNoDelay(true);
        this.dialed[peer] = s;
        s.write(encodeHello({
          rank: this.rank, worldSize: this.worldSize, epoch: this.opts.epoch, name: this.opts.groupName, ...this.opts.framing,
          want: this.opts.transport === 'tcp' ? WANT_TCP : WANT_SHM, hostId: hostId(),
        }));
        this.watch(s, peer, 'read');
      });
      s.once('error', (e: NodeJS.ErrnoException) => {
        if (connected) return;
        s.destroy();
        // The peer publishes its address only once it listens, so a refusal means the address
        // is stale (a crashed earlier run of this group): read the key again and retry until
        // the peer's new incarnation has replaced it, or the deadline.
        if (performance.now() < deadline) {
          setTimeout(() => {
            this.opts.store.get(key, { timeoutMs: Math.max(1, deadline - performance.now()) })
              .then((v) => { addr = Buffer.from(v).toString('utf8'); }, () => {})
              .finally(attempt);
          }, 50);
        }
        else this.setupError?.(peerLostError(`rank ${this.rank}: cannot connect to rank ${peer} at ${addr}: ${e.message}`, { rank: this.rank, peerRank: peer, cause: e }));
      });
    };
    attempt();
  }

  /** The ACK on a dialed connection (from Inbound). */
  onAck(peer: number, b: Uint8Array): void {
    const a = decodeAck(b);
    if (a.magic !== MAGIC || a.status !== Status.OK || a.rank !== peer) {
      const why = a.magic !== MAGIC ? 'not a groupcomm CPU group' : a.status !== Status.OK ? statusText(a.status) : `it is rank ${a.rank}`;
      const err = protocolError(`rank ${this.rank}: rank ${peer} refused the connection: ${why}`, { rank: this.rank, peerRank: peer });
      if (this.setupError) this.setupError(err);
      else this.protocolFailure(peer, why);
      return;
    }
    if (a.ringBytes > 0) {
      // The peer offers a ring for what it sends us: map it (which unlinks its name) and answer.
      let ok = 0;
      if (this.opts.transport !== 'tcp') {
        try {
          const seg = Segment.open(a.shmName, a.ringBytes);
          this.segments.push(seg);
          this.inbound[peer]!.ring = new RecvRing(seg);
          ok = 1;
        } catch (e) {
          this.fallback(peer, (e as Error).message);
        }
      }
      const b = Buffer.allocUnsafe(4);
      b.writeUInt32LE(ok, 0);
      this.dialed[peer]?.write(b);
    }
    this.readyCheck();
  }

  /**
   * Connection loss. Everything a peer sends, its goodbye included, arrives in order on the
   * connection we dialed to it, so the end of *that* stream decides: after a goodbye it is a
   * departure, without one a loss. The send side's close only starts a fallback timer (a peer
   * whose read side vanished but whose write side lingers would otherwise go unnoticed).
   */
  private watch(s: net.Socket, peer: number, side: 'read' | 'write'): void {
    const gone = (why: string) => (side === 'read' ? this.lose(peer, why) : this.loseLater(peer, why));
    s.on('error', (e) => gone(e.message));
    s.on('end', () => gone('connection closed by the peer'));
    s.on('close', () => gone('connection closed'));
  }

  private loseLater(peer: number, why: string): void {
    if (this.closing || this.lost || this.departed.has(peer)) return;
    setTimeout(() => this.lose(peer, why), 1000).unref();
  }

  private lost = false;
  private lose(peer: number, why: string): void {
    if (this.closing || this.lost || this.departed.has(peer)) return;
    const err = peerLostError(`CPU group '${this.opts.groupName}' rank ${this.rank}: lost rank ${peer} (${why})`, { rank: this.rank, peerRank: peer });
    if (this.setupError) { this.setupError(err); return; }
    this.lost = true;
    this.log.info(err.message);
    this.lostHandler(err);
  }

  protocolFailure(peer: number, why: string): void {
    this.log.warn(`protocol error from rank ${peer}: ${why}; closing the group's connections to it`);
    this.dialed[peer]?.destroy();
    this.out[peer]?.destroy();
    this.lose(peer, `protocol error: ${why}`);
  }

  /** Routes frames with `key` from `peer` to `sink`, first handing over any that came early. */
  register(peer: number, key: string, sink: Sink): void {
    const inb = this.inbound[peer]!;
    inb.sinks.set(key, sink);
    const early = inb.early.get(key);
    if (!early) return;
    inb.early.delete(key);
    for (const f of early) deliver(sink, key, peer, f.slot, f.buf, inb.pool);
  }

  unregister(peer: number, key: string): void {
    this.inbound[peer]?.sinks.delete(key);
  }

  /** Drops every frame of `key` from `peers` (default: all), now and later (an abandoned operation). */
  discard(key: string, peers?: number[]): void {
    for (const inb of this.inbound) {
      if (!inb || (peers && !peers.includes(inb.peer))) continue;
      inb.discarded.add(key);
      inb.sinks.delete(key);
      inb.early.delete(key);
    }
  }

  /**
   * Sends one frame. Small payloads are copied into the write (the caller may reuse them at
   * once); larger ones are written from the caller's memory, which must stay unchanged until
   * `cb` runs (Node keeps a reference until the kernel has taken the bytes).
   */
  send(peer: number, kind: number, tag: number, seq: number, slot: number, payload: Uint8Array, copy: boolean, cb: (err?: Error | null) => void): void {
    const s = this.out[peer];
    if (!s || s.destroyed) {
      cb(new Error(`no connection to rank ${peer}`));
      return;
    }
    const n = payload.byteLength;
    const ring = this.sendRing[peer];
    const q = this.sendQ[peer];
    if (ring && n >= this.opts.shmMinBytes && n <= ring.maxFrame) {
      const attempt = () => {
        if (s.destroyed || this.closing || ring.seg.closed) {
          cb(new Error(`no connection to rank ${peer}`));
          return true;
        }
        const pos = ring.put(payload);
        if (pos < 0) return false;
        const b = Buffer.allocUnsafe(HEADER_SIZE + DOORBELL_SIZE);
        writeHeader(b, 0, kind | KIND_SHM, tag, seq, slot, DOORBELL_SIZE);
        b.writeDoubleLE(pos, HEADER_SIZE);
        b.writeDoubleLE(n, HEADER_SIZE + 8);
        s.write(b, cb);
        return true;
      };
      if (q.length === 0 && attempt()) return;
      // No room yet: keep our own copy if the caller may reuse its memory at once.
      if (copy || n <= COPY_BELOW) payload = payload.slice();
      q.push(attempt);
      return;
    }
    if (q.length > 0) {
      // Frames to a peer stay in order: this one waits behind those waiting for ring space.
      const p = copy || n <= COPY_BELOW ? payload.slice() : payload;
      q.push(() => {
        this.tcpSend(s, kind, tag, seq, slot, p, copy, cb);
        return true;
      });
      return;
    }
    this.tcpSend(s, kind, tag, seq, slot, payload, copy, cb);
  }

  private tcpSend(s: net.Socket, kind: number, tag: number, seq: number, slot: number, payload: Uint8Array, copy: boolean, cb: (err?: Error | null) => void): void {
    const n = payload.byteLength;
    if (copy || n <= COPY_BELOW) {
      // Small frames come from Node's shared pool; larger copies from our own recycled
      // buffers, since a fresh allocation of that size means fresh pages (page faults) here.
      const pooled = n >= 4096;
      const b = pooled ? this.sendPool.get(HEADER_SIZE + n) : Buffer.allocUnsafe(HEADER_SIZE + n);
      writeHeader(b, 0, kind, tag, seq, slot, n);
      b.set(payload, HEADER_SIZE);
      s.write(b, pooled ? (err) => { this.sendPool.put(b); cb(err); } : cb);
      return;
    }
    const h = Buffer.allocUnsafe(HEADER_SIZE);
    writeHeader(h, 0, kind, tag, seq, slot, n);
    s.cork();
    s.write(h);
    s.write(payload, cb);
    s.uncork();
  }

  /**
   * Closes every connection and the listener now. Each peer first gets a goodbye frame behind
   * everything already written to it, so it can tell a departure from a crash; sockets that
   * have not drained within a second are destroyed. Idempotent.
   */
  close(): void {
    if (this.closing) return;
    this.closing = true;
    this.server?.close();
    this.server = undefined;
    const bye = Buffer.alloc(HEADER_SIZE);
    writeHeader(bye, 0, KIND_BYE, 0, 0, 0, 0);
    for (const s of this.out) {
      if (!s || s.destroyed) continue;
      s.end(bye);
      setTimeout(() => s.destroy(), 1000).unref();
    }
    for (const s of [...this.dialed, ...this.strangers]) s?.destroy();
    this.strangers.clear();
    for (const q of this.sendQ) q.length = 0;
    // Nothing reads or writes a ring once `closing` is set (both paths check it), so the
    // mappings can go now; the peer keeps its own mapping of each segment until it closes.
    for (const seg of this.segments) {
      try {
        seg.close();
      } catch (e) {
        this.log.debug(`could not unmap ${seg.name}: ${e}`);
      }
    }
    this.segments = [];
  }
}
