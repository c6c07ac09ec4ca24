/**
 * CpuGroup: collectives on CPU tensors between the ranks of one group, over a TCP mesh (the gloo
 * of groupcomm). See docs/cpu-group.md for the algorithms, the wire format and the knobs.
 *
 * It implements the collective shape of host/core/collectives.ts, aliasing contract included:
 * inputs are never written; results go into `out` when given (checked for dtype and shape),
 * else into a new tensor; allReduce and broadcast run in place when `out` is the input itself,
 * every other overlap of `out` and the input is refused. recv fills the tensor it is given. No
 * tensor passed to an operation may be changed by the caller until that operation settles.
 *
 * This file is the public class: creation, the operation runner, point to point and the
 * lifecycle. options.ts holds the options, checks.ts the argument checks, bodies.ts the
 * collectives' bodies.
 */
import { chooseAddress, isUnspecified, masterAddr } from '../base/netaddr.js';
import { effectiveTimeout, guard, settled, type OpOptions } from '../base/deadline.js';
import { setting } from '../base/config.js';
import { asyncDispose, type CloseOptions, reasonSuffix } from '../base/lifecycle.js';
import { checkFactory, factoryToken } from '../base/factory.js';
import { logger, othersOf, traceOp, type Logger } from '../base/log.js';
import {
  abortedError, destroyedError, GroupcommError, invalidArgument, isGroupcommError, mismatchError, peerLostError, timeoutError, withRank,
} from '../base/errors.js';
import { bytesOf, type CpuTensor } from '../core/tensor.js';
import type {
  BroadcastOptions, Collectives, GatherOptions, OutOptions as OutOpts, ReduceOptions as ReduceOpts,
} from '../core/collectives.js';
import type { ReduceOp } from '../core/reduce.js';
import { dissemination, Staging, type Tuning } from './algorithms.js';
import { Exchange, told } from './exchange.js';
import { Schedules } from './schedule.js';
import { Mesh, type Transport } from './mesh.js';
import { checkExposure, resolveSecret } from '../base/secret.js';
import { KIND_COLL, KIND_P2P } from './wire.js';
import * as variable from './variable.js';
import type { SizesOptions, SizesReduceOptions, AllToAllSplitsOptions } from '../core/collectives.js';
import { describeMismatch, fingerprint, type CallShape, type CollectiveName } from './fingerprint.js';
import { shmReduceOf, transportOf, tuningOf, type CpuGroupOptions } from './options.js';
import { SharedSegments } from './segments.js';
import { CallContext } from './checks.js';
import {
  prepareAllGather, prepareAllReduce, prepareAllToAll, prepareBroadcast, prepareGather, prepareReduceScatter, prepareScatter,
} from './bodies.js';

export type { ReduceOp, Transport, CpuGroupOptions };

export type ReduceOptions = ReduceOpts<CpuTensor>;
export type OutOptions = OutOpts<CpuTensor>;

/** The size of an operation's result tensor, for its trace line (0 when it has none). */
const resultBytes = (v: unknown): number => (v as CpuTensor | undefined)?.data?.byteLength ?? 0;

/** `allReduce #3` → `allReduce#3`; `send to rank 1 (tag 0)` → `send:tag0` (the peer is its own field). */
const traceName = (what: string): string => what.replace(' #', '#').replace(/ (?:to|from) rank \d+ \(tag (\d+)\)$/, ':tag$1');

/** Only create() constructs a group (base/factory.ts). */
const MADE = factoryToken('CpuGroup');
const log = logger('CPU');

export class CpuGroup implements Collectives<CpuTensor> {
  readonly rank: number;
  readonly worldSize: number;
  readonly groupName: string;
  readonly epoch: number;
  readonly timeoutMs: number;
  /** The rank, size, tuning and schedules the checks and collective bodies read (checks.ts, bodies.ts). */
  private readonly c: CallContext;
  private seq = 0;
  private tail: Promise<unknown> = Promise.resolve();
  /** Operations in flight, each with a promise that settles when it has (close() waits for them). */
  private active = new Map<Exchange, Promise<void>>();
  private p2pSeq = new Map<string, number>();
  private broken: GroupcommError | undefined;
  /** A peer's verdict on a collective this rank finished (it only sent): the next operation fails with it. */
  private verdict: GroupcommError | undefined;
  /** The last few collectives that succeeded here, by seq & 7: their seq and fingerprint (for a late verdict). */
  private readonly doneSeq = new Float64Array(8).fill(-1);
  private readonly doneFp = new Uint32Array(8);
  private readonly lostListeners: ((err: GroupcommError) => void)[] = [];
  // Schedules and segment plans from the core, computed once per group (host/cpu/schedule.ts).
  private readonly plans: Schedules;
  /** The first close() or abort(): from then on new operations are refused. */
  private closing: Promise<void> | undefined;
  private aborted = false;
  /** Set when GROUPCOMM_DEBUG=trace: each operation then logs one line (base/log.ts traceOp). */
  private readonly tracer: Logger | undefined;

  /** The shared-segment allReduce's segments (segments.ts); unmapped when the group closes. */
  private readonly segments: SharedSegments;

  private constructor(token: symbol, private readonly mesh: Mesh, opts: CpuGroupOptions, timeoutMs: number, tuning: Tuning & { smallBytes: number },
    shmReduce: { minBytes: number; chunkBytes: number; shm: boolean }) {
    checkFactory(token, MADE, 'CpuGroup', 'const group = await CpuGroup.create({ store, rank, worldSize, groupName })',
      'a CPU group connects its mesh of peers before it is usable');
    this.rank = opts.rank;
    this.worldSize = opts.worldSize;
    this.groupName = opts.groupName;
    this.epoch = opts.epoch ?? 0;
    this.timeoutMs = timeoutMs;
    this.plans = new Schedules(this.rank, this.worldSize, tuning.chunkBytes);
    this.segments = new SharedSegments({
      rank: this.rank, worldSize: this.worldSize, ...shmReduce, log: mesh.log,
    });
    this.c = new CallContext(this.rank, this.worldSize, tuning.smallBytes,
      { chunkBytes: tuning.chunkBytes, window: tuning.window, plans: this.plans }, new Staging(), this.plans, this.segments);
    this.tracer = log.tracing ? log.child(`${this.groupName} rank ${this.rank}/${this.worldSize}`) : undefined;
    mesh.onLost((err) => {
      this.broken = err;
      for (const ex of this.active.keys()) ex.fail(err);
      for (const fn of this.lostListeners) fn(err);
    });
    mesh.onDeparted((peer) => {
      for (const ex of this.active.keys()) ex.checkDeparted(peer);
    });
    mesh.onVerdict((peer, seq, theirFp) => this.onVerdict(peer, seq, theirFp));
  }

  /** Listens, publishes this rank's address in the store, reads the peers' and connects the ring neighbours. */
  static async create(opts: CpuGroupOptions): Promise<CpuGroup> {
    const { rank, worldSize, groupName } = opts;
    if (!Number.isInteger(worldSize) || worldSize < 1) throw invalidArgument(`worldSize must be an integer >= 1, got ${worldSize}`);
    if (!Number.isInteger(rank) || rank < 0 || rank >= worldSize) throw invalidArgument(`rank must be in [0, ${worldSize}), got ${rank}`);
    if (typeof groupName !== 'string' || groupName.length === 0 || Buffer.byteLength(groupName) > 1024) {
      throw invalidArgument('groupName must be a non-empty string of at most 1024 bytes');
    }
    if (opts.hub !== undefined && !(Number.isInteger(opts.hub) && opts.hub >= 0 && opts.hub < worldSize)) throw invalidArgument(`hub must be a rank in [0, ${worldSize}), got ${opts.hub}`);
    const epoch = opts.epoch ?? 0;
    if (!Number.isSafeInteger(epoch) || epoch < 0) throw invalidArgument(`epoch must be an integer >= 0, got ${epoch}`);
    const timeoutMs = effectiveTimeout(opts);
    const tuning = tuningOf(opts);
    const transport = transportOf(opts);
    const shmReduce = { ...shmReduceOf(opts), shm: transport.transport !== 'tcp' };
    const secret = resolveSecret(opts.secret, 'CpuGroup');
    const maxFrameBytes = opts.maxFrameBytes ?? setting('GROUPCOMM_CPU_MAX_FRAME_BYTES');
    if (!Number.isSafeInteger(maxFrameBytes) || maxFrameBytes < 1) throw invalidArgument(`maxFrameBytes must be a positive integer, got ${maxFrameBytes}`);
    // Where to listen and what to tell peers: the given host, else the address chosen by
    // GROUPCOMM_SOCKET_IFNAME or the route toward MASTER_ADDR (base/netaddr.ts); a wildcard
    // (0.0.0.0, ::) is bound but never advertised.
    const host = opts.host ?? await chooseAddress({ toward: masterAddr() });
    const advertiseHost = isUnspecified(host) ? await chooseAddress({ toward: masterAddr() }) : host;
    checkExposure(`CPU group '${groupName}' rank ${rank}`, host, secret, opts.insecure, log);
    const mesh = await Mesh.connect({
      framing: { chunkBytes: tuning.chunkBytes, smallBytes: tuning.smallBytes },
      store: opts.store, rank, worldSize, groupName, epoch,
      host, advertiseHost,
      port: opts.port ?? 0,
      timeoutMs,
      signal: opts.signal,
      ...transport,
      recvBufferBytes: Math.floor(opts.recvBufferBytes ?? setting('GROUPCOMM_CPU_RECV_BUFFER_BYTES') ?? 1024 * 1024),
      secret,
      maxFrameBytes,
      hub: opts.hub,
    });
    return new CpuGroup(MADE, mesh, opts, timeoutMs, tuning, shmReduce);
  }

  /**
   * How this rank exchanges data with `peer`: 'shm' (shared-memory rings both ways), 'tcp',
   * 'mixed' (one direction each; a failed shm setup on one side), 'self', or 'none' while the
   * pair is not connected: pairs other than the ring neighbours connect when an operation first
   * needs them (docs/cpu-group.md, "Setup").
   */
  transportTo(peer: number): 'self' | 'tcp' | 'shm' | 'mixed' | 'none' {
    if (!Number.isInteger(peer) || peer < 0 || peer >= this.worldSize) throw invalidArgument(`peer must be in [0, ${this.worldSize}), got ${peer}`, { rank: this.rank });
    return this.mesh.transportOf(peer);
  }

  /** True once large allReduces reduce straight out of the ranks' shared segments (docs/cpu-group.md). */
  get sharedSegments(): boolean {
    return this.segments.active;
  }

  /** The peers this rank is connected with so far (both directions of the pair up), ascending. */
  connectedPeers(): number[] {
    return this.mesh.connectedPeers();
  }

  /**
   * Calls `fn` with the first connection loss (a peer gone without its goodbye), whether or not
   * an operation was in flight; at once when it already happened. The coordinator marks its whole
   * group failed with it.
   */
  onLost(fn: (err: GroupcommError) => void): void {
    if (this.broken) fn(this.broken);
    else this.lostListeners.push(fn);
  }

  /** True once `peer` destroyed its end of the group on purpose (its goodbye arrived). */
  hasLeft(peer: number): boolean {
    return this.mesh.departed.has(peer);
  }

  /** Where this rank listens (for peers that connect on demand; closed with the group). */
  get address(): { host: string; port: number } {
    return { ...this.mesh.address };
  }

  // ---- the operation runner -------------------------------------------------------------

  /**
   * `peer` received a frame of our collective `seq` made for another call than its own (a
   * KIND_VERDICT): that collective fails here too if it is under way, else (this rank only
   * sent in it, and it resolved) the collectives under way now, or else the next operation, do.
   */
  private onVerdict(peer: number, seq: number, theirFp: number): void {
    let ex: Exchange | undefined;
    for (const e of this.active.keys()) if (e.kind === KIND_COLL && e.seq === seq) ex = e;
    const mine = ex?.tag ?? (this.doneSeq[seq & 7] === seq ? this.doneFp[seq & 7] : undefined);
    if (mine === undefined) return; // failed here already, or too long ago to say
    const d = describeMismatch(mine, theirFp, peer);
    const err = mismatchError(`CPU group '${this.groupName}' rank ${this.rank}: rank ${peer} received a frame of this rank's ` +
      `collective #${seq} made for another call than its own: ${d.text}`, { rank: this.rank, peerRank: peer });
    told.add(err);
    if (ex) return ex.fail(err);
    // Collectives under way now came after it (and wait on ranks that failed it): they fail too.
    let failed = false;
    for (const e of this.active.keys()) if (e.kind === KIND_COLL) { e.fail(err); failed = true; }
    if (!failed) this.verdict ??= err;
  }

  private check(): void {
    if (this.closing) throw destroyedError(`CPU group '${this.groupName}' was closed`, { rank: this.rank });
    if (this.verdict) {
      const v = this.verdict;
      this.verdict = undefined;
      throw v;
    }
    if (this.broken) {
      throw peerLostError(`CPU group '${this.groupName}' is unusable: ${this.broken.message}`, {
        rank: this.rank, peerRank: this.broken.peerRank, peerRanks: this.broken.peerRanks, cause: this.broken,
      });
    }
  }

  /**
   * Runs `body` with its own Exchange under the op's deadline. Collectives (`queued`) start one
   * after the other in call order, which is what keeps every rank's sequence numbers in step;
   * point-to-point ops start at once (their keys are per peer and tag).
   */
  private run<T>(what: string, ex: Exchange, queued: boolean, opts: OpOptions | undefined, body: (ex: Exchange) => Promise<T>, bytes?: number): Promise<T> {
    const timeoutMs = effectiveTimeout(opts, this.timeoutMs);
    const exec = async () => {
      if (this.broken) ex.fail(this.broken);
      const v = await body(ex);
      await ex.flushed();
      ex.release(false);
      if (queued) {
        this.doneSeq[ex.seq & 7] = ex.seq;
        this.doneFp[ex.seq & 7] = ex.tag;
      }
      return v;
    };
    const p = queued ? this.tail.then(exec) : exec();
    const done = p.then(() => undefined, (e) => { ex.fail(isGroupcommError(e) ? e : (e as GroupcommError)); });
    if (queued) this.tail = done;
    this.active.set(ex, done);
    void done.finally(() => this.active.delete(ex));
    const g = guard(p, {
      timeoutMs,
      signal: opts?.signal,
      what,
      fields: { rank: this.rank },
      onTimeout: (elapsedMs) => {
        const waiting = ex.waitingOn();
        return timeoutError(
          `CPU group '${this.groupName}' rank ${this.rank}: ${what} timed out after ${timeoutMs}ms` +
            (waiting.length ? `, waiting for ranks ${waiting.join(', ')}` : ''),
          { rank: this.rank, peerRanks: waiting, timeoutMs, elapsedMs });
      },
      cancel: (err) => ex.fail(err),
    });
    // bytes: a send's tensor, else the result's size (collectives and receives resolve with it).
    return this.tracer ? traceOp(this.tracer, traceName(what), bytes ?? resultBytes, ex.peers ?? othersOf(this.rank, this.worldSize), g) : g;
  }

  private collective<T>(what: string, opts: OpOptions | undefined, body: (ex: Exchange) => Promise<T>, fp: number): Promise<T> {
    try {
      this.check();
    } catch (e) {
      return Promise.reject(e);
    }
    // The call's fingerprint rides in every frame's tag: a peer that made another call is named.
    const ex = new Exchange(this.mesh, KIND_COLL, fp, this.seq++ >>> 0);
    return this.run(`${what} #${ex.seq}`, ex, true, opts, body);
  }

  // ---- argument checks ------------------------------------------------------------------

  // ---- collectives ----------------------------------------------------------------------

  /** `src`'s tensor on every rank, into `out` (in place: `out: tensor`) or a new tensor. */
  broadcast<T extends CpuTensor>(tensor: T, opts: BroadcastOptions<T>): Promise<T>;
  broadcast(tensor: CpuTensor, opts: BroadcastOptions<CpuTensor>): Promise<CpuTensor> {
    return this.start('broadcast', opts, () => prepareBroadcast(this.c, tensor, opts));
  }

  /** The reduction of every rank's `input` with `op` (default sum); in place with `out: input`. */
  allReduce<T extends CpuTensor>(input: T, opts?: ReduceOpts<T>): Promise<T>;
  allReduce(input: CpuTensor, opts: ReduceOptions = {}): Promise<CpuTensor> {
    return this.start('allReduce', opts, () => prepareAllReduce(this.c, input, opts));
  }

  /** Concatenates every rank's `input` along dim 0 in rank order: [P*d0, ...] (0-d input: [P]). */
  allGather<T extends CpuTensor>(input: T, opts?: OutOpts<T>): Promise<T>;
  allGather(input: CpuTensor, opts: OutOptions = {}): Promise<CpuTensor> {
    return this.start('allGather', opts, () => prepareAllGather(this.c, input, opts));
  }

  /** Reduces `input` ([P*n, ...]) over all ranks and leaves block `rank` ([n, ...]) on each. */
  reduceScatter<T extends CpuTensor>(input: T, opts?: ReduceOpts<T>): Promise<T>;
  reduceScatter(input: CpuTensor, opts: ReduceOptions = {}): Promise<CpuTensor> {
    return this.start('reduceScatter', opts, () => prepareReduceScatter(this.c, input, opts));
  }

  /** Concatenates every rank's `input` on rank `dst` (like allGather); other ranks get undefined. */
  gather<T extends CpuTensor>(input: T, opts: GatherOptions<T>): Promise<T | undefined>;
  gather(input: CpuTensor, opts: GatherOptions<CpuTensor>): Promise<CpuTensor | undefined> {
    return this.start('gather', opts, () => prepareGather(this.c, input, opts));
  }

  /** Rank `src` splits `t` ([P*n, ...]) along dim 0; rank r receives block r into `out` ([n, ...]). */
  scatter<T extends CpuTensor>(t: CpuTensor | undefined, opts: OpOptions & { src: number; out: T }): Promise<T>;
  scatter(t: CpuTensor | undefined, opts: OpOptions & { src: number; out: CpuTensor }): Promise<CpuTensor> {
    return this.start('scatter', opts, () => prepareScatter(this.c, t, opts));
  }

  /**
   * Block p of `input` ([P*n, ...]) goes to rank p; block p of the result came from rank p. With
   * `inputSplits` / `outputSplits` (rows per rank), the blocks have those sizes (variable.ts).
   */
  allToAll<T extends CpuTensor>(input: T, opts?: AllToAllSplitsOptions<T>): Promise<T>;
  allToAll(input: CpuTensor, opts: OutOptions & AllToAllSplitsOptions<CpuTensor> = {}): Promise<CpuTensor> {
    if (opts.inputSplits !== undefined || opts.outputSplits !== undefined) return variable.allToAllv(this, input, opts);
    return this.start('allToAll', opts, () => prepareAllToAll(this.c, input, opts));
  }

  /** Every rank's `input` ([sizes[r], …]) concatenated along dim 0 in rank order: [Σ sizes, …] (variable.ts). */
  allGatherv<T extends CpuTensor>(input: T, opts: SizesOptions<T>): Promise<T>;
  allGatherv(input: CpuTensor, opts: SizesOptions<CpuTensor>): Promise<CpuTensor> {
    return variable.allGatherv(this, input, opts);
  }

  /** `input` ([Σ sizes, …]) reduced over every rank; rank r gets its sizes[r] rows (variable.ts). */
  reduceScatterv<T extends CpuTensor>(input: T, opts: SizesReduceOptions<T>): Promise<T>;
  reduceScatterv(input: CpuTensor, opts: SizesReduceOptions<CpuTensor>): Promise<CpuTensor> {
    return variable.reduceScatterv(this, input, opts);
  }

  /** The queued runner for variable.ts (its checks throw before anything is queued). Not for callers. */
  runVariable<T>(what: CollectiveName, opts: OpOptions | undefined, prepare: () => (ex: Exchange) => Promise<T>): Promise<T> {
    // Only the collective is fingerprinted: sizes legitimately differ per rank, and variable.ts
    // checks dtype, row shape and sizes itself in the header every peer sends first.
    return this.start(what, opts, () => [{ collective: what }, prepare()]);
  }

  /** Resolves once every rank has entered the barrier. */
  barrier(opts: OpOptions = {}): Promise<void> {
    return this.start('barrier', opts, () => [{ collective: 'barrier' }, (ex) => dissemination(ex, this.plans.dissemination())]);
  }

  /** Validates synchronously (bad arguments reject before anything is queued), then queues. */
  private start<T>(what: string, opts: OpOptions | undefined, prepare: () => [CallShape, (ex: Exchange) => Promise<T>]): Promise<T> {
    let body: (ex: Exchange) => Promise<T>;
    let call: CallShape;
    try {
      [call, body] = prepare();
    } catch (e) {
      // Every refusal names this rank (checks that do not know it, variable.ts's, get it here).
      return Promise.reject(withRank(e, this.rank));
    }
    return this.collective(what, opts, body, fingerprint(call));
  }

  // ---- point to point -------------------------------------------------------------------

  private p2p(dir: 'send' | 'recv', peer: number, tag: number): Exchange {
    const k = `${dir}:${peer}:${tag}`;
    const seq = this.p2pSeq.get(k) ?? 0;
    this.p2pSeq.set(k, seq + 1);
    return new Exchange(this.mesh, KIND_P2P, tag, seq >>> 0, [peer]);
  }

  /** Sends `tensor` to `dst`; matched in order with `dst`'s recv calls of the same tag. */
  send(tensor: CpuTensor, dst: number, opts: OpOptions & { tag?: number } = {}): Promise<void> {
    try {
      this.check();
      const x = this.c.cpu(tensor, 'send');
      const peer = this.c.peer(dst, 'send dst', false);
      const ex = this.p2p('send', peer, this.c.tagOf(opts.tag));
      return this.run(`send to rank ${peer} (tag ${ex.tag})`, ex, false, opts, async (e) => {
        e.send(peer, 0, bytesOf(x));
      }, x.data.byteLength);
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** Fills `dst` with the next tensor `src` sent with this tag (sizes must match); resolves with `dst`. */
  recv<T extends CpuTensor>(dst: T, src: number, opts?: OpOptions & { tag?: number }): Promise<T>;
  recv(dst: CpuTensor, src: number, opts: OpOptions & { tag?: number } = {}): Promise<CpuTensor> {
    try {
      this.check();
      const x = this.c.cpu(dst, 'recv');
      const peer = this.c.peer(src, 'recv src', false);
      const ex = this.p2p('recv', peer, this.c.tagOf(opts.tag));
      return this.run(`recv from rank ${peer} (tag ${ex.tag})`, ex, false, opts, async (e) => {
        await e.recv(peer, 0, bytesOf(x));
        return x;
      });
    } catch (e) {
      return Promise.reject(e);
    }
  }

  // ---- lifecycle (base/lifecycle.ts) -------------------------------------------------------

  /**
   * Graceful: refuses new operations, lets the ones in flight finish (within `timeoutMs`,
   * default the group's timeout, and until `signal` fires; then they are aborted), then closes
   * the mesh: each peer gets a goodbye frame behind everything already sent to it (their
   * operations that still need this rank fail with ERR_GROUPCOMM_PEER_LEFT naming it).
   * Idempotent.
   */
  close(opts: CloseOptions = {}): Promise<void> {
    this.closing ??= (async () => {
      const timeoutMs = effectiveTimeout(opts, this.timeoutMs);
      if (!await settled(this.active.values(), { timeoutMs, signal: opts.signal })) {
        this.abortOps(opts.signal?.aborted ? opts.signal.reason : `close() waited ${timeoutMs}ms for the operations in flight`);
      }
      // Resolves once our address key is deleted (bounded; a failure is only logged).
      const closed = this.mesh.close();
      this.segments.close();
      await closed;
    })();
    return this.closing;
  }

  /** The same as close() (the name this class had first). */
  destroy(opts?: CloseOptions): Promise<void> {
    return this.close(opts);
  }

  /**
   * Immediate and local: operations in flight reject with ERR_GROUPCOMM_ABORTED (`cause`: the
   * reason) and the mesh closes now. Idempotent.
   */
  abort(reason?: unknown): Promise<void> {
    if (!this.aborted) {
      this.abortOps(reason);
      void this.mesh.close();
      this.segments.close(); // once the aborted operations stop touching them
      this.closing ??= Promise.resolve();
    }
    return this.closing!;
  }

  async [asyncDispose](): Promise<void> {
    await this.close();
  }

  private abortOps(reason: unknown): void {
    this.aborted = true;
    const why = reasonSuffix(reason);
    const err = abortedError(`CPU group '${this.groupName}' was aborted${why}`, { rank: this.rank, cause: reason });
    for (const ex of this.active.keys()) ex.fail(err);
  }
}
