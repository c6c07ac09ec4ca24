// TcpStore's own connections beside the main one (host/store/client_wait.ts), in the details the
// behaviour tests pass either way: the bound on remembered unconfirmed writes and when a read may
// leave the main connection (mayBypass), the pool of idle wait connections (its bound, a closed one
// dropped, CHECK before opening one), close() waiting for waits and subscribes under way, the key
// size guard of a subscription's pushes, the in-process subscribe's refusal, and the errors of a
// wait whose connection cannot be opened. The bookkeeping is read through the client's fields:
// what it changes (memory, which connection a read takes) shows in no result.
import net from 'node:net';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { TcpStore, TcpStoreServer } from '../../host/index.js';
import { failure, rejectsWith } from '../helpers/rejects.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const text = (b: Uint8Array) => Buffer.from(b).toString('utf8');

interface Inside {
  unconfirmed: Map<string, number>;
  unconfirmedCutoff: number;
  mayBypass(key: string): boolean;
  idle: { close(): void }[];
  waitConns: Set<unknown>;
  subscriptions: Set<unknown>;
}
const inside = (s: TcpStore) => s as unknown as Inside;

/** A server (keys up to 2 MiB, SUBSCRIBE to any prefix) and two TCP clients of it. */
async function withTcp(fn: (s: TcpStore, writer: TcpStore) => Promise<void>): Promise<void> {
  const server = await TcpStoreServer.listen({ port: 0, subscribePrefixes: 'any', limits: { maxKeyBytes: 2 << 20 } });
  const s = await TcpStore.create({ port: server.port, timeoutMs: 5000 });
  const writer = await TcpStore.create({ port: server.port, timeoutMs: 5000 });
  try {
    await fn(s, writer);
  } finally {
    await s.close();
    await writer.close();
    await server.close();
  }
}

test('remembered writes: at most 4096; confirmed ones are pruned, reply-less ones all forgotten and then nothing bypasses until confirmed', () => withTcp(async (s) => {
  const i = inside(s);
  assert.ok(i.mayBypass('never-written'), 'a key this client never wrote may be read anywhere');
  assert.is(i.unconfirmed.size, 0);
  const N = 4096;
  const first = Array.from({ length: N }, (_, k) => s.set(`a${k}`, 'v'));
  assert.is(i.unconfirmed.size, N, 'up to the bound every write is remembered');
  assert.is(i.unconfirmedCutoff, 0);
  await Promise.all(first);
  await s.numKeys(); // a reply on the main connection: every SET before it is applied
  await s.set('extra', 'v'); // one past the bound: the confirmed ones are dropped
  assert.is(i.unconfirmed.size, 1);
  assert.is(i.unconfirmedCutoff, 0, 'no cutoff while the confirmed writes made room');
  assert.not.ok(i.mayBypass('extra'), 'an unconfirmed write of the key: read it on the main connection');
  await s.numKeys();
  assert.ok(i.mayBypass('extra'), 'confirmed now');
  assert.not.ok(i.unconfirmed.has('extra'), 'and forgotten once confirmed');

  const second = Array.from({ length: N + 1 }, (_, k) => s.set(`b${k}`, 'v'));
  assert.is(i.unconfirmed.size, 0, 'past the bound with nothing confirmed: all forgotten');
  assert.ok(i.unconfirmedCutoff > 0);
  assert.not.ok(i.mayBypass('never-written'), 'until the newest forgotten write is confirmed, no read bypasses');
  await Promise.all(second);
  await s.numKeys();
  assert.ok(i.mayBypass('never-written'));
}));

test('wait pool: at most 4 idle wait connections; a closed idle one leaves the pool; a wait takes an idle one instead of opening another', () => withTcp(async (s, writer) => {
  const i = inside(s);
  await s.set('here', 'v');
  await s.wait(['here']);
  assert.is(i.waitConns.size, 0, 'the keys were there: the CHECK answered, no wait connection opened');
  const waits = [1, 2, 3, 4, 5].map((k) => s.wait([`w${k}`], { timeoutMs: 5000 }));
  for (const w of waits) w.catch(() => {}); // a failed assertion below must not leave them unhandled
  // Each wait opens its own connection: give a loaded machine time to open all five.
  for (let t = 0; t < 300 && i.waitConns.size < 5; t++) await sleep(10);
  assert.is(i.waitConns.size, 5);
  await writer.multiSet([1, 2, 3, 4, 5].map((k) => `w${k}`), ['1', '2', '3', '4', '5']);
  await Promise.all(waits);
  await sleep(20);
  assert.is(i.idle.length, 4, 'four kept idle');
  assert.is(i.waitConns.size, 4, 'the fifth closed');
  i.idle[0].close();
  assert.is(i.idle.length, 3, 'a closed connection is not handed out again');
  assert.is(i.waitConns.size, 3);
  const g = s.get('later', { timeoutMs: 5000 });
  const w = s.wait(['later2'], { timeoutMs: 5000 });
  for (const p of [g, w]) p.catch(() => {});
  await sleep(50);
  await writer.multiSet(['later', 'later2'], ['L', 'L2']);
  assert.is(text(await g), 'L');
  assert.is(text(await writer.get('later')), 'L', 'a get (unlike take) leaves the key');
  await w;
  await sleep(20);
  assert.is(i.waitConns.size, 3, 'both went on idle connections, none opened');
  assert.is(i.idle.length, 3);
}));

test('a wait on a pooled connection: TIMEOUT after its timeoutMs (not sooner), with keys, timeoutMs and elapsedMs; an abort names the keys', () => withTcp(async (s, writer) => {
  const w = s.wait(['pool-warm'], { timeoutMs: 5000 });
  await sleep(30);
  await writer.set('pool-warm', 'v');
  await w;
  for (let t = 0; t < 100 && inside(s).idle.length === 0; t++) await sleep(10);
  assert.is(inside(s).idle.length, 1);
  const t0 = performance.now();
  const e = await failure(s.wait(['never1', 'never2'], { timeoutMs: 300 }));
  const took = performance.now() - t0;
  assert.is(e.code, 'ERR_GROUPCOMM_TIMEOUT', String(e));
  assert.equal(e.keys, ['never1', 'never2']);
  assert.is(e.timeoutMs, 300);
  assert.ok(took >= 250, `timed out after ${took} ms`);
  assert.ok(e.elapsedMs! >= 250 && e.elapsedMs! <= took + 1, `elapsedMs ${e.elapsedMs}, measured ${took}`);
  for (let t = 0; t < 100 && inside(s).idle.length === 0; t++) await sleep(10);
  assert.is(inside(s).idle.length, 1, 'WAIT_CANCELED alone: the connection is in step and back in the pool');
  assert.is(inside(s).waitConns.size, 1);
  const ac = new AbortController();
  setTimeout(() => ac.abort('enough'), 50);
  const a = await failure(s.wait(['never3'], { timeoutMs: 5000, signal: ac.signal }));
  assert.is(a.code, 'ERR_GROUPCOMM_ABORTED', String(a));
  assert.equal(a.keys, ['never3']);
}));

test('close() lets a wait under way finish, also after a subscribe (each counted once, in and out)', () => withTcp(async (s, writer) => {
  const sub = await s.subscribe('c/', () => {});
  assert.ok(sub);
  const w = s.wait(['c-key'], { timeoutMs: 5000 }).then(() => 'done', (e) => String(e));
  await sleep(50);
  const closing = s.close();
  await sleep(50);
  await writer.set('c-key', 'v');
  assert.is(await w, 'done');
  await closing;
}));

test('subscribe: a prefix that is not a string is INVALID_ARGUMENT; an aborted signal rejects with ABORTED; a closed subscription is forgotten', () => withTcp(async (s) => {
  await rejectsWith(s.subscribe(42 as unknown as string, () => {}), 'ERR_GROUPCOMM_INVALID_ARGUMENT');
  const ac = new AbortController();
  ac.abort('stop');
  await rejectsWith(s.subscribe('d/', () => {}, { signal: ac.signal }), 'ERR_GROUPCOMM_ABORTED');
  const sub = await s.subscribe('d/', () => {});
  assert.is(inside(s).subscriptions.size, 1);
  sub!.close();
  assert.is(inside(s).subscriptions.size, 0);
}));

test('subscribe: a pushed key of 1 MiB is delivered; one byte more ends the subscription with PROTOCOL', () => withTcp(async (s, writer) => {
  const got: string[] = [];
  const sub = (await s.subscribe('k/', (k) => got.push(k)))!;
  const ended = new Promise<Error | undefined>((r) => sub.onClose(r));
  // On the wire the key is '/' + 'k/' + the rest (the client's key prefix).
  const exact = 'k/' + 'x'.repeat((1 << 20) - 3);
  await writer.set(exact, 'v');
  await writer.ping();
  for (let t = 0; t < 200 && got.length === 0; t++) await sleep(10);
  assert.equal(got.map((k) => k.length), [exact.length]);
  await writer.set(exact + 'y', 'v');
  const e = await Promise.race([ended, sleep(3000).then(() => 'still open')]);
  assert.is((e as { code?: string })?.code, 'ERR_GROUPCOMM_PROTOCOL', String(e));
  assert.is(got.length, 1);
}));

test('in-process subscribe: a prefix already taken is INVALID_ARGUMENT naming it', async () => {
  const s = await TcpStore.create({ port: 0, isServer: true, timeoutMs: 5000, subscribePrefixes: 'any' });
  try {
    const a = await s.subscribe('h/', () => {});
    assert.ok(a);
    const e = await rejectsWith(s.subscribe('h/', () => {}), 'ERR_GROUPCOMM_INVALID_ARGUMENT');
    assert.is(e.key, 'h/');
    assert.is(inside(s).subscriptions.size, 1);
  } finally {
    await s.close();
  }
});

/**
 * A torch-style server (no extensions): the first connection echoes PING and answers every CHECK
 * NOT_READY; every later one (a wait connection) is left silent, or ('bad-echo') answers PING wrong.
 */
async function torchFake(later: 'silent' | 'bad-echo') {
  const sockets = new Set<net.Socket>();
  let n = 0;
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on('error', () => {});
    s.on('close', () => sockets.delete(s));
    const first = n++ === 0;
    let buf = Buffer.alloc(0);
    let stage = 0;
    s.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (stage === 0 && buf.length >= 10) {
        stage = 1;
        if (!first && later === 'silent') return;
        s.write(first ? buf.subarray(6, 10) : Buffer.from([1, 2, 3, 4]));
        buf = buf.subarray(10);
      }
      while (first && stage === 1 && buf.length >= 9 && buf[0] === 5) { // CHECK: u8 op, u64 n, n × (u64 len, key)
        const k = Number(buf.readBigUInt64LE(1));
        let at = 9;
        for (let j = 0; j < k && at + 8 <= buf.length; j++) at += 8 + Number(buf.readBigUInt64LE(at));
        if (at > buf.length) break;
        buf = buf.subarray(at);
        s.write(Buffer.from([1]));
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const client = await TcpStore.create({ port: (server.address() as net.AddressInfo).port, timeoutMs: 5000, extensions: false });
  return {
    client, conns: () => n,
    close: async () => {
      await client.abort();
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

test('wait whose connection cannot be opened: out of time is TIMEOUT (keys, timeoutMs, elapsedMs); an abort is ABORTED with the keys', async () => {
  const f = await torchFake('silent');
  try {
    const t0 = performance.now();
    const e = await failure(f.client.wait(['k1', 'k2'], { timeoutMs: 400 }));
    const took = performance.now() - t0;
    assert.is(e.code, 'ERR_GROUPCOMM_TIMEOUT', String(e));
    assert.equal(e.keys, ['k1', 'k2']);
    assert.is(e.timeoutMs, 400);
    assert.ok(took >= 350, `opening had what was left of the 400 ms, gave up after ${took} ms`);
    assert.ok(e.elapsedMs! >= 350 && e.elapsedMs! <= took + 1, `elapsedMs ${e.elapsedMs}, measured ${took}`);

    const ac = new AbortController();
    const t1 = performance.now();
    setTimeout(() => ac.abort('enough'), 100);
    const a = await failure(f.client.wait(['k3'], { timeoutMs: 10_000, signal: ac.signal }));
    assert.is(a.code, 'ERR_GROUPCOMM_ABORTED', String(a));
    assert.equal(a.keys, ['k3']);
    assert.ok(performance.now() - t1 < 3000, 'ended at the abort');
  } finally {
    await f.close();
  }
});

test('wait whose connection fails otherwise (a wrong PING echo): that error, not TIMEOUT or ABORTED', async () => {
  const f = await torchFake('bad-echo');
  try {
    const e = await failure(f.client.wait(['k'], { timeoutMs: 3000 }));
    assert.is(e.code, 'ERR_GROUPCOMM_PROTOCOL', String(e));
    assert.is(f.conns(), 2);
  } finally {
    await f.close();
  }
});

test.run();
