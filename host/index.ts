/**
 * Every public export of groupcomm, by name. Nothing is exported by wildcard so that the
 * public surface is reviewed here, in one place.
 */
export { GroupcommError, ErrorCode, isGroupcommError } from './base/errors.js';
export type { GroupcommErrorFields } from './base/errors.js';
export { DEFAULT_TIMEOUT_MS } from './base/deadline.js';
export type { OpOptions } from './base/deadline.js';
export {
  tensor, empty, numel, nbytes, itemSize, isTensor, isCpu, bytesOf, fromBytes,
  parseDevice, arrayClassOf, DTYPE_NAMES,
} from './core/tensor.js';
export type { Tensor, CpuTensor, DType, DeviceBuffer, TypedArray } from './core/tensor.js';
export { dtypeInfo } from './core/dtype.js';
export type { DTypeInfo } from './core/dtype.js';
export {
  reduceBytes, finishAvg, allocCoreBuffer, reduceAt, finishAvgAt, REDUCE_OP_CODES,
} from './core/reduce.js';
export type { ReduceOp, CoreBuffer } from './core/reduce.js';
export {
  findGroup, validatePortTriple, groupPortsFor, encodePortRecord, decodePortRecord,
  ringNeighbors, binomialTree, disseminationPartners, recursiveDoubling, chunkPlan,
} from './core/layout.js';
export type {
  GroupLayout, PortTriple, BinomialTree, RecursiveDoublingPlan, ChunkPlan,
} from './core/layout.js';
export type { Store, StoreValue } from './store/types.js';
export { encodeTensorDict, decodeTensorDict, fillTensorDict } from './coordinator/tensor_dict.js';
export type { TensorDict, TensorSlot, EncodedTensorDict, DecodedTensorDict } from './coordinator/tensor_dict.js';
export { FrameError } from './core/frame.js';
export { TcpStore, TcpStoreServer, PrefixStore, DEFAULT_LIMITS } from './store/index.js';
export type { TcpStoreOptions, TcpStoreServerOptions, StoreLimits } from './store/index.js';
export { StatelessProcessGroup } from './pg/group.js';
export type { ProcessGroupOptions, DestroyOptions, ReduceOpName } from './pg/group.js';
export { CpuGroup } from './cpu/group.js';
export type { CpuGroupOptions, ReduceOptions, OutOptions, Transport as CpuTransport } from './cpu/group.js';
export { DEVICE_API_VERSION, REDUCE_OPS } from './device/types.js';
export type {
  DeviceBackendV1, DeviceCommunicatorV1, DeviceBootstrap, CommunicatorOptions, CollectiveOptions,
  BackendCapabilities, ProbeResult,
} from './device/types.js';
export { resolveBackend, loadBackend, registerBackend, backendNames, backendSpec, toHost } from './device/registry.js';
export { checkBackend, backendProblems } from './device/check.js';
export { storeBootstrap } from './device/bootstrap.js';
export type { BootstrapStore, StoreBootstrapOptions } from './device/bootstrap.js';
export { emptyOn, toDevice, fromDevice, freeTensor, subBuffer, deviceString } from './device/tensors.js';
export { OrderedOps } from './device/lifecycle.js';
export { StatelessGroupCoordinator } from './coordinator/coordinator.js';
export type { CoordinatorOptions, CoordinatorReduceOptions, CoordinatorOutOptions } from './coordinator/coordinator.js';
