/**
 * A coordinator's channels (host/coordinator/channels.ts). closeChannels and abortChannels on
 * recording stand-ins: the order (device, CPU group, store channel, store, server), close with
 * the linger as grace vs abort, a failing step not stopping the rest, a member waiting (bounded)
 * until the server is gone, the device communicator told the reason's text. Then creates that
 * fail, with real stores and sockets: a member whose group rank 0 never published its ports, one
 * that cannot reach rank 0's store, a member that adopts rank 0's verdict (who never came), and
 * members whose groupRanks differ.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import net from 'node:net';
import { abortChannels, closeChannels, type Channels } from '../../host/coordinator/channels.js';
import { StatelessGroupCoordinator } from '../../host/coordinator/coordinator.js';
import { TcpStore, TcpStoreServer } from '../../host/store/index.js';
import { failure } from '../helpers/rejects.js';

type Call = [string, string, unknown?];

function stand(calls: Call[], o: { fail?: string; pings?: number } = {}): Channels {
  let pings = 0;
  const part = (name: string) => ({
    close: async (g: unknown) => { calls.push([name, 'close', g]); if (o.fail === name) throw new Error(`${name} broke`); },
    abort: (why: unknown) => { calls.push([name, 'abort', why]); if (o.fail === name) return Promise.reject(new Error(`${name} broke`)); return Promise.resolve(); },
    ping: async (p: { timeoutMs: number }) => {
      calls.push([name, 'ping', p.timeoutMs > 0]);
      if (o.pings !== undefined && ++pings > o.pings) throw new Error('gone');
      return 1;
    },
  });
  return { comm: part('comm'), cpu: part('cpu'), pg: part('pg'), store: part('store'), server: part('server') } as unknown as Channels;
}

test('closeChannels: device, CPU group, store channel, store, server; the linger as grace, or aborts', async () => {
  let calls: Call[] = [];
  let ch = stand(calls);
  await closeChannels(ch, 250);
  const grace = { timeoutMs: 250 };
  assert.equal(calls, [['comm', 'close', grace], ['cpu', 'close', grace], ['pg', 'close', grace], ['store', 'close', grace], ['server', 'close', grace]]);
  assert.equal([ch.comm, ch.cpu, ch.pg, ch.store, ch.server], [undefined, undefined, undefined, undefined, undefined]);
  calls = [];
  ch = stand(calls);
  await closeChannels(ch, 0);
  assert.equal(calls, [['comm', 'close', { timeoutMs: 1 }], ['cpu', 'abort', undefined], ['pg', 'abort', undefined], ['store', 'abort', undefined], ['server', 'abort', undefined]]);
  // A failing step: the others still close, and closing does not throw.
  for (const broken of ['comm', 'cpu', 'pg', 'store', 'server']) {
    calls = [];
    await closeChannels(stand(calls, { fail: broken }), 10);
    assert.equal(calls.map(([n]) => n), ['comm', 'cpu', 'pg', 'store', 'server'], broken);
  }
  // Nothing open: nothing to do.
  await closeChannels({}, 10, true);
});

test('closeChannels with awaitServer: a member pings until the server is gone (bounded by the linger); rank 0 and a plain close do not', async () => {
  let calls: Call[] = [];
  let ch = stand(calls, { pings: 2 });
  delete ch.server;
  await closeChannels(ch, 2_000, true);
  assert.equal(calls.filter(([, op]) => op === 'ping'), [['store', 'ping', true], ['store', 'ping', true], ['store', 'ping', true]]);
  assert.equal(calls.at(-1), ['store', 'close', { timeoutMs: 2_000 }]);
  calls = [];
  ch = stand(calls);
  delete ch.server;
  const t0 = performance.now();
  // A linger long enough for two pings 5 ms apart even on a loaded machine (60 ms saw one on Bun).
  await closeChannels(ch, 300, true);
  const took = performance.now() - t0;
  assert.ok(took >= 295 && took < 3_000, `${took} ms`);
  assert.ok(calls.filter(([, op]) => op === 'ping').length >= 2);
  calls = [];
  await closeChannels(stand(calls, { pings: 0 }), 100, true);
  assert.is(calls.some(([, op]) => op === 'ping'), false);
  calls = [];
  ch = stand(calls, { pings: 0 });
  delete ch.server;
  await closeChannels(ch, 100);
  assert.is(calls.some(([, op]) => op === 'ping'), false);
  calls = [];
  ch = stand(calls, { pings: 0 });
  delete ch.server;
  await closeChannels(ch, 0, true);
  assert.is(calls.some(([, op]) => op === 'ping'), false);
});

test('abortChannels: every channel aborted with the reason; the device communicator gets its text', async () => {
  for (const [reason, why] of [[new Error('boom'), 'boom'], ['text', 'text'], [7, '7'], [undefined, undefined]] as const) {
    const calls: Call[] = [];
    abortChannels(stand(calls, { fail: 'comm' }), reason);
    assert.equal(calls, [['comm', 'abort', why], ['cpu', 'abort', reason], ['pg', 'abort', reason], ['store', 'abort', reason], ['server', 'abort', reason]]);
  }
  abortChannels({}, 'nothing open');
  await new Promise((r) => setTimeout(r, 10)); // a rejected comm.abort must not surface
});

async function freePort(): Promise<number> {
  const s = await new Promise<net.Server>((res) => { const x = net.createServer().listen(0, '127.0.0.1', () => res(x)); });
  const port = (s.address() as net.AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

test('a member whose group rank 0 never published its ports names it (group and global rank)', async () => {
  const server = await TcpStoreServer.listen({ port: 0 });
  const store = await TcpStore.create({ port: server.port, timeoutMs: 2_000 });
  try {
    const e = await failure(StatelessGroupCoordinator.create({ groupRanks: [[4, 1]], globalRank: 1, groupName: 'never', rendezvous: store, timeoutMs: 200 }));
    assert.equal([e.code, e.rank, e.peerRank, e.peerRanks], ['ERR_GROUPCOMM_TIMEOUT', 1, 0, [0]]);
    assert.match(e.message, /^creating group 0 of \[4, 1\] on global rank 1: group rank 0 never published the group's ports \(did it call create\?\): .*\[group rank 0 = global rank 4\]$/);
  } finally {
    await store.close();
    await server.close();
  }
});

test('a member that cannot reach group rank 0\'s store names it', async () => {
  const port = await freePort();
  const e = await failure(StatelessGroupCoordinator.create({
    groupRanks: [[0, 1]], globalRank: 1, groupName: 'unreach', groupPorts: [[await freePort(), await freePort(), port]], host: '127.0.0.1', timeoutMs: 200,
  }));
  assert.equal([e.code, e.rank, e.peerRank], ['ERR_GROUPCOMM_TIMEOUT', 1, 0]);
  assert.match(e.message, /^creating group 0 of \[0, 1\] on global rank 1: could not reach group rank 0, which hosts the group's store/);
});

test('group rank 0 alone with explicit ports: it names the missing rank, and every port is free again', async () => {
  const ports: [number, number, number] = [await freePort(), await freePort(), await freePort()];
  const e = await failure(StatelessGroupCoordinator.create({
    groupRanks: [[0, 1]], globalRank: 0, groupName: 'alone', groupPorts: [ports], host: '127.0.0.1', timeoutMs: 200, useDeviceCommunicator: true, backend: 'cpu',
  }));
  assert.equal([e.code, e.rank, e.peerRanks], ['ERR_GROUPCOMM_TIMEOUT', 0, [1]], e.message);
  assert.match(e.message, /^creating group 0 of \[0, 1\] on global rank 0: .*\[group rank 1 = global rank 1\]$/);
  for (const port of ports) {
    await new Promise<void>((res, rej) => { const s = net.createServer().once('error', rej).listen(port, '127.0.0.1', () => s.close(() => res())); });
  }
});

test('a member adopts group rank 0\'s verdict: the rank that never came', async () => {
  const server = await TcpStoreServer.listen({ port: 0 });
  const stores = [await TcpStore.create({ port: server.port, timeoutMs: 3_000 }), await TcpStore.create({ port: server.port, timeoutMs: 3_000 })];
  try {
    const [e0, e1] = await Promise.all([0, 1].map((r) => failure(StatelessGroupCoordinator.create({
      groupRanks: [[0, 1, 2]], globalRank: r, groupName: 'absent', rendezvous: stores[r], timeoutMs: 400,
    }))));
    assert.equal([e0.code, e0.peerRanks, e0.rank], ['ERR_GROUPCOMM_TIMEOUT', [2], 0], e0.message);
    assert.equal([e1.code, e1.peerRanks, e1.peerRank, e1.rank], ['ERR_GROUPCOMM_TIMEOUT', [2], 2, 1], e1.message);
    assert.match(e1.message, /group rank 0 could not complete the group \(/);
    assert.match(e1.message, /\[group rank 2 = global rank 2\]$/);
  } finally {
    for (const s of stores) await s.close();
    await server.close();
  }
});

test('a group formed: group rank 0 took its port record back from the rendezvous store', async () => {
  const server = await TcpStoreServer.listen({ port: 0 });
  const stores = [await TcpStore.create({ port: server.port, timeoutMs: 3_000 }), await TcpStore.create({ port: server.port, timeoutMs: 3_000 })];
  try {
    const gs = await Promise.all([0, 1].map((r) => StatelessGroupCoordinator.create({
      groupRanks: [[0, 1]], globalRank: r, groupName: 'formed', rendezvous: stores[r], timeoutMs: 3_000,
    })));
    assert.is(await stores[1].check(['formed_0']), false);
    await Promise.all(gs.map((g) => g.destroy({ lingerMs: 50 })));
  } finally {
    for (const s of stores) await s.close();
    await server.close();
  }
});

test('members whose groupRanks differ fail alike with MISMATCH', async () => {
  const server = await TcpStoreServer.listen({ port: 0 });
  const stores = [await TcpStore.create({ port: server.port, timeoutMs: 3_000 }), await TcpStore.create({ port: server.port, timeoutMs: 3_000 })];
  try {
    const lists = [[[0, 1]], [[0, 1, 2]]];
    const [e0, e1] = await Promise.all([0, 1].map((r) => failure(StatelessGroupCoordinator.create({
      groupRanks: lists[r], globalRank: r, groupName: 'differ', rendezvous: stores[r], timeoutMs: 2_000,
    }).then(async (g) => { await g.destroy({ lingerMs: 0 }); }))));
    assert.is(e0.code, 'ERR_GROUPCOMM_MISMATCH', e0.message);
    assert.is(e1.code, 'ERR_GROUPCOMM_MISMATCH', e1.message);
    assert.equal([e0.rank, e1.rank], [0, 1]);
  } finally {
    for (const s of stores) await s.close();
    await server.close();
  }
});

test.run();
