#!/usr/bin/env node
// Runs one compiled uvu test file and fails unless every test that ran passed. uvu itself exits 0
// when a test throws a non-Error (`throw undefined`): mutation runs (scripts/mutate.js) trust the
// exit code, so such a mutant counted as survived while every case failed. scripts/test.js reads
// uvu's summary the same way (Total − Passed).
import { spawnSync } from 'node:child_process';

const file = process.argv[2];
if (!file) {
  console.error('usage: node scripts/uvu-strict.mjs <compiled test file>');
  process.exit(2);
}
const r = spawnSync(process.execPath, [file], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 256 << 20 });
process.stdout.write(r.stdout ?? '');
process.stderr.write(r.stderr ?? '');
if (r.status !== 0) process.exit(r.status ?? 1);
const sum = (re) => [...(r.stdout ?? '').matchAll(re)].reduce((a, m) => a + Number(m[1]), 0);
const total = sum(/^\s*Total:\s+(\d+)/gm);
const passed = sum(/^\s*Passed:\s+(\d+)/gm);
if (total === 0 || passed < total) {
  console.error(`[uvu-strict] ${file}: ${passed} of ${total} passed, but the file exited 0`);
  process.exit(1);
}
