/**
 * The mesh of one CPU group: two one-way connections per pair of ranks. Every rank dials every
 * peer and only ever *reads* from the sockets it dialed (link/tcp.ts says why), and only ever
 * *writes* to the sockets it accepted. Two connections per pair also keep the handshake
 * symmetric and the setup order-free: nobody waits on who dials.
 *
 * This file holds the peers, the setup (listen, publish, dial, wait for every handshake), loss
 * and close. The rest is in link/: the handshake, the inbound parser that routes frames to
 * operations, and one link per peer for sending — TCP, or a shared-memory ring for same-host
 * peers (transport 'auto' / 'shm') — behind one `Link` interface.
 */
import net from 'node:net';
import type { Store } from '../store/types.js';
import { bindError, GroupcommError, isGroupcommError, mismatchError, peerLostError, protocolError, timeoutError, abortedError } from '../base/errors.js';
import { KIND_VERDICT, Status } from './wire.js';
import { applyKeepAlive } from '../base/netaddr.js';
import { watchLiveness } from './liveness.js';
import { logger, type Logger } from '../base/log.js';
import { Handshake, type HandshakeOptions, type PeerHello, type Transport } from './link/handshake.js';
import { Inbound, SidePool, type Sink } from './link/inbound.js';
import type { FrameHeader, Link, SendOptions, WriteDone } from './link/link.js';
import { RingReader, ShmLink } from './link/shm.js';
import { dialReader, listen, TcpLink } from './link/tcp.js';

export type { Sink, Transport };

const NO_PAYLOAD = new Uint8Array(0);

/** A connection must send a valid HELLO within this (ms), or it is closed. */
const HELLO_TIMEOUT_MS = 10_000;
/** Connections without a HELLO yet held at once (besides 2 per peer). */
const MAX_STRANGERS = 64;

/** The handshake's settings (group, rank, framing, transport, ring size) and the mesh's own. */
export interface MeshOptions extends Omit<HandshakeOptions, 'log'> {
  store: Store;
  host: string;
  /** The address peers are told (default `host`; never a wildcard like 0.0.0.0). */
  advertiseHost?: string;
  port: number;
  timeoutMs: number;
  signal?: AbortSignal;
  /** Bytes of the reused receive buffer per peer. */
  recvBufferBytes: number;
  /**
   * Frames from this size on go through the ring when there is one; smaller ones are cheaper
   * as one socket write (a ring adds a copy and saves little kernel copying).
   */
  shmMinBytes: number;
  /** A connection that has not sent a valid HELLO by then is closed (default 10 s). */
  helloTimeoutMs?: number;
}

export class Mesh {
  readonly rank: number;
  readonly worldSize: number;
  readonly log: Logger;
  private readonly hs: Handshake;
  private server: net.Server | undefined;
  /** Per peer: the parser of what it sends us (read from the connection we dialed). */
  private inbound: (Inbound | undefined)[];
  private dialed: (net.Socket | undefined)[];
  /** Per peer: how we send to it (on the connection it dialed to us). */
  private links: (Link | undefined)[];
  /** Per peer: the accepted connection finished its handshake (shm offer answered). */
  private outReady: boolean[];
  /** Per peer: the largest frame payload it accepts (from its HELLO). */
  private peerMaxFrame: number[];
  private strangers = new Set<net.Socket>();
  private closing = false;
  private lost = false;
  private lostHandler: (err: GroupcommError) => void = () => {};
  private departHandler: (peer: number) => void = () => {};
  private verdictHandler: (peer: number, seq: number, theirFp: number) => void = () => {};
  /** Peers that said goodbye (destroyed their group): no more frames will come from them. */
  readonly departed = new Set<number>();
  private readyCheck: () => void = () => {};
  private setupError: ((e: GroupcommError) => void) | undefined;
  address: { host: string; port: number } = { host: '', port: 0 };
  /** Recycled buffers for copied frames; a buffer returns when its write has completed. */
  private sendPool = new SidePool();
  /** Stops the liveness check (startLiveness). */
  private stopLiveness: (() => void) | undefined;

  private constructor(private opts: MeshOptions) {
    this.rank = opts.rank;
    this.worldSize = opts.worldSize;
    this.log = logger('CPU', `${opts.groupName} rank ${opts.rank}/${opts.worldSize}`);
    this.hs = new Handshake({ ...opts, log: this.log });
    this.inbound = new Array(opts.worldSize).fill(undefined);
    this.dialed = new Array(opts.worldSize).fill(undefined);
    this.links = new Array(opts.worldSize).fill(undefined);
    this.outReady = new Array(opts.worldSize).fill(false);
    this.peerMaxFrame = new Array(opts.worldSize).fill(0);
  }

  /** Listens, publishes this rank's address, dials every peer and waits for every handshake. */
  static async connect(opts: MeshOptions): Promise<Mesh> {
    const m = new Mesh(opts);
    try {
      await m.setup();
    } catch (e) {
      m.close();
      // A failed setup must not leave addresses behind (a stale key outlives the group): ours,
      // and those of peers that refused our last dial — a rank that died after publishing its
      // address, which nobody else would ever delete.
      const stale = [...m.refusedBy].map((r) => m.addrKey(r));
      if (m.published) stale.push(m.published);
      await Promise.all(stale.map((k) => opts.store.deleteKey(k, { timeoutMs: 2000 }).catch((err) => m.log.debug(`could not delete ${k}: ${err}`))));
      throw e;
    }
    return m;
  }

  /** This rank's address key while it is in the store (setup deletes it once complete). */
  private published: string | undefined;
  /** Peers whose listener refused our latest dial (their address is stale: they died). */
  private readonly refusedBy = new Set<number>();

  private addrKey(r: number): string {
    return `groupcomm/cpu/${this.opts.groupName}/${this.opts.epoch}/addr/${r}`;
  }

  /** How this rank talks to `peer`: both directions over shared memory, both over TCP, or mixed. */
  transportOf(peer: number): 'self' | 'tcp' | 'shm' | 'mixed' {
    if (peer === this.rank) return 'self';
    const a = this.links[peer]?.transport === 'shm';
    const b = this.inbound[peer]?.ring !== undefined;
    return a && b ? 'shm' : !a && !b ? 'tcp' : 'mixed';
  }

  /** Called once with the first connection loss after setup (the group is unusable after it). */
  onLost(fn: (err: GroupcommError) => void): void {
    this.lostHandler = fn;
  }

  /** Called when a peer tells that our call for collective `seq` differed from its own (KIND_VERDICT). */
  onVerdict(fn: (peer: number, seq: number, theirFp: number) => void): void {
    this.verdictHandler = fn;
  }

  /** Tells `peer` that its call for collective `seq` differed from ours (`fp`); best effort. */
  sendVerdict(peer: number, seq: number, fp: number): void {
    this.links[peer]?.send({ kind: KIND_VERDICT, tag: fp, seq, slot: 0 }, NO_PAYLOAD, { copy: true }, () => {});
  }

  /** Called when a peer destroys its group on purpose (after its last frame to us). */
  onDeparted(fn: (peer: number) => void): void {
    this.departHandler = fn;
  }

  private async setup(): Promise<void> {
    const { store, rank, worldSize, timeoutMs, signal } = this.opts;
    const t0 = performance.now();
    const left = () => Math.max(1, timeoutMs - (performance.now() - t0));
    if (worldSize === 1) return;
    await this.listen();
    const keys = [...Array(worldSize).keys()].map((r) => this.addrKey(r));
    await store.set(keys[rank], `${this.address.host}:${this.address.port}`, { timeoutMs: left(), signal });
    this.published = keys[rank];
    const peers = keys.filter((_, r) => r !== rank);
    let addrs: Uint8Array[];
    try {
      addrs = await store.multiGet(peers, { timeoutMs: left(), signal });
    } catch (e) {
      throw await this.unpublished(e, keys);
    }
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
    this.published = undefined;
    store.deleteKey(keys[rank], { timeoutMs: left() }).catch((e) => this.log.debug(`could not delete ${keys[rank]}: ${e}`));
    this.startLiveness();
  }

  /** The heartbeat and silence check (liveness.ts), once the mesh is complete. */
  private startLiveness(): void {
    this.stopLiveness = watchLiveness({
      rank: this.rank,
      worldSize: this.worldSize,
      active: () => !this.closing && !this.lost,
      departed: (p) => this.departed.has(p),
      ping: (p, frame, payload, done) => this.links[p]?.send(frame, payload, { copy: true }, done),
      bytesIn: (p) => this.inbound[p]?.bytesIn ?? 0,
      lose: (silent, why) => this.lose(silent[0], why, false, silent),
    });
  }

  /**
   * The address wait timed out: name the ranks whose address never appeared (a store wait only
   * knows its keys), asking the store key by key, briefly.
   */
  private async unpublished(e: unknown, keys: string[]): Promise<unknown> {
    if (!isGroupcommError(e, 'ERR_GROUPCOMM_TIMEOUT')) return e;
    const { store, rank } = this.opts;
    const there = await Promise.all(keys.map((k, r) => (r === rank ? true : store.check([k], { timeoutMs: 300 }).catch(() => undefined))));
    const missing = keys.map((_, r) => r).filter((r) => there[r] === false);
    if (missing.length === 0) return e;
    return timeoutError(`CPU group '${this.opts.groupName}' rank ${rank}: rank${missing.length > 1 ? 's' : ''} ${missing.join(', ')} ` +
      `never published ${missing.length > 1 ? 'their' : 'its'} address (did ${missing.length > 1 ? 'they' : 'it'} call create?): ${e.message}`,
    { rank, peerRanks: missing, peerRank: missing.length === 1 ? missing[0] : undefined, timeoutMs: e.timeoutMs, cause: e });
  }

  private missingPeers(): number[] {
    const m: number[] = [];
    for (let r = 0; r < this.worldSize; r++) {
      if (r !== this.rank && !(this.outReady[r] && this.inbound[r]?.acked)) m.push(r);
    }
    return m;
  }

  private async listen(): Promise<void> {
    this.server = await listen(this.opts.host, this.opts.port, (s) => this.onConnection(s), (e) => this.log.warn(`listener error: ${e.message}`))
      .catch((e) => { throw bindError(`CPU group '${this.opts.groupName}' rank ${this.opts.rank}`, this.opts.host, this.opts.port, e); });
    this.address = { host: this.opts.advertiseHost ?? this.opts.host, port: (this.server.address() as net.AddressInfo).port };
  }

  /** An accepted socket: once its HELLO checks out it becomes the link we send to that rank on. */
  private onConnection(s: net.Socket): void {
    if (this.closing) { s.destroy(); return; }
    // Unauthenticated connections are bounded in number and in time: a flood during setup must
    // not take this rank's descriptors, nor a silent socket hold one until setup ends.
    if (this.strangers.size >= MAX_STRANGERS + 2 * this.worldSize) {
      this.log.warn(`too many connections that have not completed a HELLO (${this.strangers.size}): refusing ${s.remoteAddress}:${s.remotePort}`);
      s.destroy();
      return;
    }
    s.setNoDelay(true);
    applyKeepAlive(s);
    this.strangers.add(s);
    const timer = setTimeout(() => {
      if (this.strangers.has(s)) {
        this.log.warn(`no valid HELLO from ${s.remoteAddress}:${s.remotePort} within ${this.opts.helloTimeoutMs ?? HELLO_TIMEOUT_MS} ms: closing it`);
        s.destroy();
      }
    }, this.opts.helloTimeoutMs ?? HELLO_TIMEOUT_MS);
    timer.unref?.();
    s.on('error', () => {});
    s.on('close', () => { clearTimeout(timer); this.strangers.delete(s); });
    this.hs.readHello(s, (r) => this.links[r] !== undefined, (h) => { clearTimeout(timer); this.accept(s, h); });
  }

  private accept(s: net.Socket, h: PeerHello): void {
    const peer = h.rank;
    this.strangers.delete(s);
    const events = {
      lost: (why: string) => this.loseLater(peer, why),
      malformed: (why: string) => this.protocolFailure(peer, why),
    };
    const seg = this.hs.offer(h);
    if (seg) {
      this.links[peer] = new ShmLink({
        peer, socket: s, seg, events, pool: this.sendPool, minBytes: this.opts.shmMinBytes,
        onAnswer: (mapped) => {
          if (mapped) this.log.debug(`rank ${peer}: sending through shared memory (${seg.ringBytes} byte ring)`);
          else this.hs.fallback(peer, 'the peer could not map the segment');
          this.outReady[peer] = true;
          this.readyCheck();
        },
      });
    } else {
      this.links[peer] = new TcpLink({ peer, socket: s, events, pool: this.sendPool });
      this.outReady[peer] = true;
    }
    this.peerMaxFrame[peer] = h.maxFrameBytes;
    s.write(this.hs.ack(h, seg));
    this.log.debug(`accepted rank ${peer} from ${s.remoteAddress}:${s.remotePort}`);
    this.readyCheck();
  }

  private dial(peer: number, firstAddr: string, key: string, deadline: number): void {
    let addr = firstAddr;
    const buffer = Buffer.alloc(this.opts.recvBufferBytes); // zero-filled: its pages are touched once, here
    const inbound = new Inbound(peer, buffer, {
      challenge: (b) => {
        const hello = this.hs.hello(peer, b);
        if (typeof hello === 'string') this.refused(peer, hello);
        else this.dialed[peer]?.write(hello);
      },
      ack: (b) => this.onAck(peer, b),
      bye: () => this.onBye(peer),
      verdict: (seq, fp) => this.verdictHandler(peer, seq, fp),
      malformed: (why) => this.protocolFailure(peer, why),
    }, this.opts.maxFrameBytes);
    this.inbound[peer] = inbound;
    const attempt = () => {
      if (this.closing) return;
      let connected = false;
      const cut = addr.lastIndexOf(':');
      const s = dialReader(addr.slice(0, cut), Number(addr.slice(cut + 1)), inbound);
      s.on('connect', () => {
        connected = true;
        this.refusedBy.delete(peer);
        s.setNoDelay(true);
        applyKeepAlive(s);
        this.dialed[peer] = s;
        // The peer's CHALLENGE comes first; the HELLO answers it (see the inbound's challenge event).
        // Everything a peer sends, its goodbye included, arrives in order on this connection,
        // so the end of *this* stream decides: after a goodbye it is a departure, else a loss.
        s.on('error', (e) => this.lose(peer, e.message));
        s.on('end', () => this.lose(peer, 'connection closed by the peer'));
        s.on('close', () => this.lose(peer, 'connection closed'));
      });
      s.once('error', (e: NodeJS.ErrnoException) => {
        if (connected) return;
        s.destroy();
        if (e.code === 'ECONNREFUSED') this.refusedBy.add(peer);
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

  /** The ACK on a dialed connection; with a ring offer, map it and answer. */
  private onAck(peer: number, b: Uint8Array): void {
    const a = this.hs.readAck(peer, b);
    if (!a.ok) {
      this.refused(peer, a.why, a.status);
      return;
    }
    const s = this.dialed[peer];
    if (a.ringBytes > 0 && s) {
      const seg = this.hs.take(peer, a);
      if (seg) this.inbound[peer]!.ring = new RingReader(seg, s);
      s.write(this.hs.answer(seg !== undefined));
    }
    this.readyCheck();
  }

  /** The handshake with `peer` failed on our dialed connection: setup fails naming it. */
  private refused(peer: number, why: string, status?: number): void {
    const msg = `CPU group '${this.opts.groupName}' rank ${this.rank}: the connection to rank ${peer} failed its handshake: ${why}`;
    // Another world size for the same group and epoch is the caller's mismatch, not a bad peer.
    const err = status === Status.WRONG_SIZE
      ? mismatchError(`${msg} (this rank has world size ${this.worldSize}): the ranks disagree on the group's members`, { rank: this.rank, peerRank: peer })
      : protocolError(msg, { rank: this.rank, peerRank: peer });
    this.dialed[peer]?.destroy();
    if (this.setupError) this.setupError(err);
    else this.protocolFailure(peer, why);
  }

  private onBye(peer: number): void {
    if (this.departed.has(peer)) return;
    this.departed.add(peer);
    this.log.debug(`rank ${peer} left the group`);
    this.departHandler(peer);
  }

  /**
   * The send side's close only starts a fallback timer: a peer whose read side vanished but
   * whose write side lingers would otherwise go unnoticed.
   */
  private loseLater(peer: number, why: string): void {
    if (this.closing || this.lost || this.departed.has(peer)) return;
    setTimeout(() => this.lose(peer, why), 1000).unref();
  }

  private lose(peer: number, why: string, protocol = false, peers: number[] = [peer]): void {
    if (this.closing || this.lost || this.departed.has(peer)) return;
    const who = peers.length > 1 ? `ranks ${peers.join(', ')}` : `rank ${peer}`;
    const msg = `CPU group '${this.opts.groupName}' rank ${this.rank}: lost ${who} (${why})`;
    const fields = { rank: this.rank, peerRank: peer, peerRanks: peers.length > 1 ? peers : undefined };
    const err = protocol ? protocolError(msg, fields) : peerLostError(msg, fields);
    if (this.setupError) { this.setupError(err); return; }
    this.lost = true;
    this.log.info(err.message);
    this.lostHandler(err);
  }

  /** `peer` broke the protocol: close both connections to it (and only those). */
  private protocolFailure(peer: number, why: string): void {
    this.log.warn(`protocol error from rank ${peer}: ${why}; closing the group's connections to it`);
    this.dialed[peer]?.destroy();
    this.links[peer]?.destroy();
    this.lose(peer, `protocol error: ${why}`, true);
  }

  /** Routes frames with `key` from `peer` to `sink`, first handing over any that came early. */
  register(peer: number, key: string, sink: Sink): void {
    this.inbound[peer]!.register(key, sink);
  }

  unregister(peer: number, key: string): void {
    this.inbound[peer]?.unregister(key);
  }

  /** Drops every frame of `key` from `peers` (default: all), now and later (an abandoned operation). */
  discard(key: string, peers?: number[]): void {
    for (const inb of this.inbound) {
      if (inb && (!peers || peers.includes(inb.peer))) inb.discard(key);
    }
  }

  /** Sends one frame to `peer` (see Link.send for when `payload` may change again). */
  send(peer: number, frame: FrameHeader, payload: Uint8Array, opts: SendOptions, done: WriteDone): void {
    const link = this.links[peer];
    if (!link) {
      done(new Error(`no connection to rank ${peer}`));
      return;
    }
    if (payload.byteLength > this.peerMaxFrame[peer]) {
      done(new Error(`a frame of ${payload.byteLength} bytes is above rank ${peer}'s maximum of ${this.peerMaxFrame[peer]} (GROUPCOMM_CPU_MAX_FRAME_BYTES)`));
      return;
    }
    link.send(frame, payload, opts, done);
  }

  /**
   * Closes every connection and the listener now. Each peer first gets a goodbye frame behind
   * everything already written to it, so it can tell a departure from a crash; sockets that
   * have not drained within a second are destroyed. Idempotent.
   */
  close(): void {
    if (this.closing) return;
    this.closing = true;
    this.stopLiveness?.();
    this.server?.close();
    this.server = undefined;
    for (const link of this.links) link?.close();
    for (const s of [...this.dialed, ...this.strangers]) s?.destroy();
    this.strangers.clear();
    // Nothing reads or writes a ring once its link is closed (both paths check), so the
    // mappings can go now; the peer keeps its own mapping of each segment until it closes.
    this.hs.closeSegments();
  }
}
