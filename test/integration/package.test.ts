// The npm package as a user gets it: `npm pack` the checkout (built by npm test), check what the
// tarball holds (no tests, nothing shipped importing something unshipped, the entry points and
// the license), unpack it into an app's node_modules without koffi and run a two-rank CPU group
// from it: TCP works, and shared memory falls back with a message naming koffi. The same app
// with koffi linked in uses shared memory (so the first run's fallback is koffi's absence).
// Then the path docs/getting-started.md walks, from an `npm install` of the tarball (below).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { packageRoot } from '../../host/base/pkgroot.js';

const root = packageRoot();
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'groupcomm-pack-'));
let files: string[] = [];
let pkgDir = '';
/** The packed tarball (its path), for the installed-app tests. */
let tarball = '';

const npmVersion = spawnSync('npm', ['--version'], { encoding: 'utf8' });
const noNpm = npmVersion.status === 0 ? '' : `npm is not on PATH (${npmVersion.error?.message ?? npmVersion.stderr})`;
if (noNpm) console.log(`package.test: skipped: ${noNpm}`);
const it = noNpm ? test.skip : test;

test.after(() => fs.rmSync(tmp, { recursive: true, force: true }));

it('npm pack ships the library, its CLI, docs and license, and no test', () => {
  assert.ok(fs.existsSync(path.join(root, 'dist/host/index.js')), 'dist/ is not built (npm test builds it)');
  const r = spawnSync('npm', ['pack', '--json', '--pack-destination', tmp], { cwd: root, encoding: 'utf8', timeout: 60_000 });
  assert.is(r.status, 0, `npm pack failed: ${r.stderr}`);
  const info = JSON.parse(r.stdout.slice(r.stdout.indexOf('['))) as Array<{ filename: string; files: Array<{ path: string }> }>;
  files = info[0].files.map((f) => f.path);
  const tests = files.filter((f) => /(^|\/)test\/|^dist-test\/|\.test\.[jt]s$|(^|\/)helpers\//.test(f));
  assert.equal(tests, [], 'test files in the tarball');
  for (const f of ['LICENSE', 'README.md', 'package.json', 'build/core.wasm', 'bin/groupcomm.js', 'docs/architecture.md', 'dist/host/cli/main.js']) {
    assert.ok(files.includes(f), `${f} is not in the tarball`);
  }
  // Every path package.json points at ships.
  const pj = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));
  const targets: string[] = [pj.main, pj.types, ...Object.values(pj.bin as Record<string, string>)];
  const walk = (v: unknown): void => { if (typeof v === 'string') targets.push(v); else if (v && typeof v === 'object') Object.values(v).forEach(walk); };
  walk(pj.exports);
  for (const t of targets) assert.ok(files.includes(path.posix.normalize(t)), `package.json names ${t}, which is not in the tarball`);
  fs.mkdirSync(path.join(tmp, 'app/node_modules/groupcomm'), { recursive: true });
  const x = spawnSync('tar', ['-xzf', path.join(tmp, info[0].filename), '-C', path.join(tmp, 'app/node_modules/groupcomm'), '--strip-components=1']);
  assert.is(x.status, 0, `tar failed: ${x.stderr}`);
  pkgDir = path.join(tmp, 'app/node_modules/groupcomm');
  tarball = path.join(tmp, info[0].filename);
});

it("every relative import of a shipped module resolves inside the package (the CLI's bench imports no test/)", () => {
  assert.ok(pkgDir, 'the pack step failed');
  const shipped = new Set(files);
  const missing: string[] = [];
  for (const f of files) {
    if (!/\.(js|ts)$/.test(f) || f.endsWith('.d.ts')) continue;
    const src = fs.readFileSync(path.join(pkgDir, f), 'utf8');
    for (const m of src.matchAll(/(?:from\s*|import\s*\(\s*)'(\.{1,2}\/[^']+)'/g)) {
      let target = path.posix.normalize(path.posix.join(path.posix.dirname(f), m[1]));
      if (f.endsWith('.ts')) target = target.replace(/\.js$/, '.ts'); // Bun maps .js specifiers to .ts sources
      if (!shipped.has(target)) missing.push(`${f} imports ${m[1]}`);
    }
  }
  assert.equal(missing, [], 'imports of files that are not shipped');
});

const APP = `
import { createRequire } from 'node:module';
import { CpuGroup, TcpStore, resolveBackend, tensor } from 'groupcomm';
let koffi = true;
try { createRequire(process.env.PKG_DIR + '/package.json').resolve('koffi'); } catch { koffi = false; }
const store = await TcpStore.create({ port: 0, isServer: true, timeoutMs: 30000 });
const gs = await Promise.all([0, 1].map((rank) =>
  CpuGroup.create({ store, rank, worldSize: 2, groupName: 'pkg', transport: 'shm', timeoutMs: 30000 })));
// 64 KiB per rank: above the shared-memory threshold, so it would go through the ring.
const outs = await Promise.all(gs.map((g, r) => g.allReduce(tensor(new Float32Array(16384).fill(r + 1)))));
const ok = outs.every((t) => t.data.every((v) => v === 3));
let cuda;
if (process.env.CHECK_CUDA) cuda = await resolveBackend('cuda').then(() => 'available', (e) => e.message);
console.log('@@RESULT ' + JSON.stringify({ koffi, transport: gs[0].transportTo(1), ok, cuda }));
await Promise.all(gs.map((g) => g.destroy()));
await store.close();
`;

interface AppResult { koffi: boolean; transport: string; ok: boolean; cuda?: string }

function runApp(extraEnv: Record<string, string> = {}): Promise<{ code: number | null; stdout: string; stderr: string; result?: AppResult }> {
  fs.writeFileSync(path.join(tmp, 'app/app.mjs'), APP);
  const env: Record<string, string | undefined> = { ...process.env, PKG_DIR: pkgDir, GROUPCOMM_DEBUG: 'warn', NO_COLOR: '1', ...extraEnv };
  delete env.NODE_PATH; // koffi must be found (or not) the way an app finds it: from its own node_modules
  delete env.GROUPCOMM_CPU_TRANSPORT;
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['app.mjs'], { cwd: path.join(tmp, 'app'), env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '', stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`app did not finish in 60 s\n${stdout}\n${stderr}`)); }, 60_000);
    child.on('close', (code) => {
      clearTimeout(timer);
      const line = stdout.split('\n').find((l) => l.startsWith('@@RESULT '));
      resolve({ code, stdout, stderr, result: line ? JSON.parse(line.slice(9)) : undefined });
    });
  });
}

it('installed without koffi: the CPU group works over TCP and says why shared memory is off; cuda names koffi', async () => {
  assert.ok(pkgDir, 'the pack step failed');
  const nm = path.join(tmp, 'app/node_modules');
  // The package's dependencies, without the optional one.
  const pj = JSON.parse(fs.readFileSync(path.join(pkgDir, 'package.json'), 'utf8'));
  assert.ok(!('koffi' in (pj.dependencies ?? {})), 'koffi is a hard dependency');
  assert.ok('koffi' in (pj.optionalDependencies ?? {}), 'koffi is not an optional dependency');
  for (const dep of Object.keys(pj.dependencies)) {
    fs.mkdirSync(path.dirname(path.join(nm, dep)), { recursive: true });
    fs.symlinkSync(path.join(root, 'node_modules', dep), path.join(nm, dep), 'dir');
  }
  const r = await runApp({ CHECK_CUDA: '1' });
  assert.is(r.code, 0, `app failed:\n${r.stderr}`);
  const { cuda, ...rest } = r.result ?? ({} as AppResult);
  assert.equal(rest, { koffi: false, transport: 'tcp', ok: true }, r.stderr);
  assert.match(cuda ?? '', /device backend 'cuda' is not available: koffi is not installed .*npm install koffi/);
  assert.match(r.stderr, 'falling back to TCP (shared memory unavailable: koffi is not installed');
  assert.match(r.stderr, 'npm install koffi');
});

it('the same app with koffi installed uses shared memory', async () => {
  assert.ok(pkgDir, 'the pack step failed');
  fs.symlinkSync(path.join(root, 'node_modules', 'koffi'), path.join(tmp, 'app/node_modules/koffi'), 'dir');
  const r = await runApp();
  assert.is(r.code, 0, `app failed:\n${r.stderr}`);
  assert.equal(r.result, { koffi: true, transport: 'shm', ok: true }, r.stderr);
  assert.not.match(r.stderr, 'koffi is not installed');
});

// ---- getting started, as docs/getting-started.md walks it ----------------------------------------
// The tarball installed by npm into an empty app (packages from npm's cache, --prefer-offline;
// install scripts off, as plugin_pack.test.ts does), the page's scripts copied in, then a Node, a
// Bun, a mixed and a TypeScript two-rank job, and tsc over the TypeScript one. Bun is "on PATH":
// this checkout's own (its dev dependency). The launcher runs on Bun for the Bun jobs (its ranks
// then run on Bun); the mixed job is a `groupcomm store` and one rank per runtime, started with
// torchrun's variables, as the page shows.

const app = path.join(tmp, 'hello');
/** Node: this process when it is Node, else `node` on PATH. */
const nodeBin = typeof (process.versions as Record<string, string | undefined>).bun === 'string' ? 'node' : process.execPath;
const bunBin = path.join(root, 'node_modules', '.bin', 'bun');
const hasBun = spawnSync(bunBin, ['--version'], { encoding: 'utf8' }).status === 0;
if (!hasBun && !noNpm) console.log(`package.test: the Bun cases are skipped: ${bunBin} does not run (npm ci installs it)`);
const withBun = noNpm || !hasBun ? test.skip : test;

/** The app's environment: npm's own variables dropped (see plugin_pack.test.ts), Bun on PATH, no GROUPCOMM_*. */
function appEnv(extra: Record<string, string> = {}): Record<string, string | undefined> {
  const e = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^npm_(config|package|lifecycle)_/i.test(k) && !k.startsWith('GROUPCOMM_') && k !== 'NODE_PATH'));
  return { ...e, PATH: `${path.dirname(bunBin)}${path.delimiter}${process.env.PATH ?? ''}`, NO_COLOR: '1', ...extra };
}

interface Ran { code: number | null; signal: NodeJS.Signals | null; out: string }

function start(cmd: string, args: string[], extra: Record<string, string> = {}, timeoutMs = 120_000) {
  const child = spawn(cmd, args, { cwd: app, env: appEnv(extra), stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (out += d));
  const done = new Promise<Ran>((resolve) => {
    const timer = setTimeout(() => { out += `\n[package.test] ${cmd} ${args.join(' ')}: killed after ${timeoutMs} ms`; child.kill('SIGKILL'); }, timeoutMs);
    child.on('error', (e) => { out += `\n${e.message}`; });
    child.on('close', (code, signal) => { clearTimeout(timer); resolve({ code, signal, out }); });
  });
  return { child, done, output: () => out };
}

const exec = (cmd: string, args: string[], extra: Record<string, string> = {}, timeoutMs?: number) => start(cmd, args, extra, timeoutMs).done;

/** Each rank's line from hello.mjs / hello.ts, by rank. */
function helloLines(out: string): Map<number, string> {
  const m = new Map<number, string>();
  for (const l of out.split('\n')) {
    const hit = /(?:^|\] )rank (\d)\/2 on (.*)$/.exec(l);
    if (hit) m.set(Number(hit[1]), hit[2]);
  }
  return m;
}

it('getting started: npm install of the tarball into an empty app, the page\'s scripts copied in', async () => {
  assert.ok(tarball, 'the pack step failed');
  fs.mkdirSync(app);
  const typesNode = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')).devDependencies['@types/node'];
  fs.writeFileSync(path.join(app, 'package.json'), JSON.stringify({
    name: 'hello', private: true, type: 'module',
    dependencies: { groupcomm: `file:${tarball}` }, devDependencies: { '@types/node': typesNode },
  }, null, 2));
  for (const f of ['hello.mjs', 'hello.ts', 'tsconfig.json']) fs.copyFileSync(path.join(root, 'examples/getting-started', f), path.join(app, f));
  const r = await exec('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', '--ignore-scripts'], {}, 240_000);
  assert.is(r.code, 0, r.out);
  assert.not.ok(fs.lstatSync(path.join(app, 'node_modules/groupcomm')).isSymbolicLink(), 'groupcomm is a link, not an installed copy');
  assert.ok(fs.existsSync(path.join(app, 'node_modules/.bin/groupcomm')), 'npm linked no groupcomm command');
});

it('getting started: npx groupcomm launch -n 2 hello.mjs runs two ranks on Node', async () => {
  assert.ok(fs.existsSync(path.join(app, 'node_modules/groupcomm')), 'the install step failed');
  const r = await exec('npx', ['--no-install', 'groupcomm', 'launch', '-n', '2', 'hello.mjs']);
  assert.is(r.code, 0, r.out);
  const lines = helloLines(r.out);
  for (const rank of [0, 1]) assert.match(lines.get(rank) ?? '', /^Node v\S+: sum = 3$/, r.out);
});

withBun('getting started: bun node_modules/.bin/groupcomm launch -n 2 hello.mjs runs two ranks on Bun', async () => {
  assert.ok(fs.existsSync(path.join(app, 'node_modules/groupcomm')), 'the install step failed');
  const r = await exec('bun', ['node_modules/.bin/groupcomm', 'launch', '-n', '2', 'hello.mjs']);
  assert.is(r.code, 0, r.out);
  const lines = helloLines(r.out);
  for (const rank of [0, 1]) assert.match(lines.get(rank) ?? '', /^Bun \S+: sum = 3$/, r.out);
});

withBun('getting started: a mixed job — a groupcomm store, rank 0 on Node, rank 1 on Bun', async () => {
  assert.ok(fs.existsSync(path.join(app, 'node_modules/groupcomm')), 'the install step failed');
  // `npx groupcomm store` on the page; started here without npx, whose npm process would stand
  // between this test and the store's signal.
  const store = start(nodeBin, ['node_modules/.bin/groupcomm', 'store', '--port', '0']);
  try {
    // The store prints its address once it listens (port 0: the OS picked one).
    const deadline = Date.now() + 60_000;
    let port = 0;
    while (!port && Date.now() < deadline) {
      port = Number(/listening on [^\s:]+:(\d+)/.exec(store.output())?.[1] ?? 0);
      if (!port) await new Promise((r) => setTimeout(r, 50));
    }
    assert.ok(port, `the store did not start:\n${store.output()}`);
    const vars = (rank: number) => ({ RANK: String(rank), WORLD_SIZE: '2', MASTER_ADDR: '127.0.0.1', MASTER_PORT: String(port) });
    const [node, bun] = await Promise.all([exec(nodeBin, ['hello.mjs'], vars(0)), exec('bun', ['hello.mjs'], vars(1))]);
    assert.is(node.code, 0, node.out);
    assert.is(bun.code, 0, bun.out);
    assert.match(helloLines(node.out).get(0) ?? '', /^Node \S+: sum = 3$/, node.out);
    assert.match(helloLines(bun.out).get(1) ?? '', /^Bun \S+: sum = 3$/, bun.out);
  } finally {
    store.child.kill('SIGTERM');
    const s = await store.done;
    assert.ok(s.code === 0 || s.signal === 'SIGTERM', `the store did not stop cleanly:\n${s.out}`);
  }
});

withBun('getting started: TypeScript — hello.ts on two Bun ranks, and tsc --strict against the installed types', async () => {
  assert.ok(fs.existsSync(path.join(app, 'node_modules/groupcomm')), 'the install step failed');
  const r = await exec('bun', ['node_modules/.bin/groupcomm', 'launch', '-n', '2', 'hello.ts']);
  assert.is(r.code, 0, r.out);
  const lines = helloLines(r.out);
  for (const rank of [0, 1]) assert.match(lines.get(rank) ?? '', /^Bun \S+: sum = 3, step 7, ids \[4, 2\]$/, r.out);
  // The page's `npx tsc`, with this checkout's TypeScript (the app would install its own).
  const tsc = path.join(root, 'node_modules/typescript/bin/tsc');
    const list = await exec(nodeBin, [tsc, '-p', 'tsconfig.json', '--listFilesOnly']);
  assert.is(list.code, 0, list.out);
  assert.match(list.out, path.join(app, 'node_modules/groupcomm/dist/host/index.d.ts'), 'groupcomm did not resolve to the installed declarations');
  const check = await exec(nodeBin, [tsc, '-p', 'tsconfig.json']);
  assert.is(check.code, 0, `tsc found errors:\n${check.out}`);
});

test.run();
