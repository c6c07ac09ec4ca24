// `groupcomm doctor` (alias `info`), from issue 17: what a bug report needs, on the runtime of
// this test run. Also the statement in README.md that `bun bin/groupcomm.js` runs the
// TypeScript sources (it used to prefer dist/ once built): the report says which one ran.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { SETTINGS } from '../../host/base/config.js';
import { packageRoot } from '../../host/base/pkgroot.js';
import { currentRuntime } from '../helpers/ranks.js';

const root = packageRoot();
const bin = path.join(root, 'bin', 'groupcomm.js');

/** The environment without any GROUPCOMM_* variable, plus `extra`. */
function env(extra: Record<string, string> = {}): Record<string, string | undefined> {
  const e: Record<string, string | undefined> = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('GROUPCOMM_')));
  return { ...e, ...extra };
}

function doctor(args: string[], extra: Record<string, string> = {}) {
  return spawnSync(process.execPath, [bin, ...args], { cwd: root, env: env(extra), encoding: 'utf8', timeout: 120_000 });
}

test('doctor --json: version, runtime, where the CLI ran from, runtimes, koffi, shared memory, backends, settings', () => {
  const r = doctor(['doctor', '--json'], { GROUPCOMM_STORE_SECRET: 'hunter2-do-not-print' });
  assert.is(r.status, 0, r.stderr);
  assert.not.match(r.stdout, 'hunter2');
  const rep = JSON.parse(r.stdout);
  const pj = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));
  assert.is(rep.groupcomm.version, pj.version);
  assert.is(fs.realpathSync(rep.groupcomm.root), fs.realpathSync(root));
  const rt = currentRuntime();
  assert.is(rep.runtime.name, rt);
  // Node runs dist/; Bun runs the sources even though dist/ is built (npm test built it).
  assert.ok(fs.existsSync(path.join(root, 'dist', 'host', 'cli', 'main.js')));
  assert.is(rep.groupcomm.cli, rt === 'bun' ? 'sources' : 'dist');
  const self = rep.runtimes.find((f: { where: string }) => f.where === 'this process');
  assert.is(self?.name, rt);
  // groupcomm's own Bun (its dev dependency) is found, with its version.
  const bun = rep.runtimes.find((f: { name: string; version?: string }) => f.name === 'bun' && f.version);
  assert.ok(bun, JSON.stringify(rep.runtimes));
  assert.is(rep.koffi.available, true, JSON.stringify(rep.koffi));
  assert.is(rep.koffi.version, JSON.parse(fs.readFileSync(path.join(root, 'node_modules/koffi/package.json'), 'utf8')).version);
  if (process.platform === 'linux') assert.is(rep.sharedMemory.available, true, rep.sharedMemory.detail);
  const byName = Object.fromEntries(rep.backends.map((b: { name: string }) => [b.name, b]));
  assert.is(byName.cpu?.available, true, JSON.stringify(byName.cpu));
  // cuda: available, or a reason (this machine may have no GPU), never silence.
  assert.type(byName.cuda?.available, 'boolean');
  if (!byName.cuda.available) assert.ok(byName.cuda.reason.length > 10, JSON.stringify(byName.cuda));
  assert.equal(rep.settings.map((s: { name: string }) => s.name), Object.keys(SETTINGS));
});

test('doctor as text (and its alias info): every section; bad variables flagged with exit 1, a secret never shown', () => {
  const ok = doctor(['info']);
  assert.is(ok.status, 0, ok.stderr);
  for (const label of ['groupcomm ', 'runtime ', 'runtimes ', 'koffi ', 'shm ', 'backends ', 'settings ']) {
    assert.ok(ok.stdout.split('\n').some((l) => l.startsWith(label)), `no '${label.trim()}' line:\n${ok.stdout}`);
  }
  assert.match(ok.stdout, 'GROUPCOMM_TIMEOUT_MS=300000');
  assert.match(ok.stdout, 'problems: none found');
  // Bad values are flagged (exit 1) and the report still comes, even with a GROUPCOMM_DEBUG that
  // fails loading the layers that log; a secret is never printed.
  const bad = doctor(['doctor'], {
    GROUPCOMM_CPU_WINDOW: 'x', GROUPCOMM_DEBUG: 'verbose', GROUPCOMM_STORE_SECRET: 'hunter2-do-not-print', GROUPCOMM_TIMEOUT_MS: '1234',
  });
  assert.is(bad.status, 1, bad.stdout + bad.stderr);
  assert.match(bad.stdout, 'GROUPCOMM_CPU_WINDOW="x"  ERROR: GROUPCOMM_CPU_WINDOW="x" is not valid');
  assert.match(bad.stdout, 'GROUPCOMM_DEBUG="verbose"  ERROR: GROUPCOMM_DEBUG="verbose" is not valid: expected one of off, warn, info, debug, trace');
  assert.match(bad.stdout, 'GROUPCOMM_TIMEOUT_MS=1234  (from the environment)');
  assert.match(bad.stdout, 'GROUPCOMM_STORE_SECRET=(set, not shown)');
  assert.match(bad.stdout, 'problems: GROUPCOMM_DEBUG, GROUPCOMM_CPU_WINDOW');
  assert.match(bad.stdout, /^shm /m);
  assert.not.match(bad.stdout, 'hunter2');
});

test('doctor: --help exits 0, an unknown flag exits 2 with the usage', () => {
  const h = doctor(['doctor', '--help']);
  assert.is(h.status, 0);
  assert.match(h.stdout, 'usage: groupcomm doctor');
  const u = doctor(['doctor', '--bogus']);
  assert.is(u.status, 2);
  assert.match(u.stderr, "Unknown option '--bogus'");
  const list = doctor(['--help']);
  assert.match(list.stdout, /doctor\s+versions, runtimes/);
});

test.run();
