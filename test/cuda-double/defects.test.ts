// The cuda plugin's known failure modes, each reproduced on the CUDA/NCCL test double in this
// process (ranks of one group on devices 0 and 1 of the double, an in-memory store between
// them). The double counts what real CUDA/NCCL would punish silently (gcdouble_counter) and
// takes its faults from gcdouble_set, which Bun's process.env cannot reach. Skips, with the
// reason printed, where there is no C compiler to build the double.
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { ErrorCode, isGroupcommError } from '../../host/base/errors.js';
import type { CpuTensor, Tensor } from '../../host/core/tensor.js';
import { storeBootstrap } from '../../host/device/bootstrap.js';
import { fromDevice, toDevice } from '../../host/device/tensors.js';
import { premulSum } from '../../host/core/premul.js';
import type { DeviceCommunicatorV1 } from '../../host/device/types.js';
import { CudaBackend, probeLibraries, probeReasons } from '../../plugins/cuda/index.js';
import { MemStoreServer } from '../helpers/memstore.js';
import { useCudaDouble } from './build.js';

const d = useCudaDouble();
if ('skip' in d) console.log(`# ${d.skip}`);
const t = 'skip' in d ? test.skip : test;

const require = createRequire(import.meta.url);
type Koffi = typeof import('koffi');
let lib: ReturnType<Koffi['load']> | undefined;
let counterFn: (name: string) => number;
let setFn: (name: string, v: number, on: number) => void;
if (!('skip' in d)) {
  const koffi = require('koffi') as Koffi;
  lib = koffi.load(d.cudart); // the plugin's own load of this path: one library, one state
  counterFn = lib.func('long gcdouble_counter(const char *name)') as never;
  setFn = lib.func('void gcdouble_set(const char *name, long v, int on)') as never;
}
const counter = (name: string) => Number(counterFn(name));
const faults = new Set<string>();
const fault = (name: string, v: number) => { faults.add(name); setFn(name, v, 1); };
/** Counters of calls NCCL would make on a freed or NULL communicator. */
const misuse = () => counter('null_comm') + counter('comm_after_free') + counter('bad_comm');

const backend = new CudaBackend();
const store = new MemStoreServer();
let seq = 0;

function communicators(devices: number[], timeoutMs = 20_000): Promise<DeviceCommunicatorV1[]> {
  const prefix = `g${seq++}`;
  return Promise.all(devices.map((dev, rank) => backend.createCommunicator({
    rank, worldSize: devices.length, deviceIndex: dev, timeoutMs,
    bootstrap: storeBootstrap(store.client(), { rank, worldSize: devices.length, prefix, timeoutMs }),
  })));
}
const f32 = (vals: number[], dev: number) => toDevice(backend, { dtype: 'float32', shape: [vals.length], device: 'cpu', data: new Float32Array(vals) } as CpuTensor, dev);
const host = (x: Tensor) => [...(fromDevice(backend, x).data as Float32Array)];
async function rejects(p: Promise<unknown>): Promise<Error & { code?: string }> {
  try { await p; } catch (e) { return e as Error; }
  throw new Error('resolved, expected a rejection');
}

test.before.each(() => { for (const f of faults) setFn(f, 0, 0); faults.clear(); });
test.after(() => { for (const f of faults) setFn(f, 0, 0); });

t('the double is what the plugin loads, with 8 devices', async () => {
  assert.is(await backend.deviceCount(), 8);
});

t('two communicators created at once on cuda:0 and cuda:1 each run on their own device (stream made after the await)', async () => {
  fault('GCDOUBLE_INIT_DELAY_MS', 30); // both inits are pending at once: the other one's setDevice runs in between
  const before = counter('stream_device_mismatch') + counter('event_device_mismatch');
  const [a, b] = await Promise.all([communicators([0]), communicators([1])]);
  const x = f32([1, 2], 0), y = f32([3, 4], 1);
  await a[0].allReduce(x, { out: x });
  await b[0].allReduce(y, { out: y });
  assert.equal([host(x), host(y)], [[1, 2], [3, 4]]);
  assert.is(counter('stream_device_mismatch') + counter('event_device_mismatch'), before);
  await a[0].close();
  await b[0].close();
});

t('creation runs a warm-up operation, so connection failures surface there', async () => {
  const before = counter('op_items');
  const [c] = await communicators([0]);
  assert.ok(counter('op_items') > before, 'no operation ran during createCommunicator');
  await c.close();
});

t('NCCL older than 2.14 is refused by the probe, naming the version', async () => {
  process.env.GCDOUBLE_NCCL_VERSION = '21300'; // read by the probe's child process
  try {
    const p = await new CudaBackend().probe();
    assert.is(p.available, false);
    if (!p.available) assert.match(p.reason, /NCCL 2\.13\.0 .* too old: groupcomm needs NCCL >= 2\.14\.0/);
  } finally {
    delete process.env.GCDOUBLE_NCCL_VERSION;
  }
});

t('fp8 reduces where NCCL >= 2.24 and every device is sm_90 or later, and only there', async () => {
  const fp8 = (b: CudaBackend) => b.capabilities.reduceDtypes.includes('float8_e4m3fn') && b.capabilities.reduceDtypes.includes('float8_e5m2');
  const yes = new CudaBackend();
  assert.is((await yes.probe()).available, true);
  assert.ok(fp8(yes), 'sm_90 and NCCL 2.27: fp8 should reduce');
  for (const [k, v] of [['GCDOUBLE_CC_MAJOR', '8'], ['GCDOUBLE_NCCL_VERSION', '22304']]) {
    process.env[k] = v; // read by the probe's child process
    try {
      const no = new CudaBackend();
      assert.is((await no.probe()).available, true);
      assert.not.ok(fp8(no), `${k}=${v}: fp8 should not reduce`);
    } finally {
      delete process.env[k];
    }
  }
});

t('discovery passes over a libcudart the driver cannot run to the next candidate', async () => {
  if ('skip' in d) return;
  const r = await probeLibraries(30_000, { cudart: [d.oldDriverCudart, d.cudart], nccl: [d.nccl] });
  if ('error' in r) throw new Error(r.error);
  assert.is(r.cudart?.path, d.cudart);
  assert.ok(r.cudartTried.some((x) => x.path === d.oldDriverCudart && /cudaErrorInsufficientDriver \(35\)/.test(x.error)), JSON.stringify(r.cudartTried));
  assert.equal(probeReasons(r), []);
  // Alone, the old runtime is still reported plainly.
  const only = await probeLibraries(30_000, { cudart: [d.oldDriverCudart], nccl: [d.nccl] });
  assert.match(probeReasons(only).join(' '), 'CUDA driver missing or too old: cudaErrorInsufficientDriver (35)');
});

t('NCCL_COMM_BLOCKING=1 is refused instead of blocking the event loop in init', async () => {
  process.env.NCCL_COMM_BLOCKING = '1';
  fault('NCCL_COMM_BLOCKING', 1); // what NCCL would see (Bun's process.env does not reach getenv)
  fault('GCDOUBLE_INIT_DELAY_MS', 2_000);
  try {
    const e = await rejects(communicators([0], 10_000));
    assert.ok(isGroupcommError(e, ErrorCode.INVALID_ARGUMENT), String(e));
    assert.match(e.message, 'NCCL_COMM_BLOCKING=1');
  } finally {
    delete process.env.NCCL_COMM_BLOCKING;
  }
});

t('a free while an operation is stuck is deferred, not a device-synchronising cudaFree; it happens once abort returns', async () => {
  fault('GCDOUBLE_FAULT_RANK', 0);
  fault('GCDOUBLE_ABORT_DELAY_MS', 400); // the stuck kernel outlives the timeout by this much
  const [c0, c1] = await communicators([0, 1]);
  const busy = counter('free_while_busy'), bad = misuse();
  const x = f32([1, 2, 3], 0);
  // Rank 1 never joins this allReduce: rank 0's kernel waits for it until the abort.
  const e = await rejects(c0.allReduce(x, { timeoutMs: 300 })); // its result buffer is freed by the plugin on failure
  assert.ok(isGroupcommError(e, ErrorCode.TIMEOUT), String(e));
  backend.free(x.data as never);
  assert.is(counter('free_while_busy'), busy, 'cudaFree ran while a kernel was stuck (it synchronises the device)');
  await c0.close(); // right after the timeout: its abort is still under way
  await c1.close();
  const cuda = (backend as unknown as { libs: { cuda: { deferredFrees: number } } }).libs.cuda;
  assert.is(cuda.deferredFrees, 0, 'the deferred frees ran once the abort returned');
  assert.is(counter('free_while_busy'), busy, 'close() during the abort released the held free while the aborted kernel still ran');
  assert.is(misuse(), bad, 'NCCL was called with an aborted or NULL communicator');
});

t('an async error kills the communicator at once, with ncclGetLastError text; ncclTimeout is TIMEOUT', async () => {
  const [c] = await communicators([0]);
  const bad = misuse();
  fault('GCDOUBLE_ASYNC_ERROR', 3); // ncclInternalError, from the next operation on
  fault('GCDOUBLE_ASYNC_ERROR_AT', 0);
  const x = f32([1], 0);
  const e = await rejects(c.allReduce(x, { out: x, timeoutMs: 20_000 }));
  assert.ok(isGroupcommError(e, ErrorCode.ABORTED), String(e));
  assert.match(e.message, 'internal error');
  assert.match(e.message, 'gcdouble: injected async error 3');
  const t0 = Date.now();
  const e2 = await rejects(c.allReduce(x, { out: x, timeoutMs: 20_000 }));
  assert.ok(isGroupcommError(e2, ErrorCode.ABORTED), `the next call re-entered the broken communicator: ${e2}`);
  assert.ok(Date.now() - t0 < 10_000);
  await c.close();
  setFn('GCDOUBLE_ASYNC_ERROR', 0, 0);
  const [c2] = await communicators([0]);
  fault('GCDOUBLE_ASYNC_ERROR', 8); // ncclTimeout
  const e3 = await rejects(c2.allReduce(x, { out: x, timeoutMs: 20_000 }));
  assert.ok(isGroupcommError(e3, ErrorCode.TIMEOUT), String(e3));
  await c2.close();
  assert.is(misuse(), bad, 'NCCL was called with an aborted or NULL communicator');
});

t('device pointers are checked before NCCL sees them: another GPU\'s memory, and host memory', async () => {
  const [c] = await communicators([0]);
  const before = counter('buffer_not_on_device');
  const other = f32([1, 2], 1);
  const wrong: Tensor = { ...other, device: 'cuda:0' }; // says cuda:0, lives on cuda:1
  const e = await rejects(c.allReduce(wrong));
  assert.ok(isGroupcommError(e, ErrorCode.INVALID_ARGUMENT), String(e));
  assert.match(e.message, 'cuda:1');
  const hostPtr: Tensor = { dtype: 'float32', shape: [2], device: 'cuda:0', data: { ptr: 0x1000n, nbytes: 8 } as never };
  const e2 = await rejects(c.allReduce(hostPtr));
  assert.ok(isGroupcommError(e2, ErrorCode.INVALID_ARGUMENT), String(e2));
  assert.match(e2.message, 'not CUDA device memory');
  assert.is(counter('buffer_not_on_device'), before, 'a bad pointer reached NCCL');
  // The communicator still works: nothing was issued.
  const x = f32([5], 0);
  await c.allReduce(x, { out: x });
  assert.equal(host(x), [5]);
  await c.close();
});

t('abort() during an operation: later calls fail at once and NCCL never sees the dead handle', async () => {
  const [c0, c1] = await communicators([0, 1]);
  const bad = misuse();
  const x = f32([1], 0);
  const p = c0.allReduce(x, { out: x }); // rank 1 never joins
  setTimeout(() => void c0.abort('test'), 50);
  assert.ok(isGroupcommError(await rejects(p), ErrorCode.ABORTED));
  assert.ok(isGroupcommError(await rejects(c0.barrier()), ErrorCode.ABORTED));
  await c0.close();
  await c1.close();
  assert.is(misuse(), bad, 'NCCL was called with an aborted or NULL communicator');
});

t('an init that never completes on one rank ends in TIMEOUT on every rank, the half-made communicators aborted', async () => {
  fault('GCDOUBLE_FAULT_RANK', 1);
  fault('GCDOUBLE_INIT_NEVER', 1);
  const bad = misuse();
  const prefix = `g${seq++}`;
  const make = (rank: number) => backend.createCommunicator({
    rank, worldSize: 2, deviceIndex: rank, timeoutMs: 800,
    bootstrap: storeBootstrap(store.client(), { rank, worldSize: 2, prefix, timeoutMs: 800 }),
  });
  const res = await Promise.allSettled([make(0), make(1)]);
  for (const r of res) {
    assert.is(r.status, 'rejected');
    if (r.status === 'rejected') assert.ok(isGroupcommError(r.reason, ErrorCode.TIMEOUT), String(r.reason));
  }
  assert.is(misuse(), bad);
});

t('an operation that never completes times out, kills the communicator, and close() still returns', async () => {
  const [c] = await communicators([0]);
  fault('GCDOUBLE_HANG_OP', 2); // the warm-up was operation 1
  const x = f32([1], 0);
  const e = await rejects(c.allReduce(x, { out: x, timeoutMs: 300 }));
  assert.ok(isGroupcommError(e, ErrorCode.TIMEOUT), String(e));
  assert.is((e as { rank?: number }).rank, 0);
  assert.ok(isGroupcommError(await rejects(c.allReduce(x, { out: x })), ErrorCode.ABORTED));
  await c.close();
});

t('split (ncclCommSplit): sub-groups by color ordered by key, without a new bootstrap; a negative color takes no part', async () => {
  assert.is(backend.capabilities.split, true);
  const parents = await communicators([0, 1, 2, 3]);
  // Colors 0,1,0,-1; in color 0 the keys put parent rank 2 first.
  const colors = [0, 1, 0, -1];
  const kids = await Promise.all(parents.map((c, r) => c.split!({ color: colors[r], key: -r })));
  assert.equal(kids.map((k) => k && [k.rank, k.worldSize]), [[1, 2], [0, 1], [0, 2], undefined]);
  const xs = kids.map((k, r) => k && f32([r + 1], r));
  await Promise.all(kids.map((k, r) => k?.allReduce(xs[r]!, { out: xs[r]! })));
  assert.equal(xs.map((x) => x && host(x)), [[4], [2], [4], undefined]); // {0,2}: 1+3; {1}: 2
  for (const k of kids) await k?.close();
  // The parents still work after their children are gone.
  const ys = parents.map((_, r) => f32([1], r));
  await Promise.all(parents.map((c, r) => c.allReduce(ys[r], { out: ys[r] })));
  assert.equal(host(ys[3]), [4]);
  for (const c of parents) await c.close();
});

t('a failing cudaFree is an error naming the call and CUDA\'s error', () => {
  const buf = backend.alloc(8, 0);
  fault('GCDOUBLE_FAIL_FREE', 1);
  try {
    backend.free(buf);
    assert.unreachable('free succeeded');
  } catch (e) {
    assert.ok(isGroupcommError(e, ErrorCode.PLUGIN_UNAVAILABLE), String(e));
    assert.match((e as Error).message, /cudaFree failed: cudaErrorIllegalAddress \(700\)/);
  }
});

const fp8 = (bytes: number[], dev: number) => toDevice(backend, { dtype: 'float8_e4m3fn', shape: [bytes.length], device: 'cpu', data: new Uint8Array(bytes) } as CpuTensor, dev);
const bytesOf = (x: Tensor) => [...new Uint8Array((fromDevice(backend, x).data as Uint8Array).buffer)];

t('a backend whose probe() answers available is usable at once: alloc and copies need no communicator first (a group of one makes none)', async () => {
  const fresh = new CudaBackend();
  assert.equal(await fresh.probe(), { available: true });
  const x = toDevice(fresh, { dtype: 'float32', shape: [2], device: 'cpu', data: new Float32Array([5, 6]) } as CpuTensor, 0);
  assert.equal([...(fromDevice(fresh, x).data as Float32Array)], [5, 6]);
  fresh.free(x.data as never);
});

t('at world size 1, fp8 avg runs as sum (NCCL has no one-rank fp8 scaling kernel) and fp8 premulSum is refused before NCCL sees it; the communicator goes on', async () => {
  assert.ok(backend.capabilities.reduceDtypes.includes('float8_e4m3fn'), 'the double is sm_90 with NCCL 2.27: fp8 reduces');
  assert.equal(backend.capabilities.premulSumRefusedAtOneRank, ['float8_e4m3fn', 'float8_e5m2']);
  const [c] = await communicators([0]);
  const sticky = counter('sticky_errors');
  const x = fp8([0x38, 0x40, 0x44, 0xb8], 0); // 1, 2, 3, -1
  assert.equal(bytesOf(await c.allReduce(x, { op: 'avg' })), [0x38, 0x40, 0x44, 0xb8]);
  assert.equal(bytesOf(await c.reduceScatter(x, { op: 'avg' })), [0x38, 0x40, 0x44, 0xb8]);
  for (const call of [() => c.allReduce(x, { op: premulSum(0.5) }), () => c.reduceScatter(x, { op: premulSum(0.5) })]) {
    const e = await rejects(call());
    assert.ok(isGroupcommError(e, ErrorCode.INVALID_ARGUMENT), String(e));
    assert.match(e.message, 'premulSum on float8_e4m3fn at world size 1');
  }
  assert.is(counter('sticky_errors'), sticky, 'NCCL was handed a call it fails');
  assert.equal(host(await c.allReduce(f32([1, 2], 0), { op: 'sum' })), [1, 2], 'the communicator still works');
  await c.close();
});

t('a call NCCL fails (fp8 after the probe took the GPU for sm_90) kills the communicator, as NCCL keeps the error: ABORTED with NCCL\'s error as the cause, and every later call says what killed it', async () => {
  const [c] = await communicators([0]);
  fault('GCDOUBLE_CC_MAJOR', 8);
  const e = await rejects(c.allReduce(fp8([0x38], 0), { op: 'sum' }));
  assert.ok(isGroupcommError(e, ErrorCode.ABORTED), String(e));
  assert.match(e.message, /NCCL ncclAllReduce failed on rank 0: invalid argument.*NCCL keeps that error on the communicator/);
  assert.ok(isGroupcommError((e as { cause?: unknown }).cause, ErrorCode.INVALID_ARGUMENT), 'the cause is NCCL\'s own answer');
  const next = await rejects(c.allReduce(f32([1], 0)));
  assert.ok(isGroupcommError(next, ErrorCode.ABORTED), String(next));
  assert.match(next.message, 'was aborted (allReduce failed: NCCL ncclAllReduce failed on rank 0: invalid argument');
  await c.close();
});

t('a stuck ncclCommAbort does not keep the process alive after close()', async () => {
  if ('skip' in d) return;
  const me = fileURLToPath(import.meta.url);
  const child = path.join(path.dirname(me), `abort_exit_child${path.extname(me)}`);
  const t0 = Date.now();
  const p = spawn(process.execPath, [child], { env: { ...process.env, ...d.env, GCDOUBLE_ABORT_DELAY_MS: '60000' }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  p.stdout.on('data', (x) => (out += x));
  p.stderr.on('data', (x) => (out += x));
  const killer = setTimeout(() => p.kill('SIGKILL'), 40_000);
  const code = await new Promise<number | null>((resolve) => p.on('close', (c) => resolve(c)));
  clearTimeout(killer);
  assert.match(out, 'closed');
  assert.is(code, 0, out);
  // The abort takes 60 s: exiting well before that means nothing waited for it.
  assert.ok(Date.now() - t0 < 30_000, `the process lived ${Date.now() - t0} ms, waiting for ncclCommAbort`);
});

test.run();
