/**
 * The cuda plugin's own cost per call, for `groupcomm bench device` (and
 * test/cuda-double/overhead.ts). Side by side in this process, each on a world-size-1
 * communicator of the same libraries (the ones the plugin's discovery picked):
 *   - plugin: `await comm.allReduce(x, { out: x })` of one float32 (argument checks, OrderedOps,
 *     pointer check, NCCL enqueue, event record, completion polling), N times;
 *   - bare: the same native calls straight through koffi (ncclAllReduce, cudaEventRecord, then
 *     cudaEventQuery until done: polled synchronously for 20 µs, then on setImmediate turns,
 *     like the plugin), N times.
 * Best of `rounds` each (a loaded machine only ever adds time). The difference is what the
 * plugin adds per call. On the CUDA/NCCL test double (it exports gcdouble_set) stream work is
 * switched to run inline, so the "device" costs nothing and only the host side is measured; on
 * a GPU both sides include the same kernel launch and completion.
 */
import { createRequire } from 'node:module';
import { storeBootstrap } from '../host/device/bootstrap.js';
import { freeTensor, toDevice } from '../host/device/tensors.js';
import type { DeviceBackendV1 } from '../host/device/types.js';
import { TcpStore, TcpStoreServer } from '../host/store/index.js';

export interface OverheadResult {
  calls: number;
  rounds: number;
  /** µs per awaited 1-element allReduce through the plugin (best round). */
  pluginUs: number;
  /** µs per the same native calls through koffi alone (best round). */
  bareUs: number;
  /** pluginUs − bareUs. */
  overheadUs: number;
  cudart: string;
  nccl: string;
  /** True when the libraries are the test double (stream work inline). */
  double: boolean;
}

/** Where the cuda plugin found its libraries (its probe report), or why it has none. */
async function libraryPaths(backend: DeviceBackendV1): Promise<{ cudart: string; nccl: string } | string> {
  const report = (backend as { report?: () => Promise<{ cudart?: { path: string }; nccl?: { path: string } } | { error: string }> }).report;
  if (typeof report !== 'function') return `backend '${backend.name}' does not say which libraries it loaded`;
  const r = await report.call(backend);
  if ('error' in r) return r.error;
  if (!r.cudart?.path || !r.nccl?.path) return 'the probe found no CUDA runtime or NCCL';
  return { cudart: r.cudart.path, nccl: r.nccl.path };
}

/** Measures; resolves with the figures, or a string saying why it cannot. */
export async function measureOverhead(backend: DeviceBackendV1, o: { calls: number; rounds?: number; deviceIndex?: number }): Promise<OverheadResult | string> {
  const libs = await libraryPaths(backend);
  if (typeof libs === 'string') return libs;
  const rounds = o.rounds ?? 3;
  const dev = o.deviceIndex ?? 0;
  const require = createRequire(import.meta.url);
  const koffi = require('koffi') as typeof import('koffi');
  // The same paths as the plugin: the loader hands both sides the same library instance.
  const cu = koffi.load(libs.cudart), nc = koffi.load(libs.nccl);
  let double = false;
  try {
    // Only the double has it: stream work inline (set in-process: Bun's process.env never reaches getenv).
    (cu.func('void gcdouble_set(const char *name, long v, int on)') as (n: string, v: number, on: number) => void)('GCDOUBLE_INLINE_STREAMS', 1, 1);
    double = true;
  } catch { /* a real CUDA runtime */ }

  const store = await TcpStoreServer.listen({ host: '127.0.0.1', port: 0 });
  const client = await TcpStore.create({ host: '127.0.0.1', port: store.port, timeoutMs: 10_000 });
  const comm = await backend.createCommunicator({ rank: 0, worldSize: 1, deviceIndex: dev, bootstrap: storeBootstrap(client, { rank: 0, worldSize: 1, prefix: 'overhead' }) });
  const x = toDevice(backend, { dtype: 'float32', shape: [1], device: 'cpu', data: new Float32Array([1]) }, dev);
  try {
    // The bare side: its own communicator, stream and event, made with koffi directly.
    koffi.struct('gcOverheadUid', { internal: koffi.array('uint8_t', 128, 'Typed') });
    const f = {
      setDevice: cu.func('int cudaSetDevice(int d)'),
      getId: nc.func('int ncclGetUniqueId(void *id)'),
      init: nc.func('int ncclCommInitRank(_Out_ void **comm, int n, gcOverheadUid id, int rank)'),
      destroy: nc.func('int ncclCommDestroy(void *comm)'),
      allReduce: nc.func('int ncclAllReduce(const void *s, void *r, size_t n, int dt, int op, void *comm, void *stream)'),
      malloc: cu.func('int cudaMalloc(_Out_ void **p, size_t n)'),
      free: cu.func('int cudaFree(void *p)'),
      stream: cu.func('int cudaStreamCreateWithFlags(_Out_ void **s, unsigned int f)'),
      event: cu.func('int cudaEventCreateWithFlags(_Out_ void **e, unsigned int f)'),
      record: cu.func('int cudaEventRecord(void *e, void *s)'),
      query: cu.func('int cudaEventQuery(void *e)'),
      sync: cu.func('int cudaStreamSynchronize(void *s)'),
    };
    f.setDevice(dev);
    const id = new Uint8Array(128);
    const c: unknown[] = [null], s: unknown[] = [null], e: unknown[] = [null], p: unknown[] = [null];
    const check = (rc: number, what: string) => { if (rc !== 0) throw new Error(`bench overhead: ${what} returned ${rc}`); };
    check(f.getId(id), 'ncclGetUniqueId');
    check(f.init(c, 1, { internal: id }, 0), 'ncclCommInitRank');
    check(f.stream(s, 1), 'cudaStreamCreateWithFlags');
    check(f.event(e, 2), 'cudaEventCreateWithFlags'); // cudaEventDisableTiming
    check(f.malloc(p, 4), 'cudaMalloc');
    const immediate = () => new Promise<void>((resolve) => setImmediate(resolve));
    const bare = async (): Promise<void> => {
      f.allReduce(p[0], p[0], 1, 7, 0, c[0], s[0]); // float32, sum
      f.record(e[0], s[0]);
      const until = performance.now() + 0.02;
      do if (f.query(e[0]) === 0) return; while (performance.now() < until);
      while (f.query(e[0]) !== 0) await immediate();
    };
    const plugin = () => comm.allReduce(x, { out: x });
    const time = async (fn: () => Promise<unknown>): Promise<number> => {
      for (let i = 0; i < Math.min(500, o.calls); i++) await fn(); // warm-up: JIT, caches
      const t0 = performance.now();
      for (let i = 0; i < o.calls; i++) await fn();
      return ((performance.now() - t0) * 1000) / o.calls;
    };
    const got: { plugin: number; bare: number }[] = [];
    for (let r = 0; r < rounds; r++) got.push({ plugin: await time(plugin), bare: await time(bare) });
    f.sync(s[0]);
    f.free(p[0]);
    f.destroy(c[0]);
    const best = (k: 'plugin' | 'bare') => Math.min(...got.map((g) => g[k]));
    return { calls: o.calls, rounds, pluginUs: best('plugin'), bareUs: best('bare'), overheadUs: best('plugin') - best('bare'), ...libs, double };
  } finally {
    freeTensor(backend, x);
    await comm.close();
    await client.close();
    await store.close();
  }
}
