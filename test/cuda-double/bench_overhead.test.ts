// `groupcomm bench device --plugin cuda` against the CUDA/NCCL test double prints the plugin's
// own per-call cost: a 1-element allReduce through the plugin and through bare koffi, side by
// side, and their difference. Speed is not asserted (the machine is shared): the figures must
// be there, be numbers, and add up.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { packageRoot } from '../../host/base/pkgroot.js';
import { buildCudaDouble } from './build.js';

const d = buildCudaDouble();
if ('skip' in d) console.log(`# ${d.skip}`);
const t = 'skip' in d ? test.skip : test;

t('bench device --plugin cuda on the double: plugin µs/call, bare koffi µs/call, and the difference', () => {
  if ('skip' in d) return;
  const r = spawnSync(process.execPath, [path.join(packageRoot(), 'bin', 'groupcomm.js'), 'bench', 'device', '--plugin', 'cuda', '-g', '1', '-b', '4', '-e', '4', '-n', '2', '-w', '1', '--ops', 'allReduce', '--overhead', '300'], {
    encoding: 'utf8', timeout: 90_000, env: { ...process.env, ...d.env },
  });
  assert.is(r.status, 0, `exit ${r.status}\n${r.stdout}\n${r.stderr}`);
  assert.match(r.stdout, /per-call overhead, 1-element float32 allReduce at world size 1, 300 calls, best of 3 rounds \(the CUDA\/NCCL test double/);
  const m = /plugin ([\d.]+) µs\/call, bare koffi [^\d]*([\d.]+) µs\/call: the plugin adds (-?[\d.]+) µs\/call \((.+)\)/.exec(r.stdout);
  assert.ok(m, `no overhead line:\n${r.stdout}`);
  const [plugin, bare, adds] = [m![1], m![2], m![3]].map(Number);
  assert.ok(plugin > 0 && bare > 0, `${plugin} / ${bare}`);
  assert.ok(Math.abs(plugin - bare - adds) < 0.02, `${plugin} - ${bare} != ${adds}`);
  assert.is(m![4], d.nccl, 'measured on the library the plugin discovered');
  // The collective rows still follow.
  assert.match(r.stdout, /groupcomm\s+allReduce\s+1\s+4\s+1\s+float32/);
});

t('--overhead 0 skips the measurement', () => {
  if ('skip' in d) return;
  const r = spawnSync(process.execPath, [path.join(packageRoot(), 'bin', 'groupcomm.js'), 'bench', 'device', '--plugin', 'cuda', '-g', '1', '-b', '4', '-e', '4', '-n', '1', '-w', '0', '--ops', 'allReduce', '--overhead', '0'], {
    encoding: 'utf8', timeout: 90_000, env: { ...process.env, ...d.env },
  });
  assert.is(r.status, 0, `exit ${r.status}\n${r.stdout}\n${r.stderr}`);
  assert.not.match(r.stdout, /per-call overhead/);
});

test.run();
