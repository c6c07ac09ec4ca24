/**
 * The cuda plugin's own cost per call, measured on the CUDA/NCCL test double (not a test; run
 * `node dist-test/test/cuda-double/overhead.js [N]` after `npm run build`, or with bun on the
 * .ts). Side by side, on one world-size-1 communicator of the double each:
 *   - plugin: `await comm.allReduce(x, { out: x })` of one float32 (argument checks, OrderedOps,
 *     pointer check, NCCL enqueue, event record, completion polling), N times;
 *   - bare: the same native calls straight through koffi (ncclAllReduce, cudaEventRecord, then
 *     cudaEventQuery until done: polled synchronously, then on setImmediate turns, like the
 *     plugin), N times.
 * The double runs stream work inline (GCDOUBLE_INLINE_STREAMS=1), so the event is done when
 * first asked and the device costs nothing. The difference is what the plugin adds per call.
 */
import { createRequire } from 'node:module';
import { storeBootstrap } from '../../host/device/bootstrap.js';
import { toDevice } from '../../host/device/tensors.js';
import { CudaBackend } from '../../plugins/cuda/index.js';
import { MemStoreServer } from '../helpers/memstore.js';
import { useCudaDouble } from './build.js';

// Stream work runs inline on the caller: the device takes no time, no thread wakes up, and what
// is measured is the host side alone (on a loaded machine, thread wake-ups would drown it).
const d = useCudaDouble({ GCDOUBLE_INLINE_STREAMS: '1' });
if ('skip' in d) { console.log(d.skip); process.exit(0); }
const N = Number(process.argv[2] ?? 20_000);
const require = createRequire(import.meta.url);
const koffi = require('koffi') as typeof import('koffi');

const backend = new CudaBackend();
const store = new MemStoreServer();
const comm = await backend.createCommunicator({ rank: 0, worldSize: 1, deviceIndex: 0, bootstrap: storeBootstrap(store.client(), { rank: 0, worldSize: 1, prefix: 'o' }) });
const x = toDevice(backend, { dtype: 'float32', shape: [1], device: 'cpu', data: new Float32Array([1]) }, 0);

// The bare side: its own communicator, stream and event, made with koffi directly.
const cu = koffi.load(d.cudart), nc = koffi.load(d.nccl);
(cu.func('void gcdouble_set(const char *name, long v, int on)') as (n: string, v: number, on: number) => void)('GCDOUBLE_INLINE_STREAMS', 1, 1); // Bun's process.env does not reach getenv
koffi.struct('gcdUid', { internal: koffi.array('uint8_t', 128, 'Typed') });
const f = {
  getId: nc.func('int ncclGetUniqueId(void *id)'),
  init: nc.func('int ncclCommInitRank(_Out_ void **comm, int n, gcdUid id, int rank)'),
  allReduce: nc.func('int ncclAllReduce(const void *s, void *r, size_t n, int dt, int op, void *comm, void *stream)'),
  malloc: cu.func('int cudaMalloc(_Out_ void **p, size_t n)'),
  stream: cu.func('int cudaStreamCreateWithFlags(_Out_ void **s, unsigned int f)'),
  event: cu.func('int cudaEventCreateWithFlags(_Out_ void **e, unsigned int f)'),
  record: cu.func('int cudaEventRecord(void *e, void *s)'),
  query: cu.func('int cudaEventQuery(void *e)'),
};
const id = new Uint8Array(128);
f.getId(id);
const c: unknown[] = [null], s: unknown[] = [null], e: unknown[] = [null], p: unknown[] = [null];
f.init(c, 1, { internal: id }, 0);
f.stream(s, 1);
f.event(e, 2);
f.malloc(p, 4);
const immediate = () => new Promise<void>((resolve) => setImmediate(resolve));
async function bare(): Promise<void> {
  f.allReduce(p[0], p[0], 1, 7, 0, c[0], s[0]);
  f.record(e[0], s[0]);
  const until = performance.now() + 0.02;
  do if (f.query(e[0]) === 0) return; while (performance.now() < until);
  while (f.query(e[0]) !== 0) await immediate();
}

async function time(fn: () => Promise<unknown>): Promise<number> {
  for (let i = 0; i < 500; i++) await fn(); // warm-up: JIT, caches
  const t0 = performance.now();
  for (let i = 0; i < N; i++) await fn();
  return ((performance.now() - t0) * 1000) / N;
}

const rounds: { plugin: number; bare: number }[] = [];
for (let r = 0; r < 3; r++) rounds.push({ plugin: await time(() => comm.allReduce(x, { out: x })), bare: await time(bare) });
const best = (k: 'plugin' | 'bare') => Math.min(...rounds.map((r) => r[k]));
console.log(`runtime ${typeof Bun === 'undefined' ? `node ${process.version}` : `bun ${Bun.version}`}, N=${N}, best of 3 rounds`);
console.log(`plugin allReduce (1 float32, awaited): ${best('plugin').toFixed(2)} µs/call`);
console.log(`bare koffi ncclAllReduce+record+query: ${best('bare').toFixed(2)} µs/call`);
console.log(`plugin overhead: ${(best('plugin') - best('bare')).toFixed(2)} µs/call`);
await comm.close();
