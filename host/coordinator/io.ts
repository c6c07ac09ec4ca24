/**
 * What a coordinator's operations work with: its place in the group, its channels (and which one
 * carries a given tensor), tensors on its device, and the loopback queue of sends to itself.
 * The coordinator owns one; the operations in objects.ts and tensors.ts take it.
 */
import { invalidArgument } from '../base/errors.js';
import { Deadline } from '../base/deadline.js';
import { bytesOf, isCpu, nbytes, parseDevice, empty as emptyCpu, type DeviceBuffer, type DType, type Tensor } from '../core/tensor.js';
import { scaleBytes, type PreMulSum } from '../core/premul.js';
import type { Collectives } from '../core/collectives.js';
import { emptyOn, freeTensor } from '../device/tensors.js';
import type { DeviceBackendV1 } from '../device/types.js';
import { ringNeighbors } from '../core/layout.js';
import { copyTensor, reorderTensor } from './copy.js';
import type { DictIo } from './dict.js';
import { LocalChannel } from './local.js';
import type { Net } from './channels.js';
import type { MessageQueue } from './mq.js';
import { decodeObject } from '../pg/codec.js';

export class GroupIo {
  /** The group's channels; undefined for a group of one rank (it has none). */
  readonly net: Net | undefined;
  /** Collectives of a group of one rank: local copies. */
  readonly local: LocalChannel;
  /** Loopback queue for point-to-point sends to oneself (how world size 1 keeps P2P uniform). */
  readonly self: unknown[] = [];
  /** The message-queue broadcaster, when the group was created with useMessageQueueBroadcaster. */
  mq: MessageQueue | undefined;
  /** Collectives run on the device communicator so far (check.ts samples them by this count). */
  deviceCalls = 0;
  /** Group ranks before and after this one in the ring (the core's layout). */
  readonly ring: { next: number; prev: number };

  constructor(
    /** The group's name in logs and errors (`${groupName}_${index}`, as every layer spells it). */
    readonly name: string,
    readonly worldSize: number,
    readonly rankInGroup: number,
    /** The device this rank's device tensors live on ('cpu' without a device backend). */
    readonly device: string,
    readonly backend: DeviceBackendV1 | undefined,
    net: Net | undefined,
  ) {
    this.net = net;
    this.ring = ringNeighbors(rankInGroup, worldSize);
    this.local = new LocalChannel({
      empty: (shape, dtype, dev) => this.empty(shape, dtype, dev), copy: (dst, src) => void this.copyInto(dst, src),
      scale: (t, op) => this.scale(t, op),
    });
  }

  /**
   * The channel that carries `t`: the CPU group for CPU tensors, the device communicator for
   * this rank's device tensors, local copies in a group of one; INVALID_ARGUMENT when this group
   * cannot carry it.
   */
  channel(t: Tensor, what: string): Collectives<Tensor> {
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

  /** t's elements times premulSum's scalar, in place (device tensors through host memory: a group of one's path). */
  private scale(t: Tensor, op: PreMulSum): void {
    if (isCpu(t)) return scaleBytes(t.dtype, bytesOf(t), bytesOf(t), op);
    const b = this.backendFor(t.device, 'premulSum');
    const host = new Uint8Array(nbytes(t));
    b.copyToHost(host, t.data as DeviceBuffer);
    scaleBytes(t.dtype, host, host, op);
    b.copyFromHost(t.data as DeviceBuffer, host);
  }

  /** A zero-filled tensor on `device`. */
  empty(shape: number[], dtype: DType, device: string): Tensor {
    if (device === 'cpu') return emptyCpu(shape, dtype);
    const b = this.backendFor(device, 'empty');
    return emptyOn(b, shape, dtype, parseDevice(device).index);
  }

  /** Releases a device tensor made by this group's backend (a no-op for CPU tensors). */
  free(t: Tensor): void {
    if (!isCpu(t) && this.backend) freeTensor(this.backend, t);
  }

  private backendFor(device: string, what: string): DeviceBackendV1 {
    if (!this.backend || parseDevice(device).type !== this.backend.deviceType) {
      throw invalidArgument(`${what}: no backend for device '${device}' in group ${this.name} (device ${this.device})`);
    }
    return this.backend;
  }

  /** Checks a caller-provided output; returns it (or undefined when none was given). */
  output(out: Tensor | undefined, shape: number[], like: Tensor, what: string): Tensor | undefined {
    if (out === undefined) return undefined;
    if (out.dtype !== like.dtype || out.device !== like.device || out.shape.length !== shape.length ||
        out.shape.some((s, i) => s !== shape[i])) {
      throw invalidArgument(`${what}: out must be ${like.dtype}[${shape.join(', ')}] on ${like.device}, ` +
        `got ${out.dtype}[${out.shape.join(', ')}] on ${out.device}`);
    }
    return out;
  }

  allocLike(shape: number[], like: Tensor): Tensor {
    return this.empty(shape, like.dtype, like.device);
  }

  copyInto(dst: Tensor, src: Tensor): Tensor {
    return copyTensor(this.backend, dst, src);
  }

  reorder(src: Tensor, dst: Tensor, a: number, b: number): void {
    reorderTensor(this.backend, src, dst, a, b);
  }

  /** A rank-major `stage` (which this call owns and frees) block-transposed into `out` or a new tensor. */
  reordered(stage: Tensor, out: Tensor | undefined, shape: number[], like: Tensor, a: number, b: number): Tensor {
    try {
      const dst = out ?? this.allocLike(shape, like);
      this.reorder(stage, dst, a, b);
      return dst;
    } finally {
      this.free(stage);
    }
  }

  takeSelf(what: string): unknown {
    if (this.self.length === 0) {
      throw invalidArgument(`${what}: nothing was sent to this rank by itself (a self-send must come first in program order)`);
    }
    return this.self.shift();
  }

  /** An object from `src` on every rank: through the message queue when there is one and src is 0, else the store channel. */
  /**
   * After the group failed: a broadcast group rank 0 had already published into the message
   * queue's ring and this rank has not read yet (`{ value }`), else undefined.
   */
  publishedObj(src: number): { value: unknown } | undefined {
    const bytes = src === 0 ? this.mq?.takePublished() : undefined;
    return bytes && { value: decodeObject(bytes, { key: `${this.name}/mq`, src: 0 }) };
  }

  broadcastObj(obj: unknown, src: number, opts: { timeoutMs: number; signal?: AbortSignal }): Promise<unknown> {
    if (this.mq && src === 0) return this.mq.broadcastObj(obj, new Deadline(opts.timeoutMs, opts.signal, `${this.name}.broadcast`));
    return this.net!.pg.broadcastObj(obj, src, opts);
  }

  /** What a tensor-dict transfer needs; undefined in a group of one (dicts do not travel there). */
  dictIo(): DictIo | undefined {
    const net = this.net;
    if (!net) return undefined;
    return {
      pg: net.pg, device: this.device,
      broadcastObj: (obj, src, opts) => this.broadcastObj(obj, src, opts),
      channel: (t: Tensor, what: string) => this.channel(t, what),
      empty: (shape: number[], dtype: DType, device: string) => this.empty(shape, dtype, device),
      free: (t: Tensor) => this.free(t),
    };
  }
}
