// Byte-level checks of every request and reply frame against the documented layout
// (docs/store.md, "Wire format"): raw sockets against our server, and our client
// against a scripted fake server that plays torch's part byte by byte.
import net from 'node:net';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { TcpStore, TcpStoreServer } from '../../host/index.js';
import { Raw, VALIDATE, keys, le64, ping, str } from './store_raw.js';

const hex = (b: Buffer) => b.toString('hex');

async function withRaw(fn: (r: Raw, server: TcpStoreServer) => Promise<void>): Promise<void> {
  const server = await TcpStoreServer.listen({ port: 0 });
  const r = await Raw.connect(server.port);
  try {
    r.write(VALIDATE);
    await fn(r, server);
  } finally {
    r.close();
    await server.close();
  }
}

/** Sends a PING and checks that its echo is the very next thing on the wire. */
async function sync(r: Raw, nonce = 0x01020304): Promise<void> {
  r.write(ping(nonce));
  assert.is(hex(await r.read(4)), hex(ping(nonce).subarray(1)));
}

test('server: PING (0x0d + u32) is echoed byte for byte', () => withRaw(async (r) => {
  r.write(ping(12345));
  assert.is(hex(await r.read(4)), '39300000');
}));

test('server: SET has no reply; GET answers u64 length + bytes', () => withRaw(async (r, server) => {
  // torch's store.set("key0", b"value0") is 28 bytes on the wire
  const set = Buffer.concat([Buffer.from([1]), str('/key0'), str('value0')]);
  assert.is(set.length, 28);
  r.write(set);
  await sync(r);
  assert.is(server.numKeys, 1);
  r.write(Buffer.from([3]), str('/key0'));
  assert.is(hex(await r.read(14)), '0600000000000000' + Buffer.from('value0').toString('hex'));
}));

test('server: GET of a missing key answers an empty value (torch libuv behaviour)', () => withRaw(async (r) => {
  r.write(Buffer.from([3]), str('/nope'));
  assert.is(hex(await r.read(8)), '0000000000000000');
  await sync(r);
}));

test('server: ADD answers i64 and keeps decimal text', () => withRaw(async (r) => {
  r.write(Buffer.from([4]), str('/cnt'), le64(5));
  assert.is(hex(await r.read(8)), hex(le64(5)));
  r.write(Buffer.from([4]), str('/cnt'), le64(-7));
  assert.is((await r.read(8)).readBigInt64LE(), -2n);
  r.write(Buffer.from([3]), str('/cnt'));
  assert.is((await r.read(10)).subarray(8).toString(), '-2');
}));

test('server: COMPARE_SET answers bytes in all four cases', () => withRaw(async (r) => {
  const cas = (e: string, d: string) => r.write(Buffer.from([2]), str('/c'), str(e), str(d));
  const value = async () => { const n = Number((await r.read(8)).readBigUInt64LE()); return (await r.read(n)).toString(); };
  cas('exp', 'x');
  assert.is(await value(), 'exp');
  cas('', 'one');
  assert.is(await value(), 'one');
  cas('zzz', 'two');
  assert.is(await value(), 'one');
  cas('one', 'two');
  assert.is(await value(), 'two');
}));

test('server: CHECK answers 00 READY / 01 NOT_READY', () => withRaw(async (r) => {
  r.write(Buffer.from([1]), str('/a'), str('1'));
  r.write(Buffer.from([5]), keys('/a'));
  assert.is(hex(await r.read(1)), '00');
  r.write(Buffer.from([5]), keys('/a', '/b'));
  assert.is(hex(await r.read(1)), '01');
}));

test('server: WAIT answers 00 at once or when another connection sets the keys', () => withRaw(async (r, server) => {
  r.write(Buffer.from([1]), str('/a'), str('1'));
  r.write(Buffer.from([6]), keys('/a'));
  assert.is(hex(await r.read(1)), '00');
  r.write(Buffer.from([6]), keys('/x', '/y'));
  const other = await Raw.connect(server.port);
  try {
    other.write(VALIDATE, Buffer.from([1]), str('/x'), str('1'));
    await sync(other);
    await new Promise((res) => setTimeout(res, 50));
    assert.is(r.pending, 0, 'one of two keys must not wake the waiter');
    other.write(Buffer.from([4]), str('/y'), le64(1));
    await other.read(8);
    assert.is(hex(await r.read(1)), '00');
  } finally {
    other.close();
  }
}));

test('server: WAIT counting — a key deleted after it was counted still counts', () => withRaw(async (r, server) => {
  r.write(Buffer.from([6]), keys('/a', '/b'));
  const other = await Raw.connect(server.port);
  try {
    other.write(VALIDATE, Buffer.from([1]), str('/a'), str('1'), Buffer.from([8]), str('/a'));
    await other.read(8);
    other.write(Buffer.from([1]), str('/b'), str('2'));
    assert.is(hex(await r.read(1)), '00');
  } finally {
    other.close();
  }
}));

test('server: a COMPARE_SET that stores nothing wakes no waiter', () => withRaw(async (r, server) => {
  r.write(Buffer.from([6]), keys('/c'));
  const other = await Raw.connect(server.port);
  try {
    other.write(VALIDATE, Buffer.from([2]), str('/c'), str('expected'), str('new'));
    assert.is((await other.read(16)).subarray(8).toString(), 'expected');
    await sync(other);
    await new Promise((res) => setTimeout(res, 50));
    assert.is(r.pending, 0);
    other.write(Buffer.from([2]), str('/c'), str(''), str('new'));
    await other.read(11);
    assert.is(hex(await r.read(1)), '00');
  } finally {
    other.close();
  }
}));

test('server: a QUEUE_PUSH wakes one waiter, not all', () => withRaw(async (r, server) => {
  const r2 = await Raw.connect(server.port);
  try {
    r2.write(VALIDATE, Buffer.from([6]), keys('/q'));
    r.write(Buffer.from([6]), keys('/q'));
    await sync(r2);
    await sync(r);
    const pusher = await Raw.connect(server.port);
    pusher.write(VALIDATE, Buffer.from([14]), str('/q'), str('v'));
    await sync(pusher);
    await new Promise((res) => setTimeout(res, 50));
    assert.is(r.pending + r2.pending, 1, 'exactly one waiter woken');
    pusher.write(Buffer.from([14]), str('/q'), str('w'));
    await sync(pusher);
    assert.is(hex(await (r.pending ? r2 : r).read(1)), '00');
    pusher.close();
  } finally {
    r2.close();
  }
}));

test('server: CANCEL_WAIT answers 01 and clears the wait', () => withRaw(async (r, server) => {
  r.write(Buffer.from([6]), keys('/never'));
  r.write(Buffer.from([12]));
  assert.is(hex(await r.read(1)), '01');
  const other = await TcpStore.create({ port: server.port, timeoutMs: 5000 });
  await other.set('never', 'now');
  await other.ping();
  await other.close();
  await sync(r); // no late STOP_WAITING arrived before the echo
  r.write(Buffer.from([12]));
  assert.is(hex(await r.read(1)), '01');
}));

test('server: GETNUMKEYS and DELETE_KEY answer i64', () => withRaw(async (r) => {
  r.write(Buffer.from([1]), str('/a'), str('1'), Buffer.from([1]), str('/b'), str('2'));
  r.write(Buffer.from([7]));
  assert.is((await r.read(8)).readBigInt64LE(), 2n);
  r.write(Buffer.from([8]), str('/a'));
  assert.is(hex(await r.read(8)), hex(le64(1)));
  r.write(Buffer.from([8]), str('/a'));
  assert.is(hex(await r.read(8)), hex(le64(0)));
}));

test('server: APPEND and MULTI_SET have no reply; MULTI_GET answers n values in order', () => withRaw(async (r) => {
  r.write(Buffer.from([9]), str('/p'), str('po'), Buffer.from([9]), str('/p'), str('tato'));
  r.write(Buffer.from([11]), le64(2), str('/m1'), str('v1'), str('/m2'), str('value2'));
  await sync(r);
  r.write(Buffer.from([10]), keys('/p', '/m2', '/m1', '/missing'));
  const want = Buffer.concat([str('potato'), str('value2'), str('v1'), str('')]);
  assert.is(hex(await r.read(want.length)), hex(want));
}));

test('server: QUEUE_PUSH has no reply; QUEUE_POP answers the length before + value; QUEUE_LEN i64', () => withRaw(async (r) => {
  r.write(Buffer.from([14]), str('/q'), str('1'), Buffer.from([14]), str('/q'), str('22'));
  r.write(Buffer.from([16]), str('/q'));
  assert.is(hex(await r.read(8)), hex(le64(2)));
  r.write(Buffer.from([15]), str('/q'));
  assert.is(hex(await r.read(17)), hex(Buffer.concat([le64(2), str('1')])));
  r.write(Buffer.from([15]), str('/q'), Buffer.from([15]), str('/q'));
  assert.is(hex(await r.read(18 + 8)), hex(Buffer.concat([le64(1), str('22'), le64(0)])));
}));

test('server: a request arriving one byte at a time is applied exactly once', () => withRaw(async (r) => {
  const add = Buffer.concat([Buffer.from([4]), str('/slow'), le64(3)]);
  for (const b of add) {
    r.socket.write(Buffer.from([b]));
    await new Promise((res) => setTimeout(res, 2));
  }
  assert.is((await r.read(8)).readBigInt64LE(), 3n);
  await sync(r);
}));

test('server: a SET split between key and value (torch _splitSet) is reassembled', () => withRaw(async (r) => {
  const key = '/default_pg/0//b7dc24de75e482ba2ceb9f9ee20732c25c0166d8//cuda//1';
  r.write(Buffer.from([1]), str(key));
  await new Promise((res) => setTimeout(res, 100));
  r.write(str('split value'));
  r.write(Buffer.from([3]), str(key));
  assert.is((await r.read(8 + 11)).subarray(8).toString(), 'split value');
}));

test('server: many requests in one write get their replies in order', () => withRaw(async (r) => {
  const parts: Buffer[] = [];
  for (let i = 0; i < 200; i++) parts.push(Buffer.from([4]), str('/n'), le64(1));
  parts.push(ping(7));
  r.write(...parts);
  for (let i = 1; i <= 200; i++) assert.is((await r.read(8)).readBigInt64LE(), BigInt(i));
  assert.is((await r.read(4)).readUInt32LE(), 7);
}));

test('server: replies mixing big and small values, and requests sent in separate segments, come back whole and in order', () => withRaw(async (r) => {
  // Big replies are written as they are next to the small ones batched around them (flush);
  // segments read in one turn are answered together: the bytes must be exactly the replies.
  const big1 = Buffer.alloc(20 * 1024, 0xa1);
  const big2 = Buffer.alloc(70 * 1024, 0xb2);
  r.write(Buffer.from([1]), str('/b1'), str(big1), Buffer.from([1]), str('/b2'), str(big2), Buffer.from([1]), str('/s'), str('small'));
  await sync(r);
  const segments = [
    Buffer.concat([Buffer.from([10]), keys('/s', '/b1', '/s', '/s', '/b2', '/missing', '/b1', '/b2')]),
    Buffer.concat([Buffer.from([3]), str('/b2')]),
    Buffer.concat([Buffer.from([4]), str('/n'), le64(5)]),
    Buffer.concat([Buffer.from([3]), str('/s')]),
    ping(9),
  ];
  for (const seg of segments) r.socket.write(seg);
  const want = Buffer.concat([
    str('small'), str(big1), str('small'), str('small'), str(big2), str(''), str(big1), str(big2),
    str(big2), le64(5), str('small'), ping(9).subarray(1),
  ]);
  assert.ok((await r.read(want.length)).equals(want));
  await sync(r);
}));

test('server: CHECK of the extension probe key is READY without storing it; TRY_GET and JOIN_RANK frames', () => withRaw(async (r, server) => {
  r.write(Buffer.from([5]), keys('\u0000groupcomm/ext/1'));
  assert.is(hex(await r.read(1)), '00');
  assert.is(server.numKeys, 0);
  r.write(Buffer.from([0xe0]), str('/t'));
  assert.is(hex(await r.read(1)), '00');
  r.write(Buffer.from([1]), str('/t'), str('xy'), Buffer.from([0xe0]), str('/t'));
  assert.is(hex(await r.read(11)), '01' + hex(str('xy')));
  // JOIN_RANK (0xe3, i64 rank) has no reply
  r.write(Buffer.from([0xe3]), le64(3));
  await sync(r);
}));

test('server: WAIT_GET (0xe4, u8 flags, key list) answers u8 0 + values once every key exists', () => withRaw(async (r, server) => {
  const w = await Raw.connect(server.port);
  try {
    w.write(VALIDATE);
    // both present already: answered at once
    r.write(Buffer.from([1]), str('/a'), str('A'), Buffer.from([1]), str('/b'), str('bb'));
    await sync(r);
    w.write(Buffer.from([0xe4, 0]), keys('/a', '/b'));
    assert.is(hex(await w.read(1 + 9 + 10)), '00' + hex(str('A')) + hex(str('bb')));
    // one missing: nothing until it is written, then the values in request order
    w.write(Buffer.from([0xe4, 0]), keys('/a', '/c'));
    await sync(w, 9);
    assert.is(w.pending, 0);
    r.write(Buffer.from([1]), str('/c'), str('ccc'));
    assert.is(hex(await w.read(1 + 9 + 11)), '00' + hex(str('A')) + hex(str('ccc')));
    assert.is(server.numKeys, 3);
  } finally {
    w.close();
  }
}));

test('server: WAIT_GET with the delete flag removes the keys it answered; other readers of the same write still see the value', () => withRaw(async (r, server) => {
  const w = await Raw.connect(server.port);
  const v = await Raw.connect(server.port);
  try {
    w.write(VALIDATE);
    v.write(VALIDATE);
    w.write(Buffer.from([0xe4, 1]), keys('/m'));
    v.write(Buffer.from([0xe4, 0]), keys('/m'));
    await sync(w, 1);
    await sync(v, 2);
    r.write(Buffer.from([1]), str('/m'), str('msg'));
    assert.is(hex(await w.read(12)), '00' + hex(str('msg')));
    assert.is(hex(await v.read(12)), '00' + hex(str('msg')));
    await sync(r);
    assert.is(server.numKeys, 0);
  } finally {
    w.close();
    v.close();
  }
}));

test('server: CANCEL_WAIT cancels a pending WAIT_GET (01 only); unknown WAIT_GET flags close the connection', () => withRaw(async (r, server) => {
  r.write(Buffer.from([0xe4, 1]), keys('/never'), Buffer.from([12]));
  assert.is(hex(await r.read(1)), '01');
  await sync(r);
  r.write(Buffer.from([1]), str('/never'), str('x'));
  await sync(r);
  assert.is(server.numKeys, 1, 'the cancelled WAIT_GET neither answered nor deleted it');
  r.write(Buffer.from([0xe4, 2]), keys('/never'));
  assert.ok(await r.waitClosed());
}));

test('server: DELETE_QUIET (0xe5, key list) deletes the keys and sends no reply', () => withRaw(async (r, server) => {
  r.write(Buffer.from([1]), str('/x'), str('1'), Buffer.from([1]), str('/y'), str('2'));
  await sync(r);
  assert.is(server.numKeys, 2);
  r.write(Buffer.from([0xe5]), keys('/x', '/y', '/absent'));
  await sync(r, 5);
  assert.is(server.numKeys, 0);
}));

// --- our client's requests, against a fake server that answers like torch ---

interface Script {
  /** Called with each chunk the client sent; returns what the fake server answers. */
  port: number;
  received: Buffer;
  close(): Promise<void>;
}

/**
 * A fake torch server: answers the handshake (PING echo, and NOT_READY to the extension probe,
 * as torch does), then plays `exchanges` in order: once the bytes of the next expected request
 * have arrived, it sends that exchange's answer.
 */
async function fakeTorch(exchanges: Array<[Buffer, Buffer]>): Promise<Script> {
  const state: Script = { port: 0, received: Buffer.alloc(0), close: async () => {} };
  let pending = Buffer.alloc(0);
  let sawHandshake = false;
  const srv = net.createServer((s) => {
    s.on('data', (d: Buffer) => {
      state.received = Buffer.concat([state.received, d]);
      pending = Buffer.concat([pending, d]);
      if (!sawHandshake) {
        // VALIDATE (5) + PING (5) + CHECK probe (1 + 8 + 8 + 16)
        const need = 5 + 5 + 1 + 8 + 8 + Buffer.byteLength('\u0000groupcomm/ext/1');
        if (pending.length < need) return;
        s.write(Buffer.concat([pending.subarray(6, 10), Buffer.from([1])]));
        pending = pending.subarray(need);
        sawHandshake = true;
      }
      while (exchanges.length && pending.length >= exchanges[0][0].length) {
        const [want, answer] = exchanges.shift()!;
        pending = pending.subarray(want.length);
        if (answer.length) s.write(answer);
      }
    });
    s.on('error', () => {});
  });
  await new Promise<void>((res) => srv.listen(0, '127.0.0.1', () => res()));
  state.port = (srv.address() as net.AddressInfo).port;
  state.close = () => new Promise((res) => { srv.close(() => res()); setTimeout(res, 200); });
  return state;
}

test('client: handshake is VALIDATE 00 ce f7 85 3c, then PING 0d + u32 nonce, then the probe', async () => {
  const fake = await fakeTorch([]);
  const c = await TcpStore.create({ port: fake.port, timeoutMs: 5000 });
  try {
    assert.is(hex(fake.received.subarray(0, 5)), '00cef7853c');
    assert.is(fake.received[5], 13);
    const probe = Buffer.concat([Buffer.from([5]), keys('\u0000groupcomm/ext/1')]);
    assert.is(hex(fake.received.subarray(10, 10 + probe.length)), hex(probe));
    assert.not.ok(c.extended);
  } finally {
    await c.close();
    await fake.close();
  }
});

test('client: every request frame has torch\'s layout, with the "/" key prefix', async () => {
  const op = (n: number) => Buffer.from([n]);
  // [name, call, [request bytes, fake answer] per round trip, expected result]
  const steps: Array<[string, (c: TcpStore) => Promise<unknown>, Array<[Buffer, Buffer]>, unknown]> = [
    ['set', (c) => c.set('key0', 'value0'), [[Buffer.concat([op(1), str('/key0'), str('value0')]), Buffer.alloc(0)]], undefined],
    ['get = CHECK then GET', (c) => c.get('key0').then((v) => Buffer.from(v).toString()),
      [[Buffer.concat([op(5), keys('/key0')]), op(0)], [Buffer.concat([op(3), str('/key0')]), str('value0')]], 'value0'],
    ['add', (c) => c.add('cnt', 5), [[Buffer.concat([op(4), str('/cnt'), le64(5)]), le64(5)]], 5],
    ['compareSet', (c) => c.compareSet('k', 'a', 'b').then((v) => Buffer.from(v).toString()),
      [[Buffer.concat([op(2), str('/k'), str('a'), str('b')]), str('b')]], 'b'],
    ['check', (c) => c.check(['x', 'y']), [[Buffer.concat([op(5), keys('/x', '/y')]), op(1)]], false],
    ['numKeys', (c) => c.numKeys(), [[op(7), le64(3)]], 3],
    ['deleteKey', (c) => c.deleteKey('k'), [[Buffer.concat([op(8), str('/k')]), le64(1)]], true],
    ['append', (c) => c.append('p', 'tato'), [[Buffer.concat([op(9), str('/p'), str('tato')]), Buffer.alloc(0)]], undefined],
    ['multiSet', (c) => c.multiSet(['a', 'b'], ['1', '2']),
      [[Buffer.concat([op(11), le64(2), str('/a'), str('1'), str('/b'), str('2')]), Buffer.alloc(0)]], undefined],
    ['multiGet = CHECK then MULTI_GET', (c) => c.multiGet(['a', 'b']).then((vs) => vs.map((v) => Buffer.from(v).toString())),
      [[Buffer.concat([op(5), keys('/a', '/b')]), op(0)], [Buffer.concat([op(10), keys('/a', '/b')]), Buffer.concat([str('1'), str('2')])]], ['1', '2']],
    ['queuePush', (c) => c.queuePush('q', 'v'), [[Buffer.concat([op(14), str('/q'), str('v')]), Buffer.alloc(0)]], undefined],
    ['queueLen', (c) => c.queueLen('q'), [[Buffer.concat([op(16), str('/q')]), le64(1)]], 1],
    ['queuePop', (c) => c.queuePop('q', { block: false }).then((v) => Buffer.from(v!).toString()),
      [[Buffer.concat([op(15), str('/q')]), Buffer.concat([le64(1), str('v')])]], 'v'],
  ];
  const exchanges: Array<[Buffer, Buffer]> = [];
  const fake = await fakeTorch(exchanges);
  const c = await TcpStore.create({ port: fake.port, timeoutMs: 5000 });
  try {
    for (const [name, run, rounds, result] of steps) {
      const before = fake.received.length;
      exchanges.push(...rounds);
      assert.equal(await run(c), result, name);
      await new Promise((res) => setTimeout(res, 20)); // reply-less requests: let the bytes land
      assert.is(hex(fake.received.subarray(before)), hex(Buffer.concat(rounds.map((r) => r[0]))), name);
    }
  } finally {
    await c.close();
    await fake.close();
  }
});

test('client: a wait timeout sends CANCEL_WAIT and accepts STOP_WAITING racing WAIT_CANCELED', async () => {
  // The fake answers WAIT with nothing, and CANCEL_WAIT with 00 (the racing wake) then 01.
  const srv = net.createServer((s) => {
    let buf = Buffer.alloc(0);
    let handshook = false;
    s.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (!handshook && buf.length >= 10) {
        handshook = true;
        s.write(buf.subarray(6, 10));
        buf = buf.subarray(10);
      }
      while (buf.length) {
        const op = buf[0];
        if (op === 5) { // CHECK (probe or user): NOT_READY
          const n = Number(buf.readBigUInt64LE(1));
          let at = 9;
          for (let i = 0; i < n; i++) at += 8 + Number(buf.readBigUInt64LE(at));
          buf = buf.subarray(at);
          s.write(Buffer.from([1]));
        } else if (op === 6) {
          const n = Number(buf.readBigUInt64LE(1));
          let at = 9;
          for (let i = 0; i < n; i++) at += 8 + Number(buf.readBigUInt64LE(at));
          buf = buf.subarray(at);
        } else if (op === 12) {
          buf = buf.subarray(1);
          s.write(Buffer.from([0, 1]));
        } else if (op === 13) {
          s.write(buf.subarray(1, 5));
          buf = buf.subarray(5);
        } else {
          buf = Buffer.alloc(0);
        }
      }
    });
    s.on('error', () => {});
  });
  await new Promise<void>((res) => srv.listen(0, '127.0.0.1', () => res()));
  const c = await TcpStore.create({ port: (srv.address() as net.AddressInfo).port, timeoutMs: 5000 });
  try {
    for (let i = 0; i < 2; i++) {
      try {
        await c.wait(['k'], { timeoutMs: 50 });
        assert.unreachable('must time out');
      } catch (e) {
        assert.is((e as any).code, 'ERR_GROUPCOMM_TIMEOUT');
      }
      // The cancelled wait's connection goes back to the pool once its reader has taken both
      // bytes; the next wait reuses it, and would wrongly resolve on a leftover 01 otherwise.
      const idle = (c as unknown as { idle: unknown[] }).idle;
      for (let t = 0; idle.length === 0 && t < 200; t++) await new Promise((res) => setTimeout(res, 10));
      assert.is(idle.length, 1, 'the cancelled wait connection is back in the pool');
      assert.ok((await c.ping()) >= 0);
    }
    assert.is((c as unknown as { waitConns: Set<unknown> }).waitConns.size, 1, 'both waits used one pooled connection');
  } finally {
    await c.close();
    await new Promise<void>((res) => { srv.close(() => res()); setTimeout(res, 200); });
  }
});

test.run();
