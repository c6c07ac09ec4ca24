// Trip 2 of issue 17: the README example and every example under examples/ type-check under
// `strict`, as a user's project would check them — 'groupcomm' resolved through the package's
// exports map to its built declarations (tsconfig.examples.json) — together with test/types/,
// the compile-time assertions that types carry through (tensor(new Float32Array(n)) is a
// CpuTensor<Float32Array>, collectives return what they were given, broadcastTensorDict<T>()
// returns T). The README's block is examples/two-groups.mjs itself (docs_examples.test.ts).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { packageRoot } from '../../host/base/pkgroot.js';

const root = packageRoot();
/** tsc runs on Node (this process when it is Node). */
const node = typeof (process.versions as Record<string, string | undefined>).bun === 'string' ? 'node' : process.execPath;

test('tsc --strict over examples/ and test/types/ against the built package types: no error', () => {
  assert.ok(fs.existsSync(path.join(root, 'dist', 'host', 'index.d.ts')), 'dist/ is not built (npm test builds it)');
  const tsc = path.join(root, 'node_modules', 'typescript', 'bin', 'tsc');
  const r = spawnSync(node, [tsc, '-p', 'tsconfig.examples.json', '--listFilesOnly'], { cwd: root, encoding: 'utf8', timeout: 120_000 });
  assert.is(r.status, 0, r.stdout + r.stderr);
  const listed = r.stdout.split('\n').map((f) => path.relative(root, f.trim()));
  // Every example is in the run, and 'groupcomm' came from dist's declarations, not the sources.
  for (const f of fs.readdirSync(path.join(root, 'examples'), { recursive: true }) as string[]) {
    if (/\.(mjs|js|ts|mts)$/.test(f)) assert.ok(listed.includes(path.join('examples', f)), `examples/${f} is not type-checked`);
  }
  assert.ok(listed.includes(path.join('dist', 'host', 'index.d.ts')), 'groupcomm did not resolve to dist/host/index.d.ts');
  assert.not.ok(listed.some((f) => f.startsWith('host' + path.sep)), 'the sources were type-checked instead of the declarations');
  const check = spawnSync(node, [tsc, '-p', 'tsconfig.examples.json'], { cwd: root, encoding: 'utf8', timeout: 120_000 });
  assert.is(check.status, 0, `tsc found errors:\n${check.stdout}${check.stderr}`);
});

test.run();
