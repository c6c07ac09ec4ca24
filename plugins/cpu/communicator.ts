/**
 * The cpu backend's communicator: each operation checks its tensors, takes byte views of them in
 * HostMemory and hands those to a HostTransport (the CPU group, or the bootstrap alone), which
 * writes results in place. Results follow the aliasing contract through the kit's deviceOutput
 * (into `out`, else a buffer allocated here). Ordering, deadlines and abort come from
 * OrderedOps, as in every backend.
 */
import {
  checkDeviceTensor, checkPeer, checkReduce, deviceOutput, deviceString, effectiveTimeout,
  gatheredShape, guard, invalidArgument, logger, OrderedOps, scatteredShape, simpleTimeout,
  type BroadcastOptions, type CheckedTensor, type CommunicatorOptions, type DeviceCommunicatorV1, type DeviceOutput,
  type GatherOptions, type OpOptions, type OutOptions, type ReduceOptions, type SizesOptions, type SizesReduceOptions,
  type SplitOptions, type Tensor,
} from 'groupcomm/plugin';
import type { HostMemory } from './memory.js';
import { BootstrapTransport, GroupTransport, type HostTransport } from './transport.js';

export const DEVICE_TYPE = 'host';

export class CpuCommunicator implements DeviceCommunicatorV1 {
  readonly rank: number;
  readonly worldSize: number;
  readonly deviceIndex: number;
  private readonly ops: OrderedOps;
  private readonly log;

  private constructor(private readonly mem: HostMemory, private readonly net: HostTransport, o: CommunicatorOptions, private readonly timeoutMs: number) {
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
      ? await GroupTransport.create({ store: b.store!, rank: o.rank, worldSize: o.worldSize, name: 'groupcomm-device', host: o.host, timeoutMs, signal: o.signal })
      : new BootstrapTransport(b);
    // A barrier even after the group's own setup: a rank's mesh can be complete while a peer's
    // is still handshaking, and a rank that destroyed right away would cut that peer off.
    try {
      await net.barrier({ timeoutMs, signal: o.signal });
    } catch (e) {
      await net.close();
      throw e;
    }
    const c = new CpuCommunicator(mem, net, o, timeoutMs);
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

  private splits(count: number, what: string): void {
    if (count % this.worldSize !== 0) throw invalidArgument(`${what}: ${count} elements do not split evenly over ${this.worldSize} ranks`, { rank: this.rank });
  }

  async allReduce(input: Tensor, opts: ReduceOptions = {}): Promise<Tensor> {
    const op = opts.op ?? 'sum';
    const i = this.t(input, 'allReduce');
    checkReduce(input.dtype, op);
    const o = this.output(opts.out, input, i.count, input.shape, true, 'allReduce');
    return o.settle(this.ops.run('allReduce', opts, async (signal) => {
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
    return o.settle(this.ops.run('allGather', opts, async (signal) => {
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
    return o.settle(this.ops.run('reduceScatter', opts, async (signal) => {
      await this.net.reduceScatter(this.v(o.at), this.v(i), input.dtype, op, this.o(signal, opts));
      return o.tensor;
    }));
  }

  async broadcast(tensor: Tensor, opts: BroadcastOptions): Promise<Tensor> {
    const i = this.t(tensor, 'broadcast');
    const src = opts?.src;
    checkPeer(src, this.worldSize, 'broadcast', this.rank);
    const o = this.output(opts.out, tensor, i.count, tensor.shape, true, 'broadcast');
    return o.settle(this.ops.run('broadcast', opts, async (signal) => {
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
    return this.ops.run('send', opts, async (signal) => {
      await this.net.send(this.v(x), dst, tensor.dtype, this.o(signal, opts));
    }, { peerRank: dst });
  }

  async recv(dst: Tensor, src: number, opts?: OpOptions): Promise<Tensor> {
    const x = this.t(dst, 'recv');
    checkPeer(src, this.worldSize, 'recv', this.rank);
    if (src === this.rank) throw invalidArgument('recv: source is this rank', { rank: this.rank });
    return this.ops.run('recv', opts, async (signal) => {
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
      return this.ops.run('gather', opts, async (signal) => {
        await this.net.gather(undefined, this.v(i), dst, input.dtype, this.o(signal, opts));
        return undefined;
      }, { peerRank: dst });
    }
    const o = this.output(opts.out, input, i.count * this.worldSize, gatheredShape(input.shape, this.worldSize), false, 'gather');
    return o.settle(this.ops.run('gather', opts, async (signal) => {
      await this.net.gather(this.v(o.at), this.v(i), dst, input.dtype, this.o(signal, opts));
      return o.tensor;
    }));
  }

  async allToAll(input: Tensor, opts: OutOptions = {}): Promise<Tensor> {
    const i = this.t(input, 'allToAll');
    this.splits(i.count, 'allToAll');
    const o = this.output(opts.out, input, i.count, input.shape, false, 'allToAll');
    return o.settle(this.ops.run('allToAll', opts, async (signal) => {
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
    return o.settle(this.ops.run('allGatherv', opts, async (signal) => {
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
    return o.settle(this.ops.run('reduceScatterv', opts, async (signal) => {
      await this.net.reduceScatterv(this.v(o.at), this.v(i), input.dtype, rowElems, sizes, op, this.o(signal, opts));
      return o.tensor;
    }));
  }

  async allToAllv(input: Tensor, opts: SplitOptions = {}): Promise<Tensor> {
    const i = this.t(input, 'allToAllv');
    const rows = input.shape[0];
    const equal = () => { this.splits(rows ?? 0, 'allToAllv'); return Array.from({ length: this.worldSize }, () => rows / this.worldSize); };
    const ins = this.rowsOf(input, opts.inputSplits ?? equal(), 'allToAllv inputSplits');
    const outs = this.rowsOf(input, opts.outputSplits ?? equal(), 'allToAllv outputSplits').counts;
    if (ins.counts.reduce((a, b) => a + b, 0) !== rows) throw invalidArgument(`allToAllv: ${rows} rows, inputSplits add up to ${ins.counts.reduce((a, b) => a + b, 0)}`, { rank: this.rank });
    const total = outs.reduce((a, b) => a + b, 0);
    const o = this.output(opts.out, input, total * ins.rowElems, [total, ...input.shape.slice(1)], false, 'allToAllv');
    return o.settle(this.ops.run('allToAllv', opts, async (signal) => {
      await this.net.allToAllv(this.v(o.at), this.v(i), input.dtype, ins.rowElems, ins.counts, outs, this.o(signal, opts));
      return o.tensor;
    }));
  }

  async barrier(opts?: OpOptions): Promise<void> {
    return this.ops.run('barrier', opts, (signal) => this.net.barrier(this.o(signal, opts)));
  }

  /** Host memory is written when each operation resolves, so this only waits for the queue. */
  async synchronize(opts?: OpOptions): Promise<void> {
    return this.ops.run('synchronize', opts, async () => {});
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
