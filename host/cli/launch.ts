/**
 * `groupcomm launch [options] script [args…]`: starts the ranks of a script on this node, the way
 * torchrun does (options and parsing: launch_args.ts; nodes talking through the store:
 * launch_job.ts).
 *
 * Each rank gets RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, GROUP_RANK, GROUP_WORLD_SIZE,
 * MASTER_ADDR, MASTER_PORT, GROUPCOMM_RUN_ID/TORCHELASTIC_RUN_ID (and GROUPCOMM_DEVICE_PLUGIN
 * with --backend). MASTER_PORT is the port of a store node 0's launcher hosts (unless
 * `--no-store`): on one node it binds port 0 and hands the bound port to the ranks while it keeps
 * the socket open. Picking a "free" port by binding and closing a probe socket, then hoping
 * rank 0 gets it, is the TOCTOU race vLLM fixed in #36330; a live listener cannot be stolen.
 *
 * Every line a rank prints is prefixed with `[rank r]`. SIGINT/SIGTERM are forwarded to every
 * rank. If one rank fails (non-zero exit or killed by a signal), the others — on every node,
 * through the store — are sent SIGTERM (SIGKILL after a grace period), and every launcher exits
 * non-zero after printing a summary table.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Job, summaryTable, type Failure, type RankResult } from './launch_job.js';
import { parseLaunchArgs, runtimeFor, type LaunchOptions } from './launch_args.js';
import { setting } from '../base/config.js';
import { generateSecret } from '../base/secret.js';

export { parseLaunchArgs, runtimeFor, type LaunchOptions };

export const summary = 'start the ranks of a script on this node; --nnodes for many (torchrun\'s variables)';

/** Writes `data` line by line with `prefix`, keeping a partial last line for the next chunk. */
function linePrefixer(out: NodeJS.WritableStream, prefix: string, onLine?: (line: string) => void) {
  let pending = '';
  return {
    write(data: Buffer | string) {
      const text = pending + data.toString();
      const lines = text.split('\n');
      pending = lines.pop() ?? '';
      if (onLine) for (const l of lines) onLine(l);
      if (lines.length) out.write(lines.map((l) => prefix + l + '\n').join(''));
    },
    flush() {
      if (pending) {
        onLine?.(pending);
        out.write(prefix + pending + '\n');
      }
      pending = '';
    },
  };
}

/**
 * Keeps the first stderr line that states an error (`TypeError: …`, `GroupcommError: …`), else
 * the first that mentions one, else the first non-empty one.
 */
function errorLine() {
  let first: string | undefined;
  let mentions: string | undefined;
  let states: string | undefined;
  return {
    see(line: string) {
      const t = line.trim();
      if (!t) return;
      first ??= t;
      if (states === undefined && /(^|\s)\w*(Error|Exception)( \[\w+\])?:/.test(t)) states = t;
      if (mentions === undefined && /error|exception|fatal|panic|failed|abort/i.test(t)) mentions = t;
    },
    get(): string | undefined {
      const l = states ?? mentions ?? first;
      return l && l.length > 160 ? l.slice(0, 157) + '...' : l;
    },
  };
}

export async function run(argv: string[]): Promise<number> {
  const o = parseLaunchArgs(argv);
  if (typeof o === 'string') {
    const help = argv.includes('--help') || argv.includes('-h');
    (help ? console.log : console.error)(o);
    return help ? 0 : 2;
  }
  return launch(o);
}

/** Runs this node's ranks to completion; resolves with the launcher's exit status. */
export async function launch(o: LaunchOptions): Promise<number> {
  const script = path.resolve(o.script);
  if (!fs.existsSync(script)) {
    console.error(`groupcomm launch: script not found: ${o.script}`);
    return 2;
  }
  const cmd = runtimeFor(script);

  // One job secret for the store and every group of the run (docs/security.md): the user's
  // GROUPCOMM_SECRET, else a fresh one; the ranks get it through their environment. Several
  // nodes cannot draw one each: node 0's store itself needs it, so there it must be given.
  const given = setting('GROUPCOMM_SECRET');
  if (given === undefined && o.nnodes > 1 && !setting('GROUPCOMM_INSECURE')) {
    console.error('groupcomm launch: --nnodes > 1 needs GROUPCOMM_SECRET, the same on every node (e.g. ' +
      '`export GROUPCOMM_SECRET=$(openssl rand -base64 32)` and copy it), or GROUPCOMM_INSECURE=1 on a network you trust; see docs/security.md');
    return 2;
  }
  const secret = given ?? (o.nnodes > 1 ? undefined : generateSecret());
  let job: Job | undefined;
  if (o.hostStore) {
    try {
      job = await Job.join(o, secret);
    } catch (e) {
      console.error(`groupcomm launch: ${(e as Error).message}`);
      return 1;
    }
  }
  const masterPort = job ? job.port : o.masterPort;
  const offset = job ? job.rankOffset : 0;
  const worldSize = job ? job.worldSize : o.nproc;
  const host = os.hostname();

  const children: ChildProcess[] = [];
  const rows: RankResult[] = [];
  const exits: Promise<void>[] = [];
  let firstFailure: { rank: number; code: number | null } | undefined;
  let remoteFailure: Failure | undefined;
  let stopping = false;
  let forwarded: NodeJS.Signals | undefined;
  let killTimer: NodeJS.Timeout | undefined;
  const live = () => children.filter((c) => c.exitCode === null && c.signalCode === null);

  const stopAll = (signal: NodeJS.Signals) => {
    stopping = true;
    for (const c of live()) c.kill(signal);
    if (!killTimer) {
      killTimer = setTimeout(() => {
        for (const c of live()) c.kill('SIGKILL');
      }, o.graceMs);
      killTimer.unref();
    }
  };

  job?.watch((f) => {
    if (stopping || f.node === o.nodeRank) return;
    remoteFailure = f;
    const n = live().length;
    process.stderr.write(`[launch] rank ${f.rank} on node ${f.node} (${f.host}) ${f.how}${n ? `; stopping ${n} rank(s) on node ${o.nodeRank}` : ''}\n`);
    stopAll('SIGTERM');
  }, (e) => {
    if (stopping) return;
    remoteFailure = { rank: -1, node: 0, host: o.masterAddr, how: `lost node 0's store (${e.message})` };
    process.stderr.write(`[launch] node ${o.nodeRank}: lost node 0's store at ${o.masterAddr}:${masterPort} (${e.message}); stopping this node's ranks\n`);
    stopAll('SIGTERM');
  });

  for (let local = 0; local < o.nproc; local++) {
    const rank = offset + local;
    const runId = job?.runId;
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      RANK: String(rank), LOCAL_RANK: String(local), WORLD_SIZE: String(worldSize),
      LOCAL_WORLD_SIZE: String(o.nproc), GROUP_RANK: String(o.nodeRank), GROUP_WORLD_SIZE: String(o.nnodes),
      MASTER_ADDR: o.masterAddr, MASTER_PORT: String(masterPort),
    };
    if (secret !== undefined) env.GROUPCOMM_SECRET = secret;
    if (runId) {
      env.GROUPCOMM_RUN_ID = runId;
      env.TORCHELASTIC_RUN_ID = runId;
    }
    if (o.backend) env.GROUPCOMM_DEVICE_PLUGIN = o.backend;
    const child = spawn(cmd, [script, ...o.args], { env, stdio: ['inherit', 'pipe', 'pipe'] });
    children.push(child);
    const tag = o.prefix ? `[rank ${rank}] ` : '';
    const errLine = errorLine();
    const out = linePrefixer(process.stdout, tag);
    const err = linePrefixer(process.stderr, tag, (l) => errLine.see(l));
    child.stdout!.on('data', (d) => out.write(d));
    child.stderr!.on('data', (d) => err.write(d));
    exits.push(new Promise((resolve) => {
      let done = false;
      const finish = (code: number | null, signal: NodeJS.Signals | null, how: string) => {
        if (done) return;
        done = true;
        out.flush();
        err.flush();
        const failed = code !== 0;
        rows.push({ rank, localRank: local, node: o.nodeRank, host, code, signal, error: failed && !stopping ? errLine.get() ?? how : undefined });
        if (failed && !firstFailure && !forwarded && !remoteFailure) {
          firstFailure = { rank, code };
          const others = live().filter((c) => c !== child).length;
          process.stderr.write(`[launch] rank ${rank} ${how}${others ? `; stopping ${others} other rank(s)` : ''}${o.nnodes > 1 ? ' and the other nodes' : ''}\n`);
          job?.reportFailure({ rank, node: o.nodeRank, host, how }).catch((e) => {
            process.stderr.write(`[launch] could not tell the other nodes: ${(e as Error).message}\n`);
          });
        }
        if (failed && !stopping) stopAll('SIGTERM');
        resolve();
      };
      // A process that never started may not report 'close' on every runtime.
      child.on('error', (e) => {
        if (child.pid === undefined) finish(1, null, `could not start: ${e.message}`);
      });
      child.on('close', (code, signal) => finish(code, signal, signal ? `was killed by ${signal}` : `exited with code ${code}`));
    }));
  }

  const onSignal = (sig: NodeJS.Signals) => {
    if (forwarded) {
      // A second signal: the user means it.
      for (const c of live()) c.kill('SIGKILL');
      return;
    }
    forwarded = sig;
    stopAll(sig);
    job?.reportFailure({ rank: -1, node: o.nodeRank, host, how: `launcher got ${sig}` }).catch(() => {});
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  let table = rows;
  try {
    await Promise.all(exits);
    if (job) {
      // After a signal the user wants out: a short wait for the other nodes' rows, not the grace.
      table = await job.finish(rows.sort((a, b) => a.rank - b.rank), () => firstFailure !== undefined || remoteFailure !== undefined || forwarded !== undefined,
        forwarded ? 2000 : o.graceMs + 5000)
        .catch((e) => {
          process.stderr.write(`[launch] could not gather the other nodes' results: ${(e as Error).message}\n`);
          return rows;
        });
    }
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    if (killTimer) clearTimeout(killTimer);
    await job?.close();
  }
  const failed = firstFailure !== undefined || remoteFailure !== undefined || forwarded !== undefined || (job?.gone.length ?? 0) > 0;
  const scope = o.nnodes > 1 ? (o.nodeRank === 0 ? `job ${job?.runId ?? ''} (${o.nnodes} nodes)` : `node ${o.nodeRank} of job ${job?.runId ?? ''}`) : 'ranks';
  process.stderr.write(`[launch] ${failed ? 'FAILED' : 'done'}: ${scope}\n${summaryTable(table.sort((a, b) => a.rank - b.rank))}\n`);
  if (forwarded) return forwarded === 'SIGINT' ? 130 : 143;
  if (firstFailure) {
    const c = firstFailure.code;
    return c !== null && c > 0 && c < 126 ? c : 1;
  }
  return remoteFailure || (job?.gone.length ?? 0) > 0 ? 1 : 0;
}
