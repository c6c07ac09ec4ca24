// TcpStore's lifecycle (host/store/client_base.ts) and the server close() it ends with.
import net from 'node:net';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { TcpStoreServer } from '../../host/index.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** True when `p` settles within `ms`. */
async function within(p: Promise<unknown>, ms: number): Promise<boolean> {
  let t: NodeJS.Timeout | undefined;
  const late = new Promise<false>((r) => { t = setTimeout(() => r(false), ms); });
  const r = await Promise.race([p.then(() => true, () => true), late]);
  clearTimeout(t);
  return r;
}

/** A raw client that never ends its side (allowHalfOpen): only the server can close it. */
async function halfOpen(port: number): Promise<net.Socket> {
  const socket = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
  socket.on('error', () => {});
  await new Promise((r) => socket.once('connect', r));
  return socket;
}

async function connections(server: TcpStoreServer, n: number): Promise<void> {
  for (let t0 = Date.now(); server.numConnections !== n && Date.now() - t0 < 3000;) await sleep(10);
  assert.is(server.numConnections, n);
}

test('TcpStoreServer.close({ signal }) with a signal aborted already cuts the half-open clients at once', async () => {
  const server = await TcpStoreServer.listen({ port: 0 });
  const c = await halfOpen(server.port);
  try {
    await connections(server, 1);
    assert.ok(await within(server.close({ signal: AbortSignal.abort(), timeoutMs: 60_000 }), 3000), 'not held by the client');
  } finally {
    c.destroy();
    await server.abort();
  }
});

test.run();
