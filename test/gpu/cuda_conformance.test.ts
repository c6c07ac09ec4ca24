// The cuda backend against the whole conformance suite on real GPUs: world sizes 1 up to the
// number of GPUs (at most 8; NCCL refuses two ranks on one device), one process per rank.
// Without a usable GPU, driver and NCCL the reason is printed and every case is skipped, except
// under GROUPCOMM_REQUIRE_GPU=1 (`npm run test:gpu` sets it), where that is a failure, as is
// running on the CUDA test double (test/cuda-double) instead of the real libraries.
import { suite, test } from 'uvu';
import { defineConformance } from 'groupcomm/conformance';
import { setting } from '../../host/base/config.js';
import { CudaBackend } from '../../plugins/cuda/index.js';

const backend = new CudaBackend();
const probe = await backend.probe();
const devices = probe.available ? await backend.deviceCount() : 0;
if (setting('GROUPCOMM_REQUIRE_GPU') === '1') {
  test('GROUPCOMM_REQUIRE_GPU=1: the cuda backend is usable, on the real CUDA and NCCL libraries', async () => {
    if (!probe.available) throw new Error(`GROUPCOMM_REQUIRE_GPU=1 but the cuda backend is not usable: ${probe.reason}`);
    const r = await backend.report();
    if ('error' in r || /libgcd_/.test(`${r.cudart?.path} ${r.nccl?.path}`)) throw new Error(`GROUPCOMM_REQUIRE_GPU=1 but the libraries are the test double: ${JSON.stringify(r)}`);
  });
}
const sizes = Array.from({ length: Math.max(1, Math.min(devices, 8)) }, (_, i) => i + 1);
await defineConformance({ plugin: 'cuda', worldSizes: devices ? sizes : [1, 2, 3, 4], deadlineMs: 280_000 }, { suite });
// After every suite is registered: a run() before the await above would start uvu's queue early,
// and the suites' own run() would then run it a second time (the exit code of the second only).
test.run();
