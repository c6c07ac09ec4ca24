/**
 * The cpu backend's communicator: each operation checks its tensors, takes byte views of them in
 * HostMemory and hands those to a HostTransport (the CPU group, or the bootstrap alone), which
 * writes results in place. Ordering, deadlines and abort come from OrderedOps, as in every
 * backend.
 */
import { effectiveTimeout, type OpOptions } from '../../host/base/deadline.js';
import { invalidArgument } from '../../host/base/errors.js';
import { checkReduce } from '../../host/device/elementwise.js';
import { OrderedOps } from '../../host/device/lifecycle.js';
import { checkDeviceTensor, checkGatherArgs, checkPair, checkPeer, type CheckedTensor } from '../../host/device/tensors.js';
import type { CollectiveOptions, CommunicatorOptions, DeviceCommunicatorV1 } from '../../host/device/types.js';
import { logger } from '../../host/base/log.js';
import type { Tensor } from '../../host/core/tensor.js';
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
    this.log = logger('DEVICE', `rank ${o.rank}/${o.worldSize}`);
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

  async allReduce(tensor: Tensor, opts?: CollectiveOptions): Promise<Tensor> {
    const op = opts?.op ?? 'sum';
    const x = this.t(tensor, 'allReduce');
    checkReduce(tensor.dtype, op);
    return this.ops.run('allReduce', opts, async (signal) => {
      await this.net.allReduce(this.v(x), tensor.dtype, op, this.o(signal, opts));
      return tensor;
    });
  }

  async allGather(output: Tensor, input: Tensor, opts?: OpOptions): Promise<Tensor> {
    const o = this.t(output, 'allGather output'), i = this.t(input, 'allGather input');
    checkPair(o, output, i, input, this.worldSize, 'allGather');
    return this.ops.run('allGather', opts, async (signal) => {
      await this.net.allGather(this.v(o), this.v(i), input.dtype, this.o(signal, opts));
      return output;
    });
  }

  async reduceScatter(output: Tensor, input: Tensor, opts?: CollectiveOptions): Promise<Tensor> {
    const op = opts?.op ?? 'sum';
    const o = this.t(output, 'reduceScatter output'), i = this.t(input, 'reduceScatter input');
    checkPair(i, input, o, output, this.worldSize, 'reduceScatter');
    checkReduce(input.dtype, op);
    return this.ops.run('reduceScatter', opts, async (signal) => {
      await this.net.reduceScatter(this.v(o), this.v(i), input.dtype, op, this.o(signal, opts));
      return output;
    });
  }

  async broadcast(tensor: Tensor, src: number, opts?: OpOptions): Promise<Tensor> {
    const x = this.t(tensor, 'broadcast');
    checkPeer(src, this.worldSize, 'broadcast', this.rank);
    return this.ops.run('broadcast', opts, async (signal) => {
      const n = await this.net.broadcast(this.v(x), src, tensor.dtype, this.o(signal, opts));
      if (n !== x.nbytes) throw invalidArgument(`broadcast: rank ${src} sent ${n} bytes, this rank expects ${x.nbytes}`, { rank: this.rank, peerRank: src });
      return tensor;
    }, { peerRank: src });
  }

  async send(tensor: Tensor, dst: number, opts?: OpOptions): Promise<void> {
    const x = this.t(tensor, 'send');
    checkPeer(dst, this.worldSize, 'send', this.rank);
    if (dst === this.rank) throw invalidArgument('send: destination is this rank', { rank: this.rank });
    return this.ops.run('send', opts, async (signal) => {
      await this.net.send(this.v(x), dst, tensor.dtype, this.o(signal, opts));
    }, { peerRank: dst });
  }

  async recv(tensor: Tensor, src: number, opts?: OpOptions): Promise<Tensor> {
    const x = this.t(tensor, 'recv');
    checkPeer(src, this.worldSize, 'recv', this.rank);
    if (src === this.rank) throw invalidArgument('recv: source is this rank', { rank: this.rank });
    return this.ops.run('recv', opts, async (signal) => {
      const n = await this.net.recv(this.v(x), src, tensor.dtype, this.o(signal, opts));
      if (n !== x.nbytes) throw invalidArgument(`recv: rank ${src} sent ${n} bytes, expected ${x.nbytes}`, { rank: this.rank, peerRank: src });
      return tensor;
    }, { peerRank: src });
  }

  async gather(output: Tensor | undefined, input: Tensor, dst: number, opts?: OpOptions): Promise<Tensor | undefined> {
    const { i, o } = checkGatherArgs(output, input, dst, this.rank, this.worldSize, (t, what) => this.t(t, what));
    return this.ops.run('gather', opts, async (signal) => {
      await this.net.gather(o && this.v(o), this.v(i), dst, input.dtype, this.o(signal, opts));
      return o ? output : undefined;
    }, { peerRank: dst });
  }

  async allToAll(output: Tensor, input: Tensor, opts?: OpOptions): Promise<Tensor> {
    const o = this.t(output, 'allToAll output'), i = this.t(input, 'allToAll input');
    checkPair(o, output, i, input, 1, 'allToAll');
    if (i.count % this.worldSize !== 0) throw invalidArgument(`allToAll: ${i.count} elements do not split evenly over ${this.worldSize} ranks`);
    return this.ops.run('allToAll', opts, async (signal) => {
      await this.net.allToAll(this.v(o), this.v(i), input.dtype, this.o(signal, opts));
      return output;
    });
  }

  /** Host memory is written when each operation resolves, so this only waits for the queue. */
  async synchronize(opts?: OpOptions): Promise<void> {
    return this.ops.run('synchronize', opts, async () => {});
  }

  async abort(reason = 'abort() called'): Promise<void> {
    await this.ops.abort(reason);
  }

  /** Local and immediate: closes the transport's connections; idempotent. */
  async destroy(_opts?: OpOptions): Promise<void> {
    if (!this.ops.markDestroyed()) return;
    await this.net.close();
    this.log.debug('destroyed');
  }
}
