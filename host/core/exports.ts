/**
 * The WebAssembly core's exports (assembly/index.ts), typed once. Every wrapper in this folder
 * uses this interface; nothing else declares a core signature.
 *
 * Functions take and return plain numbers: i32/u32 arrive as JS numbers (a u32 above 2^31 comes
 * back negative, hence the `>>> 0` on pointers), f64 as doubles, usize is a byte address in
 * `memory`. The constants (`export const X` in AssemblyScript) are WebAssembly.Globals; the
 * loader reads them once into `Core.consts`, so the host never copies a number from assembly/.
 *
 * `CORE_FUNCTIONS` (name → parameter count) and `CORE_GLOBALS` are the same list at run time:
 * the compiler keeps them complete against the interface, and the loader checks them against
 * the module it loaded, so a stale build/core.wasm fails at load with the missing names.
 */

/** The exported functions, grouped by the assembly/ file that defines them. */
export interface CoreFunctions {
  // mem.ts
  alloc(size: number): number;
  free(ptr: number): void;
  // dtype.ts
  dtypeItemSize(code: number): number;
  dtypeNcclType(code: number): number;
  dtypeIsFloat(code: number): number;
  dtypeIsSigned(code: number): number;
  // frame.ts
  frameErrorOffset(): number;
  frameErrorEntry(): number;
  frameTablePtr(): number;
  frameOutPtr(): number;
  frameTotalLength(): number;
  frameDecode(base: number, len: number): number;
  frameEncode(spec: number, count: number): number;
  // layout.ts
  layoutFindGroup(ranks: number, offsets: number, numGroups: number, globalRank: number, globalWorldSize: number, out: number): number;
  layoutValidatePorts(device: number, cpu: number, store: number, out: number): number;
  layoutEncodePorts(device: number, cpu: number, store: number, dst: number, out: number): number;
  layoutDecodePorts(src: number, len: number, out: number): number;
  layoutRingNext(rank: number, n: number): number;
  layoutRingPrev(rank: number, n: number): number;
  layoutTreeParent(rank: number, root: number, n: number): number;
  layoutTreeChildren(rank: number, root: number, n: number, out: number): number;
  layoutDisseminationRounds(n: number): number;
  layoutDissemination(rank: number, n: number, sendTo: number, recvFrom: number): number;
  layoutRecursiveDoubling(rank: number, n: number, out: number): number;
  layoutRingBlocks(rank: number, n: number, shift: number, count: number, out: number): number;
  layoutChain(rank: number, root: number, n: number, out: number): number;
  layoutDirectPeers(rank: number, n: number, sendTo: number, recvFrom: number): number;
  layoutChunkCount(count: number, parts: number, chunkElems: number): number;
  layoutChunks(count: number, parts: number, chunkElems: number, partOffsets: number, chunkStart: number, chunkOffsets: number, chunkLengths: number): number;
  layoutSegmentCount(count: number, parts: number, itemSize: number, chunkBytes: number): number;
  layoutSegments(count: number, parts: number, itemSize: number, chunkBytes: number, offsets: number, lengths: number): number;
  // reduce.ts
  narrowToF32(dtype: number, bits: number): number;
  f32ToNarrow(dtype: number, x: number): number;
  reduce(op: number, dtype: number, dst: number, src: number, n: number): number;
  reduceDivide(dtype: number, ptr: number, n: number, divisor: number): number;
}

/** Parameter count of every function (WebAssembly functions report it as `length`). */
export const CORE_FUNCTIONS = {
  alloc: 1, free: 1,
  dtypeItemSize: 1, dtypeNcclType: 1, dtypeIsFloat: 1, dtypeIsSigned: 1,
  frameErrorOffset: 0, frameErrorEntry: 0, frameTablePtr: 0, frameOutPtr: 0, frameTotalLength: 0,
  frameDecode: 2, frameEncode: 2,
  layoutFindGroup: 6, layoutValidatePorts: 4, layoutEncodePorts: 5, layoutDecodePorts: 3,
  layoutRingNext: 2, layoutRingPrev: 2, layoutTreeParent: 3, layoutTreeChildren: 4,
  layoutDisseminationRounds: 1, layoutDissemination: 4, layoutRecursiveDoubling: 3,
  layoutRingBlocks: 5, layoutChain: 4, layoutDirectPeers: 4,
  layoutChunkCount: 3, layoutChunks: 7, layoutSegmentCount: 4, layoutSegments: 6,
  narrowToF32: 2, f32ToNarrow: 2, reduce: 5, reduceDivide: 4,
} as const satisfies { readonly [K in keyof CoreFunctions]: number };

/** Every exported constant, by assembly/ file. */
export const CORE_GLOBALS = [
  // dtype.ts: codes 0..11 are NCCL's ncclDataType_t
  'DTYPE_INT8', 'DTYPE_UINT8', 'DTYPE_INT32', 'DTYPE_UINT32', 'DTYPE_INT64', 'DTYPE_UINT64',
  'DTYPE_FLOAT16', 'DTYPE_FLOAT32', 'DTYPE_FLOAT64', 'DTYPE_BFLOAT16', 'DTYPE_FLOAT8_E4M3FN',
  'DTYPE_FLOAT8_E5M2', 'DTYPE_BOOL', 'DTYPE_INT16', 'DTYPE_COUNT',
  // frame.ts: format
  'FRAME_MAGIC', 'FRAME_VERSION', 'FRAME_HEADER_BYTES', 'FRAME_KIND_TENSOR', 'FRAME_KIND_VALUE',
  'FRAME_FLAG_INLINE', 'FRAME_PAYLOAD_ALIGN',
  // frame.ts: limits
  'FRAME_MAX_NDIM', 'FRAME_MAX_ENTRIES', 'FRAME_MAX_KEY_BYTES', 'FRAME_MAX_DEVICE_TYPE_BYTES',
  'FRAME_MAX_DEVICE_INDEX', 'FRAME_MAX_DIM', 'FRAME_MAX_TENSOR_BYTES', 'FRAME_MAX_FRAME_BYTES',
  // frame.ts: error codes and host <-> core record sizes
  'FRAME_OK', 'FRAME_ERR_TRUNCATED', 'FRAME_ERR_BAD_MAGIC', 'FRAME_ERR_BAD_VERSION',
  'FRAME_ERR_BAD_FLAGS', 'FRAME_ERR_TOO_MANY_ENTRIES', 'FRAME_ERR_BAD_KIND', 'FRAME_ERR_BAD_UTF8',
  'FRAME_ERR_DUPLICATE_KEY', 'FRAME_ERR_BAD_DTYPE', 'FRAME_ERR_BAD_DEVICE', 'FRAME_ERR_NDIM_LIMIT',
  'FRAME_ERR_DIM_TOO_LARGE', 'FRAME_ERR_SIZE_OVERFLOW', 'FRAME_ERR_NBYTES_MISMATCH',
  'FRAME_ERR_INLINE_NOT_CPU', 'FRAME_ERR_PAYLOAD_OUT_OF_BOUNDS', 'FRAME_ERR_BAD_PADDING',
  'FRAME_ERR_TRAILING_BYTES', 'FRAME_ERR_KEY_TOO_LONG', 'FRAME_ERR_FRAME_TOO_LARGE',
  'FRAME_ERR_BAD_VALUE', 'FRAME_SPEC_BYTES', 'FRAME_RECORD_BYTES',
  // layout.ts
  'LAYOUT_OK', 'LAYOUT_ERR_NO_GROUPS', 'LAYOUT_ERR_EMPTY_GROUP', 'LAYOUT_ERR_NEGATIVE_RANK',
  'LAYOUT_ERR_RANK_OUT_OF_RANGE', 'LAYOUT_ERR_DUPLICATE_RANK', 'LAYOUT_ERR_BAD_GLOBAL_RANK',
  'LAYOUT_ERR_RANK_IN_NO_GROUP', 'LAYOUT_ERR_BAD_PORT', 'LAYOUT_ERR_DUPLICATE_PORT',
  'LAYOUT_ERR_BAD_RECORD_LENGTH', 'LAYOUT_ERR_BAD_WORLD', 'LAYOUT_PORT_RECORD_BYTES',
  'LAYOUT_MAX_WORLD',
  // reduce.ts: op codes are NCCL's ncclRedOp_t
  'REDUCE_SUM', 'REDUCE_PROD', 'REDUCE_MAX', 'REDUCE_MIN', 'REDUCE_AVG',
  'REDUCE_OK', 'REDUCE_ERR_OP', 'REDUCE_ERR_DTYPE', 'REDUCE_ERR_DIVISOR',
] as const;

export type CoreGlobalName = (typeof CORE_GLOBALS)[number];

/** The constants' values, read once from the module. */
export type CoreConstants = { readonly [K in CoreGlobalName]: number };

/** What the module exports, as the wrappers see it. */
export type CoreExports = CoreFunctions & { readonly [K in CoreGlobalName]: WebAssembly.Global } & {
  readonly memory: WebAssembly.Memory;
};

/**
 * What the module lacks (or has with another parameter count) of what is declared here, and,
 * with `undeclared`, what it exports beyond that (runtime internals such as `__new` aside);
 * empty when host and core agree. The loader refuses a module that lacks something; the unit
 * test also refuses undeclared exports, so this file stays the complete list.
 */
export function exportMismatches(raw: Readonly<Record<string, unknown>>, opts: { undeclared?: boolean } = {}): string[] {
  const problems: string[] = [];
  for (const [name, arity] of Object.entries(CORE_FUNCTIONS)) {
    const f = raw[name];
    if (typeof f !== 'function') problems.push(`function ${name} is missing`);
    else if (f.length !== arity) problems.push(`function ${name} takes ${f.length} arguments, the host passes ${arity}`);
  }
  for (const name of CORE_GLOBALS) {
    if (!(raw[name] instanceof WebAssembly.Global)) problems.push(`constant ${name} is missing`);
  }
  if (!(raw.memory instanceof WebAssembly.Memory)) problems.push('memory is missing');
  if (!opts.undeclared) return problems;
  const known = new Set<string>([...Object.keys(CORE_FUNCTIONS), ...CORE_GLOBALS, 'memory']);
  for (const name of Object.keys(raw)) {
    if (!known.has(name) && !name.startsWith('__')) problems.push(`${name} is exported but not declared in host/core/exports.ts`);
  }
  return problems;
}
