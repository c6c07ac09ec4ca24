// TcpStoreServer's own surface outside the read loop (server.ts): listen's argument checks and
// exposure check, host/port once closed, waitForWorkers's shortcuts, the connection cap's rate
// limited warning, a close() deadline or signal cutting half-open clients, and a misbehaving
// client that keeps its side open destroyed shortly after its connection was ended; abort() not
// waiting for anyone; which closes are warned about; a listener error or a client's reset
// logged, never thrown.
import net from 'node:net';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { within } from '../helpers/rejects.js';
import { TcpStore, TcpStoreServer } from '../../host/index.js';
import { isGroupcommError } from '../../host/base/errors.js';
import { Raw, VALIDATE } from './store_raw.js';
import { capture, warned } from '../helpers/capture.js';

const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function code(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    assert.ok(isGroupcommError(e), String(e));
    return (e as { code: string }).code;
  }
  return 'resolved';
}

/** A raw client that never ends its side (allowHalfOpen): only the server can close it. */
async function halfOpen(port: number): Promise<{ socket: net.Socket; ended: Promise<void> }> {
  const socket = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
  socket.on('error', () => {});
  const ended = new Promise<void>((r) => socket.once('end', () => r()));
  await new Promise((r) => socket.once('connect', r));
  return { socket, ended };
}


async function connections(server: TcpStoreServer, n: number): Promise<void> {
  for (let t0 = Date.now(); server.numConnections !== n && Date.now() - t0 < 3000;) await pause(10);
  assert.is(server.numConnections, n);
}

test('listen: a bad port or worldSize is INVALID_ARGUMENT before anything is bound; 65535 and 1 pass the check', async () => {
  for (const port of [-1, 65536, 1.5, NaN]) {
    assert.is(await code(TcpStoreServer.listen({ port })), 'ERR_GROUPCOMM_INVALID_ARGUMENT', `port ${port}`);
  }
  for (const worldSize of [0, -2, 1.5]) {
    assert.is(await code(TcpStoreServer.listen({ port: 0, worldSize })), 'ERR_GROUPCOMM_INVALID_ARGUMENT', `worldSize ${worldSize}`);
  }
  const top = TcpStoreServer.listen({ port: 65535 });
  const got = await code(top.then((s) => s.close()));
  assert.ok(got === 'resolved' || got === 'ERR_GROUPCOMM_BIND', `port 65535: ${got}`);
  const one = await TcpStoreServer.listen({ port: 0, worldSize: 1 });
  assert.is(one.worldSize, 1);
  await one.close();
});

test('listen without a secret: refused on a reachable host before binding; a server already bound on loopback is judged by its address', async () => {
  assert.is(await code(TcpStoreServer.listen({ port: 0, host: '0.0.0.0', insecure: false })), 'ERR_GROUPCOMM_AUTH');
  const pre = net.createServer();
  await new Promise<void>((r) => pre.listen(0, '127.0.0.1', () => r()));
  try {
    const server = await TcpStoreServer.listen({ server: pre, host: '0.0.0.0', insecure: false });
    assert.is(server.host, '127.0.0.1', 'the bound address');
    assert.not.throws(() => pre.emit('error', new Error('accept EMFILE')), 'a listener error on a server bound by the caller is logged');
    await server.close();
  } finally {
    pre.close();
  }
});

test('host and port once closed: the given host, port 0', async () => {
  const server = await TcpStoreServer.listen({ port: 0, host: 'localhost' });
  assert.ok(server.port > 0);
  await server.close();
  assert.is(server.port, 0);
  assert.is(server.host, 'localhost');
  const plain = await TcpStoreServer.listen({ port: 0 });
  await plain.close();
  assert.is(plain.host, '127.0.0.1', 'the default host');
});

test('waitForWorkers: no worldSize resolves at once; the server\'s worldSize is used; the timeout carries its fields; a closed server rejects', async () => {
  const plain = await TcpStoreServer.listen({ port: 0 });
  assert.ok(await within(plain.waitForWorkers({ timeoutMs: 60_000 }), 1000), 'no worldSize: nothing to wait for');
  await plain.close();
  assert.is(await code(plain.waitForWorkers({ worldSize: 1 })), 'ERR_GROUPCOMM_DESTROYED');
  const server = await TcpStoreServer.listen({ port: 0, worldSize: 2 });
  const a = await TcpStore.create({ port: server.port, worldSize: 2, timeoutMs: 5000 });
  try {
    const e = await server.waitForWorkers({ timeoutMs: 100 }).then(() => undefined, (x) => x);
    assert.ok(isGroupcommError(e, 'ERR_GROUPCOMM_TIMEOUT'), `the server's worldSize 2, one joined: ${e}`);
    assert.is(e.key, 'init/');
    assert.is(e.timeoutMs, 100);
    assert.ok((e.elapsedMs ?? 0) >= 90, `elapsedMs ${e.elapsedMs}`);
    assert.is(e.peerRanks, undefined, 'no client said its rank');
    const later = server.waitForWorkers({ timeoutMs: 60_000 });
    const ac = new AbortController();
    const waiting = server.waitForWorkers({ worldSize: 3, signal: ac.signal, timeoutMs: 60_000 }).then(() => undefined, (x) => x);
    const b = await TcpStore.create({ port: server.port, worldSize: 2, timeoutMs: 5000 });
    assert.ok(await within(later, 3000), 'resolved when the second joined');
    assert.ok(await within(server.waitForWorkers({ timeoutMs: 60_000 }), 1000), 'both joined: at once');
    assert.not.ok(await within(waiting, 100), 'a wait for 3 is not woken by the second join');
    ac.abort();
    const aborted = await waiting;
    assert.ok(isGroupcommError(aborted, 'ERR_GROUPCOMM_ABORTED'), String(aborted));
    assert.is(aborted.key, 'init/', 'the abort names the key');
    await b.close();
  } finally {
    await a.close();
    await server.close();
  }
});

test('waitForWorkers: the timeout names the ranks that did not join when clients said theirs', async () => {
  const server = await TcpStoreServer.listen({ port: 0 });
  const c = await TcpStore.create({ port: server.port, worldSize: 3, rank: 1, timeoutMs: 5000 });
  try {
    const e = await server.waitForWorkers({ worldSize: 3, timeoutMs: 100 }).then(() => undefined, (x) => x);
    assert.ok(isGroupcommError(e, 'ERR_GROUPCOMM_TIMEOUT'), String(e));
    assert.equal(e.peerRanks, [0, 2]);
  } finally {
    await c.close();
    await server.close();
  }
});

test('close() and abort() return one promise; connectLocal links in until the server closes; a busy port is ERR_GROUPCOMM_BIND', async () => {
  const server = await TcpStoreServer.listen({ port: 0 });
  const local = server.connectLocal();
  assert.ok(local, 'a link while open');
  assert.is(server.numConnections, 1);
  assert.is(await code(TcpStoreServer.listen({ port: server.port })), 'ERR_GROUPCOMM_BIND');
  const closing = server.close();
  assert.is(server.close(), closing);
  assert.is(server.abort(), closing);
  assert.is(server.connectLocal(), undefined, 'none once closing');
  await closing;
  assert.is(server.numConnections, 0);
});

test('asyncDispose closes the server; in-process subscribers hear PEER_LOST; a handshake timeout is logged', async () => {
  const { log, warnings } = capture();
  const server = await TcpStoreServer.listen({ port: 0, handshakeTimeoutMs: 100, logger: log });
  const ended: string[] = [];
  server.subscribeLocal('g/to/0/', () => {}, (e) => ended.push(e.code));
  try {
    const silent = await Raw.connect(server.port);
    assert.ok(await silent.waitClosed(3000), 'no handshake: closed');
    silent.close();
    warned(warnings, 'no completed handshake within 100 ms');
    await within(server[Symbol.asyncDispose](), 5000);
    assert.is(server.connectLocal(), undefined, 'closed');
    assert.equal(ended, ['ERR_GROUPCOMM_PEER_LOST']);
  } finally {
    await server.abort();
  }
});

test('the connection cap: one warning for a burst of refused connections', async () => {
  const { log, warnings } = capture();
  const server = await TcpStoreServer.listen({ port: 0, maxConnections: 1, logger: log });
  const held = await Raw.connect(server.port);
  try {
    await connections(server, 1);
    for (let i = 0; i < 3; i++) {
      const r = await Raw.connect(server.port);
      assert.ok(await r.waitClosed(3000), `refused ${i}`);
      r.close();
    }
    assert.is(warnings.filter((w) => w.includes('connection cap of 1 reached')).length, 1, JSON.stringify(warnings));
  } finally {
    held.close();
    await server.close();
  }
});

test('close({ timeoutMs }) and close({ signal }) destroy the clients still holding their side open', async () => {
  const s1 = await TcpStoreServer.listen({ port: 0 });
  const c1 = await halfOpen(s1.port);
  const s2 = await TcpStoreServer.listen({ port: 0 });
  const c2 = await halfOpen(s2.port);
  try {
    await connections(s1, 1);
    const t0 = Date.now();
    assert.ok(await within(s1.close({ timeoutMs: 200 }), 5000), 'the deadline cut it');
    assert.ok(Date.now() - t0 >= 150, 'not before the deadline');
    await connections(s2, 1);
    const ac = new AbortController();
    const closing = s2.close({ signal: ac.signal, timeoutMs: 60_000 });
    await c2.ended;
    assert.not.ok(await within(closing, 100), 'waits for the client');
    ac.abort();
    assert.ok(await within(closing, 5000), 'the signal cut it');
  } finally {
    c1.socket.destroy();
    c2.socket.destroy();
    await s1.abort();
    await s2.abort();
  }
});

test('a misbehaving client that keeps its side open: ended at once, destroyed about a second later', async () => {
  const server = await TcpStoreServer.listen({ port: 0 });
  const c = await halfOpen(server.port);
  try {
    c.socket.write(Buffer.concat([VALIDATE, Buffer.from([99])])); // an unknown opcode
    assert.ok(await within(c.ended, 3000), 'the server ended its side');
    assert.is(server.numConnections, 0, 'forgotten at once');
    // server.close() waits for every socket: it resolves only if the dropped one was destroyed
    assert.ok(await within(server.close({ timeoutMs: 60_000 }), 5000), 'destroyed by the server');
  } finally {
    c.socket.destroy();
    await server.close();
  }
});

test('abort() destroys every connection at once, a half-open client too', async () => {
  const server = await TcpStoreServer.listen({ port: 0 });
  const c = await halfOpen(server.port);
  try {
    await connections(server, 1);
    assert.ok(await within(server.abort(), 5000), 'not held by the client');
    assert.ok(await within(c.ended, 3000), 'the client saw its connection go');
  } finally {
    c.socket.destroy();
  }
});

test('warnings: none for clients that hang up or a server closing; one for a closed misbehaving client; a listener error and a client\'s reset are logged, not thrown', async () => {
  const { log, warnings } = capture();
  const server = await TcpStoreServer.listen({ port: 0, logger: log });
  try {
    const a = await Raw.connect(server.port);
    a.write(VALIDATE);
    await connections(server, 1);
    a.close();
    await connections(server, 0);
    const kept = await Raw.connect(server.port);
    await connections(server, 1);
    const bad = await Raw.connect(server.port);
    bad.write(Buffer.from([99]));
    assert.ok(await bad.waitClosed(3000));
    bad.close();
    const inner = (server as unknown as { server: net.Server }).server;
    assert.not.throws(() => inner.emit('error', new Error('accept EMFILE')));
    warned(warnings, 'listener error: accept EMFILE');
    const reset = await Raw.connect(server.port);
    await connections(server, 2);
    if (typeof reset.socket.resetAndDestroy === 'function') reset.socket.resetAndDestroy();
    else reset.close();
    await connections(server, 1);
    await server.close({ timeoutMs: 5000 });
    assert.ok(kept.closed || await kept.waitClosed(3000));
    assert.is(warnings.filter((w) => w.includes('closing connection')).length, 1, JSON.stringify(warnings));
  } finally {
    await server.close();
  }
});

test.run();
