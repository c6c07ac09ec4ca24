/**
 * StatelessProcessGroup: objects and small tensors between the ranks of one group, carried by a
 * key-value store (design §5). The store-only channel vLLM uses for metadata, without its
 * defects: keys name source, destination and epoch; readers delete what they consumed; every
 * wait has a deadline that names the ranks it waited for; decoding never runs code.
 *
 * Messages (ns = `${groupName}/${epoch}/`), see docs/process-group.md. Every message is one key
 * `ns to/{dst}/{tag}`, written by its sender and consumed by dst through its Mailbox (mailbox.ts:
 * pushed by a groupcomm store the moment it is written, read key by key from a torch store):
 *   tag p/{src}/{n}    n-th point-to-point message src → dst (objects and tensors share n)
 *   tag b/{src}/{n}    n-th broadcast from src: the value itself (up to FANOUT_MAX_BYTES, or with
 *                      one reader), else an empty marker: the value is then stored once at
 *                      ns b/{src}/{n}, and the reader that brings ns b/{src}/{n}/ack to
 *                      worldSize−1 deletes both
 *   tag c/{n}/{src}    src's part of the n-th collective (barrier, allGather, allReduce)
 *   ns bye, ns bye/all departure counter of destroy()
 *
 * Ordering. Every op takes its sequence number synchronously, in call order, so callers may
 * start many ops without awaiting and results still match by program order, as long as all
 * ranks issue the same sequence (per peer for send/recv, per source for broadcasts, globally
 * for collectives). Writes go out at once, in call order, on the store client's pipelined
 * connection; a message's tag, not its arrival time, says which receive it answers.
 */
import os from 'node:os';
import {
  abortedError, destroyedError, GroupcommError, invalidArgument, isGroupcommError, peerLostError, protocolError, timeoutError,
} from '../base/errors.js';
import { anySignal, Deadline, effectiveTimeout, settled, type OpOptions, type TimedOptions } from '../base/deadline.js';
import { setting } from '../base/config.js';
import { asyncDispose, type CloseOptions } from '../base/lifecycle.js';
import { logger } from '../base/log.js';
import { IS_BUN } from '../base/runtime.js';
import type { Store } from '../store/types.js';
import { TcpStore } from '../store/client.js';
import { bytesOf, empty, type CpuTensor, type Tensor } from '../core/tensor.js';
import { checkOutAliasing } from '../core/alias.js';
import type { BroadcastOptions, ReduceOptions } from '../core/collectives.js';
import { reduceBytes, finishAvg, REDUCE_OPS, type ReduceOp } from '../core/reduce.js';
import {
  checkCpuTensor, decodeObject, decodeTensor, encodeObject, encodeTensor, fillTensor, type Origin,
} from './codec.js';
import { join, joinKeys } from './join.js';
import { openMailbox, PushMailbox, type Mailbox } from './mailbox.js';

const log = logger('PG');

export interface ProcessGroupOptions {
  /** Address of the store server (rank 0 listens there unless `store` is given). Default 127.0.0.1. */
  host?: string;
  /** Port of the store server; rank 0 may pass 0 only together with `store`. */
  port?: number;
  rank: number;
  worldSize: number;
  /** Deadline of create() and default of every op (default GROUPCOMM_TIMEOUT_MS or 300 s). */
  timeoutMs?: number;
  /** Use this store instead of hosting/connecting one; the group then never closes it. */
  store?: Store;
  /** Namespace of the group's keys; groups sharing one store need distinct names. Default 'pg'. */
  groupName?: string;
  /**
   * How long a receive whose message has not arrived keeps this process awake before it may
   * sleep (µs; the event loop keeps running). Default GROUPCOMM_PG_SPIN_US, else
   * DEFAULT_SPIN_US when worldSize is at most the number of CPUs here, else 0 (ranks competing
   * for CPUs would take it from each other). Always 0 by default under Bun (see spinUs()).
   */
  spinUs?: number;
  signal?: AbortSignal;
}

/** Options of destroy(), the older name of close(). */
export interface DestroyOptions extends CloseOptions {
  /**
   * Skip waiting for this rank's unfinished ops and the departure handshake (after a failure;
   * rank 0 then may close the server under the others' feet): abort() instead of close().
   */
  force?: boolean;
}

/** Reduction ops of allReduce. */
/** The reduce ops of the core (kept as an alias for readability at call sites). */
export type ReduceOpName = ReduceOp;

const EMPTY = new Uint8Array(0);

/**
 * Broadcast values up to this size are copied to one key per reader (see #bcastSend): 64 KiB
 * times worldSize−1 is still one modest write for the root, and every reader saves a round trip.
 */
const FANOUT_MAX_BYTES = 64 * 1024;

/**
 * With pushed messages, collectives of at least this many ranks go through rank 0 (the hub):
 * every rank sends its part to rank 0, which sends everyone the bundle. That is 2(n−1) messages
 * instead of n(n−1), and one wake-up per rank instead of n−1 (see #collective).
 */
const HUB_MIN_RANKS = 3;

/**
 * A rank other than the hub whose collective is this close to its deadline asks rank 0 who is
 * missing (at most a quarter of its timeout before it), so that the answer is there when the
 * deadline comes — by then rank 0 may have given up and left too.
 */
const QUERY_LEAD_MS = 500;

/** See ProcessGroupOptions.spinUs: measured on a 2-vCPU VM, 50–100 µs cut a 2-rank round trip by a third. */
const DEFAULT_SPIN_US = 100;

function spinUs(worldSize: number, given: number | undefined): number {
  const v = given ?? setting('GROUPCOMM_PG_SPIN_US');
  if (v !== undefined) {
    if (!(Number.isFinite(v) && v >= 0)) throw invalidArgument(`spinUs must be a non-negative number of microseconds, got ${v}`);
    return v;
  }
  // Bun runs the immediates it has queued before it polls for I/O again, so a spin there holds
  // back the very message it waits for (measured: 2-rank round trip 154 µs with it, 97 without).
  if (IS_BUN) return 0;
  return worldSize <= os.availableParallelism() ? DEFAULT_SPIN_US : 0;
}

/** How long queued cleanups wait for a write to ride along with (see #later). */
const CLEANUP_DELAY_MS = 2;

export class StatelessProcessGroup {
  readonly rank: number;
  readonly worldSize: number;
  readonly groupName: string;
  /** Incarnation number of this group on its store; part of every key. */
  readonly epoch: number;
  readonly store: Store;
  readonly timeoutMs: number;

  readonly #ns: string;
  /** We opened the store (and, on rank 0, its server): destroy closes it. */
  readonly #ownsStore: boolean;
  /** Every rank but this one, in order. */
  readonly #others: number[];
  /** Each rank's mailbox prefix `{ns}to/{rank}/`. */
  readonly #inboxes: string[];
  readonly #sendSeq: number[];
  readonly #recvSeq: number[];
  #bcastSendSeq = 0;
  readonly #bcastRecvSeq: number[];
  #collSeq = 0;
  /**
   * On the hub (rank 0): the ranks whose parts it had when one of its collectives failed (the
   * parts are gone with the failed read; a late query still gets the answer). The last few only.
   */
  readonly #hubGaveUp = new Map<number, number[]>();
  /** This rank's incoming messages (undefined with worldSize 1). */
  #mailbox?: Mailbox;
  /** Collectives go through rank 0 (pushed messages, at least HUB_MIN_RANKS ranks); set at create. */
  #hub = false;
  readonly #pending = new Set<Promise<unknown>>();
  #cleanups: [string, () => Promise<unknown>][] = [];
  #cleanupTimer: { timer: ReturnType<typeof setTimeout>; resolve: () => void } | undefined;
  /** The first close() or abort(): from then on new operations are refused. */
  #closing: Promise<void> | undefined;
  /** Fired by abort(): cuts short a close() in progress (its departure requests). */
  readonly #life = new AbortController();
  /** Rejects of the operations in flight, for abort() to reject them at once. */
  readonly #rejects = new Set<(e: unknown) => void>();

  private constructor(o: { rank: number; worldSize: number; groupName: string; epoch: number; store: Store; timeoutMs: number; ownsStore: boolean }) {
    this.rank = o.rank;
    this.worldSize = o.worldSize;
    this.groupName = o.groupName;
    this.epoch = o.epoch;
    this.store = o.store;
    this.timeoutMs = o.timeoutMs;
    this.#ownsStore = o.ownsStore;
    this.#ns = `${o.groupName}/${o.epoch}/`;
    this.#others = [...Array(o.worldSize).keys()].filter((r) => r !== o.rank);
    this.#inboxes = [...Array(o.worldSize).keys()].map((r) => `${this.#ns}to/${r}/`);
    this.#sendSeq = new Array(o.worldSize).fill(0);
    this.#recvSeq = new Array(o.worldSize).fill(0);
    this.#bcastRecvSeq = new Array(o.worldSize).fill(0);
  }

  /**
   * Joins the group: rank 0 hosts the store server (unless `store` is given), every rank
   * connects, and the promise resolves once all `worldSize` ranks joined — or rejects with
   * ERR_GROUPCOMM_TIMEOUT naming the ranks that did not. Collective: all ranks must call it.
   */
  static async create(opts: ProcessGroupOptions): Promise<StatelessProcessGroup> {
    const { rank, worldSize } = opts;
    if (!Number.isInteger(worldSize) || worldSize < 1) throw invalidArgument(`create: worldSize must be a positive integer, got ${worldSize}`);
    if (!Number.isInteger(rank) || rank < 0 || rank >= worldSize) throw invalidArgument(`create: rank ${rank} is not in [0, ${worldSize})`);
    const groupName = opts.groupName ?? 'pg';
    if (typeof groupName !== 'string' || groupName === '' || groupName.includes('/')) {
      throw invalidArgument(`create: groupName must be a non-empty string without '/', got '${groupName}'`);
    }
    const timeoutMs = effectiveTimeout(opts);
    const spin = spinUs(worldSize, opts.spinUs);
    const deadline = performance.now() + timeoutMs;
    let store = opts.store;
    const ownsStore = store === undefined;
    if (!store) {
      if (opts.port === undefined) throw invalidArgument('create: pass { port } (or { store })');
      if (opts.port === 0 && worldSize > 1) {
        throw invalidArgument('create: port 0 cannot be shared with the other ranks; pass a fixed port, or host the store yourself and pass { store }');
      }
      store = await TcpStore.create({
        host: opts.host ?? '127.0.0.1', port: opts.port, isServer: rank === 0, timeoutMs, signal: opts.signal,
      });
    }
    try {
      const epoch = worldSize === 1
        ? await store.add(joinKeys.epoch(groupName), 1, { timeoutMs, signal: opts.signal })
        : await join({ store, groupName, rank, worldSize, deadline, signal: opts.signal }, timeoutMs);
      log.debug(`group '${groupName}' epoch ${epoch}: rank ${rank}/${worldSize} joined`);
      const g = new StatelessProcessGroup({ rank, worldSize, groupName, epoch, store, timeoutMs, ownsStore });
      if (worldSize > 1) {
        // Messages sent to this rank before it subscribed are stored meanwhile and handed over first.
        g.#mailbox = await openMailbox(store, g.#inbox(rank),
          { timeoutMs: Math.max(1, deadline - performance.now()), signal: opts.signal }, (keys) => g.#track(g.#discard(keys).catch(() => {})), spin);
        g.#hub = worldSize >= HUB_MIN_RANKS && g.#mailbox instanceof PushMailbox;
        if (rank === 0 && g.#hub) g.#answerQueries(g.#mailbox as PushMailbox);
      }
      return g;
    } catch (e) {
      if (ownsStore) await store.close().catch(() => {});
      throw e;
    }
  }

  // ---------------------------------------------------------------- objects, point to point

  /** Sends `obj` to `dst` (msgpack). Resolves when the store holds it, not when `dst` read it. */
  sendObj(obj: unknown, dst: number, opts?: OpOptions): Promise<void> {
    return this.#op(() => this.#send(encodeObject(obj), this.#peer(dst, 'sendObj', 'dst'), 'sendObj', opts));
  }

  /** Receives the next object `src` sent to this rank (in `src`'s send order). */
  recvObj(src: number, opts?: OpOptions): Promise<unknown> {
    return this.#op(() => {
      const peer = this.#peer(src, 'recvObj', 'src');
      return this.#recv(peer, 'recvObj', opts).then(([bytes, o]) => decodeObject(bytes, o));
    });
  }

  // ---------------------------------------------------------------- tensors, point to point

  /** Sends a CPU tensor to `dst` as raw bytes with a small header. */
  send(t: Tensor, dst: number, opts?: OpOptions): Promise<void> {
    return this.#op(() => this.#send(encodeTensor(t), this.#peer(dst, 'send', 'dst'), 'send', opts));
  }

  /** Receives into `dst` (its destination: dtype and shape must match what `src` sent); resolves with `dst`. */
  recv(dst: Tensor, src: number, opts?: OpOptions): Promise<Tensor> {
    return this.#op(() => {
      checkCpuTensor(dst, 'recv');
      const peer = this.#peer(src, 'recv', 'src');
      return this.#recv(peer, 'recv', opts).then(([bytes, o]) => {
        fillTensor(dst, decodeTensor(bytes, o), 'recv', o);
        return dst;
      });
    });
  }

  // ---------------------------------------------------------------- broadcasts

  /**
   * Collective: `src` passes the object, every rank resolves with it. On `src` the result is
   * `obj` itself; elsewhere a decoded copy.
   */
  broadcastObj<T>(obj: T, src: number, opts?: OpOptions): Promise<T> {
    return this.#op(async () => {
      this.#root(src, 'broadcastObj');
      if (this.worldSize === 1) return obj;
      if (src === this.rank) {
        await this.#bcastSend(encodeObject(obj), 'broadcastObj', opts);
        return obj;
      }
      const [bytes, o] = await this.#bcastRecv(src, 'broadcastObj', opts);
      return decodeObject(bytes, o) as T;
    });
  }

  /**
   * Collective: src's `tensor` on every rank, written into `out` (in place: `out: tensor`) or a
   * new tensor; the others pass a tensor of the same dtype and shape, which is not written.
   */
  broadcast(tensor: Tensor, opts: BroadcastOptions<Tensor>): Promise<Tensor> {
    return this.#op(async () => {
      checkCpuTensor(tensor, 'broadcast');
      const src = opts?.src;
      this.#root(src, 'broadcast');
      const { t: out, inPlace } = this.#out(opts.out, tensor, 'broadcast', true);
      if (src === this.rank || this.worldSize === 1) {
        if (this.worldSize > 1) await this.#bcastSend(encodeTensor(tensor), 'broadcast', opts);
        if (!inPlace) bytesOf(out).set(bytesOf(tensor as CpuTensor));
        return out;
      }
      const [bytes, o] = await this.#bcastRecv(src, 'broadcast', opts);
      fillTensor(out, decodeTensor(bytes, o), 'broadcast', o);
      return out;
    });
  }

  // ---------------------------------------------------------------- collectives

  /** Collective: every rank's object, by rank (this rank's entry is `obj` itself). */
  allGatherObj<T>(obj: T, opts?: OpOptions): Promise<T[]> {
    return this.#op(async () => {
      if (this.worldSize === 1) return [obj];
      const parts = await this.#collective(encodeObject(obj), 'allGatherObj', opts);
      return parts.map((p, r) => (r === this.rank ? obj : decodeObject(p.bytes, p.origin) as T));
    });
  }

  /**
   * Collective: resolves once every rank entered the barrier; on timeout rejects with
   * ERR_GROUPCOMM_TIMEOUT whose `peerRanks` are the ranks that never arrived.
   */
  barrier(opts?: OpOptions): Promise<void> {
    return this.#op(async () => {
      if (this.worldSize === 1) return;
      await this.#collective(EMPTY, 'barrier', opts);
    });
  }

  /**
   * Collective, for small CPU tensors: op(input over all ranks), written into `out` (in place:
   * `out: input`) or a new tensor. Every rank folds the same gathered values in rank order, so
   * all ranks get bit-identical results. Ops: sum, prod, min, max, avg (others are rejected,
   * unlike vLLM which returns rank 0's value).
   */
  allReduce(input: Tensor, opts: ReduceOptions<Tensor> = {}): Promise<Tensor> {
    return this.#op(async () => {
      checkCpuTensor(input, 'allReduce');
      const op = opts.op ?? 'sum';
      if (!REDUCE_OPS.includes(op)) throw invalidArgument(`allReduce: unsupported op '${op}'; use one of ${REDUCE_OPS.join(', ')}`);
      if (op === 'avg' && input.dtype === 'bool') throw invalidArgument('allReduce: avg is not defined for bool (sum/max = any, prod/min = all)');
      const { t: out, inPlace } = this.#out(opts.out, input, 'allReduce', true);
      if (this.worldSize === 1) {
        if (!inPlace) bytesOf(out).set(bytesOf(input as CpuTensor));
        return out;
      }
      const parts = await this.#collective(encodeTensor(input), 'allReduce', opts);
      // This rank's part is decoded from what it published, not re-read from `input`: the caller
      // may have changed it since the call, and every rank must fold the same values.
      const got = parts.map((p) => decodeTensor(p.bytes, p.origin));
      for (let r = 0; r < got.length; r++) {
        const g = got[r];
        if (g.dtype !== input.dtype || g.shape.length !== input.shape.length || g.shape.some((d, i) => d !== input.shape[i])) {
          throw invalidArgument(`allReduce: rank ${r} passed [${g.shape.join(', ')}] ${g.dtype}, rank ${this.rank} [${input.shape.join(', ')}] ${input.dtype}`, { peerRank: r });
        }
      }
      // Fold in rank order from a copy of rank 0's value; avg reduces like sum, then divides once.
      const acc = new Uint8Array(got[0].bytes);
      for (let r = 1; r < got.length; r++) reduceBytes(op, input.dtype, acc, got[r].bytes);
      if (op === 'avg') finishAvg(input.dtype, acc, this.worldSize);
      bytesOf(out).set(acc);
      return out;
    });
  }

  /**
   * The result tensor of allReduce / broadcast: `out` when given (a CPU tensor of `like`'s dtype
   * and shape; the same memory as the input means in place, any other overlap is refused), else
   * a new tensor.
   */
  #out(out: Tensor | undefined, like: Tensor, what: string, inPlace: boolean): { t: CpuTensor; inPlace: boolean } {
    if (out === undefined) return { t: empty(like.shape, like.dtype), inPlace: false };
    checkCpuTensor(out, `${what} out`);
    if (out.dtype !== like.dtype || out.shape.length !== like.shape.length || out.shape.some((d, i) => d !== like.shape[i])) {
      throw invalidArgument(`${what}: out must be [${like.shape.join(', ')}] ${like.dtype}, got [${out.shape.join(', ')}] ${out.dtype}`, { rank: this.rank });
    }
    return { t: out as CpuTensor, inPlace: checkOutAliasing(out, like, inPlace, what, { rank: this.rank }) };
  }

  // ---------------------------------------------------------------- lifecycle

  /**
   * Leaves the group gracefully (base/lifecycle.ts): refuses new operations, waits for this
   * rank's unfinished ones (within `timeoutMs`, default the group's timeout, and until `signal`
   * fires; then they are aborted), then runs a departure handshake so that rank 0 — which may
   * host the store server — leaves last and deletes the group's remaining keys, all within the
   * same deadline. Closes the store if the group opened it. Never rejects because a peer is gone
   * (that is logged). Idempotent: later calls return the first call's promise. Operations called
   * afterwards fail with ERR_GROUPCOMM_DESTROYED.
   */
  close(opts: CloseOptions = {}): Promise<void> {
    this.#closing ??= this.#close(opts);
    return this.#closing;
  }

  /**
   * The older name of close(); `{ force: true }` is abort() (skips waiting and the departure
   * handshake, for use after a failure).
   */
  destroy(opts: DestroyOptions = {}): Promise<void> {
    return opts.force ? this.abort('destroy({ force: true })') : this.close(opts);
  }

  /**
   * Immediate and local: operations in flight reject with ERR_GROUPCOMM_ABORTED (`cause`: the
   * reason), queued cleanups are dropped, no departure handshake; a store the group opened is
   * aborted too (on rank 0 that is the server the others use). Idempotent.
   */
  abort(reason?: unknown): Promise<void> {
    if (!this.#life.signal.aborted) {
      const why = reason === undefined ? '' : `: ${reason instanceof Error ? reason.message : String(reason)}`;
      const err = abortedError(`group '${this.groupName}' was aborted${why}`, { rank: this.rank, cause: reason });
      this.#life.abort(err);
      for (const reject of this.#rejects) reject(err);
      this.#rejects.clear();
      this.#cleanups = [];
      if (this.#cleanupTimer) {
        clearTimeout(this.#cleanupTimer.timer);
        this.#cleanupTimer.resolve();
        this.#cleanupTimer = undefined;
      }
      this.#mailbox?.close(err);
      const closed = this.#ownsStore ? (this.store as TcpStore).abort(reason) : Promise.resolve();
      this.#closing ??= closed;
    }
    return this.#closing!;
  }

  async [asyncDispose](): Promise<void> {
    await this.close();
  }

  /** Tagged keys of this group's current epoch (for tests and debugging). */
  get keyPrefix(): string {
    return this.#ns;
  }

  async #close(opts: CloseOptions): Promise<void> {
    const d = Deadline.of(opts, this.timeoutMs, `close of group '${this.groupName}' on rank ${this.rank}`);
    const signal = anySignal([opts.signal, this.#life.signal]);
    // Cleanups queued by finished ops add requests while we wait; drain until nothing is left.
    while (this.#pending.size && !this.#life.signal.aborted) {
      this.#drain();
      if (!await settled(this.#pending, { timeoutMs: Math.max(1, d.remainingMs()), signal })) {
        // Not awaited: abort() returns this very close's promise.
        void this.abort(opts.signal?.aborted ? opts.signal.reason : `close() waited ${d.timeoutMs}ms for the operations in flight`);
      }
    }
    const left = () => ({ timeoutMs: Math.max(1, d.remainingMs()), signal });
    try {
      if (this.worldSize > 1 && !signal?.aborted) {
        const bye = this.#ns + 'bye';
        if (this.rank !== 0) {
          const n = await this.store.add(bye, 1, left());
          if (n === this.worldSize - 1) await this.store.set(bye + '/all', '1', left());
        } else {
          await this.store.wait([bye + '/all'], left());
        }
      }
      if (this.rank === 0 && !signal?.aborted) await this.#cleanup(left());
    } catch (e) {
      // Departure is best effort: a peer that died must not make close throw or hang forever.
      log.warn(`close of group '${this.groupName}' epoch ${this.epoch} on rank ${this.rank}: ${(e as Error).message}`);
    } finally {
      this.#mailbox?.close(destroyedError(`group '${this.groupName}' was closed`, { rank: this.rank }));
      if (this.#ownsStore) await this.store.close().catch(() => {});
    }
  }

  /** Rank 0, after everyone departed: delete the keys that outlive their operations. */
  async #cleanup(o: OpOptions): Promise<void> {
    const g = this.groupName;
    // g/open first: from now on a re-creating rank blocks until the next epoch opens.
    const keys = [joinKeys.open(g), joinKeys.all(g, this.epoch), this.#ns + 'bye', this.#ns + 'bye/all'];
    await Promise.all(keys.map((k) => this.store.deleteKey(k, o)));
  }

  // ---------------------------------------------------------------- internals

  /**
   * Runs an op: refuses after close/abort, turns sync throws into rejections, tracks it for
   * close(), and lets abort() reject it at once.
   */
  #op<T>(fn: () => Promise<T> | T): Promise<T> {
    if (this.#closing) return Promise.reject(destroyedError(`group '${this.groupName}' was closed`, { rank: this.rank }));
    let p: Promise<T>;
    try {
      p = Promise.resolve(fn());
    } catch (e) {
      return Promise.reject(e);
    }
    this.#track(p);
    return new Promise<T>((resolve, reject) => {
      this.#rejects.add(reject);
      p.then(
        (v) => { this.#rejects.delete(reject); resolve(v); },
        (e) => { this.#rejects.delete(reject); reject(e); },
      );
    });
  }

  #track(p: Promise<unknown>): void {
    this.#pending.add(p);
    const done = () => this.#pending.delete(p);
    p.then(done, done);
  }

  /**
   * Fire-and-forget cleanup (deletes, broadcast acks), still awaited by destroy(). Queued, not
   * sent at once: the next write this group issues (a send, a broadcast, a collective's part)
   * takes the queue along in the same write, and a short timer sends whatever is still queued
   * when no write comes. Reads do not take it: right after a collective or a receive, this
   * rank's next request is usually a read that someone is about to answer, and a cleanup sent
   * then is one more request for the store to handle (and, for a store hosted by a rank, one
   * more wake-up of that rank) exactly when the answer is due.
   */
  #later(what: string, fn: () => Promise<unknown>): void {
    this.#cleanups.push([what, fn]);
    if (this.#cleanupTimer) return;
    this.#track(new Promise<void>((resolve) => {
      this.#cleanupTimer = { timer: setTimeout(() => this.#drain(), CLEANUP_DELAY_MS), resolve };
    }));
  }

  /** Sends the queued cleanups now (called right after an op issued its own write). */
  #drain(): void {
    const t = this.#cleanupTimer;
    if (t) {
      this.#cleanupTimer = undefined;
      clearTimeout(t.timer);
      t.resolve();
    }
    if (!this.#cleanups.length) return;
    const batch = this.#cleanups;
    this.#cleanups = [];
    for (const [w, f] of batch) {
      let q: Promise<unknown>;
      try {
        q = f();
      } catch (e) {
        q = Promise.reject(e);
      }
      this.#track(q.catch((e) => log.debug(`${w} failed: ${(e as Error).message}`)));
    }
  }

  /** Deletes keys nobody waits on: without a reply where the store can (Store.discard). */
  #discard(keys: string[]): Promise<unknown> {
    if (this.store.discard) return this.store.discard(keys);
    return Promise.all(keys.map((k) => this.store.deleteKey(k)));
  }

  #peer(r: number, op: string, role: string): number {
    if (!Number.isInteger(r) || r < 0 || r >= this.worldSize) {
      throw invalidArgument(`${op}: ${role} ${r} is not a rank of this group (worldSize ${this.worldSize})`, { rank: this.rank, peerRank: r });
    }
    if (r === this.rank) {
      throw invalidArgument(`${op}: ${role} is this rank (${r}); point-to-point ops need another rank`, { rank: this.rank, peerRank: r });
    }
    return r;
  }

  #root(src: number, op: string): void {
    if (!Number.isInteger(src) || src < 0 || src >= this.worldSize) {
      throw invalidArgument(`${op}: src ${src} is not a rank of this group (worldSize ${this.worldSize})`, { rank: this.rank, peerRank: src });
    }
  }

  #opts(opts: OpOptions | undefined): TimedOptions {
    return { timeoutMs: effectiveTimeout(opts, this.timeoutMs), signal: opts?.signal };
  }

  /** Re-labels a store failure with who we were waiting for. */
  #fail(e: unknown, what: string, peers: number[], key: string, timeoutMs: number): GroupcommError {
    if (isGroupcommError(e, 'ERR_GROUPCOMM_TIMEOUT')) {
      return timeoutError(
        `${what} timed out after ${timeoutMs}ms on rank ${this.rank} of group '${this.groupName}': ` +
        `waiting for rank${peers.length > 1 ? 's' : ''} [${peers.join(', ')}] (key '${key}'). ` +
        'Did every rank issue the same operations? Raise timeoutMs or GROUPCOMM_TIMEOUT_MS.',
        { rank: this.rank, peerRank: peers.length === 1 ? peers[0] : undefined, peerRanks: peers, key, timeoutMs, cause: e },
      );
    }
    if (isGroupcommError(e, 'ERR_GROUPCOMM_PEER_LOST') && this.#ownsStore && this.rank !== 0) {
      return peerLostError(`${what} on rank ${this.rank}: lost the store hosted by rank 0 (${(e as Error).message})`,
        { rank: this.rank, peerRank: 0, peerRanks: [0], key, cause: e });
    }
    if (isGroupcommError(e)) return e;
    return protocolError(`${what}: ${(e as Error)?.message ?? e}`, { rank: this.rank, key, cause: e });
  }

  /** The key prefix of `rank`'s mailbox. */
  #inbox(rank: number): string {
    return this.#inboxes[rank];
  }

  /** Writes message `tag` to each of `dsts` (one request); a failure names them. */
  #post(dsts: number[], tag: string, bytes: Uint8Array, what: string, o: TimedOptions, extra?: [string, Uint8Array]): Promise<void> {
    const keys = dsts.map((d) => this.#inbox(d) + tag);
    const values: Uint8Array[] = keys.map(() => bytes);
    // The stored payload first: a reader that gets its marker finds the payload already there.
    if (extra) keys.unshift(extra[0]), values.unshift(extra[1]);
    const s = this.store;
    const p = s.publish ? s.publish(keys, values, o) : keys.length === 1 ? s.set(keys[0], values[0], o) : s.multiSet(keys, values, o);
    this.#drain();
    return p.catch((e) => { throw this.#fail(e, what, dsts, keys[0], o.timeoutMs); });
  }

  /** Takes this rank's messages `tags` from `peers` (tags[i] comes from peers[i]). */
  async #take(tags: string[], peers: number[], lane: string, what: string, o: TimedOptions): Promise<Uint8Array[]> {
    try {
      return await this.#mailbox!.take(tags, lane, o, what);
    } catch (e) {
      // A timeout's `keys` are the tags still missing: name their senders.
      const missing = (e as { keys?: string[] }).keys;
      let at = peers.map((_, i) => i).filter((i) => missing?.includes(tags[i]));
      if (at.length === 0) at = peers.map((_, i) => i);
      throw this.#fail(e, what, at.map((i) => peers[i]), this.#inbox(this.rank) + tags[at[0]], o.timeoutMs);
    }
  }

  #send(bytes: Uint8Array, dst: number, what: string, opts?: OpOptions): Promise<void> {
    return this.#post([dst], `p/${this.rank}/${this.#sendSeq[dst]++}`, bytes, what, this.#opts(opts));
  }

  async #recv(src: number, what: string, opts?: OpOptions): Promise<[Uint8Array, Origin]> {
    const tag = `p/${src}/${this.#recvSeq[src]++}`;
    const [bytes] = await this.#take([tag], [src], `p/${src}`, what, this.#opts(opts));
    return [bytes, { key: this.#inbox(this.rank) + tag, src }];
  }

  /**
   * Writes broadcast n. A value up to FANOUT_MAX_BYTES (or any value, with one reader) goes to
   * every reader's mailbox: one store hop, no acknowledgement traffic. A larger one is stored once
   * (copies would multiply the root's upload) and each reader gets an empty marker sending it there.
   */
  #bcastSend(bytes: Uint8Array, what: string, opts?: OpOptions): Promise<void> {
    const n = this.#bcastSendSeq++;
    const tag = `b/${this.rank}/${n}`;
    const others = this.#others;
    const o = this.#opts(opts);
    if (others.length === 1 || bytes.length <= FANOUT_MAX_BYTES) return this.#post(others, tag, bytes, what, o);
    return this.#post(others, tag, EMPTY, what, o, [this.#ns + tag, bytes]);
  }

  /**
   * Reads broadcast n from src. An empty message is the marker of a stored value: read it, then
   * bump its ack counter; whoever brings it to worldSize−1 deletes payload and counter.
   */
  async #bcastRecv(src: number, what: string, opts?: OpOptions): Promise<[Uint8Array, Origin]> {
    const tag = `b/${src}/${this.#bcastRecvSeq[src]++}`;
    const o = this.#opts(opts);
    const t0 = performance.now();
    let [bytes] = await this.#take([tag], [src], `b/${src}`, what, o);
    if (bytes.length > 0) return [bytes, { key: this.#inbox(this.rank) + tag, src }];
    const key = this.#ns + tag;
    try {
      bytes = await this.store.get(key, { timeoutMs: Math.max(1, o.timeoutMs - (performance.now() - t0)), signal: o.signal });
    } catch (e) {
      throw this.#fail(e, what, [src], key, o.timeoutMs);
    }
    const ack = key + '/ack';
    this.#later(`ack ${key}`, () => this.store.add(ack, 1).then((k) => {
      if (k === this.worldSize - 1) return this.#discard([key, ack]);
    }));
    return [bytes, { key, src }];
  }


  /**
   * Collective n. With a hub: every other rank sends its part to rank 0, and rank 0, once it has
   * them all, sends each rank the bundle of all parts. Without one (two ranks, or a store that
   * cannot push): every rank sends its part to every other rank. Either way every message is
   * consumed as it is read: nothing of collective n outlives it.
   */
  async #collective(mine: Uint8Array, what: string, opts?: OpOptions): Promise<{ bytes: Uint8Array; origin: Origin }[]> {
    const n = this.#collSeq++;
    const o = this.#opts(opts);
    const label = `${what} (collective #${n})`;
    const others = this.#others;
    const tagOf = (r: number) => `c/${n}/${r}`;
    const inbox = this.#inbox(this.rank);
    const out: { bytes: Uint8Array; origin: Origin }[] = [];
    if (this.#hub && this.rank !== 0) {
      const put = this.#post([0], tagOf(this.rank), mine, label, o);
      put.catch(() => {}); // awaited below; a failed read must not leave it unhandled meanwhile
      const tag = `c/${n}/all`;
      let bundle: Uint8Array;
      const lead = Math.min(QUERY_LEAD_MS, o.timeoutMs / 4);
      let asked: Promise<number[]> | undefined;
      try {
        [bundle] = await this.#mailbox!.take([tag], 'c', o, label, { leadMs: lead, fn: () => { asked = this.#askHub(n, label, lead); } });
      } catch (e) {
        const missing = isGroupcommError(e, 'ERR_GROUPCOMM_TIMEOUT') ? await (asked ?? this.#askHub(n, label, lead)) : [0];
        throw this.#fail(e, label, missing, inbox + tag, o.timeoutMs);
      }
      await put;
      const key = inbox + tag;
      const parts = unpackParts(bundle, this.worldSize, { key, src: 0 });
      for (let r = 0; r < this.worldSize; r++) out.push({ bytes: r === this.rank ? mine : parts[r], origin: { key, src: r } });
      return out;
    }
    let values: Uint8Array[];
    if (this.#hub) {
      try {
        values = await this.#take(others.map(tagOf), others, 'c', label, o);
      } catch (e) {
        const missing = (e as GroupcommError).peerRanks ?? others;
        this.#hubGaveUp.set(n, others.filter((r) => !missing.includes(r)));
        if (this.#hubGaveUp.size > 16) this.#hubGaveUp.delete(this.#hubGaveUp.keys().next().value!);
        throw e;
      }
      await this.#post(others, `c/${n}/all`, packParts([mine, ...values]), label, o);
    } else {
      const put = this.#post(others, tagOf(this.rank), mine, label, o);
      put.catch(() => {});
      values = await this.#take(others.map(tagOf), others, 'c', label, o);
      await put;
    }
    for (let r = 0, i = 0; r < this.worldSize; r++) {
      if (r === this.rank) out.push({ bytes: mine, origin: { key: inbox + tagOf(r), src: r } });
      else out.push({ bytes: values[i++], origin: { key: inbox + tagOf(r), src: r } });
    }
    return out;
  }

  /**
   * Collective n is about to time out on a rank other than the hub: only rank 0 knows whose parts
   * it has, so ask it (a query message, answered by #answerQueries) for the ranks it lacks —
   * itself included if it never entered n. Rank 0 not answering within `graceMs` names it.
   */
  async #askHub(n: number, label: string, graceMs: number): Promise<number[]> {
    const o = { timeoutMs: Math.max(1, graceMs) };
    try {
      this.#post([0], `q/${n}/${this.rank}`, EMPTY, label, o).catch(() => {});
      const [ans] = await this.#mailbox!.take([`a/${n}`], 'a', o, label);
      const { entered, arrived } = decodeObject(ans, { key: this.#inbox(this.rank) + `a/${n}`, src: 0 }) as { entered: boolean; arrived: number[] };
      const missing = this.#others.filter((r) => (r === 0 ? !entered : !arrived.includes(r)));
      return missing.length ? missing : [0];
    } catch {
      return [0];
    }
  }

  /** Rank 0 (the hub) answers "whose parts of collective n do you have?" from its mailbox. */
  #answerQueries(box: PushMailbox): void {
    box.interceptPrefix = 'q/';
    box.onIntercept = (tag) => {
      const [, ns, rs] = tag.split('/');
      const n = Number(ns);
      const r = Number(rs);
      if (!Number.isInteger(n) || n < 0 || !Number.isInteger(r) || r <= 0 || r >= this.worldSize) return;
      const ranks = this.#others; // this is rank 0: every other rank
      const got = box.arrived(ranks.map((s) => `c/${n}/${s}`));
      const ans = encodeObject({ entered: n < this.#collSeq, arrived: this.#hubGaveUp.get(n) ?? ranks.filter((_, i) => got[i]) });
      this.#post([r], `a/${n}`, ans, 'collective query', { timeoutMs: this.timeoutMs }).catch(() => {});
    };
  }
}

/** The hub's bundle of every rank's part: u32 count, u32 length per part, then the parts. */
function packParts(parts: Uint8Array[]): Uint8Array {
  let size = 4 + 4 * parts.length;
  for (const p of parts) size += p.length;
  const out = new Uint8Array(size);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, parts.length, true);
  let at = 4 + 4 * parts.length;
  parts.forEach((p, i) => {
    dv.setUint32(4 + 4 * i, p.length, true);
    out.set(p, at);
    at += p.length;
  });
  return out;
}

function unpackParts(b: Uint8Array, n: number, o: Origin): Uint8Array[] {
  const bad = () => protocolError(`malformed collective bundle under key '${o.key}' (written by rank ${o.src})`, { key: o.key, peerRank: o.src });
  if (b.length < 4 + 4 * n) throw bad();
  const dv = new DataView(b.buffer, b.byteOffset, b.length);
  if (dv.getUint32(0, true) !== n) throw bad();
  const out: Uint8Array[] = [];
  let at = 4 + 4 * n;
  for (let i = 0; i < n; i++) {
    const len = dv.getUint32(4 + 4 * i, true);
    if (len > b.length - at) throw bad();
    out.push(b.subarray(at, at + len));
    at += len;
  }
  if (at !== b.length) throw bad();
  return out;
}
