/**
 * StatelessGroupCoordinator: one communication group among many in a process, with its own
 * membership, store, CPU channel and (optionally) device communicator — vLLM's
 * `StatelessGroupCoordinator` for Node and Bun (design §8, docs/coordinator.md).
 *
 * Routing: device tensors go over the device communicator, CPU tensors over the CPU group,
 * objects and tensor-dict metadata over the store channel (StatelessProcessGroup).
 *
 * Every tensor collective picks its channel once (CPU group, device communicator, or the local
 * channel of a group of one) and calls the one collective shape they share
 * (host/core/collectives.ts).
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
import {
  abortedError, destroyedError, invalidArgument, isGroupcommError, withContext,
} from '../base/errors.js';
import { logger, type Logger } from '../base/log.js';
import {
  isCpu, isTensor, numel, parseDevice, empty as emptyCpu,
  type DType, type Tensor,
} from '../core/tensor.js';
import { checkOutAliasing } from '../core/alias.js';
import type { Collectives } from '../core/collectives.js';
import type { Store } from '../store/types.js';
import { TcpStore, TcpStoreServer } from '../store/index.js';
import { StatelessProcessGroup } from '../pg/group.js';
import { CpuGroup } from '../cpu/group.js';
import { resolveBackend } from '../device/registry.js';
import { storeBootstrap } from '../device/bootstrap.js';
import { emptyOn, freeTensor } from '../device/tensors.js';
import type { DeviceBackendV1, DeviceCommunicatorV1, ReduceOp } from '../device/types.js';
import { findGroup, ringNeighbors, type GroupLayout } from '../core/layout.js';
import { reserveName, registerName, releaseName, lookupName } from './names.js';
import { checkRank } from './ops.js';
import { anySignal, Deadline, effectiveTimeout, settled } from '../base/deadline.js';
import { asyncDispose, type CloseOptions } from '../base/lifecycle.js';
import { setting } from '../base/config.js';
import { catShape, normDim, outerCount, scatterShape } from './dims.js';
import { copyTensor, reorderTensor } from './copy.js';
import { resolvePorts, type PortTriple, type ResolvedPorts } from './ports.js';
import { receiveDict, sendDict, type DictIo, type TensorDict } from './dict.js';
import { LocalChannel } from './local.js';

export type { TensorDict, PortTriple };

export interface CoordinatorOptions {
  /** Disjoint lists of global ranks; this process joins the one containing `globalRank`. */
  groupRanks: number[][];
  globalRank: number;
  /** Index of this process's device (CUDA: the device ordinal). Default 0. */
  localRank?: number;
  /** Optional upper bound: every rank in groupRanks must be below it. */
  globalWorldSize?: number;
  /** Device backend: 'cpu', 'cuda' or a module specifier (default GROUPCOMM_DEVICE_PLUGIN, else 'cuda'). */
  backend?: string;
  /** Open a device communicator (when the group has more than one rank). Default false. */
  useDeviceCommunicator?: boolean;
  /** Base of the unique name (`name:N`) and, with `rendezvous`, of the port key `${groupName}_${index}`. */
  groupName?: string;
  /** Address the group's rank 0 listens on and the others connect to. Default 127.0.0.1. */
  host?: string;
  /**
   * vLLM's explicit ports: one `[devicePort, cpuPort, storePort]` triple per group of
   * `groupRanks`, in the same order. Group rank 0 binds them. Use `rendezvous` instead to avoid
   * choosing ports at all.
   */
  groupPorts?: PortTriple[];
  /**
   * A coordination store: group rank 0 binds port 0 and publishes the 12-byte port record under
   * `${groupName}_${index}`; the other ranks wait for it. Race-free (no probe-then-bind).
   */
  rendezvous?: Store;
  /** Bounds creation and is the default for every operation. Default GROUPCOMM_TIMEOUT_MS. */
  timeoutMs?: number;
  /** Aborts creation. */
  signal?: AbortSignal;
}

export interface CoordinatorReduceOptions extends OpOptions {
  /** Reduction operator (default 'sum'). */
  op?: ReduceOp;
  /** Write the result here (same shape and dtype as the result) and return it. */
  out?: Tensor;
}

export interface CoordinatorOutOptions extends OpOptions {
  out?: Tensor;
}

/** What `create` found out and opened; kept together so a failed create can close it all. */
interface Channels {
  server?: TcpStoreServer;
  store?: TcpStore;
  pg?: StatelessProcessGroup;
  cpu?: CpuGroup;
  comm?: DeviceCommunicatorV1;
}

/** The channels of a group of more than one rank, once created. */
interface Net {
  pg: StatelessProcessGroup;
  cpu: CpuGroup;
  comm: DeviceCommunicatorV1 | undefined;
}

export class StatelessGroupCoordinator {
  /** This process's global rank. */
  readonly rank: number;
  /** The group's global ranks, in group-rank order. */
  readonly ranks: readonly number[];
  readonly worldSize: number;
  readonly rankInGroup: number;
  readonly localRank: number;
  /** Process-local name, `groupName:N`; released on destroy. */
  readonly uniqueName: string;
  /** The device this rank's device tensors live on ('cpu' without a device backend). */
  readonly device: string;
  /** The index of this group in `groupRanks` (the `_index` of its port key). */
  readonly groupIndex: number;
  /** Group rank 0's [devicePort, cpuPort, storePort]; undefined for a group of one (it binds nothing). */
  readonly ports: PortTriple | undefined;
  readonly backend: DeviceBackendV1 | undefined;

  private readonly ch: Channels;
  /** The group's channels; undefined for a group of one rank (it has none). */
  private readonly net: Net | undefined;
  /** Collectives of a group of one rank: local copies. */
  private readonly local: LocalChannel;
  /** Created with groupPorts: the ports are fixed, so destroy() waits until they are free again. */
  private readonly explicitPorts: boolean;
  private readonly timeoutMs: number;
  private readonly log: Logger;
  private readonly life = new AbortController();
  private tail: Promise<unknown> = Promise.resolve();
  /** The first close() or abort(): from then on new operations are refused. */
  private closing: Promise<void> | undefined;
  /** abort() was called, or close() gave up waiting for the operations in flight. */
  private aborted = false;
  /** Loopback queue for point-to-point sends to oneself (how world size 1 keeps P2P uniform). */
  private readonly self: unknown[] = [];
  /** Group ranks before and after this one in the ring (the core's layout). */
  private readonly ring: { next: number; prev: number };

  private constructor(globalRank: number, layout: GroupLayout, uniqueName: string, localRank: number, device: string,
    ports: PortTriple | undefined, backend: DeviceBackendV1 | undefined, ch: Channels, timeoutMs: number,
    explicitPorts: boolean) {
    this.rank = globalRank;
    this.ranks = Object.freeze([...layout.ranks]);
    this.worldSize = layout.ranks.length;
    this.rankInGroup = layout.rankInGroup;
    this.groupIndex = layout.groupIndex;
    this.ring = ringNeighbors(layout.rankInGroup, this.worldSize);
    this.localRank = localRank;
    this.uniqueName = uniqueName;
    this.device = device;
    this.ports = ports;
    this.backend = backend;
    this.ch = ch;
    this.net = ch.pg && ch.cpu ? { pg: ch.pg, cpu: ch.cpu, comm: ch.comm } : undefined;
    this.local = new LocalChannel({ empty: (shape, dtype, dev) => this.empty(shape, dtype, dev), copy: (dst, src) => void this.copyInto(dst, src) });
    this.explicitPorts = explicitPorts;
    this.timeoutMs = timeoutMs;
    this.log = logger('COORD', `${uniqueName} rank ${this.rankInGroup}/${this.worldSize}`);
  }

  /**
   * Joins this process's group of `groupRanks`. Collective: every member calls it (with the
   * same groupRanks, groupName and ports); it resolves once the store channel, the CPU group
   * and the device communicator are up on every member, or rejects naming who is missing.
   */
  static async create(o: CoordinatorOptions): Promise<StatelessGroupCoordinator> {
    if (!o || typeof o !== 'object') throw invalidArgument('StatelessGroupCoordinator.create: options object required');
    const timeoutMs = effectiveTimeout(o);
    const localRank = o.localRank ?? 0;
    if (!Number.isInteger(localRank) || localRank < 0) throw invalidArgument(`localRank must be an integer >= 0, got ${localRank}`);
    if (o.groupPorts && o.rendezvous) throw invalidArgument('pass groupPorts or rendezvous, not both');
    const base = o.groupName ?? 'anonymous';
    if (typeof base !== 'string' || base === '' || base.includes('/')) {
      throw invalidArgument(`groupName must be a non-empty string without '/', got ${JSON.stringify(base)}`);
    }
    const layout = findGroup(o.groupRanks, o.globalRank, o.globalWorldSize);
    const host = o.host ?? '127.0.0.1';
    const budget = new Deadline(timeoutMs, o.signal, `creating group '${base}' on global rank ${o.globalRank}`);

    let backend: DeviceBackendV1 | undefined;
    if (o.useDeviceCommunicator) backend = await resolveBackend(o.backend);
    const device = backend ? `${backend.deviceType}:${localRank}` : 'cpu';

    const uniqueName = reserveName(base);
    const ch: Channels = {};
    let ports: PortTriple | undefined;
    let held: ResolvedPorts | undefined;
    try {
      if (layout.ranks.length > 1) {
        // One wire name per group, equal on every member (unique names are process-local).
        const wireName = `${base}_${layout.groupIndex}`;
        const isHost = layout.rankInGroup === 0;
        const plan = await resolvePorts({
          key: wireName, index: layout.groupIndex, numGroups: o.groupRanks.length, isHost, host, groupPorts: o.groupPorts,
          rendezvous: o.rendezvous, opts: budget.next(),
          listenStore: async (port) => {
            ch.server = await TcpStoreServer.listen({ host, port });
            return ch.server.port;
          },
        });
        ports = plan.ports;
        held = plan;
        ch.store = await TcpStore.create({ host, port: ports[2], ...budget.next() });
        const rank = layout.rankInGroup;
        const worldSize = layout.ranks.length;
        // The store channel's join and the CPU mesh are independent rendezvous on the group's
        // own (fresh) store, so they run side by side; creation costs one of them, not both.
        // If one fails, the other is aborted instead of waiting out its timeout.
        const sibling = new AbortController();
        const both = { ...budget.next(), signal: anySignal([o.signal, sibling.signal]) };
        let first: unknown;
        const failFast = <T>(p: Promise<T>) => p.catch((e) => { first ??= e; sibling.abort(e); throw e; });
        const [pg, cpu] = await Promise.allSettled([
          failFast(StatelessProcessGroup.create({ store: ch.store, rank, worldSize, groupName: wireName, ...both })),
          failFast((async () => {
            await plan.cpu?.release();
            return CpuGroup.create({
              store: ch.store!, rank, worldSize, groupName: wireName, host, port: isHost ? ports![1] : 0,
              recvBufferBytes: recvBufferFor(worldSize), ...both,
            });
          })()),
        ]);
        if (pg.status === 'fulfilled') ch.pg = pg.value;
        if (cpu.status === 'fulfilled') ch.cpu = cpu.value;
        if (first !== undefined) throw first;
        // Every member has read the record once the store channel has formed.
        if (isHost && o.rendezvous) await o.rendezvous.deleteKey(wireName, budget.next());
        if (backend) {
          const bootstrap = storeBootstrap(ch.store, {
            rank, worldSize, prefix: `groupcomm/device/${wireName}`, timeoutMs,
          });
          // The wire name, not the unique name: a backend may use it to find its peers (the cpu
          // backend names its own CPU group after it), and unique names differ between processes.
          ch.comm = await backend.createCommunicator({
            rank, worldSize, deviceIndex: localRank, bootstrap, name: wireName, host, ...budget.next(),
          });
        }
        await plan.device?.release();
      }
    } catch (e) {
      await held?.cpu?.release();
      await held?.device?.release();
      await closeChannels(ch, 0);
      releaseName(uniqueName);
      throw e;
    }
    const g = new StatelessGroupCoordinator(o.globalRank, layout, uniqueName, localRank, device, ports, backend, ch, timeoutMs,
      o.groupPorts !== undefined);
    registerName(uniqueName, g);
    g.log.info(`created: global ranks [${layout.ranks.join(', ')}], ports [${ports?.join(', ') ?? 'none'}]`);
    return g;
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
  get nextRank(): number { return this.ranks[this.ring.next]; }
  /** Global rank of the previous member (wrapping). */
  get prevRank(): number { return this.ranks[this.ring.prev]; }
  /** True once close(), destroy() or abort() was called. */
  get destroyed(): boolean { return this.closing !== undefined; }
  /** The device communicator, when the group has one (world size > 1 and useDeviceCommunicator). */
  get deviceCommunicator(): DeviceCommunicatorV1 | undefined { return this.net?.comm; }

  /** A zero-filled tensor on `device` (default: this group's device). Free device tensors with `free`. */
  empty(shape: number[], dtype: DType = 'float32', device: string = this.device): Tensor {
    if (device === 'cpu') return emptyCpu(shape, dtype);
    const b = this.backendFor(device, 'empty');
    return emptyOn(b, shape, dtype, parseDevice(device).index);
  }

  /** Releases a device tensor made by this group's backend (a no-op for CPU tensors). */
  free(t: Tensor): void {
    if (!isCpu(t) && this.backend) freeTensor(this.backend, t);
  }

  // ---- objects (store channel) --------------------------------------------------------------

  /** `src` passes the object; every rank resolves with it (src: the same object, others: a copy). */
  broadcastObject<T>(obj?: T, src = 0, opts?: OpOptions): Promise<T> {
    return this.op('broadcastObject', opts, async (b) => {
      checkRank(src, this.worldSize, 'broadcastObject', 'src');
      const net = this.net;
      if (!net) return obj as T;
      return (await net.pg.broadcastObj(this.rankInGroup === src ? obj : undefined, src, b.next())) as T;
    });
  }

  /**
   * Fills `list` in place with src's elements and returns it. One message carries the whole
   * list (vLLM sends one per element); a receiver whose list length differs from src's fails
   * with INVALID_ARGUMENT and its list untouched, instead of desynchronising the group.
   */
  broadcastObjectList<T>(list: T[], src = 0, opts?: OpOptions): Promise<T[]> {
    return this.op('broadcastObjectList', opts, async (b) => {
      checkRank(src, this.worldSize, 'broadcastObjectList', 'src');
      if (!Array.isArray(list)) throw invalidArgument('broadcastObjectList: list must be an array');
      const net = this.net;
      if (!net) return list;
      const got = (await net.pg.broadcastObj(this.rankInGroup === src ? list : undefined, src, b.next())) as T[];
      if (this.rankInGroup === src) return list;
      if (!Array.isArray(got) || got.length !== list.length) {
        throw invalidArgument(`broadcastObjectList: rank ${src} sent ${Array.isArray(got) ? got.length : 'no'} elements, this rank's list has ${list.length}`, { peerRank: src });
      }
      for (let i = 0; i < got.length; i++) list[i] = got[i];
      return list;
    });
  }

  /**
   * Sends `obj` to group rank `dst`. To this rank itself, a structured clone is queued for the
   * next recvObject(rankInGroup) (how point to point stays uniform down to world size 1).
   */
  sendObject(obj: unknown, dst: number, opts?: OpOptions): Promise<void> {
    return this.op('sendObject', opts, async (b) => {
      checkRank(dst, this.worldSize, 'sendObject', 'dst');
      if (dst === this.rankInGroup || !this.net) { this.self.push(structuredClone(obj)); return; }
      await this.net.pg.sendObj(obj, dst, b.next());
    });
  }

  /** The next object group rank `src` sent to this rank. */
  recvObject<T = unknown>(src: number, opts?: OpOptions): Promise<T> {
    return this.op('recvObject', opts, async (b) => {
      checkRank(src, this.worldSize, 'recvObject', 'src');
      if (src === this.rankInGroup || !this.net) return this.takeSelf('recvObject') as T;
      return (await this.net.pg.recvObj(src, b.next())) as T;
    });
  }

  /** Resolves once every member has called it; a timeout names the ranks that did not. */
  barrier(opts?: OpOptions): Promise<void> {
    return this.op('barrier', opts, async (b) => {
      await this.net?.pg.barrier(b.next());
    });
  }

  // ---- tensor dicts ---------------------------------------------------------------------------

  /**
   * src passes a dict; every rank resolves with it: src with its own dict, the others with a new
   * dict (same keys in the same order; tensors new, on this rank's device for device tensors).
   * Metadata and non-tensor values travel in one frame over the store channel; then each
   * non-empty tensor over the CPU group or the device communicator.
   */
  broadcastTensorDict(dict?: TensorDict, src = 0, opts?: OpOptions): Promise<TensorDict> {
    return this.op('broadcastTensorDict', opts, async (b) => {
      checkRank(src, this.worldSize, 'broadcastTensorDict', 'src');
      if (this.rankInGroup === src) checkDict(dict, 'broadcastTensorDict');
      const io = this.dictIo();
      if (!io) return dict!;
      if (this.rankInGroup === src) {
        await sendDict(io, dict!, { kind: 'broadcast', peer: src }, b);
        return dict!;
      }
      return receiveDict(io, { kind: 'broadcast', peer: src }, b);
    });
  }

  /** Sends a tensor dict to group rank `dst` (default: the next rank). */
  sendTensorDict(dict: TensorDict, dst?: number, opts?: OpOptions): Promise<void> {
    return this.op('sendTensorDict', opts, async (b) => {
      const to = dst ?? this.ring.next;
      checkRank(to, this.worldSize, 'sendTensorDict', 'dst');
      checkDict(dict, 'sendTensorDict');
      const io = this.dictIo();
      if (to === this.rankInGroup || !io) { this.self.push(cloneDict(dict, this)); return; }
      await sendDict(io, dict, { kind: 'p2p', peer: to }, b);
    });
  }

  /** The next tensor dict group rank `src` (default: the previous rank) sent; always a new dict. */
  recvTensorDict(src?: number, opts?: OpOptions): Promise<TensorDict> {
    return this.op('recvTensorDict', opts, async (b) => {
      const from = src ?? this.ring.prev;
      checkRank(from, this.worldSize, 'recvTensorDict', 'src');
      const io = this.dictIo();
      if (from === this.rankInGroup || !io) return this.takeSelf('recvTensorDict') as TensorDict;
      return receiveDict(io, { kind: 'p2p', peer: from }, b);
    });
  }

  // ---- tensor collectives -----------------------------------------------------------------------

  /** src's `tensor` on every rank, into `out` (in place: `out: tensor`) or a new tensor. */
  broadcast(tensor: Tensor, src = 0, opts: CoordinatorOutOptions = {}): Promise<Tensor> {
    return this.op('broadcast', opts, async (b) => {
      checkRank(src, this.worldSize, 'broadcast', 'src');
      const ch = this.channel(tensor, 'broadcast');
      const out = this.output(opts.out, tensor.shape, tensor, 'broadcast');
      return ch.broadcast(tensor, { src, out, ...b.next() });
    });
  }

  /** The elementwise reduction (`op`, default sum) of every rank's `tensor`, into `out` (in place: `out: tensor`) or a new tensor. */
  allReduce(tensor: Tensor, opts: CoordinatorReduceOptions = {}): Promise<Tensor> {
    return this.op('allReduce', opts, async (b) => {
      const ch = this.channel(tensor, 'allReduce');
      const out = this.output(opts.out, tensor.shape, tensor, 'allReduce');
      return ch.allReduce(tensor, { op: opts.op, out, ...b.next() });
    });
  }

  /** Every rank's `tensor` concatenated along `dim` in group-rank order (any dim, negative allowed). */
  allGather(tensor: Tensor, dim = -1, opts: CoordinatorOutOptions = {}): Promise<Tensor> {
    return this.op('allGather', opts, async (b) => {
      const ch = this.channel(tensor, 'allGather');
      const d = normDim(dim, tensor.shape.length, 'allGather');
      const shape = catShape(tensor.shape, d, this.worldSize);
      const out = this.output(opts.out, shape, tensor, 'allGather');
      const outer = outerCount(tensor.shape, d);
      // The channels gather rank-major (dim 0); other dims need one block transpose after.
      if (outer === 1) return shaped(await ch.allGather(flat(tensor), { out: out && flat(out), ...b.next() }), out, shape);
      if (out) checkOutAliasing(out, tensor, false, 'allGather');
      const stage = await ch.allGather(flat(tensor), b.next());
      return this.reordered(stage, out, shape, tensor, this.worldSize, outer);
    });
  }

  /**
   * `tensor` gathered on `dst` along `dim` (concatenated in group-rank order); the other ranks
   * resolve with undefined.
   */
  gather(tensor: Tensor, dst = 0, dim = -1, opts: CoordinatorOutOptions = {}): Promise<Tensor | undefined> {
    return this.op('gather', opts, async (b) => {
      checkRank(dst, this.worldSize, 'gather', 'dst');
      const ch = this.channel(tensor, 'gather');
      const d = normDim(dim, tensor.shape.length, 'gather');
      const shape = catShape(tensor.shape, d, this.worldSize);
      const out = this.rankInGroup === dst ? this.output(opts.out, shape, tensor, 'gather') : undefined;
      const outer = outerCount(tensor.shape, d);
      if (outer === 1) {
        const r = await ch.gather(flat(tensor), { dst, out: out && flat(out), ...b.next() });
        return r && shaped(r, out, shape);
      }
      if (out) checkOutAliasing(out, tensor, false, 'gather');
      const stage = await ch.gather(flat(tensor), { dst, ...b.next() });
      return stage && this.reordered(stage, out, shape, tensor, this.worldSize, outer);
    });
  }

  /**
   * The reduction of every rank's `tensor`, scattered along `dim`: rank r gets the r-th of
   * worldSize equal slices (dim's size must divide by the world size). Moves `dim` to 0 and back.
   */
  reduceScatter(tensor: Tensor, dim = -1, opts: CoordinatorReduceOptions = {}): Promise<Tensor> {
    return this.op('reduceScatter', opts, async (b) => {
      const ch = this.channel(tensor, 'reduceScatter');
      const d = normDim(dim, tensor.shape.length, 'reduceScatter');
      const shape = scatterShape(tensor.shape, d, this.worldSize, 'reduceScatter');
      const out = this.output(opts.out, shape, tensor, 'reduceScatter');
      const outer = outerCount(tensor.shape, d);
      if (outer === 1) return shaped(await ch.reduceScatter(flat(tensor), { op: opts.op, out: out && flat(out), ...b.next() }), out, shape);
      // (outer, ws, block) → (ws, outer, block): each rank's slice becomes one contiguous block.
      if (out) checkOutAliasing(out, tensor, false, 'reduceScatter');
      const src = this.allocLike(tensor.shape, tensor);
      try {
        this.reorder(tensor, src, outer, this.worldSize);
        return shaped(await ch.reduceScatter(flat(src), { op: opts.op, out: out && flat(out), ...b.next() }), out, shape);
      } finally {
        this.free(src);
      }
    });
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
          if (!await settled([this.tail], { timeoutMs, signal: opts.signal })) {
            this.abortOps(opts.signal?.aborted ? opts.signal.reason : `close() waited ${timeoutMs}ms for the operations in flight`);
          }
          await closeChannels(this.ch, this.aborted ? 0 : opts.lingerMs ?? 5_000, this.explicitPorts && !this.aborted);
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
   * (`cause`: the reason), every channel is aborted without a departure handshake (peers see this
   * rank as lost), and the name is released. Idempotent; resolves once everything is closed.
   */
  abort(reason?: unknown): Promise<void> {
    if (!this.aborted) {
      this.abortOps(reason);
      // A close() in progress finishes on the aborted channels; otherwise close them now.
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

  private abortOps(reason: unknown): void {
    this.aborted = true;
    this.life.abort(abortedError(`group ${this.uniqueName} was aborted${reason === undefined ? '' : `: ${reason instanceof Error ? reason.message : String(reason)}`}`, { cause: reason }));
  }

  /** Runs `fn` after every earlier operation of this group, under one deadline. */
  private op<T>(what: string, opts: OpOptions | undefined, fn: (b: Deadline) => Promise<T>): Promise<T> {
    if (this.closing) return Promise.reject(destroyedError(`${this.uniqueName}.${what}: the group was closed`));
    const timeoutMs = effectiveTimeout(opts, this.timeoutMs);
    const run = async () => {
      // Called before close(), so it runs, unless the group was aborted meanwhile.
      if (this.aborted) throw this.explain(this.life.signal.reason, what);
      const signal = anySignal([opts?.signal, this.life.signal]);
      try {
        return await fn(new Deadline(timeoutMs, signal, `${this.uniqueName}.${what}`));
      } catch (e) {
        throw this.explain(e, what);
      }
    };
    const p = this.tail.then(run, run);
    this.tail = p.catch(() => {});
    return p;
  }

  /** Adds the group's name and the global rank of a named peer to a lower layer's error. */
  private explain(e: unknown, what: string): unknown {
    if (!isGroupcommError(e)) return e;
    const peers = e.peerRanks ?? (e.peerRank !== undefined ? [e.peerRank] : []);
    const named = peers.filter((r) => r >= 0 && r < this.worldSize)
      .map((r) => `group rank ${r} = global rank ${this.ranks[r]}`);
    const msg = `${this.uniqueName}.${what} (global rank ${this.rank}): ${e.message}` +
      (named.length ? ` [${named.join('; ')}]` : '');
    return withContext(e, msg, { rank: this.rank });
  }

  /**
   * The channel that carries `t`: the CPU group for CPU tensors, the device communicator for
   * this rank's device tensors, local copies in a group of one; INVALID_ARGUMENT when this group
   * cannot carry it.
   */
  private channel(t: Tensor, what: string): Collectives<Tensor> {
    if (!t || typeof t !== 'object' || !Array.isArray(t.shape) || typeof t.device !== 'string') {
      throw invalidArgument(`${what}: expected a tensor`);
    }
    const net = this.net;
    if (!isCpu(t)) {
      if (net && !net.comm) {
        throw invalidArgument(`${what}: tensor is on ${t.device} but this group has no device communicator (create it with useDeviceCommunicator)`);
      }
      if (t.device !== this.device) {
        throw invalidArgument(`${what}: tensor is on ${t.device}, this rank's device is ${this.device}`);
      }
      return net?.comm ?? this.local;
    }
    return net?.cpu ?? this.local;
  }

  private backendFor(device: string, what: string): DeviceBackendV1 {
    if (!this.backend || parseDevice(device).type !== this.backend.deviceType) {
      throw invalidArgument(`${what}: no backend for device '${device}' in group ${this.uniqueName} (device ${this.device})`);
    }
    return this.backend;
  }

  /** Checks a caller-provided output; returns it (or undefined when none was given). */
  private output(out: Tensor | undefined, shape: number[], like: Tensor, what: string): Tensor | undefined {
    if (out === undefined) return undefined;
    if (out.dtype !== like.dtype || out.device !== like.device || out.shape.length !== shape.length ||
        out.shape.some((s, i) => s !== shape[i])) {
      throw invalidArgument(`${what}: out must be ${like.dtype}[${shape.join(', ')}] on ${like.device}, ` +
        `got ${out.dtype}[${out.shape.join(', ')}] on ${out.device}`);
    }
    return out;
  }

  private allocLike(shape: number[], like: Tensor): Tensor {
    return this.empty(shape, like.dtype, like.device);
  }

  private copyInto(dst: Tensor, src: Tensor): Tensor {
    return copyTensor(this.backend, dst, src);
  }

  private reorder(src: Tensor, dst: Tensor, a: number, b: number): void {
    reorderTensor(this.backend, src, dst, a, b);
  }

  /** A rank-major `stage` (which this call owns and frees) block-transposed into `out` or a new tensor. */
  private reordered(stage: Tensor, out: Tensor | undefined, shape: number[], like: Tensor, a: number, b: number): Tensor {
    try {
      const dst = out ?? this.allocLike(shape, like);
      this.reorder(stage, dst, a, b);
      return dst;
    } finally {
      this.free(stage);
    }
  }

  private takeSelf(what: string): unknown {
    if (this.self.length === 0) {
      throw invalidArgument(`${what}: nothing was sent to this rank by itself (a self-send must come first in program order)`);
    }
    return this.self.shift();
  }

  /** What a tensor-dict transfer needs; undefined in a group of one (dicts do not travel there). */
  private dictIo(): DictIo | undefined {
    const net = this.net;
    if (!net) return undefined;
    return {
      pg: net.pg, device: this.device,
      channel: (t: Tensor, what: string) => this.channel(t, what),
      empty: (shape: number[], dtype: DType, device: string) => this.empty(shape, dtype, device),
      free: (t: Tensor) => this.free(t),
    };
  }
}

/**
 * The CPU group keeps one receive buffer per peer (1 MiB by default, zero-filled at setup). In a
 * large group that is most of the creation time on Node and 63 MiB per rank at 64 ranks, so the
 * total per rank is capped at 16 MiB (at least 64 KiB per peer) past 17 ranks. Large messages are
 * read straight into their destination anyway. GROUPCOMM_CPU_RECV_BUFFER_BYTES, when set, wins.
 */
function recvBufferFor(worldSize: number): number | undefined {
  if (setting('GROUPCOMM_CPU_RECV_BUFFER_BYTES') !== undefined || worldSize <= 17) return undefined;
  return Math.max(64 * 1024, Math.floor((16 << 20) / (worldSize - 1)));
}

/** The same memory seen as a 1-d tensor (the layers below work on element counts). */
function flat(t: Tensor): Tensor {
  return { dtype: t.dtype, shape: [numel(t.shape)], device: t.device, data: t.data };
}

/** The caller's `out`, or the channel's new (flat) result seen in the collective's shape. */
function shaped(r: Tensor, out: Tensor | undefined, shape: number[]): Tensor {
  return out ?? { dtype: r.dtype, shape: [...shape], device: r.device, data: r.data };
}

function checkDict(d: unknown, what: string): asserts d is TensorDict {
  if (typeof d !== 'object' || d === null || Array.isArray(d) || d instanceof Map) {
    throw invalidArgument(`${what}: the source must pass a plain object of tensors and values`);
  }
}

/** A deep copy of a dict for a self-send: tensors copied so the sender may reuse its buffers. */
function cloneDict(d: TensorDict, g: StatelessGroupCoordinator): TensorDict {
  const out: TensorDict = {};
  for (const [k, v] of Object.entries(d)) {
    if (isTensor(v)) {
      out[k] = copyTensor(g.backend, g.empty(v.shape, v.dtype, v.device), v);
    } else out[k] = structuredClone(v);
  }
  return out;
}

/**
 * Closes what is open, device first (it may use the store), the store server last. The store
 * channel's departure handshake (bounded by lingerMs) lets rank 0, which hosts the server, leave
 * last, so nobody's final reads or deletes hit a closed server. With `awaitServer`, the other
 * ranks then wait (also bounded) until that server has closed: a group re-created on the same
 * explicit ports right after close() must not reach the old server. lingerMs 0: no departure
 * (a failed create, an abort).
 */
async function closeChannels(ch: Channels, lingerMs: number, awaitServer = false): Promise<void> {
  const errors: unknown[] = [];
  const step = async (fn: () => Promise<unknown> | unknown) => {
    try { await fn(); } catch (e) { errors.push(e); }
  };
  const grace = { timeoutMs: Math.max(lingerMs, 1) };
  if (ch.comm) await step(() => ch.comm!.close(grace));
  if (ch.cpu) await step(() => lingerMs === 0 ? ch.cpu!.abort() : ch.cpu!.close(grace));
  if (ch.pg) await step(() => lingerMs === 0 ? ch.pg!.abort() : ch.pg!.close(grace));
  if (ch.store && !ch.server && awaitServer) {
    const store = ch.store;
    await step(async () => {
      const until = performance.now() + lingerMs;
      while (performance.now() < until) {
        try {
          await store.ping({ timeoutMs: Math.max(1, until - performance.now()) });
        } catch {
          return; // the server is gone
        }
        await new Promise((r) => setTimeout(r, 5));
      }
    });
  }
  if (ch.store) await step(() => lingerMs === 0 ? ch.store!.abort() : ch.store!.close(grace));
  if (ch.server) await step(() => lingerMs === 0 ? ch.server!.abort() : ch.server!.close(grace));
  ch.comm = ch.cpu = ch.pg = ch.store = ch.server = undefined;
  // Closing never throws for what a dead peer left behind; it logs instead.
  if (errors.length) logger('COORD').debug(`close: ${errors.length} channel(s) closed with errors: ${errors.map(String).join('; ')}`);
}

/** abort() on every open channel at once (each is idempotent); closeChannels then finds them closed. */
function abortChannels(ch: Channels, reason: unknown): void {
  const why = reason instanceof Error ? reason.message : reason === undefined ? undefined : String(reason);
  void ch.comm?.abort(why).catch(() => {});
  void ch.cpu?.abort(reason);
  void ch.pg?.abort(reason);
  void ch.store?.abort(reason);
  void ch.server?.abort(reason);
}
