/**
 * `groupcomm launch -n N [options] script.js|ts [-- args]`: starts N local ranks of a script,
 * the way torchrun does for one node.
 *
 * Each rank gets RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT
 * (and GROUPCOMM_DEVICE_PLUGIN with --backend).
 * MASTER_PORT is the port of a store the launcher itself hosts (unless `--no-store`): the
 * launcher binds port 0 and hands the bound port to the ranks while it keeps the socket open. Picking a "free" port by binding and closing a probe socket, then hoping rank 0 gets it,
 * is the TOCTOU race vLLM fixed in #36330; a live listener cannot be stolen. `--no-store` skips
 * the store (then `--master-port` is required and a rank's script hosts it itself).
 *
 * Every line a rank prints is prefixed with `[rank r]`. SIGINT/SIGTERM are forwarded to every
 * rank. If one rank fails (non-zero exit or killed by a signal), the others are sent SIGTERM
 * (SIGKILL after a grace period) and the launcher exits non-zero, naming the rank.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { packageRoot } from '../base/pkgroot.js';
import type { TcpStoreServer } from '../store/server.js';
import { IS_BUN } from '../base/runtime.js';
import { setting } from '../base/config.js';
import { generateSecret } from '../base/secret.js';

export const summary = 'start N local ranks of a script (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT)';

const USAGE = `usage: groupcomm launch -n N [options] script.js|script.ts [-- script args]

options:
  -n, --nproc N          number of local ranks to start (required)
  --backend NAME         device backend for the ranks (exported as GROUPCOMM_DEVICE_PLUGIN, the
                         coordinator's default backend): cpu | cuda | a module
  --master-addr ADDR     address the ranks rendezvous on (default 127.0.0.1)
  --master-port PORT     port of the launcher's store (default 0: the OS picks a free one)
  --no-store             do not host a store; rank 0's script must host one on --master-port
  --grace-ms MS          after a failure, wait this long before SIGKILL (default 5000)
  --no-prefix            do not prefix output lines with [rank r]

Each rank gets RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT and
GROUPCOMM_SECRET (yours, else a fresh random one: the job secret, docs/security.md); unless
--no-store, the launcher hosts a store at MASTER_ADDR:MASTER_PORT for the whole run.
.ts scripts run on Bun (the current runtime when it is Bun, else the bun of this package);
.js/.mjs scripts run on the current runtime.`;

export interface LaunchOptions {
  nproc: number;
  script: string;
  args: string[];
  backend?: string;
  masterAddr: string;
  masterPort: number;
  hostStore: boolean;
  graceMs: number;
  prefix: boolean;
}

/** Parses the command line; returns a usage message (string) on error. */
export function parseLaunchArgs(argv: string[]): LaunchOptions | string {
  const dd = argv.indexOf('--');
  const own = dd < 0 ? argv : argv.slice(0, dd);
  const passthrough = dd < 0 ? [] : argv.slice(dd + 1);
  let parsed;
  try {
    parsed = parseArgs({
      args: own,
      allowPositionals: true,
      strict: true,
      options: {
        nproc: { type: 'string', short: 'n' },
        backend: { type: 'string' },
        'master-addr': { type: 'string' },
        'master-port': { type: 'string' },
        'no-store': { type: 'boolean' },
        'grace-ms': { type: 'string' },
        'no-prefix': { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (e) {
    return `${(e as Error).message}\n\n${USAGE}`;
  }
  const v = parsed.values;
  if (v.help) return USAGE;
  const [script, ...rest] = parsed.positionals;
  if (!script) return `missing script\n\n${USAGE}`;
  const nproc = Number(v.nproc);
  if (!Number.isInteger(nproc) || nproc < 1) return `-n/--nproc must be an integer >= 1 (got ${v.nproc ?? 'nothing'})\n\n${USAGE}`;
  const masterPort = v['master-port'] === undefined ? 0 : Number(v['master-port']);
  if (!Number.isInteger(masterPort) || masterPort < 0 || masterPort > 65535) return `bad --master-port ${v['master-port']}`;
  const hostStore = !v['no-store'];
  if (!hostStore && masterPort === 0) return '--no-store needs --master-port (the port rank 0 will host its store on)';
  const graceMs = v['grace-ms'] === undefined ? 5000 : Number(v['grace-ms']);
  if (!Number.isFinite(graceMs) || graceMs < 0) return `bad --grace-ms ${v['grace-ms']}`;
  return {
    nproc, script, args: [...rest, ...passthrough], backend: v.backend,
    masterAddr: v['master-addr'] ?? '127.0.0.1', masterPort, hostStore, graceMs,
    prefix: !v['no-prefix'],
  };
}

/** The command that runs `script`: .ts on Bun, anything else on the current runtime. */
export function runtimeFor(script: string): string {
  if (!/\.(c|m)?ts$/.test(script)) return process.execPath;
  if (IS_BUN) return process.execPath;
  const bun = path.join(packageRoot(), 'node_modules', '.bin', 'bun');
  if (fs.existsSync(bun)) return bun;
  throw new Error(`cannot run ${script}: TypeScript scripts need Bun (not found at ${bun}); run the launcher with bun or pass a .js file`);
}

/** Writes `data` line by line with `prefix`, keeping a partial last line for the next chunk. */
function linePrefixer(out: NodeJS.WritableStream, prefix: string) {
  let pending = '';
  return {
    write(data: Buffer | string) {
      const text = pending + data.toString();
      const lines = text.split('\n');
      pending = lines.pop() ?? '';
      if (lines.length) out.write(lines.map((l) => prefix + l + '\n').join(''));
    },
    flush() {
      if (pending) out.write(prefix + pending + '\n');
      pending = '';
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

/** Runs the ranks to completion; resolves with the launcher's exit status. */
export async function launch(o: LaunchOptions): Promise<number> {
  const script = path.resolve(o.script);
  if (!fs.existsSync(script)) {
    console.error(`groupcomm launch: script not found: ${o.script}`);
    return 2;
  }
  const cmd = runtimeFor(script);

  let server: TcpStoreServer | undefined;
  let masterPort = o.masterPort;
  // One job secret for the store and every group of the run (docs/security.md): the user's
  // GROUPCOMM_SECRET, else a fresh one; the ranks get it through their environment.
  const secret = setting('GROUPCOMM_SECRET') ?? generateSecret();
  if (o.hostStore) {
    // Loaded on demand: `--no-store` launches need nothing from the store layer.
    const { TcpStoreServer: Server } = await import('../store/server.js');
    server = await Server.listen({ host: o.masterAddr, port: o.masterPort, secret });
    masterPort = server.port;
  }

  const children: ChildProcess[] = [];
  const exits: Promise<void>[] = [];
  let firstFailure: { rank: number; code: number | null; signal: NodeJS.Signals | null } | undefined;
  let stopping = false;
  let forwarded: NodeJS.Signals | undefined;
  let killTimer: NodeJS.Timeout | undefined;

  const stopAll = (signal: NodeJS.Signals) => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill(signal);
    if (!killTimer) {
      killTimer = setTimeout(() => {
        for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
      }, o.graceMs);
      killTimer.unref();
    }
  };

  for (let rank = 0; rank < o.nproc; rank++) {
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      RANK: String(rank), LOCAL_RANK: String(rank), WORLD_SIZE: String(o.nproc),
      LOCAL_WORLD_SIZE: String(o.nproc), MASTER_ADDR: o.masterAddr, MASTER_PORT: String(masterPort),
      GROUPCOMM_SECRET: secret,
    };
    if (o.backend) env.GROUPCOMM_DEVICE_PLUGIN = o.backend;
    const child = spawn(cmd, [script, ...o.args], { env, stdio: ['inherit', 'pipe', 'pipe'] });
    children.push(child);
    const tag = o.prefix ? `[rank ${rank}] ` : '';
    const out = linePrefixer(process.stdout, tag);
    const err = linePrefixer(process.stderr, tag);
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
        if (failed && !firstFailure && !forwarded) {
          firstFailure = { rank, code, signal };
          const others = children.filter((c) => c !== child && c.exitCode === null && c.signalCode === null).length;
          process.stderr.write(`[launch] rank ${rank} ${how}${others ? `; stopping ${others} other rank(s)` : ''}\n`);
        }
        if (failed && !stopping) {
          stopping = true;
          stopAll('SIGTERM');
        }
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
      for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
      return;
    }
    forwarded = sig;
    stopping = true;
    stopAll(sig);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    await Promise.all(exits);
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    if (killTimer) clearTimeout(killTimer);
    await server?.close();
  }
  if (forwarded) return forwarded === 'SIGINT' ? 130 : 143;
  if (firstFailure) {
    const c = firstFailure.code;
    return c !== null && c > 0 && c < 126 ? c : 1;
  }
  return 0;
}
