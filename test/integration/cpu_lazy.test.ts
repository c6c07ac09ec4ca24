/**
 * Pairs of the CPU group's mesh connect on demand (docs/cpu-group.md, "Setup"): a rank that
 * dies before any operation needed it is still named — its listener refuses the first dial and
 * its address key is still in the store (it never closed), so that is a loss, not a departure.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { startRanks } from '../helpers/ranks.js';
import { TcpStoreServer } from '../../host/store/server.js';
import { TcpStore } from '../../host/store/client.js';
import { CpuGroup } from '../../host/cpu/group.js';
import { tensor } from '../../host/core/tensor.js';
import { rejectsWith } from '../helpers/rejects.js';

test('a rank SIGKILLed before anyone dialed it: the first operation that needs it fails with PEER_LOST naming it', async () => {
  const server = await TcpStoreServer.listen({ host: '127.0.0.1', port: 0 });
  const store = await TcpStore.create({ host: '127.0.0.1', port: server.port, timeoutMs: 10_000 });
  const n = 6, victim = n - 1, groupName = `lazydead${process.pid}`;
  const child = startRanks(1, 'test/integration/workers/cpu_lazy_victim', { args: [String(server.port), groupName, String(n)], timeoutMs: 60_000, allowFailure: [0] });
  const gs: CpuGroup[] = [];
  try {
    gs.push(...await Promise.all([...Array(n - 1).keys()].map((rank) =>
      CpuGroup.create({ store, rank, worldSize: n, groupName, timeoutMs: 20_000, transport: 'tcp' }))));
    const far = 2; // not a ring neighbour of the victim (4 and 0 are)
    assert.not.ok(gs[far].connectedPeers().includes(victim));
    child.kill(0, 'SIGKILL');
    const [out] = await child.done;
    assert.is(out.signal, 'SIGKILL');
    const t0 = performance.now();
    const e = await rejectsWith(gs[far].recv(tensor(new Float32Array(4)), victim, { timeoutMs: 15_000 }), 'ERR_GROUPCOMM_PEER_LOST');
    assert.is(e.peerRank, victim, e.message);
    assert.match(e.message, new RegExp(`rank ${victim}`));
    // Named by the refused dial, not by the operation's own timeout.
    assert.ok(performance.now() - t0 < 12_000, `took ${Math.round(performance.now() - t0)} ms`);
  } finally {
    child.children[0].kill('SIGKILL');
    await Promise.all(gs.map((g) => g.abort('test over')));
    await store.close();
    await server.close();
  }
});

test.run();
