// groupcomm as a plugin author meets it: packed with `npm pack`, installed from the tarball into a
// temporary folder next to an out-of-tree plugin package (test/fixtures/example-plugin, which
// imports nothing but `groupcomm/plugin`), and the conformance suite (`groupcomm/conformance`)
// run on that plugin, loaded by its package name, in this runtime (ranks included).
// Packages come from the npm cache (--prefer-offline); nothing is built or scripted on install.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { packageRoot } from '../../host/base/pkgroot.js';

const root = packageRoot();
const PLUGIN = 'groupcomm-plugin-example';

/**
 * Runs a command to completion. npm's own variables are dropped: when this test runs under
 * `npm test`, an inherited npm_config_prefix or local_prefix would point the nested npm at
 * this checkout instead of the temporary folder.
 */
function run(cmd: string, args: string[], cwd: string, timeoutMs = 120_000): Promise<string> {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^npm_(config|package|lifecycle)_/i.test(k)));
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd, env: { ...env, NO_COLOR: '1' }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', (e) => { clearTimeout(timer); reject(e); });
    child.on('close', (code) => {
      clearTimeout(timer);
      if (code === 0) resolve(out);
      else reject(new Error(`${cmd} ${args.join(' ')} exited with ${code}:\n${out.slice(-6000)}`));
    });
  });
}

test(`npm pack, installed next to an out-of-tree plugin: ${PLUGIN} passes the conformance suite by name`, async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'groupcomm-pack-'));
  try {
    await run('npm', ['pack', '--ignore-scripts', '--silent', '--pack-destination', dir], root);
    const tarball = fs.readdirSync(dir).find((f) => f.endsWith('.tgz'));
    assert.ok(tarball, 'npm pack made no tarball');
    fs.cpSync(path.join(root, 'test', 'fixtures', 'example-plugin'), path.join(dir, PLUGIN), { recursive: true });
    const app = path.join(dir, 'app');
    fs.mkdirSync(app);
    fs.writeFileSync(path.join(app, 'package.json'), JSON.stringify({
      name: 'plugin-user', private: true, type: 'module',
      dependencies: { groupcomm: `file:../${tarball}`, [PLUGIN]: `file:../${PLUGIN}` },
    }));
    fs.writeFileSync(path.join(app, 'run.mjs'), [
      "import { formatReport, runConformance } from 'groupcomm/conformance';",
      `const report = await runConformance({ plugin: '${PLUGIN}', worldSizes: [1, 2] });`,
      'console.log(formatReport(report));',
      "const why = [...new Set(report.runs.flatMap((r) => r.cases.filter((c) => c.status === 'skipped').map((c) => c.id.split(' ')[0] + ': ' + c.message)))];",
      "console.log('@@REPORT ' + JSON.stringify({ backend: report.backend, passed: report.passed, failed: report.failed, skipped: report.skipped, why }));",
    ].join('\n'));
    // --install-links: the plugin is installed as a copy (as from a registry), not a symlink, so
    // its `groupcomm/plugin` can only be the groupcomm installed beside it.
    await run('npm', ['install', '--prefix', app, '--prefer-offline', '--no-audit', '--no-fund', '--ignore-scripts', '--install-links'], app);
    for (const p of ['groupcomm', PLUGIN]) {
      assert.not.ok(fs.lstatSync(path.join(app, 'node_modules', p)).isSymbolicLink(), `${p} is a link, not an installed copy`);
    }
    const out = await run(process.execPath, ['run.mjs'], app, 240_000);
    const line = out.split('\n').find((l) => l.startsWith('@@REPORT '));
    assert.ok(line, `no report:\n${out}`);
    const r = JSON.parse(line!.slice('@@REPORT '.length)) as { backend: string; passed: number; failed: number; skipped: number; why: string[] };
    assert.is(r.backend, 'example');
    assert.is(r.failed, 0, out);
    // The example plugin declares no optional capability (variable-size collectives, split):
    // only those cases may be skipped, and only for that reason — never a required case.
    for (const w of r.why) assert.match(w, /not in the backend's capabilities$/, out);
    assert.ok(r.passed > 400, `only ${r.passed} cases passed:\n${out}`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
