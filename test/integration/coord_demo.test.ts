// `groupcomm demo` end to end: 4 ranks on A, scale up to B = [0..5], down to C = [0..2], every
// result checked by the ranks; the command must exit 0 and print its timeline and table.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { packageRoot } from '../../host/base/pkgroot.js';

test('groupcomm demo scales A → B → C with every result correct', async () => {
  const root = packageRoot();
  const r = await new Promise<{ code: number | null; out: string }>((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(root, 'bin/groupcomm.js'), 'demo', '--steps', '10'], {
      cwd: root, stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`demo timed out:\n${out}`)); }, 80_000);
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    child.on('close', (code) => { clearTimeout(timer); resolve({ code, out }); });
  });
  assert.is(r.code, 0, r.out);
  for (const s of [
    'group A = [0..3] created on all 4 ranks', 'start ranks 4, 5', 'group B = [0..5] created on all 6 ranks',
    'group A destroyed on all ranks', 'group C = [0..2] created on all 3 ranks', 'group B destroyed on all ranks',
    'group C destroyed on all ranks', 'operations returned the expected results',
  ]) assert.ok(r.out.includes(s), `missing "${s}" in:\n${r.out}`);
  assert.match(r.out, /A\s+\[0\.\.3\].*\s0\n/);
});

test.run();
