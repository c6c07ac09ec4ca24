// `bench store --torch-clients` (bench/store_torch.ts): the parts that run without torch. The
// python driver is valid python (it is fed to `<python> -` and only fails there otherwise), and
// a process's CPU time is read from /proc (the server CPU per op comes from it).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { cpuSeconds, cpuTimes, DRIVER } from '../../bench/store_torch.js';

test('the torch-clients driver is valid python with both modes', () => {
  const py = spawnSync('python3', ['-c', 'import ast, sys; ast.parse(sys.stdin.read())'], { input: DRIVER, encoding: 'utf8' });
  if (py.error) {
    console.log(`  (no python3 here: ${py.error.message}; checked the text only)`);
  } else {
    assert.is(py.status, 0, py.stderr);
  }
  assert.match(DRIVER, /sys\.argv\[1\] == "server"/);
  assert.match(DRIVER, /use_libuv/);
});

test('cpuSeconds reads a process\'s user+system time from /proc, and it grows with work', () => {
  if (!fs.existsSync('/proc/self/stat')) {
    assert.is(cpuSeconds(process.pid), undefined);
    return;
  }
  const a = cpuSeconds(process.pid)!;
  assert.ok(a >= 0, `${a}`);
  const t0 = process.cpuUsage();
  let x = 0;
  while ((process.cpuUsage(t0).user + process.cpuUsage(t0).system) < 60_000) x += Math.sqrt(x + 1);
  const b = cpuSeconds(process.pid)!;
  assert.ok(b - a >= 0.03, `${a} -> ${b} after 60 ms of CPU (${x > 0})`);
  assert.is(cpuSeconds(2 ** 22 + 12345), undefined, 'no such process');
});

test('cpuTimes splits user-space from kernel time: a busy loop grows the user part', () => {
  if (!fs.existsSync('/proc/self/stat')) {
    assert.is(cpuTimes(process.pid), undefined);
    return;
  }
  const a = cpuTimes(process.pid)!;
  const t0 = process.cpuUsage();
  let x = 0;
  // the clock is read once per 100 000 steps: reading it is a system call
  while (process.cpuUsage(t0).user < 60_000) for (let i = 0; i < 100_000; i++) x += Math.sqrt(x + 1);
  const b = cpuTimes(process.pid)!;
  assert.ok(b.user - a.user >= 0.03, `user ${a.user} -> ${b.user} after 60 ms of user CPU (${x > 0})`);
  assert.ok(b.system >= a.system && b.system - a.system < b.user - a.user, `system ${a.system} -> ${b.system}`);
  assert.ok(Math.abs(cpuSeconds(process.pid)! - (b.user + b.system)) < 0.05, 'cpuSeconds is their sum');
  assert.is(cpuTimes(2 ** 22 + 12345), undefined, 'no such process');
});

test.run();
