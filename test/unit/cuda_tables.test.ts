/**
 * The cuda backend's enum values and koffi declarations against NCCL's and CUDA's public headers.
 * The expected values below were copied by hand from:
 * - nccl.h: NVIDIA/nccl src/nccl.h.in at commit 021e8045ff77a8a9fba909617a0129d3c3d44def
 *   (ncclResult_t, ncclRedOp_t, ncclDataType_t, NCCL_UNIQUE_ID_BYTES, NCCL_API_MAGIC,
 *   NCCL_CONFIG_UNDEF_INT, NCCL_VERSION, ncclConfig_t field order, every prototype);
 * - CUDA 13.0 toolkit include/driver_types.h and cuda_runtime_api.h (cudaError_t values,
 *   cudaMemcpyKind, cudaStreamNonBlocking, cudaEventDisableTiming, runtime prototypes).
 * Nothing here needs a GPU or libnccl: koffi parses declarations without loading a library.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { dtypeInfo } from '../../host/core/dtype.js';
import {
  CUDART_FUNCTIONS, NCCL_FUNCTIONS, NcclDataType, NcclRedOp, NcclResult, NCCL_UNIQUE_ID_BYTES, NCCL_API_MAGIC,
  ncclConfigBytes, ncclVersionCode, ncclVersionString, parsePrototype, ncclReduceArgs,
} from '../../plugins/cuda/index.js';
import { CudaError, CudaMemcpyKind, CUDA_EVENT_DISABLE_TIMING, CUDA_STREAM_NON_BLOCKING, NCCL_CONFIG_UNDEF_INT } from '../../plugins/cuda/transport.js';

test('ncclResult_t values match nccl.h', () => {
  assert.equal({ ...NcclResult }, {
    ncclSuccess: 0, ncclUnhandledCudaError: 1, ncclSystemError: 2, ncclInternalError: 3, ncclInvalidArgument: 4,
    ncclInvalidUsage: 5, ncclRemoteError: 6, ncclInProgress: 7, ncclTimeout: 8,
  });
});

test('ncclRedOp_t values match nccl.h', () => {
  assert.equal({ ...NcclRedOp }, { ncclSum: 0, ncclProd: 1, ncclMax: 2, ncclMin: 3, ncclAvg: 4 });
});

test('ncclDataType_t values match nccl.h, and groupcomm dtype codes 0..11 carry them', () => {
  const header = {
    ncclInt8: 0, ncclUint8: 1, ncclInt32: 2, ncclUint32: 3, ncclInt64: 4, ncclUint64: 5, ncclFloat16: 6,
    ncclFloat32: 7, ncclFloat64: 8, ncclBfloat16: 9, ncclFloat8e4m3: 10, ncclFloat8e5m2: 11,
  };
  assert.equal({ ...NcclDataType }, header);
  const byDtype: Record<string, number> = {
    int8: 0, uint8: 1, int32: 2, uint32: 3, int64: 4, uint64: 5, float16: 6, float32: 7, float64: 8,
    bfloat16: 9, float8_e4m3fn: 10, float8_e5m2: 11, bool: -1, int16: -1,
  };
  for (const [d, v] of Object.entries(byDtype)) assert.is(dtypeInfo(d)!.ncclType, v, d);
});

test('constants match nccl.h: unique id 128 bytes, API magic, UNDEF_INT, NCCL_VERSION', () => {
  assert.is(NCCL_UNIQUE_ID_BYTES, 128);
  assert.is(NCCL_API_MAGIC, 0xcafebeef);
  assert.is(NCCL_CONFIG_UNDEF_INT, -2147483648);
  assert.is(ncclVersionCode(2, 8, 4), 2804);
  assert.is(ncclVersionCode(2, 27, 3), 22703);
  assert.is(ncclVersionString(22703), '2.27.3');
  assert.is(ncclVersionString(22800), '2.28.0');
  assert.is(ncclVersionString(2804), '2.8.4');
});

test('ncclConfig_t bytes follow the 2.14 layout NCCL_CONFIG_INITIALIZER fills', () => {
  // size_t size; unsigned int magic; unsigned int version; int blocking; int cgaClusterSize;
  const b = ncclConfigBytes(false);
  const dv = new DataView(b.buffer);
  assert.is(Number(dv.getBigUint64(0, true)), b.byteLength);
  assert.is(dv.getUint32(8, true), 0xcafebeef);
  assert.is(dv.getUint32(12, true), 21400);
  assert.is(dv.getInt32(16, true), 0);
  assert.is(dv.getInt32(20, true), -2147483648);
  assert.is(new DataView(ncclConfigBytes(true).buffer).getInt32(16, true), 1);
});

test('cudaError_t, cudaMemcpyKind and flag values match the CUDA headers', () => {
  assert.is(CudaError.cudaSuccess, 0);
  assert.is(CudaError.cudaErrorInsufficientDriver, 35);
  assert.is(CudaError.cudaErrorNoDevice, 100);
  assert.is(CudaError.cudaErrorNotReady, 600);
  assert.equal({ ...CudaMemcpyKind }, { HostToHost: 0, HostToDevice: 1, DeviceToHost: 2, DeviceToDevice: 3, Default: 4 });
  assert.is(CUDA_STREAM_NON_BLOCKING, 0x01);
  assert.is(CUDA_EVENT_DISABLE_TIMING, 0x02);
});

// Header prototypes reduced to what the ABI sees: p = pointer (in), o = pointer we read back
// (out-parameter), z = size_t, i = int/enum, u = unsigned int, id = ncclUniqueId by value (128 bytes).
const NCCL_HEADER: Record<string, string> = {
  ncclGetErrorString: 'i',                 // const char* ncclGetErrorString(ncclResult_t result)
  ncclGetLastError: 'p',                   // const char* ncclGetLastError(ncclComm_t comm)
  ncclGetVersion: 'o',                     // ncclResult_t ncclGetVersion(int *version)
  ncclGetUniqueId: 'p',                    // ncclResult_t ncclGetUniqueId(ncclUniqueId* uniqueId)
  ncclCommInitRank: 'o i id i',            // (ncclComm_t* comm, int nranks, ncclUniqueId commId, int rank)
  ncclCommInitRankConfig: 'o i id i p',    // (ncclComm_t* comm, int nranks, ncclUniqueId commId, int rank, ncclConfig_t* config)
  ncclCommSplit: 'p i i o p',              // (ncclComm_t comm, int color, int key, ncclComm_t *newcomm, ncclConfig_t* config)
  ncclAllReduce: 'p p z i i p p',          // (const void* sendbuff, void* recvbuff, size_t count, ncclDataType_t, ncclRedOp_t, ncclComm_t, cudaStream_t)
  ncclAllGather: 'p p z i p p',            // (const void* sendbuff, void* recvbuff, size_t sendcount, ncclDataType_t, ncclComm_t, cudaStream_t)
  ncclReduceScatter: 'p p z i i p p',      // (const void* sendbuff, void* recvbuff, size_t recvcount, ncclDataType_t, ncclRedOp_t, ncclComm_t, cudaStream_t)
  ncclBroadcast: 'p p z i i p p',          // (const void* sendbuff, void* recvbuff, size_t count, ncclDataType_t, int root, ncclComm_t, cudaStream_t)
  ncclReduce: 'p p z i i i p p',           // (const void* sendbuff, void* recvbuff, size_t count, ncclDataType_t, ncclRedOp_t, int root, ncclComm_t, cudaStream_t)
  ncclRedOpCreatePreMulSum: 'o p i i p',  // (ncclRedOp_t *op, void *scalar, ncclDataType_t, ncclScalarResidence_t, ncclComm_t)
  ncclRedOpDestroy: 'i p',                 // (ncclRedOp_t op, ncclComm_t comm)
  ncclSend: 'p z i i p p',                 // (const void* sendbuff, size_t count, ncclDataType_t, int peer, ncclComm_t, cudaStream_t)
  ncclRecv: 'p z i i p p',                 // (void* recvbuff, size_t count, ncclDataType_t, int peer, ncclComm_t, cudaStream_t)
  ncclGroupStart: '',                      // ncclResult_t ncclGroupStart()
  ncclGroupEnd: '',                        // ncclResult_t ncclGroupEnd()
  ncclCommGetAsyncError: 'p o',            // (ncclComm_t comm, ncclResult_t *asyncError)
  ncclCommAbort: 'p',                      // (ncclComm_t comm)
  ncclCommDestroy: 'p',                    // (ncclComm_t comm)
  ncclCommCount: 'p o',                    // (const ncclComm_t comm, int* count)
  ncclCommCuDevice: 'p o',                 // (const ncclComm_t comm, int* device)
  ncclCommUserRank: 'p o',                 // (const ncclComm_t comm, int* rank)
};

const CUDART_HEADER: Record<string, string> = {
  cudaGetDeviceCount: 'o', cudaSetDevice: 'i', cudaGetDevice: 'o', cudaMalloc: 'o z', cudaFree: 'p',
  cudaMemset: 'p i z', cudaMemcpy: 'p p z i', cudaMemcpyAsync: 'p p z i p', cudaStreamCreateWithFlags: 'o u',
  cudaStreamSynchronize: 'p', cudaStreamQuery: 'p', cudaStreamGetDevice: 'p o', cudaStreamDestroy: 'p', cudaEventCreateWithFlags: 'o u', cudaEventRecord: 'p p',
  cudaEventQuery: 'p', cudaEventDestroy: 'p', cudaGetErrorString: 'i', cudaGetErrorName: 'i',
  cudaRuntimeGetVersion: 'o', cudaDriverGetVersion: 'o',
  cudaDeviceGetAttribute: 'o i i',
  cudaPointerGetAttributes: 'p p', // (cudaPointerAttributes* attributes, const void* ptr): we read the buffer we pass
};

function shape(decl: string): string {
  return parsePrototype(decl).args.map((a) => {
    if (a.primitive === 'Pointer') return a.direction === 'Input' ? 'p' : 'o';
    if (a.primitive === 'UInt64' && a.size === 8) return 'z';
    if (a.primitive === 'Int32') return 'i';
    if (a.primitive === 'UInt32') return 'u';
    if (a.primitive === 'Record' && a.size === 128) return 'id';
    return `?${a.primitive}${a.size}`;
  }).join(' ');
}

test('every NCCL declaration has the argument kinds of its nccl.h prototype', () => {
  assert.equal(NCCL_FUNCTIONS.map((f) => f.name).sort(), Object.keys(NCCL_HEADER).sort());
  for (const f of NCCL_FUNCTIONS) {
    assert.is(shape(f.decl), NCCL_HEADER[f.name], f.name);
    assert.is(parsePrototype(f.decl).name, f.name);
  }
});

test('every CUDA runtime declaration has the argument kinds of its header prototype', () => {
  assert.equal(CUDART_FUNCTIONS.map((f) => f.name).sort(), Object.keys(CUDART_HEADER).sort());
  for (const f of CUDART_FUNCTIONS) assert.is(shape(f.decl), CUDART_HEADER[f.name], f.name);
});

test('results are int (ncclResult_t / cudaError_t) except the error-string functions (and ncclGetLastError)', () => {
  for (const f of [...NCCL_FUNCTIONS, ...CUDART_FUNCTIONS]) {
    const r = parsePrototype(f.decl).result.primitive;
    assert.is(r, /ErrorString|ErrorName|LastError/.test(f.name) ? 'String' : 'Int32', f.name);
  }
});

test('reductions map to NCCL types and ops; bool reduces as uint8 OR/AND; int16 and avg on bool are refused', () => {
  assert.equal(ncclReduceArgs('float32', 'sum'), { type: 7, op: 0 });
  assert.equal(ncclReduceArgs('bfloat16', 'avg'), { type: 9, op: 4 });
  assert.equal(ncclReduceArgs('bool', 'sum'), { type: 1, op: 2 });
  assert.equal(ncclReduceArgs('bool', 'prod'), { type: 1, op: 3 });
  assert.throws(() => ncclReduceArgs('int16', 'sum'), (e: any) => e.code === 'ERR_GROUPCOMM_INVALID_ARGUMENT');
  assert.equal(ncclReduceArgs('int32', 'avg'), { type: 2, op: 4 });
  assert.throws(() => ncclReduceArgs('bool', 'avg'), (e: any) => e.code === 'ERR_GROUPCOMM_INVALID_ARGUMENT');
});

test.run();
