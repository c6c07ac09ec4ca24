/**
 * The mesh of one CPU group: two one-way connections per pair of ranks. A rank only ever *reads*
 * from the sockets it dialed (link/tcp.ts says why), and only ever *writes* to the sockets it
 * accepted. Two connections per pair also keep the handshake symmetric and order-free: nobody
 * waits on who dials.
 *
 * Pairs connect lazily (docs/cpu-group.md, "Setup"): setup publishes this rank's address, reads
 * every peer's (one multiGet: O(ranks) store operations per group in total) and connects only
 * the ring neighbours (rank ± 1); any other pair connects the first time an operation sends to
 * or expects data from that peer, and a rank that accepts a peer's connection dials it back, so
 * a pair is always both ways. A group's collectives only talk to some peers (ring neighbours,
 * recursive-doubling partners), so creation no longer costs O(ranks²) connections, handshakes
 * and shared-memory rings. The listener stays open for the group's life, and the address key
 * stays in the store until close.
 *
 * This file holds the peers, the setup (listen, publish, read the addresses, connect the
 * neighbours), connecting on demand, loss and close. The rest is in link/: the rendezvous
 * (addresses.ts), the listener, dialing (dial.ts), the handshake, the inbound parser that routes
 * frames to operations, frames waiting for a pair (queue.ts), and one link per peer for sending
 * — TCP, or a shared-memory ring for same-host peers (transport 'auto' / 'shm') — behind one
 * `Link` interface.
 */
import net from 'node:net';
import type { Store } from '../store/types.js';
import { GroupcommError, invalidArgument, mismatchError, peerLostError, protocolError, timeoutError, abortedError } from '../base/errors.js';
import { KIND_VERDICT, Status } from './wire.js';
import { watchLiveness } from './liveness.js';
import { logger, type Logger } from '../base/log.js';
import { Handshake, type HandshakeOptions, type PeerHello, type Transport } from './link/handshake.js';
import { Inbound } from './link/inbound.js';
import { SidePool, type Sink } from './link/sink.js';
import type { FrameHeader, Link, SendOptions, WriteDone } from './link/link.js';
import { RingReader, ShmLink } from './link/shm.js';
import { TcpLink } from './link/tcp.js';
import { dialPeer, unreachableWith } from './link/dial.js';
import { setting } from '../base/config.js';
import { Listener } from './link/listener.js';
import { addrKey, exchangeAddresses } from './link/addresses.js';
import { SendQueues } from './link/queue.js';

export type { Sink, Transport };

const NO_PAYLOAD = new Uint8Array(0);

/**
 * The peers connected at setup: the ring neighbours (every ring algorithm needs them) and, with
 * a `hub`, that rank (which connects to everyone).
 */
export function setupPeers(rank: number, worldSize: number, hub?: number): number[] {
  if (worldSize < 2) return [];
  const next = (rank + 1) % worldSize, prev = (rank + worldSize - 1) % worldSize;
  const peers = new Set([prev, next]);
  if (hub === rank) for (let r = 0; r < worldSize; r++) peers.add(r);
  else if (hub !== undefined && hub >= 0 && hub < worldSize) peers.add(hub);
  peers.delete(rank);
  return [...peers].sort((a, b) => a - b);
}

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
  /** A rank every rank connects to at setup (CpuGroupOptions.hub). */
  hub?: number;
}

export class Mesh {
  readonly rank: number;
  readonly worldSize: number;
  readonly log: Logger;
  private readonly hs: Handshake;
  private listener: Listener | undefined;
  /** Per peer: the parser of what it sends us (read from the connection we dialed). */
  private inbound: (Inbound | undefined)[];
  private dialed: (net.Socket | undefined)[];
  /** Per peer: how we send to it (on the connection it dialed to us). */
  private links: (Link | undefined)[];
  /** Per peer: the accepted connection finished its handshake (shm offer answered). */
  private outReady: boolean[];
  /** Per peer: the largest frame payload it accepts (from its HELLO). */
  private peerMaxFrame: number[];
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
  /** A peer's published address (from setup's multiGet; undefined until then). */
  private addrOf: (r: number) => string | undefined = () => undefined;
  /** Peers that dialed us before we knew their address: dialed back once we do. */
  private wanted = new Set<number>();
  /** Per peer: frames waiting for the send side of the pair (sent in order once it is ready). */
  private queued: SendQueues;
  /** Setup has finished: a dial that fails from now on loses the group (or finds the peer gone). */
  private ready = false;
  /** Setup's deadline (performance.now() ms): it bounds the dials made during setup. */
  private deadline = 0;

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
    this.queued = new SendQueues(opts.worldSize);
  }

  /** Listens, publishes this rank's address, reads every peer's and connects the ring neighbours. */
  static async connect(opts: MeshOptions): Promise<Mesh> {
    const m = new Mesh(opts);
    try {
      await m.setup();
    } catch (e) {
      const ours = m.close();
      // A failed setup must not leave addresses behind (a stale key outlives the group): ours
      // (close deletes it), and those of peers that refused our last dial — a rank that died
      // after publishing its address, which nobody else would ever delete.
      const stale = [...m.refusedBy].map((r) => m.addrKey(r));
      await Promise.all([ours, ...stale.map((k) => opts.store.deleteKey(k, { timeoutMs: 2000 }).catch((err) => m.log.debug(`could not delete ${k}: ${err}`)))]);
      throw e;
    }
    return m;
  }

  /** This rank's address key while it is in the store (close deletes it). */
  private published: string | undefined;
  /** Peers whose listener refused our latest dial (their address is stale: they died). */
  private readonly refusedBy = new Set<number>();

  private addrKey(r: number): string {
    return addrKey(this.opts, r);
  }

  /**
   * How this rank talks to `peer`: both directions over shared memory, both over TCP, or mixed;
   * 'none' while the pair is not connected (no operation has needed it yet).
   */
  transportOf(peer: number): 'self' | 'tcp' | 'shm' | 'mixed' | 'none' {
    if (peer === this.rank) return 'self';
    if (!this.outReady[peer] || !this.inbound[peer]?.acked) return 'none';
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
    this.send(peer, { kind: KIND_VERDICT, tag: fp, seq, slot: 0 }, NO_PAYLOAD, { copy: true }, () => {});
  }

  /** Called when a peer destroys its group on purpose (after its last frame to us). */
  onDeparted(fn: (peer: number) => void): void {
    this.departHandler = fn;
  }

  private async setup(): Promise<void> {
    const { rank, worldSize, timeoutMs, signal } = this.opts;
    const t0 = performance.now();
    const left = () => Math.max(1, timeoutMs - (performance.now() - t0));
    this.deadline = t0 + timeoutMs;
    if (worldSize === 1) return;
    await this.listen();
    this.addrOf = await exchangeAddresses(this.opts, `${this.address.host}:${this.address.port}`, left, (k) => { this.published = k; });
    const eager = setupPeers(rank, worldSize, this.opts.hub);

    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        const missing = this.missingPeers(eager);
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
        if (this.missingPeers(eager).length === 0) { cleanup(); resolve(); }
      };
      for (const r of eager) this.connectTo(r);
      // Peers that dialed us while we were still reading the addresses get their dial back now.
      for (const r of this.wanted) this.connectTo(r);
      this.wanted.clear();
      this.readyCheck();
    });
    this.ready = true;
    // The listener stays open (other pairs connect on demand) and our address key stays in the
    // store until close: a peer may read it again to dial us (a stale address it read first).
    this.startLiveness();
  }

  /** The heartbeat and silence check (liveness.ts), once the mesh is complete. */
  private startLiveness(): void {
    this.stopLiveness = watchLiveness({
      rank: this.rank,
      worldSize: this.worldSize,
      active: () => !this.closing && !this.lost,
      departed: (p) => this.departed.has(p),
      watched: (p) => this.inbound[p] !== undefined,
      ping: (p, frame, payload, done) => { if (this.outReady[p]) this.links[p]?.send(frame, payload, { copy: true }, done); },
      bytesIn: (p) => this.inbound[p]?.bytesIn ?? 0,
      lose: (silent, why) => this.lose(silent[0], why, false, silent),
      alsoCut: (silent) => this.sameHostUnreachable(silent),
    });
  }

  /** Unconnected peers published at the host of a silent one that do not answer a TCP connect. */
  private sameHostUnreachable(silent: number[]): Promise<number[]> {
    const unconnected = [...Array(this.worldSize).keys()].filter((r) => r !== this.rank && !this.inbound[r] && !this.departed.has(r));
    const ms = Math.min(1000, Math.max(100, (setting('GROUPCOMM_LIVENESS_MS') ?? 0) / 4));
    return unreachableWith(silent, unconnected, this.addrOf, ms);
  }

  private missingPeers(peers: number[]): number[] {
    return peers.filter((r) => !(this.outReady[r] && this.inbound[r]?.acked));
  }

  /** The peers this rank has a complete pair of connections with (tests, the bench). */
  connectedPeers(): number[] {
    const m: number[] = [];
    for (let r = 0; r < this.worldSize; r++) if (r !== this.rank && this.outReady[r] && this.inbound[r]?.acked) m.push(r);
    return m;
  }

  /**
   * Connects the pair with `peer` if it is not (being) connected: dials it (our receive side);
   * the peer dials back when it accepts (our send side). Idempotent.
   */
  private connectTo(peer: number): void {
    if (peer === this.rank || this.inbound[peer] || this.closing || this.lost) return;
    const addr = this.addrOf(peer);
    if (addr === undefined) {
      // Setup has not read the addresses yet (only a peer's dial gets us here that early).
      this.wanted.add(peer);
      return;
    }
    this.dial(peer, addr, this.addrKey(peer));
  }

  /** The send side of the pair with `peer` is ready: its queued frames go out, in order. */
  private sendReady(peer: number): void {
    this.outReady[peer] = true;
    this.queued.flush(peer);
    this.readyCheck();
  }

  private async listen(): Promise<void> {
    const o = this.opts;
    this.listener = await Listener.open({
      host: o.host, port: o.port, what: `CPU group '${o.groupName}' rank ${o.rank}`, worldSize: o.worldSize,
      helloTimeoutMs: o.helloTimeoutMs, hs: this.hs, log: this.log,
      connected: (r) => this.links[r] !== undefined,
      accepted: (s, h) => { if (this.closing) s.destroy(); else this.accept(s, h); },
    });
    this.address = { host: o.advertiseHost ?? o.host, port: this.listener.port };
  }

  /** An accepted socket whose HELLO checked out: the link we send to that rank on. */
  private accept(s: net.Socket, h: PeerHello): void {
    const peer = h.rank;
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
          this.sendReady(peer);
        },
      });
    } else {
      this.links[peer] = new TcpLink({ peer, socket: s, events, pool: this.sendPool });
    }
    this.peerMaxFrame[peer] = h.maxFrameBytes;
    s.write(this.hs.ack(h, seg));
    this.log.debug(`accepted rank ${peer} from ${s.remoteAddress}:${s.remotePort}`);
    if (!seg) this.sendReady(peer);
    // The peer connected to send to us: our side of the pair (reading from it) follows.
    this.connectTo(peer);
  }

  private dial(peer: number, addr: string, key: string): void {
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
    dialPeer({
      peer, addr, key, store: this.opts.store, inbound,
      // During setup the setup's deadline bounds the retries; after it, the group's timeout from now.
      deadline: this.ready ? performance.now() + this.opts.timeoutMs : this.deadline,
      afterSetup: () => this.ready,
      active: () => !this.closing && !this.lost,
      refused: (yes) => (yes ? this.refusedBy.add(peer) : this.refusedBy.delete(peer)),
      // The peer's CHALLENGE comes first; the HELLO answers it (see the inbound's challenge event).
      // A dial that connects after close (setup failed or was aborted meanwhile) is closed at once:
      // close() could not destroy it, and a silent peer would keep it, and the process, alive.
      connected: (s) => { if (this.closing) s.destroy(); else this.dialed[peer] = s; },
      lost: (why) => this.lose(peer, why),
      failed: (e, at) => {
        if (this.setupError) {
          this.setupError(peerLostError(`rank ${this.rank}: cannot connect to rank ${peer} at ${at}: ${e.message}`, { rank: this.rank, peerRank: peer, cause: e }));
        } else {
          this.lose(peer, `cannot connect to it at ${at}: ${e.message}`);
        }
      },
      left: () => this.onBye(peer),
    });
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
    this.queued.fail(`rank ${peer} left the group`, [peer]);
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
    this.queued.fail(err.message);
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

  /**
   * Routes frames with `key` from `peer` to `sink`, first handing over any that came early;
   * connects the pair first if no operation has needed it yet.
   */
  register(peer: number, key: string, sink: Sink): void {
    this.connectTo(peer);
    this.inbound[peer]?.register(key, sink);
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

  /**
   * Sends one frame to `peer` (see Link.send for when `payload` may change again). A pair not
   * connected yet is connected now; its frames wait, in order, until the send side is ready.
   */
  send(peer: number, frame: FrameHeader, payload: Uint8Array, opts: SendOptions, done: WriteDone): void {
    if (!this.outReady[peer] || this.queued.waiting(peer)) {
      if (this.closing || this.lost || this.departed.has(peer) || peer === this.rank || !(peer >= 0 && peer < this.worldSize)) {
        done(new Error(`no connection to rank ${peer}`));
        return;
      }
      this.queued.push(peer, frame, payload, opts, done, (f, p, o, d) => this.send(peer, f, p, o, d));
      this.connectTo(peer);
      return;
    }
    const link = this.links[peer];
    if (!link) {
      done(new Error(`no connection to rank ${peer}`));
      return;
    }
    if (payload.byteLength > this.peerMaxFrame[peer]) {
      // A limit, not a lost link: the operation fails with it (Exchange.send), nothing is sent.
      done(invalidArgument(`rank ${this.rank}: a frame of ${payload.byteLength} bytes is above rank ${peer}'s maximum of ${this.peerMaxFrame[peer]} (GROUPCOMM_CPU_MAX_FRAME_BYTES)`,
        { rank: this.rank, peerRank: peer }));
      return;
    }
    link.send(frame, payload, opts, done);
  }

  /**
   * Closes every connection and the listener now. Each peer first gets a goodbye frame behind
   * everything already written to it, so it can tell a departure from a crash; sockets that
   * have not drained within a second are destroyed. Idempotent.
   */
  close(): Promise<void> {
    if (this.closing) return Promise.resolve();
    this.closing = true;
    this.queued.fail('the group was closed');
    this.stopLiveness?.();
    this.listener?.close();
    this.listener = undefined;
    for (const link of this.links) link?.close();
    for (const s of this.dialed) s?.destroy();
    // Nothing reads or writes a ring once its link is closed (both paths check), so the
    // mappings can go now; the peer keeps its own mapping of each segment until it closes.
    this.hs.closeSegments();
    // Our address goes with us: the store does not grow, a later group of this name and epoch
    // finds no stale address, and a peer that dials us from now on finds the key gone (we left).
    const key = this.published;
    this.published = undefined;
    if (!key) return Promise.resolve();
    return this.opts.store.deleteKey(key, { timeoutMs: 2000 }).then(() => {}, (e) => this.log.debug(`could not delete ${key}: ${e}`));
  }
}
