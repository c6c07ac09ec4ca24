#!/usr/bin/env node
// Runs every test file in its own process, on Node (the tests' build, dist-test/, made by
// `npm run build:test`) and/or Bun (TypeScript sources), and prints one closing line
// `N passed, N failed, N skipped` summed over both.
// A file that crashes or exceeds its time limit counts as one failure, never as silence.
//   node scripts/test.js all|node|bun|gpu [substring-filter...]
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const [mode = 'all', ...filters] = process.argv.slice(2);
// Declared in host/base/config.ts (docs/env.md); checked here by hand: the runner works without a build.
const rawFileTimeout = process.env.GROUPCOMM_TEST_FILE_TIMEOUT_MS || '300000';
if (!/^\s*\d+\s*$/.test(rawFileTimeout) || Number(rawFileTimeout) < 1) {
  console.error(`GROUPCOMM_TEST_FILE_TIMEOUT_MS=${JSON.stringify(rawFileTimeout)} is not valid: expected a positive integer (milliseconds)`);
  process.exit(2);
}
const fileTimeoutMs = Number(rawFileTimeout);
const bun = path.join(root, 'node_modules', '.bin', 'bun');

function find(dir, suffix) {
  const out = [];
  if (!fs.existsSync(dir)) return out;
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...find(p, suffix));
    else if (e.name.endsWith(suffix)) out.push(p);
  }
  return out.sort();
}

function select(files, base) {
  return files.filter((f) => {
    const rel = path.relative(base, f);
    // gpu mode runs only the GPU files; the default suite runs them too (they skip with a reason).
    if (mode === 'gpu' && !rel.startsWith('gpu' + path.sep)) return false;
    return filters.length === 0 || filters.some((s) => rel.includes(s));
  });
}

function runFile(cmd, args, label) {
  return new Promise((resolve) => {
    const t0 = Date.now();
    const child = spawn(cmd, args, {
      cwd: root,
      env: { ...process.env, NO_COLOR: '1', FORCE_COLOR: '0' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    // Once uvu printed its summary the file is done: what still runs is a socket, server or
    // child a test left open. A file with failures is then ended after a few seconds (a failed
    // assertion skips the cleanup that follows it, and the per-file limit is only a safety
    // net); a passing one gets longer, and counts as failed if it still has not exited.
    let lingering;
    const onOutput = (d) => {
      out += d;
      if (lingering || !/^\s*Duration:/m.test(out)) return;
      const m = /^\s*Total:\s+(\d+)[\s\S]*?^\s*Passed:\s+(\d+)/m.exec(out);
      const failing = !m || m[1] !== m[2];
      const graceMs = failing ? 3000 : 30_000;
      lingering = setTimeout(() => {
        out += `\n[test runner] ${label} was still running ${graceMs}ms after its summary (something it opened was not closed); killed\n`;
        process.stderr.write(`[test runner] ${label} was still running ${graceMs}ms after its summary (something it opened was not closed); killed\n`);
        child.kill('SIGKILL');
      }, graceMs);
    };
    child.stdout.on('data', (d) => { process.stdout.write(d); onOutput(d); });
    child.stderr.on('data', (d) => { process.stderr.write(d); onOutput(d); });
    const timer = setTimeout(() => {
      out += `\n[test runner] ${label} exceeded ${fileTimeoutMs}ms; killed\n`;
      child.kill('SIGKILL');
    }, fileTimeoutMs);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      clearTimeout(lingering);
      const num = (re) => { let s = 0; for (const m of out.matchAll(re)) s += Number(m[1]); return s; };
      const total = num(/^\s*Total:\s+(\d+)/gm);
      const passed = num(/^\s*Passed:\s+(\d+)/gm);
      const skipped = num(/^\s*Skipped:\s+(\d+)/gm);
      // uvu's Total counts the tests that ran; skipped ones are reported apart, not inside it.
      let failed = Math.max(0, total - passed);
      // uvu runs its whole queue again when a suite's run() comes after the queue started (a
      // run() before a top-level await): suites run twice and the exit code is the second
      // run's. One summary per file, or the file is broken.
      const summaries = [...out.matchAll(/^\s*Total:\s+\d+/gm)].length;
      if (summaries > 1) {
        failed += 1;
        out += `\n[test runner] ${label} printed ${summaries} uvu summaries: a run() came after uvu had started (a test.run() before an await?), so suites ran twice\n`;
        console.log(`[test runner] ${label} printed ${summaries} uvu summaries: a run() came after uvu had started (a test.run() before an await?), so suites ran twice`);
      }
      if ((code !== 0 || signal) && failed === 0) failed = 1; // crashed, hung or never summarised
      if (total === 0 && code === 0) failed += 1; // a test file that ran no test is a broken file
      const ms = Date.now() - t0;
      console.log(`[test runner] ${label}: ${passed} passed, ${failed} failed, ${skipped} skipped (${ms} ms)`);
      resolve({ passed, failed, skipped, label });
    });
  });
}

const runs = [];
if (mode === 'all' || mode === 'node' || mode === 'gpu') {
  const compiled = path.join(root, 'dist-test', 'test');
  for (const f of select(find(compiled, '.test.js'), compiled)) {
    runs.push(['node', [f], `node ${path.relative(root, f)}`]);
  }
}
// gpu mode runs Bun too where it is installed (a machine packed by scripts/pack-gpu.sh has only Node).
const bunToo = mode === 'gpu' && fs.existsSync(bun);
if (mode === 'gpu' && !bunToo) console.log(`[test runner] ${bun} not found: GPU tests run on Node only`);
if (mode === 'all' || mode === 'bun' || bunToo) {
  for (const f of select(find(path.join(root, 'test'), '.test.ts'), path.join(root, 'test'))) {
    runs.push([bun, [f], `bun ${path.relative(root, f)}`]);
  }
}
if (runs.length === 0) {
  console.log('no test files found (did `npm run build:test` run?)');
  console.log('0 passed, 1 failed');
  process.exit(1);
}

let passed = 0, failed = 0, skipped = 0;
const failedFiles = [];
for (const [cmd, args, label] of runs) {
  const r = await runFile(cmd, args, label);
  passed += r.passed; failed += r.failed; skipped += r.skipped;
  if (r.failed) failedFiles.push(label);
}
if (failedFiles.length) console.log(`[test runner] failing files:\n  ${failedFiles.join('\n  ')}`);
console.log(`${passed} passed, ${failed} failed, ${skipped} skipped`);
process.exit(failed ? 1 : 0);
