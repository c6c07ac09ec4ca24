// Every coordinator method on world sizes 1, 2, 3 and 4, one process per rank (Node and Bun
// ranks mixed in the 4-rank group). The worker checks each result and reports what failed.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnRanks } from '../helpers/ranks.js';
import { TcpStoreServer } from '../../host/store/index.js';

type Outcome = { checks: number; failures: string[] };

async function runScenario(n: number, scenario: string, runtime: 'same' | 'mixed' = 'same', env: Record<string, string> = {}) {
  const server = await TcpStoreServer.listen({ host: '127.0.0.1', port: 0 });
  try {
    return await spawnRanks<Outcome>(n, 'test/integration/workers/coord_worker', {
      args: [scenario], runtime, timeoutMs: 80_000, env: { COORD_STORE_PORT: String(server.port), ...env },
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

for (const n of [1, 2, 3]) {
  test(`every method, world size ${n}`, async () => {
    assertClean(await runScenario(n, 'methods'), 40);
  });
}

test('every method, world size 4, Node and Bun ranks in one group', async () => {
  assertClean(await runScenario(4, 'methods', 'mixed'), 40);
});

test.run();
