// One rank of `groupcomm bench device`: times collectives on the chosen device backend and, on
// rank 0, reports nccl-tests-style rows (the parent prints them). Args come from GC_BENCH (JSON).
import { storeBootstrap } from '../host/device/bootstrap.js';
import { resolveBackend } from '../host/device/registry.js';
import { emptyOn, freeTensor, fromDevice, toDevice } from '../host/device/tensors.js';
import type { Tensor } from '../host/core/tensor.js';
import { rankEnv, reportResult } from './ranks.js';
import { TcpStore } from '../host/store/index.js';
import { median, percentile, type Row } from './report.js';
import { collRow, placeOf } from './nccl.js';
import type { CollOp } from './collective.js';

interface Args { plugin: string; sizes: number[]; iters: number; warmup: number; ops: string[]; port: number }
const a = JSON.parse(process.env.GC_BENCH!) as Args;
const { rank, worldSize: n } = rankEnv();
const backend = await resolveBackend(a.plugin);
const dev = backend.capabilities.sharedDevice ? 0 : rank;
const store = await TcpStore.create({ host: "127.0.0.1", port: a.port });
const bootstrap = storeBootstrap(store, { rank, worldSize: n, prefix: 'bench', timeoutMs: 600_000 });
const comm = await backend.createCommunicator({ rank, worldSize: n, deviceIndex: dev, bootstrap, timeoutMs: 600_000 });


function f32(count: number, v: number): Tensor {
  return toDevice(backend, { dtype: 'float32', shape: [count], device: 'cpu', data: new Float32Array(count).fill(v) }, dev);
}

/**
 * One case's buffers, made once and reused by every call (as nccl-tests does): a fresh upload,
 * a readback and a cudaFree per call would cost far more than the collective at large sizes.
 */
function setup(op: string, count: number): { go: () => Promise<unknown>; check: () => number; free: () => void } {
  // size_bytes is the larger buffer, as nccl-tests reports it (allGather: the output).
  const per = op === 'allGather' ? count / n : op === 'reduceScatter' ? count / n : count;
  const inp = f32(op === 'reduceScatter' ? count : per, rank + 1);
  const out = op === 'allGather' ? emptyOn(backend, [count], 'float32', dev) : op === 'reduceScatter' ? emptyOn(backend, [per], 'float32', dev) : inp;
  // In place for allReduce and broadcast (out = the input), as nccl-tests runs them.
  const go = () => op === 'allReduce' ? comm.allReduce(inp, { out }) : op === 'allGather' ? comm.allGather(inp, { out })
    : op === 'reduceScatter' ? comm.reduceScatter(inp, { out }) : comm.broadcast(inp, { src: 0, out });
  // Right after the first call only: in place, later calls reduce what the earlier ones left.
  const check = () => {
    const got = fromDevice(backend, out).data as Float32Array;
    let wrong = 0;
    for (let i = 0; i < got.length; i++) {
      const want = op === 'allReduce' || op === 'reduceScatter' ? (n * (n + 1)) / 2 : op === 'broadcast' ? 1 : Math.floor(i / per) + 1;
      if (got[i] !== want) wrong++;
    }
    return wrong;
  };
  const free = () => { freeTensor(backend, inp); if (out !== inp) freeTensor(backend, out); };
  return { go, check, free };
}

const rows: Omit<Row, 'bench'>[] = [];
for (const op of a.ops) {
  for (const size of a.sizes) {
    const count = Math.max(n, Math.floor(size / 4 / n) * n);
    const times: number[] = [];
    const c = setup(op, count);
    await c.go();
    const wrong = c.check(); // the first call checked, as nccl-tests does with -c 1
    for (let i = 0; i < a.warmup + a.iters; i++) {
      const t0 = performance.now();
      await c.go();
      if (i >= a.warmup) times.push((performance.now() - t0) * 1000);
    }
    c.free();
    const bytes = count * 4;
    // allReduce and broadcast above run in place (out is the input); allGather and reduceScatter out of place.
    const form = placeOf(op as CollOp, bytes, n, { us: median(times), wrong, iters: a.iters });
    const inPlace = op === 'allReduce' || op === 'broadcast';
    const row = collRow({
      impl: a.plugin === 'cpu' ? 'cpu' : 'groupcomm', round: 1, op: op as CollOp, n, size: bytes, count, dtype: 'float32', redop: 'sum', root: 0,
      oop: inPlace ? {} : form, ip: inPlace ? form : {}, extra: { p99_us: percentile(times, 0.99) },
    });
    rows.push(row);
    if (rank === 0) process.stdout.write('@@ROW ' + JSON.stringify(row) + '\n');
  }
}
await comm.close();
await store.close();
reportResult(rank === 0 ? { rows } : { rows: [] });
