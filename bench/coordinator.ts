/**
 * `groupcomm bench coordinator [--ranks 2,4,8,16,64] [--procs P] [--iters N] [--count C] [--json FILE]`
 *
 * 1. Group creation: the time from "go" until every rank's StatelessGroupCoordinator.create
 *    resolved (rendezvous record, store channel join, CPU mesh), for each rank count. Ranks
 *    live in up to P processes (default 4; many ranks per process past that, which the
 *    coordinator allows). Measured by the parent through the bench store (one round trip of
 *    notification included, ~0.1 ms). A note fits t ∝ ranks^k to say how it grows.
 * 2. broadcastTensorDict of a 32-entry dict (24 tensors of float32/int64 and 8 small objects)
 *    with 4 ranks, one process each: entries of 256 B (the frame carries the tensors inline)
 *    and of 64 KiB (packed into one CPU-group broadcast). Per call, back to back, closed by a
 *    barrier; median and p99 over N reps of C calls.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { packageRoot } from '../host/base/pkgroot.js';
import { PrefixStore, TcpStore, TcpStoreServer } from '../host/store/index.js';
import type { Store } from '../host/store/types.js';
import { median, percentile, type Report } from './report.js';
import { integer, list, parse, OUTPUT_OPTIONS, type Spec } from './args.js';

export const DESCRIPTION = `Group creation: the time from "go" until every rank's StatelessGroupCoordinator.create
resolved, for each rank count (ranks spread over up to --procs processes), with a fit of how it
grows; then broadcastTensorDict of a 32-entry dict with 4 ranks, per call.`;

export const OPTIONS = {
  ranks: { short: 'g', arg: 'LIST', group: 'participation', default: '2,4,8,16,64', parse: list(integer(2, 4096), 'rank counts >= 2'), help: 'rank counts of the groups created' },
  procs: { arg: 'P', group: 'participation', default: '4', parse: integer(1, 256), help: 'processes the ranks live in (many ranks per process past P)' },
  iters: { short: 'n', arg: 'N', group: 'parameters', default: '5', parse: integer(1, 10_000), help: 'timed creations per rank count; reps of the dict case' },
  count: { arg: 'C', group: 'parameters', default: '20', parse: integer(1, 1_000_000), help: 'broadcastTensorDict calls per rep' },
  ...OUTPUT_OPTIONS,
} satisfies Spec;

function workerCommand(): [string, string[]] {
  const root = packageRoot();
  if (typeof (process.versions as Record<string, string>).bun === 'string') {
    return [process.execPath, [path.join(root, 'bench', 'coordinator_worker.ts')]];
  }
  const file = path.join(root, 'dist', 'bench', 'coordinator_worker.js');
  if (!fs.existsSync(file)) throw new Error(`bench coordinator: ${file} is missing; run npm run build`);
  return [process.execPath, [file]];
}

/** Starts `procs` workers; resolves with rank 0's @@BENCH line (if any) once all exit 0. */
function startWorkers(procs: number, env: Record<string, string>): { done: Promise<string | undefined> } {
  const [cmd, args] = workerCommand();
  const exits = Array.from({ length: procs }, (_, p) => new Promise<string | undefined>((resolve, reject) => {
    const child = spawn(cmd, args, {
      env: { ...process.env, ...env, BENCH_PROC: String(p), BENCH_PROCS: String(procs) },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout!.on('data', (d) => (out += d));
    child.on('close', (code) => {
      if (code !== 0) return reject(new Error(`bench coordinator: worker ${p} exited with ${code}`));
      resolve(out.split('\n').find((l) => l.startsWith('@@BENCH '))?.slice(8));
    });
  }));
  return { done: Promise.all(exits).then((r) => r.find((x) => x !== undefined)) };
}

async function counter(store: Store, key: string): Promise<number> {
  return store.add(key, 0);
}

async function waitCount(store: Store, key: string, n: number): Promise<void> {
  while ((await counter(store, key)) < n) await new Promise((r) => setTimeout(r, 2));
}

export async function run(argv: string[], report: Report): Promise<void> {
  const { ranks: rankList, procs: maxProcs, iters, count } = parse(OPTIONS, argv, 'groupcomm bench coordinator');
  const server = await TcpStoreServer.listen({ host: '127.0.0.1', port: 0 });
  const port = String(server.port);
  const store = await TcpStore.create({ host: '127.0.0.1', port: server.port, timeoutMs: 120_000 });
  try {
    report.section(`group creation (StatelessGroupCoordinator.create on every rank, rendezvous store), ${iters} iterations`);
    const fit: [number, number][] = [];
    for (const n of rankList) {
      const procs = Math.min(n, maxProcs);
      // Each case gets its own key space on the bench store.
      const ns = `c${n}`;
      const pre = new PrefixStore(ns, store);
      const w = startWorkers(procs, {
        BENCH_MODE: 'create', BENCH_RANKS: String(n), BENCH_ITERS: String(iters + 1), BENCH_STORE_PORT: port,
        BENCH_PREFIX: ns,
      });
      const times: number[] = [];
      // Iteration 0 warms up (module loading, JIT, the WASM core) and is not counted.
      for (let i = 0; i <= iters; i++) {
        const t0 = performance.now();
        await pre.set(`go/${i}`, '1');
        await pre.wait([...Array(procs).keys()].map((p) => `done/${i}/${p}`));
        if (i > 0) times.push((performance.now() - t0) * 1000);
        await pre.set(`end/${i}`, '1');
        await waitCount(pre, `gone/${i}`, procs);
      }
      await w.done;
      const med = median(times);
      fit.push([n, med]);
      report.add({ name: 'create', impl: 'groupcomm', ranks: n, procs, median_us: med, p99_us: percentile(times, 0.99) },
        [{ ranks: Math.max(...rankList), procs: maxProcs, median_us: 9_999_999.9, p99_us: 9_999_999.9 }]);
    }
    if (fit.length >= 2) {
      // Least squares of log t on log n: t ∝ n^k.
      const xs = fit.map(([n]) => Math.log(n)), ys = fit.map(([, t]) => Math.log(t));
      const mx = xs.reduce((a, b) => a + b, 0) / xs.length, my = ys.reduce((a, b) => a + b, 0) / ys.length;
      const k = xs.reduce((a, x, i) => a + (x - mx) * (ys[i] - my), 0) / xs.reduce((a, x) => a + (x - mx) ** 2, 0);
      const [n0, t0] = fit[0], [n1, t1] = fit[fit.length - 1];
      report.note(`creation time grows like ranks^${k.toFixed(2)}: ${(t0 / 1000).toFixed(1)} ms at ${n0} ranks, ${(t1 / 1000).toFixed(1)} ms at ${n1} ranks ` +
        `(${(t1 / t0).toFixed(1)}x for ${(n1 / n0).toFixed(0)}x the ranks; the CPU group connects its ring neighbours at creation and other pairs on first use)`);
    }

    report.section(`broadcastTensorDict, 32 entries, 4 ranks (one process each), per call; ${iters} reps of ${count} calls`);
    const sizes = [256, 64 * 1024];
    const w = startWorkers(4, {
      BENCH_MODE: 'dict', BENCH_RANKS: '4', BENCH_ITERS: String(iters), BENCH_STORE_PORT: port,
      BENCH_DICT_SIZES: JSON.stringify(sizes), BENCH_DICT_COUNT: String(count),
    });
    const line = await w.done;
    if (!line) throw new Error('bench coordinator: rank 0 reported no dict result');
    const { result, wrong } = JSON.parse(line) as { result: Record<string, number[]>; wrong: number };
    for (const bytes of sizes) {
      const t = result[bytes].map((x) => x * 1000);
      const total = 24 * bytes;
      report.add({
        name: 'broadcastTensorDict', impl: 'groupcomm', ranks: 4, size_bytes: total,
        entry_bytes: bytes, median_us: median(t), p99_us: percentile(t, 0.99),
        gbps: (total * 3) / (median(t) * 1e3), wrong,
      }, [{ size_bytes: 24 * sizes[sizes.length - 1], entry_bytes: sizes[sizes.length - 1], median_us: 999_999.9, p99_us: 999_999.9 }]);
    }
  } finally {
    await store.close();
    await server.close();
  }
}
