/**
 * Creating a coordinator (host/coordinator/create.ts) without the slow suite: each argument
 * check (before any socket), the defaults (groupName 'anonymous', localRank 0, device 'cpu' or
 * the backend's `type:localRank`), a failed create giving its name back (a failed open, and a
 * message queue that cannot be set up: the channels closed too), no queue in a group of one,
 * fromEnv (launch variables, overrides, the store closed after), explainError's wording and
 * fields, and the failure state's onFail (operations aborted, lost ranks' keys reclaimed).
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { StatelessGroupCoordinator } from '../../host/coordinator/coordinator.js';
import { explainError, groupFaults } from '../../host/coordinator/create.js';
import type { Channels } from '../../host/coordinator/channels.js';
import { TcpStore, TcpStoreServer } from '../../host/store/index.js';
import { mismatchError, peerLeftError, peerLostError, timeoutError } from '../../host/base/errors.js';
import { failure } from '../helpers/rejects.js';

const create = StatelessGroupCoordinator.create.bind(StatelessGroupCoordinator);

test('argument checks, before any socket', async () => {
  const bad = async (o: unknown, re: RegExp) => {
    const e = await failure(create(o as never));
    assert.is(e.code, 'ERR_GROUPCOMM_INVALID_ARGUMENT', e.message);
    assert.match(e.message, re);
  };
  await bad(undefined, /options object required/);
  await bad(null, /options object required/);
  await bad('x', /options object required/);
  await bad({ groupRanks: [[0]], globalRank: 0, localRank: -1 }, /localRank must be an integer >= 0, got -1/);
  await bad({ groupRanks: [[0]], globalRank: 0, localRank: 1.5 }, /localRank/);
  await bad({ groupRanks: [[0]], globalRank: 0, groupPorts: [[1, 2, 3]], rendezvous: {} }, /not both/);
  await bad({ groupRanks: [[0]], globalRank: 0, groupName: '' }, /groupName must be a non-empty string without '\/', got ""/);
  await bad({ groupRanks: [[0]], globalRank: 0, groupName: 'a/b' }, /groupName/);
  await bad({ groupRanks: [[0]], globalRank: 0, groupName: 7 }, /groupName/);
  const g = await create({ groupRanks: [[0]], globalRank: 0, localRank: 0 });
  assert.equal([g.uniqueName, g.localRank, g.device, g.messageQueue], ['anonymous:0', 0, 'cpu', undefined]);
  const h = await create({ groupRanks: [[0]], globalRank: 0, useDeviceCommunicator: true, backend: 'cpu', localRank: 3, useMessageQueueBroadcaster: true });
  assert.equal([h.uniqueName, h.localRank, h.device, h.messageQueue], ['anonymous:1', 3, 'host:3', undefined]);
  const k = await create({ groupRanks: [[0]], globalRank: 0, useDeviceCommunicator: true, backend: 'cpu' });
  assert.equal([k.localRank, k.device], [0, 'host:0']);
  await Promise.all([g.destroy(), h.destroy(), k.destroy()]);
});

test('a failed create gives its name back', async () => {
  const server = await TcpStoreServer.listen({ port: 0 });
  const store = await TcpStore.create({ port: server.port, timeoutMs: 2_000 });
  try {
    const e = await failure(create({ groupRanks: [[0, 1]], globalRank: 1, groupName: 'back', rendezvous: store, timeoutMs: 150 }));
    assert.is(e.code, 'ERR_GROUPCOMM_TIMEOUT');
    const g = await create({ groupRanks: [[0]], globalRank: 0, groupName: 'back' });
    assert.is(g.uniqueName, 'back:0');
    await g.destroy();
  } finally {
    await store.close();
    await server.close();
  }
});

test('a message queue that cannot be set up: every rank fails, its channels closed and its name given back', async () => {
  const server = await TcpStoreServer.listen({ port: 0 });
  const stores = [await TcpStore.create({ port: server.port, timeoutMs: 3_000 }), await TcpStore.create({ port: server.port, timeoutMs: 3_000 })];
  const saved = process.env.GROUPCOMM_MQ_SLOTS;
  process.env.GROUPCOMM_MQ_SLOTS = '3';
  try {
    const errs = await Promise.all([0, 1].map((r) => failure(create({
      groupRanks: [[0, 1]], globalRank: r, groupName: 'mqbad', rendezvous: stores[r], timeoutMs: 3_000, useMessageQueueBroadcaster: true,
    }))));
    // Rank 0 fails first and closes the group's store; a member may see that before its own check.
    assert.is(errs[0].code, 'ERR_GROUPCOMM_CONFIG', errs[0].message);
    assert.ok(['ERR_GROUPCOMM_CONFIG', 'ERR_GROUPCOMM_PEER_LOST'].includes(errs[1].code), errs[1].message);
    delete process.env.GROUPCOMM_MQ_SLOTS;
    // The name is free again, and so is the rendezvous record's name: the same group forms.
    const gs = await Promise.all([0, 1].map((r) => create({
      groupRanks: [[0, 1]], globalRank: r, groupName: 'mqbad', rendezvous: stores[r], timeoutMs: 3_000, useMessageQueueBroadcaster: true,
    })));
    assert.equal(gs.map((g) => g.uniqueName), ['mqbad:0', 'mqbad:1']);
    assert.equal([...gs[0].messageQueue!.shmReaders], [1]);
    assert.equal(await Promise.all(gs.map((g) => g.broadcastObject(g.rankInGroup === 0 ? 'hi' : undefined, 0))), ['hi', 'hi']);
    await Promise.all(gs.map((g) => g.destroy({ lingerMs: 50 })));
  } finally {
    if (saved === undefined) delete process.env.GROUPCOMM_MQ_SLOTS;
    else process.env.GROUPCOMM_MQ_SLOTS = saved;
    for (const s of stores) await s.close();
    await server.close();
  }
});

test('fromEnv: global rank, local rank and world size from the launch variables (or the options), the store closed after', async () => {
  const server = await TcpStoreServer.listen({ port: 0, host: '127.0.0.1' });
  const keys = ['RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'LOCAL_WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'];
  const saved = keys.map((k) => process.env[k]);
  Object.assign(process.env, { RANK: '3', WORLD_SIZE: '4', LOCAL_RANK: '2', LOCAL_WORLD_SIZE: '4', MASTER_ADDR: '127.0.0.1', MASTER_PORT: String(server.port) });
  try {
    const g = await StatelessGroupCoordinator.fromEnv({ groupRanks: [[0, 1], [2], [3]], groupName: 'env' });
    assert.equal([g.rank, g.localRank, [...g.ranks]], [3, 2, [3]]);
    const h = await StatelessGroupCoordinator.fromEnv({ groupRanks: [[0, 1], [2], [3]], groupName: 'env', globalRank: 2, localRank: 1 });
    assert.equal([h.rank, h.localRank, [...h.ranks]], [2, 1, [2]]);
    // The launch's world size bounds the ranks (a rank 9 is no rank of a 4-rank job).
    const e = await failure(StatelessGroupCoordinator.fromEnv({ groupRanks: [[0, 9]], groupName: 'env' }));
    assert.is(e.code, 'ERR_GROUPCOMM_INVALID_ARGUMENT', e.message);
    await Promise.all([g.destroy(), h.destroy()]);
    // Every client of the server is gone: fromEnv closed its store each time.
    for (let i = 0; i < 50 && server.numConnections > 0; i++) await new Promise((r) => setTimeout(r, 10));
    assert.is(server.numConnections, 0);
  } finally {
    keys.forEach((k, i) => { if (saved[i] === undefined) delete process.env[k]; else process.env[k] = saved[i]; });
    await server.close();
  }
});

test('explainError: the group, the operation and this rank, with the named peers\' global ranks; fields kept', () => {
  const plain = new Error('x');
  assert.is(explainError(plain, 'barrier', 'g_0', 5, [5, 6]), plain);
  assert.is(explainError('s', 'barrier', 'g_0', 5, [5, 6]), 's');
  let e = explainError(timeoutError('waited', { peerRanks: [1, 0, 2, -1], timeoutMs: 9 }), 'barrier', 'g_0', 5, [5, 6, 7]) as ReturnType<typeof timeoutError>;
  assert.is(e.message, 'g_0.barrier (global rank 5): waited [group rank 1 = global rank 6; group rank 0 = global rank 5; group rank 2 = global rank 7]');
  assert.equal([e.code, e.rank, e.peerRanks, e.timeoutMs], ['ERR_GROUPCOMM_TIMEOUT', 5, [1, 0, 2, -1], 9]);
  e = explainError(peerLostError('gone', { peerRank: 1 }), 'send', 'g_0', 5, [5, 6]) as typeof e;
  assert.is(e.message, 'g_0.send (global rank 5): gone [group rank 1 = global rank 6]');
  e = explainError(peerLostError('gone', { peerRank: 2 }), 'send', 'g_0', 5, [5, 6]) as typeof e;
  assert.is(e.message, 'g_0.send (global rank 5): gone');
  e = explainError(mismatchError('m'), 'barrier', 'g_1', 0, [0]) as typeof e;
  assert.is(e.message, 'g_1.barrier (global rank 0): m');
});

test('the failure state\'s onFail: pending operations aborted with it; ranks lost (not left, not this one) reclaimed', async () => {
  const reclaimed: number[][] = [];
  let fail = false;
  const ch = {
    pg: { reclaim: async (l: number[]) => { reclaimed.push(l); if (fail) throw new Error('store gone'); } },
    cpu: { onLost: () => {}, hasLeft: (r: number) => r === 3 },
  } as unknown as Channels;
  const run = (e: ReturnType<typeof peerLostError>) => {
    const life = new AbortController();
    const f = groupFaults('g_0', 1, 5, ch, life);
    f.fail(e, -1, true, false);
    return life;
  };
  const lost = peerLostError('x', { peerRanks: [0, 1, 3, 4] });
  const life = run(lost);
  assert.is(life.signal.aborted, true);
  assert.is(life.signal.reason, lost);
  assert.equal(reclaimed, [[0, 4]]);
  run(peerLostError('x', { peerRank: 2 }));
  assert.equal(reclaimed.at(-1), [2]);
  run(peerLostError('x', { peerRank: 1 }));
  run(peerLostError('x'));
  run(peerLeftError('x', { peerRank: 2 }));
  run(timeoutError('x', { peerRank: 2 }));
  assert.is(reclaimed.length, 2);
  fail = true;
  run(peerLostError('x', { peerRank: 4 }));
  assert.equal(reclaimed.at(-1), [4]);
  await new Promise((r) => setTimeout(r, 10)); // the failed reclaim is swallowed
  // A group without channels (a group of one): nothing to reclaim from.
  const l2 = new AbortController();
  groupFaults('solo_0', 0, 1, {}, l2).fail(peerLostError('x', { peerRank: 0 }), -1, true, false);
  assert.is(l2.signal.aborted, true);
});

test.run();
