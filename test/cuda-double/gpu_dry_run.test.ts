// test/gpu/cuda_tensors (npm run test:gpu's device-memory, communicator and coordinator cases)
// run here on the CUDA/NCCL test double with two devices, in a child process with the double's
// environment: the GPU file's own code is exercised on every machine, not only where a GPU is
// lent, and a case it would skip here counts as a failure.
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { buildCudaDouble } from './build.js';

const d = buildCudaDouble();
if ('skip' in d) console.log(`# ${d.skip}`);
const t = 'skip' in d ? test.skip : test;

t('the GPU tests of test/gpu/cuda_tensors pass on the double with two devices, none skipped', async () => {
  if ('skip' in d) return;
  const me = fileURLToPath(import.meta.url);
  const file = path.join(path.dirname(me), '..', 'gpu', `cuda_tensors.test${path.extname(me)}`);
  const env: NodeJS.ProcessEnv = { ...process.env, ...d.env, GCDOUBLE_DEVICES: '2' };
  delete env.GROUPCOMM_REQUIRE_GPU; // it refuses the double by design
  const child = spawn(process.execPath, [file], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (x) => (out += x));
  child.stderr.on('data', (x) => (out += x));
  const killer = setTimeout(() => child.kill('SIGKILL'), 120_000);
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  clearTimeout(killer);
  assert.is(code, 0, out);
  const n = (what: string) => Number(new RegExp(`^\\s*${what}:\\s+(\\d+)`, 'm').exec(out)?.[1] ?? NaN);
  assert.ok(n('Total') >= 7, out);
  assert.is(n('Passed'), n('Total'), out);
  assert.is(n('Skipped'), 0, out);
});

test.run();
