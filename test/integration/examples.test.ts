// Trip 5 of issue 17, docs that run: every file under examples/ (the README's and the docs'
// code blocks are these files: test/unit/docs_examples.test.ts) runs to completion on this
// test run's runtime — Node under `node scripts/test.js node`, Bun under `... bun` — multi-rank
// ones through the launcher, as the docs say to run them, and prints what it should.
// TypeScript examples run on Bun only (Node cannot run them; tsc checks them on both:
// examples_types.test.ts).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { packageRoot } from '../../host/base/pkgroot.js';
import { currentRuntime } from '../helpers/ranks.js';

const root = packageRoot();
const runtime = currentRuntime();
const RT = runtime === 'bun' ? 'Bun' : 'Node';

interface Example {
  /** Ranks through `groupcomm launch -n`; 0: run as one plain process. */
  ranks: number;
  /** Lines the run must print (each regex must match at least `times` lines, default once). */
  expect: [RegExp, number?][];
}

const EXAMPLES: Record<string, Example> = {
  'examples/two-groups.mjs': { ranks: 4, expect: [
    [/^\[rank [01]\] world sum 10; pair:0 \[0,1\] got x=\[0,7\] from rank 0$/, 2],
    [/^\[rank [23]\] world sum 10; pair:0 \[2,3\] got x=\[2,7\] from rank 2$/, 2],
    [/^\[rank \d\] after the pairs are gone: \[0,10,20,30\]$/, 4],
  ] },
  'examples/cpu-group.mjs': { ranks: 2, expect: [[/^\[rank (\d)\] rank \1: sum\[0\] = 1, in place t\[0\] = 1, gathered 2097152$/, 2]] },
  'examples/process-group.mjs': { ranks: 2, expect: [
    [/^\[rank 1\] rank 1 got /], [/step: 3/], // (Bun prints the object over several lines)
    [/^\[rank (\d)\] rank \1: cfg \{"lr":0\.1\}, 2 members, mean 1$/, 2],
  ] },
  'examples/coordinator.mjs': { ranks: 4, expect: [
    [/^\[rank ([01])\] rank \1 in \[0,1\]: device sum 1,2,4,6, host sum 1, step 7, ids \[1,2\]$/, 2],
    [/^\[rank ([23])\] rank \1 in \[2,3\]: device sum 5,2,4,6, host sum 5, step 7, ids \[1,2\]$/, 2],
  ] },
  'examples/vllm-ops.mjs': { ranks: 4, expect: [
    [/^\[rank 0\] rank 0: got \[3,3\] from 3, 10 rows, kept \[1,2\] = 0, experts sent \[0,1,2,3\], lr 0\.1$/],
    [/^\[rank 3\] rank 3: got \[2,2\] from 2, 10 rows, kept \[4,2\] = 12, experts sent \[0,0,0,0,1,1,1,1,2,2,2,2,3,3,3,3\], lr 0\.1$/],
    [/^\[rank (\d)\] rank \1: got \[(\d),\2\] from \2, 10 rows, kept \[\d,2\] = \d+, experts sent \[[0-3,]+\], lr 0\.1$/, 4],
  ] },
  'examples/store.mjs': { ranks: 0, expect: [[/^addr\/0 = 10\.0\.0\.1:41000$/], [/^ready = 1$/]] },
  'examples/backend.mjs': { ranks: 0, expect: [[/^cpu: device type host, 1 device\(s\)$/]] },
  'examples/getting-started/hello.mjs': { ranks: 2, expect: [[new RegExp(`^\\[rank (\\d)\\] rank \\1/2 on ${RT} \\S+: sum = 3$`), 2]] },
  'examples/getting-started/hello.ts': { ranks: 2, expect: [[/^\[rank (\d)\] rank \1\/2 on Bun \S+: sum = 3, step 7, ids \[4, 2\]$/, 2]] },
};

function run(file: string, ranks: number): Promise<{ code: number | null; out: string }> {
  const args = ranks > 0 ? [path.join(root, 'bin', 'groupcomm.js'), 'launch', '-n', String(ranks), file] : [file];
  const env: Record<string, string | undefined> = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('GROUPCOMM_')));
  return new Promise((resolve) => {
    const child = spawn(process.execPath, args, { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    // Generous: a loaded 2-core machine; the examples take about a second each.
    const timer = setTimeout(() => { out += '\n[examples.test] killed after 90 s'; child.kill('SIGKILL'); }, 90_000);
    child.on('close', (code) => { clearTimeout(timer); resolve({ code, out }); });
  });
}

test('the table covers every file under examples/ (a new example gets an entry, and so runs)', () => {
  const files = (fs.readdirSync(path.join(root, 'examples'), { recursive: true }) as string[])
    .filter((f) => /\.(mjs|js|ts|mts)$/.test(f)).map((f) => path.posix.join('examples', f.split(path.sep).join('/'))).sort();
  assert.equal(files, Object.keys(EXAMPLES).sort());
});

for (const [file, ex] of Object.entries(EXAMPLES)) {
  if (/\.m?ts$/.test(file) && runtime !== 'bun') {
    console.log(`examples.test: ${file} runs in the Bun run of the suite (Node does not run TypeScript); type-checked by examples_types.test`);
    continue;
  }
  test(`${file} runs to completion on ${RT}${ex.ranks ? ` (launch -n ${ex.ranks})` : ''}`, async () => {
    const r = await run(file, ex.ranks);
    assert.is(r.code, 0, r.out);
    const lines = r.out.split('\n');
    for (const [re, times = 1] of ex.expect) {
      assert.is(lines.filter((l) => re.test(l)).length, times, `${re} should match ${times} line(s):\n${r.out}`);
    }
  });
}

test.run();
