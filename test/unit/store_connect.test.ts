// Opening a store connection (host/store/connect.ts) against scripted servers on 127.0.0.1: the
// handshake's bytes (VALIDATE, PING, the extension probe), what is retried (refused, reset, no
// answer) with backoff until the deadline, and what fails at once (abort, a server that wants a
// secret, a wrong PING echo). The handshake with a real server is in store.test/store_auth.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import net from 'node:net';
import { openConnection, type ConnectSpec } from '../../host/store/connect.js';
import { Connection, readU8 } from '../../host/store/connection.js';
import { logger } from '../../host/base/log.js';
import { AUTH_NONCE_BYTES, AUTH_REQUIRED_NONCE, CheckReply, Op } from '../../host/store/protocol.js';
import { authProof } from '../../host/store/auth.js';
import { VALIDATE } from './store_raw.js';
import { failure } from '../helpers/rejects.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const log = logger('STORE');

type Reply = (req: { ping?: number; bytes: Buffer }) => Buffer | null;

/**
 * A server that reads the client's VALIDATE + PING (+ CHECK probe), then answers what `reply`
 * returns (null: nothing). Counts connections and keeps every connection's bytes.
 */
/** A server that records what each connection sent and lets `onData` answer it (all bytes so far). */
async function recording(onData: (s: net.Socket, got: Buffer) => void, resetAtConnect = false) {
  const seen: Buffer[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
    const i = seen.push(Buffer.alloc(0)) - 1;
    if (resetAtConnect) { s.destroy(); return; }
    s.on('data', (d: Buffer) => {
      seen[i] = Buffer.concat([seen[i], d]);
      onData(s, seen[i]);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  return {
    port, seen,
    close: () => new Promise<void>((r) => { for (const s of sockets) s.destroy(); server.close(() => r()); }),
  };
}

async function scripted(onConn: 'answer' | 'reset' | 'silent', reply: Reply = () => null) {
  const answered = new WeakSet<net.Socket>();
  return recording((s, b) => {
    if (onConn === 'silent' || answered.has(s) || b.length < 10) return;
    answered.add(s);
    const out = reply({ ping: b[5] === Op.PING ? b.readUInt32LE(6) : undefined, bytes: b });
    if (out) s.write(out);
  }, onConn === 'reset');
}

const spec = (port: number, o: Partial<ConnectSpec> = {}): ConnectSpec => ({ host: '127.0.0.1', port, timeoutMs: 3000, probe: false, log, ...o });

const u32 = (n: number) => { const b = Buffer.alloc(4); b.writeUInt32LE(n >>> 0); return b; };

test('handshake: VALIDATE then PING in one write; the echo connects, without the probe the extensions are off', async () => {
  const srv = await scripted('answer', ({ ping }) => u32(ping!));
  try {
    const { conn, ext } = await openConnection(spec(srv.port));
    assert.is(ext, false);
    await sleep(20);
    const b = srv.seen[0];
    assert.equal(b.subarray(0, 5), VALIDATE);
    assert.is(b[5], Op.PING);
    assert.is(b.length, 10, 'no probe sent');
    conn.close();
  } finally {
    await srv.close();
  }
});

test('probe: a CHECK of the probe key in the same write; READY turns the extensions on, NOT_READY off', async () => {
  for (const [answer, want] of [[CheckReply.READY, true], [CheckReply.NOT_READY, false]] as const) {
    const srv = await scripted('answer', ({ ping }) => Buffer.concat([u32(ping!), Buffer.from([answer])]));
    try {
      const { conn, ext } = await openConnection(spec(srv.port, { probe: true }));
      assert.is(ext, want);
      await sleep(20);
      const b = srv.seen[0];
      assert.is(b[10], Op.CHECK);
      assert.is(b.readUInt32LE(11), 1, 'one key');
      assert.is(srv.seen.length, 1);
      conn.close();
    } finally {
      await srv.close();
    }
  }
});

test('a PING echoed with AUTH_REQUIRED_NONCE is ERR_GROUPCOMM_AUTH at once, not retried', async () => {
  const srv = await scripted('answer', () => u32(AUTH_REQUIRED_NONCE));
  try {
    const t0 = performance.now();
    const e = await failure(openConnection(spec(srv.port)));
    assert.is(e.code, 'ERR_GROUPCOMM_AUTH');
    assert.ok(performance.now() - t0 < 1000);
    await sleep(50);
    assert.is(srv.seen.length, 1, 'one connection');
  } finally {
    await srv.close();
  }
});

test('a wrong PING echo is ERR_GROUPCOMM_PROTOCOL at once, not retried', async () => {
  const srv = await scripted('answer', ({ ping }) => u32(ping! ^ 0x10));
  try {
    const e = await failure(openConnection(spec(srv.port)));
    assert.is(e.code, 'ERR_GROUPCOMM_PROTOCOL');
    await sleep(50);
    assert.is(srv.seen.length, 1);
  } finally {
    await srv.close();
  }
});

test('a server that resets every connection is retried with growing pauses until the deadline, then TIMEOUT', async () => {
  const srv = await scripted('reset');
  try {
    const t0 = performance.now();
    const e = await failure(openConnection(spec(srv.port, { timeoutMs: 600 })));
    const took = performance.now() - t0;
    assert.is(e.code, 'ERR_GROUPCOMM_TIMEOUT');
    assert.is(e.timeoutMs, 600);
    assert.ok(e.cause, 'the last failure is the cause');
    assert.ok(took >= 550 && took < 2000, `gave up after ${took} ms`);
    // Pauses from ~20 ms growing 1.5× (with jitter): 4 to 12 tries in 600 ms.
    assert.ok(srv.seen.length >= 4 && srv.seen.length <= 12, `${srv.seen.length} connections in 600 ms`);
  } finally {
    await srv.close();
  }
});

test('nobody listening: refused connects are retried until the deadline; the error is TIMEOUT with ECONNREFUSED as its cause', async () => {
  const srv = await scripted('reset');
  const port = srv.port;
  await srv.close();
  const t0 = performance.now();
  const e = await failure(openConnection(spec(port, { timeoutMs: 300 })));
  assert.is(e.code, 'ERR_GROUPCOMM_TIMEOUT');
  assert.is((e.cause as NodeJS.ErrnoException).code, 'ECONNREFUSED');
  assert.ok(performance.now() - t0 >= 280);
  const tries = Number(/\((\d+) attempts/.exec(e.message)?.[1]);
  assert.ok(tries >= 2, `the message counts the tries: ${e.message}`);
});

test('a server that never answers the handshake: each try gets what is left of the deadline, then TIMEOUT', async () => {
  const srv = await scripted('silent');
  try {
    const t0 = performance.now();
    const e = await failure(openConnection(spec(srv.port, { timeoutMs: 300 })));
    const took = performance.now() - t0;
    assert.is(e.code, 'ERR_GROUPCOMM_TIMEOUT');
    assert.ok(took >= 280 && took < 1500, `gave up after ${took} ms`);
    assert.is(srv.seen.length, 1, 'the handshake had the whole deadline');
    // The handshake's own timeout is retried like a refused connect: the error is the loop's
    // (timeoutMs, the last failure as cause), not the handshake's.
    assert.is(e.timeoutMs, 300);
    assert.is((e.cause as { code?: string }).code, 'ERR_GROUPCOMM_TIMEOUT');
  } finally {
    await srv.close();
  }
});

test('abort: before the first try nothing connects; during the backoff it ends at once', async () => {
  const srv = await scripted('reset');
  try {
    const ac = new AbortController();
    ac.abort('no');
    const e = await failure(openConnection(spec(srv.port, { signal: ac.signal })));
    assert.is(e.code, 'ERR_GROUPCOMM_ABORTED');
    assert.is(e.cause, 'no');
    await sleep(30);
    assert.is(srv.seen.length, 0);

    const ac2 = new AbortController();
    const t0 = performance.now();
    const p = failure(openConnection(spec(srv.port, { signal: ac2.signal, timeoutMs: 10_000 })));
    await sleep(150);
    ac2.abort();
    const e2 = await p;
    assert.is(e2.code, 'ERR_GROUPCOMM_ABORTED');
    assert.ok(performance.now() - t0 < 1500, 'ended at the abort, not at the deadline');
  } finally {
    await srv.close();
  }
});

test('a client with a secret and a server that closes on AUTH_HELLO: ERR_GROUPCOMM_AUTH, not a retry', async () => {
  const srv = await recording((s, got) => { if (got.length >= 6 && got[5] === Op.AUTH_HELLO) s.destroy(); });
  try {
    const e = await failure(openConnection(spec(srv.port, { secret: Buffer.from('x') })));
    assert.is(e.code, 'ERR_GROUPCOMM_AUTH');
    assert.is((e.cause as { code?: string }).code, 'ERR_GROUPCOMM_PEER_LOST', 'the lost connection is the cause');
    assert.is(srv.seen.length, 1);
  } finally {
    await srv.close();
  }
});

test('a server that answers AUTH_HELLO without proving the secret: ERR_GROUPCOMM_AUTH, nothing more sent, not retried', async () => {
  // VALIDATE (5) + AUTH_HELLO (1 + 32): answer a nonce and a proof made with another secret.
  const srv = await recording((s, b) => { if (b.length === 5 + 1 + 32) s.write(Buffer.alloc(64, 0x42)); });
  try {
    const e = await failure(openConnection(spec(srv.port, { secret: Buffer.from('x') })));
    assert.is(e.code, 'ERR_GROUPCOMM_AUTH');
    assert.match(e.message, /prove/);
    await sleep(30);
    assert.is(srv.seen.length, 1, 'not retried');
    assert.is(srv.seen[0].length, 5 + 1 + 32, 'no AUTH_PROOF (nor anything else) sent to a server that did not prove itself');
  } finally {
    await srv.close();
  }
});

test('a server that proves the secret but closes on our AUTH_PROOF: ERR_GROUPCOMM_AUTH (cause: the lost connection), not retried', async () => {
  const secret = Buffer.from('shared');
  const srv = await recording((s, b) => {
    // VALIDATE (5) + AUTH_HELLO (1 + nonce): prove the secret as a real server would.
    if (b.length === 5 + 1 + AUTH_NONCE_BYTES) {
      const clientNonce = b.subarray(6);
      const serverNonce = Buffer.alloc(AUTH_NONCE_BYTES, 0x5a);
      s.write(Buffer.concat([serverNonce, authProof(secret, 'server', clientNonce, serverNonce)]));
    } else if (b.length >= 5 + 1 + AUTH_NONCE_BYTES + 1 + 32) {
      s.destroy(); // the client's AUTH_PROOF arrived: refuse it by closing, as the server does
    }
  });
  try {
    const e = await failure(openConnection(spec(srv.port, { secret, timeoutMs: 2000 })));
    assert.is(e.code, 'ERR_GROUPCOMM_AUTH', e.message);
    assert.match(e.message, /rejected our secret/);
    assert.is((e.cause as { code?: string }).code, 'ERR_GROUPCOMM_PEER_LOST');
    await sleep(30);
    assert.is(srv.seen.length, 1, 'not retried');
    assert.is(srv.seen[0][5 + 1 + AUTH_NONCE_BYTES], Op.AUTH_PROOF);
  } finally {
    await srv.close();
  }
});

test('no time at all (timeoutMs 0): TIMEOUT without a single try, and no cause', async () => {
  const srv = await scripted('answer', ({ ping }) => u32(ping!));
  try {
    const e = await failure(openConnection(spec(srv.port, { timeoutMs: 0 })));
    assert.is(e.code, 'ERR_GROUPCOMM_TIMEOUT', String(e));
    assert.is(e.cause, undefined);
    assert.match(e.message, /\(0 attempts, last error: no attempt\)/);
    await sleep(30);
    assert.is(srv.seen.length, 0, 'nothing connected');
  } finally {
    await srv.close();
  }
});

test('a failure that is not a network error (a port out of range) is PEER_LOST at once, with it as the cause', async () => {
  const t0 = performance.now();
  const e = await failure(openConnection(spec(70_000)));
  assert.is(e.code, 'ERR_GROUPCOMM_PEER_LOST', String(e));
  assert.is((e.cause as NodeJS.ErrnoException).code, 'ERR_SOCKET_BAD_PORT');
  assert.ok(performance.now() - t0 < 1000, 'not retried until the deadline');
});

test('a request never answered: the connection\'s watchdog rejects it with TIMEOUT, its key, timeoutMs and elapsedMs', async () => {
  // The watchdog and a caller's own guard race at the same deadline (subscribe has both): either
  // error must carry the same fields.
  const srv = await scripted('silent');
  const socket = net.connect(srv.port, '127.0.0.1');
  await new Promise((r) => socket.once('connect', r));
  const conn = new Connection(socket, 'silent', 200, logger('STORE'));
  try {
    const t0 = performance.now();
    const e = await failure(conn.request(Buffer.from([Op.PING, 1, 2, 3, 4]), readU8, 200, 'ping', 'k'));
    const took = performance.now() - t0;
    assert.is(e.code, 'ERR_GROUPCOMM_TIMEOUT');
    assert.equal([e.key, e.timeoutMs], ['k', 200]);
    assert.ok(e.elapsedMs !== undefined && e.elapsedMs >= 200 && e.elapsedMs <= took + 1, `elapsedMs ${e.elapsedMs}, took ${took}`);
  } finally {
    conn.close();
    await srv.close();
  }
});

test.run();
