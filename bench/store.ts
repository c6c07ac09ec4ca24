/**
 * `groupcomm bench store`: the store against PyTorch's TCPStore, same cases as
 * shared/peers/torch_store_bench.py so the two can be read side by side.
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
 * torch rows (impl torch-2.6) come from running the peer script in the same invocation when a
 * torch ≥ 2.2 is found (test/interop/torch_env.ts); --torch off skips them.
 * All of this is noisy on a shared 2-core machine: compare rows from one run only.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { TcpStore } from '../host/store/client.js';
import { TcpStoreServer } from '../host/store/server.js';
import { packageRoot } from '../host/base/pkgroot.js';
import { setting } from '../host/base/config.js';
import { median, percentile, type Report } from './report.js';

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
/** torch's side: shared/peers/torch_store_bench.py (GROUPCOMM_PEERS_DIR, or a shared/ next to the checkout). */
function peerScript(): string | undefined {
  const dirs = [setting('GROUPCOMM_PEERS_DIR'), path.join(packageRoot(), '..', 'shared', 'peers'),
    path.join(packageRoot(), '..', '..', 'shared', 'peers')];
  return dirs.filter((d): d is string => !!d).map((d) => path.join(d, 'torch_store_bench.py')).find((f) => fs.existsSync(f));
}
const ROLE_ENV = 'GROUPCOMM_BENCH_STORE_ROLE';
const sizeName = (n: number) => (n === SMALL ? '16B' : n === BIG ? '64KiB' : '-');

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
  const results: CaseResult[] = [];
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
      results.push({ latUs: lat.map((ms) => Math.round(ms * 10_000) / 10), elapsedS: (last - t0) / 1000, pairs: lat.length });
    }
  }
  await barrier(ext, `${cfg.run}/end`, cfg.k);
  await ext.close();
  await noext.close();
  // stdout is a pipe: exit only once the (large) line has been written out
  await new Promise<void>((r) => process.stdout.write(JSON.stringify(results) + '\n', () => r()));
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

async function runClients(report: Report, port: number, k: number, seconds: number, depth: number, run: string): Promise<void> {
  const children = Array.from({ length: k }, (_, cid) =>
    spawnSelf('client', { GROUPCOMM_BENCH_STORE_CFG: JSON.stringify({ port, cid, k, seconds, depth, run }) }));
  let all: CaseResult[][];
  try {
    all = await Promise.all(children.map((c, i) => nextJson<CaseResult[]>(lines(c), `client ${i}`)));
  } catch (e) {
    // One client died: the others would sit in their barriers until the store timeout.
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
    throw e;
  }
  let ci = 0;
  for (const c of CASES) {
    for (const d of c.kind === 'tput' ? [1, depth] : [1]) {
      const lat = all.flatMap((r) => r[ci].latUs);
      const rate = all.reduce((sum, r) => sum + r[ci].pairs / r[ci].elapsedS, 0);
      report.add({
        name: c.kind === 'tput' ? `pair ${c.op}` : `latency ${c.op}`,
        impl: c.ext === false ? 'groupcomm-noext' : 'groupcomm', op: c.op, clients: k, size_bytes: c.size, depth: d,
        median_us: median(lat), p99_us: percentile(lat, 0.99),
        ops_s: Math.round(c.kind === 'tput' ? rate * 2 : rate),
      });
      ci++;
    }
  }
}

/** Runs the torch peer script and turns its table into rows (impl torch-2.6). */
async function runTorch(report: Report, clients: number[], seconds: number): Promise<void> {
  const { findTorch } = await import('../test/interop/torch_env.js');
  const found = findTorch();
  if (!found.ok) {
    report.note(`torch rows skipped: ${found.reason}`);
    return;
  }
  const script = peerScript();
  if (!script) {
    report.note('torch rows skipped: torch_store_bench.py not found (set GROUPCOMM_PEERS_DIR)');
    return;
  }
  const [cmd, args] = found.torch.command(script);
  const child = spawn(cmd, [...args, '--clients', clients.join(','), '--seconds', String(seconds)], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (err += d));
  const code = await new Promise<number | null>((r) => child.on('exit', (c) => r(c)));
  if (code !== 0) {
    report.note(`torch bench failed (exit ${code}): ${(err || out).slice(-500)}`);
    return;
  }
  const impl = `torch-${found.torch.version.split('.').slice(0, 2).join('.')}`;
  report.note(`torch: ${found.torch.version} (${found.torch.where}), legacy TCPStore server (Debian builds lack libuv)`);
  // "K  case     op      value  median_us  p99_us  agg_ops/s  agg_MiB/s"
  for (const line of out.split('\n')) {
    const m = /^(\d+)\s+(latency|pair)\s+(\S+)\s+(\S+)\s+([\d.]+)\s+([\d.]+)\s+(\d+)/.exec(line);
    if (!m) continue;
    const size = m[4] === '16B' ? SMALL : m[4] === '64KiB' ? BIG : m[3] === 'add' ? 8 : 0;
    report.add({
      name: `${m[2]} ${m[3]}`, impl, op: m[3], clients: Number(m[1]), size_bytes: size, depth: 1,
      median_us: Number(m[5]), p99_us: Number(m[6]), ops_s: Number(m[7]),
    });
  }
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
    }
    await c.ping();
    const fillS = (performance.now() - t0) / 1000;
    const full = await rss();
    for (let i = 0; i < nKeys; i += 10_000) {
      await Promise.all(Array.from({ length: Math.min(10_000, nKeys - i) }, (_, x) => c.deleteKey(`mem/${i + x}`)));
    }
    const after = await rss(true);
    await c.close();
    const perKey = (full.rss - before.rss) / nKeys;
    report.add({
      name: 'memory', impl: 'groupcomm', op: 'hold', size_bytes: SMALL, count: full.keys,
      median_us: NaN, rss_start_mib: +(before.rss / 2 ** 20).toFixed(1), rss_full_mib: +(full.rss / 2 ** 20).toFixed(1),
      rss_after_delete_mib: +(after.rss / 2 ** 20).toFixed(1), bytes_per_key: Math.round(perKey),
      heap_bytes_per_key: Math.round((full.heap - before.heap) / nKeys),
      heap_after_delete_mib: +(after.heap / 2 ** 20).toFixed(1), fill_s: +fillS.toFixed(2),
    });
  } finally {
    server.stdin!.write('quit\n');
    setTimeout(() => server.kill('SIGKILL'), 2000).unref();
  }
}

const HELP = `usage: groupcomm bench store [--clients 1,8] [--seconds S] [--depth D] [--memory-keys N] [--torch auto|off] [--json FILE]

  --clients LIST     client process counts (default 1,8)
  --seconds S        seconds per case (default 1)
  --depth D          concurrent set+get pairs per client in the pipelined rows (default 16)
  --memory-keys N    keys of 16 B for the RSS measurement (default 1000000; 0 skips it)
  --torch MODE       auto: add torch-2.6 rows when a torch ≥ 2.2 is found (default); off`;

export async function run(argv: string[], report: Report): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      clients: { type: 'string', default: '1,8' },
      seconds: { type: 'string', default: '1' },
      depth: { type: 'string', default: '16' },
      'memory-keys': { type: 'string', default: '1000000' },
      torch: { type: 'string', default: 'auto' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    console.log(HELP);
    return;
  }
  const clients = values.clients!.split(',').map(Number);
  const seconds = Number(values.seconds);
  const depth = Number(values.depth);
  const memKeys = Number(values['memory-keys']);
  report.section(`store latency and throughput: server in its own process, ${seconds}s per case`);
  const server = spawnSelf('server');
  const it = lines(server);
  try {
    const { port } = await nextJson<{ port: number }>(it, 'server');
    for (const k of clients) await runClients(report, port, k, seconds, depth, `run${k}`);
  } finally {
    server.stdin!.write('quit\n');
    setTimeout(() => server.kill('SIGKILL'), 2000).unref();
  }
  if (values.torch !== 'off') await runTorch(report, clients, seconds);
  if (memKeys > 0) {
    report.section(`store server memory: ${memKeys} keys of 16 B`);
    await runMemory(report, memKeys);
  }
}

const role = process.env[ROLE_ENV];
if (role === 'server') await serverChild();
else if (role === 'client') await clientChild();
