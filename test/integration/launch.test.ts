// `groupcomm launch` with real processes: the environment each rank gets, the launcher's store,
// output prefixes, a failing rank stopping the rest, signal forwarding, and usage errors.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { packageRoot } from '../../host/base/pkgroot.js';
import { currentRuntime, scriptFile } from '../helpers/ranks.js';

const root = packageRoot();
const worker = scriptFile('test/integration/workers/launch_worker', currentRuntime());

interface Run { code: number | null; stdout: string; stderr: string }

function launch(args: string[], opts: { onStdout?: (text: string, child: ReturnType<typeof spawn>) => void } = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(root, 'bin/groupcomm.js'), 'launch', ...args], {
      cwd: root, stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '', stderr = '';
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`launch timed out\n${stdout}\n${stderr}`)); }, 60_000);
    child.stdout.on('data', (d) => { stdout += d; opts.onStdout?.(stdout, child); });
    child.stderr.on('data', (d) => (stderr += d));
    child.on('close', (code) => { clearTimeout(timer); resolve({ code, stdout, stderr }); });
  });
}

test('every rank gets its environment and meets the others in the launcher store', async () => {
  const r = await launch(['-n', '3', '--backend', 'cpu', worker, '--', 'env', 'a', 'b']);
  assert.is(r.code, 0, r.stderr);
  for (let rank = 0; rank < 3; rank++) {
    const line = r.stdout.split('\n').find((l) => l.startsWith(`[rank ${rank}] env `));
    assert.ok(line, `no env line from rank ${rank}:\n${r.stdout}`);
    assert.match(line!, `RANK=${rank} LOCAL_RANK=${rank} WORLD_SIZE=3 LOCAL_WORLD_SIZE=3 MASTER_ADDR=127.0.0.1 MASTER_PORT=`);
    assert.match(line!, 'BACKEND=cpu args=a,b');
    assert.ok(r.stdout.includes(`[rank ${rank}] no newline at the end\n`), 'a partial last line is flushed with its prefix');
  }
  const ports = new Set([...r.stdout.matchAll(/MASTER_PORT=(\d+)/g)].map((m) => m[1]));
  assert.is(ports.size, 1);
  assert.ok(Number([...ports][0]) > 0);
});

test('a failing rank stops the others and the launcher exits with its code, naming it', async () => {
  const r = await launch(['-n', '3', '--grace-ms', '3000', worker, 'fail']);
  assert.is(r.code, 3);
  assert.match(r.stderr, '[launch] rank 1 exited with code 3');
  assert.match(r.stderr, '[rank 1] Error: rank 1 fails on purpose');
  // The summary table: one row per rank, the failed one with its first error-looking line.
  assert.match(r.stderr, '[launch] FAILED');
  assert.match(r.stderr, /\n\s+rank\s+node\s+local\s+host\s+exit\s+first error line\n/);
  assert.match(r.stderr, /\n\s+1\s+0\s+1\s+\S+\s+code 3\s+Error: rank 1 fails on purpose\n/);
  assert.match(r.stderr, /\n\s+0\s+0\s+0\s+\S+\s+code 0\n/);
  assert.match(r.stdout, '[rank 0] stopped by SIGTERM');
  assert.match(r.stdout, '[rank 2] stopped by SIGTERM');
});

test('SIGTERM to the launcher reaches every rank', async () => {
  let sent = false;
  const r = await launch(['-n', '2', worker, 'signal'], {
    onStdout: (out, child) => {
      if (!sent && out.includes('[rank 0] ready') && out.includes('[rank 1] ready')) {
        sent = true;
        child.kill('SIGTERM');
      }
    },
  });
  assert.ok(sent, r.stdout);
  assert.match(r.stdout, '[rank 0] got SIGTERM');
  assert.match(r.stdout, '[rank 1] got SIGTERM');
  assert.is(r.code, 143);
});

test('launched ranks form a coordinator through the launcher store', async () => {
  const r = await launch(['-n', '3', worker, 'coord']);
  assert.is(r.code, 0, r.stderr);
  for (let rank = 0; rank < 3; rank++) assert.match(r.stdout, `[rank ${rank}] sum=6`);
});

test('the README example: two groups over four launched ranks', async () => {
  const r = await launch(['-n', '4', path.join(root, 'examples/two-groups.mjs')]);
  assert.is(r.code, 0, r.stderr);
  for (const [rank, pair, x] of [[0, '0,1', '0,7'], [1, '0,1', '0,7'], [2, '2,3', '2,7'], [3, '2,3', '2,7']]) {
    assert.match(r.stdout, `[rank ${rank}] world sum 10; pair:0 [${pair}] got x=[${x}]`);
    assert.match(r.stdout, `[rank ${rank}] after the pairs are gone: [0,10,20,30]`);
  }
});

test('a .ts script runs on Bun whichever runtime runs the launcher', async () => {
  const r = await launch(['-n', '2', path.join(root, 'test/integration/workers/launch_worker.ts'), 'coord']);
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stdout, '[rank 0] sum=3');
  assert.match(r.stdout, '[rank 1] sum=3');
});

test('everything after the script goes to the script, options included', async () => {
  const r = await launch(['-n', '1', worker, 'env', '--foo', '-n', '7']);
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stdout, '[rank 0] env RANK=0');
  assert.match(r.stdout, 'args=--foo,-n,7 GROUP_RANK=0 GROUP_WORLD_SIZE=1 RUN_ID=');
  assert.match(r.stderr, '[launch] done');
});

test('usage errors exit 2 and say what is wrong', async () => {
  const noN = await launch([worker]);
  assert.is(noN.code, 2);
  assert.match(noN.stderr, '-n/--nproc-per-node is required');
  const badNode = await launch(['--nnodes', '2', '--node-rank', '2', '-n', '1', '--master-addr', '127.0.0.1', '--master-port', '1234', worker]);
  assert.is(badNode.code, 2);
  assert.match(badNode.stderr, '--node-rank must be below --nnodes');
  const noPort = await launch(['--nnodes', '2', '-n', '1', '--master-addr', '127.0.0.1', worker]);
  assert.is(noPort.code, 2);
  assert.match(noPort.stderr, '--nnodes > 1 needs --master-port');
  const noScript = await launch(['-n', '2']);
  assert.is(noScript.code, 2);
  assert.match(noScript.stderr, 'missing script');
  const missing = await launch(['-n', '2', path.join(root, 'no-such-script.js')]);
  assert.is(missing.code, 2);
  assert.match(missing.stderr, 'script not found');
});

test.run();
