// The message-queue broadcaster (useMessageQueueBroadcaster): group rank 0's broadcasts through a
// shared-memory ring to same-host ranks, over the CPU group to a rank told to use sockets; world
// sizes 1–4, Node and Bun ranks mixed. A small ring (4 slots of 4 KiB) makes messages span slots
// and the writer lap the readers. The worker checks every message and reports what failed.
import { test } from 'uvu';
import { TcpStoreServer } from '../../host/store/index.js';
import { spawnRanks, type Runtime } from '../helpers/ranks.js';
import { assertClean, type Outcome } from '../helpers/scenarios.js';

async function scenario(n: number, runtime: Runtime, env: Record<string, string> = {}, allowFailure?: number[]): Promise<Outcome[]> {
  const server = await TcpStoreServer.listen({ host: '127.0.0.1', port: 0 });
  try {
    return await spawnRanks<Outcome>(n, 'test/integration/workers/mq_worker', {
      runtime, timeoutMs: 80_000, allowFailure,
      env: { COORD_STORE_PORT: String(server.port), GROUPCOMM_MQ_SLOTS: '4', GROUPCOMM_MQ_SLOT_BYTES: '4096', ...env },
    });
  } finally {
    await server.close();
  }
}

test('world size 1: no queue, broadcasts return at once', async () => {
  assertClean(await scenario(1, 'same'), 60);
});

test('world size 2, shared memory, readers only poll (long spin)', async () => {
  assertClean(await scenario(2, 'same', { GROUPCOMM_MQ_SPIN_US: '10000000' }), 60);
});

test('world size 3, Node and Bun, rank 2 over the CPU group', async () => {
  assertClean(await scenario(3, 'mixed', { MQ_SOCKET_RANK: '2' }), 60);
});

test('world size 4, Node and Bun, shared memory, readers sleep on doorbells at once (no spin), a reader that never reads is named', async () => {
  assertClean(await scenario(4, 'mixed', { GROUPCOMM_MQ_SPIN_US: '0' }), 60);
});

test('world size 3, rank 0 on sockets: every reader over the CPU group', async () => {
  assertClean(await scenario(3, 'same', { MQ_SOCKET_RANK: '0' }), 60);
});

test('world size 3: group rank 0 killed mid-stream, every reader fails naming it', async () => {
  const res = await scenario(3, 'mixed', { MQ_SCENARIO: 'killed' }, [0]);
  assertClean(res.slice(1), 11);
});

test('world size 3: group rank 0 publishes and dies before anyone reads; the readers still get every message it published, then fail naming it', async () => {
  const res = await scenario(3, 'mixed', { MQ_SCENARIO: 'killed-before-read' }, [0]);
  assertClean(res.slice(1), 4);
});

test.run();
