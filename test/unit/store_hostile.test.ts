// Bad input closes one connection and nothing else: bad handshakes, unknown opcodes, limits
// (checked on the declared length, before any bytes arrive), non-numeric ADD, clients vanishing
// mid-request, and a seeded storm of random and truncated frames from raw sockets.
import { test } from 'uvu';
import { rejectsWith } from '../helpers/rejects.js';
import * as assert from 'uvu/assert';
import { TcpStore, TcpStoreServer } from '../../host/index.js';
import { Raw, VALIDATE, keys, le64, ping, rng, str } from './store_raw.js';

const text = (b: Uint8Array) => Buffer.from(b).toString('utf8');

async function withServer(fn: (server: TcpStoreServer, good: TcpStore) => Promise<void>): Promise<void> {
  const server = await TcpStoreServer.listen({ port: 0 });
  const good = await TcpStore.create({ port: server.port, timeoutMs: 20_000 });
  try {
    await good.set('precious', 'kept');
    await fn(server, good);
    // the well-behaved client and the stored data survived
    assert.is(text(await good.get('precious')), 'kept');
    await good.set('after', 'fine');
    assert.is(text(await good.get('after')), 'fine');
  } finally {
    await good.close();
    await server.close();
  }
}

/** Connects, sends `bytes`, and reports whether the server closed the connection. */
async function closedBy(port: number, ...bytes: Buffer[]): Promise<boolean> {
  const r = await Raw.connect(port);
  r.write(...bytes);
  const closed = await r.waitClosed(10_000); // generous: a loaded machine is slow, a hang is still caught
  r.close();
  return closed;
}

test('a first message other than VALIDATE closes the connection', () => withServer(async (server) => {
  assert.ok(await closedBy(server.port, ping(1)));
  assert.ok(await closedBy(server.port, Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n')));
}));

test('a wrong VALIDATE magic closes the connection', () => withServer(async (server) => {
  assert.ok(await closedBy(server.port, Buffer.from([0x00, 0xde, 0xad, 0xbe, 0xef])));
}));

test('an unknown opcode closes the connection', () => withServer(async (server) => {
  assert.ok(await closedBy(server.port, VALIDATE, Buffer.from([99])));
  assert.ok(await closedBy(server.port, VALIDATE, Buffer.from([0xe1]), Buffer.alloc(32)));
}));

test('a key over maxKeyBytes closes the connection on its declared length alone', () => withServer(async (server) => {
  assert.ok(await closedBy(server.port, VALIDATE, Buffer.from([3]), le64(8193)));
  // exactly at the limit is fine
  const r = await Raw.connect(server.port);
  r.write(VALIDATE, Buffer.from([4]), str('k'.repeat(8192)), le64(1));
  assert.is((await r.read(8)).readBigInt64LE(), 1n);
  r.close();
}));

test('a value over maxValueBytes closes the connection on its declared length alone', () => withServer(async (server) => {
  assert.ok(await closedBy(server.port, VALIDATE, Buffer.from([1]), str('/k'), le64(64 * 1024 * 1024 + 1)));
  assert.ok(await closedBy(server.port, VALIDATE, Buffer.from([1]), str('/k'), le64(2n ** 63n)));
}));

test('limits are options: a 1 KiB value limit', async () => {
  const server = await TcpStoreServer.listen({ port: 0, limits: { maxValueBytes: 1024, maxKeysPerRequest: 4 } });
  try {
    assert.ok(await closedBy(server.port, VALIDATE, Buffer.from([1]), str('/k'), le64(1025)));
    assert.ok(await closedBy(server.port, VALIDATE, Buffer.from([5]), keys('a', 'b', 'c', 'd', 'e')));
    const c = await TcpStore.create({ port: server.port, timeoutMs: 5000 });
    await c.set('ok', Buffer.alloc(1024));
    assert.is((await c.get('ok')).length, 1024);
    // A raw (torch-style) APPEND past the limit closes that connection: APPEND has no reply.
    assert.ok(await closedBy(server.port, VALIDATE, Buffer.from([9]), str('/ok'), str('x')));
    // Our client's append (APPEND_CHECKED) is refused with an error, and its connection stays.
    await rejectsWith(c.append('ok', 'x'), 'ERR_GROUPCOMM_INVALID_ARGUMENT');
    await c.ping();
    assert.is((await c.get('ok')).length, 1024);
    await c.close();
  } finally {
    await server.close();
  }
});

test('a request bigger than maxRequestBytes closes the connection before it is buffered', async () => {
  const server = await TcpStoreServer.listen({ port: 0, limits: { maxValueBytes: 1024, maxRequestBytes: 4096 } });
  try {
    // each value is within maxValueBytes, together they are not
    const pairs = Array.from({ length: 8 }, (_, i) => Buffer.concat([str(`/k${i}`), le64(1000)]));
    const head = Buffer.concat([Buffer.from([11]), le64(8), pairs[0]]);
    assert.ok(await closedBy(server.port, VALIDATE, head, Buffer.alloc(1000), pairs[1], Buffer.alloc(1000), pairs[2], Buffer.alloc(1000),
      pairs[3], Buffer.alloc(1000), pairs[4]));
    assert.is(server.numKeys, 0);
  } finally {
    await server.close();
  }
});

test('a declared length is not an allocation: a 2^40-byte SET holds what arrived, and the partial-request budget closes it', async () => {
  const server = await TcpStoreServer.listen({ port: 0, limits: { maxValueBytes: 2 ** 40, maxRequestBytes: 2 ** 41 }, maxBufferedBytes: 1 << 20 });
  const good = await TcpStore.create({ port: server.port, timeoutMs: 20_000 });
  try {
    const r = await Raw.connect(server.port);
    r.write(VALIDATE, Buffer.from([1]), str('/huge'), le64(2 ** 40), Buffer.alloc(16));
    await new Promise((res) => setTimeout(res, 100));
    r.write(Buffer.alloc(64 * 1024)); // a second read: the buffer grows with what arrived, never to the declared size
    await new Promise((res) => setTimeout(res, 100));
    assert.ok(server.bufferedBytes < 512 * 1024, `${server.bufferedBytes} bytes held for ~64 KiB received`);
    assert.not.ok(r.closed, 'within the budget the connection stays');
    for (let i = 0; i < 20; i++) r.write(Buffer.alloc(64 * 1024)); // 1.3 MiB: over the 1 MiB budget
    assert.ok(await r.waitClosed(5000), 'over the server-wide budget the connection is closed');
    r.close();
    assert.is(server.bufferedBytes, 0);
    await good.set('still', 'here');
    assert.is(text(await good.get('still')), 'here');
  } finally {
    await good.close();
    await server.close();
  }
});

test('a key count over maxKeysPerRequest closes the connection (WAIT, CHECK, MULTI_GET, MULTI_SET)', () => withServer(async (server) => {
  for (const op of [5, 6, 10, 11]) {
    assert.ok(await closedBy(server.port, VALIDATE, Buffer.from([op]), le64(131073)), `opcode ${op}`);
  }
}));

test('ADD on a non-numeric value closes the connection; the value stays', () => withServer(async (server, good) => {
  await good.set('word', 'potato');
  await good.ping();
  assert.ok(await closedBy(server.port, VALIDATE, Buffer.from([4]), str('/word'), le64(1)));
  assert.is(text(await good.get('word')), 'potato');
  // ADD overflowing int64 also closes
  await good.set('huge', '9223372036854775807');
  assert.ok(await closedBy(server.port, VALIDATE, Buffer.from([4]), str('/huge'), le64(1)));
  // so does a value of millions of digits (out of range, decided without parsing them all)
  await good.set('digits', '7'.repeat(4 * 1024 * 1024));
  assert.ok(await closedBy(server.port, VALIDATE, Buffer.from([4]), str('/digits'), le64(1)));
}));

test('a client vanishing mid-request stores nothing and drops its waits', () => withServer(async (server, good) => {
  const half = Buffer.concat([Buffer.from([1]), str('/half'), le64(100), Buffer.from('only part')]);
  const r = await Raw.connect(server.port);
  r.write(VALIDATE, Buffer.from([6]), keys('/w'));
  const r2 = await Raw.connect(server.port);
  r2.write(VALIDATE, half);
  await new Promise((res) => setTimeout(res, 50));
  r.close();
  r2.close();
  await new Promise((res) => setTimeout(res, 50));
  await good.set('w', 'wakes nobody'); // the dropped waiter must not be written to
  assert.not.ok(await good.check(['half']));
  assert.is(server.numConnections, 1);
}));

test('seeded hostile storm: random and truncated frames never crash the server', () => withServer(async (server, good) => {
  const rand = rng(20261125);
  const int = (n: number) => Math.floor(rand() * n);
  const validFrames = [
    () => Buffer.concat([Buffer.from([1]), str(`/h${int(50)}`), str('x'.repeat(int(100)))]),
    () => Buffer.concat([Buffer.from([3]), str(`/h${int(50)}`)]),
    () => Buffer.concat([Buffer.from([4]), str(`/n${int(5)}`), le64(int(10))]),
    () => Buffer.concat([Buffer.from([6]), keys(`/h${int(50)}`)]),
    () => Buffer.concat([Buffer.from([10]), keys('/h1', '/h2')]),
    () => Buffer.concat([Buffer.from([11]), le64(2), str('/a'), str('1'), str('/b'), str('2')]),
    () => Buffer.concat([Buffer.from([2]), str('/c'), str(''), str('z')]),
    () => Buffer.from([12]),
    () => ping(int(1000)),
  ];
  const t0 = Date.now();
  let sessions = 0;
  // Bounded: 120 sessions in batches of 12, well under the file's time budget.
  for (let batch = 0; batch < 10 && Date.now() - t0 < 20_000; batch++) {
    const runs: Promise<void>[] = [];
    for (let i = 0; i < 12; i++) {
      sessions++;
      const parts: Buffer[] = [];
      const kind = int(4);
      if (kind !== 0) parts.push(VALIDATE);
      for (let f = 0, n = 1 + int(6); f < n; f++) {
        if (kind === 1) {
          const b = Buffer.alloc(int(300));
          for (let j = 0; j < b.length; j++) b[j] = int(256);
          parts.push(b);
        } else {
          const frame = validFrames[int(validFrames.length)]();
          // kind 2: valid frames, the last one cut short; kind 3 and 0: valid or random-cut frames
          parts.push(kind === 2 && f === n - 1 ? frame.subarray(0, int(frame.length)) : frame);
          if (kind === 3 && rand() < 0.3) parts.push(Buffer.from([int(256)]));
        }
      }
      runs.push((async () => {
        const r = await Raw.connect(server.port);
        const all = Buffer.concat(parts);
        // deliver in random-sized pieces to exercise the incremental parser
        for (let at = 0; at < all.length;) {
          const n = 1 + int(64);
          r.socket.write(all.subarray(at, at + n));
          at += n;
        }
        await new Promise((res) => setTimeout(res, 20 + int(50)));
        r.close();
      })());
    }
    // the good client keeps working during the storm
    runs.push((async () => {
      for (let i = 0; i < 20; i++) {
        await good.set(`good${i}`, `v${batch}.${i}`);
        assert.is(text(await good.get(`good${i}`)), `v${batch}.${i}`);
      }
    })());
    await Promise.all(runs);
  }
  assert.is(sessions, 120);
  await new Promise((res) => setTimeout(res, 100));
  assert.is(server.numConnections, 1, 'every hostile connection was closed or dropped');
}));

test.run();
