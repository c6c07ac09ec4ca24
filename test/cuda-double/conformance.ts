// The one body of the cuda_double_* conformance files: build/load the test double (with `env`
// for its modes), check the cuda plugin probes it as available — else the suite would only
// skip — then run the conformance suite at `worldSizes`. Without a C compiler: skip, with why.
import { suite, test } from 'uvu';
import * as assert from 'uvu/assert';
import { defineConformance } from 'groupcomm/conformance';
import { CudaBackend } from '../../plugins/cuda/index.js';
import { useCudaDouble } from './build.js';

export async function cudaDoubleConformance(worldSizes: number[], env?: Record<string, string>, what = 'the test double'): Promise<void> {
  const d = useCudaDouble(env);
  if ('skip' in d) console.log(`# ${d.skip}`);
  const t = 'skip' in d ? test.skip : test;
  t(`the cuda plugin probes ${what} as available (else the suite below would only skip)`, async () => {
    assert.equal(await new CudaBackend().probe(), { available: true });
  });
  // Every suite registered before the first run(): uvu starts running its queue on a timer after
  // a run(), and a run() after that start makes it run the queue again (the suites before twice).
  if (!('skip' in d)) await defineConformance({ plugin: 'cuda', worldSizes }, { suite });
  test.run();
}
