/**
 * `groupcomm bench store`: the store against PyTorch's TCPStore, same cases as the peer script
 * peers/torch_store_bench.py so the two can be read side by side.
 *
 * The server runs in its own process; K client processes (--clients 1,8) run every case in
 * lock-step (a store barrier starts each case on all clients at once):
 *   latency     each client loops one awaited op for --seconds: set 16 B, get 16 B, add, wait
 *               (key present), set 64 KiB, get 64 KiB; median and p99 over all ops of all clients
 *   throughput  set(k, v) + get(k) pairs for --seconds, 16 B and 64 KiB values; aggregate ops/s.
 *               depth 1 is torch's loop (one pair at a time per client); depth D (--depth) runs D
 *               pairs concurrently per client on its one pipelined connection
 *   get, noext  get latency of a client that sends only torch's requests (CHECK + GET, two round
 *               trips), to show what the one-round-trip TRY_GET extension buys
 *   memory      the server's RSS holding --memory-keys keys of 16 B, and after deleting them
 * Rows print as each case finishes on every client. torch rows (impl torch-X.Y) come from the
 * peer (`--peer CMD` or `--peers-dir DIR`), run after each of our rounds (--rounds N); the
 * summary gives min/median/max over rounds and the ratio of medians.
 * All of this is noisy on a shared machine: compare rows from one run only.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { TcpStore } from '../host/store/client.js';
import { TcpStoreServer } from '../host/store/server.js';
import { integer, list, number, parse, OUTPUT_OPTIONS, PLOT_OPTION, peerOptions, type Spec } from './args.js';
import { peerCommand, runPeer, tail } from './peers.js';
import { writePlot } from './plot.js';
import { median, percentile, type Report, type Row } from './report.js';
import { summarize } from './rounds.js';
import { loadNote, runSameClients } from './store_torch.js';

const SMALL = 16;
const BIG = 64 * 1024;
/** ext false: a client restricted to torch's own requests (get = CHECK + GET), impl groupcomm-noext. */
type Case = { kind: 'lat' | 'tput'; op: string; size: number; ext?: false };
const CASES: Case[] = [
  { kind: 'lat', op: 'set', size: SMALL }, { kind: 'lat', op: 'get', size: SMALL },
  { kind: 'lat', op: 'add', size: 8 }, { kind: 'lat', op: 'wait', size: 0 },
  { kind: 'lat', op: 'set', size: BIG }, { kind: 'lat', op: 'get', size: BIG },
  { kind: 'tput', op: 'set+get', size: SMALL }, { kind: 'tput', op: 'set+get', size: BIG },
  { kind: 'lat', op: 'get', size: SMALL, ext: false },
];
const ROLE_ENV = 'GROUPCOMM_BENCH_STORE_ROLE';

interface CaseResult { latUs: number[]; elapsedS: number; pairs: number }

// ---------------------------------------------------------------- children

function gcNow(): void {
  const g = globalThis as { gc?: () => void; Bun?: { gc(force: boolean): void } };
  if (g.Bun) g.Bun.gc(true);
  else g.gc?.();
}

/** Server child: prints its port, then answers "rss" lines with its RSS after a GC. */
async function serverChild(): Promise<void> {
  const server = await TcpStoreServer.listen({ port: 0 });
  console.log(JSON.stringify({ port: server.port }));
  const rl = readline.createInterface({ input: process.stdin });
  for await (const line of rl) {
    if (line.startsWith('rss')) {
      // "rss settle": give V8's memory reducer the few seconds it takes to return freed pages
      const rounds = line === 'rss settle' ? 12 : 3;
      for (let i = 0; i < rounds; i++) {
        gcNow();
        await new Promise((r) => setTimeout(r, rounds > 3 ? 400 : 50));
      }
      const m = process.memoryUsage();
      console.log(JSON.stringify({ rss: m.rss, heap: m.heapUsed, external: m.external, keys: server.numKeys }));
    } else if (line === 'quit') break;
  }
  await server.close();
  process.exit(0);
}

async function barrier(s: TcpStore, name: string, k: number): Promise<void> {
  if ((await s.add(name, 1)) === k) await s.set(`${name}/go`, '1');
  await s.wait([`${name}/go`]);
}

/** Client child: runs every case in lock-step with the other clients, prints the timings. */
async function clientChild(): Promise<void> {
  const cfg = JSON.parse(process.env.GROUPCOMM_BENCH_STORE_CFG!) as { port: number; cid: number; k: number; seconds: number; depth: number; run: string };
  const ext = await TcpStore.create({ port: cfg.port, timeoutMs: 120_000 });
  const noext = await TcpStore.create({ port: cfg.port, timeoutMs: 120_000, extensions: false });
  const small = crypto.randomBytes(SMALL);
  const big = crypto.randomBytes(BIG);
  const key = `c${cfg.cid}/k`;
  const ctr = `c${cfg.cid}/n`;
  const depths = [1, cfg.depth];
  let ci = 0;
  for (const c of CASES) {
    const s = c.ext === false ? noext : ext;
    for (const depth of c.kind === 'tput' ? depths : [1]) {
      const val = c.size === BIG ? big : small;
      await s.set(key, val);
      await s.get(key);
      const keys = Array.from({ length: depth }, (_, d) => `${key}${d}`);
      const one = (k: string) =>
        c.op === 'set' ? s.set(k, val)
          : c.op === 'get' ? s.get(k)
            : c.op === 'add' ? s.add(ctr, 1)
              : c.op === 'wait' ? s.wait([k])
                : s.set(k, val).then(() => s.get(k));
      for (const k of keys) await s.set(k, val);
      for (let i = 0; i < 20; i++) await one(keys[0]);
      await barrier(s, `${cfg.run}/b${ci++}`, cfg.k);
      const lat: number[] = [];
      const t0 = performance.now();
      const end = t0 + cfg.seconds * 1000;
      let last = t0;
      await Promise.all(keys.map(async (k) => {
        for (;;) {
          const a = performance.now();
          if (a >= end) break;
          await one(c.op === 'get' || c.op === 'wait' ? key : k);
          const b = performance.now();
          lat.push(b - a);
          if (b > last) last = b;
        }
      }));
      // One line per case, so the parent prints the row once every client has sent its line.
      const r: CaseResult = { latUs: lat.map((ms) => Math.round(ms * 10_000) / 10), elapsedS: (last - t0) / 1000, pairs: lat.length };
      process.stdout.write(JSON.stringify(r) + '\n');
    }
  }
  await barrier(ext, `${cfg.run}/end`, cfg.k);
  await ext.close();
  await noext.close();
  // stdout is a pipe: exit only once the (large) lines have been written out
  await new Promise<void>((r) => process.stdout.write('', () => r()));
  process.exit(0);
}

// ---------------------------------------------------------------- parent

function spawnSelf(role: string, env: Record<string, string> = {}): ChildProcess {
  const self = fileURLToPath(import.meta.url);
  const bun = typeof (process.versions as Record<string, string>).bun === 'string';
  const args = bun ? [self] : ['--expose-gc', self];
  return spawn(process.execPath, args, { env: { ...process.env, ...env, [ROLE_ENV]: role }, stdio: ['pipe', 'pipe', 'inherit'] });
}

function lines(child: ChildProcess): AsyncIterator<string> {
  return readline.createInterface({ input: child.stdout! })[Symbol.asyncIterator]();
}

async function nextJson<T>(it: AsyncIterator<string>, what: string): Promise<T> {
  const r = await it.next();
  if (r.done) throw new Error(`bench store: ${what} exited early`);
  return JSON.parse(r.value) as T;
}

async function runClients(report: Report, port: number, k: number, seconds: number, depth: number, run: string, round: number, samples: Record<string, unknown>[]): Promise<void> {
  const children = Array.from({ length: k }, (_, cid) =>
    spawnSelf('client', { GROUPCOMM_BENCH_STORE_CFG: JSON.stringify({ port, cid, k, seconds, depth, run }) }));
  const its = children.map(lines);
  try {
    for (const c of CASES) {
      for (const d of c.kind === 'tput' ? [1, depth] : [1]) {
        const per = await Promise.all(its.map((it, i) => nextJson<CaseResult>(it, `client ${i}`)));
        const lat = per.flatMap((r) => r.latUs);
        const rate = per.reduce((sum, r) => sum + r.pairs / r.elapsedS, 0);
        report.add({
          name: c.kind === 'tput' ? `pair ${c.op}` : `latency ${c.op}`, impl: c.ext === false ? 'groupcomm-noext' : 'groupcomm', round,
          op: c.op, clients: k, size_bytes: c.size, depth: d, median_us: median(lat), p99_us: percentile(lat, 0.99),
          ops_s: Math.round(c.kind === 'tput' ? rate * 2 : rate),
        }, samples);
      }
    }
  } catch (e) {
    // One client died: the others would sit in their barriers until the store timeout.
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
    throw e;
  }
}

/** Runs the peer script and turns its table into rows (impl torch-X.Y). */
async function runTorch(report: Report, cmd: string, clients: number[], seconds: number, round: number, samples: Record<string, unknown>[]): Promise<void> {
  let impl = 'torch';
  const deadline = Math.ceil(clients.length * 8 * (seconds + 3) + 60);
  const run = await runPeer(cmd, ['--clients', clients.join(','), '--seconds', String(seconds), '--deadline', String(deadline)], (deadline + 30) * 1000, (line) => {
    const v = /torch (\d+\.\d+)/.exec(line);
    if (line.startsWith('#') && v) impl = `torch-${v[1]}`;
    // "K  case     op      value  median_us  p99_us  agg_ops/s  agg_MiB/s"
    const m = /^(\d+)\s+(latency|pair)\s+(\S+)\s+(\S+)\s+([\d.]+)\s+([\d.]+)\s+(\d+)/.exec(line);
    if (!m) return;
    const size = m[4] === '16B' ? SMALL : m[4] === '64KiB' ? BIG : m[3] === 'add' ? 8 : 0;
    report.add({
      name: `${m[2]} ${m[3]}`, impl, round, op: m[3], clients: Number(m[1]), size_bytes: size, depth: 1,
      median_us: Number(m[5]), p99_us: Number(m[6]), ops_s: Number(m[7]),
    }, samples);
  });
  if (run.code !== 0) report.note(`peer failed (exit ${run.code}${run.timedOut ? ', timed out' : ''}): ${tail(run)}`);
}

/** A progress line on a terminal (rewritten in place); nothing when stdout is not a TTY. */
function progress(text: string | undefined): void {
  if (!process.stdout.isTTY) return;
  process.stdout.write(text === undefined ? '\r\x1b[K' : `\r\x1b[K# ${text}`);
}

async function runMemory(report: Report, nKeys: number): Promise<void> {
  const server = spawnSelf('server');
  const it = lines(server);
  try {
    const { port } = await nextJson<{ port: number }>(it, 'server');
    const rss = async (settle = false) => {
      server.stdin!.write(settle ? 'rss settle\n' : 'rss\n');
      return nextJson<{ rss: number; heap: number; external: number; keys: number }>(it, 'server');
    };
    const c = await TcpStore.create({ port, timeoutMs: 300_000 });
    const before = await rss();
    const value = Buffer.alloc(SMALL, 7);
    const batch = 1000;
    const t0 = performance.now();
    for (let i = 0; i < nKeys;) {
      const jobs: Promise<void>[] = [];
      for (let j = 0; j < 16 && i < nKeys; j++, i += batch) {
        const ks = Array.from({ length: Math.min(batch, nKeys - i) }, (_, x) => `mem/${i + x}`);
        jobs.push(c.multiSet(ks, ks.map(() => value)));
      }
      await Promise.all(jobs);
      progress(`filling the server: ${Math.min(i, nKeys)} / ${nKeys} keys, ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    }
    await c.ping();
    progress(undefined);
    const fillS = (performance.now() - t0) / 1000;
    const full = await rss();
    for (let i = 0; i < nKeys; i += 10_000) {
      await Promise.all(Array.from({ length: Math.min(10_000, nKeys - i) }, (_, x) => c.deleteKey(`mem/${i + x}`)));
      progress(`deleting: ${Math.min(i + 10_000, nKeys)} / ${nKeys} keys`);
    }
    progress(undefined);
    const after = await rss(true);
    await c.close();
    const perKey = (full.rss - before.rss) / nKeys;
    report.add({
      name: 'memory', impl: 'groupcomm', op: 'hold', size_bytes: SMALL, count: full.keys,
      rss_start_mib: +(before.rss / 2 ** 20).toFixed(1), rss_full_mib: +(full.rss / 2 ** 20).toFixed(1),
      rss_after_delete_mib: +(after.rss / 2 ** 20).toFixed(1), bytes_per_key: Math.round(perKey),
      heap_bytes_per_key: Math.round((full.heap - before.heap) / nKeys),
      heap_after_delete_mib: +(after.heap / 2 ** 20).toFixed(1), fill_s: +fillS.toFixed(2),
    });
  } finally {
    server.stdin!.write('quit\n');
    setTimeout(() => server.kill('SIGKILL'), 2000).unref();
  }
}

export const DESCRIPTION = `The TCPStore-compatible store: latency of set/get/add/wait (16 B and 64 KiB), set+get
throughput at depth 1 and --depth, with 1 and more client processes against a server in its own
process; then the server's memory holding --memory-keys keys. The peer, torch's TCPStore
(peers/torch_store_bench.py), runs the same cases after each of our rounds.`;

export const OPTIONS = {
  clients: { arg: 'LIST', group: 'participation', default: '1,8', parse: list(integer(1, 256), 'client process counts'), help: 'client process counts' },
  seconds: { arg: 'S', group: 'parameters', default: '1', parse: number(0), help: 'seconds per case' },
  depth: { arg: 'D', group: 'parameters', default: '16', parse: integer(1, 4096), help: 'concurrent set+get pairs per client in the pipelined rows' },
  'memory-keys': { arg: 'N', group: 'parameters', default: '1000000', parse: integer(0), help: 'keys of 16 B for the RSS measurement (0 skips it)' },
  'torch-clients': {
    group: 'comparison',
    help: 'also run torch\'s own clients (under --python) against our server and torch\'s legacy server, depth 1, with server CPU per op (and its user-space part) and client CPU per op',
  },
  ...peerOptions('torch_store_bench.py'),
  ...OUTPUT_OPTIONS,
  ...PLOT_OPTION,
} satisfies Spec;

export async function run(argv: string[], report: Report): Promise<void> {
  const cmd = 'groupcomm bench store';
  const v = parse(OPTIONS, argv, cmd);
  const { clients, seconds, depth } = v;
  const memKeys = v['memory-keys'];
  const peer = peerCommand(v, 'torch_store_bench.py', cmd);
  report.section(`store latency and throughput: server in its own process, ${seconds}s per case, ${v.rounds} round(s)`);
  if (!peer) report.note('no peer: pass --peer CMD or --peers-dir DIR for torch TCPStore rows (docs/bench.md)');
  const samples = clients.map((k) => ({ name: 'latency set+get', impl: 'groupcomm-noext', round: v.rounds, op: 'set+get', clients: k, size_bytes: BIG, depth, median_us: 99999.9, p99_us: 99999.9, ops_s: 999999 }));
  for (let round = 1; round <= v.rounds; round++) {
    const server = spawnSelf('server');
    const it = lines(server);
    try {
      const { port } = await nextJson<{ port: number }>(it, 'server');
      for (const k of clients) await runClients(report, port, k, seconds, depth, `r${round}k${k}`, round, samples);
    } finally {
      server.stdin!.write('quit\n');
      setTimeout(() => server.kill('SIGKILL'), 2000).unref();
    }
    if (peer) await runTorch(report, peer, clients, seconds, round, samples);
  }
  const timed = report.rows.filter((r) => r.depth === 1 || r.impl.startsWith('groupcomm'));
  const impls = new Set(timed.map((r) => r.impl));
  if (v.rounds > 1 || peer) {
    const ours = [...impls].filter((i) => i.startsWith('groupcomm'));
    const show = { size_bytes: (x: unknown) => (x === BIG ? '64KiB' : `${x}B`) };
    summarize(report, timed.filter((r) => r.name.startsWith('latency')), {
      caseKeys: ['op', 'size_bytes', 'clients'], metric: 'median_us', unit: 'us', decimals: 1, ours, show,
      title: `latency across ${v.rounds} round(s): min, median, max of the median per implementation; ratio of medians (< 1: ours faster)`,
    });
    summarize(report, timed.filter((r) => r.name.startsWith('pair') && r.depth === 1), {
      caseKeys: ['op', 'size_bytes', 'clients'], metric: 'ops_s', unit: 'ops/s', decimals: 0, ours, show,
      title: `set+get throughput at depth 1 across ${v.rounds} round(s); ratio of medians (> 1: ours faster)`,
    });
  }
  if (v['torch-clients']) await sameClients(report, v.python, clients, seconds, v.rounds);
  if (v.plot) {
    writePlot(v.plot, storePanels(report.rows), { title: 'groupcomm bench store', yLabel: 'median latency (us, log scale)', xLabel: 'value size (bytes, log scale)', logY: true });
    report.note(`plot: ${v.plot}`);
  }
  if (memKeys > 0) {
    report.section(`store server memory: ${memKeys} keys of 16 B`);
    await runMemory(report, memKeys);
  }
}

/** torch's clients against both servers (store_torch.ts), --rounds times, then the summary. */
async function sameClients(report: Report, python: string, clients: number[], seconds: number, rounds: number): Promise<void> {
  report.section(`torch's clients (${python}) against each server, depth 1, ${seconds}s per case, ${rounds} round(s): ops/s, server and client CPU per op`);
  report.note(loadNote());
  const samples = clients.map((k) => ({ name: 'torch clients set+get', impl: 'torch-2.6-server', round: rounds, op: 'set+get', clients: k, size_bytes: BIG, depth: 1, ops_s: 999999, server_cpu_us_op: 999.9, server_user_us_op: 999.9, client_cpu_us_op: 999.9 }));
  const startOurs = async () => {
    const server = spawnSelf('server');
    const { port } = await nextJson<{ port: number }>(lines(server), 'server');
    return {
      port, pid: server.pid!, stop: () => {
        server.stdin!.write('quit\n');
        setTimeout(() => server.kill('SIGKILL'), 2000).unref();
      },
    };
  };
  for (let round = 1; round <= rounds; round++) await runSameClients(report, python, clients, seconds, round, startOurs, samples);
  const rows = report.rows.filter((r) => r.name.startsWith('torch clients'));
  const show = { size_bytes: (x: unknown) => (x === BIG ? '64KiB' : `${x}B`) };
  summarize(report, rows, {
    caseKeys: ['op', 'size_bytes', 'clients'], metric: 'ops_s', unit: 'ops/s', decimals: 0, ours: ['groupcomm-server'], show,
    title: `torch's clients, ops/s across ${rounds} round(s); ratio of medians (> 1: our server faster)`,
  });
  const whose = { server_cpu_us_op: 'server', server_user_us_op: 'server user-space', client_cpu_us_op: 'clients\'' };
  for (const metric of ['server_cpu_us_op', 'server_user_us_op', 'client_cpu_us_op'] as const) {
    summarize(report, rows.filter((r) => typeof r[metric] === 'number'), {
      caseKeys: ['op', 'size_bytes', 'clients'], metric, unit: 'us', decimals: 1, ours: ['groupcomm-server'], show,
      title: `torch's clients, ${whose[metric]} CPU µs per op across ${rounds} round(s); ratio of medians (< 1: ours less)`,
    });
  }
}

/** Latency of set and get against value size: one panel per op and client count, a line per implementation. */
function storePanels(rows: Row[]) {
  const lat = rows.filter((r) => r.name === 'latency set' || r.name === 'latency get');
  const keys = [...new Set(lat.map((r) => `${r.op}\u0000${r.clients}`))];
  return keys.map((key) => {
    const [op, k] = key.split('\u0000');
    const mine = lat.filter((r) => r.op === op && String(r.clients) === k);
    const series = [...new Set(mine.map((r) => r.impl))].map((impl) => {
      const xs = mine.filter((r) => r.impl === impl);
      const sizes = [...new Set(xs.map((r) => r.size_bytes as number))].sort((a, b) => a - b);
      return { name: impl, points: sizes.map((s) => [s, median(xs.filter((r) => r.size_bytes === s).map((r) => r.median_us!))] as [number, number]) };
    });
    return { title: `${op}, ${k} client${k === '1' ? '' : 's'}`, series };
  });
}

const role = process.env[ROLE_ENV];
if (role === 'server') await serverChild();
else if (role === 'client') await clientChild();
