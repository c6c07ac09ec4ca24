// The store client against servers that misbehave: one that stops answering, one that stops
// reading, one that announces an absurd reply. Each is a few lines of raw socket code standing in
// for a hung or hostile TCPStore server; the client must time out naming the key, or fail the
// connection, and never hang or crash the process.
import net from 'node:net';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { TcpStore } from '../../host/index.js';
import { isGroupcommError } from '../../host/base/errors.js';
import { le64 } from './store_raw.js';

type Mode = 'silent' | 'stop-reading' | 'huge-reply' | 'one-connection' | 'not-ready';

/**
 * A server that does the torch handshake (VALIDATE, then echoes PING) and then, per mode: reads
 * and ignores everything, stops reading, or answers the first request with a value header
 * declaring 2^40 bytes followed by a few bytes of it; or ('one-connection') answers CHECK with
 * NOT_READY on the first connection and ignores every later one (so a wait connection never opens);
 * or ('not-ready') answers CHECK with NOT_READY on every connection and ignores everything else
 * (WAIT and CANCEL_WAIT included).
 */
async function fakeServer(mode: Mode): Promise<{ port: number; closedByClient: Promise<void>; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  let onClientClose!: () => void;
  const closedByClient = new Promise<void>((r) => { onClientClose = r; });
  let accepted = 0;
  const server = net.createServer((s) => {
    sockets.add(s);
    if (mode === 'one-connection' && ++accepted > 1) {
      s.on('error', () => {});
      s.on('close', () => sockets.delete(s));
      return;
    }
    s.on('error', () => {});
    s.on('close', () => { sockets.delete(s); onClientClose(); });
    let buf = Buffer.alloc(0);
    let stage = 0;
    s.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (stage === 0 && buf.length >= 10) {
        s.write(buf.subarray(6, 10)); // the PING nonce
        buf = buf.subarray(10);
        stage = 1;
        if (mode === 'stop-reading') s.pause();
      }
      while (stage === 1 && (mode === 'one-connection' || mode === 'not-ready') && buf.length >= 9 && buf[0] === 5) {
        const n = Number(buf.readBigUInt64LE(1));
        let at = 9;
        for (let i = 0; i < n && at + 8 <= buf.length; i++) at += 8 + Number(buf.readBigUInt64LE(at));
        if (at > buf.length) break;
        buf = buf.subarray(at);
        s.write(Buffer.from([1]));
      }
      if (stage === 1 && buf.length > 0 && mode === 'huge-reply') {
        stage = 2;
        s.write(le64(2 ** 40));
        setTimeout(() => s.write(Buffer.alloc(64 * 1024, 7)), 50);
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as net.AddressInfo).port,
    closedByClient,
    close: () => {
      for (const s of sockets) s.destroy();
      return new Promise<void>((r) => server.close(() => r()));
    },
  };
}

/** Resolves with what `p` settled to, or 'hung' after ms. */
async function outcome<T>(p: Promise<T>, ms: number): Promise<{ value?: T; error?: unknown; hung?: true }> {
  let timer: NodeJS.Timeout | undefined;
  const hung = new Promise<{ hung: true }>((r) => { timer = setTimeout(() => r({ hung: true }), ms); });
  try {
    return await Promise.race([p.then((value) => ({ value }), (error) => ({ error })), hung]);
  } finally {
    clearTimeout(timer);
  }
}

/** A client (torch protocol only, as against a torch server) of a fake server in `mode`. */
async function withFake(mode: Mode, timeoutMs: number, fn: (s: TcpStore) => Promise<void>): Promise<void> {
  const srv = await fakeServer(mode);
  const s = await TcpStore.create({ port: srv.port, timeoutMs, extensions: false });
  try {
    await fn(s);
  } finally {
    await s.close();
    await srv.close();
  }
}

/** Asserts `err` is a timeout naming `key` (a string) or `keys` (an array). */
function assertTimeoutNames(err: unknown, k: string | string[]): void {
  assert.ok(isGroupcommError(err, 'ERR_GROUPCOMM_TIMEOUT'), String(err));
  const e = err as { key?: string; keys?: string[]; message: string };
  if (Array.isArray(k)) {
    assert.equal(e.keys, k);
    assert.match(e.message, `keys: ${k.join(', ')}`);
  } else {
    assert.is(e.key, k);
    assert.match(e.message, `key: ${k}`);
  }
}

test('a request the server never answers times out after the store timeout, naming its key', () => withFake('silent', 400, async (s) => {
  const r = await outcome(s.add('counter', 1), 10_000);
  assert.not.ok(r.hung, 'add must not hang');
  assertTimeoutNames(r.error, 'counter');
  assert.is((r.error as { timeoutMs?: number }).timeoutMs, 400);
}));

test('a per-call timeoutMs is the one the timeout error reports', () => withFake('silent', 60_000, async (s) => {
  const r = await outcome(s.deleteKey('k1', { timeoutMs: 300 }), 10_000);
  assertTimeoutNames(r.error, 'k1');
  assert.is((r.error as { timeoutMs?: number }).timeoutMs, 300);
}));

test('a set whose write never completes (server stopped reading) times out naming its key', () => withFake('stop-reading', 600, async (s) => {
  // Far more than loopback socket buffers hold, so the last write cannot complete. Values stay
  // under the 8 MiB a client assumes for a server that does not answer LIMITS (torch's).
  const value = new Uint8Array(8 * 1024 * 1024 - 64);
  const earlier = Array.from({ length: 5 }, () => s.set('big', value).catch(() => {}));
  const r = await outcome(s.set('big', value), 10_000);
  await Promise.all(earlier);
  assert.not.ok(r.hung, 'set must not hang when its write never completes');
  assertTimeoutNames(r.error, 'big');
}));

test('a reply declaring 2^40 bytes fails the connection instead of crashing the process', () => withFake('huge-reply', 5_000, async (s) => {
  const r = await outcome(s.compareSet('k', '', 'v'), 10_000);
  assert.not.ok(r.hung, 'compareSet must settle');
  assert.ok(isGroupcommError(r.error, 'ERR_GROUPCOMM_PROTOCOL'), String(r.error));
  // The connection is gone; later calls fail at once instead of queueing behind the bad reply.
  const again = await outcome(s.ping(), 5_000);
  assert.ok(again.error !== undefined && isGroupcommError(again.error), String(again.error));
}));

test('create: a join that fails (server never answers the init/ add) closes the client connection', async () => {
  const srv = await fakeServer('silent');
  const r = await outcome(TcpStore.create({ port: srv.port, worldSize: 2, rank: 1, timeoutMs: 400, extensions: false }), 10_000);
  try {
    assert.ok(isGroupcommError(r.error, 'ERR_GROUPCOMM_TIMEOUT'), String(r.error));
    const closed = await outcome(srv.closedByClient, 5_000);
    assert.not.ok(closed.hung, 'the failed client must close its connection');
  } finally {
    if (r.value) await r.value.close();
    await srv.close();
  }
});

test('create: an abort during the join rejects with ABORTED and closes the connection', async () => {
  const srv = await fakeServer('silent');
  const ac = new AbortController();
  setTimeout(() => ac.abort(), 200);
  const r = await outcome(TcpStore.create({ port: srv.port, worldSize: 2, timeoutMs: 30_000, signal: ac.signal, extensions: false }), 10_000);
  try {
    assert.not.ok(r.hung, 'the abort must end create');
    assert.ok(isGroupcommError(r.error, 'ERR_GROUPCOMM_ABORTED'), String(r.error));
    const closed = await outcome(srv.closedByClient, 5_000);
    assert.not.ok(closed.hung, 'the aborted client must close its connection');
  } finally {
    if (r.value) await r.value.close();
    await srv.close();
  }
});

test('wait: running out of time while opening its wait connection names the keys', () => withFake('one-connection', 30_000, async (s) => {
  const r = await outcome(s.wait(['a', 'b'], { timeoutMs: 500 }), 10_000);
  assertTimeoutNames(r.error, ['a', 'b']);
}));

test('check: a timeout names its keys', () => withFake('silent', 30_000, async (s) => {
  const c = await outcome(s.check(['x', 'y'], { timeoutMs: 300 }), 10_000);
  assertTimeoutNames(c.error, ['x', 'y']);
}));

test('wait: a wait connection whose CANCEL_WAIT is never answered is closed after the store timeout', () => withFake('not-ready', 600, async (s) => {
  const r = await outcome(s.wait(['k'], { timeoutMs: 200 }), 10_000);
  assertTimeoutNames(r.error, ['k']);
  const conns = (s as unknown as { waitConns: Set<unknown> }).waitConns;
  assert.is(conns.size, 1, 'the wait had its own connection');
  for (let i = 0; conns.size > 0 && i < 500; i++) await new Promise((res) => setTimeout(res, 10));
  assert.is(conns.size, 0, 'the unanswered wait connection was closed');
}));

test('a server that speaks first (bytes before any request) fails the connect with PROTOCOL, at once', async () => {
  // Node clients read through net's onread into a buffer of their own: unasked-for bytes must still
  // reach the connection's parser (and be refused), not vanish into a hang. The client never
  // retries a protocol error, so it fails at once, not at its timeout.
  const socks = new Set<net.Socket>();
  const server = net.createServer((s) => {
    socks.add(s);
    s.on('error', () => {});
    s.write(Buffer.from('HELLO I AM NOT A STORE\n'));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  try {
    const t0 = Date.now();
    const r = await outcome(TcpStore.create({ port, timeoutMs: 20_000 }), 30_000);
    assert.not.ok(r.hung, 'connect hung');
    // The bytes are taken for the handshake's PING reply (the first reply the client expects).
    assert.ok(isGroupcommError(r.error, 'ERR_GROUPCOMM_PROTOCOL'), String(r.error));
    assert.match((r.error as Error).message, /answered PING/);
    assert.ok(Date.now() - t0 < 10_000, `took ${Date.now() - t0} ms`);
  } finally {
    for (const s of socks) s.destroy();
    server.close();
  }
});

test.run();
