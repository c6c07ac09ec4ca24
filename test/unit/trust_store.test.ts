/**
 * The store's trust boundary (docs/security.md): who may SUBSCRIBE and to what, deadlines and
 * caps for connections that never authenticate, and limits the client learns and enforces
 * itself (an oversized request is an INVALID_ARGUMENT, never a lost connection or lost writes).
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { EXT_PROBE_KEY } from '../../host/store/protocol.js';
import { TcpStore, TcpStoreServer } from '../../host/index.js';
import { Raw, VALIDATE, keys, str } from './store_raw.js';
import { rejectsWith } from '../helpers/rejects.js';

const SUBSCRIBE = Buffer.from([0xe6]);
const CHECK = Buffer.from([5]);
const probe = () => Buffer.concat([CHECK, keys(EXT_PROBE_KEY)]);
const text = (b: Uint8Array) => Buffer.from(b).toString('utf8');

async function closedBy(port: number, ...parts: Buffer[]): Promise<boolean> {
  const r = await Raw.connect(port);
  r.write(...parts);
  const closed = await r.waitClosed(5000);
  r.close();
  return closed;
}

test('SUBSCRIBE takes only a mailbox, only from a groupcomm client: "/", "", "pg/" and a whole group are refused and nothing is taken', async () => {
  const server = await TcpStoreServer.listen({ port: 0 });
  const c = await TcpStore.create({ port: server.port, timeoutMs: 5000 });
  try {
    for (let i = 0; i < 10; i++) await c.set(`pg/1/to/1/${i}`, 'm');
    await c.ping();
    const before = server.numKeys;
    assert.is(before, 10);
    for (const p of ['/', '', 'pg/', '/pg/', '/pg/1/', '/pg/1/to/', '/to/1/', '/pg/1/to/x/']) {
      const r = await Raw.connect(server.port);
      r.write(VALIDATE, probe(), SUBSCRIBE, str(p));
      const reply = await r.read(1).catch(() => undefined); // the probe's answer, if any
      const status = await r.read(1).then((b) => b[0], () => undefined);
      assert.ok(reply === undefined || status === undefined || status === 2, `prefix '${p}': refused (status ${status})`);
      r.close();
    }
    // The mailbox form, but from a client that never negotiated groupcomm's extensions (torch-like).
    assert.ok(await closedBy(server.port, VALIDATE, SUBSCRIBE, str('/pg/1/to/1/')), 'no probe: refused');
    assert.is(server.numKeys, before, 'no key was taken');
    const e = await rejectsWith(c.subscribe('pg/', () => {}), 'ERR_GROUPCOMM_INVALID_ARGUMENT');
    assert.match(e.message, /mailboxes/);
    // A real mailbox subscription still works, and a second claim is refused, not a takeover.
    const c2 = await TcpStore.create({ port: server.port, timeoutMs: 5000 });
    const got: string[] = [];
    const sub = (await c2.subscribe('pg/1/to/1/', (k) => { got.push(k); }))!;
    assert.is(got.length, 10);
    await rejectsWith(c.clone().then((c3) => c3.subscribe('pg/1/to/1/', () => {}).finally(() => c3.close())), 'ERR_GROUPCOMM_INVALID_ARGUMENT');
    sub.close();
    await c2.close();
  } finally {
    await c.close().catch(() => {});
    await server.close();
  }
});

test('the in-process subscribe follows the same rule', async () => {
  const s = await TcpStore.create({ port: 0, isServer: true, timeoutMs: 5000 });
  try {
    await rejectsWith(s.subscribe('pg/', () => {}), 'ERR_GROUPCOMM_INVALID_ARGUMENT');
    const sub = await s.subscribe('pg/0/to/1/', () => {});
    assert.ok(sub);
    sub!.close();
  } finally {
    await s.close();
  }
});

test('a connection that does not finish the handshake in time is closed (silent, VALIDATE only on a secret server)', async () => {
  const server = await TcpStoreServer.listen({ port: 0, handshakeTimeoutMs: 300, secret: 's' });
  try {
    const silent = await Raw.connect(server.port);
    const half = await Raw.connect(server.port);
    half.write(VALIDATE);
    assert.ok(await silent.waitClosed(5000), 'a silent connection is closed');
    assert.ok(await half.waitClosed(5000), 'an unauthenticated one is closed');
    silent.close();
    half.close();
    // An authenticated client is not subject to it.
    const c = await TcpStore.create({ port: server.port, secret: 's', timeoutMs: 5000 });
    await new Promise((r) => setTimeout(r, 500));
    await c.set('k', 'v');
    assert.is(text(await c.get('k')), 'v');
    await c.close();
  } finally {
    await server.close();
  }
});

test('the connection cap refuses new connections at accept; clients already in keep working', async () => {
  const server = await TcpStoreServer.listen({ port: 0, maxConnections: 4 });
  const c = await TcpStore.create({ port: server.port, timeoutMs: 5000 });
  const held: Raw[] = [];
  try {
    for (let i = 0; i < 3; i++) held.push(await Raw.connect(server.port));
    await new Promise((r) => setTimeout(r, 100));
    const extra = await Raw.connect(server.port);
    assert.ok(await extra.waitClosed(5000), 'the fifth connection is closed');
    extra.close();
    assert.ok(server.numConnections <= 4);
    await c.set('a', 'b');
    assert.is(text(await c.get('a')), 'b');
  } finally {
    for (const r of held) r.close();
    await c.close();
    await server.close();
  }
});

test('a client that cannot ask (a torch server has no LIMITS) uses torch libuv\'s limits: an 8 MiB + 1 value is refused before sending, the connection survives', async () => {
  // Our server takes 64 MiB; a torch-mode client (what talks to a torch server) must not rely on that.
  const server = await TcpStoreServer.listen({ port: 0 });
  const c = await TcpStore.create({ port: server.port, timeoutMs: 10_000, extensions: false });
  try {
    assert.equal([c.limits.maxKeyBytes, c.limits.maxValueBytes, c.limits.maxKeysPerRequest], [8192, 8 * 1024 * 1024, 131072]);
    const over = c.set('big', new Uint8Array(8 * 1024 * 1024 + 1));
    const behind = c.set('behind', 'b');
    await rejectsWith(over, 'ERR_GROUPCOMM_INVALID_ARGUMENT');
    await behind;
    assert.is(text(await c.get('behind')), 'b');
    assert.is(await c.check(['big']), false);
    await c.set('exact', new Uint8Array(8 * 1024 * 1024));
    assert.is((await c.get('exact')).length, 8 * 1024 * 1024);
  } finally {
    await c.close();
    await server.close();
  }
});

test('the client learns the server\'s limits and refuses an oversized key or value itself; the connection and the writes behind survive', async () => {
  const server = await TcpStoreServer.listen({ port: 0, limits: { maxValueBytes: 1000, maxKeyBytes: 64 } });
  const c = await TcpStore.create({ port: server.port, timeoutMs: 5000 });
  try {
    assert.is(c.limits.maxValueBytes, 1000);
    assert.is(c.limits.maxKeyBytes, 64);
    const writes: Promise<unknown>[] = [];
    writes.push(c.set('ok0', 'x'));
    const over = c.set('big', new Uint8Array(1001));
    const longKey = c.set('k'.repeat(64), 'v'); // '/' + 64 bytes on the wire
    const appendOver = c.append('ap', new Uint8Array(1001));
    const multiOver = c.multiSet(['m1', 'm2'], ['a', new Uint8Array(1001)]);
    const publishOver = c.publish(['p'], [new Uint8Array(1001)]);
    const tooMany = Array.from({ length: 131073 }, (_, i) => `k${i}`);
    await rejectsWith(c.multiGet(tooMany), 'ERR_GROUPCOMM_INVALID_ARGUMENT');
    await rejectsWith(c.check(tooMany), 'ERR_GROUPCOMM_INVALID_ARGUMENT');
    for (let i = 1; i <= 5; i++) writes.push(c.set(`ok${i}`, `v${i}`));
    for (const p of [over, longKey, appendOver, multiOver, publishOver]) await rejectsWith(p, 'ERR_GROUPCOMM_INVALID_ARGUMENT');
    await Promise.all(writes);
    for (let i = 1; i <= 5; i++) assert.is(text(await c.get(`ok${i}`)), `v${i}`, 'the writes queued behind were stored');
    assert.is(server.numConnections >= 1, true);
    await c.set('exact', new Uint8Array(1000));
    assert.is((await c.get('exact')).length, 1000);
    // An append that would grow a value past the limit: refused by the server with a status,
    // nothing changes, and the writes behind it land.
    await c.set('grow', new Uint8Array(600));
    const grow = c.append('grow', new Uint8Array(600));
    const behind = [1, 2, 3].map((i) => c.set(`after${i}`, `a${i}`));
    await rejectsWith(grow, 'ERR_GROUPCOMM_INVALID_ARGUMENT');
    await Promise.all(behind);
    assert.is((await c.get('grow')).length, 600);
    for (const i of [1, 2, 3]) assert.is(text(await c.get(`after${i}`)), `a${i}`);
    await c.append('grow', new Uint8Array(400));
    assert.is((await c.get('grow')).length, 1000);
  } finally {
    await c.close();
    await server.close();
  }
});

test.run();
