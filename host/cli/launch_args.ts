/**
 * `groupcomm launch`'s command line (torchrun's names) and the runtime that runs a script.
 *
 * Everything after the script belongs to the script: `launch -n 2 app.mjs --foo` hands `--foo`
 * to app.mjs (torchrun's REMAINDER). A `--` right after the script is dropped, as earlier
 * versions required it. Options take `--name value` or `--name=value`, and torchrun's
 * underscore spellings (`--nproc_per_node`) too.
 */
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { packageRoot } from '../base/pkgroot.js';
import { IS_BUN } from '../base/runtime.js';
import { unbracket } from '../base/launch_env.js';

export const USAGE = `usage: groupcomm launch [options] script.js|script.ts [script args…]

one node:    groupcomm launch -n 4 app.mjs --my-flag
many nodes:  groupcomm launch --nnodes 2 --node-rank 0 --nproc-per-node 4 \\
               --master-addr 10.0.0.1 --master-port 29500 app.mjs   (node 0; node 1: --node-rank 1)

options:
  -n, --nproc-per-node P  ranks to start on this node (required; --nproc is the same)
  --nnodes N              nodes in the job (default 1); every node runs one launcher
  --node-rank R           this node's index, 0 ≤ R < N (default 0); node 0 hosts the store
  --master-addr ADDR      node 0's address (default 127.0.0.1); node 0 binds it for the store
  --master-port PORT      the store's port (default 0 on one node: the OS picks one; required
                          with --nnodes > 1)
  --run-id ID             the job's id, exported as GROUPCOMM_RUN_ID and TORCHELASTIC_RUN_ID
                          (default: node 0 draws one and the other nodes read it from the store)
  --join-timeout-ms MS    how long nodes wait for node 0's store and for each other (default 120000)
  --backend NAME          device backend for the ranks (exported as GROUPCOMM_DEVICE_PLUGIN, the
                          coordinator's default backend): cpu | cuda | a module
  --no-store              one node only: do not host a store; rank 0's script hosts one on
                          --master-port
  --grace-ms MS           after a failure, wait this long before SIGKILL (default 5000)
  --no-prefix             do not prefix output lines with [rank r]

Each rank gets RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, GROUP_RANK (the node rank),
GROUP_WORLD_SIZE, MASTER_ADDR, MASTER_PORT, the run id and GROUPCOMM_SECRET (the job secret,
docs/security.md: yours, else on one node a fresh random one; several nodes need yours, the same
on every node, or GROUPCOMM_INSECURE=1). Everything after the script goes to
the script. A rank that fails on any node stops the job on every node; each launcher ends with a
summary table (rank, node, exit code or signal, first error line).
.ts scripts run on Bun (the current runtime when it is Bun, else \`bun\` on PATH, else the app's
node_modules/.bin/bun, else groupcomm's own); .js/.mjs scripts run on the current runtime.`;

export interface LaunchOptions {
  /** Ranks on this node. */
  nproc: number;
  nnodes: number;
  nodeRank: number;
  script: string;
  args: string[];
  backend?: string;
  masterAddr: string;
  masterPort: number;
  hostStore: boolean;
  runId?: string;
  joinTimeoutMs: number;
  graceMs: number;
  prefix: boolean;
}

const OPTIONS = {
  nproc: { type: 'string', short: 'n' },
  'nproc-per-node': { type: 'string' },
  nnodes: { type: 'string' },
  'node-rank': { type: 'string' },
  backend: { type: 'string' },
  'master-addr': { type: 'string' },
  'master-port': { type: 'string' },
  'run-id': { type: 'string' },
  'join-timeout-ms': { type: 'string' },
  'no-store': { type: 'boolean' },
  'grace-ms': { type: 'string' },
  'no-prefix': { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

/** torchrun's spellings: --nproc_per_node, --node_rank, --master_addr … */
function canonical(arg: string): string {
  if (!arg.startsWith('--')) return arg;
  const eq = arg.indexOf('=');
  const name = eq < 0 ? arg : arg.slice(0, eq);
  const rest = eq < 0 ? '' : arg.slice(eq);
  return name.replace(/_/g, '-') + rest;
}

/** Index of the script in argv: the first argument that is neither an option nor its value. */
function scriptIndex(argv: string[]): number {
  for (let i = 0; i < argv.length; i++) {
    const a = canonical(argv[i]);
    if (a === '--') return i + 1 < argv.length ? i + 1 : -1;
    if (!a.startsWith('-') || a === '-') return i;
    if (a.includes('=')) continue;
    const short = a.length === 2 && a[1] !== '-' ? a[1] : undefined;
    const spec = short ? Object.values(OPTIONS).find((o) => 'short' in o && o.short === short) : OPTIONS[a.slice(2) as keyof typeof OPTIONS];
    if (spec?.type === 'string') i++;
  }
  return -1;
}

function int(raw: string | undefined, dflt: number, min: number, max: number, name: string): number | string {
  if (raw === undefined) return dflt;
  const v = Number(raw);
  if (!/^\s*\d+\s*$/.test(raw) || v < min || v > max) return `${name} must be an integer in [${min}, ${max}] (got ${raw})`;
  return v;
}

/** Parses the command line; returns a message (string) for help or a usage error. */
export function parseLaunchArgs(argv: string[]): LaunchOptions | string {
  const at = scriptIndex(argv);
  const own = (at < 0 ? argv : argv.slice(0, at)).filter((a) => a !== '--').map(canonical);
  let rest = at < 0 ? [] : argv.slice(at + 1);
  if (rest[0] === '--') rest = rest.slice(1);
  let parsed;
  try {
    parsed = parseArgs({ args: own, allowPositionals: false, strict: true, options: OPTIONS });
  } catch (e) {
    return `${(e as Error).message}\n\n${USAGE}`;
  }
  const v = parsed.values;
  if (v.help) return USAGE;
  const script = at < 0 ? undefined : argv[at];
  if (!script) return `missing script\n\n${USAGE}`;
  if (v.nproc !== undefined && v['nproc-per-node'] !== undefined && v.nproc !== v['nproc-per-node']) {
    return '-n/--nproc and --nproc-per-node say different things; give one';
  }
  const nprocRaw = v['nproc-per-node'] ?? v.nproc;
  if (nprocRaw === undefined) return `-n/--nproc-per-node is required (ranks to start on this node)\n\n${USAGE}`;
  const checks: [string, number | string][] = [
    ['nproc', int(nprocRaw, 1, 1, 1 << 16, '-n/--nproc-per-node')],
    ['nnodes', int(v.nnodes, 1, 1, 1 << 16, '--nnodes')],
    ['nodeRank', int(v['node-rank'], 0, 0, 1 << 16, '--node-rank')],
    ['masterPort', int(v['master-port'], 0, 0, 65535, '--master-port')],
    ['graceMs', int(v['grace-ms'], 5000, 0, 2 ** 31 - 1, '--grace-ms')],
    ['joinTimeoutMs', int(v['join-timeout-ms'], 120_000, 1, 2 ** 31 - 1, '--join-timeout-ms')],
  ];
  const n: Record<string, number> = {};
  for (const [k, val] of checks) {
    if (typeof val === 'string') return `${val}\n\n${USAGE}`;
    n[k] = val;
  }
  if (n.nodeRank >= n.nnodes) return `--node-rank must be below --nnodes (${n.nodeRank} ≥ ${n.nnodes})`;
  const hostStore = !v['no-store'];
  if (!hostStore && n.nnodes > 1) return '--no-store works on one node only: with --nnodes > 1 node 0\'s launcher hosts the store';
  if (!hostStore && n.masterPort === 0) return '--no-store needs --master-port (the port rank 0 will host its store on)';
  if (n.nnodes > 1 && n.masterPort === 0) return '--nnodes > 1 needs --master-port: the port node 0 hosts the store on, which every node must know';
  if (n.nnodes > 1 && v['master-addr'] === undefined) return '--nnodes > 1 needs --master-addr: node 0\'s address, reachable from every node';
  const runId = v['run-id'];
  if (runId !== undefined && !/^[\w.-]{1,64}$/.test(runId)) return `--run-id must be 1–64 characters of [A-Za-z0-9_.-] (got ${runId})`;
  return {
    nproc: n.nproc, nnodes: n.nnodes, nodeRank: n.nodeRank, script, args: rest, backend: v.backend,
    masterAddr: unbracket(v['master-addr'] ?? '127.0.0.1'), masterPort: n.masterPort, hostStore, runId,
    joinTimeoutMs: n.joinTimeoutMs, graceMs: n.graceMs, prefix: !v['no-prefix'],
  };
}

/** An executable file named `name` in one of PATH's folders. */
export function onPath(name: string, pathVar = process.env.PATH ?? ''): string | undefined {
  for (const dir of pathVar.split(path.delimiter)) {
    if (!dir) continue;
    const f = path.join(dir, name);
    try {
      fs.accessSync(f, fs.constants.X_OK);
      if (fs.statSync(f).isFile()) return f;
    } catch { /* not here */ }
  }
  return undefined;
}

/** node_modules/.bin/`name` in `from` or a folder above it (the app's, wherever it is run from). */
export function inNodeModules(name: string, from: string): string | undefined {
  for (let dir = path.resolve(from); ; dir = path.dirname(dir)) {
    const f = path.join(dir, 'node_modules', '.bin', name);
    if (fs.existsSync(f)) return f;
    if (path.dirname(dir) === dir) return undefined;
  }
}

/**
 * The command that runs `script`: .ts on Bun, anything else on the current runtime. Bun is looked
 * for on PATH (what the user runs), then in the app's node_modules/.bin (from the working folder,
 * then from the script's), then in groupcomm's own dependencies.
 */
export function runtimeFor(script: string, env: NodeJS.ProcessEnv = process.env): string {
  if (!/\.(c|m)?ts$/.test(script)) return process.execPath;
  if (IS_BUN) return process.execPath;
  const own = path.join(packageRoot(), 'node_modules', '.bin', 'bun');
  const found = onPath('bun', env.PATH) ?? inNodeModules('bun', process.cwd()) ?? inNodeModules('bun', path.dirname(script))
    ?? (fs.existsSync(own) ? own : undefined);
  if (found) return found;
  throw new Error(`cannot run ${script}: TypeScript scripts need Bun, which is not on PATH, in node_modules/.bin ` +
    `above ${process.cwd()}, nor at ${own}; install it (npm install bun), run the launcher with bun, or pass a .js file`);
}
