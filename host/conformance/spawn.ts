/**
 * Starts the ranks of one conformance run as real processes (one per rank), each running
 * ./worker on Node (the compiled dist/ file) or Bun (the TypeScript source, which the package
 * ships), and collects their result lines. A rank that fails, hangs past the deadline or exits
 * without a result fails the run with every failing rank's output.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { packageRoot } from '../base/pkgroot.js';
import { IS_BUN } from '../base/runtime.js';

export const RESULT_TAG = '@@GROUPCOMM_CONFORMANCE ';

/** 'same': this process's runtime; 'mixed': even ranks Node, odd ranks Bun. */
export type Runtime = 'same' | 'node' | 'bun' | 'mixed';

export interface WorkerArgs {
  plugin: string;
  rank: number;
  worldSize: number;
  storePort: number;
  prefix: string;
  timeoutMs: number;
  bareBootstrap: boolean;
}

export type WorkerResult = { verdicts?: Record<string, string | null>; unavailable?: string };

export interface SpawnSpec {
  runtime: Runtime;
  /** Executables (default: this process's for its own runtime, else `node` / `bun` on PATH). */
  nodePath?: string;
  bunPath?: string;
  /** Kill every rank and fail after this long. */
  deadlineMs: number;
}

function command(rank: number, s: SpawnSpec): [string, string] {
  const rt = s.runtime === 'mixed' ? (rank % 2 === 0 ? 'node' : 'bun') : s.runtime === 'same' ? (IS_BUN ? 'bun' : 'node') : s.runtime;
  const root = packageRoot();
  if (rt === 'node') {
    const file = path.join(root, 'dist', 'host', 'conformance', 'worker.js');
    if (!fs.existsSync(file)) throw new Error(`conformance: ${file} is missing (build groupcomm first: npm run build)`);
    return [s.nodePath ?? (IS_BUN ? 'node' : process.execPath), file];
  }
  const ts = path.join(root, 'host', 'conformance', 'worker.ts');
  const file = fs.existsSync(ts) ? ts : path.join(root, 'dist', 'host', 'conformance', 'worker.js');
  return [s.bunPath ?? (IS_BUN ? process.execPath : 'bun'), file];
}

interface Outcome { rank: number; result?: WorkerResult; code: number | null; signal: string | null; output: string }

/** Runs one process per rank; resolves with every rank's result, or rejects naming the ranks that failed. */
export async function spawnRanks(args: Omit<WorkerArgs, 'rank'>, s: SpawnSpec): Promise<WorkerResult[]> {
  const children: ChildProcess[] = [];
  const outcomes: Promise<Outcome>[] = [];
  for (let rank = 0; rank < args.worldSize; rank++) {
    const [cmd, file] = command(rank, s);
    const child = spawn(cmd, [file, JSON.stringify({ ...args, rank })], { stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(child);
    outcomes.push(new Promise((resolve) => {
      let output = '';
      child.stdout!.on('data', (d) => (output += d));
      child.stderr!.on('data', (d) => (output += d));
      child.on('error', (e) => (output += `\ncould not start ${cmd}: ${e.message}\n`));
      child.on('close', (code, signal) => {
        const line = output.split('\n').reverse().find((l) => l.startsWith(RESULT_TAG));
        resolve({ rank, result: line ? (JSON.parse(line.slice(RESULT_TAG.length)) as WorkerResult) : undefined, code, signal, output });
      });
    }));
  }
  let timer: ReturnType<typeof setTimeout> | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      for (const c of children) c.kill('SIGKILL');
      reject(new Error(`conformance: ranks still running after ${s.deadlineMs}ms; killed`));
    }, s.deadlineMs);
  });
  const outs = await Promise.race([Promise.all(outcomes), deadline]).finally(() => clearTimeout(timer));
  const bad = outs.filter((o) => o.code !== 0 || o.result === undefined);
  if (bad.length) {
    const detail = bad.map((o) => `--- rank ${o.rank} exit=${o.code} signal=${o.signal}\n${o.output.slice(-4000)}`).join('\n');
    throw new Error(`conformance: ${bad.length} of ${args.worldSize} ranks failed\n${detail}`);
  }
  return outs.map((o) => o.result!);
}
