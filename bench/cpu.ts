/**
 * `groupcomm bench cpu`: CpuGroup collectives between rank processes on 127.0.0.1, in the
 * manner of nccl-tests (flags -b/-e/-f, -d, -o, -r, -n, -w, -c, -g; columns size, count, type,
 * redop, root, then time, algbw, busbw, #wrong out of place and in place; "# Avg bus bandwidth"
 * at the end), with a peer (gloo through torch: peers/gloo_bench.py) run on the same cases in
 * the same invocation, rounds interleaved (bench/rounds.ts), and an SVG of busbw against size.
 * See docs/bench.md. The rank processes are bench/cpu_worker.ts.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { packageRoot } from '../host/base/pkgroot.js';
import { itemSize, type DType } from '../host/core/tensor.js';
import { REDUCE_OPS } from '../host/core/reduce.js';
import { TcpStoreServer } from '../host/store/server.js';
import {
  bytes, integer, list, number, oneOf, parse, OUTPUT_OPTIONS, PLOT_OPTION, peerOptions, UsageError, type Spec,
} from './args.js';
import { BENCH_DTYPES, COLL_OPS, geometry, type CollOp } from './collective.js';
import type { CpuCase, CpuConfig, CpuResult } from './cpu_worker.js';
import { measureLimits } from './limits.js';
import { collRow, finishCollectives, ncclTable, placeOf } from './nccl.js';
import { peerCommand, runPeer, tail } from './peers.js';
import type { Report } from './report.js';
import { sizeStr, type Table } from './table.js';

export const DESCRIPTION = `CpuGroup collectives between rank processes on 127.0.0.1, in the manner of nccl-tests.
Each case runs out of place and in place (where the op has the form), checked once (-c 1),
then timed: -n calls, or as many as fit in --seconds. A call's time is the slowest rank's;
rows give the median. busbw = algbw x factor (allReduce 2(n-1)/n, allGather and reduceScatter
(n-1)/n, broadcast 1), as nccl-tests' doc/PERFORMANCE.md. See docs/bench.md.`;

export const OPTIONS = {
  ranks: { short: 'g', arg: 'LIST', group: 'participation', default: '2,4', parse: list(integer(2, 256), 'world sizes >= 2'), help: 'world sizes to run (one process per rank)' },
  runtime: { arg: 'NAME', group: 'participation', parse: oneOf(['node', 'bun'] as const), help: 'runtime of the rank processes (default: the one running the bench)' },
  transport: { short: 't', arg: 'LIST', group: 'transport', parse: list(oneOf(['tcp', 'shm', 'auto'] as const), 'tcp, shm, auto'), help: "CpuGroup transports, one set of rows each (impl groupcomm-<transport>; default: the group's own)" },
  ops: { arg: 'LIST', group: 'parameters', default: 'allReduce,broadcast,allGather,barrier', parse: list(oneOf<CollOp>(COLL_OPS, { all_reduce: 'allReduce', all_gather: 'allGather', reduce_scatter: 'reduceScatter' }), COLL_OPS.join(', ')), help: 'collectives' },
  minbytes: { short: 'b', arg: 'SIZE', group: 'parameters', parse: bytes, help: 'smallest size (with -e, -f; instead of --sizes)' },
  maxbytes: { short: 'e', arg: 'SIZE', group: 'parameters', parse: bytes, help: 'largest size' },
  stepfactor: { short: 'f', arg: 'F', group: 'parameters', parse: integer(2), help: 'multiply the size by F between cases (default 2)' },
  sizes: { arg: 'LIST', group: 'parameters', parse: list(bytes, 'sizes such as 4K, 256K, 4M, 64M'), help: 'sizes, bytes of the larger buffer (default 4K,256K,4M,64M; not with -b/-e/-f)' },
  datatype: { short: 'd', arg: 'TYPE', group: 'parameters', default: 'float32', parse: oneOf<(typeof BENCH_DTYPES)[number]>(BENCH_DTYPES, { float: 'float32', double: 'float64', half: 'float16', bf16: 'bfloat16', int: 'int32' }), help: `element type: ${BENCH_DTYPES.join(', ')}` },
  op: { short: 'o', arg: 'OP', group: 'parameters', default: 'sum', parse: oneOf(REDUCE_OPS), help: `reduction of allReduce and reduceScatter: ${REDUCE_OPS.join(', ')}` },
  root: { short: 'r', arg: 'RANK', group: 'parameters', default: '0', parse: integer(0), help: 'root of broadcast' },
  iters: { short: 'n', arg: 'N', group: 'parameters', parse: integer(1, 1_000_000), help: 'timed calls per case (default: as many as fit in --seconds, 3 to 5000)' },
  seconds: { arg: 'S', group: 'parameters', default: '1', parse: number(0), help: 'time per case and form when -n is not given' },
  warmup_iters: { short: 'w', arg: 'N', group: 'parameters', default: '1', parse: integer(0, 1_000_000), help: 'untimed calls before the timed ones' },
  check: { short: 'c', arg: '0|1', group: 'parameters', default: '1', parse: oneOf(['0', '1'] as const), help: 'check the result of one call per case and form (#wrong)' },
  'skip-limits': { group: 'output', help: 'do not measure memcpy and loopback TCP bandwidth (the floor shown in a note)' },
  ...peerOptions('gloo_bench.py'),
  ...OUTPUT_OPTIONS,
  ...PLOT_OPTION,
} satisfies Spec;

type Options = ReturnType<typeof parse<typeof OPTIONS>>;

/** The case sizes: --sizes, or -b..-e by -f (nccl-tests), or the default list. */
function sizesOf(o: Options, cmd: string): number[] {
  const sweep = o.minbytes !== undefined || o.maxbytes !== undefined || o.stepfactor !== undefined;
  if (sweep && o.sizes) throw new UsageError(`${cmd}: give --sizes or -b/-e/-f, not both`);
  if (!sweep) return o.sizes ?? [4 << 10, 256 << 10, 4 << 20, 64 << 20];
  const lo = o.minbytes ?? 4 << 10;
  const hi = o.maxbytes ?? lo;
  if (lo < 1 || hi < lo) throw new UsageError(`${cmd}: -b must be >= 1 and -e >= -b (got ${lo} and ${hi})`);
  const out: number[] = [];
  for (let s = lo; s <= hi; s *= o.stepfactor ?? 2) out.push(s);
  return out;
}

interface Ctx {
  o: Options;
  report: Report;
  sizes: number[];
  ops: CollOp[];
  dtype: DType;
  rounds: number;
  table: Table;
}

// ---- our rows -----------------------------------------------------------------------------------

function workerCommand(runtime: 'node' | 'bun'): [string, string[]] {
  const root = packageRoot();
  const bun = typeof (process.versions as Record<string, string>).bun === 'string';
  if (runtime === 'bun') return [bun ? process.execPath : path.join(root, 'node_modules', '.bin', 'bun'), [path.join(root, 'bench', 'cpu_worker.ts')]];
  const file = path.join(root, 'dist', 'bench', 'cpu_worker.js');
  if (!fs.existsSync(file)) throw new Error(`bench cpu: ${file} is missing; run npm run build`);
  return [bun ? 'node' : process.execPath, [file]];
}

/** Runs one world; `onRow` sees each case as rank 0 reports it. Rejects with every failing rank's stderr. */
function runWorld(n: number, cfg: CpuConfig, runtime: 'node' | 'bun', onRow: (r: CpuResult) => void): Promise<void> {
  const [cmd, args] = workerCommand(runtime);
  const perCase = (cfg.iters !== undefined ? 60 : cfg.seconds * 4 + 30) * 1000;
  const deadlineMs = 60_000 + cfg.cases.length * 2 * perCase;
  return new Promise((resolve, reject) => {
    const children = Array.from({ length: n }, (_, r) => spawn(cmd, args, {
      env: { ...process.env, RANK: String(r), WORLD_SIZE: String(n), BENCH_CPU_CFG: JSON.stringify(cfg) },
      stdio: ['ignore', 'pipe', 'pipe'],
    }));
    let failed = '';
    let left = n;
    const timer = setTimeout(() => {
      failed += `ranks still running after ${deadlineMs / 1000} s; killed\n`;
      for (const c of children) c.kill('SIGKILL');
    }, deadlineMs);
    children.forEach((child, r) => {
      let err = '';
      let partial = '';
      child.stderr.setEncoding('utf8').on('data', (d: string) => { err += d; });
      child.stdout.setEncoding('utf8').on('data', (d: string) => {
        partial += d;
        let nl;
        while ((nl = partial.indexOf('\n')) >= 0) {
          const line = partial.slice(0, nl);
          partial = partial.slice(nl + 1);
          if (r === 0 && line.startsWith('@@ROW ')) onRow(JSON.parse(line.slice(6)) as CpuResult);
        }
      });
      child.on('close', (code, signal) => {
        if (code !== 0) {
          failed += `rank ${r} exited ${code ?? signal}: ${err.slice(-2000)}\n`;
          // One rank gone: the others would wait for it until their timeout.
          for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
        }
        if (--left === 0) {
          clearTimeout(timer);
          failed ? reject(new Error(`bench cpu (${n} ranks): ${failed}`)) : resolve();
        }
      });
    });
  });
}

async function ours(c: Ctx, n: number, round: number, transport: string | undefined, port: number): Promise<void> {
  const cases = c.ops.flatMap((op): CpuCase[] => (op === 'barrier' ? [{ op, bytes: 0 }] : c.sizes.map((b) => ({ op, bytes: b }))));
  const cfg: CpuConfig = {
    cases, dtype: c.dtype, redop: c.o.op, root: c.o.root, iters: c.o.iters, warmup: c.o.warmup_iters,
    seconds: c.o.seconds, check: c.o.check === '1', port, ...(transport ? { transport: transport as CpuConfig['transport'] } : {}),
  };
  const impl = transport ? `groupcomm-${transport}` : 'groupcomm';
  const bun = typeof (process.versions as Record<string, string>).bun === 'string';
  await runWorld(n, cfg, c.o.runtime ?? (bun ? 'bun' : 'node'), (r) => {
    const size = r.count * itemSize(c.dtype);
    const row = collRow({
      impl, round, op: r.op, n, size, count: r.count, dtype: c.dtype, redop: c.o.op, root: c.o.root,
      oop: placeOf(r.op, size, n, r.oop), ip: placeOf(r.op, size, n, r.ip),
      extra: r.peakRssMiB !== undefined ? { peak_rss_mib: r.peakRssMiB, rss_growth_mib: r.rssGrowthMiB } : undefined,
    });
    c.report.record(row);
    c.table.row(row);
    if (r.peakRssMiB !== undefined) {
      c.report.note(`${impl} ${r.op} ${sizeStr(size)}, ${n} ranks: peak RSS ${r.peakRssMiB.toFixed(1)} MiB on the worst rank, ${r.rssGrowthMiB!.toFixed(1)} MiB above its RSS when the timed calls began`);
    }
  });
}

// ---- the peer: gloo_bench.py --------------------------------------------------------------------

const GLOO_OPS: Record<string, CollOp> = { all_reduce: 'allReduce', broadcast: 'broadcast', all_gather: 'allGather', barrier: 'barrier' };
// torch's all_reduce and broadcast work in place; all_gather writes a list of outputs.
const GLOO_PLACE: Record<string, 'oop' | 'ip'> = { allReduce: 'ip', broadcast: 'ip', allGather: 'oop', barrier: 'oop' };

async function peer(c: Ctx, cmd: string, n: number, round: number): Promise<void> {
  const perWorld = c.sizes.length * 3 + 1;
  const deadline = Math.ceil(perWorld * (c.o.seconds * 3 + 5) + 60);
  let impl = 'gloo';
  const seen = new Map<string, number>();
  const run = await runPeer(cmd, ['--worlds', String(n), '--sizes', c.sizes.join(','), '--seconds', String(c.o.seconds), '--deadline', String(deadline)], (deadline + 30) * 1000, (line) => {
    const v = /torch (\d+\.\d+)/.exec(line);
    if (line.startsWith('#') && v) impl = `gloo-torch-${v[1]}`;
    const f = line.trim().split(/\s+/);
    if (f.length !== 7 || !/^\d+$/.test(f[0]) || !(f[1] in GLOO_OPS)) return;
    const op = GLOO_OPS[f[1]];
    if (!c.ops.includes(op)) return;
    // gloo_bench runs the sizes in the order given, per op; its size column rounds to KiB.
    const k = seen.get(op) ?? 0;
    seen.set(op, k + 1);
    const size = op === 'barrier' ? 0 : c.sizes[k];
    const count = geometry(op, size, 'float32', n).count;
    const p = placeOf(op, count * 4, n, { us: Number(f[4]) * 1000, iters: Number(f[3]) });
    const row = collRow({
      impl, round, op, n, size: count * 4, count, dtype: 'float32', redop: 'sum', root: 0,
      oop: GLOO_PLACE[op] === 'oop' ? p : {}, ip: GLOO_PLACE[op] === 'ip' ? p : {},
    });
    c.report.record(row);
    c.table.row(row);
  });
  if (run.code !== 0) c.report.note(`peer failed (exit ${run.code}${run.timedOut ? ', timed out' : ''}): ${tail(run)}`);
}

// ---- driver -------------------------------------------------------------------------------------

export async function run(argv: string[], report: Report): Promise<void> {
  const cmd = 'groupcomm bench cpu';
  const o = parse(OPTIONS, argv, cmd);
  const sizes = sizesOf(o, cmd);
  const ranks = o.ranks;
  if (ranks.some((n) => o.root >= n) && o.ops.includes('broadcast')) throw new UsageError(`${cmd}: bad value for -r/--root: '${o.root}' (a rank of every world size; the smallest is ${Math.min(...ranks)})`);
  const peerCmd = peerCommand(o, 'gloo_bench.py', cmd);
  const transports: (string | undefined)[] = o.transport ?? [undefined];
  const impls = transports.map((t) => (t ? `groupcomm-${t}` : 'groupcomm'));
  const dtype = o.datatype as DType;
  const table = ncclTable(report, { ops: o.ops, sizes, ranks, dtype, redop: o.op, rounds: o.rounds, impls: [...impls, ...(peerCmd ? ['gloo-torch-2.6'] : [])] });
  const c: Ctx = { o, report, sizes, ops: o.ops, dtype, rounds: o.rounds, table };

  const runtime = o.runtime ?? (typeof (process.versions as Record<string, string>).bun === 'string' ? 'bun' : 'node');
  report.note(`groupcomm CpuGroup, ranks as ${runtime} processes on 127.0.0.1; ${o.datatype}, redop ${o.op}, root ${o.root}; ` +
    (o.iters ? `${o.iters} timed calls` : `${o.seconds} s of calls`) + ` per case and form after ${o.warmup_iters} warm-up call(s); check ${o.check}; ${o.rounds} round(s)`);
  if (!o['skip-limits']) {
    const lim = await measureLimits();
    Object.assign(report.machine, lim);
    report.note(`this machine now: memcpy ${lim.memcpy_gbps.toFixed(2)} GB/s (64 MiB, one process), loopback TCP ${Number.isFinite(lim.loopback_tcp_gbps) ? lim.loopback_tcp_gbps.toFixed(2) : 'n/a'} GB/s (two ${runtime} processes, 4 MiB writes)`);
  }
  let peerOk = !!peerCmd;
  if (peerCmd && (o.datatype !== 'float32' || o.op !== 'sum' || o.root !== 0)) {
    report.note('peer skipped: gloo_bench.py runs float32, sum, root 0 only');
    peerOk = false;
  } else if (!peerCmd) {
    report.note('no peer: pass --peer CMD or --peers-dir DIR for gloo rows (docs/bench.md)');
  }
  const server = await TcpStoreServer.listen({ host: '127.0.0.1', port: 0 });
  try {
    for (let round = 1; round <= o.rounds; round++) {
      for (const n of ranks) {
        for (const t of transports) await ours(c, n, round, t, server.port);
        if (peerOk) await peer(c, peerCmd!, n, round);
      }
    }
  } finally {
    await server.close();
  }
  finishCollectives(report, { rounds: o.rounds, ours: impls, plot: o.plot, title: `groupcomm bench cpu: ${o.datatype}, ${runtime} ranks, median of ${o.rounds} round(s) per point` });
}
