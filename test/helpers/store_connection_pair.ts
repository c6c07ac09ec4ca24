// A store Connection (host/store/connection.ts) on one end of an in-memory LocalSocket pair, for
// the tests that drive it byte by byte (store_connection, store_connection_more).
import type net from 'node:net';
import { Connection } from '../../host/store/connection.js';
import { logger } from '../../host/base/log.js';
import { LocalSocket } from '../../host/store/local.js';

type WriteCallback = (err?: Error | null) => void;

/**
 * `server` is the other end; `writes` the size of every write the connection made; `client` the
 * connection's own socket; `write(b, cb)` the socket's real write, for a test that replaces it.
 */
export function openPair(timeoutMs = 10_000) {
  const [client, server] = LocalSocket.pair();
  const writes: number[] = [];
  const write = client.write.bind(client);
  client.write = (b: Uint8Array, cb?: WriteCallback) => { writes.push(b.length); return write(b, cb); };
  const got: Buffer[] = [];
  server.on('data', (d: Buffer) => got.push(d));
  const conn = new Connection(client as unknown as net.Socket, 'test:1', timeoutMs, logger('STORE'));
  return { conn, client, server, writes, got, write };
}

export const le64 = (n: number | bigint) => { const b = Buffer.alloc(8); b.writeBigUInt64LE(BigInt.asUintN(64, BigInt(n))); return b; };
export const tick = () => new Promise<void>((r) => setImmediate(r));
