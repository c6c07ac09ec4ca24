// Trip 9 of issue 17: `new TcpStore({ host, port })`, what a PyTorch user types, built an object
// whose every method then failed with "Cannot read properties of undefined". Every class made
// by an awaited factory now refuses `new` at once (JavaScript ignores TypeScript's `private`),
// naming the factory call to write instead, and opens nothing.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import net from 'node:net';
import { CpuGroup, ErrorCode, isGroupcommError, PrefixStore, StatelessGroupCoordinator, StatelessProcessGroup, TcpStore, TcpStoreServer } from '../../host/index.js';

type AnyCtor = new (...args: unknown[]) => unknown;

function refused(cls: unknown, args: unknown[], factory: RegExp): void {
  let err: unknown;
  try {
    new (cls as AnyCtor)(...args);
  } catch (e) {
    err = e;
  }
  assert.ok(err !== undefined, 'new did not throw');
  assert.ok(isGroupcommError(err, ErrorCode.INVALID_ARGUMENT), `not INVALID_ARGUMENT: ${String(err)}`);
  assert.match((err as Error).message, factory);
  assert.match((err as Error).message, /is not supported/);
}

test('new TcpStore({ host, port }) throws INVALID_ARGUMENT naming TcpStore.create, and connects nowhere', async () => {
  // A live listener: a constructor that connected (or retried) would show up here.
  let connections = 0;
  const srv = net.createServer((s) => { connections++; s.destroy(); });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as net.AddressInfo).port;
  try {
    refused(TcpStore, [{ host: '127.0.0.1', port }], /await TcpStore\.create\(\{ host, port \}\)/);
    refused(TcpStore, [{ host: '127.0.0.1', port, isServer: true }], /TcpStore\.create/);
    refused(TcpStore, [], /TcpStore\.create/);
    await new Promise((r) => setTimeout(r, 50));
    assert.is(connections, 0);
  } finally {
    await new Promise((r) => srv.close(r));
  }
});

test('new TcpStoreServer / StatelessProcessGroup / CpuGroup / StatelessGroupCoordinator throw, naming their factory', () => {
  refused(TcpStoreServer, [{ port: 0 }], /await TcpStoreServer\.listen\(/);
  refused(StatelessProcessGroup, [{ host: '127.0.0.1', port: 29500, rank: 0, worldSize: 2 }], /await StatelessProcessGroup\.create\(/);
  refused(CpuGroup, [{ rank: 0, worldSize: 2, groupName: 'g' }], /await CpuGroup\.create\(/);
  refused(StatelessGroupCoordinator, [{ groupRanks: [[0, 1]], globalRank: 0 }], /await StatelessGroupCoordinator\.create\(/);
});

test('the factories still construct, and PrefixStore (no I/O) is made with new', async () => {
  const store = await TcpStore.create({ port: 0, isServer: true, timeoutMs: 10_000 });
  try {
    assert.ok(store instanceof TcpStore);
    assert.ok(store.server instanceof TcpStoreServer);
    const view = new PrefixStore('p', store);
    await view.set('k', 'v');
    assert.is(new TextDecoder().decode(await store.get('p/k')), 'v');
    const clone = await store.clone();
    assert.ok(clone instanceof TcpStore);
    await clone.close();
    const pg = await StatelessProcessGroup.create({ store, rank: 0, worldSize: 1, timeoutMs: 10_000 });
    assert.ok(pg instanceof StatelessProcessGroup);
    await pg.close();
    const g = await CpuGroup.create({ store, rank: 0, worldSize: 1, groupName: 'construct', timeoutMs: 10_000 });
    assert.ok(g instanceof CpuGroup);
    await g.close();
    const c = await StatelessGroupCoordinator.create({ groupRanks: [[0]], globalRank: 0, groupName: 'construct', timeoutMs: 10_000 });
    assert.ok(c instanceof StatelessGroupCoordinator);
    await c.close();
  } finally {
    await store.close();
  }
});

test.run();
