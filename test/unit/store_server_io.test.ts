// The server's read and write paths at the byte level, from raw sockets: a request stream cut at
// every byte boundary, big SETs arriving over many reads (waited for by length, server_parse.ts
// setLength), pipelined requests answered in order, replies to many connections from one write
// (the flush list, server_reply.ts), and a bad frame closing its own connection only.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { TcpStoreServer } from '../../host/index.js';
import { Raw, VALIDATE, keys, le64, str, withServer } from './store_raw.js';

const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));
const op = (n: number) => Buffer.from([n]);
const SET = 1, GET = 3, ADD = 4, WAIT = 6, MULTI_GET = 10;

function set(k: string, v: string | Buffer): Buffer {
  return Buffer.concat([op(SET), str(k), str(v)]);
}
function get(k: string): Buffer {
  return Buffer.concat([op(GET), str(k)]);
}
function add(k: string, n: number): Buffer {
  return Buffer.concat([op(ADD), str(k), le64(n)]);
}

/** Connects with Nagle off, so each write leaves as its own segment (the server's own read). */
async function connect(port: number): Promise<Raw> {
  const r = await Raw.connect(port);
  r.socket.setNoDelay(true);
  return r;
}

test('a request stream cut at every byte boundary gets the same replies, each request applied once', () => withServer(async (server) => {
  // 300 B: a value kept as a buffer, not a string (table.ts SMALL_VALUE_BYTES)
  const big = Buffer.alloc(300, 7);
  const stream = Buffer.concat([
    VALIDATE, set('a', 'x'.repeat(16)), get('a'), set('c', '10'), add('c', 5), set('b', big), get('b'),
    op(MULTI_GET), keys('a', 'c'),
  ]);
  const want = Buffer.concat([str('x'.repeat(16)), le64(15), str(big), str('x'.repeat(16)), str('15')]);
  for (let cut = 1; cut < stream.length; cut++) {
    const r = await connect(server.port);
    r.write(stream.subarray(0, cut));
    await pause(1);
    r.write(stream.subarray(cut));
    const got = await r.read(want.length);
    assert.ok(got.equals(want), `cut at byte ${cut}`);
    await pause(5);
    assert.is(r.pending, 0, `nothing more at cut ${cut}`);
    r.close();
  }
}));

test('a big SET arriving over many reads is applied as its last byte arrives, once, and the requests behind it are answered', () => withServer(async (server) => {
  const value = Buffer.alloc(1024 * 1024);
  for (let i = 0; i < value.length; i++) value[i] = (i * 31) & 0xff;
  const r = await connect(server.port);
  const watcher = await connect(server.port);
  watcher.write(VALIDATE, op(WAIT), keys('big'));
  // Header cut inside the key length, then the value in 64 KiB pieces; nothing after it, so
  // the SET must be applied on its own last byte (the watcher sees it), not on a later read.
  const stream = Buffer.concat([VALIDATE, set('big', value)]);
  r.write(stream.subarray(0, 9));
  await pause(2);
  for (let at = 9; at < stream.length; at += 65536) {
    r.write(stream.subarray(at, Math.min(stream.length, at + 65536)));
    await pause(1);
  }
  assert.is((await watcher.read(1, 20_000))[0], 0, 'STOP_WAITING once the value is complete');
  assert.is(server.bufferedBytes, 0, 'nothing left buffered');
  // two requests in one write with the tail of another big SET
  const again = Buffer.concat([set('big2', value), get('big'), add('n', 1)]);
  r.write(again.subarray(0, 70_000));
  await pause(2);
  r.write(again.subarray(70_000));
  const got = await r.read(8 + value.length + 8, 20_000);
  assert.is(Number(got.readBigUInt64LE(0)), value.length);
  assert.ok(got.subarray(8, 8 + value.length).equals(value), 'value intact');
  assert.is(got.readBigInt64LE(8 + value.length), 1n, 'ADD behind the value applied once');
  assert.is(server.numKeys, 3);
  r.close();
  watcher.close();
}));

test('pipelined requests in one write are answered in order', () => withServer(async (server) => {
  const r = await connect(server.port);
  const reqs: Buffer[] = [VALIDATE];
  const want: Buffer[] = [];
  for (let i = 0; i < 300; i++) {
    const v = i % 3 === 0 ? Buffer.alloc(20_000, i & 0xff) : Buffer.from(`v${i}`);
    reqs.push(set(`k${i}`, v), get(`k${i}`), add('count', 1));
    want.push(str(v), le64(i + 1));
  }
  r.write(...reqs);
  const all = Buffer.concat(want);
  assert.ok((await r.read(all.length, 20_000)).equals(all));
  r.close();
}));

test('one SET wakes waiters on many connections: each gets its answer', () => withServer(async (server) => {
  const waiters = await Promise.all(Array.from({ length: 5 }, () => connect(server.port)));
  for (const w of waiters) w.write(VALIDATE, op(WAIT), keys('go'));
  await pause(50);
  for (const w of waiters) assert.is(w.pending, 0, 'still waiting');
  const setter = await connect(server.port);
  setter.write(VALIDATE, set('go', '1'), get('go'));
  assert.is((await setter.read(9)).subarray(8).toString(), '1');
  for (const w of waiters) assert.is((await w.read(1))[0], 0, 'STOP_WAITING');
  for (const w of [...waiters, setter]) w.close();
}));

test('a bad frame closes its own connection; another mid-way through a big SET completes it', () => withServer(async (server) => {
  const value = Buffer.alloc(200_000, 3);
  const slow = await connect(server.port);
  const stream = Buffer.concat([VALIDATE, set('slow', value), get('slow')]);
  slow.write(stream.subarray(0, 100_000));
  await pause(20);
  // a SET whose declared value is over maxValueBytes, its header complete
  const bad = await connect(server.port);
  bad.write(VALIDATE, op(SET), str('k'), le64(64 * 1024 * 1024 + 1));
  assert.ok(await bad.waitClosed(10_000), 'the bad connection is closed');
  slow.write(stream.subarray(100_000));
  const got = await slow.read(8 + value.length);
  assert.ok(got.subarray(8).equals(value));
  assert.not.ok(slow.closed);
  slow.close();
}));

test('a SET bigger than maxRequestBytes closes the connection before its value arrives', () => withServer(async (server) => {
  const r = await connect(server.port);
  // header of a 10 000-byte value (under maxValueBytes, over maxRequestBytes) and a few bytes
  r.write(VALIDATE, op(SET), str('k'), le64(10_000), Buffer.alloc(100));
  assert.ok(await r.waitClosed(10_000));
  assert.is(server.bufferedBytes, 0);
}, { limits: { maxValueBytes: 16_384, maxRequestBytes: 4096 } }));

test.run();
