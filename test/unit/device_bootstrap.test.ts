// storeBootstrap over the real TcpStore (server in this process), several ranks in one process, each its own client.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { storeBootstrap } from '../../host/device/bootstrap.js';
import { isGroupcommError, ErrorCode } from '../../host/base/errors.js';
import { TcpStore, TcpStoreServer } from '../../host/store/index.js';

let server: TcpStoreServer;
const clients: TcpStore[] = [];
async function group(n: number, prefix: string) {
  const out = [];
  for (let r = 0; r < n; r++) {
    const c = await TcpStore.create({ host: '127.0.0.1', port: server.port });
    clients.push(c);
    out.push({ c, b: storeBootstrap(c, { rank: r, worldSize: n, prefix, timeoutMs: 10_000 }) });
  }
  return out;
}

test.before(async () => { server = await TcpStoreServer.listen({ host: '127.0.0.1', port: 0 }); });
test.after(async () => { for (const c of clients) await c.close(); await server.close(); });

test('broadcastBytes delivers the source bytes to every rank and leaves no keys behind', async () => {
  const g = await group(3, 'bc');
  const got = await Promise.all(g.map(({ b }, r) => b.broadcastBytes(r === 1 ? new Uint8Array([9, 8, 7]) : undefined, 1)));
  for (const x of got) assert.equal([...x], [9, 8, 7]);
  assert.is(await g[0].c.check(['bc/bc/1/0']), false);
  // A second broadcast from the same source uses the next key.
  const again = await Promise.all(g.map(({ b }, r) => b.broadcastBytes(r === 1 ? new Uint8Array([1]) : undefined, 1)));
  for (const x of again) assert.equal([...x], [1]);
});

test('sendBytes / recvBytes pair up in order per pair, and the receiver deletes the key', async () => {
  const g = await group(2, 'p2p');
  await g[0].b.sendBytes(new Uint8Array([1]), 1);
  await g[0].b.sendBytes(new Uint8Array([2]), 1);
  assert.equal([...(await g[1].b.recvBytes(0))], [1]);
  assert.equal([...(await g[1].b.recvBytes(0))], [2]);
  assert.is(await g[0].c.check(['p2p/p2p/0-1/0']), false);
});

test('a recv with nothing sent times out naming both ranks', async () => {
  const g = await group(2, 'silent');
  try {
    await g[1].b.recvBytes(0, { timeoutMs: 200 });
    assert.unreachable('received');
  } catch (e) {
    assert.ok(isGroupcommError(e, ErrorCode.TIMEOUT), String(e));
    assert.is((e as { rank?: number }).rank, 1);
    assert.is((e as { peerRank?: number }).peerRank, 0);
  }
});

test('barrier waits for all; a barrier with a rank missing times out naming it', async () => {
  const g = await group(3, 'bar');
  await Promise.all(g.map(({ b }) => b.barrier()));
  try {
    await Promise.all([g[0].b.barrier({ timeoutMs: 300 }), g[2].b.barrier({ timeoutMs: 300 })]);
    assert.unreachable('barrier passed');
  } catch (e) {
    assert.ok(isGroupcommError(e, ErrorCode.TIMEOUT), String(e));
    assert.equal((e as { peerRanks?: number[] }).peerRanks, [1]);
  }
});

test('bad ranks are refused before touching the store', async () => {
  const g = await group(2, 'bad');
  await g[0].b.broadcastBytes(undefined, 5).then(() => assert.unreachable(), (e) => assert.ok(isGroupcommError(e, ErrorCode.INVALID_ARGUMENT)));
  await g[0].b.sendBytes(new Uint8Array(1), 0).then(() => assert.unreachable(), (e) => assert.ok(isGroupcommError(e, ErrorCode.INVALID_ARGUMENT)));
  assert.throws(() => storeBootstrap(g[0].c, { rank: 2, worldSize: 2, prefix: 'x' }), (e: unknown) => isGroupcommError(e, ErrorCode.INVALID_ARGUMENT));
});

test.run();
