/**
 * CpuGroup: collectives on CPU tensors between the ranks of one group, over a TCP mesh (the gloo
 * of groupcomm). See docs/cpu-group.md for the algorithms, the wire format and the knobs.
 *
 * It implements the collective shape of host/core/collectives.ts, aliasing contract included:
 * inputs are never written; results go into `out` when given (checked for dtype and shape),
 * else into a new tensor; allReduce and broadcast run in place when `out` is the input itself,
 * every other overlap of `out` and the input is refused. recv fills the tensor it is given. No
 * tensor passed to an operation may be changed by the caller until that operation settles.
 */
import { chooseAddress, isUnspecified, masterAddr } from '../base/netaddr.js';
import type { Store } from '../store/types.js';
import { effectiveTimeout, guard, settled, type OpOptions } from '../base/deadline.js';
import { setting } from '../base/config.js';
import { asyncDispose, type CloseOptions } from '../base/lifecycle.js';
import { checkFactory, factoryToken } from '../base/factory.js';
import { logger, othersOf, traceOp, type Logger } from '../base/log.js';
import {
  abortedError, destroyedError, GroupcommError, invalidArgument, isGroupcommError, peerLostError, timeoutError,
} from '../base/errors.js';
import { bytesOf, empty, isCpu, itemSize, numel, type CpuTensor, type Tensor } from '../core/tensor.js';
import { checkOutAliasing } from '../core/alias.js';
import {
  gatheredShape, scatteredShape,
  type BroadcastOptions, type Collectives, type GatherOptions, type OutOptions as OutOpts, type ReduceOptions as ReduceOpts,
} from '../core/collectives.js';
import { finishAvg, reduceBytes, REDUCE_OPS, type ReduceOp } from '../core/reduce.js';
import {
  chainBroadcast, dissemination, exchangeAll, recursiveDoubling, ring, Staging, treeBroadcast, type Pipeline, type Tuning,
} from './algorithms.js';
import { Exchange } from './exchange.js';
import { Schedules, type BinomialTree } from './schedule.js';
import { Mesh, type Transport } from './mesh.js';
import { validRingBytes } from './shm.js';
import { checkExposure, resolveSecret } from '../base/secret.js';
import { KIND_COLL, KIND_P2P } from './wire.js';
import * as variable from './variable.js';
import type { SizesOptions, SizesReduceOptions, SplitOptions } from '../core/collectives.js';
import { fingerprint, type CallShape, type CollectiveName } from './fingerprint.js';

/** The shape and dim a call is checked by: the caller's own view (OutOptions.call) when it gave one. */
function callOf(x: CpuTensor, opts: OutOptions | undefined): { shape: readonly number[]; dim?: number } {
  return opts?.call ?? { shape: x.shape };
}

export type { ReduceOp, Transport };

export interface CpuGroupOptions {
  store: Store;
  rank: number;
  worldSize: number;
  /** Names the group in the store and in every handshake; groups with other names are refused. */
  groupName: string;
  /**
   * Address to listen on and to publish (default: GROUPCOMM_SOCKET_IFNAME's, else the source
   * address of the route toward MASTER_ADDR, else 127.0.0.1; see docs/multinode.md). A wildcard
   * (0.0.0.0, ::) listens everywhere and publishes the default instead.
   */
  host?: string;
  /** Port to listen on (default 0: any free port). */
  port?: number;
  /** Default for setup and for every operation (default GROUPCOMM_TIMEOUT_MS or 300 s). */
  timeoutMs?: number;
  /** Incarnation of the group; ranks of another epoch are refused (default 0). */
  epoch?: number;
  signal?: AbortSignal;
  /** Bytes per pipelined ring segment (default GROUPCOMM_CPU_CHUNK_BYTES or 512 KiB). */
  chunkBytes?: number;
  /** Ring segments in flight (default GROUPCOMM_CPU_WINDOW or 4). */
  window?: number;
  /** Messages up to this size use the latency algorithms (default GROUPCOMM_CPU_SMALL_BYTES or 64 KiB). */
  smallBytes?: number;
  /** Reused receive buffer per peer (default GROUPCOMM_CPU_RECV_BUFFER_BYTES or 1 MiB). */
  recvBufferBytes?: number;
  /**
   * 'tcp': sockets only. 'auto' and 'shm': same-host peers (same hostname and boot id) move
   * payloads through shared-memory rings, with the socket for doorbells; remote peers, or a
   * failed shm setup (logged; at warn level for 'shm'), use TCP. Default GROUPCOMM_CPU_TRANSPORT or 'auto'.
   */
  transport?: Transport;
  /**
   * Payload bytes of each ring this rank sends through, a power of two (default
   * GROUPCOMM_CPU_SHM_RING_BYTES, else 16 MiB / (P−1) rounded down to a power of two, between
   * 256 KiB and 4 MiB, so that a rank's rings stay within ~32 MiB however large the group).
   */
  shmRingBytes?: number;
  /**
   * The job secret every peer must prove in its handshake (default GROUPCOMM_SECRET). Without
   * one, a non-loopback `host` is refused unless `insecure` (docs/security.md).
   */
  secret?: string | Uint8Array;
  /** Allow a non-loopback `host` without a secret (logged as a warning). Default GROUPCOMM_INSECURE. */
  insecure?: boolean;
  /** Largest frame payload a peer may send this rank (default GROUPCOMM_CPU_MAX_FRAME_BYTES, 4 GiB). */
  maxFrameBytes?: number;
}

function defaultRingBytes(worldSize: number): number {
  const share = (16 << 20) / Math.max(1, worldSize - 1);
  let r = 256 * 1024;
  while (r * 2 <= share && r < (4 << 20)) r *= 2;
  return r;
}

function transportOf(opts: CpuGroupOptions): { transport: Transport; shmRingBytes: number; shmMinBytes: number } {
  const t = opts.transport ?? setting('GROUPCOMM_CPU_TRANSPORT');
  if (t !== 'auto' && t !== 'tcp' && t !== 'shm') throw invalidArgument(`transport must be 'auto', 'tcp' or 'shm', got '${t}'`);
  const r = opts.shmRingBytes ?? setting('GROUPCOMM_CPU_SHM_RING_BYTES') ?? defaultRingBytes(opts.worldSize);
  if (!validRingBytes(r)) throw invalidArgument(`shmRingBytes must be a power of two in [64 KiB, 1 GiB], got ${r}`);
  // Tests set it to 1 to send every frame through the rings.
  const shmMinBytes = setting('GROUPCOMM_CPU_SHM_MIN_BYTES');
  return { transport: t, shmRingBytes: r, shmMinBytes };
}

function tuningOf(opts: CpuGroupOptions): Tuning & { smallBytes: number } {
  const pick = (v: number | undefined, env: 'GROUPCOMM_CPU_CHUNK_BYTES' | 'GROUPCOMM_CPU_WINDOW' | 'GROUPCOMM_CPU_SMALL_BYTES', what: string) => {
    const x = v ?? setting(env);
    if (!Number.isInteger(x) || x < 1 || x > 0xffffffff) throw invalidArgument(`${what} must be an integer in [1, 2^32), got ${x}`);
    return x;
  };
  return {
    chunkBytes: pick(opts.chunkBytes, 'GROUPCOMM_CPU_CHUNK_BYTES', 'chunkBytes'),
    window: pick(opts.window, 'GROUPCOMM_CPU_WINDOW', 'window'),
    smallBytes: pick(opts.smallBytes, 'GROUPCOMM_CPU_SMALL_BYTES', 'smallBytes'),
  };
}

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
  private readonly tuning: Pipeline;
  private readonly smallBytes: number;
  private readonly staging = new Staging();
  private seq = 0;
  private tail: Promise<unknown> = Promise.resolve();
  /** Operations in flight, each with a promise that settles when it has (close() waits for them). */
  private active = new Map<Exchange, Promise<void>>();
  private p2pSeq = new Map<string, number>();
  private broken: GroupcommError | undefined;
  private readonly lostListeners: ((err: GroupcommError) => void)[] = [];
  // Schedules and segment plans from the core, computed once per group (host/cpu/schedule.ts).
  private readonly plans: Schedules;
  /** The first close() or abort(): from then on new operations are refused. */
  private closing: Promise<void> | undefined;
  private aborted = false;
  /** Set when GROUPCOMM_DEBUG=trace: each operation then logs one line (base/log.ts traceOp). */
  private readonly tracer: Logger | undefined;

  private constructor(token: symbol, private readonly mesh: Mesh, opts: CpuGroupOptions, timeoutMs: number, tuning: Tuning & { smallBytes: number }) {
    checkFactory(token, MADE, 'CpuGroup', 'const group = await CpuGroup.create({ store, rank, worldSize, groupName })',
      'a CPU group connects its mesh of peers before it is usable');
    this.rank = opts.rank;
    this.worldSize = opts.worldSize;
    this.groupName = opts.groupName;
    this.epoch = opts.epoch ?? 0;
    this.timeoutMs = timeoutMs;
    this.plans = new Schedules(this.rank, this.worldSize, tuning.chunkBytes);
    this.tuning = { chunkBytes: tuning.chunkBytes, window: tuning.window, plans: this.plans };
    this.smallBytes = tuning.smallBytes;
    this.tracer = log.tracing ? log.child(`${this.groupName} rank ${this.rank}/${this.worldSize}`) : undefined;
    mesh.onLost((err) => {
      this.broken = err;
      for (const ex of this.active.keys()) ex.fail(err);
      for (const fn of this.lostListeners) fn(err);
    });
    mesh.onDeparted((peer) => {
      for (const ex of this.active.keys()) ex.checkDeparted(peer);
    });
  }

  /** Listens, publishes this rank's address in the store, connects and handshakes the full mesh. */
  static async create(opts: CpuGroupOptions): Promise<CpuGroup> {
    const { rank, worldSize, groupName } = opts;
    if (!Number.isInteger(worldSize) || worldSize < 1) throw invalidArgument(`worldSize must be an integer >= 1, got ${worldSize}`);
    if (!Number.isInteger(rank) || rank < 0 || rank >= worldSize) throw invalidArgument(`rank must be in [0, ${worldSize}), got ${rank}`);
    if (typeof groupName !== 'string' || groupName.length === 0 || Buffer.byteLength(groupName) > 1024) {
      throw invalidArgument('groupName must be a non-empty string of at most 1024 bytes');
    }
    const epoch = opts.epoch ?? 0;
    if (!Number.isSafeInteger(epoch) || epoch < 0) throw invalidArgument(`epoch must be an integer >= 0, got ${epoch}`);
    const timeoutMs = effectiveTimeout(opts);
    const tuning = tuningOf(opts);
    const transport = transportOf(opts);
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
    });
    return new CpuGroup(MADE, mesh, opts, timeoutMs, tuning);
  }

  /**
   * How this rank exchanges data with `peer`: 'shm' (shared-memory rings both ways), 'tcp',
   * 'mixed' (one direction each; a failed shm setup on one side), or 'self'.
   */
  transportTo(peer: number): 'self' | 'tcp' | 'shm' | 'mixed' {
    if (!Number.isInteger(peer) || peer < 0 || peer >= this.worldSize) throw invalidArgument(`peer must be in [0, ${this.worldSize}), got ${peer}`);
    return this.mesh.transportOf(peer);
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

  /** Where this rank listened during setup (the listener is closed once the mesh is complete). */
  get address(): { host: string; port: number } {
    return { ...this.mesh.address };
  }

  // ---- the operation runner -------------------------------------------------------------

  private check(): void {
    if (this.closing) throw destroyedError(`CPU group '${this.groupName}' was closed`, { rank: this.rank });
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

  private cpu(t: Tensor | undefined, what: string): CpuTensor {
    if (!t || typeof t !== 'object' || !isCpu(t) || !ArrayBuffer.isView((t as CpuTensor).data)) {
      throw invalidArgument(`${what}: expected a CPU tensor`, { rank: this.rank });
    }
    const ct = t as CpuTensor;
    const n = numel(ct.shape) * itemSize(ct.dtype);
    if (ct.data.byteLength !== n) throw invalidArgument(`${what}: shape [${ct.shape.join(', ')}] of ${ct.dtype} needs ${n} bytes, data has ${ct.data.byteLength}`);
    return ct;
  }

  private peer(r: number, what: string, allowSelf: boolean): number {
    if (!Number.isInteger(r) || r < 0 || r >= this.worldSize || (!allowSelf && r === this.rank)) {
      throw invalidArgument(`${what}: rank ${r} is not ${allowSelf ? 'a rank' : 'another rank'} of this group of ${this.worldSize}`, { rank: this.rank });
    }
    return r;
  }

  private reduceOp(op: unknown): ReduceOp {
    const o = (op ?? 'sum') as ReduceOp;
    if (!REDUCE_OPS.includes(o)) throw invalidArgument(`unknown reduce op '${String(op)}'; expected one of ${REDUCE_OPS.join(', ')}`);
    return o;
  }

  /**
   * `out` if given (checked for dtype and shape, and against the input by the aliasing rule:
   * the input itself only where `inPlace` allows it), else a new tensor.
   */
  private output(out: CpuTensor | undefined, dtype: CpuTensor['dtype'], shape: number[], input: CpuTensor | undefined, what: string, inPlace = false): { t: CpuTensor; inPlace: boolean } {
    if (!out) return { t: empty(shape, dtype), inPlace: false };
    const o = this.cpu(out, `${what} out`);
    if (o.dtype !== dtype) throw invalidArgument(`${what}: out has dtype ${o.dtype}, expected ${dtype}`, { rank: this.rank });
    if (o.shape.length !== shape.length || o.shape.some((d, i) => d !== shape[i])) {
      throw invalidArgument(`${what}: out has shape [${o.shape.join(', ')}], expected [${shape.join(', ')}]`, { rank: this.rank });
    }
    return { t: o, inPlace: input !== undefined && checkOutAliasing(o, input, inPlace, what, { rank: this.rank }) };
  }

  private reducer(op: ReduceOp, dtype: CpuTensor['dtype']) {
    if (op === 'avg' && dtype === 'bool') throw invalidArgument('avg is not defined for bool (sum or max for "any", prod or min for "all")');
    const k = op === 'avg' ? 'sum' : op;
    return (dst: Uint8Array, src: Uint8Array) => reduceBytes(k, dtype, dst, src);
  }

  private tree(root: number): BinomialTree {
    return this.plans.tree(root);
  }

  // ---- collectives ----------------------------------------------------------------------

  /** `src`'s tensor on every rank, into `out` (in place: `out: tensor`) or a new tensor. */
  broadcast<T extends CpuTensor>(tensor: T, opts: BroadcastOptions<T>): Promise<T>;
  broadcast(tensor: CpuTensor, opts: BroadcastOptions<CpuTensor>): Promise<CpuTensor> {
    return this.start('broadcast', opts, () => {
      const x = this.cpu(tensor, 'broadcast');
      const src = this.peer(opts?.src, 'broadcast src', true);
      const { t: out, inPlace } = this.output(opts.out, x.dtype, x.shape, x, 'broadcast', true);
      return [{ collective: 'broadcast', dtype: x.dtype, root: src, ...callOf(x, opts) }, async (ex) => {
        const buf = bytesOf(out);
        // The source sends from the result tensor, so its input is only read (copied) here.
        if (this.rank === src && !inPlace) buf.set(bytesOf(x));
        if (buf.byteLength <= this.smallBytes) await treeBroadcast(ex, buf, this.tree(src));
        else await chainBroadcast(ex, buf, src, itemSize(x.dtype), this.tuning);
        return out;
      }];
    });
  }

  /** The reduction of every rank's `input` with `op` (default sum); in place with `out: input`. */
  allReduce<T extends CpuTensor>(input: T, opts?: ReduceOpts<T>): Promise<T>;
  allReduce(input: CpuTensor, opts: ReduceOptions = {}): Promise<CpuTensor> {
    return this.start('allReduce', opts, () => {
      const x = this.cpu(input, 'allReduce');
      const op = this.reduceOp(opts.op);
      const reduce = this.reducer(op, x.dtype);
      const { t: out, inPlace } = this.output(opts.out, x.dtype, x.shape, x, 'allReduce', true);
      return [{ collective: 'allReduce', dtype: x.dtype, op, ...callOf(x, opts) }, async (ex) => {
        // The algorithms reduce in place: out of place, they run on the result after a copy.
        const buf = bytesOf(out);
        if (!inPlace) buf.set(bytesOf(x));
        if (buf.byteLength <= this.smallBytes || buf.byteLength < this.worldSize * itemSize(x.dtype)) {
          await recursiveDoubling(ex, buf, reduce, this.staging, this.plans.recursiveDoubling());
        } else {
          await ring(ex, {
            buf, itemSize: itemSize(x.dtype), steps: 2 * (this.worldSize - 1), reduceSteps: this.worldSize - 1,
            shift: 0, reduce, tuning: this.tuning, staging: this.staging,
          });
        }
        if (op === 'avg') {
          await ex.flushed(); // the last forwarded segments are still being written from `buf`
          finishAvg(x.dtype, buf, this.worldSize);
        }
        return out;
      }];
    });
  }

  /** Concatenates every rank's `input` along dim 0 in rank order: [P*d0, ...] (0-d input: [P]). */
  allGather<T extends CpuTensor>(input: T, opts?: OutOpts<T>): Promise<T>;
  allGather(input: CpuTensor, opts: OutOptions = {}): Promise<CpuTensor> {
    return this.start('allGather', opts, () => {
      const x = this.cpu(input, 'allGather');
      const { t: out } = this.output(opts.out, x.dtype, gatheredShape(x.shape, this.worldSize), x, 'allGather');
      return [{ collective: 'allGather', dtype: x.dtype, ...callOf(x, opts) }, async (ex) => {
        const o = bytesOf(out);
        const mine = bytesOf(x);
        o.set(mine, this.rank * mine.byteLength);
        await ring(ex, {
          buf: o, itemSize: itemSize(x.dtype), steps: this.worldSize - 1, reduceSteps: 0,
          shift: 0, tuning: this.tuning, staging: this.staging,
        });
        return out;
      }];
    });
  }

  /** Reduces `input` ([P*n, ...]) over all ranks and leaves block `rank` ([n, ...]) on each. */
  reduceScatter<T extends CpuTensor>(input: T, opts?: ReduceOpts<T>): Promise<T>;
  reduceScatter(input: CpuTensor, opts: ReduceOptions = {}): Promise<CpuTensor> {
    return this.start('reduceScatter', opts, () => {
      const x = this.cpu(input, 'reduceScatter');
      const op = this.reduceOp(opts.op);
      const P = this.worldSize;
      if (x.shape.length === 0 || x.shape[0] % P !== 0) {
        throw invalidArgument(`reduceScatter: dim 0 of [${x.shape.join(', ')}] must be a multiple of the world size ${P}`);
      }
      const { t: out } = this.output(opts.out, x.dtype, scatteredShape(x.shape, P), x, 'reduceScatter');
      const reduce = this.reducer(op, x.dtype);
      return [{ collective: 'reduceScatter', dtype: x.dtype, op, ...callOf(x, opts) }, async (ex) => {
        const inBytes = bytesOf(x);
        const o = bytesOf(out);
        // The ring reduces in place, so it runs on a reused work copy: the input stays intact.
        const work = this.staging.get(1, inBytes.byteLength);
        work.set(inBytes);
        await ring(ex, {
          buf: work, itemSize: itemSize(x.dtype), steps: P - 1, reduceSteps: P - 1,
          shift: -1, reduce, tuning: this.tuning, staging: this.staging,
        });
        o.set(work.subarray(this.rank * o.byteLength, (this.rank + 1) * o.byteLength));
        if (op === 'avg') finishAvg(x.dtype, o, P);
        return out;
      }];
    });
  }

  /** Concatenates every rank's `input` on rank `dst` (like allGather); other ranks get undefined. */
  gather<T extends CpuTensor>(input: T, opts: GatherOptions<T>): Promise<T | undefined>;
  gather(input: CpuTensor, opts: GatherOptions<CpuTensor>): Promise<CpuTensor | undefined> {
    return this.start('gather', opts, () => {
      const x = this.cpu(input, 'gather');
      const dst = this.peer(opts?.dst, 'gather dst', true);
      const mine = bytesOf(x);
      const n = mine.byteLength;
      const call: CallShape = { collective: 'gather', dtype: x.dtype, root: dst, ...callOf(x, opts) };
      if (this.rank !== dst) {
        return [call, async (ex) => {
          ex.send(dst, 0, mine);
          return undefined;
        }];
      }
      const { t: out } = this.output(opts.out, x.dtype, gatheredShape(x.shape, this.worldSize), x, 'gather');
      return [call, async (ex) => {
        const o = bytesOf(out);
        o.set(mine, this.rank * n);
        await exchangeAll(ex, undefined, (p) => o.subarray(p * n, (p + 1) * n), this.plans.directPeers());
        return out;
      }];
    });
  }

  /** Rank `src` splits `t` ([P*n, ...]) along dim 0; rank r receives block r into `out` ([n, ...]). */
  scatter<T extends CpuTensor>(t: CpuTensor | undefined, opts: OpOptions & { src: number; out: T }): Promise<T>;
  scatter(t: CpuTensor | undefined, opts: OpOptions & { src: number; out: CpuTensor }): Promise<CpuTensor> {
    return this.start('scatter', opts, () => {
      const src = this.peer(opts?.src, 'scatter src', true);
      const out = this.cpu(opts?.out, 'scatter out');
      const o = bytesOf(out);
      const n = o.byteLength;
      const call: CallShape = { collective: 'scatter', dtype: out.dtype, root: src, shape: out.shape };
      if (this.rank !== src) {
        return [call, async (ex) => {
          await ex.recv(src, 0, o);
          return out;
        }];
      }
      const x = this.cpu(t, 'scatter');
      const want = gatheredShape(out.shape, this.worldSize);
      if (x.dtype !== out.dtype || x.shape.length !== want.length || x.shape.some((d, i) => d !== want[i])) {
        throw invalidArgument(`scatter: input is ${x.dtype}[${x.shape.join(', ')}], expected ${out.dtype}[${want.join(', ')}] for out ${out.dtype}[${out.shape.join(', ')}]`);
      }
      const input = bytesOf(x);
      checkOutAliasing(out, x, false, 'scatter', { rank: this.rank });
      return [call, async (ex) => {
        o.set(input.subarray(this.rank * n, (this.rank + 1) * n));
        await exchangeAll(ex, (p) => input.subarray(p * n, (p + 1) * n), undefined, this.plans.directPeers());
        return out;
      }];
    });
  }

  /**
   * Block p of `input` ([P*n, ...]) goes to rank p; block p of the result came from rank p. With
   * `inputSplits` / `outputSplits` (rows per rank), the blocks have those sizes (variable.ts).
   */
  allToAll<T extends CpuTensor>(input: T, opts?: SplitOptions<T>): Promise<T>;
  allToAll(input: CpuTensor, opts: OutOptions & SplitOptions<CpuTensor> = {}): Promise<CpuTensor> {
    if (opts.inputSplits !== undefined || opts.outputSplits !== undefined) return variable.allToAllv(this, input, opts);
    return this.start('allToAll', opts, () => {
      const x = this.cpu(input, 'allToAll');
      const P = this.worldSize;
      if (x.shape.length === 0 || x.shape[0] % P !== 0) {
        throw invalidArgument(`allToAll: dim 0 of [${x.shape.join(', ')}] must be a multiple of the world size ${P}`);
      }
      const { t: out } = this.output(opts.out, x.dtype, [...x.shape], x, 'allToAll');
      return [{ collective: 'allToAll', dtype: x.dtype, ...callOf(x, opts) }, async (ex) => {
        const inBytes = bytesOf(x);
        const o = bytesOf(out);
        const n = inBytes.byteLength / P;
        o.set(inBytes.subarray(this.rank * n, (this.rank + 1) * n), this.rank * n);
        await exchangeAll(ex, (p) => inBytes.subarray(p * n, (p + 1) * n), (p) => o.subarray(p * n, (p + 1) * n), this.plans.directPeers());
        return out;
      }];
    });
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
      return Promise.reject(e);
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

  private tagOf(tag: unknown): number {
    const t = tag ?? 0;
    if (!Number.isInteger(t) || (t as number) < 0 || (t as number) > 0xffffffff) throw invalidArgument(`tag must be an integer in [0, 2^32), got ${String(tag)}`);
    return t as number;
  }

  /** Sends `tensor` to `dst`; matched in order with `dst`'s recv calls of the same tag. */
  send(tensor: CpuTensor, dst: number, opts: OpOptions & { tag?: number } = {}): Promise<void> {
    try {
      this.check();
      const x = this.cpu(tensor, 'send');
      const peer = this.peer(dst, 'send dst', false);
      const ex = this.p2p('send', peer, this.tagOf(opts.tag));
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
      const x = this.cpu(dst, 'recv');
      const peer = this.peer(src, 'recv src', false);
      const ex = this.p2p('recv', peer, this.tagOf(opts.tag));
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
   * operations that still need this rank fail with ERR_GROUPCOMM_PEER_LOST naming it).
   * Idempotent.
   */
  close(opts: CloseOptions = {}): Promise<void> {
    this.closing ??= (async () => {
      const timeoutMs = effectiveTimeout(opts, this.timeoutMs);
      if (!await settled(this.active.values(), { timeoutMs, signal: opts.signal })) {
        this.abortOps(opts.signal?.aborted ? opts.signal.reason : `close() waited ${timeoutMs}ms for the operations in flight`);
      }
      this.mesh.close();
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
      this.mesh.close();
      this.closing ??= Promise.resolve();
    }
    return this.closing!;
  }

  async [asyncDispose](): Promise<void> {
    await this.close();
  }

  private abortOps(reason: unknown): void {
    this.aborted = true;
    const why = reason === undefined ? '' : `: ${reason instanceof Error ? reason.message : String(reason)}`;
    const err = abortedError(`CPU group '${this.groupName}' was aborted${why}`, { rank: this.rank, cause: reason });
    for (const ex of this.active.keys()) ex.fail(err);
  }
}
