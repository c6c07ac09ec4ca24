// The store across real processes: server and clients in separate processes, Node and Bun mixed.
import { spawn } from 'node:child_process';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { TcpStore, TcpStoreServer } from '../../host/index.js';
import { packageRoot } from '../../host/base/pkgroot.js';
import { spawnRanks } from '../helpers/ranks.js';

interface Exchange { rank: number; runtime: string; others: string[]; cas: string; counter: string }

function check(results: Exchange[], n: number): void {
  const runtimes = results.map((r) => r.runtime);
  assert.ok(runtimes.includes('node') && runtimes.includes('bun'), `mixed runtimes: ${runtimes}`);
  for (const r of results) {
    assert.equal(r.others, results.map((o) => `${o.runtime}:${o.rank}`));
    assert.is(r.cas, 'mine');
    assert.is(r.counter, String(200 * n));
  }
}

test('the groupcomm store CLI serves 4 mixed Node/Bun ranks and stops on SIGTERM', async () => {
  const root = packageRoot();
  // bin/groupcomm.js on this runtime (Bun runs dist/ when it is built, the sources otherwise)
  const server = spawn(process.execPath, [path.join(root, 'bin/groupcomm.js'), 'store', '--port', '0', '--world-size', '4']);
  let out = '';
  server.stdout!.on('data', (d) => (out += d));
  server.stderr!.on('data', (d) => (out += d));
  const t0 = Date.now();
  while (!/listening on 127\.0\.0\.1:(\d+)/.test(out)) {
    if (Date.now() - t0 > 20_000 || server.exitCode !== null) throw new Error(`store CLI did not start:\n${out}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  const port = /listening on 127\.0\.0\.1:(\d+)/.exec(out)![1];
  try {
    const results = await spawnRanks<Exchange>(4, 'test/integration/workers/store_worker', {
      runtime: 'mixed', args: ['shared'], env: { STORE_PORT: port }, timeoutMs: 50_000,
    });
    check(results, 4);
    while (!/all 4 clients joined/.test(out)) {
      if (Date.now() - t0 > 20_000) throw new Error(`no join message:\n${out}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  } finally {
    server.kill('SIGTERM');
  }
  const code = await new Promise<number | null>((r) => server.on('exit', (c) => r(c)));
  assert.is(code, 0, out);
  assert.match(out, /stopped \(SIGTERM\)/);
});

test('rank 0 as master on port 0, port published through a coordination store, mixed ranks', async () => {
  const coord = await TcpStoreServer.listen({ port: 0 });
  try {
    const results = await spawnRanks<Exchange>(3, 'test/integration/workers/store_worker', {
      runtime: 'mixed', args: ['master'], env: { COORD_PORT: String(coord.port) }, timeoutMs: 50_000,
    });
    check(results, 3);
  } finally {
    await coord.close();
  }
});

test('256 concurrent connections from 4 processes, each waiting on all 256 keys', async () => {
  const server = await TcpStoreServer.listen({ port: 0 });
  const observer = await TcpStore.create({ port: server.port, timeoutMs: 50_000 });
  let peak = 0;
  const sampler = setInterval(() => { peak = Math.max(peak, server.numConnections); }, 5);
  try {
    const run = spawnRanks<{ ok: boolean }>(4, 'test/integration/workers/store_worker', {
      runtime: 'mixed', args: ['many'], env: { STORE_PORT: String(server.port), CONNS: '64' }, timeoutMs: 50_000,
    });
    // all four processes report "connected" while holding their connections open
    for (;;) {
      const v = await observer.get('connected', { timeoutMs: 50_000 });
      if (Number(Buffer.from(v).toString()) >= 256) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    peak = Math.max(peak, server.numConnections);
    await observer.set('release', '1');
    const results = await run;
    assert.ok(results.every((r) => r.ok));
    assert.ok(peak >= 256, `peak connections ${peak}`);
  } finally {
    clearInterval(sampler);
    await observer.close();
    await server.close();
  }
});

test.run();
