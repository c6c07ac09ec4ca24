// The optional shared-secret handshake (a groupcomm extension, off by default).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { TcpStore, TcpStoreServer } from '../../host/index.js';
import { isGroupcommError } from '../../host/base/errors.js';
import { Raw, VALIDATE, ping } from './store_raw.js';

const text = (b: Uint8Array) => Buffer.from(b).toString('utf8');

async function withSecretServer(fn: (s: TcpStoreServer) => Promise<void>): Promise<void> {
  const server = await TcpStoreServer.listen({ port: 0, secret: 'correct horse' });
  try {
    await fn(server);
  } finally {
    await server.close();
  }
}

async function expectAuthError(p: Promise<unknown>): Promise<void> {
  try {
    await p;
    assert.unreachable('should fail authentication');
  } catch (e) {
    assert.ok(isGroupcommError(e, 'ERR_GROUPCOMM_AUTH'), String(e));
  }
}

test('a client with the same secret works, its wait connections authenticate too', () => withSecretServer(async (server) => {
  const a = await TcpStore.create({ port: server.port, secret: 'correct horse', timeoutMs: 5000 });
  const b = await TcpStore.create({ port: server.port, secret: Buffer.from('correct horse'), timeoutMs: 5000 });
  const p = a.get('k', { timeoutMs: 5000 });
  await new Promise((r) => setTimeout(r, 30));
  await b.set('k', 'v');
  assert.is(text(await p), 'v');
  await a.close();
  await b.close();
}));

test('a client without the secret gets ERR_GROUPCOMM_AUTH, not a retry loop ending in a timeout', () => withSecretServer(async (server) => {
  await expectAuthError(TcpStore.create({ port: server.port, timeoutMs: 30_000 }));
}));

test('a wrong secret fails with ERR_GROUPCOMM_AUTH', () => withSecretServer(async (server) => {
  await expectAuthError(TcpStore.create({ port: server.port, secret: 'battery staple', timeoutMs: 30_000 }));
}));

test('a client with a secret refuses a server without one', async () => {
  const server = await TcpStoreServer.listen({ port: 0 });
  try {
    await expectAuthError(TcpStore.create({ port: server.port, secret: 's', timeoutMs: 30_000 }));
  } finally {
    await server.close();
  }
});

test('a torch-style client (VALIDATE, PING) gets a wrong echo and a closed connection', () => withSecretServer(async (server) => {
  const r = await Raw.connect(server.port);
  r.write(VALIDATE, ping(4242));
  assert.is.not((await r.read(4)).readUInt32LE(), 4242);
  assert.ok(await r.waitClosed());
  assert.is(server.numKeys, 0);
}));

test('isServer with a secret: the in-process master authenticates to its own server', async () => {
  const s = await TcpStore.create({ port: 0, isServer: true, worldSize: 1, secret: 'x', timeoutMs: 5000 });
  await s.set('a', 'b');
  assert.is(await s.numKeys(), 2);
  await s.close();
});

test.run();
