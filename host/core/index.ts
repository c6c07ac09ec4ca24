/**
 * `groupcomm/core`: the WebAssembly core's typed wrappers, for code that wants the deterministic
 * pieces without a group (the dtype table, reductions over raw bytes or core memory, group
 * layout and port records, collective schedules and chunk plans, frame error codes) and the
 * tensor byte helpers. Applications need none of it: the main entry (host/index.ts) is what they
 * call. test/unit/exports.test.ts pins this list too.
 */
export { DTYPE_NAMES, dtypeInfo } from './dtype.js';
export type { DTypeInfo } from './dtype.js';
export { itemSize, arrayClassOf, bytesOf, fromBytes, parseDevice } from './tensor.js';
export {
  REDUCE_OP_CODES, reduceBytes, finishAvg, allocCoreBuffer, reduceAt, finishAvgAt,
} from './reduce.js';
export type { CoreBuffer } from './reduce.js';
export {
  findGroup, validatePortTriple, groupPortsFor, encodePortRecord, decodePortRecord,
  ringNeighbors, binomialTree, disseminationPartners, recursiveDoubling, chunkPlan,
} from './layout.js';
export type { GroupLayout, PortTriple, BinomialTree, RecursiveDoublingPlan, ChunkPlan } from './layout.js';
export { FrameError } from './frame.js';
