/**
 * `groupcomm bench pg [--seconds S] [--warmup-seconds S] [--warmup-calls N] [--rounds N] [--peer CMD] [--floor] [--json FILE]`
 *
 * StatelessProcessGroup over the TCP store, ranks in child processes on 127.0.0.1:
 *   2 ranks: ping-pong round trip of a small dict and of a 1 MiB Uint8Array (rank 0 measures);
 *   4 ranks: broadcastObj one-way latency to the slowest receiver, allGatherObj and barrier
 *            (slowest rank per iteration, back to back).
 * With `--peer CMD`, CMD (e.g. `bash peers/trixie-torch.sh /opt/trixie run python3
 * /peers/vllm_like_pg_bench.py --seconds 2`) runs after each groupcomm round and its SUMMARY
 * line becomes rows with impl 'vllm-like-torch-2.6', so both sides come from one run. `--floor` adds
 * rows 'raw-node-sockets': the small ping-pong, broadcast and allGather patterns over plain sockets
 * between the rank processes (no store, no codec), the floor of this machine and runtime.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { packageRoot } from '../host/base/pkgroot.js';
import { IS_BUN } from '../host/base/runtime.js';
import { median, percentile, type Report } from './report.js';

const MiB = 1 << 20;

interface Options {
  seconds: number;
  warmupSeconds: number;
  /** The 4-rank cases also warm up for at least this many calls (see bench/warmup.ts). */
  warmupCalls: number;
  rounds: number;
  peer?: string;
  /** Also run the same patterns over plain sockets (bench/pg_floor_worker.ts). */
  floor: boolean;
}

function parse(argv: string[]): Options {
  const o: Options = { seconds: 2, warmupSeconds: 1, warmupCalls: 5000, rounds: 1, floor: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--seconds') o.seconds = Number(argv[++i]);
    else if (a === '--rounds') o.rounds = Number(argv[++i]);
    else if (a === '--warmup-seconds') o.warmupSeconds = Number(argv[++i]);
    else if (a === '--warmup-calls') o.warmupCalls = Number(argv[++i]);
    else if (a === '--peer') o.peer = argv[++i];
    else if (a === '--floor') o.floor = true;
    else throw new Error(`bench pg: unknown option ${a} (use --seconds S, --warmup-seconds S, --warmup-calls N, --rounds N, --peer CMD, --floor)`);
  }
  if (!(o.seconds > 0) || !(o.warmupSeconds >= 0) || !(o.warmupCalls >= 0) || !(o.rounds >= 1)) throw new Error('bench pg: --seconds and --rounds must be positive, the warm-up not negative');
  return o;
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

const us = (ns: number[]) => ({ median_us: median(ns) / 1e3, p99_us: percentile(ns, 0.99) / 1e3 });

/** Median of the rounds' medians of case `key`; p99 from the round with the median median. */
function middleRound(rounds: Record<string, number[]>[], key: string): { median_us: number; p99_us: number } {
  const perRound = rounds.map((r) => us(r[key])).sort((a, b) => a.median_us - b.median_us);
  return perRound[perRound.length >> 1];
}

interface Case {
  name: string;
  ranks: number;
  op: string;
  size_bytes?: number;
}
const CASES: Record<string, Case> = {
  pingpong_small: { name: 'pingpong_small_rtt', ranks: 2, op: 'sendObj+recvObj' },
  pingpong_1MiB: { name: 'pingpong_1MiB_rtt', ranks: 2, op: 'sendObj+recvObj', size_bytes: MiB },
  bcast4: { name: 'broadcastObj_last_receiver', ranks: 4, op: 'broadcastObj' },
  allgather4: { name: 'allGatherObj', ranks: 4, op: 'allGatherObj' },
  barrier4: { name: 'barrier', ranks: 4, op: 'barrier' },
};

async function groupcommRound(o: Options): Promise<Record<string, number[]>> {
  const two = await runWorld(2, o);
  const four = await runWorld(4, o);
  return {
    pingpong_small: two[0].pingpong_small,
    pingpong_1MiB: two[0].pingpong_1MiB,
    bcast4: slowest([1, 2, 3].map((r) => four[r].broadcast_obj)),
    allgather4: slowest(four.map((r) => r.all_gather_obj)),
    barrier4: slowest(four.map((r) => r.barrier)),
  };
}

/**
 * The same patterns over plain loopback sockets with no store and no codec (pg_floor_worker):
 * what this machine and runtime allow any implementation, measured the same way.
 */
async function floorRound(o: Options): Promise<Record<string, number[]>> {
  const two = await runWorld(2, o, 'pg_floor_worker');
  const four = await runWorld(4, o, 'pg_floor_worker');
  return {
    pingpong_small: two[0].pingpong_small,
    bcast4: slowest([1, 2, 3].map((r) => four[r].broadcast_obj)),
    allgather4: slowest(four.map((r) => r.all_gather_obj)),
  };
}

/** Runs the peer command; returns its SUMMARY medians (µs) keyed like CASES. */
function peerRound(cmd: string): Promise<Record<string, number>> {
  return new Promise((resolve, reject) => {
    const child = spawn('bash', ['-c', cmd], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.on('close', (code) => {
      const line = out.split('\n').find((l) => l.startsWith('SUMMARY vllm_like_pg_bench '));
      if (code !== 0 || !line) return reject(new Error(`bench pg: peer command exited with ${code} and no SUMMARY line:\n${out.slice(-2000)}`));
      const kv = Object.fromEntries([...line.matchAll(/(\w+)=([\d.]+)/g)].map((m) => [m[1], Number(m[2])]));
      resolve({
        pingpong_small: kv.pingpong_small_rtt,
        pingpong_1MiB: kv.pingpong_1MiB_rtt,
        bcast4: kv.bcast4_last,
        allgather4: kv.allgather4,
        barrier4: kv.barrier4_3phase,
        barrier4_addwait: kv.barrier4_addwait,
      });
    });
  });
}

export async function run(argv: string[], report: Report): Promise<void> {
  const o = parse(argv);
  const ours: Record<string, number[]>[] = [];
  const theirs: Record<string, number>[] = [];
  const floors: Record<string, number[]>[] = [];
  for (let round = 0; round < o.rounds; round++) {
    ours.push(await groupcommRound(o));
    if (o.floor) floors.push(await floorRound(o));
    if (o.peer) theirs.push(await peerRound(o.peer));
  }
  report.section(`StatelessProcessGroup, ranks as processes on 127.0.0.1, warm-up ${o.warmupSeconds}s (4-rank cases: and ≥ ${o.warmupCalls} calls) + ${o.seconds}s per case, ${o.rounds} round(s)`);
  const mine: Record<string, number> = {};
  for (const [key, c] of Object.entries(CASES)) {
    const pick = middleRound(ours, key);
    mine[key] = pick.median_us;
    report.add({ name: c.name, impl: 'groupcomm', op: c.op, ranks: c.ranks, size_bytes: c.size_bytes ?? 0, median_us: pick.median_us, p99_us: pick.p99_us, samples: ours[0][key].length });
  }
  for (const key of Object.keys(floors[0] ?? {})) {
    const c = CASES[key];
    const pick = middleRound(floors, key);
    report.add({ name: c.name, impl: 'raw-node-sockets', op: c.op, ranks: c.ranks, size_bytes: 0, median_us: pick.median_us, p99_us: pick.p99_us, samples: floors[0][key].length });
    report.note(`${c.name}: groupcomm / raw sockets = ${(mine[key] / pick.median_us).toFixed(2)}`);
  }
  if (!theirs.length) {
    report.note('no --peer command: groupcomm rows only');
    return;
  }
  for (const [key, c] of Object.entries(CASES)) {
    const med = median(theirs.map((t) => t[key]));
    report.add({ name: c.name, impl: 'vllm-like-torch-2.6', op: c.op, ranks: c.ranks, size_bytes: c.size_bytes ?? 0, median_us: med, samples: theirs.length });
  }
  const addWait = median(theirs.map((t) => t.barrier4_addwait));
  report.add({ name: 'barrier_add_wait', impl: 'vllm-like-torch-2.6', op: 'barrier', ranks: 4, size_bytes: 0, median_us: addWait, samples: theirs.length });
  for (const [key, c] of Object.entries(CASES)) {
    report.note(`${c.name}: groupcomm / vllm-like = ${(mine[key] / median(theirs.map((t) => t[key]))).toFixed(3)}`);
  }
}
