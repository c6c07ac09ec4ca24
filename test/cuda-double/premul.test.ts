// premulSum on the cuda plugin over the CUDA/NCCL test double: each reduction creates its op with
// ncclRedOpCreatePreMulSum (the scalar in the tensor's datatype, ncclScalarHostImmediate) and
// destroys it with ncclRedOpDestroy once the call has returned (the double counts both, and any
// use of an op that is not live); results element by element, at world sizes 2 and 3, on the
// ranks' own devices. Skips, with the reason printed, where there is no C compiler.
import { createRequire } from 'node:module';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { tensor, type CpuTensor, type Tensor } from '../../host/core/tensor.js';
import { premulSum } from '../../host/core/premul.js';
import { storeBootstrap } from '../../host/device/bootstrap.js';
import { fromDevice, toDevice } from '../../host/device/tensors.js';
import type { DeviceCommunicatorV1 } from '../../host/device/types.js';
import { CudaBackend } from '../../plugins/cuda/index.js';
import { MemStoreServer } from '../helpers/memstore.js';
import { useCudaDouble } from './build.js';

const d = useCudaDouble();
if ('skip' in d) console.log(`# ${d.skip}`);
const t = 'skip' in d ? test.skip : test;

const require = createRequire(import.meta.url);
let counterFn: (name: string) => number = () => 0;
if (!('skip' in d)) counterFn = (require('koffi') as typeof import('koffi')).load(d.cudart).func('long gcdouble_counter(const char *name)') as never;
const counter = (name: string) => Number(counterFn(name));

const backend = new CudaBackend();
const store = new MemStoreServer();
let seq = 0;
function communicators(ws: number): Promise<DeviceCommunicatorV1[]> {
  const prefix = `pm${seq++}`;
  return Promise.all([...Array(ws).keys()].map((rank) => backend.createCommunicator({
    rank, worldSize: ws, deviceIndex: rank, timeoutMs: 20_000,
    bootstrap: storeBootstrap(store.client(), { rank, worldSize: ws, prefix, timeoutMs: 20_000 }),
  })));
}
const on = (x: CpuTensor, dev: number): Tensor => toDevice(backend, x, dev);
const host = (x: Tensor): number[] => Array.from(fromDevice(backend, x).data as ArrayLike<number>, Number);

for (const ws of [2, 3]) {
  t(`world size ${ws}: allReduce, reduceScatter, reduceScatterv with premulSum; one op created and destroyed per call`, async () => {
    const cs = await communicators(ws);
    const made = counter('redop_created'), gone = counter('redop_destroyed'), bad = counter('redop_bad_use') + counter('redop_bad_destroy');
    const R = [...Array(ws).keys()];
    // int32, factor 2.7: NCCL's scalar is an int32, 2 (truncated), not 2.7 or 3.
    const xi = R.map((r) => on(tensor(Int32Array.from([1, -2, 3, 4, 5, 6].slice(0, 2 * ws), (v) => v * (r + 1))), r));
    const ai = await Promise.all(cs.map((c, r) => c.allReduce(xi[r], { op: premulSum(2.7) })));
    const sumR = R.reduce((a, r) => a + r + 1, 0);
    for (const r of R) assert.equal(host(ai[r]), [1, -2, 3, 4, 5, 6].slice(0, 2 * ws).map((v) => 2 * v * sumR), `int32 allReduce rank ${r}`);
    // float16 in place, factor 0.25 (exact): Σ r · 0.25.
    const xh = R.map((r) => on({ dtype: 'float16', shape: [ws], device: 'cpu', data: new Uint16Array(ws) } as CpuTensor, r));
    R.forEach((r) => backend.copyFromHost(xh[r].data as never, new Uint8Array(Uint16Array.from({ length: ws }, () => [0x3c00, 0x4000, 0x4200][r]).buffer))); // 1, 2, 3
    await Promise.all(cs.map((c, r) => c.allReduce(xh[r], { op: premulSum(0.25), out: xh[r] })));
    const half = (x: Tensor) => { const b = new Uint16Array(ws); backend.copyToHost(new Uint8Array(b.buffer), x.data as never); return [...b]; };
    const exp = ws === 2 ? 0x3a00 : 0x3e00; // float16 0.75 and 1.5
    for (const r of R) assert.equal(half(xh[r]), R.map(() => exp), `float16 in-place allReduce rank ${r}`);
    // float32 reduceScatter, factor -0.5.
    const xf = R.map((r) => on(tensor(Float32Array.from({ length: 2 * ws }, (_, i) => i + 10 * r)), r));
    const rs = await Promise.all(cs.map((c, r) => c.reduceScatter(xf[r], { op: premulSum(-0.5) })));
    for (const r of R) assert.equal(host(rs[r]), [0, 1].map((k) => R.reduce((a, q) => a - (2 * r + k + 10 * q) / 2, 0)), `float32 reduceScatter rank ${r}`);
    // int8 reduceScatterv, factor 100: products wrap in int8, as NCCL's.
    const xb = R.map((r) => on(tensor(Int8Array.from({ length: ws }, (_, i) => i + r + 1)), r));
    const sizes = R.map((r) => (r === 0 ? ws : 0));
    const rv = await Promise.all(cs.map((c, r) => c.reduceScatterv!({ ...xb[r], shape: [ws, 1] }, { op: premulSum(100), sizes })));
    const i8 = (v: number) => ((v % 256) + 384) % 256 - 128;
    assert.equal(host(rv[0]), [...Array(ws).keys()].map((i) => i8(R.reduce((a, q) => a + i8(100 * (i + q + 1)), 0))), 'int8 reduceScatterv');
    // One op per call: 2 allReduces, a reduceScatter and a reduceScatterv on every rank.
    assert.is(counter('redop_created') - made, 4 * ws, 'ops created');
    assert.is(counter('redop_destroyed') - gone, 4 * ws, 'every op destroyed after its call');
    assert.is(counter('redop_bad_use') + counter('redop_bad_destroy'), bad, 'an op used or destroyed that was not live');
    for (const c of cs) await c.close();
  });
}

t('premulSum on bool, or an integer factor the dtype cannot hold, is refused before NCCL sees it', async () => {
  const [c] = await communicators(1);
  const made = counter('redop_created');
  for (const [x, f] of [[tensor(new Uint8Array(2)), -1], [{ dtype: 'bool', shape: [2], device: 'cpu', data: new Uint8Array(2) } as CpuTensor, 1]] as const) {
    const e = await c.allReduce(on(x, 0), { op: premulSum(f) }).then(() => null, (err) => err);
    assert.is((e as { code?: string })?.code, 'ERR_GROUPCOMM_INVALID_ARGUMENT', String(e));
  }
  assert.is(counter('redop_created'), made);
  await c.close();
});

test.run();
