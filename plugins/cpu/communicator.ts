/**
 * The cpu backend's communicator: each operation checks its tensors, reads their bytes from
 * HostMemory, moves bytes with BootstrapTransport, reduces with the WASM core's kernels,
 * and writes the result back in place. Ordering, deadlines and abort come from OrderedOps, as
 * in every backend.
 */
import { DEFAULT_TIMEOUT_MS, effectiveTimeout, type OpOptions } from '../../host/deadline.js';
import { invalidArgument } from '../../host/errors.js';
import { finishAvg, reduceBytes } from '../../host/core/reduce.js';
import { checkReduce } from '../../host/device/elementwise.js';
import { OrderedOps } from '../../host/device/lifecycle.js';
import { checkDeviceTensor, checkPair, checkPeer, type CheckedTensor } from '../../host/device/tensors.js';
import type { CollectiveOptions, CommunicatorOptions, DeviceCommunicatorV1, ReduceOp } from '../../host/device/types.js';
import { logger } from '../../host/log.js';
import type { DType, Tensor } from '../../host/tensor.js';
import type { HostMemory } from './memory.js';
import { BootstrapTransport } from './transport.js';

export const DEVICE_TYPE = 'host';

/**
 * out = op over `parts` with the WASM core's kernels, combining parts in rank order so that every
 * rank that reduces the same parts gets the same bits (the order matters for floats).
 */
function reduceParts(dtype: DType, op: ReduceOp, out: Uint8Array, parts: readonly Uint8Array[]): void {
  out.set(parts[0]);
  for (let r = 1; r < parts.length; r++) reduceBytes(op, dtype, out, parts[r]);
  if (op === 'avg') finishAvg(dtype, out, parts.length);
}

export class CpuCommunicator implements DeviceCommunicatorV1 {
  readonly rank: number;
  readonly worldSize: number;
  readonly deviceIndex: number;
  private readonly ops: OrderedOps;
  private readonly net: BootstrapTransport;
  private readonly log;

  private constructor(private readonly mem: HostMemory, o: CommunicatorOptions, private readonly timeoutMs: number) {
    this.rank = o.rank;
    this.worldSize = o.worldSize;
    this.deviceIndex = o.deviceIndex;
    this.net = new BootstrapTransport(o.bootstrap);
    const label = `cpu communicator${o.name ? ` '${o.name}'` : ''}`;
    this.log = logger('DEVICE', `rank ${o.rank}/${o.worldSize}`);
    this.ops = new OrderedOps(label, o.rank, timeoutMs, (reason) => this.log.info(`aborted: ${reason}`));
  }

  /** Collective: every rank calls it; resolves once all ranks have joined. */
  static async create(mem: HostMemory, o: CommunicatorOptions): Promise<CpuCommunicator> {
    const timeoutMs = effectiveTimeout(o, DEFAULT_TIMEOUT_MS);
    if (o.bootstrap.rank !== o.rank || o.bootstrap.worldSize !== o.worldSize) {
      throw invalidArgument(`createCommunicator: rank ${o.rank}/${o.worldSize} does not match the bootstrap's ${o.bootstrap.rank}/${o.bootstrap.worldSize}`, { rank: o.rank });
    }
    const c = new CpuCommunicator(mem, o, timeoutMs);
    // Joining is a barrier, so a rank that never comes is reported at creation, by rank.
    await c.net.barrier({ timeoutMs, signal: o.signal });
    c.log.debug('communicator ready');
    return c;
  }

  private t(t: Tensor | undefined, what: string): CheckedTensor {
    return checkDeviceTensor(t, DEVICE_TYPE, this.deviceIndex, what);
  }

  private o(signal: AbortSignal, opts?: OpOptions): OpOptions {
    return { signal, timeoutMs: effectiveTimeout(opts, this.timeoutMs) };
  }

  async allReduce(tensor: Tensor, opts?: CollectiveOptions): Promise<Tensor> {
    const op = opts?.op ?? 'sum';
    const x = this.t(tensor, 'allReduce');
    checkReduce(tensor.dtype, op);
    return this.ops.run('allReduce', opts, async (signal) => {
      const mine = this.mem.view(x.buf, x.nbytes);
      const parts = await this.net.allGather(mine.slice(), this.o(signal, opts));
      reduceParts(tensor.dtype, op, mine, parts);
      return tensor;
    });
  }

  async allGather(output: Tensor, input: Tensor, opts?: OpOptions): Promise<Tensor> {
    const o = this.t(output, 'allGather output'), i = this.t(input, 'allGather input');
    checkPair(o, output, i, input, this.worldSize, 'allGather');
    return this.ops.run('allGather', opts, async (signal) => {
      const parts = await this.net.allGather(this.mem.view(i.buf, i.nbytes).slice(), this.o(signal, opts));
      const out = this.mem.view(o.buf, o.nbytes);
      parts.forEach((p, r) => out.set(p, r * i.nbytes));
      return output;
    });
  }

  async reduceScatter(output: Tensor, input: Tensor, opts?: CollectiveOptions): Promise<Tensor> {
    const op = opts?.op ?? 'sum';
    const o = this.t(output, 'reduceScatter output'), i = this.t(input, 'reduceScatter input');
    checkPair(i, input, o, output, this.worldSize, 'reduceScatter');
    checkReduce(input.dtype, op);
    return this.ops.run('reduceScatter', opts, async (signal) => {
      const parts = await this.net.allGather(this.mem.view(i.buf, i.nbytes).slice(), this.o(signal, opts));
      const mineOf = (p: Uint8Array) => p.subarray(this.rank * o.nbytes, (this.rank + 1) * o.nbytes);
      reduceParts(output.dtype, op, this.mem.view(o.buf, o.nbytes), parts.map(mineOf));
      return output;
    });
  }

  async broadcast(tensor: Tensor, src: number, opts?: OpOptions): Promise<Tensor> {
    const x = this.t(tensor, 'broadcast');
    checkPeer(src, this.worldSize, 'broadcast', this.rank);
    return this.ops.run('broadcast', opts, async (signal) => {
      const view = this.mem.view(x.buf, x.nbytes);
      const got = await this.net.broadcast(this.rank === src ? view.slice() : undefined, src, this.o(signal, opts));
      if (got.byteLength !== x.nbytes) throw invalidArgument(`broadcast: rank ${src} sent ${got.byteLength} bytes, this rank expects ${x.nbytes}`, { rank: this.rank, peerRank: src });
      if (this.rank !== src) view.set(got);
      return tensor;
    }, { peerRank: src });
  }

  async send(tensor: Tensor, dst: number, opts?: OpOptions): Promise<void> {
    const x = this.t(tensor, 'send');
    checkPeer(dst, this.worldSize, 'send', this.rank);
    if (dst === this.rank) throw invalidArgument('send: destination is this rank', { rank: this.rank });
    return this.ops.run('send', opts, async (signal) => {
      await this.net.send(this.mem.view(x.buf, x.nbytes).slice(), dst, this.o(signal, opts));
    }, { peerRank: dst });
  }

  async recv(tensor: Tensor, src: number, opts?: OpOptions): Promise<Tensor> {
    const x = this.t(tensor, 'recv');
    checkPeer(src, this.worldSize, 'recv', this.rank);
    if (src === this.rank) throw invalidArgument('recv: source is this rank', { rank: this.rank });
    return this.ops.run('recv', opts, async (signal) => {
      const got = await this.net.recv(src, this.o(signal, opts));
      if (got.byteLength !== x.nbytes) throw invalidArgument(`recv: rank ${src} sent ${got.byteLength} bytes, expected ${x.nbytes}`, { rank: this.rank, peerRank: src });
      this.mem.view(x.buf, x.nbytes).set(got);
      return tensor;
    }, { peerRank: src });
  }

  async gather(output: Tensor | undefined, input: Tensor, dst: number, opts?: OpOptions): Promise<Tensor | undefined> {
    const i = this.t(input, 'gather input');
    checkPeer(dst, this.worldSize, 'gather', this.rank);
    let o: CheckedTensor | undefined;
    if (this.rank === dst) {
      o = this.t(output, 'gather output');
      checkPair(o, output!, i, input, this.worldSize, 'gather');
    }
    return this.ops.run('gather', opts, async (signal) => {
      const parts = await this.net.gather(this.mem.view(i.buf, i.nbytes).slice(), dst, this.o(signal, opts));
      if (!parts || !o) return undefined;
      const out = this.mem.view(o.buf, o.nbytes);
      parts.forEach((p, r) => out.set(p, r * i.nbytes));
      return output;
    }, { peerRank: dst });
  }

  async allToAll(output: Tensor, input: Tensor, opts?: OpOptions): Promise<Tensor> {
    const o = this.t(output, 'allToAll output'), i = this.t(input, 'allToAll input');
    checkPair(o, output, i, input, 1, 'allToAll');
    if (i.count % this.worldSize !== 0) throw invalidArgument(`allToAll: ${i.count} elements do not split evenly over ${this.worldSize} ranks`);
    return this.ops.run('allToAll', opts, async (signal) => {
      const block = i.nbytes / this.worldSize;
      const src = this.mem.view(i.buf, i.nbytes).slice();
      const blocks = Array.from({ length: this.worldSize }, (_, j) => src.subarray(j * block, (j + 1) * block));
      const got = await this.net.allToAll(blocks, this.o(signal, opts));
      const out = this.mem.view(o.buf, o.nbytes);
      got.forEach((b, r) => out.set(b, r * block));
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

  async destroy(_opts?: OpOptions): Promise<void> {
    // Local and immediate: the cpu backend holds no peer resources beyond the store keys its
    // finished operations already removed.
    if (this.ops.markDestroyed()) this.log.debug('destroyed');
  }
}
