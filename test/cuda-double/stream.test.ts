// The cuda plugin's `stream` option (PyNccl runs on the caller's stream): an operation is enqueued
// on the caller's stream, after the work the caller put there first, and resolves once it has
// completed there; the legacy default stream (0n) works in the double's strict mode too (where
// legacy work runs late); a bad handle is refused before anything is issued; the cpu plugin
// refuses the option. Over the CUDA/NCCL test double, ranks of one process on their own devices.
import { createRequire } from 'node:module';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { tensor, type Tensor } from '../../host/core/tensor.js';
import { storeBootstrap } from '../../host/device/bootstrap.js';
import { fromDevice, toDevice } from '../../host/device/tensors.js';
import { CudaBackend, type CudaCommunicator } from '../../plugins/cuda/index.js';
import { CpuBackend } from '../../plugins/cpu/index.js';
import { MemStoreServer } from '../helpers/memstore.js';
import { useCudaDouble } from './build.js';

const d = useCudaDouble();
if ('skip' in d) console.log(`# ${d.skip}`);
const t = 'skip' in d ? test.skip : test;

const require = createRequire(import.meta.url);
type Fn = (...a: unknown[]) => number;
let sleepOn: Fn = () => 0, setFn: Fn = () => 0, memcpyAsync: Fn = () => 0, counterFn: Fn = () => 0;
if (!('skip' in d)) {
  const lib = (require('koffi') as typeof import('koffi')).load(d.cudart);
  sleepOn = lib.func('int gcdouble_enqueue_sleep(void *stream, long us)') as never;
  setFn = lib.func('void gcdouble_set(const char *name, long v, int on)') as never;
  memcpyAsync = lib.func('int cudaMemcpyAsync(void *dst, const void *src, size_t count, int kind, void *stream)') as never;
  counterFn = lib.func('long gcdouble_counter(const char *name)') as never;
}

const backend = new CudaBackend();
const cuda = () => (backend as unknown as { libs: { cuda: { createStream(): bigint; setDevice(i: number): void } } }).libs.cuda;
const store = new MemStoreServer();
let seq = 0;
function communicators(ws: number): Promise<CudaCommunicator[]> {
  const prefix = `st${seq++}`;
  return Promise.all([...Array(ws).keys()].map((rank) => backend.createCommunicator({
    rank, worldSize: ws, deviceIndex: rank, timeoutMs: 20_000,
    bootstrap: storeBootstrap(store.client(), { rank, worldSize: ws, prefix, timeoutMs: 20_000 }),
  }) as Promise<CudaCommunicator>));
}
const host = (x: Tensor): number[] => [...fromDevice(backend, x).data as Int32Array];
/** Host-to-device copy of `vals` into x, enqueued on `stream` (0n: the legacy stream) behind whatever is there. */
const copyOn = (x: Tensor, vals: number[], stream: bigint) => {
  const src = new Uint8Array(Int32Array.from(vals).buffer); // staged by the double at the call
  assert.is(memcpyAsync((x.data as { ptr: bigint }).ptr, src, src.byteLength, 1, stream), 0);
};

t('communicators created at once by a fresh backend share one CUDA runtime (one allocation table, one in-flight count)', async () => {
  const fresh = new CudaBackend();
  const prefix = `fresh${seq++}`;
  const cs = await Promise.all([0, 1].map((rank) => fresh.createCommunicator({
    rank, worldSize: 2, deviceIndex: rank, timeoutMs: 20_000, bootstrap: storeBootstrap(store.client(), { rank, worldSize: 2, prefix, timeoutMs: 20_000 }),
  })));
  const rt = (x: unknown) => (x as { libs: { cuda: unknown } }).libs.cuda;
  assert.ok(rt(cs[0]) === rt(cs[1]) && rt(cs[0]) === rt(fresh), 'two CudaRuntimes: a free through one skips the other\'s buffers and in-flight operations');
  for (const c of cs) await c.close();
});

t('world size 2: the operation runs on the caller\'s stream, after a slow write the caller enqueued there first', async () => {
  const cs = await communicators(2);
  const streams = [0, 1].map((r) => { cuda().setDevice(r); return cuda().createStream(); });
  const xs = [0, 1].map((r) => toDevice(backend, tensor(new Int32Array([-1, -1])), r));
  for (const r of [0, 1]) {
    sleepOn(streams[r], 150_000); // the caller's kernel: 150 ms
    copyOn(xs[r], [r + 1, 10 * (r + 1)], streams[r]);
  }
  // On the communicator's own stream these would read [-1, -1] (the copies are still behind the sleep).
  const ys = await Promise.all(cs.map((c, r) => c.allReduce(xs[r], { stream: streams[r] })));
  assert.equal(ys.map(host), [[3, 30], [3, 30]]);
  // The communicator's own stream after the caller's: in order, still right.
  const zs = await Promise.all(cs.map((c, r) => c.allReduce(ys[r], { op: 'max' })));
  assert.equal(zs.map(host), [[3, 30], [3, 30]]);
  for (const c of cs) await c.close();
});

t('strict mode, the legacy default stream (0n): ordered after legacy work that runs late, and the promise still resolves', async () => {
  const [c] = await communicators(1);
  setFn('GCDOUBLE_STRICT', 1, 1);
  try {
    const x = toDevice(backend, tensor(new Int32Array([0, 0, 0])), 0);
    const y = toDevice(backend, tensor(new Int32Array([9, 9, 9])), 0);
    copyOn(x, [4, 5, 6], 0n); // legacy-stream work: in strict mode it runs only when something waits for it
    await c.allReduce(x, { out: y, stream: 0n });
    assert.equal(host(y), [4, 5, 6]);
  } finally {
    setFn('GCDOUBLE_STRICT', 0, 0);
  }
  await c.close();
});

t('a stream that is not a handle, or a stream of another device, is refused before anything is issued, and the communicator goes on', async () => {
  const [c] = await communicators(1);
  const x = toDevice(backend, tensor(new Int32Array([7])), 0);
  for (const bad of ['s', -1n, 1.5]) {
    const e = await c.allReduce(x, { stream: bad as never }).then(() => null, (err) => err);
    assert.is((e as { code?: string })?.code, 'ERR_GROUPCOMM_INVALID_ARGUMENT', String(e));
  }
  cuda().setDevice(3);
  const other = cuda().createStream();
  const before = Number(counterFn('stream_device_mismatch'));
  const e = await c.allReduce(x, { stream: other }).then(() => null, (err) => err) as { code?: string; message?: string } | null;
  assert.is(e?.code, 'ERR_GROUPCOMM_INVALID_ARGUMENT', String(e));
  assert.match(e!.message!, 'on cuda:3, this communicator on cuda:0');
  assert.is(Number(counterFn('stream_device_mismatch')), before, 'NCCL was handed the stream of cuda:3');
  assert.equal(host(await c.allReduce(x)), [7], 'the communicator still works');
  await c.close();
});

t('where the runtime cannot name a stream\'s device (before CUDA 12.8), NCCL\'s error on it is kept by NCCL: the communicator is aborted and says so', async () => {
  setFn('GCDOUBLE_NO_STREAM_DEVICE', 1, 1);
  try {
    const [c] = await communicators(1);
    const x = toDevice(backend, tensor(new Int32Array([7])), 0);
    cuda().setDevice(3);
    const other = cuda().createStream();
    const e = await c.allReduce(x, { stream: other }).then(() => null, (err) => err) as { code?: string; message?: string; cause?: { code?: string } } | null;
    assert.is(e?.code, 'ERR_GROUPCOMM_ABORTED', String(e));
    assert.match(e!.message!, 'NCCL keeps that error on the communicator');
    assert.is(e!.cause?.code, 'ERR_GROUPCOMM_PLUGIN_UNAVAILABLE', 'the cause is NCCL\'s own error');
    const next = await c.allReduce(x).then(() => null, (err) => err) as { code?: string; message?: string } | null;
    assert.is(next?.code, 'ERR_GROUPCOMM_ABORTED', String(next));
    assert.match(next!.message!, 'NCCL ncclAllReduce failed on rank 0', 'the next call names the error that killed the communicator');
    await c.close();
  } finally {
    setFn('GCDOUBLE_NO_STREAM_DEVICE', 0, 0);
  }
});

t('an operation stuck on a caller\'s stream: frees stay deferred until the abort has returned and that stream has drained', async () => {
  setFn('GCDOUBLE_FAULT_RANK', 0, 1);
  setFn('GCDOUBLE_ABORT_DELAY_MS', 300, 1); // the stuck kernel outlives the timeout by this much
  try {
    const [c0, c1] = await communicators(2);
    cuda().setDevice(0);
    const s = cuda().createStream();
    const busy = Number(counterFn('free_while_busy'));
    const x = toDevice(backend, tensor(new Int32Array([1, 2])), 0);
    // Rank 1 never joins: rank 0's kernel waits on the caller's stream until the abort.
    const e = await c0.allReduce(x, { stream: s, timeoutMs: 300 }).then(() => null, (err) => err);
    assert.is((e as { code?: string })?.code, 'ERR_GROUPCOMM_TIMEOUT', String(e));
    backend.free(x.data as never);
    assert.is(Number(counterFn('free_while_busy')), busy, 'cudaFree ran while a kernel was stuck on the caller\'s stream');
    await c0.close();
    await c1.close();
    const rt = (backend as unknown as { libs: { cuda: { deferredFrees: number } } }).libs.cuda;
    assert.is(rt.deferredFrees, 0, 'the deferred frees ran once the abort returned and the stream drained');
    assert.is(Number(counterFn('free_while_busy')), busy);
  } finally {
    setFn('GCDOUBLE_FAULT_RANK', 0, 0);
    setFn('GCDOUBLE_ABORT_DELAY_MS', 0, 0);
  }
});

test('the cpu plugin has no streams: the option is refused (INVALID_ARGUMENT), not ignored', async () => {
  const b = new CpuBackend();
  const [c] = await Promise.all([b.createCommunicator({ rank: 0, worldSize: 1, deviceIndex: 0, bootstrap: storeBootstrap(store.client(), { rank: 0, worldSize: 1, prefix: 'cpu-st' }) })]);
  const x = toDevice(b, tensor(new Int32Array([1])), 0);
  const e = await c.allReduce(x, { stream: 0n } as never).then(() => null, (err) => err);
  assert.is((e as { code?: string })?.code, 'ERR_GROUPCOMM_INVALID_ARGUMENT', String(e));
  assert.match(String(e), 'no streams');
  assert.equal([...fromDevice(b, await c.allReduce(x)).data as Int32Array], [1]);
  await c.close();
});

test.run();
