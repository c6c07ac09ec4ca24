// `groupcomm launch --nnodes`: several launchers (one per "node", here all on 127.0.0.1) meeting
// through node 0's store — the environment, a failure on one node stopping every node, the
// summary tables, the waits that say who is missing — plus the launcher's other manners: Bun
// found on PATH, `--version`, a wrong -n caught at once. Across real network namespaces:
// multinode_netns.test.ts.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { packageRoot } from '../../host/base/pkgroot.js';
import { currentRuntime, scriptFile } from '../helpers/ranks.js';

const root = packageRoot();
const worker = scriptFile('test/integration/workers/launch_worker', currentRuntime());

interface Run { code: number | null; stdout: string; stderr: string; ms: number }

/** Several nodes need one job secret, given to every launcher (docs/security.md). */
const SECRET_ENV = { ...process.env, GROUPCOMM_SECRET: 'launch-nodes-test-secret' };

function groupcomm(args: string[], env: NodeJS.ProcessEnv = SECRET_ENV): Promise<Run> {
  return new Promise((resolve, reject) => {
    const t0 = Date.now();
    const child = spawn(process.execPath, [path.join(root, 'bin/groupcomm.js'), ...args], { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '', stderr = '';
    // SIGTERM first: the launcher forwards it, so no rank outlives a failed test.
    const timer = setTimeout(() => {
      child.kill('SIGTERM');
      setTimeout(() => child.kill('SIGKILL'), 5000).unref();
      reject(new Error(`timed out\n${stdout}\n${stderr}`));
    }, 90_000);
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('close', (code) => { clearTimeout(timer); resolve({ code, stdout, stderr, ms: Date.now() - t0 }); });
  });
}

/** A port nobody listens on right now (tests only: node 0 must be told its port in advance). */
function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
}

const nodeArgs = (port: number, nodeRank: number, nnodes = 2, nproc = 2) =>
  ['launch', '--nnodes', String(nnodes), '--node-rank', String(nodeRank), '--nproc-per-node', String(nproc),
    '--master-addr', '127.0.0.1', '--master-port', String(port)];

test('two launchers make one job: global ranks, node ranks, one run id, one coordinator', async () => {
  const port = await freePort();
  const [n0, n1] = await Promise.all([
    groupcomm([...nodeArgs(port, 0), '--run-id', 'job-7', worker, 'env']),
    groupcomm([...nodeArgs(port, 1), worker, 'env']),
  ]);
  assert.is(n0.code, 0, n0.stderr);
  assert.is(n1.code, 0, n1.stderr);
  for (const [r, run, node, local] of [[0, n0, 0, 0], [1, n0, 0, 1], [2, n1, 1, 0], [3, n1, 1, 1]] as const) {
    assert.match(run.stdout, `[rank ${r}] env RANK=${r} LOCAL_RANK=${local} WORLD_SIZE=4 LOCAL_WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=${port} `);
    assert.match(run.stdout, `GROUP_RANK=${node} GROUP_WORLD_SIZE=2 RUN_ID=job-7 TE_RUN_ID=job-7`);
  }
  // Node 0's table covers the whole job; node 1's its own ranks.
  assert.match(n0.stderr, /\n\s+3\s+1\s+1\s+\S+\s+code 0\n/);
  assert.not.match(n1.stderr, /\n\s+0\s+0\s+0\s/);

  const port2 = await freePort();
  const [c0, c1] = await Promise.all([
    groupcomm([...nodeArgs(port2, 0), worker, 'coord']),
    groupcomm([...nodeArgs(port2, 1), worker, 'coord']),
  ]);
  assert.is(c0.code, 0, c0.stderr);
  assert.is(c1.code, 0, c1.stderr);
  assert.match(c0.stdout, '[rank 0] sum=10');
  assert.match(c1.stdout, '[rank 3] sum=10');
});

test('a rank failing on node 1 stops node 0 too; every launcher exits non-zero with a table', async () => {
  const port = await freePort();
  const [n0, n1] = await Promise.all([
    groupcomm([...nodeArgs(port, 0), '--grace-ms', '3000', worker, 'fail', '3']),
    groupcomm([...nodeArgs(port, 1), '--grace-ms', '3000', worker, 'fail', '3']),
  ]);
  assert.is(n1.code, 3, n1.stderr);
  assert.is(n0.code, 1, n0.stderr);
  assert.match(n1.stderr, '[launch] rank 3 exited with code 3');
  assert.match(n0.stderr, /\[launch\] rank 3 on node 1 \(\S+\) exited with code 3; stopping 2 rank\(s\) on node 0/);
  assert.match(n0.stdout, '[rank 0] stopped by SIGTERM');
  assert.match(n0.stdout, '[rank 1] stopped by SIGTERM');
  assert.match(n1.stdout, '[rank 2] stopped by SIGTERM');
  // Node 0 prints the job's table, with the failed rank's first error line.
  assert.match(n0.stderr, '[launch] FAILED: job');
  assert.match(n0.stderr, /\n\s+3\s+1\s+1\s+\S+\s+code 3\s+Error: rank 3 fails on purpose\n/);
  assert.match(n1.stderr, /\n\s+3\s+1\s+1\s+\S+\s+code 3\s+Error: rank 3 fails on purpose\n/);
});

test('node 0 gives up on a node whose launcher died, names it, and fails the job', async () => {
  const port = await freePort();
  const env = { ...SECRET_ENV, GROUPCOMM_LIVENESS_MS: '1000' };
  let n1Child: ReturnType<typeof spawn> | undefined;
  const n1 = new Promise<void>((resolve) => {
    n1Child = spawn(process.execPath, [path.join(root, 'bin/groupcomm.js'), ...nodeArgs(port, 1), worker, 'sleep', '4000', '1'], { cwd: root, env, stdio: ['ignore', 'pipe', 'ignore'] });
    let out = '';
    n1Child.stdout!.on('data', (d) => {
      out += d;
      // Both of node 1's ranks run (they end by themselves 4 s later): its launcher dies now.
      if ((out.match(/ready/g) ?? []).length === 2) n1Child!.kill('SIGKILL');
    });
    n1Child.on('close', () => resolve());
  });
  const n0 = await groupcomm([...nodeArgs(port, 0), worker, 'sleep', '4000', '1'], env);
  await n1;
  assert.is(n0.code, 1, n0.stderr);
  assert.match(n0.stderr, /node 1 stopped answering for \d+ ms \(its launcher died or its link is cut\)/);
  assert.match(n0.stderr, '[launch] FAILED: job');
});

test('several nodes without GROUPCOMM_SECRET: refused at once, saying what to set', async () => {
  const env = { ...process.env };
  delete env.GROUPCOMM_SECRET;
  delete env.GROUPCOMM_INSECURE;
  const r = await groupcomm([...nodeArgs(1, 0), worker, 'env'], env);
  assert.is(r.code, 2);
  assert.match(r.stderr, '--nnodes > 1 needs GROUPCOMM_SECRET, the same on every node');
});

test('launchers waiting for node 0 or for a missing node say so while they wait, then give up', async () => {
  // Both cases at once: each waits out its --join-timeout-ms.
  const [lonePort, port] = [await freePort(), await freePort()];
  const [r, n0, n1] = await Promise.all([
    groupcomm([...nodeArgs(lonePort, 1), '--join-timeout-ms', '6000', worker, 'env']),
    groupcomm([...nodeArgs(port, 0, 3, 1), '--join-timeout-ms', '6000', worker, 'env']),
    groupcomm([...nodeArgs(port, 1, 3, 1), '--join-timeout-ms', '6000', worker, 'env']),
  ]);
  // A node without node 0: it names the store it waits for.
  assert.is(r.code, 1);
  assert.match(r.stderr, `node 1: waiting for node 0's store at 127.0.0.1:${lonePort}`);
  assert.match(r.stderr, `did not answer within 6000 ms`);
  assert.not.match(r.stdout, 'env RANK', 'no rank starts before every node is there');
  // Node 0 without node 2: it names the missing node.
  assert.is(n0.code, 1);
  assert.is(n1.code, 1);
  assert.match(n0.stderr, 'node 0: waiting for node(s) 2 of 3 to join');
  assert.match(n0.stderr, 'gave up after 6000 ms (--join-timeout-ms). Start a launcher with --node-rank 2');
  assert.not.match(n0.stdout, 'env RANK');
});

test('a coordinator naming more ranks than the launch started fails at once, saying so', async () => {
  // The README example wants 4 ranks; -n 2 used to wait out the 300 s timeout in silence.
  const r = await groupcomm(['launch', '-n', '2', path.join(root, 'examples/two-groups.mjs')]);
  assert.is(r.code, 1);
  assert.match(r.stderr, 'but this launch started WORLD_SIZE=2');
  assert.ok(r.ms < 30_000, `took ${r.ms} ms`);
});

test('`groupcomm --version` prints the package version', async () => {
  const r = await groupcomm(['--version']);
  const { version } = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));
  assert.is(r.code, 0);
  assert.is(r.stdout.trim(), `groupcomm ${version}`);
});

test('a .ts script runs on the Bun found on PATH first', async () => {
  if (typeof process.versions.bun === 'string') return; // Bun runs .ts itself
  // A `bun` earlier on PATH that says it was chosen, then runs the real one.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gc-bun-'));
  const real = path.join(root, 'node_modules', '.bin', 'bun');
  fs.writeFileSync(path.join(dir, 'bun'), `#!/bin/sh\necho "path-bun chosen" >&2\nexec "${real}" "$@"\n`, { mode: 0o755 });
  try {
    const r = await groupcomm(['launch', '-n', '1', path.join(root, 'test/integration/workers/launch_worker.ts'), 'env'],
      { ...process.env, PATH: `${dir}${path.delimiter}${process.env.PATH ?? ''}` });
    assert.is(r.code, 0, r.stderr);
    assert.match(r.stderr, '[rank 0] path-bun chosen');
    assert.match(r.stdout, '[rank 0] env RANK=0');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
