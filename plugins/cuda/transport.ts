/**
 * The native side of the cuda backend: where libcudart and libnccl are found, how they are
 * loaded, and the one table of their functions that groupcomm calls (the C prototype from the
 * library's public header quoted above each koffi declaration), with the enum values from
 * nccl.h / cuda_runtime_api.h / driver_types.h.
 *
 * Loading is careful, in the spirit of vLLM's nccl integrity check: `probeLibraries` first
 * loads both libraries and asks for the device count in a child process with a timeout, so a
 * missing driver, a broken install or a hanging driver never takes this process down; only a
 * library that passed the probe is loaded in-process (cached per path).
 */
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { setting } from 'groupcomm/plugin';

const require = createRequire(import.meta.url);

// ---- enums (values from the public headers; test/unit/cuda_tables.test.ts pins them) --------

/** ncclResult_t (nccl.h). */
export const NcclResult = {
  ncclSuccess: 0, ncclUnhandledCudaError: 1, ncclSystemError: 2, ncclInternalError: 3,
  ncclInvalidArgument: 4, ncclInvalidUsage: 5, ncclRemoteError: 6, ncclInProgress: 7, ncclTimeout: 8,
} as const;

/** ncclRedOp_t (nccl.h). */
export const NcclRedOp = { ncclSum: 0, ncclProd: 1, ncclMax: 2, ncclMin: 3, ncclAvg: 4 } as const;

/** ncclScalarResidence_t (nccl.h): where ncclRedOpCreatePreMulSum's scalar lives; HostImmediate is read before the call returns. */
export const NcclScalarResidence = { ncclScalarDevice: 0, ncclScalarHostImmediate: 1 } as const;

/** ncclDataType_t (nccl.h; the fp8 types since NCCL 2.24). groupcomm dtype codes 0..11 equal these. */
export const NcclDataType = {
  ncclInt8: 0, ncclUint8: 1, ncclInt32: 2, ncclUint32: 3, ncclInt64: 4, ncclUint64: 5,
  ncclFloat16: 6, ncclFloat32: 7, ncclFloat64: 8, ncclBfloat16: 9, ncclFloat8e4m3: 10, ncclFloat8e5m2: 11,
} as const;

export const NCCL_UNIQUE_ID_BYTES = 128;
/** NCCL_API_MAGIC (nccl.h), the `magic` field NCCL_CONFIG_INITIALIZER writes into ncclConfig_t. */
export const NCCL_API_MAGIC = 0xcafebeef;
/** NCCL_CONFIG_UNDEF_INT = INT_MIN. */
export const NCCL_CONFIG_UNDEF_INT = -2147483648;

/** NCCL_VERSION(X,Y,Z) from nccl.h: the code scheme changed after 2.8. */
export function ncclVersionCode(x: number, y: number, z: number): number {
  return x <= 2 && y <= 8 ? x * 1000 + y * 100 + z : x * 10000 + y * 100 + z;
}

/** "2.27.3" from 22703 (and "2.8.4" from 2804, which vLLM's parser gets wrong). */
export function ncclVersionString(code: number): string {
  if (code < 10000) return `${Math.floor(code / 1000)}.${Math.floor(code / 100) % 10}.${code % 100}`;
  return `${Math.floor(code / 10000)}.${Math.floor(code / 100) % 100}.${code % 100}`;
}

/**
 * ncclConfig_t as of NCCL 2.14 (the first version with ncclCommInitRankConfig): size_t size;
 * unsigned magic; unsigned version; int blocking; then cgaClusterSize (2.17) padding the struct
 * to 24 bytes. NCCL copies min(size, its own sizeof) bytes and, for a `version` below 2.17,
 * resets every later field to its default, so this short layout stays valid on newer NCCL.
 */
export const NCCL_CONFIG_V2_14_BYTES = 24;
export function ncclConfigBytes(blocking: boolean): Uint8Array {
  const b = new Uint8Array(NCCL_CONFIG_V2_14_BYTES);
  const dv = new DataView(b.buffer);
  dv.setBigUint64(0, BigInt(NCCL_CONFIG_V2_14_BYTES), true); // size
  dv.setUint32(8, NCCL_API_MAGIC, true);                      // magic
  dv.setUint32(12, ncclVersionCode(2, 14, 0), true);          // version
  dv.setInt32(16, blocking ? 1 : 0, true);                    // blocking
  dv.setInt32(20, NCCL_CONFIG_UNDEF_INT, true);               // cgaClusterSize
  return b;
}

/** cudaMemoryType (driver_types.h): what cudaPointerGetAttributes says a pointer is. */
export const CudaMemoryType = { Unregistered: 0, Host: 1, Device: 2, Managed: 3 } as const;
/** Bytes handed to cudaPointerGetAttributes: the struct is 24 bytes; room for fields a later CUDA adds. */
export const CUDA_POINTER_ATTRIBUTES_BYTES = 128;
/** NCCL_VERSION(2,14,0): the oldest NCCL groupcomm drives (ncclCommInitRankConfig, non-blocking init). */
export const NCCL_MIN_VERSION = 21400;
/** NCCL_VERSION(2,18,0): the first NCCL with ncclCommSplit. */
export const NCCL_SPLIT_VERSION = 21800;
/** NCCL_VERSION(2,24,0): the first NCCL with fp8 (ncclFloat8e4m3, ncclFloat8e5m2) reductions, on sm_90 and later. */
export const NCCL_FP8_VERSION = 22400;
/** cudaDevAttrComputeCapabilityMajor (driver_types.h). */
export const CUDA_DEV_ATTR_COMPUTE_CAPABILITY_MAJOR = 75;

/** cudaError_t values groupcomm names (driver_types.h). */
export const CudaError = {
  cudaSuccess: 0, cudaErrorInvalidValue: 1, cudaErrorMemoryAllocation: 2, cudaErrorInitializationError: 3,
  cudaErrorInsufficientDriver: 35, cudaErrorNoDevice: 100, cudaErrorInvalidDevice: 101, cudaErrorNotReady: 600,
} as const;

/** cudaMemcpyKind (driver_types.h). */
export const CudaMemcpyKind = { HostToHost: 0, HostToDevice: 1, DeviceToHost: 2, DeviceToDevice: 3, Default: 4 } as const;
/** cudaStreamNonBlocking: do not synchronise with the legacy default stream. */
export const CUDA_STREAM_NON_BLOCKING = 0x01;
/** cudaEventDisableTiming: the cheapest event, used only to poll for completion. */
export const CUDA_EVENT_DISABLE_TIMING = 0x02;

// ---- the function table ---------------------------------------------------------------------
// Handles (cudaStream_t, cudaEvent_t, ncclComm_t) and device pointers are `void *` (BigInt in
// koffi 3). Out-parameters holding a handle are `_Out_ void **` (pass `[null]`, read `[0]`).

export interface Binding { name: string; decl: string; optional?: boolean }

export const CUDART_FUNCTIONS: readonly Binding[] = [
  // cudaError_t cudaGetDeviceCount(int* count)
  { name: 'cudaGetDeviceCount', decl: 'int cudaGetDeviceCount(_Out_ int *count)' },
  // cudaError_t cudaSetDevice(int device)
  { name: 'cudaSetDevice', decl: 'int cudaSetDevice(int device)' },
  // cudaError_t cudaGetDevice(int* device)
  { name: 'cudaGetDevice', decl: 'int cudaGetDevice(_Out_ int *device)' },
  // cudaError_t cudaMalloc(void** devPtr, size_t size)
  { name: 'cudaMalloc', decl: 'int cudaMalloc(_Out_ void **devPtr, size_t size)' },
  // cudaError_t cudaFree(void* devPtr)
  { name: 'cudaFree', decl: 'int cudaFree(void *devPtr)' },
  // cudaError_t cudaMemset(void* devPtr, int value, size_t count)
  { name: 'cudaMemset', decl: 'int cudaMemset(void *devPtr, int value, size_t count)' },
  // cudaError_t cudaMemcpy(void* dst, const void* src, size_t count, cudaMemcpyKind kind)
  { name: 'cudaMemcpy', decl: 'int cudaMemcpy(void *dst, const void *src, size_t count, int kind)' },
  // cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t count, cudaMemcpyKind kind, cudaStream_t stream)
  { name: 'cudaMemcpyAsync', decl: 'int cudaMemcpyAsync(void *dst, const void *src, size_t count, int kind, void *stream)' },
  // cudaError_t cudaStreamCreateWithFlags(cudaStream_t* pStream, unsigned int flags)
  { name: 'cudaStreamCreateWithFlags', decl: 'int cudaStreamCreateWithFlags(_Out_ void **pStream, unsigned int flags)' },
  // cudaError_t cudaStreamSynchronize(cudaStream_t stream)
  { name: 'cudaStreamSynchronize', decl: 'int cudaStreamSynchronize(void *stream)' },
  // cudaError_t cudaStreamQuery(cudaStream_t stream)   (cudaSuccess when idle, cudaErrorNotReady while busy)
  { name: 'cudaStreamQuery', decl: 'int cudaStreamQuery(void *stream)' },
  // cudaError_t cudaStreamGetDevice(cudaStream_t hStream, int* device)   (CUDA >= 12.8)
  { name: 'cudaStreamGetDevice', decl: 'int cudaStreamGetDevice(void *stream, _Out_ int *device)', optional: true },
  // cudaError_t cudaStreamDestroy(cudaStream_t stream)
  { name: 'cudaStreamDestroy', decl: 'int cudaStreamDestroy(void *stream)' },
  // cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned int flags)
  { name: 'cudaEventCreateWithFlags', decl: 'int cudaEventCreateWithFlags(_Out_ void **event, unsigned int flags)' },
  // cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream)
  { name: 'cudaEventRecord', decl: 'int cudaEventRecord(void *event, void *stream)' },
  // cudaError_t cudaEventQuery(cudaEvent_t event)
  { name: 'cudaEventQuery', decl: 'int cudaEventQuery(void *event)' },
  // cudaError_t cudaEventDestroy(cudaEvent_t event)
  { name: 'cudaEventDestroy', decl: 'int cudaEventDestroy(void *event)' },
  // const char* cudaGetErrorString(cudaError_t error)
  { name: 'cudaGetErrorString', decl: 'const char *cudaGetErrorString(int error)' },
  // const char* cudaGetErrorName(cudaError_t error)
  { name: 'cudaGetErrorName', decl: 'const char *cudaGetErrorName(int error)' },
  // cudaError_t cudaRuntimeGetVersion(int* runtimeVersion)
  { name: 'cudaRuntimeGetVersion', decl: 'int cudaRuntimeGetVersion(_Out_ int *runtimeVersion)' },
  // cudaError_t cudaDriverGetVersion(int* driverVersion)
  { name: 'cudaDriverGetVersion', decl: 'int cudaDriverGetVersion(_Out_ int *driverVersion)' },
  // cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device)
  { name: 'cudaDeviceGetAttribute', decl: 'int cudaDeviceGetAttribute(_Out_ int *value, int attr, int device)' },
  // cudaError_t cudaPointerGetAttributes(cudaPointerAttributes* attributes, const void* ptr)
  // (struct: enum cudaMemoryType type; int device; void *devicePointer; void *hostPointer; …)
  { name: 'cudaPointerGetAttributes', decl: 'int cudaPointerGetAttributes(void *attributes, const void *ptr)' },
];

export const NCCL_FUNCTIONS: readonly Binding[] = [
  // const char* ncclGetErrorString(ncclResult_t result)
  { name: 'ncclGetErrorString', decl: 'const char *ncclGetErrorString(int result)' },
  // const char* ncclGetLastError(ncclComm_t comm)   (NCCL >= 2.13; the text behind the last error)
  { name: 'ncclGetLastError', decl: 'const char *ncclGetLastError(void *comm)', optional: true },
  // ncclResult_t ncclGetVersion(int *version)
  { name: 'ncclGetVersion', decl: 'int ncclGetVersion(_Out_ int *version)' },
  // ncclResult_t ncclGetUniqueId(ncclUniqueId* uniqueId)   (caller passes a 128-byte buffer)
  { name: 'ncclGetUniqueId', decl: 'int ncclGetUniqueId(void *uniqueId)' },
  // ncclResult_t ncclCommInitRank(ncclComm_t* comm, int nranks, ncclUniqueId commId, int rank)
  { name: 'ncclCommInitRank', decl: 'int ncclCommInitRank(_Out_ void **comm, int nranks, ncclUniqueId commId, int rank)' },
  // ncclResult_t ncclCommInitRankConfig(ncclComm_t* comm, int nranks, ncclUniqueId commId, int rank, ncclConfig_t* config)   (NCCL >= 2.14)
  { name: 'ncclCommInitRankConfig', decl: 'int ncclCommInitRankConfig(_Out_ void **comm, int nranks, ncclUniqueId commId, int rank, void *config)', optional: true },
  // ncclResult_t ncclCommSplit(ncclComm_t comm, int color, int key, ncclComm_t *newcomm, ncclConfig_t* config)   (NCCL >= 2.18)
  { name: 'ncclCommSplit', decl: 'int ncclCommSplit(void *comm, int color, int key, _Out_ void **newcomm, void *config)', optional: true },
  // ncclResult_t ncclAllReduce(const void* sendbuff, void* recvbuff, size_t count, ncclDataType_t datatype, ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream)
  { name: 'ncclAllReduce', decl: 'int ncclAllReduce(const void *sendbuff, void *recvbuff, size_t count, int datatype, int op, void *comm, void *stream)' },
  // ncclResult_t ncclAllGather(const void* sendbuff, void* recvbuff, size_t sendcount, ncclDataType_t datatype, ncclComm_t comm, cudaStream_t stream)
  { name: 'ncclAllGather', decl: 'int ncclAllGather(const void *sendbuff, void *recvbuff, size_t sendcount, int datatype, void *comm, void *stream)' },
  // ncclResult_t ncclReduceScatter(const void* sendbuff, void* recvbuff, size_t recvcount, ncclDataType_t datatype, ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream)
  { name: 'ncclReduceScatter', decl: 'int ncclReduceScatter(const void *sendbuff, void *recvbuff, size_t recvcount, int datatype, int op, void *comm, void *stream)' },
  // ncclResult_t ncclBroadcast(const void* sendbuff, void* recvbuff, size_t count, ncclDataType_t datatype, int root, ncclComm_t comm, cudaStream_t stream)
  { name: 'ncclBroadcast', decl: 'int ncclBroadcast(const void *sendbuff, void *recvbuff, size_t count, int datatype, int root, void *comm, void *stream)' },
  // ncclResult_t ncclReduce(const void* sendbuff, void* recvbuff, size_t count, ncclDataType_t datatype, ncclRedOp_t op, int root, ncclComm_t comm, cudaStream_t stream)
  { name: 'ncclReduce', decl: 'int ncclReduce(const void *sendbuff, void *recvbuff, size_t count, int datatype, int op, int root, void *comm, void *stream)' },
  // ncclResult_t ncclRedOpCreatePreMulSum(ncclRedOp_t *op, void *scalar, ncclDataType_t datatype, ncclScalarResidence_t residence, ncclComm_t comm)   (NCCL >= 2.11)
  { name: 'ncclRedOpCreatePreMulSum', decl: 'int ncclRedOpCreatePreMulSum(_Out_ int *op, void *scalar, int datatype, int residence, void *comm)', optional: true },
  // ncclResult_t ncclRedOpDestroy(ncclRedOp_t op, ncclComm_t comm)   (NCCL >= 2.11)
  { name: 'ncclRedOpDestroy', decl: 'int ncclRedOpDestroy(int op, void *comm)', optional: true },
  // ncclResult_t ncclSend(const void* sendbuff, size_t count, ncclDataType_t datatype, int peer, ncclComm_t comm, cudaStream_t stream)
  { name: 'ncclSend', decl: 'int ncclSend(const void *sendbuff, size_t count, int datatype, int peer, void *comm, void *stream)' },
  // ncclResult_t ncclRecv(void* recvbuff, size_t count, ncclDataType_t datatype, int peer, ncclComm_t comm, cudaStream_t stream)
  { name: 'ncclRecv', decl: 'int ncclRecv(void *recvbuff, size_t count, int datatype, int peer, void *comm, void *stream)' },
  // ncclResult_t ncclGroupStart()
  { name: 'ncclGroupStart', decl: 'int ncclGroupStart()' },
  // ncclResult_t ncclGroupEnd()
  { name: 'ncclGroupEnd', decl: 'int ncclGroupEnd()' },
  // ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t *asyncError)
  { name: 'ncclCommGetAsyncError', decl: 'int ncclCommGetAsyncError(void *comm, _Out_ int *asyncError)' },
  // ncclResult_t ncclCommAbort(ncclComm_t comm)
  { name: 'ncclCommAbort', decl: 'int ncclCommAbort(void *comm)' },
  // ncclResult_t ncclCommDestroy(ncclComm_t comm)
  { name: 'ncclCommDestroy', decl: 'int ncclCommDestroy(void *comm)' },
  // ncclResult_t ncclCommCount(const ncclComm_t comm, int* count)
  { name: 'ncclCommCount', decl: 'int ncclCommCount(void *comm, _Out_ int *count)' },
  // ncclResult_t ncclCommCuDevice(const ncclComm_t comm, int* device)
  { name: 'ncclCommCuDevice', decl: 'int ncclCommCuDevice(void *comm, _Out_ int *device)' },
  // ncclResult_t ncclCommUserRank(const ncclComm_t comm, int* rank)
  { name: 'ncclCommUserRank', decl: 'int ncclCommUserRank(void *comm, _Out_ int *rank)' },
];

// ---- koffi ------------------------------------------------------------------------------------

type Koffi = typeof import('koffi');
let koffiMod: Koffi | undefined;

/** koffi is an optional dependency of groupcomm (TCP-only users need no native addon). */
const KOFFI_MISSING = "koffi is not installed (groupcomm's optional dependency for the cuda backend and shared memory; `npm install koffi` enables it)";

/** koffi, loaded on first use so that merely importing the plugin needs no native addon. */
export function koffi(): Koffi {
  if (!koffiMod) {
    try { require.resolve('koffi'); } catch { throw new Error(KOFFI_MISSING); }
    koffiMod = require('koffi') as Koffi;
    // typedef struct { char internal[NCCL_UNIQUE_ID_BYTES]; } ncclUniqueId;  (passed by value)
    // Registered by name so that declarations can say `ncclUniqueId commId`.
    koffiMod.struct('ncclUniqueId', { internal: koffiMod.array('uint8_t', NCCL_UNIQUE_ID_BYTES, 'Typed') });
  }
  return koffiMod;
}

export interface ParsedPrototype {
  name: string;
  result: { primitive: string; size: number };
  args: { primitive: string; size: number; direction: string }[];
}

/** What koffi makes of a declaration, without loading any library (tests check the table with it). */
const parsed = new Map<string, ParsedPrototype>();
export function parsePrototype(decl: string): ParsedPrototype {
  const hit = parsed.get(decl);
  if (hit) return hit; // koffi.proto registers the name: a second declaration would clash
  koffi();
  type T = { primitive: string; size: number };
  const t = koffiMod!.proto(decl) as unknown as { proto: { name: string; result: T; arguments: { type: T; direction: string }[] } };
  const p: ParsedPrototype = {
    name: t.proto.name,
    result: { primitive: t.proto.result.primitive, size: t.proto.result.size },
    args: t.proto.arguments.map((a) => ({ primitive: a.type.primitive, size: a.type.size, direction: a.direction })),
  };
  parsed.set(decl, p);
  return p;
}

// ---- discovery ----------------------------------------------------------------------------------

export type LibKind = 'nccl' | 'cudart';

const SONAMES: Record<LibKind, string[]> = {
  nccl: ['libnccl.so.2'],
  cudart: ['libcudart.so.13', 'libcudart.so.12'],
};
const ENV = { nccl: 'GROUPCOMM_NCCL_PATH', cudart: 'GROUPCOMM_CUDART_PATH' } as const;
// Folders pip wheels install into, relative to site-packages (nvidia-nccl-cu12/13,
// nvidia-cuda-runtime-cu12, and the CUDA 13 wheels that share nvidia/cu13/lib).
const PIP_DIRS: Record<LibKind, string[]> = {
  nccl: ['nvidia/nccl/lib', 'nvidia/cu13/lib'],
  cudart: ['nvidia/cuda_runtime/lib', 'nvidia/cu13/lib'],
};

// Keyed by PATH: asking python is slow (tens of ms), and PATH rarely changes within a process.
const sitePackagesCache = new Map<string, string[]>();

/** site-packages folders of every distinct python3 on `searchPath` (each asked with a 5 s timeout). */
export function pythonSitePackages(searchPath = process.env.PATH ?? ''): string[] {
  const hit = sitePackagesCache.get(searchPath);
  if (hit) return hit;
  const seen = new Set<string>();
  const out: string[] = [];
  for (const dir of searchPath.split(path.delimiter)) {
    const exe = path.join(dir || '.', 'python3');
    let real: string;
    try { real = fs.realpathSync(exe); fs.accessSync(real, fs.constants.X_OK); } catch { continue; }
    // Two PATH entries can lead to one interpreter (symlinks); ask each interpreter once.
    if (seen.has(real)) continue;
    seen.add(real);
    try {
      const txt = execFileSync(exe, ['-c',
        'import json,site,sys\nd=list(getattr(site,"getsitepackages",lambda:[])())\n' +
        'u=site.getusersitepackages()\nd.append(u) if isinstance(u,str) else None\nprint(json.dumps(d))'],
      { timeout: 5_000, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
      for (const p of JSON.parse(txt.trim().split('\n').pop() ?? '[]') as string[]) if (!out.includes(p)) out.push(p);
    } catch { /* a broken python is just one place fewer to look */ }
  }
  sitePackagesCache.set(searchPath, out);
  return out;
}

/** Where to look for a library, in order; an env override is the only candidate when set. */
export function libraryCandidates(kind: LibKind, env: NodeJS.ProcessEnv = process.env): { candidates: string[]; override?: string } {
  const forced = setting(ENV[kind], env);
  if (forced) return { candidates: [forced], override: ENV[kind] };
  const c: string[] = [];
  for (const sp of pythonSitePackages(env.PATH ?? '')) {
    for (const d of PIP_DIRS[kind]) for (const so of SONAMES[kind]) {
      const p = path.join(sp, d, so);
      if (fs.existsSync(p)) c.push(p);
    }
  }
  c.push(...SONAMES[kind]); // finally the system loader (ldconfig, LD_LIBRARY_PATH)
  return { candidates: c };
}

/** "libnccl.so.2 not found (tried: …); set GROUPCOMM_NCCL_PATH" and its kin. */
export function notFoundMessage(kind: LibKind, tried: { path: string; error: string }[]): string {
  const what = SONAMES[kind].join(' / ');
  const list = tried.map((t) => `${t.path}: ${t.error}`).join('; ');
  return `${what} not found (tried: ${list}); set ${ENV[kind]} to the library's path` +
    (kind === 'nccl' ? ' or pip install nvidia-nccl-cu13 (or -cu12)' : '');
}

// ---- probing in a child process -----------------------------------------------------------------

export interface ProbeReport {
  cudart?: {
    path: string; runtimeVersion: number; driverVersion: number; deviceCountRc: number; deviceCount: number; errName: string; errString: string;
    /** Compute capability (major) of each device, where the runtime answered. */
    ccMajor?: number[];
  };
  cudartTried: { path: string; error: string }[];
  nccl?: { path: string; version: number };
  ncclTried: { path: string; error: string }[];
}

// Runs in the child: plain CommonJS so that `node -e` and `bun -e` both take it.
const CHILD = `
const koffi = require(process.env.GC_KOFFI);
const c = JSON.parse(process.env.GC_CANDIDATES);
const out = { cudartTried: [], ncclTried: [] };
const tryLoad = (list, tried) => { for (const p of list) { try { return [p, koffi.load(p)]; } catch (e) { tried.push({ path: p, error: String(e.message || e).split('\\n')[0] }); } } return [undefined, undefined]; };
// A runtime the driver cannot run (cudaErrorInsufficientDriver and kin) is passed over for the
// next candidate: an older runtime further down the list may work. cudaErrorNoDevice is an answer
// about the machine, not the runtime, so it ends the search.
for (let i = 0; i < c.cudart.length; i++) {
  const [cp, cl] = tryLoad(c.cudart.slice(i, i + 1), out.cudartTried);
  if (!cl) continue;
  const v = [0], d = [0], n = [0];
  cl.func('int cudaRuntimeGetVersion(_Out_ int *v)')(v);
  cl.func('int cudaDriverGetVersion(_Out_ int *v)')(d);
  const rc = cl.func('int cudaGetDeviceCount(_Out_ int *n)')(n);
  const seen = { path: cp, runtimeVersion: v[0], driverVersion: d[0], deviceCountRc: rc, deviceCount: rc === 0 ? n[0] : 0,
    errName: cl.func('const char *cudaGetErrorName(int e)')(rc), errString: cl.func('const char *cudaGetErrorString(int e)')(rc) };
  if (rc === 0) {
    try {
      const ga = cl.func('int cudaDeviceGetAttribute(_Out_ int *v, int attr, int dev)');
      seen.ccMajor = [];
      for (let dev = 0; dev < seen.deviceCount; dev++) { const m = [0]; if (ga(m, 75, dev) === 0) seen.ccMajor.push(m[0]); }
    } catch { /* no attribute: no fp8 */ }
  }
  if (!out.cudart || rc === 0 || rc === 100) out.cudart = seen;
  if (rc === 0 || rc === 100) break;
  out.cudartTried.push({ path: cp, error: seen.errName + ' (' + rc + ') from cudaGetDeviceCount, runtime ' + v[0] + ', driver ' + d[0] });
}
const [np, nl] = tryLoad(c.nccl, out.ncclTried);
if (nl) { const v = [0]; nl.func('int ncclGetVersion(_Out_ int *v)')(v); out.nccl = { path: np, version: v[0] }; }
process.stdout.write('@@PROBE ' + JSON.stringify(out) + '\\n');
`;

/** Loads both libraries in a child process and reports what it saw; never throws. */
export function probeLibraries(
  timeoutMs = setting('GROUPCOMM_CUDA_PROBE_TIMEOUT_MS'),
  candidates: Record<LibKind, string[]> = { nccl: libraryCandidates('nccl').candidates, cudart: libraryCandidates('cudart').candidates },
): Promise<ProbeReport | { error: string }> {
  let koffiPath: string;
  try { koffiPath = require.resolve('koffi'); } catch { return Promise.resolve({ error: KOFFI_MISSING }); }
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['-e', CHILD], {
      env: { ...process.env, GC_KOFFI: koffiPath, GC_CANDIDATES: JSON.stringify(candidates) },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '', err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', (e) => { clearTimeout(timer); resolve({ error: `could not start the probe process: ${e.message}` }); });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const line = out.split('\n').find((l) => l.startsWith('@@PROBE '));
      if (line) return resolve(JSON.parse(line.slice(8)) as ProbeReport);
      if (signal === 'SIGKILL') return resolve({ error: `probing the CUDA libraries did not finish within ${timeoutMs}ms (driver hang?); set GROUPCOMM_CUDA_PROBE_TIMEOUT_MS to wait longer` });
      resolve({ error: `the CUDA probe process failed (exit ${code}${signal ? ', ' + signal : ''}): ${err.trim().split('\n').slice(-3).join(' | ')}` });
    });
  });
}

// ---- in-process libraries -----------------------------------------------------------------------

export type Fn = ((...args: any[]) => any) & { async: (...args: any[]) => void };
export type FnTable = Record<string, Fn>;

const libCache = new Map<string, FnTable>();

/** Loads `file` once per path and declares `table` on it; optional symbols may be absent. */
export function bindLibrary(file: string, table: readonly Binding[]): FnTable {
  const hit = libCache.get(file);
  if (hit) return hit;
  const k = koffi();
  const lib = k.load(file);
  const fns: FnTable = {};
  for (const b of table) {
    try {
      fns[b.name] = lib.func(b.decl) as unknown as Fn;
    } catch (e) {
      if (!b.optional) throw new Error(`${file} lacks ${b.name} (${(e as Error).message})`);
    }
  }
  libCache.set(file, fns);
  return fns;
}

// ---- a call on a detached native thread -------------------------------------------------------

interface Detacher { dlopen: Fn; dlsym: Fn; create: Fn; detach: Fn }
let detacher: Detacher | null | undefined;

/** dlopen/dlsym/pthread_create/pthread_detach from the C library (glibc 2.34+ has them all in libc). */
function loadDetacher(): Detacher | null {
  if (detacher !== undefined) return detacher;
  try {
    const k = koffi();
    const open = (names: string[]) => { for (const n of names) { try { return k.load(n); } catch { /* next */ } } throw new Error(`none of ${names.join(', ')}`); };
    const libc = open(['libc.so.6']);
    const dl = (() => { try { libc.func('void *dlsym(void *handle, const char *name)'); return libc; } catch { return open(['libdl.so.2']); } })();
    const pt = (() => { try { libc.func('int pthread_detach(uint64_t thread)'); return libc; } catch { return open(['libpthread.so.0']); } })();
    detacher = {
      dlopen: dl.func('void *dlopen(const char *file, int mode)') as unknown as Fn,
      dlsym: dl.func('void *dlsym(void *handle, const char *name)') as unknown as Fn,
      create: pt.func('int pthread_create(void *thread, void *attr, void *start, void *arg)') as unknown as Fn,
      detach: pt.func('int pthread_detach(uint64_t thread)') as unknown as Fn,
    };
  } catch {
    detacher = null;
  }
  return detacher;
}

const RTLD_LAZY = 0x1, RTLD_NOLOAD = 0x4;

/**
 * Runs `symbol(arg)` of the already loaded library `file` on a new, detached native thread and
 * returns at once (false when that cannot be arranged; the caller then calls it another way).
 * For ncclCommAbort: on koffi's thread pool a stuck abort keeps Node's event loop, hence the
 * process, alive until it returns; a detached thread ends with the process. The function must
 * take one pointer (its result is ignored): the pthread start-routine convention.
 */
export function callDetached(file: string, symbol: string, arg: bigint): boolean {
  const d = loadDetacher();
  if (!d) return false;
  const handle = d.dlopen(file, RTLD_LAZY | RTLD_NOLOAD);
  if (!handle) return false;
  const fn = d.dlsym(handle, symbol);
  if (!fn) return false;
  const tid = new BigUint64Array(1);
  if (d.create(tid, null, fn, arg) !== 0) return false;
  d.detach(tid[0]);
  return true;
}
