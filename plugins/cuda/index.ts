/**
 * The cuda backend (NCCL through koffi). `resolveBackend('cuda')` or GROUPCOMM_DEVICE_PLUGIN=cuda
 * selects it; library locations: GROUPCOMM_NCCL_PATH, GROUPCOMM_CUDART_PATH, then pip's
 * nvidia/* folders of any python3 on PATH, then the system loader.
 */
import { CudaBackend } from './backend.js';

export { CudaBackend, fp8Reduces, probeReasons } from './backend.js';
export { CudaCommunicator, CUDA_FP8_REDUCE_DTYPES, CUDA_REDUCE_DTYPES, ncclReduceArgs, type CudaOpOptions, type CudaStream } from './communicator.js';
export { CudaRuntime } from './memory.js';
export {
  CUDART_FUNCTIONS, NCCL_FUNCTIONS, NcclDataType, NcclRedOp, NcclResult, NCCL_UNIQUE_ID_BYTES, NCCL_API_MAGIC,
  ncclConfigBytes, ncclVersionCode, ncclVersionString, libraryCandidates, probeLibraries, parsePrototype,
} from './transport.js';

export const backend = new CudaBackend();
export default backend;
