/**
 * `groupcomm bench pg`: StatelessProcessGroup over the TCP store, ranks in child processes on
 * 127.0.0.1:
 *   2 ranks: ping-pong round trip of a small dict and of a 1 MiB Uint8Array (rank 0 measures);
 *   4 ranks: broadcastObj one-way latency to the slowest receiver (a small dict, and one
 *            carrying 1 MiB of bytes; the peer has no 1 MiB broadcast), allGatherObj and barrier
 *            (slowest rank per iteration, back to back).
 * With a peer (`--peer CMD` or `--peers-dir DIR`: peers/vllm_like_pg_bench.py), the peer runs
 * after each of our rounds and its SUMMARY line becomes rows (impl 'vllm-like-torch-X.Y'), so
 * both sides come from one run, interleaved; the summary gives min/median/max over rounds and the
 * ratio of medians. `--floor` adds rows 'raw-node-sockets': the small ping-pong, broadcast and
 * allGather patterns over plain sockets between the rank processes (no store, no codec), the
 * floor of this machine and runtime.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { packageRoot } from '../host/base/pkgroot.js';
import { IS_BUN } from '../host/base/runtime.js';
import { encodeObject } from '../host/pg/codec.js';
import { integer, number, parse, OUTPUT_OPTIONS, PLOT_OPTION, peerOptions, type Spec } from './args.js';
import { SMALL } from './pg_cases.js';
import { peerCommand, runPeer, tail } from './peers.js';
import { writePlot } from './plot.js';
import { median, percentile, type Report } from './report.js';
import { summarize } from './rounds.js';

const MiB = 1 << 20;

export const DESCRIPTION = `The object channel (StatelessProcessGroup over the TCP store), ranks as processes on
127.0.0.1: small-dict and 1 MiB ping-pong round trips (2 ranks); broadcastObj to the slowest
receiver (a small dict, and one carrying 1 MiB), allGatherObj and barrier (4 ranks). Each case
warms up, then runs for --seconds.`;

export const OPTIONS = {
  seconds: { arg: 'S', group: 'parameters', default: '2', parse: number(0), help: 'timed seconds per case' },
  'warmup-seconds': { arg: 'S', group: 'parameters', default: '1', parse: number(0, true), help: 'warm-up seconds per case' },
  'warmup-calls': { arg: 'N', group: 'parameters', default: '5000', parse: integer(0), help: 'the 4-rank cases also warm up for at least N calls' },
  floor: { group: 'comparison', help: 'also run the same patterns over plain sockets (impl raw-node-sockets)' },
  ...peerOptions('vllm_like_pg_bench.py'),
  ...OUTPUT_OPTIONS,
  ...PLOT_OPTION,
} satisfies Spec;

interface Options {
  seconds: number;
  warmupSeconds: number;
  /** The 4-rank cases also warm up for at least this many calls (see bench/warmup.ts). */
  warmupCalls: number;
}

function workerCommand(worker: string): [string, string[]] {
  const root = packageRoot();
  if (IS_BUN) return [process.execPath, [path.join(root, 'bench', `${worker}.ts`)]];
  const file = path.join(root, 'dist', 'bench', `${worker}.js`);
  if (!fs.existsSync(file)) throw new Error(`bench pg: ${file} is missing; run npm run build`);
  return [process.execPath, [file]];
}

/** Runs one world of bench workers; resolves with each rank's samples. */
async function runWorld(n: number, o: Options, worker = 'pg_worker'): Promise<Record<string, number[]>[]> {
  const [cmd, args] = workerCommand(worker);
  const out: Record<string, number[]>[] = [];
  const children: ReturnType<typeof spawn>[] = [];
  const start = (rank: number, port?: number) =>
    new Promise<void>((resolve, reject) => {
      const child = spawn(cmd, args, {
        env: { ...process.env, RANK: String(rank), WORLD_SIZE: String(n), PG_BENCH_SECONDS: String(o.seconds), PG_BENCH_WARMUP_SECONDS: String(o.warmupSeconds), PG_BENCH_WARMUP_CALLS: String(o.warmupCalls), PG_PORT: String(port ?? 0) },
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      children.push(child);
      let buf = '';
      child.stdout!.on('data', (d) => {
        buf += d;
        const m = /@@PORT (\d+)/.exec(buf);
        if (m && rank === 0 && !portSeen) {
          portSeen = true;
          onPort(Number(m[1]));
        }
      });
      child.on('close', (code) => {
        const line = buf.split('\n').find((l) => l.startsWith('@@BENCH '));
        if (code !== 0 || !line) return reject(new Error(`bench pg: rank ${rank} of ${n} exited with ${code}`));
        out[rank] = JSON.parse(line.slice(8));
        resolve();
      });
    });
  let portSeen = false;
  let onPort: (p: number) => void = () => {};
  const ported = new Promise<number>((r) => (onPort = r));
  const done = [start(0)];
  const port = await ported;
  for (let r = 1; r < n; r++) done.push(start(r, port));
  const deadline = setTimeout(() => children.forEach((c) => c.kill('SIGKILL')), ((o.seconds + o.warmupSeconds) * 10 + 60) * 1000);
  try {
    await Promise.all(done);
  } finally {
    clearTimeout(deadline);
  }
  return out;
}

/** Per iteration, the largest value over the given ranks' sample lists. */
function slowest(lists: number[][]): number[] {
  const len = Math.min(...lists.map((l) => l.length));
  return [...Array(len).keys()].map((i) => Math.max(...lists.map((l) => l[i])));
}

interface Case {
  name: string;
  ranks: number;
  op: string;
  size_bytes: number;
}
const CASES: Record<string, Case> = {
  pingpong_small: { name: 'pingpong_small_rtt', ranks: 2, op: 'sendObj+recvObj', size_bytes: encodeObject(SMALL).length },
  pingpong_1MiB: { name: 'pingpong_1MiB_rtt', ranks: 2, op: 'sendObj+recvObj', size_bytes: MiB },
  bcast4: { name: 'broadcastObj_last_receiver', ranks: 4, op: 'broadcastObj', size_bytes: encodeObject(SMALL).length },
  bcast4_1MiB: { name: 'broadcastObj_1MiB_last_receiver', ranks: 4, op: 'broadcastObj', size_bytes: MiB },
  allgather4: { name: 'allGatherObj', ranks: 4, op: 'allGatherObj', size_bytes: encodeObject(SMALL).length },
  barrier4: { name: 'barrier', ranks: 4, op: 'barrier', size_bytes: 0 },
};

/** Our rows (or the floor's) of one round, printed per world as soon as it is done. */
async function ourRound(o: Options, worker: 'pg_worker' | 'pg_floor_worker', emit: (key: string, ns: number[]) => void): Promise<void> {
  const two = await runWorld(2, o, worker);
  emit('pingpong_small', two[0].pingpong_small);
  if (two[0].pingpong_1MiB) emit('pingpong_1MiB', two[0].pingpong_1MiB);
  const four = await runWorld(4, o, worker);
  emit('bcast4', slowest([1, 2, 3].map((r) => four[r].broadcast_obj)));
  if (four[1].broadcast_obj_1MiB) emit('bcast4_1MiB', slowest([1, 2, 3].map((r) => four[r].broadcast_obj_1MiB)));
  emit('allgather4', slowest(four.map((r) => r.all_gather_obj)));
  if (four[0].barrier) emit('barrier4', slowest(four.map((r) => r.barrier)));
}

/** Runs the peer; its SUMMARY medians (µs) keyed like CASES, or the reason it failed. */
async function peerRound(cmd: string, seconds: number): Promise<{ impl: string; values: Record<string, number> } | string> {
  let impl = 'vllm-like';
  const run = await runPeer(cmd, ['--seconds', String(seconds)], (seconds * 40 + 200) * 1000, (line) => {
    const v = /torch (\d+\.\d+)/.exec(line);
    if (line.startsWith('#') && v) impl = `vllm-like-torch-${v[1]}`;
  });
  const line = run.stdout.split('\n').find((l) => l.startsWith('SUMMARY vllm_like_pg_bench '));
  if (run.code !== 0 || !line) return `peer failed (exit ${run.code}${run.timedOut ? ', timed out' : ''}) with no SUMMARY line: ${tail(run)}`;
  const kv = Object.fromEntries([...line.matchAll(/(\w+)=([\d.]+)/g)].map((m) => [m[1], Number(m[2])]));
  return {
    impl,
    values: {
      pingpong_small: kv.pingpong_small_rtt, pingpong_1MiB: kv.pingpong_1MiB_rtt, bcast4: kv.bcast4_last,
      allgather4: kv.allgather4, barrier4: kv.barrier4_3phase,
    },
  };
}

export async function run(argv: string[], report: Report): Promise<void> {
  const cmd = 'groupcomm bench pg';
  const v = parse(OPTIONS, argv, cmd);
  const o: Options = { seconds: v.seconds, warmupSeconds: v['warmup-seconds'], warmupCalls: v['warmup-calls'] };
  const peer = peerCommand(v, 'vllm_like_pg_bench.py', cmd);
  report.section(`StatelessProcessGroup, ranks as processes on 127.0.0.1, warm-up ${o.warmupSeconds}s (4-rank cases: and ≥ ${o.warmupCalls} calls) + ${o.seconds}s per case, ${v.rounds} round(s)`);
  if (!peer) report.note('no peer: pass --peer CMD or --peers-dir DIR for vLLM-like rows (docs/bench.md)');
  const samples = Object.values(CASES).map((c) => ({ ...c, impl: 'vllm-like-torch-2.6', round: v.rounds, median_us: 99999.9, p99_us: 99999.9, samples: 100000 }));
  const add = (impl: string, round: number, key: string, x: { median_us: number; p99_us?: number; samples?: number }) => {
    const c = CASES[key];
    report.add({ name: c.name, impl, round, op: c.op, ranks: c.ranks, size_bytes: c.size_bytes, median_us: x.median_us, p99_us: x.p99_us, samples: x.samples }, samples);
  };
  const fromNs = (impl: string, round: number) => (key: string, ns: number[]) =>
    add(impl, round, key, { median_us: median(ns) / 1e3, p99_us: percentile(ns, 0.99) / 1e3, samples: ns.length });
  for (let round = 1; round <= v.rounds; round++) {
    await ourRound(o, 'pg_worker', fromNs('groupcomm', round));
    if (v.floor) await ourRound(o, 'pg_floor_worker', fromNs('raw-node-sockets', round));
    if (peer) {
      const r = await peerRound(peer, o.seconds);
      if (typeof r === 'string') report.note(r);
      else for (const [key, us] of Object.entries(r.values)) if (Number.isFinite(us)) add(r.impl, round, key, { median_us: us });
    }
  }
  const impls = new Set(report.rows.map((r) => r.impl));
  if (v.rounds > 1 || impls.size > 1) {
    summarize(report, report.rows, {
      caseKeys: ['name', 'ranks'], metric: 'median_us', unit: 'us', decimals: 1, ours: ['groupcomm'],
      title: `median latency across ${v.rounds} round(s): min, median, max per implementation; ratio of medians (< 1: groupcomm faster)`,
    });
  }
  if (v.plot) {
    const rows = report.rows.filter((r) => r.op === 'sendObj+recvObj');
    const series = [...new Set(rows.map((r) => r.impl))].map((impl) => {
      const mine = rows.filter((r) => r.impl === impl);
      const sizes = [...new Set(mine.map((r) => r.size_bytes as number))].sort((a, b) => a - b);
      return { name: impl, points: sizes.map((s) => [s, median(mine.filter((r) => r.size_bytes === s).map((r) => r.median_us!))] as [number, number]) };
    });
    writePlot(v.plot, [{ title: 'sendObj + recvObj round trip, 2 ranks (small dict, 1 MiB bytes)', series }], {
      title: 'groupcomm bench pg', yLabel: 'round trip (us, log scale)', xLabel: 'object size (bytes encoded, log scale)', logY: true,
    });
    report.note(`plot: ${v.plot} (the ping-pong cases; the 4-rank cases have one size and are in the table)`);
  }
}
