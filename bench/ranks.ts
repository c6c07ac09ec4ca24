/**
 * One process per rank, from real processes: `bench device` and the multi-rank tests (through
 * test/helpers/ranks.ts) start their workers here. `spawnRanks` starts one child process per rank
 * running a worker script, collects each rank's result (the worker calls `reportResult`), and
 * fails with every rank's stderr when any rank fails, hangs past the deadline, or exits without a
 * result.
 *
 * Worker scripts are given as paths relative to the repository root without extension
 * ('bench/device_worker'); Node children run `<compiledDir>/<path>.js` (compiledDir 'dist', the
 * shipped build, unless the caller names another: the tests' build is dist-test/), Bun children
 * run `<path>.ts`. runtime 'mixed' alternates Node (even ranks) and Bun (odd ranks), which needs
 * the compiled tree built (npm test builds both).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { packageRoot } from '../host/base/pkgroot.js';

export type Runtime = 'node' | 'bun' | 'mixed' | 'same';

export interface SpawnOptions {
  /** Kill every rank and fail after this long (default 60 s). */
  timeoutMs?: number;
  runtime?: Runtime;
  /** Extra environment for every rank; RANK and WORLD_SIZE are set per rank. */
  env?: Record<string, string>;
  /** Arguments passed to every rank's script. */
  args?: string[];
  /** Ranks that are expected to exit without a result (killed on purpose). */
  allowFailure?: number[];
  /** The folder holding the compiled `.js` tree that Node ranks run (default 'dist'). */
  compiledDir?: string;
}

export interface RankOutcome<T = unknown> {
  rank: number;
  result?: T;
  code: number | null;
  signal: NodeJS.Signals | null;
  stderr: string;
  stdout: string;
}

const RESULT_TAG = '@@RESULT ';

export function currentRuntime(): 'node' | 'bun' {
  return typeof (process.versions as Record<string, string>).bun === 'string' ? 'bun' : 'node';
}

export function bunPath(): string {
  return path.join(packageRoot(), 'node_modules', '.bin', 'bun');
}

/** The file that runs `script` (repo-relative, no extension) on `runtime`. */
export function scriptFile(script: string, runtime: 'node' | 'bun', compiledDir = 'dist'): string {
  const root = packageRoot();
  if (runtime === 'bun') return path.join(root, script + '.ts');
  const file = path.join(root, compiledDir, script + '.js');
  if (!fs.existsSync(file)) throw new Error(`spawnRanks: ${file} is missing; run the build (npm run build, or npm test for the tests)`);
  return file;
}

/** Command + args that run `script` (repo-relative, no extension) on `runtime`. */
export function commandFor(script: string, runtime: 'node' | 'bun', compiledDir = 'dist'): [string, string[]] {
  const file = scriptFile(script, runtime, compiledDir);
  if (runtime === 'node') return [currentRuntime() === 'node' ? process.execPath : 'node', [file]];
  return [currentRuntime() === 'bun' ? process.execPath : bunPath(), [file]];
}

function runtimeOf(rank: number, r: Runtime): 'node' | 'bun' {
  if (r === 'mixed') return rank % 2 === 0 ? 'node' : 'bun';
  if (r === 'same') return currentRuntime();
  return r;
}

export interface Spawned<T> {
  children: ChildProcess[];
  /** Resolves with every rank's outcome once all have exited. */
  done: Promise<RankOutcome<T>[]>;
  kill(rank: number, signal?: NodeJS.Signals): void;
}

/** Starts the ranks and returns at once; `done` settles when all exit (or the deadline hits). */
export function startRanks<T = unknown>(n: number, script: string, opts: SpawnOptions = {}): Spawned<T> {
  const timeoutMs = opts.timeoutMs ?? 60_000;
  const children: ChildProcess[] = [];
  const outcomes: Promise<RankOutcome<T>>[] = [];
  for (let rank = 0; rank < n; rank++) {
    const [cmd, args] = commandFor(script, runtimeOf(rank, opts.runtime ?? 'same'), opts.compiledDir);
    const child = spawn(cmd, [...args, ...(opts.args ?? [])], {
      cwd: packageRoot(),
      env: { ...process.env, ...opts.env, RANK: String(rank), WORLD_SIZE: String(n), NO_COLOR: '1' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.push(child);
    outcomes.push(new Promise((resolve) => {
      let stdout = '', stderr = '';
      child.stdout!.on('data', (d) => (stdout += d));
      child.stderr!.on('data', (d) => (stderr += d));
      child.on('close', (code, signal) => {
        const line = stdout.split('\n').reverse().find((l) => l.startsWith(RESULT_TAG));
        const result = line ? (JSON.parse(line.slice(RESULT_TAG.length)) as T) : undefined;
        resolve({ rank, result, code, signal, stderr, stdout });
      });
    }));
  }
  let timer: NodeJS.Timeout;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      for (const c of children) c.kill('SIGKILL');
      reject(new Error(`spawnRanks(${script}): ranks still running after ${timeoutMs}ms; killed`));
    }, timeoutMs);
  });
  const done = Promise.race([Promise.all(outcomes), deadline]).finally(() => clearTimeout(timer));
  return { children, done, kill: (rank, sig = 'SIGKILL') => children[rank].kill(sig) };
}

/** Runs `n` ranks to completion; rejects with every failing rank's output. Returns results by rank. */
export async function spawnRanks<T = unknown>(n: number, script: string, opts: SpawnOptions = {}): Promise<T[]> {
  const outs = await startRanks<T>(n, script, opts).done;
  const allowed = new Set(opts.allowFailure ?? []);
  const bad = outs.filter((o) => !allowed.has(o.rank) && (o.code !== 0 || o.result === undefined));
  if (bad.length) {
    const detail = bad.map((o) => `--- rank ${o.rank} exit=${o.code} signal=${o.signal}\n${o.stderr.slice(-4000)}${o.stdout.slice(-2000)}`).join('\n');
    throw new Error(`spawnRanks(${script}): ${bad.length} of ${n} ranks failed\n${detail}`);
  }
  return outs.map((o) => o.result as T);
}

/** Called by a worker script: hands `value` (JSON) back to the test. */
export function reportResult(value: unknown): void {
  process.stdout.write(RESULT_TAG + JSON.stringify(value, (_k, v) => (typeof v === 'bigint' ? v.toString() : v)) + '\n');
}

/** RANK and WORLD_SIZE of a worker. */
export function rankEnv(): { rank: number; worldSize: number } {
  return { rank: Number(process.env.RANK), worldSize: Number(process.env.WORLD_SIZE) };
}
