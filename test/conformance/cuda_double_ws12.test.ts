// The cuda plugin against the whole conformance suite without a GPU: libcudart and libnccl are
// the test double (test/cuda-double, built here with the system C compiler), loaded through the
// plugin's normal discovery (GROUPCOMM_CUDART_PATH / GROUPCOMM_NCCL_PATH). World sizes 1 and 2;
// cuda_double_ws34 runs 3 and 4, cuda_double_strict the strict mode.
import { suite, test } from 'uvu';
import * as assert from 'uvu/assert';
import { defineConformance } from 'groupcomm/conformance';
import { CudaBackend } from '../../plugins/cuda/index.js';
import { useCudaDouble } from '../cuda-double/build.js';

const d = useCudaDouble();
if ('skip' in d) console.log(`# ${d.skip}`);
const t = 'skip' in d ? test.skip : test;
t('the cuda plugin probes the test double as available (else the suite below would only skip)', async () => {
  assert.equal(await new CudaBackend().probe(), { available: true });
});
test.run();
if (!('skip' in d)) await defineConformance({ plugin: 'cuda', worldSizes: [1, 2] }, { suite });
