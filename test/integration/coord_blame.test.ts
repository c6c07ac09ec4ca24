// Faults named right: who failed, who never arrived, who left cleanly, and calls that do not
// match (issue 13). Real processes; every scenario reports what each rank saw.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnRanks } from '../helpers/ranks.js';
import { TcpStoreServer } from '../../host/store/index.js';

let server: TcpStoreServer;
test.before(async () => { server = await TcpStoreServer.listen({ host: '127.0.0.1', port: 0 }); });
test.after(async () => { await server.close(); });

const run = <T>(n: number, scenario: string, env: Record<string, string> = {}) => spawnRanks<T>(n, 'test/integration/workers/blame_worker', {
  args: [scenario], timeoutMs: 90_000, env: { COORD_STORE_PORT: String(server.port), ...env },
});

test('a barrier does not depend on rank 0\'s event loop after it returned', async () => {
  const outs = await run<{ barrier: unknown; sum: number }>(3, 'busy-host', { COORD_TIMEOUT_MS: '2000' });
  for (const [r, o] of outs.entries()) {
    assert.is(o.barrier, 'ok', `rank ${r}: ${JSON.stringify(o.barrier)}`);
    assert.is(o.sum, 3);
  }
});

test.run();
