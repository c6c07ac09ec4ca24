// vLLM's remaining coordinator methods (tensor send / recv, allGatherv / reduceScatterv,
// allToAll with splits) at world sizes 1–5, one process per rank, on CPU tensors and on the cpu
// backend's device tensors; Node and Bun ranks mixed in the 4- and 5-rank groups. The worker checks
// every result against plain-JS references and reports what failed.
import { test } from 'uvu';
import { TcpStoreServer } from '../../host/store/index.js';
import { spawnRanks, type Runtime } from '../helpers/ranks.js';
import { assertClean, type Outcome } from '../helpers/scenarios.js';

async function scenario(n: number, runtime: Runtime = 'same'): Promise<Outcome[]> {
  const server = await TcpStoreServer.listen({ host: '127.0.0.1', port: 0 });
  try {
    return await spawnRanks<Outcome>(n, 'test/integration/workers/vllm_worker', {
      runtime, timeoutMs: 80_000, env: { COORD_STORE_PORT: String(server.port) },
    });
  } finally {
    await server.close();
  }
}

for (const n of [1, 2, 3]) {
  test(`world size ${n}`, async () => {
    assertClean(await scenario(n), 20);
  });
}

test('world size 4, Node and Bun ranks in one group', async () => {
  assertClean(await scenario(4, 'mixed'), 20);
});

test('world size 5, Node and Bun ranks in one group', async () => {
  assertClean(await scenario(5, 'mixed'), 20);
});

test.run();
