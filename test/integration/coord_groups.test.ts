// Several groups over the same processes: overlapping groups with traffic on both at once
// (research §(e) 1, 3, 4), many small groups created while another serves, and destroy then
// re-create on the same explicit ports.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnRanks } from '../helpers/ranks.js';
import { TcpStoreServer } from '../../host/store/index.js';
import { reservePort } from '../../host/coordinator/ports.js';

type Outcome = { checks: number; failures: string[] };

async function runScenario(n: number, scenario: string, env: Record<string, string> = {}) {
  const server = await TcpStoreServer.listen({ host: '127.0.0.1', port: 0 });
  try {
    return await spawnRanks<Outcome>(n, 'test/integration/workers/coord_worker', {
      args: [scenario], timeoutMs: 80_000, env: { COORD_STORE_PORT: String(server.port), ...env },
    });
  } finally {
    await server.close();
  }
}

function assertClean(res: Outcome[], minChecks: number) {
  const failures = res.flatMap((r) => r.failures);
  assert.equal(failures, [], failures.join('\n'));
  for (const r of res) assert.ok(r.checks >= minChecks, `only ${r.checks} checks ran`);
}

test('overlapping groups A = [0..3] and B = [0..2] serve at the same time', async () => {
  assertClean(await runScenario(4, 'overlapping'), 60);
});

test('a group per pair of ranks is created while the world group serves', async () => {
  assertClean(await runScenario(4, 'many'), 10);
});

test('destroy then re-create on the same explicit ports, three times', async () => {
  // Explicit ports are the caller's choice; the test picks free ones (the window between this
  // probe and the group's bind is the caller-side race the rendezvous scheme avoids).
  const r = await Promise.all([reservePort('127.0.0.1'), reservePort('127.0.0.1'), reservePort('127.0.0.1')]);
  const ports = r.map((x) => x.port);
  await Promise.all(r.map((x) => x.release()));
  assertClean(await runScenario(3, 'recreate', { COORD_PORTS: JSON.stringify(ports) }), 12);
});

test.run();
