// The npm package as a user gets it: `npm pack` the checkout (built by npm test), check what the
// tarball holds (no tests, nothing shipped importing something unshipped, the entry points and
// the license), unpack it into an app's node_modules without koffi and run a two-rank CPU group
// from it: TCP works, and shared memory falls back with a message naming koffi. The same app
// with koffi linked in uses shared memory (so the first run's fallback is koffi's absence).
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

test.run();
