// One client connection (host/store/connection.ts) on its own, over an in-memory LocalSocket pair
// (deterministic delivery): how a tick's requests are written, replies matched to requests in
// order, applied(), the head reader replaced, a push stream, unsent/inFlight, what fails the
// connection (bytes nobody asked for, a reader's error), the watchdog's timeouts, close(), and
// the reply readers (a value handed out as a view or copied).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  keyFields, keySuffix, readBytes, readI64, readManyBytes, readQueuePop, readTryGet, readU8, readWaitGet,
} from '../../host/store/connection.js';
import { destroyedError, GroupcommError } from '../../host/base/errors.js';
import type { Cursor } from '../../host/store/protocol.js';
import { le64, openPair, tick } from '../helpers/store_connection_pair.js';

const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));
const bytes = (v: Buffer) => Buffer.concat([le64(v.length), v]);

const open = openPair;

async function rejection(p: Promise<unknown>): Promise<GroupcommError> {
  try {
    await p;
  } catch (e) {
    assert.instance(e, GroupcommError);
    return e as GroupcommError;
  }
  throw new Error('resolved');
}

test('writes: one per tick for small requests; big frames alone, the small ones between them joined, an empty write last for the callback', async () => {
  const { conn, writes } = open();
  await Promise.all([conn.request(Buffer.alloc(2), null), conn.request(Buffer.alloc(3), null)]);
  assert.equal(writes, [5], 'one tick, one write');
  writes.length = 0;
  await conn.request([Buffer.alloc(100_000), Buffer.alloc(100_000)], null);
  assert.equal(writes, [200_000], 'under 256 KiB in all: joined');
  writes.length = 0;
  await conn.request([Buffer.alloc(131_072), Buffer.alloc(131_072)], null);
  assert.equal(writes, [131_072, 131_072, 0], 'exactly 256 KiB: each big frame as it is');
  writes.length = 0;
  await conn.request([Buffer.alloc(10), Buffer.alloc(65_536), Buffer.alloc(10), Buffer.alloc(20), Buffer.alloc(65_535), Buffer.alloc(200_000)], null);
  assert.equal(writes, [10, 65_536, 65_565, 200_000, 0], '64 KiB is big; the small ones between joined');
  conn.close();
});

test('replies in request order; applied() once a later reply is read; a reply split over reads is read once', async () => {
  const { conn, server } = open();
  assert.is(conn.seq, 1);
  const a = conn.request(Buffer.from([1]), readU8);
  const b = conn.request(Buffer.from([2]), readI64);
  assert.is(conn.seq, 3);
  assert.not.ok(conn.applied(1));
  server.write(Buffer.from([7]));
  assert.is(await a, 7);
  assert.ok(conn.applied(1));
  assert.not.ok(conn.applied(2), 'the second reply is not read yet');
  const v = le64(-5n);
  server.write(v.subarray(0, 3));
  await tick();
  server.write(v.subarray(3));
  assert.is(await b, -5n);
  assert.ok(conn.applied(2));
  conn.close();
});

test('replaceHeadReader: false with nothing queued; otherwise the oldest request gets the new reader', async () => {
  const { conn, server } = open();
  assert.not.ok(conn.replaceHeadReader(readU8));
  const a = conn.request(Buffer.from([1]), readU8);
  const b = conn.request(Buffer.from([2]), readU8);
  assert.ok(conn.replaceHeadReader((c: Cursor) => c.u8() * 100 + c.u8()));
  server.write(Buffer.from([1, 2, 3]));
  assert.is(await a, 102);
  assert.is(await b, 3);
  conn.close();
});

test('stream(): bytes that arrive with no reply expected are pushes; without a stream they fail the connection (PROTOCOL)', async () => {
  const { conn, server } = open();
  const pushes: number[] = [];
  conn.stream((c) => { pushes.push(c.u8()); });
  server.write(Buffer.from([4, 5]));
  await tick();
  assert.equal(pushes, [4, 5]);
  conn.close();
  const o = open();
  const closes: string[] = [];
  o.conn.onClose((e) => closes.push(e.code));
  o.server.write(Buffer.from([9]));
  await tick();
  assert.ok(o.conn.closed);
  assert.equal(closes, ['ERR_GROUPCOMM_PROTOCOL']);
  assert.is((await rejection(o.conn.request(Buffer.from([1]), readU8))).code, 'ERR_GROUPCOMM_PROTOCOL', 'later requests get the failure');
});

test('unsent and inFlight: a request is unsent until handed over, in flight until its reply is read', async () => {
  const { conn, server } = open();
  assert.not.ok(conn.unsent);
  assert.not.ok(conn.inFlight);
  const a = conn.request(Buffer.from([1]), readU8);
  assert.ok(conn.unsent, 'not written yet');
  assert.ok(conn.inFlight);
  await tick();
  assert.ok(conn.unsent, 'handed to the socket, not delivered yet');
  await tick();
  assert.not.ok(conn.unsent, 'delivered');
  assert.ok(conn.inFlight, 'no reply yet');
  server.write(Buffer.from([0]));
  await a;
  assert.not.ok(conn.inFlight);
  const s = conn.request(Buffer.from([1]), null);
  assert.ok(conn.inFlight, 'a reply-less request until its write is done');
  await tick();
  assert.ok(conn.inFlight, 'handed to the socket, not delivered yet');
  await s;
  assert.not.ok(conn.inFlight);
  conn.close();
});

test('a reader\'s GroupcommError fails the connection as it is; any other error becomes PROTOCOL with it as the cause', async () => {
  const mine = destroyedError('mine');
  const { conn, server } = open();
  const p = conn.request(Buffer.from([1]), () => { throw mine; });
  server.write(Buffer.from([0]));
  assert.is(await rejection(p), mine);
  const o = open();
  const boom = new Error('boom');
  const q = o.conn.request(Buffer.from([1]), () => { throw boom; });
  o.server.write(Buffer.from([0]));
  const e = await rejection(q);
  assert.is(e.code, 'ERR_GROUPCOMM_PROTOCOL');
  assert.is((e as { cause?: unknown }).cause, boom);
  const w = open();
  const r = w.conn.request(Buffer.from([1]), readWaitGet(1));
  w.server.write(Buffer.from([1]));
  assert.is((await rejection(r)).code, 'ERR_GROUPCOMM_PROTOCOL', 'a WAIT_GET reply that is not 0');
});

test('watchdog: checked every quarter of the connection\'s timeout, an unanswered request times out naming its keys; its late reply is still consumed', async () => {
  const { conn, server } = open(200);
  const alive = setTimeout(() => {}, 5000); // the watchdog is unref'd and a LocalSocket holds no handle
  const t0 = performance.now();
  const e = await rejection(conn.request(Buffer.from([1]), readU8, 60, 'get', ['a', 'b']));
  clearTimeout(alive);
  assert.is(e.code, 'ERR_GROUPCOMM_TIMEOUT');
  assert.equal(e.keys, ['a', 'b']);
  assert.is(e.timeoutMs, 60);
  assert.ok((e.elapsedMs ?? 0) >= 60 && (e.elapsedMs ?? 0) < 5000, `elapsedMs ${e.elapsedMs}`);
  assert.ok(performance.now() - t0 < 700, `took ${performance.now() - t0} ms`);
  assert.not.ok(conn.inFlight, 'a timed-out request is settled, though its reader stays queued');
  const next = conn.request(Buffer.from([2]), readU8);
  server.write(Buffer.from([1, 2])); // the late reply, then the next one
  assert.is(await next, 2);
  conn.close();
});

test('close(): pending requests of both kinds reject with DESTROYED, listeners hear it once, later requests get it too', async () => {
  const { conn } = open();
  const heard: string[] = [];
  conn.onClose((e) => heard.push(e.code));
  const a = conn.request(Buffer.from([1]), readU8);
  const b = conn.request(Buffer.from([1]), null);
  conn.close();
  conn.close(destroyedError('again'));
  assert.is((await rejection(a)).code, 'ERR_GROUPCOMM_DESTROYED');
  assert.is((await rejection(b)).code, 'ERR_GROUPCOMM_DESTROYED');
  assert.equal(heard, ['ERR_GROUPCOMM_DESTROYED']);
  assert.ok(conn.closed);
  assert.not.ok(conn.inFlight);
  assert.is((await rejection(conn.request(Buffer.from([1]), readU8))).code, 'ERR_GROUPCOMM_DESTROYED');
});

test('readers: a value of 4 KiB or more filling half its read is a view, others are copies; TRY_GET, QUEUE_POP, many values', async () => {
  const { conn, server } = open();
  // 8 + 4096 + 8 + 4080 = 8192 bytes in one read: 2 × 4096 is exactly the read's length
  const a = conn.request(Buffer.from([1]), readBytes);
  const b = conn.request(Buffer.from([1]), readBytes);
  server.write(Buffer.concat([bytes(Buffer.alloc(4096, 1)), bytes(Buffer.alloc(4080, 2))]));
  const va = await a;
  const vb = await b;
  assert.is(va.length, 4096);
  assert.is(va.buffer.byteLength, 8192, 'a view of the read');
  assert.is(vb.buffer.byteLength, 4080, 'under 4 KiB: a copy');
  const c = conn.request(Buffer.from([1]), readBytes);
  server.write(Buffer.concat([bytes(Buffer.alloc(4095, 3))]));
  assert.is((await c).buffer.byteLength, 4095, '4095 bytes: a copy');
  // 4 KiB in a read of 8 + 4096 + 8 + 4200 bytes: less than half of it, copied; the 4200 over half
  const c1 = conn.request(Buffer.from([1]), readBytes);
  const c2 = conn.request(Buffer.from([1]), readBytes);
  server.write(Buffer.concat([bytes(Buffer.alloc(4096, 4)), bytes(Buffer.alloc(4200, 5))]));
  assert.is((await c1).buffer.byteLength, 4096, 'under half the read: a copy');
  assert.is((await c2).buffer.byteLength, 8312, 'over half the read: a view');
  const d = conn.request(Buffer.from([1]), readTryGet);
  const e = conn.request(Buffer.from([1]), readTryGet);
  const f = conn.request(Buffer.from([1]), readQueuePop);
  const g = conn.request(Buffer.from([1]), readQueuePop);
  const h = conn.request(Buffer.from([1]), readManyBytes(2));
  server.write(Buffer.concat([
    Buffer.from([0]), Buffer.from([1]), bytes(Buffer.from('x')), le64(0), le64(2), bytes(Buffer.from('q')),
    bytes(Buffer.from('m')), bytes(Buffer.from('n')),
  ]));
  assert.is(await d, undefined);
  assert.equal(Buffer.from((await e)!).toString(), 'x');
  assert.is(await f, undefined);
  assert.equal(Buffer.from((await g)!).toString(), 'q');
  assert.equal((await h).map((v) => Buffer.from(v).toString()), ['m', 'n']);
  const big = conn.request(Buffer.from([1]), readBytes);
  server.write(le64(2n ** 52n));
  assert.is((await rejection(big)).code, 'ERR_GROUPCOMM_PROTOCOL', 'a length no Buffer can hold');
});

test('keyFields and keySuffix', () => {
  assert.equal(keyFields(undefined), {});
  assert.equal(keyFields('k'), { key: 'k' });
  assert.equal(keyFields(['a', 'b']), { keys: ['a', 'b'] });
  assert.is(keySuffix(undefined), '');
  assert.is(keySuffix('k'), ', key: k');
  assert.is(keySuffix(['a', 'b']), ', keys: a, b');
});

test.run();
