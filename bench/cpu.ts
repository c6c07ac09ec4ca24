/**
 * `groupcomm bench cpu [--ranks 2,4] [--sizes 4K,256K,4M,64M] [--ops allreduce,broadcast,allgather,barrier]
 *   [--seconds 1] [--runtime node|bun] [--transport tcp,shm] [--gloo auto|on|off] [--json FILE]`
 *
 * CpuGroup collectives between local rank processes (float32, sum), nccl-tests columns: size,
 * count, type, op, time, algbw, busbw, #wrong (results checked on the first call), plus busbw as
 * a fraction of loopback TCP (3.4 GB/s here), and for the 64 MiB allReduce the peak RSS per rank
 * (peak_rss_mib, the worst rank) and how far it rose above the RSS with the tensor allocated
 * (rss_growth_mib: the collective's own memory).
 * Method as in peers/gloo_bench.py, so rows compare: one warm-up call, two calibration calls,
 * then N timed calls (N from --seconds, the same on all ranks); a call's time is the slowest
 * rank's; rows give the median. With torch 2.6 in /opt/trixie (or --gloo on), gloo runs the
 * same cases right after ours for each world size (impl 'gloo-torch-2.6').
 *
 * `--transport` lists the CpuGroup transports to run (each a set of rows, impl
 * 'groupcomm-<transport>'); default: the group's default (GROUPCOMM_CPU_TRANSPORT or its own).
 *
 * The same file is the rank process (started with --rank-worker).
 */
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { median, percentile, type Report } from './report.js';
import { CpuGroup } from '../host/cpu/group.js';
import { TcpStore } from '../host/store/client.js';
import { TcpStoreServer } from '../host/store/server.js';
import { empty, tensor } from '../host/core/tensor.js';

const LOOPBACK_GBPS = 3.4;
const TRIXIE = '/opt/trixie';
const GLOO_SCRIPT = '/work/shared/peers/trixie-torch.sh';

interface Case { op: string; size: number }
interface Timing extends Case { durs: number[]; wrong: number; peakRssMiB?: number; rssGrowthMiB?: number }

function parseSize(s: string): number {
  const m = /^(\d+)([KMG]?)i?B?$/i.exec(s.trim());
  if (!m) throw new Error(`bad size '${s}' (use e.g. 4K, 256K, 4M, 64M)`);
  return Number(m[1]) * ({ '': 1, K: 1024, M: 1 << 20, G: 1 << 30 } as Record<string, number>)[m[2].toUpperCase()];
}

const sizeStr = (b: number) => (b >= 1 << 20 ? `${b >> 20}M` : b >= 1024 ? `${b >> 10}K` : `${b}`);

/** nccl-tests' bus bandwidth factor. */
function busFactor(op: string, n: number): number {
  if (op === 'allreduce') return (2 * (n - 1)) / n;
  if (op === 'allgather') return (n - 1) / n;
  return 1;
}

// ---- rank process ---------------------------------------------------------------------------

/** Peak RSS since the last reset (Linux), in MiB. */
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

async function rankMain(): Promise<void> {
  const rank = Number(process.env.RANK);
  const P = Number(process.env.WORLD_SIZE);
  const cases = JSON.parse(process.env.GROUPCOMM_BENCH_CASES!) as Case[];
  const seconds = Number(process.env.GROUPCOMM_BENCH_SECONDS ?? 1);
  const store = await TcpStore.create({ port: Number(process.env.GROUPCOMM_BENCH_STORE_PORT), timeoutMs: 60_000 });
  const g = await CpuGroup.create({ store, rank, worldSize: P, groupName: 'bench', timeoutMs: 120_000 });
  const slowest = async (x: number[]) => Array.from((await g.allReduce(tensor(Float64Array.from(x)), { op: 'max' })).data as Float64Array);
  const out: Timing[] = [];
  for (const c of cases) {
    const n = c.size / 4;
    let fn: () => Promise<unknown>;
    let verify: () => number;
    let rssBefore: number | undefined;
    if (c.op === 'allreduce') {
      const t = tensor(Float32Array.from({ length: n }, (_, i) => (i % 7) + rank));
      const want = (i: number) => P * (i % 7) + (P * (P - 1)) / 2;
      fn = () => g.allReduce(t, { out: t }); // in place, as gloo's bench
      verify = () => {
        let bad = 0;
        for (let i = 0; i < n; i++) if (t.data[i] !== want(i)) bad++;
        (t.data as Float32Array).fill(0);
        return bad;
      };
      if (c.size === 64 << 20) {
        resetPeakRss();
        rssBefore = process.memoryUsage().rss / (1 << 20);
      }
    } else if (c.op === 'broadcast') {
      const t = tensor(Float32Array.from({ length: n }, (_, i) => (rank === 0 ? i % 1000 : -1)));
      fn = () => g.broadcast(t, { src: 0, out: t });
      verify = () => {
        let bad = 0;
        for (let i = 0; i < n; i++) if (t.data[i] !== i % 1000) bad++;
        return bad;
      };
    } else if (c.op === 'allgather') {
      const per = Math.floor(n / P);
      const inp = tensor(Float32Array.from({ length: per }, (_, i) => rank * 1000 + (i % 1000)));
      const o = empty([per * P], 'float32');
      fn = () => g.allGather(inp, { out: o });
      verify = () => {
        let bad = 0;
        for (let i = 0; i < per * P; i++) if (o.data[i] !== Math.floor(i / per) * 1000 + ((i % per) % 1000)) bad++;
        return bad;
      };
    } else {
      fn = () => g.barrier();
      verify = () => 0;
    }
    await g.barrier();
    await fn();
    const wrong = (await slowest([verify()]))[0]; // the worst rank's count
    const t0 = performance.now();
    await fn();
    await fn();
    const cal = (await slowest([(performance.now() - t0) / 2]))[0];
    const iters = Math.max(3, Math.min(5000, Math.floor((seconds * 1000) / Math.max(cal, 1e-3))));
    const durs: number[] = [];
    for (let i = 0; i < iters; i++) {
      const a = performance.now();
      await fn();
      durs.push(performance.now() - a);
    }
    const peak = rssBefore !== undefined ? peakRssMiB() : undefined;
    // Per-rank peaks travel as the max; per-iteration times as the slowest rank's. The growth
    // is the peak minus the RSS once the tensor existed: what the collective itself needed.
    const [peakAll, growth] = peak !== undefined ? await slowest([peak, peak - rssBefore!]) : [undefined, undefined];
    out.push({ ...c, durs: await slowest(durs), wrong, peakRssMiB: peakAll, rssGrowthMiB: growth });
  }
  await g.barrier();
  await g.destroy();
  await store.close();
  if (rank === 0) process.stdout.write('@@BENCH ' + JSON.stringify(out) + '\n');
}

// ---- driver ---------------------------------------------------------------------------------

function runRanks(n: number, cases: Case[], seconds: number, runtime: string, storePort: number, transport?: string): Promise<Timing[]> {
  const self = fileURLToPath(import.meta.url);
  const exe = runtime === 'bun' ? (process.versions.bun ? process.execPath : 'bun') : process.versions.bun ? 'node' : process.execPath;
  const script = runtime === 'bun' ? self.replace(/dist\/(bench\/cpu)\.js$/, '$1.ts') : self.replace(/\/bench\/cpu\.ts$/, '/dist/bench/cpu.js');
  return new Promise((resolve, reject) => {
    let result: Timing[] | undefined;
    let failed = '';
    let left = n;
    for (let r = 0; r < n; r++) {
      const child = spawn(exe, [script, '--rank-worker'], {
        env: {
          ...process.env, RANK: String(r), WORLD_SIZE: String(n), GROUPCOMM_BENCH_CASES: JSON.stringify(cases),
          GROUPCOMM_BENCH_SECONDS: String(seconds), GROUPCOMM_BENCH_STORE_PORT: String(storePort),
          ...(transport ? { GROUPCOMM_CPU_TRANSPORT: transport } : {}),
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let out = '';
      let err = '';
      child.stdout.on('data', (d) => (out += d));
      child.stderr.on('data', (d) => (err += d));
      child.on('close', (code) => {
        const line = out.split('\n').find((l) => l.startsWith('@@BENCH '));
        if (line) result = JSON.parse(line.slice(8));
        if (code !== 0) failed += `rank ${r} exited ${code}: ${err.slice(-2000)}\n`;
        if (--left === 0) (failed || !result ? reject(new Error(failed || 'no result from rank 0')) : resolve(result));
      });
    }
  });
}

interface GlooRow { n: number; op: string; size: number; iters: number; medianMs: number; algbw?: number; busbw?: number }

function runGloo(n: number, sizes: number[], seconds: number): GlooRow[] | string {
  const r = spawnSync('bash', [GLOO_SCRIPT, TRIXIE, 'run', 'python3', '/peers/gloo_bench.py', '--worlds', String(n),
    '--sizes', sizes.join(','), '--seconds', String(seconds)], { encoding: 'utf8', timeout: 200_000 });
  if (r.status !== 0) return `gloo_bench failed (${r.status}): ${(r.stderr || r.stdout || '').slice(-300)}`;
  const rows: GlooRow[] = [];
  for (const line of r.stdout.split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f.length !== 7 || !/^\d+$/.test(f[0])) continue;
    const op = f[1].replace('_', '');
    rows.push({
      n: Number(f[0]), op, size: f[2] === '-' ? 0 : parseSize(f[2].replace('iB', '')), iters: Number(f[3]),
      medianMs: Number(f[4]), algbw: f[5] === '-' ? undefined : Number(f[5]), busbw: f[6] === '-' ? undefined : Number(f[6]),
    });
  }
  return rows;
}

/** One table row; every row has the same keys in the same order (the table's columns). */
function row(x: {
  name: string; impl: string; op: string; ranks: number; size: number; medianMs: number; p99Ms?: number;
  algbw?: number; busbw?: number; wrong?: number; iters: number; peakRssMiB?: number; rssGrowthMiB?: number;
}): Parameters<Report['add']>[0] {
  return {
    name: x.name, impl: x.impl, dtype: 'float32', op: x.op, ranks: x.ranks, size_bytes: x.size, count: x.size / 4,
    median_us: x.medianMs * 1000, p99_us: x.p99Ms === undefined ? undefined : x.p99Ms * 1000,
    algbw_gbps: x.algbw, busbw_gbps: x.busbw, busbw_frac: x.busbw === undefined ? undefined : x.busbw / LOOPBACK_GBPS,
    wrong: x.wrong, iters: x.iters, peak_rss_mib: x.peakRssMiB, rss_growth_mib: x.rssGrowthMiB,
  };
}

export async function run(argv: string[], report: Report): Promise<void> {
  const opt = (name: string, d: string) => {
    const i = argv.indexOf(`--${name}`);
    return i >= 0 && argv[i + 1] !== undefined ? argv[i + 1] : d;
  };
  const ranks = opt('ranks', '2,4').split(',').map(Number);
  const sizes = opt('sizes', '4K,256K,4M,64M').split(',').map(parseSize);
  const ops = opt('ops', 'allreduce,broadcast,allgather,barrier').split(',');
  const seconds = Number(opt('seconds', '1'));
  const runtime = opt('runtime', process.versions.bun ? 'bun' : 'node');
  const glooMode = opt('gloo', 'auto');
  const transports: (string | undefined)[] = argv.includes('--transport') ? opt('transport', 'tcp').split(',') : [undefined];
  const gloo = glooMode === 'on' || (glooMode === 'auto' && fs.existsSync(`${TRIXIE}/usr/bin/python3`));
  const cases: Case[] = [];
  for (const op of ops) {
    if (op === 'barrier') cases.push({ op, size: 0 });
    else for (const size of sizes) cases.push({ op, size });
  }
  report.note(`groupcomm CpuGroup on 127.0.0.1 (transport ${transports.map((t) => t ?? 'default').join(', ')}), ${runtime}, float32 sum, ${seconds}s per case; busbw_frac = busbw / ${LOOPBACK_GBPS} GB/s loopback`);
  const server = await TcpStoreServer.listen({ port: 0 });
  try {
    for (const n of ranks) {
      for (const transport of transports) {
        const res = await runRanks(n, cases, seconds, runtime, server.port, transport);
        for (const t of res) {
          const med = median(t.durs);
          const algbw = t.op === 'barrier' ? undefined : t.size / (med / 1000) / 1e9;
          report.add(row({
            name: `${t.op}/${t.op === 'barrier' ? '-' : sizeStr(t.size)}`, impl: transport ? `groupcomm-${transport}` : 'groupcomm', op: t.op, ranks: n, size: t.size,
            medianMs: med, p99Ms: percentile(t.durs, 0.99), algbw, busbw: algbw === undefined ? undefined : algbw * busFactor(t.op, n),
            wrong: t.wrong, iters: t.durs.length, peakRssMiB: t.peakRssMiB, rssGrowthMiB: t.rssGrowthMiB,
          }));
        }
      }
      if (!gloo) continue;
      const g = runGloo(n, sizes, seconds);
      if (typeof g === 'string') {
        report.note(g);
        continue;
      }
      for (const r of g.filter((x) => ops.includes(x.op))) {
        report.add(row({
          name: `${r.op}/${r.op === 'barrier' ? '-' : sizeStr(r.size)}`, impl: 'gloo-torch-2.6', op: r.op, ranks: r.n, size: r.size,
          medianMs: r.medianMs, algbw: r.algbw, busbw: r.busbw, iters: r.iters,
        }));
      }
    }
  } finally {
    await server.close();
  }
}

if (process.argv.includes('--rank-worker')) {
  rankMain().catch((e) => {
    process.stderr.write(`${e?.stack ?? e}\n`);
    process.exit(1);
  });
}
