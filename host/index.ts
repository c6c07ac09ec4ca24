/**
 * The public entry of groupcomm: what an application calls, by name. Nothing is exported by
 * wildcard so that the surface is reviewed here, in one place, and test/unit/exports.test.ts pins
 * the list (growing it is a conscious change). Everything else has its own entry:
 *   groupcomm/core     the WebAssembly core's typed wrappers (dtype table, reductions, group
 *                      layout, schedules, chunk plans) and tensor byte helpers (host/core/index.ts)
 *   groupcomm/plugin   the plugin kit: what a device-backend author needs (host/device/kit.ts)
 *   groupcomm/conformance  the device-plugin conformance suite (host/conformance/index.ts)
 */
// Errors.
export { GroupcommError, ErrorCode, isGroupcommError } from './base/errors.js';
export type { GroupcommErrorFields } from './base/errors.js';
export type { CloseOptions } from './base/lifecycle.js';
export type { OpOptions } from './base/deadline.js';
// Tensors.
export { tensor, empty, isTensor, isCpu, numel, nbytes } from './core/tensor.js';
export type { Tensor, CpuTensor, DType, DeviceBuffer, TypedArray } from './core/tensor.js';
export type { ReduceOp } from './core/reduce.js';
export { premulSum } from './core/premul.js';
// The store.
export { TcpStore, TcpStoreServer, PrefixStore } from './store/index.js';
export type { Store, StoreValue } from './store/types.js';
export type { TcpStoreOptions, TcpStoreServerOptions } from './store/index.js';
// The process group and the CPU group.
export { StatelessProcessGroup } from './pg/group.js';
export type { ProcessGroupOptions } from './pg/group.js';
export { CpuGroup } from './cpu/group.js';
export type { CpuGroupOptions } from './cpu/group.js';
// Device backends, as an application picks them and moves tensors onto them.
export { resolveBackend, registerBackend, toHost } from './device/registry.js';
export { toDevice, fromDevice } from './device/tensors.js';
export type { DeviceBackendV1, DeviceCommunicatorV1 } from './device/types.js';
// The coordinator.
export { StatelessGroupCoordinator } from './coordinator/coordinator.js';
export type { CoordinatorOptions } from './coordinator/coordinator.js';
export type { TensorDict } from './coordinator/tensor_dict.js';
