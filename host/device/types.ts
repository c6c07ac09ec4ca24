/**
 * The device plugin contract, version 1. Versioned like NCCL's `ncclNet_vN`: a plugin states
 * `apiVersion: 1`, and a later `DeviceBackendV2` will be adapted to by the loader rather than
 * breaking V1 plugins. Nothing has been published under V1 yet, so V1 itself took the collective
 * shape shared with the CPU group (host/core/collectives.ts) and the close/abort lifecycle
 * instead of becoming V2. A plugin imports these types, and every helper it needs, from the
 * kit (`groupcomm/plugin`, host/device/kit.ts).
 *
 * Contracts that hold for every method below (docs/plugins.md explains them at length):
 * - Blocking: no method blocks the event loop for longer than a library call that returns at
 *   once (an enqueue, a copy of a few bytes). Anything that waits on peers or on the device
 *   returns a Promise and honours `{ timeoutMs, signal }`.
 * - Completion: a communicator's Promise resolves once the result is visible to
 *   `backend.copyToHost` and the inputs may be reused or freed.
 * - Aliasing: inputs are never written; results go into `out` when given, else into a tensor
 *   the communicator allocates on its device (the caller owns and frees it); in place is
 *   `out` = the input, for allReduce and broadcast only; other overlaps are refused.
 * - Ownership: callers own every Tensor and DeviceBuffer they pass; a communicator never keeps a
 *   reference after the returned Promise settles. Buffers must not be freed while an operation
 *   that uses them is pending.
 * - Order: collective calls are issued in call order, even when the caller does not await each
 *   one; every rank must issue the same collectives in the same order (as with NCCL).
 * - Errors: every rejection is a GroupcommError (ERR_GROUPCOMM_TIMEOUT, _ABORTED, _DESTROYED,
 *   _INVALID_ARGUMENT, _PEER_LOST, _PROTOCOL, _PLUGIN_UNAVAILABLE). After a timeout or abort the
 *   communicator is dead: later calls reject with ERR_GROUPCOMM_ABORTED; close() still works.
 */
import type { OpOptions } from '../base/deadline.js';
import type { ReduceOp } from '../core/reduce.js';
import type { Store } from '../store/types.js';
import type { DeviceBuffer, DType, Tensor } from '../core/tensor.js';
import type {
  BroadcastOptions, Collectives, GatherOptions, OutOptions, ReduceOptions, SizesOptions, SizesReduceOptions, AllToAllSplitsOptions,
} from '../core/collectives.js';

export type { BroadcastOptions, Collectives, GatherOptions, OutOptions, ReduceOptions, SizesOptions, SizesReduceOptions, AllToAllSplitsOptions };

export const DEVICE_API_VERSION = 1;

/**
 * Reduction operators, as NCCL's ncclRedOp_t and the WASM core name them. avg is sum / worldSize
 * (integers truncate toward zero, like NCCL's SumPostDiv); bool has no avg.
 */
export type { ReduceOp };
export { REDUCE_OPS } from '../core/reduce.js';

export type ProbeResult = { available: true } | { available: false; reason: string };

/**
 * The group's store channel, handed to `createCommunicator`. A backend uses it to exchange its
 * bootstrap data (NCCL: the raw 128-byte unique id from rank 0) and may use it as a slow data
 * path. Every method is collective over the group except sendBytes/recvBytes (a pair).
 * `storeBootstrap()` builds one over any Store; a StatelessProcessGroup can satisfy it as well.
 */
export interface DeviceBootstrap {
  readonly rank: number;
  readonly worldSize: number;
  /** `src` passes its bytes, the others pass undefined; everyone resolves with src's bytes. */
  broadcastBytes(bytes: Uint8Array | undefined, src: number, opts?: OpOptions): Promise<Uint8Array>;
  sendBytes(bytes: Uint8Array, dst: number, opts?: OpOptions): Promise<void>;
  recvBytes(src: number, opts?: OpOptions): Promise<Uint8Array>;
  /** Resolves when every rank has called it; a timeout names the ranks still missing. */
  barrier(opts?: OpOptions): Promise<void>;
  /**
   * Optional: the store under the bootstrap, already scoped to this communicator, for backends
   * that set up their own connections through it (the cpu backend builds a CPU group on it).
   */
  readonly store?: Store;
}

export interface CommunicatorOptions {
  rank: number;
  worldSize: number;
  /** Which device of this backend the communicator drives (CUDA: the device ordinal). */
  deviceIndex: number;
  bootstrap: DeviceBootstrap;
  /** Bounds creation (NCCL: unique-id exchange and init); also the default for every op. */
  timeoutMs?: number;
  signal?: AbortSignal;
  /** Names the communicator in logs and errors (the coordinator passes `${groupName}_${index}`, the same on every member). */
  name?: string;
  /** Address this rank may listen on, for backends that open their own sockets (default 127.0.0.1). */
  host?: string;
}

/** Options of DeviceCommunicatorV1.split (timeoutMs / signal bound the whole split). */
export interface CommSplitOptions extends OpOptions {
  /** Ranks passing the same color form one new communicator; a negative color takes no part. */
  color: number;
  /** Orders the ranks within a color (ties: the parent's rank order); default this rank. */
  key?: number;
  /** Names the new communicator in logs and errors. */
  name?: string;
}

/** allReduce / reduceScatter options on device tensors (kept under its V1 name). */
export type CollectiveOptions = ReduceOptions<Tensor>;

/**
 * One rank's end of a device communicator: the collective shape of host/core/collectives.ts on
 * tensors of this backend's device (`tensor.device === backend.deviceType + ':' + deviceIndex`),
 * contiguous, checked before anything is issued (ERR_GROUPCOMM_INVALID_ARGUMENT, nothing sent).
 * Device buffers are flat: `out` must have the result's dtype and element count (its shape is
 * the caller's); a result the communicator allocates gets the shapes the CPU group gives
 * (allGather: [P·d0, …], reduceScatter: [d0/P, …], else flat).
 */
export interface DeviceCommunicatorV1 extends Collectives<Tensor> {
  readonly rank: number;
  readonly worldSize: number;
  readonly deviceIndex: number;
  /**
   * Optional, the variable-size collectives (vLLM's all_gatherv / reduce_scatterv, torch's
   * all_to_all_single), with sizes in rows of dim 0 as the CPU group counts them (its
   * allGatherv, reduceScatterv, allToAll with splits; NCCL: grouped send/recv or one reduce per
   * root). Without them the coordinator runs these through host memory over the CPU group.
   */
  allGatherv?(input: Tensor, opts: SizesOptions<Tensor>): Promise<Tensor>;
  reduceScatterv?(input: Tensor, opts: SizesReduceOptions<Tensor>): Promise<Tensor>;
  allToAllv?(input: Tensor, opts: AllToAllSplitsOptions<Tensor>): Promise<Tensor>;
  /** Resolves when every operation issued so far has completed on the device. */
  synchronize(opts?: OpOptions): Promise<void>;
  /** Immediate, local, idempotent: pending operations reject with ERR_GROUPCOMM_ABORTED. */
  abort(reason?: string): Promise<void>;
  /**
   * Graceful and local: lets issued operations finish (bounded by the timeout), then releases
   * the communicator; idempotent; later operations reject with ERR_GROUPCOMM_DESTROYED.
   */
  close(opts?: OpOptions): Promise<void>;
  /** `await using comm = …`: close(). */
  [Symbol.asyncDispose](): Promise<void>;
  /**
   * Optional (capabilities.split): a sub-group made from this communicator without a new
   * bootstrap, like ncclCommSplit. Collective over this communicator, issued in call order like
   * any operation; resolves with the new communicator (ranks ordered by key), or undefined for
   * a negative color. Closing either communicator leaves the other working.
   */
  split?(opts: CommSplitOptions): Promise<DeviceCommunicatorV1 | undefined>;
}

/** What a backend can do; optional features are found here, not by calling and catching. */
export interface BackendCapabilities {
  /** Dtypes allReduce / reduceScatter accept (data movement takes every dtype). */
  reduceDtypes: readonly DType[];
  /** True when the backend can create more than one rank on the same device index. */
  sharedDevice: boolean;
  /** True when communicators implement split() (cuda: ncclCommSplit, NCCL 2.18+). */
  split?: boolean;
  /**
   * True when allReduce, reduceScatter (and reduceScatterv) take `op: premulSum(factor)`
   * (cuda: ncclRedOpCreatePreMulSum). Without it the coordinator refuses premulSum on device
   * tensors, and the conformance suite lists those cases as unsupported.
   */
  premulSum?: boolean;
  /**
   * Dtypes of reduceDtypes whose premulSum a communicator of one rank refuses with
   * INVALID_ARGUMENT (cuda: NCCL has no one-rank fp8 scaling kernel). The conformance suite lists
   * those cases as unsupported at world size 1.
   */
  premulSumRefusedAtOneRank?: readonly DType[];
  /** True when communicators implement allGatherv, reduceScatterv and allToAllv (the conformance suite then runs their cases). */
  variableCollectives?: boolean;
}

export interface DeviceBackendV1 {
  readonly apiVersion: 1;
  /** Used in logs and by name resolution ('cpu', 'cuda'). */
  readonly name: string;
  /** The device type in Tensor.device strings ('host', 'cuda'). */
  readonly deviceType: string;
  readonly capabilities: BackendCapabilities;
  /** Cheap and safe to call repeatedly; never throws. Unavailable → the reason, said plainly. */
  probe(): Promise<ProbeResult>;
  deviceCount(): Promise<number>;
  /** Device memory of `nbytes` (zero-filled where the device allows it cheaply: cpu yes, cuda no). */
  alloc(nbytes: number, deviceIndex: number): DeviceBuffer;
  /** Idempotent for a buffer already freed. */
  free(buf: DeviceBuffer): void;
  /** Synchronous copy; `src.byteLength` must not exceed `dst.nbytes`. */
  copyFromHost(dst: DeviceBuffer, src: Uint8Array): void;
  /** Synchronous copy; `dst.byteLength` must not exceed `src.nbytes`. */
  copyToHost(dst: Uint8Array, src: DeviceBuffer): void;
  /**
   * Collective over the bootstrap's group: every rank calls it with the same worldSize.
   * Rejects with ERR_GROUPCOMM_TIMEOUT (naming the rank) when the group does not form in time.
   */
  createCommunicator(opts: CommunicatorOptions): Promise<DeviceCommunicatorV1>;
}
