// The cuda plugin against the whole conformance suite without a GPU: libcudart and libnccl are
// the test double (test/cuda-double, built here with the system C compiler), loaded through the
// plugin's normal discovery (GROUPCOMM_CUDART_PATH / GROUPCOMM_NCCL_PATH). World sizes 1 and 2;
// cuda_double_ws34 runs 3 and 4, cuda_double_strict the strict mode.
import { cudaDoubleConformance } from '../cuda-double/conformance.js';

await cudaDoubleConformance([1, 2]);
