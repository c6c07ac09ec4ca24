// The cuda plugin against the conformance suite over the test double in strict mode
// (GCDOUBLE_STRICT=1): work on the legacy default stream (cudaMemset, a pageable host-to-device
// cudaMemcpy) runs only when something synchronises with that stream, as late as CUDA allows,
// so a plugin that does not order its fills and copies before NCCL's stream gets wrong results.
// World sizes 1 to 4.
import { suite, test } from 'uvu';
import * as assert from 'uvu/assert';
import { defineConformance } from 'groupcomm/conformance';
import { CudaBackend } from '../../plugins/cuda/index.js';
import { useCudaDouble } from '../cuda-double/build.js';

const d = useCudaDouble({ GCDOUBLE_STRICT: '1' });
if ('skip' in d) console.log(`# ${d.skip}`);
const t = 'skip' in d ? test.skip : test;
t('the cuda plugin probes the strict test double as available (else the suite below would only skip)', async () => {
  assert.equal(await new CudaBackend().probe(), { available: true });
});
test.run();
if (!('skip' in d)) await defineConformance({ plugin: 'cuda', worldSizes: [1, 2, 3, 4] }, { suite });
