// The server's read loop (server.ts onData, account) at its edges, from raw sockets: each request
// parsed once (a SET waited for by its length, others on their declared length, nothing parsed
// past the end of a read), a SET's length not waited for where a SET is not allowed (before the
// handshake, on a subscription), the limits at their exact values, a subscriber that closes the
// server mid-request, and a request that throws or cannot be buffered closing its connection
// only, with the reason logged.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { TcpStoreServer } from '../../host/index.js';
import { Inbox } from '../../host/store/protocol.js';
import { Raw, VALIDATE, keys, le64, ping, str, sync, withServer } from './store_raw.js';
import { capture, warned } from '../helpers/capture.js';

const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));
const op = (n: number) => Buffer.from([n]);
const SET = 1, GET = 3, WAIT_GET = 0xe4, SUBSCRIBE = 0xe6;
const set = (k: string, v: string | Buffer) => Buffer.concat([op(SET), str(k), str(v)]);


/** Counts the server's handle() calls (one per parse of a request, finished or not). */
function countHandles(server: TcpStoreServer): () => number {
  const s = server as unknown as { handle: (...a: unknown[]) => void };
  const handle = s.handle;
  let n = 0;
  s.handle = function (this: unknown, ...a: unknown[]) { n++; return handle.apply(this, a); };
  return () => n;
}

async function connect(port: number): Promise<Raw> {
  const r = await Raw.connect(port);
  r.socket.setNoDelay(true);
  return r;
}

test('each request is parsed once: none past the end of a read, a split request once it is complete, a SET waited for by its length', () => withServer(async (server) => {
  const calls = countHandles(server);
  const r = await connect(server.port);
  r.write(VALIDATE, ping(1));
  await r.read(4);
  assert.is(calls(), 2, 'VALIDATE and PING in one read: two parses, none after the last');
  // A GET of a 6000-byte key in five reads: parsed when it starts (its length learnt), then not
  // again until the read that completes it.
  const get = Buffer.concat([op(GET), str('k'.repeat(6000))]);
  for (let at = 0; at < get.length; at += 1300) {
    r.write(get.subarray(at, Math.min(get.length, at + 1300)));
    await pause(30);
  }
  assert.is((await r.read(8)).readBigUInt64LE(), 0n, 'the missing key answered (empty)');
  assert.ok(calls() - 2 <= 2, `the split GET parsed ${calls() - 2} times (at most: when it starts, when it is complete)`);
  // A SET whose header came whole: not parsed until its value is all here.
  const value = Buffer.alloc(20_000, 5);
  const s = set('/v', value);
  const before = calls();
  for (let at = 0; at < s.length; at += 4100) {
    r.write(s.subarray(at, Math.min(s.length, at + 4100)));
    await pause(30);
  }
  await sync(r);
  assert.is(calls() - before, 2, 'the SET parsed once, then the PING');
  // A SET behind other requests in the same read, a few bytes short: waited for, not parsed.
  const s2 = set('/w', 'x'.repeat(40));
  const before2 = calls();
  r.write(ping(2), ping(3), s2.subarray(0, s2.length - 8));
  await r.read(8);
  await pause(30);
  r.write(s2.subarray(s2.length - 8));
  await sync(r);
  assert.is(calls() - before2, 4, 'two PINGs, the SET once, the last PING');
  assert.is(server.numKeys, 2);
  r.close();
}));

test('an incomplete SET before the handshake, or on a subscription, closes the connection at once (not when its value arrives)', () => withServer(async (server) => {
  const head = Buffer.concat([op(SET), str('/k'), le64(1000), Buffer.alloc(10)]);
  const early = await connect(server.port);
  early.write(head);
  assert.ok(await early.waitClosed(3000), 'a SET as the first message');
  early.close();
  const sub = await connect(server.port);
  sub.write(VALIDATE, op(SUBSCRIBE), str('p/'));
  assert.is((await sub.read(1))[0], 0, 'subscribed');
  sub.write(head);
  assert.ok(await sub.waitClosed(3000), 'a SET on a subscription connection');
  sub.close();
}, { subscribePrefixes: 'any', handshakeTimeoutMs: 60_000 }));

test('maxRequestBytes: a SET of exactly that many bytes is applied; one byte more closes the connection, logged', async () => {
  const { log, warnings } = capture();
  await withServer(async (server) => {
    const ok = set('k', Buffer.alloc(4096 - 18, 1)); // 1 + 8 + 1 + 8 + value
    assert.is(ok.length, 4096);
    const r = await connect(server.port);
    r.write(VALIDATE, ok.subarray(0, 100));
    await pause(30);
    r.write(ok.subarray(100), op(GET), str('k'));
    assert.is((await r.read(8)).readBigUInt64LE(), 4078n, 'applied, and its value read back');
    const over = await connect(server.port);
    over.write(VALIDATE, op(SET), str('k'), le64(4079), Buffer.alloc(50));
    assert.ok(await over.waitClosed(3000), 'closed');
    warned(warnings, 'request of at least 4097 bytes exceeds maxRequestBytes 4096');
    r.close();
    over.close();
  }, { logger: log, limits: { maxValueBytes: 16_384, maxRequestBytes: 4096 } });
});

test('maxBufferedBytes: exactly that many bytes of partial requests are held; one byte more closes the connection, logged', async () => {
  const { log, warnings } = capture();
  await withServer(async (server) => {
    // VALIDATE, then a SET header declaring 1000 bytes and part of its value: 200 bytes, one read
    const head = Buffer.concat([op(SET), str('/k'), le64(1000)]);
    const partial = (n: number) => Buffer.concat([VALIDATE, head, Buffer.alloc(n - VALIDATE.length - head.length)]);
    const r = await connect(server.port);
    r.write(partial(200));
    await pause(200);
    assert.not.ok(r.closed, 'at the budget: kept');
    assert.is(server.bufferedBytes, 195, 'the SET\'s part held (VALIDATE parsed)');
    r.close();
    for (let t0 = Date.now(); server.bufferedBytes !== 0 && Date.now() - t0 < 3000;) await pause(10);
    assert.is(server.bufferedBytes, 0);
    const over = await connect(server.port);
    over.write(partial(201));
    assert.ok(await over.waitClosed(3000), 'over the budget: closed');
    warned(warnings, 'partial requests of all clients exceed 200 bytes');
    over.close();
  }, { logger: log, maxBufferedBytes: 200 });
});

test('an in-process subscriber that closes the server mid-request: the requests behind it in the same read are not handled', () => withServer(async (server) => {
  let closing: Promise<void> | undefined;
  server.subscribeLocal('g/to/0/', () => { closing = server.close(); }, () => {});
  const r = await connect(server.port);
  r.write(VALIDATE, set('g/to/0/x', '1'), set('/after', '2'), set('/more', '3'));
  assert.ok(await r.waitClosed(3000), 'closed by the server\'s close');
  await closing;
  assert.is(server.numKeys, 0, 'the SETs behind the one that closed the server were not applied');
  assert.is(server.bufferedBytes, 0, 'nothing counted for the closed connection');
  r.close();
}));

test('a request that throws (an internal error) closes its connection, logged; the consuming reads it completed are applied', async () => {
  const { log, warnings } = capture();
  await withServer(async (server) => {
    // A throwing watcher of the key stands for any unexpected exception inside a request.
    const table = (server as unknown as { table: { watch(k: string, fn: () => void): () => void } }).table;
    const unwatch = table.watch('/t', () => { throw new Error('boom'); });
    const waiter = await connect(server.port);
    waiter.write(VALIDATE, op(WAIT_GET), op(1), keys('/t'));
    await sync(waiter);
    const writer = await connect(server.port);
    writer.write(VALIDATE, set('/t', 'v'));
    assert.ok((await waiter.read(10)).equals(Buffer.concat([op(0), str('v')])), 'the waiter got the value');
    assert.ok(await writer.waitClosed(3000), 'the writer\'s connection closed');
    assert.is(server.numKeys, 0, 'the consuming WAIT_GET deleted its key');
    warned(warnings, 'internal error: Error: boom');
    await sync(waiter);
    unwatch();
    waiter.close();
    writer.close();
  }, { logger: log });
});

test('a read that cannot be buffered (out of memory) closes that connection only, logged', async () => {
  const { log, warnings } = capture();
  const push = Inbox.prototype.push;
  const MARK = Buffer.from('no-memory-for-this-read');
  Inbox.prototype.push = function (this: Inbox, chunk: Buffer, transient?: boolean) {
    if (chunk.includes(MARK)) throw new RangeError('Array buffer allocation failed');
    return push.call(this, chunk, transient);
  };
  try {
    await withServer(async (server) => {
      const good = await connect(server.port);
      good.write(VALIDATE);
      await sync(good);
      const bad = await connect(server.port);
      bad.write(VALIDATE, set('/k', MARK));
      assert.ok(await bad.waitClosed(3000), 'closed');
      warned(warnings, 'cannot buffer its request: Array buffer allocation failed');
      await sync(good);
      assert.is(server.numKeys, 0);
      bad.close();
      good.close();
    }, { logger: log });
  } finally {
    Inbox.prototype.push = push;
  }
});

test.run();
