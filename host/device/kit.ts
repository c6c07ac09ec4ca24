/**
 * The plugin kit: the one module a device backend imports (`groupcomm/plugin`). Everything a
 * backend needs and nothing else — the V1 contract, the argument checks every communicator runs
 * before issuing anything, the aliasing rule for results, error factories, tensor helpers, the
 * bootstrap, OrderedOps (order, deadlines, abort), reductions for host-addressable memory, and
 * the CPU group for backends that move bytes through host memory. plugins/cpu and plugins/cuda
 * import only this module, the way an out-of-tree plugin does (docs/plugins.md).
 */

// The contract.
export { DEVICE_API_VERSION, REDUCE_OPS } from './types.js';
export type {
  BackendCapabilities, BroadcastOptions, Collectives, CollectiveOptions, CommunicatorOptions, DeviceBackendV1,
  AllToAllSplitsOptions, CommSplitOptions, DeviceBootstrap, DeviceCommunicatorV1, GatherOptions, OutOptions, ProbeResult,
  ReduceOp, ReduceOptions, SizesOptions, SizesReduceOptions,
} from './types.js';
export type { CpuTensor, DeviceBuffer, DType, Tensor, TypedArray } from '../core/tensor.js';
export type { OpOptions } from '../base/deadline.js';
export type { Store } from '../store/types.js';

// Argument checks and results (a bad call fails locally with INVALID_ARGUMENT and sends nothing).
export {
  checkDeviceTensor, checkPeer, deviceOutput, isDeviceBuffer, subBuffer,
  type CheckedTensor, type DeviceOutput, type DeviceOutputSpec,
} from './tensors.js';
export { checkReduce } from './elementwise.js';
export { aliasing, checkOutAliasing, type Aliasing } from '../core/alias.js';
export { gatheredShape, scatteredShape } from '../core/collectives.js';

// Errors.
export {
  abortedError, destroyedError, ErrorCode, GroupcommError, invalidArgument, isGroupcommError, peerLostError,
  pluginUnavailable, protocolError, timeoutError, type GroupcommErrorFields,
} from '../base/errors.js';

// Deadlines, ordering and logging.
export { defaultTimeoutMs, effectiveTimeout, guard, simpleTimeout, sleep } from '../base/deadline.js';
export { OrderedOps, type CommState } from './lifecycle.js';
export { logger, type Logger } from '../base/log.js';
// Settings: a plugin reads its GROUPCOMM_* variables through the one registry (docs/env.md).
export { setting } from '../base/config.js';

// Tensors.
export { deviceString, emptyOn, freeTensor, fromDevice, toDevice } from './tensors.js';
export { arrayClassOf, bytesOf, DTYPE_NAMES, itemSize, numel, parseDevice } from '../core/tensor.js';
export { dtypeInfo, type DTypeInfo } from '../core/dtype.js';
export { decodeMiniFloat, encodeMiniFloat, MINIFLOATS, readElement, writeElement } from './elementwise.js';

// Moving bytes: the bootstrap, reductions on host bytes (WASM core), host collectives.
export { storeBootstrap, type BootstrapStore, type StoreBootstrapOptions } from './bootstrap.js';
export { finishAvg, reduceBytes } from '../core/reduce.js';
export { isPreMulSum, premulScalar, premulScalarBytes, premulSum, scaleBytes, type PreMulSum, type ReduceOpSpec } from '../core/premul.js';
export { CpuGroup, type CpuGroupOptions } from '../cpu/group.js';
