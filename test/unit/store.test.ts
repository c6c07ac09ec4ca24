// The store's operations, one behaviour per test, client and server in this process over real
// loopback sockets. Mirrors the checklist of PyTorch's test/distributed/test_store.py.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { PrefixStore, TcpStore, TcpStoreServer } from '../../host/index.js';
import { isGroupcommError } from '../../host/base/errors.js';

const text = (b: Uint8Array) => Buffer.from(b).toString('utf8');

/** A fresh server (world size 1, so `init/` exists as in torch's tests) and its master client. */
async function withStore(fn: (s: TcpStore) => Promise<void>): Promise<void> {
  const s = await TcpStore.create({ port: 0, isServer: true, worldSize: 1, timeoutMs: 20_000 });
  try {
    await fn(s);
  } finally {
    await s.close();
  }
}

test('add: 1+2+3 reads back as "6"; interleaved adds give "21"', () => withStore(async (s) => {
  await s.add('key', 1);
  await s.add('key', 2);
  assert.is(await s.add('key', 3), 6);
  assert.is(text(await s.get('key')), '6');
  for (let i = 1; i <= 6; i++) {
    await s.set(`other${i}`, 'x');
    await s.add('key3', i);
  }
  assert.is(text(await s.get('key3')), '21');
}));

test('add: negative deltas and a value set as decimal text', () => withStore(async (s) => {
  await s.set('n', '  40xyz');
  assert.is(await s.add('n', 2), 42);
  assert.is(await s.add('n', -50), -8);
  assert.is(text(await s.get('n')), '-8');
  assert.is(await s.add('big', 2n ** 52n), 2 ** 52);
  // strtoll: leading zeros are not significant digits
  await s.set('z', '-' + '0'.repeat(40) + '41');
  assert.is(await s.add('z', -1), -42);
}));

test('set/get round-trip bytes, strings and empty values', () => withStore(async (s) => {
  const bytes = new Uint8Array([0, 1, 2, 255, 128]);
  await s.set('b', bytes);
  await s.set('s', 'ünïcode ✓');
  await s.set('e', '');
  assert.equal([...(await s.get('b'))], [...bytes]);
  assert.is(text(await s.get('s')), 'ünïcode ✓');
  assert.is((await s.get('e')).length, 0);
  const big = new Uint8Array(300_000).map((_, i) => i % 251);
  await s.set('big', big);
  assert.ok(Buffer.from(await s.get('big')).equals(Buffer.from(big)));
}));

test('numKeys counts the init/ key; a "-key" can be set, read and deleted', () => withStore(async (s) => {
  assert.is(await s.numKeys(), 1);
  for (let i = 0; i < 5; i++) await s.set(`k${i}`, 'v');
  assert.is(await s.numKeys(), 6);
  await s.set('-key3', 'dash');
  assert.is(text(await s.get('-key3')), 'dash');
  assert.ok(await s.deleteKey('-key3'));
  assert.is(await s.numKeys(), 6);
}));

test('check: true only when every key exists', () => withStore(async (s) => {
  await s.set('key3', 'v');
  assert.ok(await s.check(['key3']));
  assert.not.ok(await s.check(['Randomkey3']));
  assert.not.ok(await s.check(['key3', 'Randomkey3']));
}));

test('compareSet: the four cases of torch', () => withStore(async (s) => {
  // missing key, non-empty expected: returns expected, creates nothing
  assert.is(text(await s.compareSet('k', 'wrong_old_value', 'new')), 'wrong_old_value');
  assert.not.ok(await s.check(['k']));
  // missing key, empty expected: creates the key
  assert.is(text(await s.compareSet('k', '', 'first')), 'first');
  assert.is(text(await s.get('k')), 'first');
  // present, wrong expected: returns the current value, changes nothing
  assert.is(text(await s.compareSet('k', 'nope', 'second')), 'first');
  assert.is(text(await s.get('k')), 'first');
  // present, right expected: swaps
  assert.is(text(await s.compareSet('k', 'first', 'second')), 'second');
  assert.is(text(await s.get('k')), 'second');
}));

test('wait: times out naming the keys, and the store still works afterwards', () => withStore(async (s) => {
  try {
    await s.wait(['bad_key'], { timeoutMs: 250 });
    assert.unreachable('wait should time out');
  } catch (e) {
    assert.ok(isGroupcommError(e, 'ERR_GROUPCOMM_TIMEOUT'), String(e));
    assert.equal((e as any).keys, ['bad_key']);
    assert.match((e as Error).message, /bad_key/);
  }
  await s.add('good_key', 1);
  await s.wait(['good_key']);
  assert.is(text(await s.get('good_key')), '1');
}));

test('get: a missing key times out with its name, then set+get on the same store works', () => withStore(async (s) => {
  try {
    await s.get('nonexistent key', { timeoutMs: 100 });
    assert.unreachable('get should time out');
  } catch (e) {
    assert.ok(isGroupcommError(e, 'ERR_GROUPCOMM_TIMEOUT'));
    assert.is((e as any).keys[0], 'nonexistent key');
  }
  await s.set('nonexistent key', 'now');
  assert.is(text(await s.get('nonexistent key')), 'now');
}));

test('get blocks until another client sets the key', () => withStore(async (s) => {
  const other = await s.clone();
  try {
    const p = s.get('later', { timeoutMs: 10_000 });
    await new Promise((r) => setTimeout(r, 50));
    await other.set('later', 'here');
    assert.is(text(await p), 'here');
  } finally {
    await other.close();
  }
}));

test('wait: many concurrent waiters on different keys all wake', () => withStore(async (s) => {
  const waits = Array.from({ length: 10 }, (_, i) => s.wait([`w${i}`], { timeoutMs: 10_000 }));
  for (let i = 0; i < 10; i++) await s.set(`w${i}`, 'x');
  await Promise.all(waits);
}));

test('wait: an AbortSignal cancels it with ERR_GROUPCOMM_ABORTED; the store stays usable', () => withStore(async (s) => {
  const ac = new AbortController();
  const p = s.wait(['never'], { signal: ac.signal, timeoutMs: 10_000 });
  setTimeout(() => ac.abort(), 30);
  try {
    await p;
    assert.unreachable('wait should abort');
  } catch (e) {
    assert.ok(isGroupcommError(e, 'ERR_GROUPCOMM_ABORTED'));
  }
  await s.set('never', 'ok');
  await s.wait(['never'], { timeoutMs: 5000 });
}));

test('append: "po" + "tato", and two appends to a missing key', () => withStore(async (s) => {
  await s.set('a', 'po');
  await s.append('a', 'tato');
  assert.is(text(await s.get('a')), 'potato');
  await s.append('b', 'po');
  await s.append('b', 'tato');
  assert.is(text(await s.get('b')), 'potato');
  const big = Buffer.alloc(1000, 'x');
  await s.append('b', big);
  assert.is((await s.get('b')).length, 1006);
}));

test('multiSet / multiGet round-trip in order', () => withStore(async (s) => {
  await s.multiSet(['foo', 'bar'], ['po', 'tato']);
  assert.equal((await s.multiGet(['foo', 'bar'])).map(text), ['po', 'tato']);
  assert.equal((await s.multiGet(['bar', 'foo', 'bar'])).map(text), ['tato', 'po', 'tato']);
}));

test('empty key lists: multiGet, multiSet, check and wait', () => withStore(async (s) => {
  assert.equal(await s.multiGet([]), []);
  await s.multiSet([], []);
  assert.ok(await s.check([]));
  await s.wait([]);
  assert.is(await s.numKeys(), 1);
}));

test('multiGet waits for keys set later', () => withStore(async (s) => {
  const p = s.multiGet(['x', 'y'], { timeoutMs: 10_000 });
  await s.set('x', '1');
  await s.set('y', '2');
  assert.equal((await p).map(text), ['1', '2']);
}));

test('deleteKey: true then false; numKeys follows; a deleted key times out on get', () => withStore(async (s) => {
  for (const k of ['a', 'b', 'c', 'd']) await s.set(k, k);
  assert.is(await s.numKeys(), 5);
  assert.ok(await s.deleteKey('a'));
  assert.not.ok(await s.deleteKey('a'));
  assert.is(await s.numKeys(), 4);
  try {
    await s.get('a', { timeoutMs: 100 });
    assert.unreachable('deleted key');
  } catch (e) {
    assert.ok(isGroupcommError(e, 'ERR_GROUPCOMM_TIMEOUT'));
  }
  assert.is(text(await s.get('b')), 'b');
}));

test('clone: a second connection sees the same values', () => withStore(async (s) => {
  await s.set('shared', 'v');
  const c = await s.clone();
  try {
    assert.is(text(await c.get('shared')), 'v');
    await c.set('back', 'w');
    assert.is(text(await s.get('back')), 'w');
  } finally {
    await c.close();
  }
}));

test('ping measures a round trip', () => withStore(async (s) => {
  const ms = await s.ping();
  assert.ok(ms >= 0 && Number.isFinite(ms));
}));

test('pipelining: thousands of concurrent requests on one connection come back right', () => withStore(async (s) => {
  const n = 3000;
  await Promise.all(Array.from({ length: n }, (_, i) => s.set(`p${i}`, `v${i}`)));
  const got = await Promise.all(Array.from({ length: n }, (_, i) => s.get(`p${i}`)));
  got.forEach((v, i) => assert.is(text(v), `v${i}`));
  const adds = await Promise.all(Array.from({ length: 100 }, () => s.add('ctr', 1)));
  assert.equal([...adds].sort((a, b) => a - b), Array.from({ length: 100 }, (_, i) => i + 1));
}));

test('queues: FIFO push/pop/len, non-blocking pop on empty, blocking pop waits', () => withStore(async (s) => {
  assert.is(await s.queueLen('q'), 0);
  assert.not.ok(await s.check(['q']));
  assert.is(await s.queuePop('q', { block: false }), undefined);
  await s.queuePush('q', '1');
  await s.queuePush('q', '2');
  assert.is(await s.queueLen('q'), 2);
  assert.ok(await s.check(['q']));
  assert.is(text((await s.queuePop('q'))!), '1');
  assert.is(text((await s.queuePop('q'))!), '2');
  assert.is(await s.queueLen('q'), 0);
  const p = s.queuePop('q', { timeoutMs: 10_000 });
  await s.queuePush('q', '3');
  assert.is(text((await p)!), '3');
  try {
    await s.queuePop('empty', { timeoutMs: 50 });
    assert.unreachable('should time out');
  } catch (e) {
    assert.ok(isGroupcommError(e, 'ERR_GROUPCOMM_TIMEOUT'));
  }
}));

test('PrefixStore maps keys to prefix/key, nests, and does not scope numKeys', () => withStore(async (s) => {
  const p = new PrefixStore('a', new PrefixStore('b', s));
  await p.set('k', 'v');
  assert.is(text(await s.get('b/a/k')), 'v');
  assert.is(text(await p.get('k')), 'v');
  assert.ok(await p.check(['k']));
  assert.is(await p.add('n', 2), 2);
  await p.multiSet(['x', 'y'], ['1', '2']);
  assert.equal((await s.multiGet(['b/a/x', 'b/a/y'])).map(text), ['1', '2']);
  await p.append('x', '0');
  assert.is(text(await p.get('x')), '10');
  assert.is(await p.numKeys(), await s.numKeys());
  assert.is(p.underlying, s);
  assert.ok(await p.deleteKey('x'));
  await p.close();
  assert.is(text(await s.get('b/a/k')), 'v');
}));

test('worker join: a master with worldSize 2 fails with "1/2 clients joined"', async () => {
  try {
    await TcpStore.create({ port: 0, isServer: true, worldSize: 2, timeoutMs: 300 });
    assert.unreachable('should time out');
  } catch (e) {
    assert.ok(isGroupcommError(e, 'ERR_GROUPCOMM_TIMEOUT'), String(e));
    assert.match((e as Error).message, /1\/2 clients joined/);
  }
});

test('worker join: clients that give their rank let the timeout name the missing ones', async () => {
  const server = await TcpStoreServer.listen({ port: 0 });
  const clients: TcpStore[] = [];
  try {
    for (const rank of [0, 2]) clients.push(await TcpStore.create({ port: server.port, worldSize: 4, rank, timeoutMs: 5000 }));
    await server.waitForWorkers({ worldSize: 4, timeoutMs: 200 });
    assert.unreachable('should time out');
  } catch (e) {
    assert.ok(isGroupcommError(e, 'ERR_GROUPCOMM_TIMEOUT'), String(e));
    assert.equal((e as any).peerRanks, [1, 3]);
    assert.match((e as Error).message, /2\/4 clients joined; missing ranks: \[1, 3\]/);
  } finally {
    for (const c of clients) await c.close();
    await server.close();
  }
});

test('worker join: the master resolves once the other client joined', async () => {
  const server = await TcpStoreServer.listen({ port: 0 });
  try {
    const joined = server.waitForWorkers({ worldSize: 2, timeoutMs: 10_000 });
    const a = await TcpStore.create({ port: server.port, worldSize: 2, timeoutMs: 10_000 });
    const b = await TcpStore.create({ port: server.port, worldSize: 2, timeoutMs: 10_000 });
    await joined;
    const raw = await TcpStore.create({ port: server.port, prefixKeys: false, timeoutMs: 10_000 });
    assert.is(text(await raw.get('init/')), '2');
    await raw.close();
    await a.close();
    await b.close();
  } finally {
    await server.close();
  }
});

test('waitForWorkers with waitForWorkers=false does not block create', async () => {
  const s = await TcpStore.create({ port: 0, isServer: true, worldSize: 3, waitForWorkers: false, timeoutMs: 5000 });
  assert.is(await s.numKeys(), 1);
  await s.close();
});

test('a second server on a busy port fails with a clear error', async () => {
  const a = await TcpStoreServer.listen({ port: 0 });
  try {
    await TcpStoreServer.listen({ port: a.port });
    assert.unreachable('port is busy');
  } catch (e) {
    assert.ok(isGroupcommError(e));
    assert.match((e as Error).message, /EADDRINUSE/);
  } finally {
    await a.close();
  }
});

test('a server can serve on a net.Server the caller bound itself', async () => {
  const net = await import('node:net');
  const pre = net.createServer();
  await new Promise<void>((r) => pre.listen(0, '127.0.0.1', () => r()));
  const server = await TcpStoreServer.listen({ server: pre });
  try {
    assert.is(server.port, (pre.address() as { port: number }).port);
    assert.is(server.host, '127.0.0.1');
    // a listener error (EMFILE on accept, say) is logged, not thrown out of the event loop
    assert.not.throws(() => pre.emit('error', Object.assign(new Error('accept EMFILE'), { code: 'EMFILE' })));
    const c = await TcpStore.create({ port: server.port, timeoutMs: 5000 });
    await c.set('k', 'v');
    assert.is(text(await c.get('k')), 'v');
    await c.close();
  } finally {
    await server.close();
  }
  assert.not.ok(pre.listening);
});

test('connect: nobody listening gives ERR_GROUPCOMM_TIMEOUT after timeoutMs', async () => {
  const srv = await TcpStoreServer.listen({ port: 0 });
  const port = srv.port;
  await srv.close();
  try {
    await TcpStore.create({ port, timeoutMs: 300 });
    assert.unreachable('nobody listens');
  } catch (e) {
    assert.ok(isGroupcommError(e, 'ERR_GROUPCOMM_TIMEOUT'), String(e));
    assert.match((e as Error).message, new RegExp(`127.0.0.1:${port}`));
  }
});

test('connect: a client started before its server connects once the server is up', async () => {
  const srv0 = await TcpStoreServer.listen({ port: 0 });
  const port = srv0.port;
  await srv0.close();
  const pending = TcpStore.create({ port, timeoutMs: 10_000 });
  await new Promise((r) => setTimeout(r, 100));
  const srv = await TcpStoreServer.listen({ port });
  const c = await pending;
  await c.set('up', '1');
  await c.ping(); // replies are ordered: the set has been applied once the ping is answered
  assert.is(srv.numKeys, 1);
  await c.close();
  await srv.close();
});

test('abort: pending waits reject with ABORTED, later calls with DESTROYED; abort and close are idempotent', async () => {
  const s = await TcpStore.create({ port: 0, isServer: true, timeoutMs: 10_000 });
  const p = s.wait(['never']);
  await new Promise((r) => setTimeout(r, 30));
  await s.abort('test');
  await s.abort();
  await s.close();
  try { await p; assert.unreachable('wait must reject'); } catch (e) { assert.ok(isGroupcommError(e, 'ERR_GROUPCOMM_ABORTED'), String(e)); }
  try { await s.set('x', 'y'); assert.unreachable('closed'); } catch (e) { assert.ok(isGroupcommError(e, 'ERR_GROUPCOMM_DESTROYED')); }
});

test('server gone: a blocked get fails with PEER_LOST instead of hanging', async () => {
  const server = await TcpStoreServer.listen({ port: 0 });
  const c = await TcpStore.create({ port: server.port, timeoutMs: 10_000 });
  const p = c.get('never');
  p.catch(() => {}); // it may fail before server.close() resolves (that waits for the client to hang up)
  await new Promise((r) => setTimeout(r, 50));
  await server.close();
  try { await p; assert.unreachable('must fail'); } catch (e) { assert.ok(isGroupcommError(e, 'ERR_GROUPCOMM_PEER_LOST'), String(e)); }
  await c.close();
});

test('wait: an abort landing in the tick its reply was read leaves the pooled wait connection in step', () => withStore(async (s) => {
  const ac = new AbortController();
  const first = s.wait(['late'], { signal: ac.signal, timeoutMs: 10_000 });
  first.catch(() => {});
  // The wait runs on a pooled connection of its own; abort from a 'data' listener that runs
  // right after the client has read STOP_WAITING, before the reply's promise callbacks.
  const conns = (s as unknown as { waitConns: Set<{ socket: import('node:net').Socket }> }).waitConns;
  for (let i = 0; conns.size === 0 && i < 500; i++) await new Promise((r) => setTimeout(r, 10));
  assert.is(conns.size, 1, 'the wait opened its own connection');
  const [wc] = conns;
  wc.socket.on('data', () => ac.abort());
  await s.set('late', 'x');
  try { await first; } catch (e) { assert.ok(isGroupcommError(e, 'ERR_GROUPCOMM_ABORTED'), String(e)); }
  // The next wait reuses that connection at once; a key nobody sets must time out, not "arrive".
  try {
    await s.wait(['never-set'], { timeoutMs: 500 });
    assert.unreachable('a wait for a missing key must not succeed');
  } catch (e) {
    assert.ok(isGroupcommError(e, 'ERR_GROUPCOMM_TIMEOUT'), String(e));
  }
  assert.ok(await s.check(['late']));
}));

/** Gives `s` an idle pooled wait connection, so its next get goes out as WAIT_GET there. */
async function warmWaitPool(s: TcpStore): Promise<void> {
  const p = s.get('warm-up key', { timeoutMs: 10_000 });
  await new Promise((r) => setTimeout(r, 20));
  const other = await s.clone();
  await other.set('warm-up key', 'w');
  await p;
  await other.close();
  assert.ok((s as unknown as { idle: unknown[] }).idle.length > 0, 'a wait connection is idle');
}

test('get on a pooled wait connection (WAIT_GET) still reads this client\'s own latest write', () => withStore(async (s) => {
  await s.set('rw', 'old');
  await s.set('gone', 'old');
  await warmWaitPool(s);
  // Hold the main connection's writes in the socket: a get sent on the idle wait connection
  // would reach the server before this client's own SET and DELETE, and read 'old'.
  const main = (s as unknown as { main: { socket: import('node:net').Socket } }).main.socket;
  main.cork();
  const writes = Promise.all([s.set('rw', 'new'), s.deleteKey('gone')]);
  writes.catch(() => {});
  const got = s.get('rw', { timeoutMs: 10_000 });
  const gone = s.get('gone', { timeoutMs: 300 }).then(() => 'read', (e) => (isGroupcommError(e, 'ERR_GROUPCOMM_TIMEOUT') ? 'timeout' : String(e)));
  await new Promise((r) => setTimeout(r, 50));
  main.uncork();
  assert.is(text(await got), 'new');
  assert.is(await gone, 'timeout', 'a key this client deleted is not read back');
  await writes;
}));

test('read-your-writes holds past the bound on remembered writes (thousands of unconfirmed SETs)', () => withStore(async (s) => {
  await s.set('k0', 'old');
  await warmWaitPool(s);
  const main = (s as unknown as { main: { socket: import('node:net').Socket } }).main.socket;
  main.cork();
  const writes = Promise.all(Array.from({ length: 6000 }, (_, i) => s.set(`k${i}`, 'new')));
  writes.catch(() => {});
  const got = s.get('k0', { timeoutMs: 10_000 });
  await new Promise((r) => setTimeout(r, 50));
  main.uncork();
  assert.is(text(await got), 'new');
  await writes;
}));

test('get and multiGet via WAIT_GET: timeout and abort name the keys, and the pooled connection stays in step', () => withStore(async (s) => {
  await warmWaitPool(s);
  try {
    await s.get('absent', { timeoutMs: 100 });
    assert.unreachable('get should time out');
  } catch (e) {
    assert.ok(isGroupcommError(e, 'ERR_GROUPCOMM_TIMEOUT'), String(e));
    assert.equal((e as any).keys, ['absent']);
  }
  const ac = new AbortController();
  const p = s.multiGet(['absent', 'absent2'], { signal: ac.signal, timeoutMs: 10_000 });
  setTimeout(() => ac.abort(), 30);
  try {
    await p;
    assert.unreachable('multiGet should abort');
  } catch (e) {
    assert.ok(isGroupcommError(e, 'ERR_GROUPCOMM_ABORTED'), String(e));
  }
  // The same pooled connections answer the next blocking reads correctly.
  const other = await s.clone();
  try {
    const g = s.get('absent', { timeoutMs: 10_000 });
    const m = s.multiGet(['absent', 'absent2'], { timeoutMs: 10_000 });
    await new Promise((r) => setTimeout(r, 30));
    await other.multiSet(['absent', 'absent2'], ['a', 'b']);
    assert.is(text(await g), 'a');
    assert.equal((await m).map(text), ['a', 'b']);
  } finally {
    await other.close();
  }
}));

test('discard: deletes the keys (present or not) without a reply; PrefixStore maps the keys', () => withStore(async (s) => {
  await s.multiSet(['d1', 'd2', 'ns/d3'], ['a', 'b', 'c']);
  await s.discard(['d1', 'd2', 'never-there']);
  await new PrefixStore('ns', s).discard(['d3']);
  assert.not.ok(await s.check(['d1']));
  assert.not.ok(await s.check(['d2']));
  assert.not.ok(await s.check(['ns/d3']));
  const plain = await TcpStore.create({ port: s.port, extensions: false, timeoutMs: 10_000 });
  try {
    await s.set('d4', 'x');
    await plain.discard(['d4']);
    assert.not.ok(await s.check(['d4']));
  } finally {
    await plain.close();
  }
}));

test('take: returns the value and deletes the key, whether it was there already or set later', () => withStore(async (s) => {
  await s.set('t1', 'first');
  assert.is(text(await s.take('t1')), 'first');
  await warmWaitPool(s);
  const other = await s.clone();
  try {
    const p = s.take('t2', { timeoutMs: 10_000 });
    await new Promise((r) => setTimeout(r, 30));
    await other.set('t2', 'second');
    assert.is(text(await p), 'second');
    await s.ping();
    assert.not.ok(await s.check(['t1']));
    assert.not.ok(await s.check(['t2']));
    const pre = new PrefixStore('ns', s);
    await pre.set('k', 'v');
    assert.is(text(await pre.take('k')), 'v');
    await s.ping();
    assert.not.ok(await s.check(['ns/k']));
  } finally {
    await other.close();
  }
}));

test.run();
