/**
 * StatelessProcessGroup: objects and small tensors between the ranks of one group, carried by a
 * key-value store (docs/process-group.md). The store-only channel vLLM uses for metadata, without its
 * defects: keys name source, destination and epoch; readers delete what they consumed; every
 * wait has a deadline that names the ranks it waited for; decoding never runs code.
 *
 * Messages (ns = `${groupName}/${epoch}/`), see docs/process-group.md. Every message is one key
 * `ns to/{dst}/{tag}`, written by its sender and consumed by dst through its Mailbox (mailbox.ts:
 * pushed by a groupcomm store the moment it is written, read key by key from a torch store;
 * messages.ts writes and takes them, collective.ts runs the collectives):
 *   tag p/{src}/{n}    n-th point-to-point message src → dst (objects and tensors share n)
 *   tag b/{src}/{n}    n-th broadcast from src: the value itself (up to FANOUT_MAX_BYTES, with
 *                      one reader, or when src's process hosts the store), else an empty
 *                      marker: the value is then stored once at
 *                      ns b/{src}/{n}, and the reader that brings ns b/{src}/{n}/ack to
 *                      worldSize−1 deletes both
 *   tag c/{n}/{src}    src's part of the n-th collective (barrier, allGatherObj, allReduce); with a
 *                      hub (collective.ts), c/{n}/all is the bundle rank 0 sends everyone, and
 *                      q/{n}/{src}, a/{n} ask rank 0 whose parts of n it lacks
 *   ns bye, ns bye/all departure counter of close()
 *
 * Ordering. Every op takes its sequence number synchronously, in call order, so callers may
 * start many ops without awaiting and results still match by program order, as long as all
 * ranks issue the same sequence (per peer for send/recv, per source for broadcasts, globally
 * for collectives). Writes go out at once, in call order, on the store client's pipelined
 * connection; a message's tag, not its arrival time, says which receive it answers.
 *
 * This file is the public class; options.ts holds its options, close.ts the work of close() and
 * reclaim() (departure, key cleanup, dead ranks' mailboxes).
 */
import { abortedError, destroyedError, invalidArgument } from '../base/errors.js';
import { effectiveTimeout, type OpOptions } from '../base/deadline.js';
import { asyncDispose, type CloseOptions, lifeController, reasonSuffix } from '../base/lifecycle.js';
import { logger } from '../base/log.js';
import { checkFactory, factoryToken } from '../base/factory.js';
import type { Store, Subscription } from '../store/types.js';
import { TcpStore } from '../store/client.js';
import { bytesOf, empty, type CpuTensor, type Tensor } from '../core/tensor.js';
import { checkOutAliasing } from '../core/alias.js';
import type { BroadcastOptions, ReduceOptions } from '../core/collectives.js';
import { reduceBytes, finishAvg, REDUCE_OPS } from '../core/reduce.js';
import {
  checkCpuTensor, decodeObject, decodeTensor, encodeObject, encodeTensor, fillTensor,
} from './codec.js';
import { join, joinKeys } from './join.js';
import { openMailbox, PushMailbox } from './mailbox.js';
import { EMPTY, Messages } from './messages.js';
import { CollectiveLane, HUB_MIN_RANKS } from './collective.js';
import { OpTracker } from './tracker.js';
import { spinUs, type DestroyOptions, type ProcessGroupOptions, type ReduceOpName } from './options.js';
import { closeGroup, reclaimMailboxes, type GroupState } from './close.js';

const log = logger('PG');
/** Only create() constructs a group (base/factory.ts). */
const MADE = factoryToken('StatelessProcessGroup');

export type { ProcessGroupOptions, DestroyOptions, ReduceOpName };

export class StatelessProcessGroup {
  readonly rank: number;
  readonly worldSize: number;
  readonly groupName: string;
  /** Incarnation number of this group on its store; part of every key. */
  readonly epoch: number;
  readonly store: Store;
  readonly timeoutMs: number;

  /** We opened the store (and, on rank 0, its server): destroy closes it. */
  readonly #ownsStore: boolean;
  /** Operations and queued cleanups in flight. */
  readonly #tracker = new OpTracker();
  /** This group's messages: keys, sequence numbers, the mailbox. */
  readonly #msgs: Messages;
  /** Collective n of this group (hub or all to all). */
  readonly #lane: CollectiveLane;
  /** The first close() or abort(): from then on new operations are refused. */
  #closing: Promise<void> | undefined;
  /** Fired by abort(): cuts short a close() in progress (its departure requests). */
  readonly #life = lifeController();
  /** Ranks reclaim() was told are dead: close() no longer waits for them. */
  readonly #dead = new Set<number>();
  /** Dead ranks' mailboxes this rank holds (reclaim), so nothing sent to them is stored. */
  readonly #sinks = new Map<number, Subscription>();

  private constructor(token: symbol, o: { rank: number; worldSize: number; groupName: string; epoch: number; store: Store; timeoutMs: number; ownsStore: boolean }) {
    checkFactory(token, MADE, 'StatelessProcessGroup', 'const pg = await StatelessProcessGroup.create({ host, port, rank, worldSize })',
      'a process group joins its peers through the store before it is usable');
    this.rank = o.rank;
    this.worldSize = o.worldSize;
    this.groupName = o.groupName;
    this.epoch = o.epoch;
    this.store = o.store;
    this.timeoutMs = o.timeoutMs;
    this.#ownsStore = o.ownsStore;
    this.#msgs = new Messages({ ...o, tracker: this.#tracker });
    this.#lane = new CollectiveLane(this.#msgs);
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
        secret: opts.secret, insecure: opts.insecure,
      });
    }
    try {
      const epoch = worldSize === 1
        ? await store.add(joinKeys.epoch(groupName), 1, { timeoutMs, signal: opts.signal })
        : await join({ store, groupName, rank, worldSize, deadline, signal: opts.signal }, timeoutMs);
      log.debug(`group '${groupName}' epoch ${epoch}: rank ${rank}/${worldSize} joined`);
      const g = new StatelessProcessGroup(MADE, { rank, worldSize, groupName, epoch, store, timeoutMs, ownsStore });
      if (worldSize > 1) {
        // Messages sent to this rank before it subscribed are stored meanwhile and handed over first.
        g.#msgs.mailbox = await openMailbox(store, g.#msgs.inbox(rank),
          { timeoutMs: Math.max(1, deadline - performance.now()), signal: opts.signal }, (keys) => g.#tracker.track(g.#msgs.discard(keys).catch(() => {})), spin);
        g.#lane.hub = worldSize >= HUB_MIN_RANKS && g.#msgs.mailbox instanceof PushMailbox;
        if (rank === 0 && g.#lane.hub) g.#lane.answerQueries(g.#msgs.mailbox as PushMailbox);
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
    return this.#op(() => this.#msgs.send(encodeObject(obj), this.#peer(dst, 'sendObj', 'dst'), 'sendObj', opts));
  }

  /** Receives the next object `src` sent to this rank (in `src`'s send order). */
  recvObj<T = unknown>(src: number, opts?: OpOptions): Promise<T>;
  recvObj(src: number, opts?: OpOptions): Promise<unknown> {
    return this.#op(() => {
      const peer = this.#peer(src, 'recvObj', 'src');
      return this.#msgs.recv(peer, 'recvObj', opts).then(([bytes, o]) => decodeObject(bytes, o));
    });
  }

  // ---------------------------------------------------------------- tensors, point to point

  /** Sends a CPU tensor to `dst` as raw bytes with a small header. */
  send(t: Tensor, dst: number, opts?: OpOptions): Promise<void> {
    return this.#op(() => this.#msgs.send(encodeTensor(t), this.#peer(dst, 'send', 'dst'), 'send', opts));
  }

  /** Receives into `dst` (its destination: dtype and shape must match what `src` sent); resolves with `dst`. */
  recv<T extends Tensor>(dst: T, src: number, opts?: OpOptions): Promise<T>;
  recv(dst: Tensor, src: number, opts?: OpOptions): Promise<Tensor> {
    return this.#op(() => {
      checkCpuTensor(dst, 'recv');
      const peer = this.#peer(src, 'recv', 'src');
      return this.#msgs.recv(peer, 'recv', opts).then(([bytes, o]) => {
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
        await this.#msgs.bcastSend(encodeObject(obj), 'broadcastObj', opts);
        return obj;
      }
      const [bytes, o] = await this.#msgs.bcastRecv(src, 'broadcastObj', opts);
      return decodeObject(bytes, o) as T;
    });
  }

  /**
   * Collective: src's `tensor` on every rank, written into `out` (in place: `out: tensor`) or a
   * new tensor; the others pass a tensor of the same dtype and shape, which is not written.
   */
  broadcast<T extends Tensor>(tensor: T, opts: BroadcastOptions<T>): Promise<T>;
  broadcast(tensor: Tensor, opts: BroadcastOptions<Tensor>): Promise<Tensor> {
    return this.#op(async () => {
      checkCpuTensor(tensor, 'broadcast');
      const src = opts?.src;
      this.#root(src, 'broadcast');
      const { t: out, inPlace } = this.#out(opts.out, tensor, 'broadcast', true);
      if (src === this.rank || this.worldSize === 1) {
        if (this.worldSize > 1) await this.#msgs.bcastSend(encodeTensor(tensor), 'broadcast', opts);
        if (!inPlace) bytesOf(out).set(bytesOf(tensor as CpuTensor));
        return out;
      }
      const [bytes, o] = await this.#msgs.bcastRecv(src, 'broadcast', opts);
      fillTensor(out, decodeTensor(bytes, o), 'broadcast', o);
      return out;
    });
  }

  // ---------------------------------------------------------------- collectives

  /** Collective: every rank's object, by rank (this rank's entry is `obj` itself). */
  allGatherObj<T>(obj: T, opts?: OpOptions): Promise<T[]> {
    return this.#op(async () => {
      if (this.worldSize === 1) return [obj];
      const parts = await this.#lane.run(encodeObject(obj), 'allGatherObj', opts);
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
      await this.#lane.run(EMPTY, 'barrier', opts);
    });
  }

  /**
   * Collective, for small CPU tensors: op(input over all ranks), written into `out` (in place:
   * `out: input`) or a new tensor. Every rank folds the same gathered values in rank order, so
   * all ranks get bit-identical results. Ops: sum, prod, min, max, avg (others are rejected,
   * unlike vLLM which returns rank 0's value).
   */
  allReduce<T extends Tensor>(input: T, opts?: ReduceOptions<T>): Promise<T>;
  allReduce(input: Tensor, opts: ReduceOptions<Tensor> = {}): Promise<Tensor> {
    return this.#op(async () => {
      checkCpuTensor(input, 'allReduce');
      const op = opts.op ?? 'sum';
      // The store channel folds small tensors itself and has no pre-multiplied sum (the CPU group and device communicators do).
      if (typeof op !== 'string') throw invalidArgument('allReduce: the store channel takes the ops by name; premulSum runs on the CPU group and device communicators');
      if (!REDUCE_OPS.includes(op)) throw invalidArgument(`allReduce: unsupported op '${op}'; use one of ${REDUCE_OPS.join(', ')}`);
      if (op === 'avg' && input.dtype === 'bool') throw invalidArgument('allReduce: avg is not defined for bool (sum/max = any, prod/min = all)');
      const { t: out, inPlace } = this.#out(opts.out, input, 'allReduce', true);
      if (this.worldSize === 1) {
        if (!inPlace) bytesOf(out).set(bytesOf(input as CpuTensor));
        return out;
      }
      const parts = await this.#lane.run(encodeTensor(input), 'allReduce', opts);
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
   * Reclaims the store keys of ranks known to be dead (a coordinator that saw PEER_LOST, a
   * launcher that saw the process exit): nothing else would ever delete them. Local and
   * idempotent; every survivor may call it (docs/process-group.md, "Cleanup guarantees").
   * - Their mailboxes: this rank subscribes to each one in the dead rank's place (the store
   *   allows one subscriber per mailbox, and frees it when the dead rank's connection closes),
   *   which hands over and deletes what was queued there, and swallows whatever is sent to it
   *   until this group closes. If the mailbox stays taken for `timeoutMs` (default 1000 ms) —
   *   another survivor holds it, or the rank is not dead after all — it is left alone.
   * - Large broadcast values they will never acknowledge: close() deletes the ones this rank
   *   wrote or read, once the survivors have departed.
   * - close()'s departure handshake waits only for the survivors (they must all be told the same
   *   ranks); the lowest surviving rank leaves last and deletes the group's keys.
   * Resolves with the ranks whose mailbox this rank now holds (none on a store that cannot
   * push, such as torch's: its keys stay until the store closes).
   */
  async reclaim(ranks: number[], opts: OpOptions = {}): Promise<number[]> {
    for (const r of ranks) {
      if (!Number.isInteger(r) || r < 0 || r >= this.worldSize || r === this.rank) {
        throw invalidArgument(`reclaim: ${r} is not another rank of this group (worldSize ${this.worldSize})`, { rank: this.rank, peerRank: r });
      }
    }
    if (this.#closing) return [...this.#sinks.keys()];
    return reclaimMailboxes(this.#state(), ranks, opts);
  }

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
      const why = reasonSuffix(reason);
      const err = abortedError(`group '${this.groupName}' was aborted${why}`, { rank: this.rank, cause: reason });
      this.#life.abort(err);
      this.#tracker.abortAll(err);
      this.#msgs.mailbox?.close(err);
      this.#closeSinks();
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
    return this.#msgs.ns;
  }

  #close(opts: CloseOptions): Promise<void> {
    return closeGroup(this.#state(), opts, (reason) => this.abort(reason), () => this.#closeSinks());
  }

  #closeSinks(): void {
    for (const sub of this.#sinks.values()) sub.close();
    this.#sinks.clear();
  }

  /** What close.ts works with: this group's state, shared by reference. */
  #state(): GroupState {
    return {
      rank: this.rank, worldSize: this.worldSize, groupName: this.groupName, epoch: this.epoch, store: this.store,
      timeoutMs: this.timeoutMs, ownsStore: this.#ownsStore, tracker: this.#tracker, msgs: this.#msgs, life: this.#life,
      dead: this.#dead, sinks: this.#sinks, closing: () => this.#closing !== undefined,
    };
  }

  // ---------------------------------------------------------------- internals

  /**
   * Runs an op: refuses after close/abort, turns sync throws into rejections, tracks it for
   * close(), and lets abort() reject it at once.
   */
  #op<T>(fn: () => Promise<T> | T): Promise<T> {
    if (this.#closing) return Promise.reject(destroyedError(`group '${this.groupName}' was closed`, { rank: this.rank }));
    return this.#tracker.run(fn);
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
}
