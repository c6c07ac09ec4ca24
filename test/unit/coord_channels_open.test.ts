/**
 * Opening a coordinator's channels (host/coordinator/channels.ts, openChannels) with real stores
 * and sockets, the cases coord_channels leaves out: an outside abort reaches the store channel's
 * join and the CPU mesh at once; a group on explicit ports forms (no rendezvous record to take
 * back); group rank 0 fails with MISMATCH as soon as a member reports another groupRanks, not at
 * its timeout.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import net from 'node:net';
import { StatelessGroupCoordinator } from '../../host/coordinator/coordinator.js';
import { TcpStore, TcpStoreServer } from '../../host/store/index.js';
import { failure } from '../helpers/rejects.js';

async function freePort(): Promise<number> {
  const s = await new Promise<net.Server>((res) => { const x = net.createServer().listen(0, '127.0.0.1', () => res(x)); });
  const port = (s.address() as net.AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

async function rendezvous<T>(n: number, fn: (stores: TcpStore[]) => Promise<T>): Promise<T> {
  const server = await TcpStoreServer.listen({ port: 0 });
  const stores = await Promise.all(Array.from({ length: n }, () => TcpStore.create({ port: server.port, timeoutMs: 3_000 })));
  try {
    return await fn(stores);
  } finally {
    for (const s of stores) await s.close();
    await server.close();
  }
}

test('an outside abort ends a create that waits for a member, at once', async () => {
  await rendezvous(1, async ([store]) => {
    const ac = new AbortController();
    const t0 = performance.now();
    const created = failure(StatelessGroupCoordinator.create({
      groupRanks: [[0, 1]], globalRank: 0, groupName: 'stopped', rendezvous: store, timeoutMs: 8_000, signal: ac.signal,
    }));
    setTimeout(() => ac.abort(new Error('stop')), 300);
    const e = await created;
    const took = performance.now() - t0;
    assert.is(e.code, 'ERR_GROUPCOMM_ABORTED', e.message);
    assert.ok(took < 4_000, `${took} ms`);
  });
});

test('a group on explicit ports forms and closes', async () => {
  const ports: [number, number, number] = [await freePort(), await freePort(), await freePort()];
  const gs = await Promise.all([0, 1].map((r) => StatelessGroupCoordinator.create({
    groupRanks: [[0, 1]], globalRank: r, groupName: 'fixed', groupPorts: [ports], host: '127.0.0.1', timeoutMs: 4_000,
  })));
  assert.equal(gs.map((g) => g.rank), [0, 1]);
  await Promise.all(gs.map((g) => g.destroy({ lingerMs: 50 })));
});

test('group rank 0 fails with MISMATCH as soon as a member reports another groupRanks', async () => {
  await rendezvous(2, async (stores) => {
    const lists = [[[0, 1]], [[0, 1, 2]]];
    const t0 = performance.now();
    const [e0, e1] = await Promise.all([0, 1].map((r) => failure(StatelessGroupCoordinator.create({
      groupRanks: lists[r], globalRank: r, groupName: 'quick', rendezvous: stores[r], timeoutMs: 8_000,
    }).then(async (g) => { await g.destroy({ lingerMs: 0 }); })).then((e) => [e, performance.now() - t0] as const)));
    assert.is(e0[0].code, 'ERR_GROUPCOMM_MISMATCH', e0[0].message);
    assert.is(e1[0].code, 'ERR_GROUPCOMM_MISMATCH', e1[0].message);
    assert.ok(e0[1] < 4_000, `rank 0 took ${e0[1]} ms`);
  });
});

test.run();
