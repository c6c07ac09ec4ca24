/**
 * The cpu backend's communicator: each operation checks its tensors, takes byte views of them in
 * HostMemory and hands those to a HostTransport (the CPU group, or the bootstrap alone), which
 * writes results in place. Results follow the aliasing contract through the kit's deviceOutput
 * (into `out`, else a buffer allocated here). Ordering, deadlines and abort come from
 * OrderedOps, as in every backend.
 */
import {
  checkDeviceTensor, checkPeer, checkReduce, pluginUnavailable, deviceOutput, deviceString, effectiveTimeout,
  gatheredShape, guard, invalidArgument, logger, OrderedOps, scatteredShape, simpleTimeout,
  type BroadcastOptions, type CheckedTensor, type CommunicatorOptions, type DeviceCommunicatorV1, type DeviceOutput,
  type GatherOptions, type OpOptions, type OutOptions, type ReduceOptions, type SizesOptions, type SizesReduceOptions,
  type AllToAllSplitsOptions, type CommSplitOptions, type Store, type Tensor,
} from 'groupcomm/plugin';
import type { HostMemory } from './memory.js';
import { BootstrapTransport, GroupTransport, type HostTransport } from './transport.js';

export const DEVICE_TYPE = 'host';
/** The CPU group's name on the bootstrap's store (split() children append to it). */
const GROUP_NAME = 'groupcomm-device';

export class CpuCommunicator implements DeviceCommunicatorV1 {
  readonly rank: number;
  readonly worldSize: number;
  readonly deviceIndex: number;
  private readonly ops: OrderedOps;
  private readonly log;
  /** Where split() builds its children's groups (the bootstrap's store; absent on the bootstrap transport). */
  private readonly store?: Store;
  private readonly host?: string;
  /** split() calls so far: the same on every rank (splits are issued in call order), so it names the child groups. */
  private splitSeq = 0;
  /** This communicator's group name: a child's extends its parent's, so grandchildren never collide with children. */
  private readonly groupName: string;

  private constructor(private readonly mem: HostMemory, private readonly net: HostTransport, o: Pick<CommunicatorOptions, 'rank' | 'worldSize' | 'deviceIndex' | 'name' | 'host'> & { store?: Store; groupName?: string }, private readonly timeoutMs: number) {
    this.store = o.store;
    this.groupName = o.groupName ?? GROUP_NAME;
    this.host = o.host;
    this.rank = o.rank;
    this.worldSize = o.worldSize;
    this.deviceIndex = o.deviceIndex;
    const label = `cpu communicator${o.name ? ` '${o.name}'` : ''}`;
    this.log = logger('DEVICE', `${o.name ? `${o.name} ` : ''}rank ${o.rank}/${o.worldSize}`);
    this.ops = new OrderedOps(label, o.rank, timeoutMs, async (reason) => {
      this.log.info(`aborted: ${reason}`);
      await this.net.close(); // peers blocked on us see the connections close instead of waiting out their timeout
    });
  }

  /**
   * Collective: every rank calls it; resolves once all ranks have joined (a rank that never
   * comes is reported by rank when the timeout ends). With a store behind the bootstrap the
   * communicator runs on its own CPU group; otherwise on the bootstrap's bytes alone.
   */
  static async create(mem: HostMemory, o: CommunicatorOptions): Promise<CpuCommunicator> {
    const timeoutMs = effectiveTimeout(o);
    const b = o.bootstrap;
    if (b.rank !== o.rank || b.worldSize !== o.worldSize) {
      throw invalidArgument(`createCommunicator: rank ${o.rank}/${o.worldSize} does not match the bootstrap's ${b.rank}/${b.worldSize}`, { rank: o.rank });
    }
    // Every rank must pick the same transport: rank 0 decides (the group when it has a store)
    // and says so; a rank told to use the group without a store fails at once.
    let useGroup = b.store !== undefined;
    if (o.worldSize > 1) {
      const choice = await b.broadcastBytes(o.rank === 0 ? Uint8Array.of(useGroup ? 1 : 0) : undefined, 0, { timeoutMs, signal: o.signal });
      useGroup = choice[0] === 1;
      if (useGroup && !b.store) throw invalidArgument(`createCommunicator: rank 0 runs the cpu backend on a CPU group, but rank ${o.rank}'s bootstrap has no store`, { rank: o.rank });
    }
    // The group's name must be the same on every rank, so it is a constant: the bootstrap's
    // store is already scoped to this communicator (o.name may differ per rank: it is for logs).
    const net: HostTransport = useGroup
      ? await GroupTransport.create({ store: b.store!, rank: o.rank, worldSize: o.worldSize, name: GROUP_NAME, host: o.host, timeoutMs, signal: o.signal })
      : new BootstrapTransport(b);
    // A barrier even after the group's own setup: a rank's mesh can be complete while a peer's
    // is still handshaking, and a rank that destroyed right away would cut that peer off.
    try {
      await net.barrier({ timeoutMs, signal: o.signal });
    } catch (e) {
      await net.close();
      throw e;
    }
    const c = new CpuCommunicator(mem, net, { ...o, store: useGroup ? b.store : undefined }, timeoutMs);
    c.log.debug(`communicator ready (${net.kind} transport)`);
    return c;
  }

  /** 'group' or 'bootstrap': which transport this communicator runs on. */
  get transport(): HostTransport['kind'] {
    return this.net.kind;
  }

  private t(t: Tensor | undefined, what: string): CheckedTensor {
    return checkDeviceTensor(t, DEVICE_TYPE, this.deviceIndex, what);
  }

  private v(x: CheckedTensor): Uint8Array {
    return this.mem.view(x.buf, x.nbytes);
  }

  private o(signal: AbortSignal, opts?: OpOptions): OpOptions {
    return { signal, timeoutMs: effectiveTimeout(opts, this.timeoutMs) };
  }

  /** `out` checked against `input`, or a result allocated in HostMemory (freed if the operation fails). */
  private output(out: Tensor | undefined, input: Tensor, count: number, shape: number[], inPlace: boolean, what: string): DeviceOutput {
    return deviceOutput({
      out, input, count, shape, inPlace, what, device: deviceString({ deviceType: DEVICE_TYPE }, this.deviceIndex),
      check: (t, w) => this.t(t, w), alloc: (n) => this.mem.alloc(n), free: (b) => this.mem.free(b), fields: { rank: this.rank },
    });
  }

  /**
   * OrderedOps.run, after refusing a `stream` (the cuda backend's per-call option): host memory
   * has no streams, and a caller who meant one must not believe the work was ordered on it.
   */
  private run<T>(what: string, opts: OpOptions | undefined, fn: (signal: AbortSignal) => Promise<T>, fields?: Parameters<OrderedOps['run']>[3]): Promise<T> {
    if ((opts as { stream?: unknown } | undefined)?.stream !== undefined) {
      return Promise.reject(invalidArgument(`${what}: the cpu backend has no streams; the stream option is the cuda backend's (leave it out here)`, { rank: this.rank }));
    }
    return this.ops.run(what, opts, fn, fields);
  }

  private splits(count: number, what: string): void {
    if (count % this.worldSize !== 0) throw invalidArgument(`${what}: ${count} elements do not split evenly over ${this.worldSize} ranks`, { rank: this.rank });
  }

  async allReduce(input: Tensor, opts: ReduceOptions = {}): Promise<Tensor> {
    const op = opts.op ?? 'sum';
    const i = this.t(input, 'allReduce');
    checkReduce(input.dtype, op);
    const o = this.output(opts.out, input, i.count, input.shape, true, 'allReduce');
    return o.settle(this.run('allReduce', opts, async (signal) => {
      // The transports reduce in place: out of place, they run on the result after a copy.
      const buf = this.v(o.at);
      if (!o.inPlace) buf.set(this.v(i));
      await this.net.allReduce(buf, input.dtype, op, this.o(signal, opts));
      return o.tensor;
    }));
  }

  async allGather(input: Tensor, opts: OutOptions = {}): Promise<Tensor> {
    const i = this.t(input, 'allGather');
    const o = this.output(opts.out, input, i.count * this.worldSize, gatheredShape(input.shape, this.worldSize), false, 'allGather');
    return o.settle(this.run('allGather', opts, async (signal) => {
      await this.net.allGather(this.v(o.at), this.v(i), input.dtype, this.o(signal, opts));
      return o.tensor;
    }));
  }

  async reduceScatter(input: Tensor, opts: ReduceOptions = {}): Promise<Tensor> {
    const op = opts.op ?? 'sum';
    const i = this.t(input, 'reduceScatter');
    this.splits(i.count, 'reduceScatter');
    checkReduce(input.dtype, op);
    const P = this.worldSize;
    const shape = input.shape.length > 0 && input.shape[0] % P === 0 ? scatteredShape(input.shape, P) : [i.count / P];
    const o = this.output(opts.out, input, i.count / P, shape, false, 'reduceScatter');
    return o.settle(this.run('reduceScatter', opts, async (signal) => {
      await this.net.reduceScatter(this.v(o.at), this.v(i), input.dtype, op, this.o(signal, opts));
      return o.tensor;
    }));
  }

  async broadcast(tensor: Tensor, opts: BroadcastOptions): Promise<Tensor> {
    const i = this.t(tensor, 'broadcast');
    const src = opts?.src;
    checkPeer(src, this.worldSize, 'broadcast', this.rank);
    const o = this.output(opts.out, tensor, i.count, tensor.shape, true, 'broadcast');
    return o.settle(this.run('broadcast', opts, async (signal) => {
      const buf = this.v(o.at);
      if (this.rank === src && !o.inPlace) buf.set(this.v(i)); // the source sends from its result
      const n = await this.net.broadcast(buf, src, tensor.dtype, this.o(signal, opts));
      if (n !== i.nbytes) throw invalidArgument(`broadcast: rank ${src} sent ${n} bytes, this rank expects ${i.nbytes}`, { rank: this.rank, peerRank: src });
      return o.tensor;
    }, { peerRank: src }));
  }

  async send(tensor: Tensor, dst: number, opts?: OpOptions): Promise<void> {
    const x = this.t(tensor, 'send');
    checkPeer(dst, this.worldSize, 'send', this.rank);
    if (dst === this.rank) throw invalidArgument('send: destination is this rank', { rank: this.rank });
    return this.run('send', opts, async (signal) => {
      await this.net.send(this.v(x), dst, tensor.dtype, this.o(signal, opts));
    }, { peerRank: dst });
  }

  async recv(dst: Tensor, src: number, opts?: OpOptions): Promise<Tensor> {
    const x = this.t(dst, 'recv');
    checkPeer(src, this.worldSize, 'recv', this.rank);
    if (src === this.rank) throw invalidArgument('recv: source is this rank', { rank: this.rank });
    return this.run('recv', opts, async (signal) => {
      const n = await this.net.recv(this.v(x), src, dst.dtype, this.o(signal, opts));
      if (n !== x.nbytes) throw invalidArgument(`recv: rank ${src} sent ${n} bytes, expected ${x.nbytes}`, { rank: this.rank, peerRank: src });
      return dst;
    }, { peerRank: src });
  }

  async gather(input: Tensor, opts: GatherOptions): Promise<Tensor | undefined> {
    const i = this.t(input, 'gather');
    const dst = opts?.dst;
    checkPeer(dst, this.worldSize, 'gather', this.rank);
    if (this.rank !== dst) {
      return this.run('gather', opts, async (signal) => {
        await this.net.gather(undefined, this.v(i), dst, input.dtype, this.o(signal, opts));
        return undefined;
      }, { peerRank: dst });
    }
    const o = this.output(opts.out, input, i.count * this.worldSize, gatheredShape(input.shape, this.worldSize), false, 'gather');
    return o.settle(this.run('gather', opts, async (signal) => {
      await this.net.gather(this.v(o.at), this.v(i), dst, input.dtype, this.o(signal, opts));
      return o.tensor;
    }));
  }

  async allToAll(input: Tensor, opts: OutOptions = {}): Promise<Tensor> {
    const i = this.t(input, 'allToAll');
    this.splits(i.count, 'allToAll');
    const o = this.output(opts.out, input, i.count, input.shape, false, 'allToAll');
    return o.settle(this.run('allToAll', opts, async (signal) => {
      await this.net.allToAll(this.v(o.at), this.v(i), input.dtype, this.o(signal, opts));
      return o.tensor;
    }));
  }

  // ---- variable sizes (optional in the interface; capabilities.variableCollectives) ----

  /** Rows per rank (dim 0) for a variable collective, checked; and the elements of one row. */
  private rowsOf(t: Tensor, v: unknown, what: string): { counts: number[]; rowElems: number } {
    if (t.shape.length === 0) throw invalidArgument(`${what}: a 0-d tensor has no rows`, { rank: this.rank });
    if (!Array.isArray(v) || v.length !== this.worldSize || !v.every((x) => Number.isSafeInteger(x) && x >= 0)) {
      throw invalidArgument(`${what}: expected ${this.worldSize} integers >= 0 (one per rank), got ${JSON.stringify(v)}`, { rank: this.rank });
    }
    return { counts: [...v], rowElems: t.shape.slice(1).reduce((a, b) => a * b, 1) };
  }

  async allGatherv(input: Tensor, opts: SizesOptions): Promise<Tensor> {
    const i = this.t(input, 'allGatherv');
    const { counts: sizes, rowElems } = this.rowsOf(input, opts?.sizes, 'allGatherv sizes');
    if (input.shape[0] !== sizes[this.rank]) throw invalidArgument(`allGatherv: rank ${this.rank}'s input has ${input.shape[0]} rows, sizes[${this.rank}] says ${sizes[this.rank]}`, { rank: this.rank });
    const total = sizes.reduce((a, b) => a + b, 0);
    const o = this.output(opts.out, input, total * rowElems, [total, ...input.shape.slice(1)], false, 'allGatherv');
    return o.settle(this.run('allGatherv', opts, async (signal) => {
      await this.net.allGatherv(this.v(o.at), this.v(i), input.dtype, rowElems, sizes, this.o(signal, opts));
      return o.tensor;
    }));
  }

  async reduceScatterv(input: Tensor, opts: SizesReduceOptions): Promise<Tensor> {
    const op = opts?.op ?? 'sum';
    const i = this.t(input, 'reduceScatterv');
    checkReduce(input.dtype, op);
    const { counts: sizes, rowElems } = this.rowsOf(input, opts?.sizes, 'reduceScatterv sizes');
    if (input.shape[0] !== sizes.reduce((a, b) => a + b, 0)) throw invalidArgument(`reduceScatterv: ${input.shape[0]} rows, the sizes add up to ${sizes.reduce((a, b) => a + b, 0)}`, { rank: this.rank });
    const o = this.output(opts.out, input, sizes[this.rank] * rowElems, [sizes[this.rank], ...input.shape.slice(1)], false, 'reduceScatterv');
    return o.settle(this.run('reduceScatterv', opts, async (signal) => {
      await this.net.reduceScatterv(this.v(o.at), this.v(i), input.dtype, rowElems, sizes, op, this.o(signal, opts));
      return o.tensor;
    }));
  }

  async allToAllv(input: Tensor, opts: AllToAllSplitsOptions = {}): Promise<Tensor> {
    const i = this.t(input, 'allToAllv');
    const rows = input.shape[0];
    const equal = () => { this.splits(rows ?? 0, 'allToAllv'); return Array.from({ length: this.worldSize }, () => rows / this.worldSize); };
    const ins = this.rowsOf(input, opts.inputSplits ?? equal(), 'allToAllv inputSplits');
    const outs = this.rowsOf(input, opts.outputSplits ?? equal(), 'allToAllv outputSplits').counts;
    if (ins.counts.reduce((a, b) => a + b, 0) !== rows) throw invalidArgument(`allToAllv: ${rows} rows, inputSplits add up to ${ins.counts.reduce((a, b) => a + b, 0)}`, { rank: this.rank });
    const total = outs.reduce((a, b) => a + b, 0);
    const o = this.output(opts.out, input, total * ins.rowElems, [total, ...input.shape.slice(1)], false, 'allToAllv');
    return o.settle(this.run('allToAllv', opts, async (signal) => {
      await this.net.allToAllv(this.v(o.at), this.v(i), input.dtype, ins.rowElems, ins.counts, outs, this.o(signal, opts));
      return o.tensor;
    }));
  }

  /**
   * A sub-group by color, ranks ordered by key (ties: parent rank), like ncclCommSplit: every
   * rank's (color, key) is gathered over this communicator, in call order; each color then
   * builds its own CPU group on the bootstrap's store, named by this split's sequence number
   * and the color, so concurrent colors and later splits never share keys. On the bootstrap
   * transport there is no store to build it on: refused (PLUGIN_UNAVAILABLE) before anything is
   * sent, on every rank alike.
   */
  async split(opts: CommSplitOptions): Promise<DeviceCommunicatorV1 | undefined> {
    const color = opts?.color;
    const key = opts?.key ?? this.rank;
    if (!Number.isInteger(color) || !Number.isInteger(key) || color > 0x7fffffff || color < -0x80000000 || Math.abs(key) > 0x7fffffff) {
      throw invalidArgument(`split: color and key must be 32-bit integers, got color ${color}, key ${key}`, { rank: this.rank });
    }
    const store = this.store;
    if (!store) throw pluginUnavailable('split: the cpu backend builds sub-groups on the bootstrap\'s store, and this communicator runs on a bootstrap without one', { rank: this.rank });
    const seq = this.splitSeq++;
    const timeoutMs = effectiveTimeout(opts, this.timeoutMs);
    return this.run('split', opts, async (signal) => {
      const mine = new Uint8Array(new Int32Array([color, key]).buffer);
      const all = new Uint8Array(8 * this.worldSize);
      await this.net.allGather(all, mine, 'int32', { timeoutMs, signal });
      if (color < 0) return undefined;
      const ck = new Int32Array(all.buffer);
      const members = Array.from({ length: this.worldSize }, (_, r) => r)
        .filter((r) => ck[2 * r] === color)
        .sort((a, b) => ck[2 * a + 1] - ck[2 * b + 1] || a - b);
      const rank = members.indexOf(this.rank);
      const worldSize = members.length;
      const groupName = `${this.groupName}-split${seq}-c${color}`;
      const net = await GroupTransport.create({ store, rank, worldSize, name: groupName, host: this.host, timeoutMs, signal });
      try {
        await net.barrier({ timeoutMs, signal }); // as in create(): nobody leaves while a peer still handshakes
      } catch (e) {
        await net.close();
        throw e;
      }
      const child = new CpuCommunicator(this.mem, net, { rank, worldSize, deviceIndex: this.deviceIndex, name: opts.name, host: this.host, store, groupName }, this.timeoutMs);
      child.log.info(`split from rank ${this.rank}/${this.worldSize}: color ${color}, key ${key}`);
      return child;
    });
  }

  async barrier(opts?: OpOptions): Promise<void> {
    return this.run('barrier', opts, (signal) => this.net.barrier(this.o(signal, opts)));
  }

  /** Host memory is written when each operation resolves, so this only waits for the queue. */
  async synchronize(opts?: OpOptions): Promise<void> {
    return this.run('synchronize', opts, async () => {});
  }

  async abort(reason = 'abort() called'): Promise<void> {
    await this.ops.abort(reason);
  }

  /**
   * Local and graceful: lets issued operations settle (bounded by the timeout), then closes the
   * transport's connections; idempotent.
   */
  async close(opts?: OpOptions): Promise<void> {
    if (this.ops.state === 'closed') return;
    if (this.ops.state === 'ready') {
      const t = effectiveTimeout(opts, this.timeoutMs);
      await guard(this.ops.drain(), { timeoutMs: t, signal: opts?.signal, what: 'close', onTimeout: simpleTimeout('close', t) }).catch(() => {});
    }
    if (!this.ops.markClosed()) return;
    await this.net.close();
    this.log.debug('closed');
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
