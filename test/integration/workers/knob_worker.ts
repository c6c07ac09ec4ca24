/**
 * One rank of the CPU-group knob tests (cpu_large.test.ts, cpu_knobs.test.ts). argv: MODE STORE_DIR JSON.
 *   large  multi-MiB sum and avg reductions over the given transport at the default tuning: the
 *          ring's last forwarded segments are written straight from the result buffer, so the
 *          avg divide must wait for them (a result changed under a pending write reaches the
 *          peers divided twice).
 *   knobs  JSON is a list of configurations ({ name, options, env }): for each, one group with
 *          those options (and GROUPCOMM_* variables set while it is created) runs every
 *          collective at sizes either side of its thresholds, checked bit for bit.
 * Reports { rank, checks, failures, transports }.
 */
import { CpuGroup, type CpuGroupOptions } from '../../../host/cpu/group.js';
import { bytesOf, empty, type CpuTensor, type DType } from '../../../host/core/tensor.js';
import { finishAvg, reduceBytes, type ReduceOp } from '../../../host/core/reduce.js';
import { FileStore } from '../../helpers/cpu_filestore.js';
import { rankEnv, reportResult } from '../../helpers/ranks.js';
import { expectedReduce, input, sameBytes } from './cpu_data.js';
import { checker } from '../../helpers/checks.js';

const { rank, worldSize: P } = rankEnv();
const [mode, storeDir, json = '{}'] = process.argv.slice(2);
const store = new FileStore(storeDir);
const transports: Record<string, string[]> = {};

const checks = checker(rank, 20);
const { check, failures } = checks;

export interface KnobConfig {
  name: string;
  options?: Partial<CpuGroupOptions>;
  env?: Record<string, string>;
  /** Element counts (float32 unless dtypes say otherwise) to run every collective at. */
  counts: number[];
  dtypes?: DType[];
  ops?: ReduceOp[];
  /** Reductions only (skip broadcast, gathers, scatter, allToAll, send/recv). */
  reduceOnly?: boolean;
}

async function group(name: string, options: Partial<CpuGroupOptions>, env: Record<string, string> = {}): Promise<CpuGroup> {
  const saved: Record<string, string | undefined> = {};
  for (const [k, v] of Object.entries(env)) {
    saved[k] = process.env[k];
    process.env[k] = v;
  }
  try {
    const g = await CpuGroup.create({ store, rank, worldSize: P, groupName: name, timeoutMs: 60_000, ...options });
    transports[name] = [...Array(P).keys()].map((p) => g.transportTo(p));
    return g;
  } finally {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
}

/** allReduce out of place and in place, reduceScatter, for each op; the input must stay as it was. */
async function reductions(g: CpuGroup, tag: string, dtype: DType, ops: ReduceOp[], n: number, seed: number): Promise<number> {
  for (const op of ops) {
    seed++;
    const x = input(dtype, op, rank, seed, n);
    const want = expectedReduce(dtype, op, P, seed, n);
    const r = await g.allReduce(x, { op });
    check(sameBytes(bytesOf(r), want), `${tag}: allReduce ${dtype} ${op} n=${n}`);
    check(sameBytes(bytesOf(x), bytesOf(input(dtype, op, rank, seed, n))), `${tag}: allReduce ${dtype} ${op} n=${n} left its input`);
    await g.allReduce(x, { op, out: x });
    check(sameBytes(bytesOf(x), want), `${tag}: allReduce ${dtype} ${op} n=${n} in place`);

    seed++;
    const y = input(dtype, op, rank, seed, P * n);
    const full = expectedReduce(dtype, op, P, seed, P * n);
    const out = empty([n], dtype);
    await g.reduceScatter(y, { op, out });
    const blk = bytesOf(out).byteLength;
    check(sameBytes(bytesOf(out), full.subarray(rank * blk, (rank + 1) * blk)), `${tag}: reduceScatter ${dtype} ${op} n=${n}`);
  }
  return seed;
}

/** Everything else: broadcast, allGather, gather, scatter, allToAll, send/recv, barrier. */
async function movement(g: CpuGroup, tag: string, dtype: DType, n: number, seed: number): Promise<number> {
  const blkOf = (t: { data: ArrayBufferView }) => t.data.byteLength;
  seed++;
  const src = seed % P;
  const b = rank === src ? input(dtype, undefined, src, seed, n) : empty([n], dtype);
  await g.broadcast(b, { src, out: b });
  check(sameBytes(bytesOf(b), bytesOf(input(dtype, undefined, src, seed, n))), `${tag}: broadcast ${dtype} n=${n} src=${src}`);

  seed++;
  const mine = input(dtype, undefined, rank, seed, n);
  const all = bytesOf(await g.allGather(mine));
  const blk = blkOf(mine);
  for (let r = 0; r < P; r++) check(sameBytes(all.subarray(r * blk, (r + 1) * blk), bytesOf(input(dtype, undefined, r, seed, n))), `${tag}: allGather ${dtype} n=${n} block ${r}`);

  seed++;
  const dst = seed % P;
  const gathered = await g.gather(input(dtype, undefined, rank, seed, n), { dst });
  if (rank === dst) {
    for (let r = 0; r < P; r++) check(sameBytes(bytesOf(gathered!).subarray(r * blk, (r + 1) * blk), bytesOf(input(dtype, undefined, r, seed, n))), `${tag}: gather ${dtype} n=${n} block ${r}`);
  }

  seed++;
  const root = (seed + 1) % P;
  const sc = await g.scatter(rank === root ? input(dtype, undefined, root, seed, P * n) : undefined, { src: root, out: empty([n], dtype) });
  check(sameBytes(bytesOf(sc), bytesOf(input(dtype, undefined, root, seed, P * n)).subarray(rank * blk, (rank + 1) * blk)), `${tag}: scatter ${dtype} n=${n}`);

  seed++;
  const a2a = await g.allToAll(input(dtype, undefined, rank, seed, P * n));
  for (let r = 0; r < P; r++) {
    const from = bytesOf(input(dtype, undefined, r, seed, P * n)).subarray(rank * blk, (rank + 1) * blk);
    check(sameBytes(bytesOf(a2a).subarray(r * blk, (r + 1) * blk), from), `${tag}: allToAll ${dtype} n=${n} from ${r}`);
  }

  // Point to point around the ring, three messages in flight before anyone receives: the
  // receiver lags, so a small shm ring fills and wraps with frames still unread.
  if (P === 1) return seed;
  seed++;
  const to = (rank + 1) % P;
  const from = (rank + P - 1) % P;
  const sends = [0, 1, 2].map((k) => g.send(input(dtype, undefined, rank, seed + k, n), to, { tag: 5 }));
  await new Promise((r) => setTimeout(r, 20));
  for (let k = 0; k < 3; k++) {
    const got = await g.recv(empty([n], dtype), from, { tag: 5 });
    check(sameBytes(bytesOf(got), bytesOf(input(dtype, undefined, from, seed + k, n))), `${tag}: send/recv ${dtype} n=${n} #${k}`);
  }
  await Promise.all(sends);
  await g.barrier();
  return seed + 3;
}

/** Rank r's large input: small integers, fast to make for millions of elements. */
function bigInput(dtype: 'float32' | 'float64', r: number, seed: number, n: number): CpuTensor {
  const data = dtype === 'float32' ? new Float32Array(n) : new Float64Array(n);
  for (let i = 0; i < n; i++) data[i] = (i * 7 + r * 5 + seed) % 11;
  return { dtype, shape: [n], device: 'cpu', data };
}

/** The reduction of every rank's bigInput, with the core's kernels (so avg rounds the same). */
function bigExpected(dtype: 'float32' | 'float64', op: 'sum' | 'avg', seed: number, n: number): Uint8Array {
  const acc = bytesOf(bigInput(dtype, 0, seed, n));
  for (let r = 1; r < P; r++) reduceBytes('sum', dtype, acc, bytesOf(bigInput(dtype, r, seed, n)));
  if (op === 'avg') finishAvg(dtype, acc, P);
  return acc;
}

/** Multi-MiB avg and sum, out of place and in place, and reduceScatter avg; bit for bit. */
async function large(g: CpuGroup, n: number, rounds: number): Promise<void> {
  let seed = 0;
  type Step = ['float32' | 'float64', number, 'avg' | 'sum'];
  const plan = [...Array(rounds).keys()].flatMap((r): Step[] => [['float32', n, 'avg'], ['float64', n >> 1, 'avg'], ...(r === 0 ? [['float32', n, 'sum'] as Step] : [])]);
  for (const [dtype, count, op] of plan) {
    seed++;
    const want = bigExpected(dtype, op, seed, count);
    const x = bigInput(dtype, rank, seed, count);
    check(sameBytes(bytesOf(await g.allReduce(x, { op })), want), `large allReduce ${dtype} ${op} n=${count}`);
    await g.allReduce(x, { op, out: x });
    check(sameBytes(bytesOf(x), want), `large allReduce ${dtype} ${op} n=${count} in place`);
  }
  seed++;
  const want = bigExpected('float32', 'avg', seed, n);
  const out = empty([n / P | 0], 'float32');
  const blk = bytesOf(out).byteLength;
  await g.reduceScatter(bigInput('float32', rank, seed, (n / P | 0) * P), { op: 'avg', out });
  check(sameBytes(bytesOf(out), want.subarray(rank * blk, (rank + 1) * blk)), `large reduceScatter float32 avg n=${n}`);
}

async function main(): Promise<void> {
  if (mode === 'large') {
    const { transport = 'tcp', count = 1 << 22, stallMs = 0, rounds = 1 } = JSON.parse(json) as {
      transport?: CpuGroupOptions['transport']; count?: number; stallMs?: number; rounds?: number;
    };
    // Default tuning (512 KiB segments): frames are written from the caller's memory.
    const g = await group('large', { transport });
    // The last rank is busy now and then (as a rank computing between reads would be): its
    // peers' writes to it then wait in their sockets, still referencing their buffers.
    const stall = stallMs > 0 && rank === P - 1 ? setInterval(() => { const t = performance.now(); while (performance.now() - t < stallMs); }, 1) : undefined;
    try {
      await large(g, count, rounds);
    } finally {
      clearInterval(stall);
    }
    await g.destroy();
  } else if (mode === 'knobs') {
    const configs = JSON.parse(json) as KnobConfig[];
    let seed = 0;
    for (const c of configs) {
      const g = await group(c.name, c.options ?? {}, c.env);
      try {
        for (const dtype of c.dtypes ?? ['float32']) {
          for (const n of c.counts) {
            seed = await reductions(g, c.name, dtype, c.ops ?? ['sum', 'avg', 'max'], n, seed);
            if (!c.reduceOnly) seed = await movement(g, c.name, dtype, n, seed);
          }
        }
      } finally {
        await g.destroy();
      }
    }
  } else {
    throw new Error(`unknown mode ${mode}`);
  }
  reportResult({ rank, checks: checks.count, failures, transports });
}

await main();
