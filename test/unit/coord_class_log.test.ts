/**
 * What a coordinator logs about itself (host/coordinator/coordinator.ts) at GROUPCOMM_DEBUG=info:
 * one line when it is created or split off (its global ranks and ports), tagged with the group's
 * wire name and this rank's place, under the COORD subsystem. GROUPCOMM_DEBUG is read when the
 * logger loads, so this file sets it before importing the library.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { stderrLines } from '../helpers/capture.js';

process.env.GROUPCOMM_DEBUG = 'info';
process.env.GROUPCOMM_DEBUG_SUBSYS = 'COORD';
const { StatelessGroupCoordinator } = await import('../../host/coordinator/coordinator.js');

const lines = stderrLines();

const logged = () => lines.splice(0).filter((l) => l.includes(' COORD ')).map((l) => l.replace(/^.* COORD /, '').trim());

test('created and split off: one line each, naming the ranks and the ports', async () => {
  logged();
  const g = await StatelessGroupCoordinator.create({ groupRanks: [[3]], globalRank: 3, groupName: 'told', timeoutMs: 2_000 });
  assert.equal(logged(), ['told_0 rank 0/1 INFO created: global ranks [3], ports [none]']);
  const sub = await g.split({ groupRanks: [[3]], groupName: 'part' });
  assert.equal(logged(), ['part_0 rank 0/1 INFO split from told_0, no device communicator: global ranks [3], ports [none]']);
  await sub!.close();
  await g.close();
  assert.equal(logged(), ['part_0 rank 0/1 INFO closed', 'told_0 rank 0/1 INFO closed']);
});

test('a group of two: the ranks and rank 0\'s ports, comma separated', async () => {
  const { TcpStore, TcpStoreServer } = await import('../../host/store/index.js');
  const server = await TcpStoreServer.listen({ port: 0 });
  const stores = await Promise.all([0, 1].map(() => TcpStore.create({ port: server.port, timeoutMs: 5_000 })));
  try {
    logged();
    const gs = await Promise.all([0, 1].map((r) => StatelessGroupCoordinator.create({
      groupRanks: [[0, 1]], globalRank: r, groupName: 'pair', rendezvous: stores[r], timeoutMs: 5_000,
    })));
    const created = logged().filter((l) => l.includes('created'));
    const want = gs.map((g) => `pair_0 rank ${g.rankInGroup}/2 INFO created: global ranks [0, 1], ports [${g.ports!.join(', ')}]`);
    await Promise.all(gs.map((g) => g.destroy({ lingerMs: 100 })));
    assert.equal(created.sort(), want.sort());
  } finally {
    for (const s of stores) await s.close();
    await server.close();
  }
});

test.run();
