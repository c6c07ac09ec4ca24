/**
 * StatelessProcessGroup: objects and small tensors between the ranks of one group, carried by a
 * key-value store (design §5). The store-only channel vLLM uses for metadata, without its
 * defects: keys name source, destination and epoch; readers delete what they consumed; every
 * wait has a deadline that names the ranks it waited for; decoding never runs code.
 *
 * Key scheme (ns = `${groupName}/${epoch}/`), see docs/process-group.md:
 *   ns p/{src}/{dst}/{n}   n-th message src → dst (objects and tensors share n); dst deletes it
 *   ns b/{src}/{n}/{dst}   n-th broadcast from src, dst's copy (more than 2 ranks); dst deletes it
 *   ns b/{src}/{n}         the same with 2 ranks, or a large value (the copies are then empty
 *                          markers); the only or last of the worldSize−1 readers deletes it
 *   ns b/{src}/{n}/ack     readers' counter for a large value
 *   ns c/{n}/{r}           rank r's part of the n-th collective (barrier, allGather, allReduce);
 *                          r deletes it when it completes collective n+1 (all ranks then finished n)
 *   ns bye, ns bye/all     departure counter of destroy()
 *
 * Ordering. Every op takes its sequence number synchronously, in call order, so callers may
 * start many ops without awaiting and results still match by program order, as long as all
 * ranks issue the same sequence (per peer for send/recv, per source for broadcasts, globally
 * for collectives). Writes go out at once, in call order, on the store client's pipelined
 * connection. Reads from one source queue behind each other (see #chained), and collectives
 * run one after another on each rank, which is what makes deleting collective n−1's keys on
 * completing n safe. A queued op still keeps its own deadline and signal (see #queued).
 */
import {
  abortedError, destroyedError, GroupcommError, invalidArgument, isGroupcommError, peerLostError, timeoutError,
} from '../errors.js';
import { DEFAULT_TIMEOUT_MS, effectiveTimeout, guard, type OpOptions } from '../deadline.js';
import { logger } from '../log.js';
import type { Store } from '../store/types.js';
import { TcpStore } from '../store/client.js';
import { bytesOf, type CpuTensor, type Tensor } from '../tensor.js';
import { reduceBytes, finishAvg, REDUCE_OPS, type ReduceOp } from '../core/reduce.js';
import {
  checkCpuTensor, decodeObject, decodeTensor, encodeObject, encodeTensor, fillTensor, type Origin,
} from './codec.js';
import { join, joinKeys } from './join.js';

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
  signal?: AbortSignal;
}

export interface DestroyOptions {
  /**
   * Skip waiting for this rank's unfinished ops and the departure handshake (after a failure;
   * rank 0 then may close the server under the others' feet).
   */
  force?: boolean;
  timeoutMs?: number;
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

/** How long queued cleanups wait for a write to ride along with (see #later). */
const CLEANUP_DELAY_MS = 2;

/** A resolved timeout plus the caller's signal. */
interface Deadline {
  timeoutMs: number;
  signal?: AbortSignal;
}

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
  readonly #sendSeq: number[];
  readonly #recvSeq: number[];
  #bcastSendSeq = 0;
  readonly #bcastRecvSeq: number[];
  /** Per source: the previous receive's read, which the next one waits for (see #chained). */
  readonly #recvChain: Promise<unknown>[];
  readonly #bcastChain: Promise<unknown>[];
  #collSeq = 0;
  #collChain: Promise<unknown> = Promise.resolve();
  readonly #pending = new Set<Promise<unknown>>();
  #cleanups: [string, () => Promise<unknown>][] = [];
  #cleanupTimer: { timer: ReturnType<typeof setTimeout>; resolve: () => void } | undefined;
  #destroying: Promise<void> | undefined;

  private constructor(o: { rank: number; worldSize: number; groupName: string; epoch: number; store: Store; timeoutMs: number; ownsStore: boolean }) {
    this.rank = o.rank;
    this.worldSize = o.worldSize;
    this.groupName = o.groupName;
    this.epoch = o.epoch;
    this.store = o.store;
    this.timeoutMs = o.timeoutMs;
    this.#ownsStore = o.ownsStore;
    this.#ns = `${o.groupName}/${o.epoch}/`;
    this.#sendSeq = new Array(o.worldSize).fill(0);
    this.#recvSeq = new Array(o.worldSize).fill(0);
    this.#bcastRecvSeq = new Array(o.worldSize).fill(0);
    this.#recvChain = new Array(o.worldSize).fill(Promise.resolve());
    this.#bcastChain = new Array(o.worldSize).fill(Promise.resolve());
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
    const timeoutMs = effectiveTimeout(opts, DEFAULT_TIMEOUT_MS);
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
      return new StatelessProcessGroup({ rank, worldSize, groupName, epoch, store, timeoutMs, ownsStore });
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

  /** Receives into `t` (in place: dtype and shape must match what `src` sent); resolves with `t`. */
  recv(t: Tensor, src: number, opts?: OpOptions): Promise<Tensor> {
    return this.#op(() => {
      checkCpuTensor(t, 'recv');
      const peer = this.#peer(src, 'recv', 'src');
      return this.#recv(peer, 'recv', opts).then(([bytes, o]) => {
        fillTensor(t, decodeTensor(bytes, o), 'recv', o);
        return t;
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

  /** Collective: `t` on `src` is copied into `t` on every other rank (in place); resolves with `t`. */
  broadcast(t: Tensor, src: number, opts?: OpOptions): Promise<Tensor> {
    return this.#op(async () => {
      checkCpuTensor(t, 'broadcast');
      this.#root(src, 'broadcast');
      if (this.worldSize === 1) return t;
      if (src === this.rank) {
        await this.#bcastSend(encodeTensor(t), 'broadcast', opts);
        return t;
      }
      const [bytes, o] = await this.#bcastRecv(src, 'broadcast', opts);
      fillTensor(t, decodeTensor(bytes, o), 'broadcast', o);
      return t;
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
   * Collective, for small CPU tensors: `t` becomes op(t over all ranks), in place. Every rank
   * folds the same gathered values in rank order, so all ranks get bit-identical results.
   * Ops: sum, prod, min, max, avg (others are rejected, unlike vLLM which returns rank 0's value).
   */
  allReduce(t: Tensor, op: ReduceOpName = 'sum', opts?: OpOptions): Promise<Tensor> {
    return this.#op(async () => {
      checkCpuTensor(t, 'allReduce');
      if (!REDUCE_OPS.includes(op)) throw invalidArgument(`allReduce: unsupported op '${op}'; use one of ${REDUCE_OPS.join(', ')}`);
      if (op === 'avg' && t.dtype === 'bool') throw invalidArgument('allReduce: avg is not defined for bool (sum/max = any, prod/min = all)');
      if (this.worldSize === 1) return t;
      const parts = await this.#collective(encodeTensor(t), 'allReduce', opts);
      // This rank's part is decoded from what it published, not re-read from `t`: the caller may
      // have changed `t` since the call, and every rank must fold the same values.
      const got = parts.map((p) => decodeTensor(p.bytes, p.origin));
      for (let r = 0; r < got.length; r++) {
        const g = got[r];
        if (g.dtype !== t.dtype || g.shape.length !== t.shape.length || g.shape.some((d, i) => d !== t.shape[i])) {
          throw invalidArgument(`allReduce: rank ${r} passed [${g.shape.join(', ')}] ${g.dtype}, rank ${this.rank} [${t.shape.join(', ')}] ${t.dtype}`, { peerRank: r });
        }
      }
      // Fold in rank order from a copy of rank 0's value; avg reduces like sum, then divides once.
      const acc = new Uint8Array(got[0].bytes);
      for (let r = 1; r < got.length; r++) reduceBytes(op, t.dtype, acc, got[r].bytes);
      if (op === 'avg') finishAvg(t.dtype, acc, this.worldSize);
      bytesOf(t as CpuTensor).set(acc);
      return t;
    });
  }

  // ---------------------------------------------------------------- lifecycle

  /**
   * Leaves the group. Waits for this rank's unfinished operations, then (unless `force`) runs a
   * departure handshake so that rank 0 — which may host the store server — leaves last and
   * deletes the group's remaining keys. Closes the store if the group opened it. Idempotent:
   * later calls return the first call's promise. Operations called afterwards fail with
   * ERR_GROUPCOMM_DESTROYED.
   */
  destroy(opts: DestroyOptions = {}): Promise<void> {
    this.#destroying ??= this.#destroy(opts);
    return this.#destroying;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.destroy();
  }

  /** Tagged keys of this group's current epoch (for tests and debugging). */
  get keyPrefix(): string {
    return this.#ns;
  }

  async #destroy(opts: DestroyOptions): Promise<void> {
    const timeoutMs = effectiveTimeout(opts, this.timeoutMs);
    const deadline = performance.now() + timeoutMs;
    const left = () => ({ timeoutMs: Math.max(1, deadline - performance.now()) });
    // Cleanups queued by finished ops add requests while we wait; drain until nothing is left.
    if (!opts.force) {
      while (this.#pending.size) {
        this.#drain();
        await Promise.allSettled([...this.#pending]);
      }
    }
    try {
      if (this.worldSize > 1 && !opts.force) {
        const bye = this.#ns + 'bye';
        if (this.rank !== 0) {
          const n = await this.store.add(bye, 1, left());
          if (n === this.worldSize - 1) await this.store.set(bye + '/all', '1', left());
        } else {
          await this.store.wait([bye + '/all'], left());
        }
      }
      if (this.rank === 0) await this.#cleanup(left());
    } catch (e) {
      // Departure is best effort: a peer that died must not make destroy throw or hang forever.
      log.warn(`destroy of group '${this.groupName}' epoch ${this.epoch} on rank ${this.rank}: ${(e as Error).message}`);
    } finally {
      if (this.#ownsStore) await this.store.close().catch(() => {});
    }
  }

  /** Rank 0, after everyone departed: delete the keys that outlive their operations. */
  async #cleanup(o: OpOptions): Promise<void> {
    const g = this.groupName;
    // g/open first: from now on a re-creating rank blocks until the next epoch opens.
    const keys = [joinKeys.open(g), joinKeys.all(g, this.epoch), this.#ns + 'bye', this.#ns + 'bye/all'];
    for (const n of [this.#collSeq - 2, this.#collSeq - 1]) {
      if (n < 0) continue;
      for (let r = 0; r < this.worldSize; r++) keys.push(this.#collKey(n, r));
    }
    await Promise.all(keys.map((k) => this.store.deleteKey(k, o)));
  }

  // ---------------------------------------------------------------- internals

  /** Runs an op: refuses after destroy, turns sync throws into rejections, tracks it for destroy. */
  #op<T>(fn: () => Promise<T> | T): Promise<T> {
    if (this.#destroying) return Promise.reject(destroyedError(`group '${this.groupName}' was destroyed`, { rank: this.rank }));
    let p: Promise<T>;
    try {
      p = Promise.resolve(fn());
    } catch (e) {
      return Promise.reject(e);
    }
    this.#track(p);
    return p;
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

  #opts(opts: OpOptions | undefined): Deadline {
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
    return new GroupcommError('ERR_GROUPCOMM_PROTOCOL', `${what}: ${(e as Error)?.message ?? e}`, { rank: this.rank, key, cause: e });
  }

  #send(bytes: Uint8Array, dst: number, what: string, opts?: OpOptions): Promise<void> {
    const key = `${this.#ns}p/${this.rank}/${dst}/${this.#sendSeq[dst]++}`;
    const o = this.#opts(opts);
    const p = this.store.set(key, bytes, o);
    this.#drain();
    return p.catch((e) => { throw this.#fail(e, what, [dst], key, o.timeoutMs); });
  }

  /**
   * One get that waits, and consumes the key: with a store that has `take` the read deletes it
   * (one request, no reply to handle), else it is deleted (ordered behind the get, unawaited).
   */
  async #recv(src: number, what: string, opts?: OpOptions): Promise<[Uint8Array, Origin]> {
    const key = `${this.#ns}p/${src}/${this.rank}/${this.#recvSeq[src]++}`;
    const o = this.#opts(opts);
    const take = this.store.take !== undefined;
    let bytes: Uint8Array;
    try {
      bytes = await this.#chained(this.#recvChain, src, key, o, what, take);
    } catch (e) {
      throw this.#fail(e, what, [src], key, o.timeoutMs);
    }
    if (!take) this.#later(`delete ${key}`, () => this.#discard([key]));
    return [bytes, { key, src }];
  }

  /**
   * Writes broadcast n. With more than one reader, a small value goes to one key per reader
   * (one MULTI_SET), and each reader consumes its own copy in the read itself: the value reaches
   * every reader in one store hop, with no acknowledgement traffic at all. A large value is
   * written once under the shared key (copies would multiply the root's upload), next to an
   * empty marker per reader that sends the reader there; the last reader then deletes it.
   */
  #bcastSend(bytes: Uint8Array, what: string, opts?: OpOptions): Promise<void> {
    const key = `${this.#ns}b/${this.rank}/${this.#bcastSendSeq++}`;
    const o = this.#opts(opts);
    const others = [...Array(this.worldSize).keys()].filter((r) => r !== this.rank);
    let p: Promise<void>;
    if (this.worldSize === 2) {
      p = this.store.set(key, bytes, o);
    } else {
      const copies = others.map((r) => `${key}/${r}`);
      p = bytes.length <= FANOUT_MAX_BYTES
        ? this.store.multiSet(copies, copies.map(() => bytes), o)
        // The payload first: a reader that sees its marker finds the payload already there.
        : this.store.multiSet([key, ...copies], [bytes, ...copies.map(() => EMPTY)], o);
    }
    this.#drain();
    return p.catch((e) => { throw this.#fail(e, what, others, key, o.timeoutMs); });
  }

  /**
   * Reads broadcast n from src: with one reader the shared key, else this rank's own copy (see
   * #bcastSend), consumed in the read when the store can (see #recv). An empty copy is the
   * marker of a large value: read the shared key, then bump its ack counter; whoever brings it to
   * worldSize−1 deletes payload and counter.
   */
  async #bcastRecv(src: number, what: string, opts?: OpOptions): Promise<[Uint8Array, Origin]> {
    const key = `${this.#ns}b/${src}/${this.#bcastRecvSeq[src]++}`;
    const mine = this.worldSize === 2 ? key : `${key}/${this.rank}`;
    const o = this.#opts(opts);
    const t0 = performance.now();
    const take = this.store.take !== undefined;
    let bytes: Uint8Array;
    try {
      bytes = await this.#chained(this.#bcastChain, src, mine, o, what, take);
    } catch (e) {
      throw this.#fail(e, what, [src], mine, o.timeoutMs);
    }
    if (!take) this.#later(`delete ${mine}`, () => this.#discard([mine]));
    if (bytes.length > 0) return [bytes, { key: mine, src }];
    try {
      bytes = await this.store.get(key, { timeoutMs: Math.max(1, o.timeoutMs - (performance.now() - t0)), signal: o.signal });
    } catch (e) {
      throw this.#fail(e, what, [src], key, o.timeoutMs);
    }
    const ack = key + '/ack';
    this.#later(`ack ${key}`, () => this.store.add(ack, 1).then((n) => {
      if (n === this.worldSize - 1) return this.#discard([key, ack]);
    }));
    return [bytes, { key, src }];
  }

  /**
   * Runs `start` once `prev` settled, under this op's own deadline and signal: an op queued
   * behind a slow one still times out (or aborts) on time, and if it gives up before its turn
   * its store request is never issued. `inner` is what the next op in the queue waits for.
   */
  #queued<T>(prev: Promise<unknown>, o: Deadline, what: string, start: (o: Deadline) => Promise<T>): { inner: Promise<T>; outer: Promise<T> } {
    const deadline = performance.now() + o.timeoutMs;
    let gaveUp = false;
    const go = () => (gaveUp
      ? Promise.reject(abortedError(`${what}: gave up before its turn`))
      : start({ timeoutMs: Math.max(1, deadline - performance.now()), signal: o.signal }));
    const inner = prev.then(go, go);
    const outer = guard(inner, {
      timeoutMs: o.timeoutMs,
      signal: o.signal,
      what,
      onTimeout: (elapsedMs) => timeoutError(`${what} timed out after ${o.timeoutMs}ms`, { timeoutMs: o.timeoutMs, elapsedMs }),
      cancel: () => { gaveUp = true; },
    });
    return { inner, outer };
  }

  /**
   * The store read of one receive, started only once the previous receive from the same source
   * has its value. A source writes its messages in order, so while message k is missing so are
   * k+1, k+2, …: without the queue, 500 unawaited receives would park 500 blocking waits on the
   * server (each on a connection of its own); with it, at most one per source waits.
   */
  #chained(chain: Promise<unknown>[], src: number, key: string, o: Deadline, what: string, take = false): Promise<Uint8Array> {
    const { inner, outer } = this.#queued(chain[src], o, what, (lo) => {
      return take ? this.store.take!(key, lo) : this.store.get(key, lo);
    });
    chain[src] = inner.catch(() => {});
    return outer;
  }

  #collKey(n: number, r: number): string {
    return `${this.#ns}c/${n}/${r}`;
  }

  /**
   * Collective n: publish this rank's part, read everyone else's. Runs after this rank's
   * collective n−1 finished, so completing n proves every rank finished n−1 and this rank's
   * part of n−1 can go.
   */
  async #collective(mine: Uint8Array, what: string, opts?: OpOptions): Promise<{ bytes: Uint8Array; origin: Origin }[]> {
    const n = this.#collSeq++;
    const o = this.#opts(opts);
    const myKey = this.#collKey(n, this.rank);
    const others = [...Array(this.worldSize).keys()].filter((r) => r !== this.rank);
    const keys = others.map((r) => this.#collKey(n, r));
    const { inner, outer } = this.#queued(this.#collChain, o, what, async (lo) => {
      const put = this.store.set(myKey, mine, lo);
      const got = what === 'barrier' ? this.store.wait(keys, lo).then(() => []) : this.store.multiGet(keys, lo);
      this.#drain();
      await put;
      const values = await got;
      if (n > 0) {
        const stale = this.#collKey(n - 1, this.rank);
        this.#later(`delete ${stale}`, () => this.#discard([stale]));
      }
      return values;
    });
    this.#collChain = inner.catch(() => {});
    let values: Uint8Array[];
    try {
      values = await outer;
    } catch (e) {
      if (isGroupcommError(e, 'ERR_GROUPCOMM_TIMEOUT')) {
        const missing = await this.#absent(others, (r) => this.#collKey(n, r));
        const who = missing.length ? missing : others;
        throw this.#fail(e, `${what} (collective #${n})`, who, this.#collKey(n, who[0]), o.timeoutMs);
      }
      throw this.#fail(e, what, others, keys[0], o.timeoutMs);
    }
    const out: { bytes: Uint8Array; origin: Origin }[] = [];
    for (let r = 0, i = 0; r < this.worldSize; r++) {
      if (r === this.rank) out.push({ bytes: mine, origin: { key: myKey, src: r } });
      else out.push({ bytes: values[i] ?? EMPTY, origin: { key: keys[i++], src: r } });
    }
    return out;
  }

  /** Which of `ranks` have not written their key (bounded probe after a timeout). */
  async #absent(ranks: number[], keyOf: (r: number) => string): Promise<number[]> {
    try {
      const present = await Promise.all(ranks.map((r) => this.store.check([keyOf(r)], { timeoutMs: 2000 })));
      return ranks.filter((_, i) => !present[i]);
    } catch {
      return [];
    }
  }
}

