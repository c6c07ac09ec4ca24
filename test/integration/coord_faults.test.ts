// A rank killed in the middle of a loop of collectives: every other rank fails (within its
// timeout, not hanging) with an error that names the dead rank.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { startRanks } from '../helpers/ranks.js';
import { TcpStoreServer } from '../../host/store/index.js';

type Outcome = { checks: number; failures: string[]; error?: { code: string; message: string; peerRank?: number; peerRanks?: number[] } };

test('a rank killed mid-operation fails the others with the rank named', async () => {
  const server = await TcpStoreServer.listen({ host: '127.0.0.1', port: 0 });
  const victim = 2;
  try {
    const run = startRanks<Outcome>(4, 'test/integration/workers/coord_worker', {
      args: ['killed'], timeoutMs: 80_000, env: { COORD_STORE_PORT: String(server.port), COORD_VICTIM: String(victim) },
    });
    const outs = await run.done;
    assert.is(outs[victim].signal, 'SIGKILL');
    for (const o of outs.filter((x) => x.rank !== victim)) {
      const e = o.result?.error;
      assert.ok(e, `rank ${o.rank} reported no error:\n${o.stderr}`);
      assert.ok(['ERR_GROUPCOMM_PEER_LOST', 'ERR_GROUPCOMM_TIMEOUT'].includes(e!.code), `rank ${o.rank}: ${e!.code} ${e!.message}`);
      const named = e!.peerRank === victim || e!.peerRanks?.includes(victim) || /global rank 2\b/.test(e!.message);
      assert.ok(named, `rank ${o.rank}'s error does not name rank ${victim}: ${e!.message}`);
    }
  } finally {
    await server.close();
  }
});

test.run();
