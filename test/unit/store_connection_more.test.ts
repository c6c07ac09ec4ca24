// More of one store Connection (host/store/connection.ts) over a LocalSocket pair: what the first
// file leaves out — a write that fails or never completes, a socket error, data after a failure,
// a reply too large to buffer, a reply split after another one in the same read, the write plan
// of a lone big frame, the stray write of writeNow, and what a long-lived connection must not
// keep (its reply queue compacted, its watchdog stopped once nothing is pending); and the timers it
// uses: one watchdog at its interval, stopped by close() at once, one flush per synchronous run,
// no delay on the socket; a big value not copied, nor a lone small frame; when the queue is
// compacted.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { constants as bufferConstants } from 'node:buffer';
import type net from 'node:net';
import { Connection, readBytes, readU8 } from '../../host/store/connection.js';
import { logger } from '../../host/base/log.js';
import { LocalSocket } from '../../host/store/local.js';
import { failure } from '../helpers/rejects.js';
import { le64, openPair, tick } from '../helpers/store_connection_pair.js';

const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));
// The watchdog is unref'd and a LocalSocket holds no handle: keep the process up while we wait.
const keepAlive = () => setTimeout(() => {}, 10_000);

test('a write whose callback reports an error fails its reply-less request with PEER_LOST, the error as cause', async () => {
  const o = openPair();
  const boom = new Error('boom');
  o.client.write = (_b: Uint8Array, cb?: (e?: Error | null) => void) => { if (cb) setImmediate(() => cb(boom)); return true; };
  const e = await failure(o.conn.request(Buffer.from([1]), null));
  assert.is(e.code, 'ERR_GROUPCOMM_PEER_LOST');
  assert.match(e.message, /write to store test:1 failed: boom/);
  assert.is((e as { cause?: unknown }).cause, boom);
  o.conn.close();
});

test('a reply-less request whose write never completes times out, and is then no longer in flight', async () => {
  const alive = keepAlive();
  const o = openPair(200);
  o.client.write = () => true; // the kernel never takes it: the callback never comes
  const e = await failure(o.conn.request(Buffer.from([1]), null, 40, 'set', 'k'));
  clearTimeout(alive);
  assert.is(e.code, 'ERR_GROUPCOMM_TIMEOUT');
  assert.is(e.key, 'k');
  assert.match(e.message, /no completed write/);
  assert.not.ok(o.conn.inFlight, 'settled by the watchdog, though its write is still outstanding');
  o.conn.close();
});

test('a request without a name times out as "store request"', async () => {
  const alive = keepAlive();
  const o = openPair(200);
  const e = await failure(o.conn.request(Buffer.from([1]), readU8, 30));
  clearTimeout(alive);
  assert.match(e.message, /^store request timed out after 30ms/);
  o.conn.close();
});

test('a socket error fails the connection at once with PEER_LOST, the error as cause', async () => {
  const o = openPair();
  const closes: string[] = [];
  o.conn.onClose((e) => closes.push(e.code));
  const p = o.conn.request(Buffer.from([1]), readU8);
  const reset = Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' });
  o.client.emit('error', reset); // a LocalSocket does not close on its own after it
  const e = await failure(p);
  assert.is(e.code, 'ERR_GROUPCOMM_PEER_LOST');
  assert.is((e as { cause?: unknown }).cause, reset);
  assert.ok(o.conn.closed);
  assert.equal(closes, ['ERR_GROUPCOMM_PEER_LOST']);
});

test('bytes that reach a failed connection are not parsed: a stream reader hears nothing more', async () => {
  const o = openPair();
  const pushes: number[] = [];
  o.conn.stream((c) => { pushes.push(c.u8()); });
  o.server.write(Buffer.from([1]));
  await tick();
  assert.equal(pushes, [1]);
  o.conn.close();
  o.client.emit('data', Buffer.from([2, 3])); // as a socket may still hand over a read it had
  assert.equal(pushes, [1]);
});

test('bytes nobody asked for: the failure says how many', async () => {
  const o = openPair();
  o.server.write(Buffer.from([9, 9, 9]));
  await tick();
  const e = await failure(o.conn.request(Buffer.from([1]), readU8));
  assert.is(e.code, 'ERR_GROUPCOMM_PROTOCOL');
  assert.match(e.message, /sent 3 bytes nobody asked for/);
});

test('a value of exactly Buffer\'s MAX_LENGTH is waited for; its buffer cannot be made: PROTOCOL, the RangeError as cause, the process unharmed', async () => {
  const o = openPair();
  const p = o.conn.request(Buffer.from([1]), readBytes);
  o.server.write(le64(bufferConstants.MAX_LENGTH)); // declares the value; none of it comes yet
  await tick();
  assert.not.ok(o.conn.closed, 'a length a Buffer can hold is waited for');
  o.server.write(Buffer.from([1, 2, 3]));
  const e = await failure(p);
  assert.is(e.code, 'ERR_GROUPCOMM_PROTOCOL');
  assert.match(e.message, /reply too large to buffer/);
  assert.instance((e as { cause?: unknown }).cause, Error);
  assert.ok(o.conn.closed);
});

test('a reply that starts after another one in the same read and ends in the next read is read', async () => {
  const o = openPair();
  const a = o.conn.request(Buffer.from([1]), readU8);
  const b = o.conn.request(Buffer.from([1]), readBytes);
  const value = Buffer.alloc(100, 7);
  const reply = Buffer.concat([le64(value.length), value]);
  o.server.write(Buffer.concat([Buffer.from([5]), reply.subarray(0, 50)]));
  assert.is(await a, 5);
  o.server.write(reply.subarray(50));
  assert.equal(Buffer.from(await b), value);
  o.conn.close();
});

test('one frame of 256 KiB or more is one write, without the empty write for the callback', async () => {
  const o = openPair();
  await o.conn.request(Buffer.alloc(300_000), null);
  assert.equal(o.writes, [300_000]);
  o.conn.close();
});

test('writeNow writes at once and only once; on a closed connection it writes nothing', async () => {
  const o = openPair();
  o.conn.writeNow(Buffer.alloc(7));
  assert.equal(o.writes, [7], 'before the end of the tick');
  await tick();
  assert.equal(o.writes, [7], 'the flush queued for the tick finds nothing left');
  o.conn.close();
  o.writes.length = 0;
  o.conn.writeNow(Buffer.alloc(3));
  await tick();
  assert.equal(o.writes, [], 'a closed connection writes nothing');
});

test('a long-lived connection: the reply queue is compacted as replies are read, in pipelined batches too', async () => {
  const o = openPair();
  const queue = () => (o.conn as unknown as { queue: unknown[] }).queue.length;
  for (let batch = 0; batch < 4; batch++) {
    const ps = Array.from({ length: 3000 }, () => o.conn.request(Buffer.from([1]), readU8));
    o.server.write(Buffer.alloc(3000, 1));
    await Promise.all(ps);
  }
  // 12000 requests answered: what is kept is what was not compacted yet (under half, ≤ 3000)
  assert.ok(queue() <= 3000, `the queue holds ${queue()} entries after 12000 replies`);
  o.conn.close();
});

test('the watchdog stops once nothing is pending, and starts again for the next request', async () => {
  const alive = keepAlive();
  const o = openPair(40); // checks every 10 ms
  const watchdog = () => (o.conn as unknown as { watchdog?: unknown }).watchdog;
  const a = o.conn.request(Buffer.from([1]), readU8);
  assert.ok(watchdog(), 'armed by a request');
  o.server.write(Buffer.from([1]));
  await a;
  await pause(60);
  assert.is(watchdog(), undefined, 'stopped: nothing pending');
  const b = o.conn.request(Buffer.from([1]), readU8);
  assert.ok(watchdog(), 'armed again');
  assert.is((await failure(b)).code, 'ERR_GROUPCOMM_TIMEOUT');
  await pause(30);
  assert.is(watchdog(), undefined, 'stopped after the timeout settled the only request');
  clearTimeout(alive);
  o.conn.close();
});

// The timers below are spied on through globalThis, as connection.ts calls the globals.
function spyTimers() {
  const real = { setInterval: globalThis.setInterval, clearInterval: globalThis.clearInterval, queueMicrotask: globalThis.queueMicrotask };
  const intervals: { ms: number; handle: unknown }[] = [];
  const cleared: unknown[] = [];
  let microtasks = 0;
  const g = globalThis as unknown as Record<string, unknown>;
  g.setInterval = (fn: () => void, ms: number) => { const handle = real.setInterval(fn, ms); intervals.push({ ms, handle }); return handle; };
  g.clearInterval = (h: unknown) => { cleared.push(h); real.clearInterval(h as ReturnType<typeof setInterval>); };
  g.queueMicrotask = (fn: () => void) => { microtasks++; real.queueMicrotask(fn); };
  const restore = () => Object.assign(globalThis, real);
  return { intervals, cleared, microtasks: () => microtasks, restore };
}

test('one watchdog per connection, armed once for requests made together, checking every quarter of the timeout between 10 ms and 1 s', async () => {
  const t = spyTimers();
  try {
    for (const [timeoutMs, every] of [[200, 50], [8000, 1000], [20, 10]]) {
      const o = openPair(timeoutMs);
      o.conn.request(Buffer.from([1]), readU8).catch(() => {});
      o.conn.request(Buffer.from([1]), null).catch(() => {});
      o.conn.request(Buffer.from([1]), readU8).catch(() => {});
      assert.equal(t.intervals.map((i) => i.ms), [every], `timeout ${timeoutMs} ms`);
      o.conn.close();
      t.intervals.length = 0;
    }
  } finally { t.restore(); }
});

test('close() stops the watchdog at once, not at its next check', () => {
  const t = spyTimers();
  try {
    const o = openPair(200);
    o.conn.request(Buffer.from([1]), readU8).catch(() => {});
    assert.is(t.intervals.length, 1);
    o.conn.close();
    assert.equal(t.cleared, [t.intervals[0].handle]);
  } finally { t.restore(); }
});

test('requests made in one synchronous run share one flush; the next run queues the next', async () => {
  const t = spyTimers();
  try {
    const o = openPair();
    const ps = [o.conn.request(Buffer.from([1]), null), o.conn.request(Buffer.from([2]), null), o.conn.request(Buffer.from([3]), null)];
    assert.is(t.microtasks(), 1, 'one flush queued for three requests');
    await Promise.all(ps);
    const before = t.microtasks();
    const q = o.conn.request(Buffer.from([4]), null);
    assert.is(t.microtasks() - before, 1, 'a request after the flush queues a new one');
    await q;
    assert.equal(o.writes, [3, 1]);
    o.conn.close();
  } finally { t.restore(); }
});

test('the socket is set to no delay: a request is not held back by Nagle', () => {
  const [client] = LocalSocket.pair();
  const calls: unknown[] = [];
  const real = client.setNoDelay.bind(client);
  client.setNoDelay = ((v?: boolean) => { calls.push(v); return real(); }) as typeof client.setNoDelay;
  const conn = new Connection(client as unknown as net.Socket, 'test:1', 1000, logger('STORE'));
  assert.equal(calls, [true]);
  conn.close();
});

test('a big value is a view of the socket\'s own read, not of a copy of it', async () => {
  const o = openPair();
  let chunk: Buffer | undefined;
  o.client.on('data', (d: Buffer) => { chunk = d; }); // after the connection's own listener: the same chunk
  const p = o.conn.request(Buffer.from([1]), readBytes);
  o.server.write(Buffer.concat([le64(8000), Buffer.alloc(8000, 3)]));
  const v = await p;
  assert.is(v.length, 8000);
  assert.ok(chunk && v.buffer === chunk.buffer, 'a socket hands each read over for good: nothing to copy');
  o.conn.close();
});

test('a lone small frame before a big one is written as it is, not copied', async () => {
  const o = openPair();
  const bufs: Uint8Array[] = [];
  const counted = o.client.write;
  o.client.write = (b: Uint8Array, cb?: (e?: Error | null) => void) => { bufs.push(b); return counted(b, cb); };
  const head = Buffer.alloc(10, 1);
  const big = Buffer.alloc(300_000, 2);
  await o.conn.request([head, big], null);
  assert.equal(o.writes, [10, 300_000, 0]);
  assert.ok(bufs[0] === head && bufs[1] === big);
  o.conn.close();
});

test('the reply queue is compacted only past 1024 replies read and once they are more than half of it', async () => {
  const queue = (o: ReturnType<typeof openPair>) => (o.conn as unknown as { queue: unknown[] }).queue.length;
  const answer = async (o: ReturnType<typeof openPair>, ps: Promise<unknown>[], n: number) => {
    o.server.write(Buffer.alloc(n, 1)); // one read
    await Promise.all(ps.slice(0, n));
  };
  const a = openPair();
  const pa = Array.from({ length: 1024 }, () => a.conn.request(Buffer.from([1]), readU8));
  await answer(a, pa, 1024);
  assert.is(queue(a), 1024, 'all 1024 read: not yet');
  a.conn.close();
  const b = openPair();
  const pb = Array.from({ length: 3000 }, () => b.conn.request(Buffer.from([1]), readU8).catch(() => 0));
  await answer(b, pb, 1500);
  assert.is(queue(b), 3000, 'exactly half read: not yet');
  b.server.write(Buffer.from([1]));
  await pb[1500];
  assert.is(queue(b), 1499, 'more than half: the 1501 read are dropped');
  b.conn.close();
});

test.run();
