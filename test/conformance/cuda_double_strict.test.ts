// The cuda plugin against the conformance suite over the test double in strict mode
// (GCDOUBLE_STRICT=1): work on the legacy default stream (cudaMemset, a pageable host-to-device
// cudaMemcpy) runs only when something synchronises with that stream, as late as CUDA allows,
// so a plugin that does not order its fills and copies before NCCL's stream gets wrong results.
// World sizes 1 to 4.
import { cudaDoubleConformance } from '../cuda-double/conformance.js';

await cudaDoubleConformance([1, 2, 3, 4], { GCDOUBLE_STRICT: '1' }, 'the strict test double');
