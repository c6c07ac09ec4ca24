/**
 * StatelessGroupCoordinator: one communication group among many in a process, with its own
 * membership, store, CPU channel and (optionally) device communicator — vLLM's
 * `StatelessGroupCoordinator` for Node and Bun (docs/coordinator.md).
 *
 * Routing: device tensors go over the device communicator, CPU tensors over the CPU group,
 * objects and tensor-dict metadata over the store channel (StatelessProcessGroup).
 *
 * Every tensor collective picks its channel once (CPU group, device communicator, or the local
 * channel of a group of one) and calls the one collective shape they share
 * (host/core/collectives.ts).
 *
 * This file holds the public class: the operations' signatures and the lifecycle. The work is in
 * the sibling files: create.ts checks the options and opens the group for create(), channels.ts
 * opens and closes the channels, queue.ts runs the operations in order under their deadlines and
 * the failure state, io.ts routes tensors to the channels, objects.ts and tensors.ts are the
 * operations.
 *
 * Contracts (the same for every method; docs/coordinator.md has the table):
 * - World size 1: every operation returns at once, without traffic: objects, lists and dicts
 *   are returned as passed; tensor results follow the aliasing contract below (a copy).
 * - Aliasing, as in every layer: a tensor passed as an input is never written; the result goes
 *   into `out` when given, else into a new tensor; in place is `out` = the input (allReduce and
 *   broadcast only); any other overlap of `out` and the input is refused.
 * - Order: operations on one coordinator run one after the other in call order, even when the
 *   caller does not await each one; coordinators are independent of each other.
 * - Ranks in arguments (src, dst) are ranks *in the group* and are range-checked.
 */
import { type OpOptions } from '../base/deadline.js';
import { destroyedError } from '../base/errors.js';
import { logger, type Logger } from '../base/log.js';
import type { DType, Tensor } from '../core/tensor.js';
import type { DeviceBackendV1, DeviceCommunicatorV1 } from '../device/types.js';
import type { GroupLayout } from '../core/layout.js';
import { registerName, releaseName, lookupName } from './names.js';
import { type Deadline, effectiveTimeout, settled } from '../base/deadline.js';
import { asyncDispose, type CloseOptions } from '../base/lifecycle.js';
import { checkFactory, factoryToken } from '../base/factory.js';
import type { PortTriple } from './ports.js';
import type { TensorDict } from './dict.js';
import { abortChannels, closeChannels, type Channels } from './channels.js';
import { GroupIo } from './io.js';
import type { GroupFaults } from './faults.js';
import { createFromEnv, groupFaults, openGroup } from './create.js';
import { OpQueue, type Run } from './queue.js';
import * as objects from './objects.js';
import * as tensors from './tensors.js';
import * as p2p from './p2p.js';
import * as variable from './variable.js';
import type { RecvSpec } from './p2p.js';
import type { CoordinatorOptions, CoordinatorOutOptions, CoordinatorReduceOptions, CoordinatorSplitOptions } from './types.js';
import { planSplit, runSplit, type CoordinatorSubgroupOptions, type Inherited, type SplitParent } from './split.js';
import type { OpenedGroup } from './create.js';

export type { TensorDict, PortTriple, RecvSpec };
export type { CoordinatorOptions, CoordinatorOutOptions, CoordinatorReduceOptions, CoordinatorSplitOptions, CoordinatorSubgroupOptions };

/** Only create() constructs a coordinator (base/factory.ts). */
const MADE = factoryToken('StatelessGroupCoordinator');

export class StatelessGroupCoordinator {
  /** This process's global rank. */
  readonly rank: number;
  /** The group's global ranks, in group-rank order. */
  readonly ranks: readonly number[];
  readonly worldSize: number;
  readonly rankInGroup: number;
  readonly localRank: number;
  /**
   * Process-local handle, `groupName:N` (lookup() finds the group by it); released on destroy.
   * Logs and errors name the group as every layer does, `groupName_index` (see `label`).
   */
  readonly uniqueName: string;
  /** The device this rank's device tensors live on ('cpu' without a device backend). */
  readonly device: string;
  /** The index of this group in `groupRanks` (the `_index` of its port key). */
  readonly groupIndex: number;
  /** Group rank 0's [devicePort, cpuPort, storePort]; undefined for a group of one (it binds nothing). */
  readonly ports: PortTriple | undefined;
  readonly backend: DeviceBackendV1 | undefined;

  private readonly ch: Channels;
  /** What the operations work with: the channels (none in a group of one), the device, the loopback queue. */
  private readonly io: GroupIo;
  /** Created with groupPorts: the ports are fixed, so destroy() waits until they are free again. */
  private readonly explicitPorts: boolean;
  private readonly timeoutMs: number;
  private readonly log: Logger;
  /** Runs the operations in call order under the group's failure state (queue.ts). */
  private readonly queue: OpQueue;
  /** The group's failure state, shared by its channels (faults.ts). */
  private readonly faults: GroupFaults;
  /**
   * The group's name in logs and errors: `${groupName}_${groupIndex}`, its name on the wire —
   * the same on every member and in the CPU group's, store channel's and device's own lines.
   */
  private readonly label: string;
  /** The first close() or abort(): from then on new operations are refused. */
  private closing: Promise<void> | undefined;
  /** What split() passes on to sub-groups from this group's create options. */
  private inherited: Inherited = {};
  /** split() calls so far: the same on every member (collective, in call order), so it names their keys. */
  private splitSeq = 0;

  private constructor(token: symbol, globalRank: number, layout: GroupLayout, uniqueName: string, localRank: number, device: string,
    ports: PortTriple | undefined, backend: DeviceBackendV1 | undefined, ch: Channels, timeoutMs: number,
    explicitPorts: boolean) {
    checkFactory(token, MADE, 'StatelessGroupCoordinator',
      'const group = await StatelessGroupCoordinator.create({ groupRanks, globalRank, rendezvous })',
      'a group opens its channels with the other members before it is usable');
    this.rank = globalRank;
    this.ranks = Object.freeze([...layout.ranks]);
    this.worldSize = layout.ranks.length;
    this.rankInGroup = layout.rankInGroup;
    this.groupIndex = layout.groupIndex;
    this.localRank = localRank;
    this.uniqueName = uniqueName;
    this.label = `${uniqueName.slice(0, uniqueName.lastIndexOf(':'))}_${layout.groupIndex}`;
    this.device = device;
    this.ports = ports;
    this.backend = backend;
    this.ch = ch;
    const net = ch.pg && ch.cpu ? { pg: ch.pg, cpu: ch.cpu, comm: ch.comm } : undefined;
    this.io = new GroupIo(this.label, this.worldSize, this.rankInGroup, device, backend, net);
    this.explicitPorts = explicitPorts;
    this.timeoutMs = timeoutMs;
    this.log = logger('COORD', `${this.label} rank ${this.rankInGroup}/${this.worldSize}`);
    this.queue = new OpQueue({ label: this.label, rank: globalRank, ranks: this.ranks, timeoutMs, tracer: this.log.tracing ? this.log : undefined });
    this.faults = groupFaults(this.label, this.rankInGroup, this.worldSize, ch, this.queue.life);
    this.queue.faults = this.faults;
    this.faults.listen();
  }

  /**
   * Joins this process's group of `groupRanks`. Collective: every member calls it (with the
   * same groupRanks, groupName and ports); it resolves once the store channel, the CPU group
   * and the device communicator are up on every member, or rejects naming who is missing.
   */
  static async create(o: CoordinatorOptions): Promise<StatelessGroupCoordinator> {
    return StatelessGroupCoordinator.build(o, await openGroup(o));
  }

  /** The coordinator over an opened group (create, split). */
  private static build(o: CoordinatorOptions, opened: OpenedGroup, how = 'created'): StatelessGroupCoordinator {
    const { layout, uniqueName, localRank, device, ports, backend, ch, timeoutMs, mq } = opened;
    const g = new StatelessGroupCoordinator(MADE, o.globalRank, layout, uniqueName, localRank, device, ports, backend, ch, timeoutMs,
      o.groupPorts !== undefined);
    g.io.mq = mq;
    g.inherited = { host: o.host, secret: o.secret, insecure: o.insecure, globalWorldSize: o.globalWorldSize, useDeviceCommunicator: o.useDeviceCommunicator };
    registerName(uniqueName, g);
    g.log.info(`${how}: global ranks [${layout.ranks.join(', ')}], ports [${ports?.join(', ') ?? 'none'}]`);
    return g;
  }

  /**
   * Sub-groups of this group, like torch's split_group. Collective over THIS group: every member
   * calls it, in the same order as its other operations, with the same `groupRanks` (disjoint
   * lists of this group's global ranks); a member in one of the lists resolves with the new
   * group's coordinator (group ranks in list order), the others with undefined. The new groups'
   * device communicators are split from this group's (ncclCommSplit: no new unique id) when the
   * backend has capabilities.split, else bootstrapped as create() does; their store channels and
   * CPU groups are created as create() does, with this group's store as the rendezvous. This
   * group keeps working; closing either leaves the other working.
   */
  split(opts: CoordinatorSubgroupOptions): Promise<StatelessGroupCoordinator | undefined> {
    const net = this.io.net;
    const parent: SplitParent = {
      rank: this.rank, ranks: this.ranks, localRank: this.localRank, label: this.label, timeoutMs: this.timeoutMs,
      inherited: this.inherited, backend: this.backend, store: this.ch.store, cpu: net?.cpu, comm: net?.comm,
    };
    return this.op('split', opts, () => {
      // A refused split moves neither the split count nor the collective count (op()).
      const seq = this.splitSeq;
      const plan = planSplit(parent, opts, seq);
      this.splitSeq++;
      return (b) => runSplit(parent, plan, seq, b,
        (o, opened, how) => StatelessGroupCoordinator.build(o, opened, `split from ${this.label}, ${how}`));
    });
  }

  /**
   * env://: joins a group with the launcher's variables (RANK, LOCAL_RANK, WORLD_SIZE,
   * MASTER_ADDR, MASTER_PORT; see docs/multinode.md) — globalRank, localRank and globalWorldSize
   * default to them and the rendezvous is the launcher's store, connected for the creation only.
   * A missing or malformed variable is ERR_GROUPCOMM_CONFIG naming it.
   */
  static async fromEnv(o: Omit<CoordinatorOptions, 'globalRank' | 'rendezvous' | 'groupPorts'> & { globalRank?: number }): Promise<StatelessGroupCoordinator> {
    return createFromEnv(o, (c) => StatelessGroupCoordinator.create(c));
  }

  /** The live coordinator registered under a unique name in this process, if any. */
  static lookup(uniqueName: string): StatelessGroupCoordinator | undefined {
    return lookupName<StatelessGroupCoordinator>(uniqueName);
  }

  // ---- bookkeeping (vLLM's GroupCoordinator properties) ------------------------------------

  size(): number { return this.worldSize; }
  get firstRank(): number { return this.ranks[0]; }
  get lastRank(): number { return this.ranks[this.worldSize - 1]; }
  get isFirstRank(): boolean { return this.rank === this.firstRank; }
  get isLastRank(): boolean { return this.rank === this.lastRank; }
  /** Global rank of the next member (wrapping). */
  get nextRank(): number { return this.ranks[this.io.ring.next]; }
  /** Global rank of the previous member (wrapping). */
  get prevRank(): number { return this.ranks[this.io.ring.prev]; }
  /** True once close(), destroy() or abort() was called. */
  get destroyed(): boolean { return this.closing !== undefined; }
  /**
   * How group rank 0's broadcasts reach the others when the group was created with
   * useMessageQueueBroadcaster: group ranks reading the shared-memory ring, and those served
   * over the CPU group. Undefined without a message queue (or in a group of one).
   */
  get messageQueue(): { shmReaders: readonly number[]; socketReaders: readonly number[] } | undefined {
    const mq = this.io.mq;
    return mq && { shmReaders: mq.shmReaders, socketReaders: mq.socketReaders };
  }
  /** The device communicator, when the group has one (world size > 1 and useDeviceCommunicator). */
  get deviceCommunicator(): DeviceCommunicatorV1 | undefined { return this.io.net?.comm; }

  /** A zero-filled tensor on `device` (default: this group's device). Free device tensors with `free`. */
  empty(shape: number[], dtype: DType = 'float32', device: string = this.device): Tensor {
    return this.io.empty(shape, dtype, device);
  }

  /** Releases a device tensor made by this group's backend (a no-op for CPU tensors). */
  free(t: Tensor): void {
    this.io.free(t);
  }

  // ---- objects (store channel) --------------------------------------------------------------

  /** `src` passes the object; every rank resolves with it (src: the same object, others: a copy). */
  broadcastObject<T>(obj?: T, src = 0, opts?: OpOptions): Promise<T> {
    return this.op('broadcastObject', opts, () => objects.broadcastObject(this.io, obj, src),
      () => this.io.publishedObj(src) as { value: T } | undefined);
  }

  /**
   * Fills `list` in place with src's elements and returns it. One message carries the whole
   * list (vLLM sends one per element); a receiver whose list length differs from src's fails
   * with INVALID_ARGUMENT and its list untouched, instead of desynchronising the group.
   */
  broadcastObjectList<T>(list: T[], src = 0, opts?: OpOptions): Promise<T[]> {
    return this.op('broadcastObjectList', opts, () => objects.broadcastObjectList(this.io, list, src), () => {
      const got = this.io.publishedObj(src);
      return got && { value: objects.fillList(list, got.value, src) };
    });
  }

  /**
   * Sends `obj` to group rank `dst`. To this rank itself, a structured clone is queued for the
   * next recvObject(rankInGroup) (how point to point stays uniform down to world size 1).
   */
  sendObject(obj: unknown, dst: number, opts?: OpOptions): Promise<void> {
    return this.op('sendObject', opts, () => (b) => objects.sendObject(this.io, obj, dst, b));
  }

  /** The next object group rank `src` sent to this rank. */
  recvObject<T = unknown>(src: number, opts?: OpOptions): Promise<T> {
    return this.op('recvObject', opts, () => (b) => objects.recvObject<T>(this.io, src, b));
  }

  /** Resolves once every member has called it; a timeout names the ranks that did not. */
  barrier(opts?: OpOptions): Promise<void> {
    return this.op('barrier', opts, () => (b, n) => objects.barrier(this.io, b, n, (at) => this.faults.callsAt(at)));
  }

  // ---- tensor dicts ---------------------------------------------------------------------------

  /**
   * src passes a dict; every rank resolves with it: src with its own dict, the others with a new
   * dict (same keys in the same order; tensors new, on this rank's device for device tensors).
   * Metadata and non-tensor values travel in one frame over the store channel; then each
   * non-empty tensor over the CPU group or the device communicator.
   */
  broadcastTensorDict<T extends object = TensorDict>(dict?: T, src?: number, opts?: OpOptions): Promise<T>;
  broadcastTensorDict(dict?: TensorDict, src = 0, opts?: OpOptions): Promise<TensorDict> {
    return this.op('broadcastTensorDict', opts, () => objects.broadcastTensorDict(this.io, dict, src));
  }

  /** Sends a tensor dict to group rank `dst` (default: the next rank). */
  sendTensorDict<T extends object>(dict: T, dst?: number, opts?: OpOptions): Promise<void>;
  sendTensorDict(dict: TensorDict, dst?: number, opts?: OpOptions): Promise<void> {
    return this.op('sendTensorDict', opts, () => (b) => objects.sendTensorDict(this.io, dict, dst, b));
  }

  /** The next tensor dict group rank `src` (default: the previous rank) sent; always a new dict. */
  recvTensorDict<T extends object = TensorDict>(src?: number, opts?: OpOptions): Promise<T>;
  recvTensorDict(src?: number, opts?: OpOptions): Promise<TensorDict> {
    return this.op('recvTensorDict', opts, () => (b) => objects.recvTensorDict(this.io, src, b));
  }

  // ---- tensor collectives -----------------------------------------------------------------------

  /** src's `tensor` on every rank, into `out` (in place: `out: tensor`) or a new tensor. */
  broadcast<T extends Tensor>(tensor: T, src?: number, opts?: CoordinatorOutOptions<T>): Promise<T>;
  broadcast(tensor: Tensor, src = 0, opts: CoordinatorOutOptions = {}): Promise<Tensor> {
    return this.op('broadcast', opts, () => tensors.broadcast(this.io, tensor, src, opts));
  }

  /** The elementwise reduction (`op`, default sum) of every rank's `tensor`, into `out` (in place: `out: tensor`) or a new tensor. */
  allReduce<T extends Tensor>(tensor: T, opts?: CoordinatorReduceOptions<T>): Promise<T>;
  allReduce(tensor: Tensor, opts: CoordinatorReduceOptions = {}): Promise<Tensor> {
    return this.op('allReduce', opts, () => tensors.allReduce(this.io, tensor, opts));
  }

  /** Every rank's `tensor` concatenated along `dim` in group-rank order (any dim, negative allowed). */
  allGather<T extends Tensor>(tensor: T, dim?: number, opts?: CoordinatorOutOptions<T>): Promise<T>;
  allGather(tensor: Tensor, dim = -1, opts: CoordinatorOutOptions = {}): Promise<Tensor> {
    return this.op('allGather', opts, () => tensors.allGather(this.io, tensor, dim, opts));
  }

  /**
   * `tensor` gathered on `dst` along `dim` (concatenated in group-rank order); the other ranks
   * resolve with undefined.
   */
  gather<T extends Tensor>(tensor: T, dst?: number, dim?: number, opts?: CoordinatorOutOptions<T>): Promise<T | undefined>;
  gather(tensor: Tensor, dst = 0, dim = -1, opts: CoordinatorOutOptions = {}): Promise<Tensor | undefined> {
    return this.op('gather', opts, () => tensors.gather(this.io, tensor, dst, dim, opts));
  }

  /**
   * The reduction of every rank's `tensor`, scattered along `dim`: rank r gets the r-th of
   * worldSize equal slices (dim's size must divide by the world size). Moves `dim` to 0 and back.
   */
  reduceScatter<T extends Tensor>(tensor: T, dim?: number, opts?: CoordinatorReduceOptions<T>): Promise<T>;
  reduceScatter(tensor: Tensor, dim = -1, opts: CoordinatorReduceOptions = {}): Promise<Tensor> {
    return this.op('reduceScatter', opts, () => tensors.reduceScatter(this.io, tensor, dim, opts));
  }

  // ---- variable sizes and all-to-all (variable.ts) ------------------------------------------------

  /**
   * Every rank's `tensor` concatenated along `dim` (default 0) in group-rank order, where group
   * rank r's tensor has `sizes[r]` entries along `dim` (the other dims equal). Without `sizes`:
   * allGather. Every rank passes the same sizes; a rank that disagrees fails everyone naming it.
   */
  allGatherv<T extends Tensor>(tensor: T, sizes?: readonly number[], dim?: number, opts?: CoordinatorOutOptions<T>): Promise<T>;
  allGatherv(tensor: Tensor, sizes?: readonly number[], dim = 0, opts: CoordinatorOutOptions = {}): Promise<Tensor> {
    return this.op('allGatherv', opts, () => variable.allGatherv(this.io, tensor, sizes, dim, opts));
  }

  /**
   * The reduction (`op`, default sum) of every rank's `tensor` (Σ sizes along `dim`, default -1
   * as vLLM's), split along `dim`: group rank r gets `sizes[r]` entries. Without `sizes`: equal parts.
   */
  reduceScatterv<T extends Tensor>(tensor: T, sizes?: readonly number[], dim?: number, opts?: CoordinatorReduceOptions<T>): Promise<T>;
  reduceScatterv(tensor: Tensor, sizes?: readonly number[], dim = -1, opts: CoordinatorReduceOptions = {}): Promise<Tensor> {
    return this.op('reduceScatterv', opts, () => variable.reduceScatterv(this.io, tensor, sizes, dim, opts));
  }

  /**
   * All-to-all along dim 0 (torch's all_to_all_single): `inputSplits[p]` rows of `tensor` go to
   * group rank p, in order; the result holds `outputSplits[p]` rows from each rank p, in rank
   * order. Omitted splits mean equal blocks (dim 0 divisible by the world size).
   */
  allToAll<T extends Tensor>(tensor: T, opts?: CoordinatorSplitOptions<T>): Promise<T>;
  allToAll(tensor: Tensor, opts: CoordinatorSplitOptions = {}): Promise<Tensor> {
    return this.op('allToAll', opts, () => variable.allToAll(this.io, tensor, opts));
  }

  // ---- tensor point to point (p2p.ts) ---------------------------------------------------------

  /**
   * Sends `tensor` to group rank `dst` (default: the next rank) over the channel that carries it
   * (CPU group or device communicator); sends to one rank arrive in order. To this rank itself:
   * a copy is queued.
   */
  send(tensor: Tensor, dst?: number, opts?: OpOptions): Promise<void> {
    return this.op('send', opts, () => (b) => p2p.send(this.io, tensor, dst, b));
  }

  /**
   * The next tensor group rank `src` (default: the previous rank) sent, shaped like `like` (a tensor, only read, or
   * `{ shape, dtype, device? }`), into `out` or a new tensor on this rank's device for device tensors.
   */
  recv<T extends Tensor = Tensor>(like: RecvSpec, src?: number, opts?: CoordinatorOutOptions<T>): Promise<T>;
  recv(like: RecvSpec, src?: number, opts: CoordinatorOutOptions = {}): Promise<Tensor> {
    return this.op('recv', opts, () => (b) => p2p.recv(this.io, like, src, opts.out, b));
  }

  // ---- lifetime -----------------------------------------------------------------------------------

  /**
   * Leaves the group gracefully (see base/lifecycle.ts): new operations are refused at once; the
   * ones already called finish first, within `timeoutMs` (default: the group's timeout) and until
   * `signal` fires, after which they are aborted. Then the device communicator, the CPU group,
   * the store channel and (on group rank 0) the store server close, and the unique name is
   * released; other groups are not touched. Group rank 0 waits up to `lingerMs` (default 5 s) for
   * the other members to leave (their last reads finish first); with explicit groupPorts, the
   * others wait up to as long for rank 0's server to close, so the same ports can be used again as
   * soon as close() resolves. A dead peer costs at most lingerMs. Idempotent.
   */
  close(opts: CloseOptions & { lingerMs?: number } = {}): Promise<void> {
    if (!this.closing) {
      this.closing = (async () => {
        try {
          const timeoutMs = effectiveTimeout(opts, this.timeoutMs);
          if (!await settled([this.queue.idle], { timeoutMs, signal: opts.signal })) {
            this.queue.abort(opts.signal?.aborted ? opts.signal.reason : `close() waited ${timeoutMs}ms for the operations in flight`);
          }
          this.io.mq?.close();
          if (!this.queue.aborted) await this.faults.settle();
          this.faults.close();
          await closeChannels(this.ch, this.queue.aborted ? 0 : opts.lingerMs ?? 5_000, this.explicitPorts && !this.queue.aborted);
        } finally {
          releaseName(this.uniqueName);
          this.log.info('closed');
        }
      })();
    }
    return this.closing;
  }

  /** vLLM's name for close(): the same thing. */
  destroy(opts: CloseOptions & { lingerMs?: number } = {}): Promise<void> {
    return this.close(opts);
  }

  /**
   * Immediate and local: operations in flight or queued reject with ERR_GROUPCOMM_ABORTED
   * (`cause`: the reason), every channel is aborted without a departure handshake (the CPU links
   * still say goodbye: peers see PEER_LEFT, as after close()), and the name is released.
   * Idempotent; resolves once everything is closed.
   */
  abort(reason?: unknown): Promise<void> {
    if (!this.queue.aborted) {
      this.queue.abort(reason);
      this.io.mq?.close();
      // A close() in progress finishes on the aborted channels; otherwise close them now.
      this.faults.close();
      abortChannels(this.ch, reason);
      this.closing ??= (async () => {
        try {
          await closeChannels(this.ch, 0);
        } finally {
          releaseName(this.uniqueName);
          this.log.info('aborted');
        }
      })();
    }
    return this.closing!;
  }

  async [asyncDispose](): Promise<void> {
    await this.close();
  }

  // ---- internals --------------------------------------------------------------------------------

  /**
   * Refuses once close() or abort() was called; else checks the call's arguments (`plan`) and
   * queues what it returns (queue.ts). A call refused by its checks is never queued: it takes no
   * collective number, so this rank stays in step with the others when the caller mends the
   * arguments and calls again.
   */
  private op<T>(what: string, opts: OpOptions | undefined, plan: () => Run<T>,
    published?: () => { value: T } | undefined): Promise<T> {
    if (this.closing) return Promise.reject(destroyedError(`${this.label}.${what}: the group was closed`));
    let fn: Run<T>;
    try {
      fn = plan();
    } catch (e) {
      return Promise.reject(this.explain(e, what));
    }
    return this.queue.run(what, opts, fn, published);
  }

  private explain(e: unknown, what: string): unknown {
    return this.queue.explain(e, what);
  }
}
