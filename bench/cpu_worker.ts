/**
 * One rank of `groupcomm bench cpu` (started by bench/cpu.ts with BENCH_CPU_CFG). For each case,
 * out of place then in place where the op has that form (bench/collective.ts): fill, one checked
 * call (-c), the warm-up calls (-w), then the timed calls — `iters` (-n) or as many as fit in
 * `seconds` after two calibration calls, the same count on every rank. A call's time is the
 * slowest rank's; the row gives the median. Rank 0 prints `@@ROW {json}` as soon as a case is
 * done, so the parent prints it at once.
 *
 * For the largest allReduce (≥ 64 MiB): the peak RSS of the worst rank during the timed calls,
 * and its rise over the RSS when they started, tensors allocated (what the collective needed).
 */
import fs from 'node:fs';
import { CpuGroup, type Transport } from '../host/cpu/group.js';
import { TcpStore } from '../host/store/client.js';
import { tensor, type CpuTensor, type DType } from '../host/core/tensor.js';
import type { ReduceOp } from '../host/core/reduce.js';
import { alloc, call, countWrong, fill, geometry, offered, poison, type CollOp, type Place } from './collective.js';
import { median } from './report.js';

export interface CpuCase { op: CollOp; bytes: number }
export interface CpuConfig {
  cases: CpuCase[];
  dtype: DType;
  redop: ReduceOp;
  root: number;
  iters?: number;
  warmup: number;
  seconds: number;
  check: boolean;
  port: number;
  transport?: Transport;
}
export interface PlaceResult { us: number; iters: number; wrong?: number }
export interface CpuResult extends CpuCase {
  count: number;
  oop?: PlaceResult;
  ip?: PlaceResult;
  peakRssMiB?: number;
  rssGrowthMiB?: number;
}

const cfg = JSON.parse(process.env.BENCH_CPU_CFG!) as CpuConfig;
const rank = Number(process.env.RANK);
const n = Number(process.env.WORLD_SIZE);

function peakRssMiB(): number | undefined {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync('/proc/self/status', 'utf8'));
    return m ? Number(m[1]) / 1024 : undefined;
  } catch {
    return undefined;
  }
}

function resetPeakRss(): void {
  try {
    fs.writeFileSync('/proc/self/clear_refs', '5');
  } catch {
    // not Linux, or not allowed: the peak is then the process-lifetime peak
  }
}

const store = await TcpStore.create({ host: '127.0.0.1', port: cfg.port, timeoutMs: 120_000 });
const g = await CpuGroup.create({ store, rank, worldSize: n, groupName: 'bench', timeoutMs: 600_000, ...(cfg.transport ? { transport: cfg.transport } : {}) });
/** Elementwise max over ranks (the slowest rank's time, the worst rank's count). */
const slowest = async (x: number[]) => Array.from((await g.allReduce(tensor(Float64Array.from(x)), { op: 'max' })).data as Float64Array);
const opts = { redop: cfg.redop, root: cfg.root };
const biggestAllReduce = Math.max(0, ...cfg.cases.filter((c) => c.op === 'allReduce').map((c) => c.bytes));

async function timePlace(c: CpuCase, place: Place, input: CpuTensor, out: CpuTensor, rss: { track: boolean; before?: number }): Promise<PlaceResult> {
  const fn = () => call(g, c.op, input, out, opts);
  await g.barrier();
  let wrong: number | undefined;
  if (cfg.check) {
    fill(input, rank);
    // The result lands where nothing of it was before: a separate output, or in place the
    // receivers' own tensor (an in-place allReduce's input is every rank's contribution).
    if (place === 'oop') poison(out);
    else if (c.op === 'broadcast' && rank !== cfg.root) poison(out);
    await fn();
    wrong = (await slowest([c.op === 'barrier' ? 0 : countWrong(c.op, out, rank, n, opts)]))[0];
  }
  for (let i = 0; i < cfg.warmup; i++) await fn();
  let iters = cfg.iters;
  if (iters === undefined) {
    const t0 = performance.now();
    await fn();
    await fn();
    const cal = (await slowest([(performance.now() - t0) / 2]))[0];
    iters = Math.max(3, Math.min(5000, Math.floor((cfg.seconds * 1000) / Math.max(cal, 1e-3))));
  }
  if (rss.track) {
    rss.before = process.memoryUsage().rss / (1 << 20);
    resetPeakRss();
  }
  const durs: number[] = new Array(iters);
  for (let i = 0; i < iters; i++) {
    const a = performance.now();
    await fn();
    durs[i] = performance.now() - a;
  }
  return { us: median(await slowest(durs)) * 1000, iters, wrong };
}

for (const c of cfg.cases) {
  const { count, inCount, outCount } = geometry(c.op, c.bytes, cfg.dtype, n);
  const res: CpuResult = { ...c, count };
  const input = alloc(inCount, cfg.dtype);
  fill(input, rank);
  const rss = { track: c.op === 'allReduce' && c.bytes === biggestAllReduce && c.bytes >= 64 << 20, before: undefined as number | undefined };
  for (const place of ['oop', 'ip'] as const) {
    if (!offered(c.op, place)) continue;
    const out = place === 'ip' ? input : alloc(outCount, cfg.dtype);
    res[place] = await timePlace(c, place, input, out, rss);
  }
  if (rss.before !== undefined) {
    const peak = peakRssMiB();
    if (peak !== undefined) [res.peakRssMiB, res.rssGrowthMiB] = await slowest([peak, peak - rss.before]);
  }
  if (rank === 0) process.stdout.write('@@ROW ' + JSON.stringify(res) + '\n');
}
await g.barrier();
await g.destroy();
await store.close();
process.exit(0);
