/**
 * The coordinator's option objects (the public ones are re-exported by coordinator.ts and the
 * package entry).
 */
import type { OpOptions } from '../base/deadline.js';
import type { Tensor } from '../core/tensor.js';
import type { ReduceOpSpec } from '../core/premul.js';
import type { Store } from '../store/types.js';
import type { PortTriple } from './ports.js';

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
  /**
   * With groupPorts (or no rendezvous): the address the group's rank 0 listens on and the others
   * connect to (default 127.0.0.1). With rendezvous: where this rank listens if it is its group's
   * rank 0 (default: GROUPCOMM_SOCKET_IFNAME's address, else the route toward the rendezvous
   * store's host); rank 0 publishes it, so it may be on any node. See docs/multinode.md.
   */
  host?: string;
  /**
   * The job secret for the group's store and CPU mesh (default GROUPCOMM_SECRET). A non-loopback
   * `host` without one is refused unless `insecure` (docs/security.md).
   */
  secret?: string | Uint8Array;
  /** Allow a non-loopback `host` without a secret (logged as a warning). Default GROUPCOMM_INSECURE. */
  insecure?: boolean;
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
  /**
   * vLLM's use_message_queue_broadcaster: group rank 0's broadcastObject, broadcastObjectList
   * and tensor-dict metadata go through a shared-memory ring to same-host ranks (the CPU group
   * to the others) instead of the store channel (mq.ts). Default false.
   */
  useMessageQueueBroadcaster?: boolean;
  /** Bounds creation and is the default for every operation. Default GROUPCOMM_TIMEOUT_MS. */
  timeoutMs?: number;
  /** Aborts creation. */
  signal?: AbortSignal;
}

export interface CoordinatorReduceOptions<T extends Tensor = Tensor> extends OpOptions {
  /** Reduction operator (default 'sum'): a name, or premulSum(factor) (every input times factor, summed). */
  op?: ReduceOpSpec;
  /** Write the result here (same shape and dtype as the result) and return it. */
  out?: T;
}

export interface CoordinatorOutOptions<T extends Tensor = Tensor> extends OpOptions {
  /** Write the result here (same shape and dtype as the result) and return it. */
  out?: T;
}

export interface CoordinatorSplitOptions<T extends Tensor = Tensor> extends CoordinatorOutOptions<T> {
  /** Rows (dim 0) of the input that go to group rank 0, 1, …; omitted: equal blocks. */
  inputSplits?: readonly number[];
  /** Rows of the result that come from group rank 0, 1, …; omitted: equal blocks. Rank p's inputSplits[me] must equal this rank's outputSplits[p]. */
  outputSplits?: readonly number[];
}
