/**
 * `groupcomm doctor` (alias `info`): what a bug report needs, in one paste — groupcomm's version
 * and where it runs from, the runtime and machine, the runtimes the launcher could use, koffi and
 * shared memory, each built-in device backend's probe (cuda: the CUDA runtime and NCCL it found,
 * or why not), and every GROUPCOMM_* variable with the value in force. `--json` prints the same
 * as one object. Nothing here opens a socket; the cuda probe runs in a child process, as
 * resolveBackend does. A part that cannot be examined says why instead of stopping the report
 * (a bad GROUPCOMM_DEBUG, say, which fails loading the layers that log).
 *
 * Exit status: 0, or 1 when a GROUPCOMM_* variable holds a value it does not accept (the report
 * is printed either way), 2 on a usage error.
 */
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { settingsInForce, type SettingInForce } from '../base/config.js';
import { packageRoot, runningSources } from '../base/pkgroot.js';
import { IS_BUN } from '../base/runtime.js';

export const summary = 'print versions, runtimes, koffi/shm, device probes and settings (for bug reports)';

const USAGE = `usage: groupcomm doctor [--json]      (alias: groupcomm info)

Prints what a bug report needs: groupcomm's version and where it runs from, the runtime and
machine, the Node and Bun executables found (this process, PATH, the application's
node_modules/.bin, groupcomm's own), koffi and shared memory, the probe of each built-in device
backend (cpu, cuda: CUDA runtime, driver and NCCL, or the reason they are unusable), and every
GROUPCOMM_* environment variable with the value in force.

options:
  --json       one JSON object instead of text
  -h, --help   this text

Exit status: 0; 1 when a GROUPCOMM_* variable holds a value it does not accept; 2 on bad usage.`;

export interface FoundRuntime {
  name: 'node' | 'bun';
  path: string;
  /** Where it was found: 'this process', 'PATH', 'application', "groupcomm's own". */
  where: string;
  version?: string;
  error?: string;
}

export interface BackendReport {
  name: string;
  available: boolean;
  reason?: string;
  /** What the backend reports about itself (cuda: library paths and versions, device count). */
  details?: unknown;
}

export interface DoctorReport {
  groupcomm: { version: string; root: string; cli: 'sources' | 'dist' };
  runtime: { name: 'node' | 'bun'; version: string; execPath: string; platform: string; arch: string; release: string; cpus: number; memoryBytes: number };
  runtimes: FoundRuntime[];
  koffi: { available: boolean; version?: string; path?: string; reason?: string };
  sharedMemory: { available: boolean; detail: string };
  backends: BackendReport[];
  settings: SettingInForce[];
}

function version(): string {
  try {
    return (JSON.parse(fs.readFileSync(path.join(packageRoot(), 'package.json'), 'utf8')) as { version: string }).version;
  } catch (e) {
    return `unknown (${(e as Error).message})`;
  }
}

function executable(p: string): boolean {
  try {
    fs.accessSync(p, fs.constants.X_OK);
    return fs.statSync(p).isFile();
  } catch {
    return false;
  }
}

/** Node and Bun where the launcher and a user would look: this process, PATH, the app, groupcomm's own. */
function findRuntimes(): FoundRuntime[] {
  const cands: { name: 'node' | 'bun'; path: string; where: string }[] = [];
  cands.push({ name: IS_BUN ? 'bun' : 'node', path: process.execPath, where: 'this process' });
  const pathDirs = (process.env.PATH ?? '').split(path.delimiter).filter(Boolean);
  for (const name of ['node', 'bun'] as const) {
    for (const d of pathDirs) cands.push({ name, path: path.join(d, name), where: 'PATH' });
  }
  for (let d = process.cwd(); ; d = path.dirname(d)) {
    cands.push({ name: 'bun', path: path.join(d, 'node_modules', '.bin', 'bun'), where: 'application' });
    if (path.dirname(d) === d) break;
  }
  cands.push({ name: 'bun', path: path.join(packageRoot(), 'node_modules', '.bin', 'bun'), where: "groupcomm's own" });
  const seen = new Set<string>();
  const out: FoundRuntime[] = [];
  for (const c of cands) {
    if (!executable(c.path)) continue;
    let real: string;
    try { real = fs.realpathSync(c.path); } catch { continue; }
    if (seen.has(real)) continue;
    seen.add(real);
    if (c.where === 'this process') {
      out.push({ ...c, version: IS_BUN ? (process.versions as Record<string, string>).bun : process.version });
      continue;
    }
    const r = spawnSync(c.path, ['--version'], { encoding: 'utf8', timeout: 15_000 });
    const v = (r.stdout ?? '').trim().split('\n')[0];
    out.push(r.status === 0 && v ? { ...c, version: v } : { ...c, error: (r.error?.message ?? r.stderr?.trim()) || `exit ${r.status}` });
  }
  return out;
}

function findKoffi(): DoctorReport['koffi'] {
  try {
    const req = createRequire(path.join(packageRoot(), 'package.json'));
    const main = req.resolve('koffi');
    let dir = path.dirname(main);
    while (!fs.existsSync(path.join(dir, 'package.json')) && path.dirname(dir) !== dir) dir = path.dirname(dir);
    const v = (JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')) as { version?: string }).version;
    return { available: true, version: v, path: dir };
  } catch {
    return { available: false, reason: "not installed (groupcomm's optional dependency for shared memory and cuda; `npm install koffi` enables both)" };
  }
}

/** Creates and removes one small ring, as the CPU group does between same-host peers. */
async function probeSharedMemory(): Promise<DoctorReport['sharedMemory']> {
  try {
    const { Segment } = await import('../cpu/shm.js');
    const seg = Segment.create(64 * 1024);
    seg.close();
    return { available: true, detail: 'a 64 KiB ring was created, mapped and removed (POSIX shm through koffi)' };
  } catch (e) {
    return { available: false, detail: (e as Error).message };
  }
}

async function probeBackends(): Promise<BackendReport[]> {
  let loadBackend: (spec?: string) => Promise<unknown>;
  try {
    ({ loadBackend } = await import('../device/registry.js'));
  } catch (e) {
    const why = `cannot load the device registry: ${(e as Error).message}`;
    return ['cpu', 'cuda'].map((name) => ({ name, available: false, reason: why }));
  }
  const out: BackendReport[] = [];
  for (const name of ['cpu', 'cuda']) {
    try {
      const b = await loadBackend(name) as { probe(): Promise<{ available: boolean; reason?: string }>; report?: () => Promise<unknown> };
      const p = await b.probe();
      // The cuda backend keeps its probe's findings (paths, versions, devices): show them.
      const details = typeof b.report === 'function' ? await b.report() : undefined;
      out.push({ name, available: p.available, ...(p.available ? {} : { reason: p.reason }), ...(details === undefined ? {} : { details }) });
    } catch (e) {
      out.push({ name, available: false, reason: (e as Error).message });
    }
  }
  return out;
}

export async function collect(): Promise<DoctorReport> {
  const [sharedMemory, backends] = [await probeSharedMemory(), await probeBackends()];
  return {
    groupcomm: { version: version(), root: packageRoot(), cli: runningSources ? 'sources' : 'dist' },
    runtime: {
      name: IS_BUN ? 'bun' : 'node',
      version: IS_BUN ? (process.versions as Record<string, string>).bun : process.version,
      execPath: process.execPath, platform: process.platform, arch: process.arch, release: os.release(),
      cpus: os.availableParallelism(), memoryBytes: os.totalmem(),
    },
    runtimes: findRuntimes(),
    koffi: findKoffi(),
    sharedMemory,
    backends,
    settings: redacted(settingsInForce()),
  };
}

/** Variables whose value must not end up in a pasted report. */
const SECRET = /SECRET/;

/** The settings, with secrets replaced by whether they are set. */
function redacted(list: SettingInForce[]): SettingInForce[] {
  return list.map((s) => (SECRET.test(s.name) && s.raw !== undefined ? { ...s, value: '(set, not shown)', raw: '(set, not shown)' } : s));
}

function show(v: unknown): string {
  return typeof v === 'string' ? v : v === undefined ? '(unset)' : JSON.stringify(v);
}

/** The cuda probe's findings in one line: runtime, driver, devices, NCCL. */
function cudaLine(d: unknown): string | undefined {
  const r = d as { cudart?: { path: string; runtimeVersion: number; driverVersion: number; deviceCount: number }; nccl?: { path: string; version: number } } | undefined;
  if (!r || typeof r !== 'object') return undefined;
  const parts: string[] = [];
  if (r.cudart) parts.push(`CUDA runtime ${r.cudart.runtimeVersion}, driver ${r.cudart.driverVersion}, ${r.cudart.deviceCount} device(s) (${r.cudart.path})`);
  if (r.nccl) parts.push(`NCCL ${r.nccl.version} (${r.nccl.path})`);
  return parts.length ? parts.join('; ') : undefined;
}

export function format(r: DoctorReport): string {
  const L: string[] = [];
  const row = (label: string, lines: string[]) => lines.forEach((l, i) => L.push(`${i === 0 ? label.padEnd(11) : ' '.repeat(11)} ${l}`));
  L.push('groupcomm doctor: paste this into a bug report', '');
  row('groupcomm', [`${r.groupcomm.version} (${r.groupcomm.root}), CLI from ${r.groupcomm.cli === 'sources' ? 'the TypeScript sources' : 'dist/'}`]);
  const gib = (r.runtime.memoryBytes / 2 ** 30).toFixed(1);
  row('runtime', [`${r.runtime.name === 'bun' ? 'Bun' : 'Node'} ${r.runtime.version} on ${r.runtime.platform} ${r.runtime.arch} (kernel ${r.runtime.release}, ${r.runtime.cpus} CPUs, ${gib} GiB)`]);
  row('runtimes', r.runtimes.length ? r.runtimes.map((f) => `${f.name.padEnd(4)} ${(f.version ?? `unusable: ${f.error}`).padEnd(9)} ${f.path} (${f.where})`) : ['none found']);
  if (!r.runtimes.some((f) => f.name === 'bun')) row('', ['no Bun: TypeScript scripts and --runtime bun need it (npm install bun, or put bun on PATH)']);
  row('koffi', [r.koffi.available ? `${r.koffi.version} (${r.koffi.path})` : r.koffi.reason!]);
  row('shm', [`${r.sharedMemory.available ? 'available' : 'unavailable'}: ${r.sharedMemory.detail}`]);
  row('backends', r.backends.map((b) => {
    // (When unavailable, the reason already says what the probe found.)
    const extra = b.available && b.name === 'cuda' ? cudaLine(b.details) : undefined;
    return `${b.name.padEnd(5)} ${b.available ? 'available' : `unavailable: ${b.reason}`}${extra ? ` [${extra}]` : ''}`;
  }));
  const user = r.settings.filter((s) => s.kind === 'user');
  row('settings', user.map((s) => s.error
    ? `${s.name}=${SECRET.test(s.name) ? '(set, not shown)' : JSON.stringify(s.raw)}  ERROR: ${s.error}`
    : `${s.name}=${show(s.value)}${s.source === 'env' ? '  (from the environment)' : ''}`));
  const bad = r.settings.filter((s) => s.error);
  L.push('', bad.length ? `problems: ${bad.map((s) => s.name).join(', ')} (see above)` : 'problems: none found');
  return L.join('\n');
}

export async function run(argv: string[]): Promise<number> {
  let json = false;
  try {
    const { values } = parseArgs({ args: argv, strict: true, allowPositionals: false, options: { json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } } });
    if (values.help) {
      console.log(USAGE);
      return 0;
    }
    json = values.json === true;
  } catch (e) {
    console.error(`groupcomm doctor: ${(e as Error).message}\n\n${USAGE}`);
    return 2;
  }
  const report = await collect();
  console.log(json ? JSON.stringify(report, (_k, v) => (typeof v === 'bigint' ? String(v) : v), 2) : format(report));
  return report.settings.some((s) => s.error) ? 1 : 0;
}
