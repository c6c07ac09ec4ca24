// TcpStore against a scripted groupcomm-like server, for what a real server does not do on cue:
// a WAIT_GET's values racing its CANCEL_WAIT (the cancel reader in get mode, client_wait.ts), a
// SUBSCRIBE never answered (the subscribe's own deadline and abort), and a subscription's
// connection that never opens (the abort reaches the connect).
import net from 'node:net';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { TcpStore } from '../../host/index.js';
import { failure, rejectsWith } from '../helpers/rejects.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const text = (b: Uint8Array) => Buffer.from(b).toString('utf8');
const inside = (s: TcpStore) => s as unknown as { idle: unknown[]; waitConns: Set<unknown>; subscriptions: Set<unknown> };

/**
 * A groupcomm-like server that never answers a WAIT_GET (but one of the key 'z', answered at once
 * with 'zed'), and answers CANCEL_WAIT as if the values had won the race: STOP_WAITING, one value
 * per key, then WAIT_CANCELED. It never answers SUBSCRIBE. Enough of the rest for a client: PING,
 * the probe (READY), LIMITS, TRY_GET (missing). A CANCEL_WAIT of the key 'garbage' is answered 07. `later: 'silent'`: every connection after the
 * first is left unanswered (a subscription's or a wait's connection never opens).
 */
async function fakeServer(later: 'serve' | 'silent' = 'serve') {
  let n = 0;
  const sockets = new Set<net.Socket>();
  const keyList = (b: Buffer, at: number): { keys: string[]; end: number } | undefined => {
    if (b.length < at + 8) return undefined;
    const n = Number(b.readBigUInt64LE(at));
    const keys: string[] = [];
    at += 8;
    for (let j = 0; j < n; j++) {
      if (b.length < at + 8) return undefined;
      const len = Number(b.readBigUInt64LE(at));
      if (b.length < at + 8 + len) return undefined;
      keys.push(b.toString('latin1', at + 8, at + 8 + len));
      at += 8 + len;
    }
    return { keys, end: at };
  };
  const str = (v: string) => { const b = Buffer.alloc(8); b.writeBigUInt64LE(BigInt(v.length)); return Buffer.concat([b, Buffer.from(v)]); };
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on('error', () => {});
    s.on('close', () => sockets.delete(s));
    const silent = n++ > 0 && later === 'silent';
    let buf = Buffer.alloc(0);
    let waiting: string[] = [];
    s.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (silent) return;
      for (;;) {
        const op = buf[0];
        let used = 0;
        if (op === 0 && buf.length >= 5) used = 5; // VALIDATE
        else if (op === 13 && buf.length >= 5) { s.write(buf.subarray(1, 5)); used = 5; } // PING
        else if (op === 5) { // CHECK: only the probe is ever asked here
          const l = keyList(buf, 1);
          if (l) { s.write(Buffer.from([0])); used = l.end; }
        } else if (op === 0xe7) { // LIMITS
          const b = Buffer.alloc(32);
          [8192, 1 << 20, 1024, 1 << 24].forEach((v, j) => b.writeBigUInt64LE(BigInt(v), 8 * j));
          s.write(b);
          used = 1;
        } else if (op === 0xe0) { // TRY_GET: missing
          const l = buf.length >= 9 ? 9 + Number(buf.readBigUInt64LE(1)) : Infinity;
          if (buf.length >= l) { s.write(Buffer.from([0])); used = l; }
        } else if (op === 0xe4) { // WAIT_GET: u8 flags, key list
          const l = keyList(buf, 2);
          if (l) {
            used = l.end;
            if (l.keys.length === 1 && l.keys[0] === '/z') s.write(Buffer.concat([Buffer.from([0]), str('zed')]));
            else waiting = l.keys;
          }
        } else if (op === 0xe6) { // SUBSCRIBE: str prefix, never answered
          const l = buf.length >= 9 ? 9 + Number(buf.readBigUInt64LE(1)) : Infinity;
          if (buf.length >= l) used = l;
        } else if (op === 12 && waiting[0] === '/garbage') { // CANCEL_WAIT answered with nonsense
          s.write(Buffer.from([7]));
          waiting = [];
          used = 1;
        } else if (op === 12) { // CANCEL_WAIT: the values raced it
          s.write(Buffer.concat([Buffer.from([0]), ...waiting.map((k) => str(`raced ${k}`)), Buffer.from([1])]));
          waiting = [];
          used = 1;
        }
        if (!used) return;
        buf = buf.subarray(used);
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as net.AddressInfo).port,
    connections: () => n,
    close: () => { for (const s of sockets) s.destroy(); return new Promise<void>((r) => server.close(() => r())); },
  };
}

/** A client of a fresh fake server (see fakeServer), both closed after `fn`, pass or fail. */
async function withFake(fn: (c: TcpStore, f: Awaited<ReturnType<typeof fakeServer>>) => Promise<void>, later: 'serve' | 'silent' = 'serve'): Promise<void> {
  const f = await fakeServer(later);
  const c = await TcpStore.create({ port: f.port, timeoutMs: 5000 });
  try {
    await fn(c, f);
  } finally {
    await c.abort();
    await f.close();
  }
}

test('WAIT_GET timed out while its values were on the way: the cancel reader takes them and WAIT_CANCELED; the pooled connection stays in step', () => withFake(async (c) => {
  assert.ok(c.extended);
  const idleSoon = async (n: number) => {
    for (let t = 0; t < 200 && inside(c).idle.length < n; t++) await sleep(10);
    assert.is(inside(c).idle.length, n, 'the cancelled wait connection is back in the pool');
  };
  await rejectsWith(c.get('one', { timeoutMs: 50 }), 'ERR_GROUPCOMM_TIMEOUT');
  await idleSoon(1);
  await rejectsWith(c.multiGet(['a', 'b', 'c'], { timeoutMs: 50 }), 'ERR_GROUPCOMM_TIMEOUT');
  await idleSoon(1);
  assert.is(text(await c.get('z', { timeoutMs: 2000 })), 'zed', 'the next WAIT_GET on it reads its own reply');
  assert.is(inside(c).waitConns.size, 1, 'one wait connection all along');
}));

test('a CANCEL_WAIT answered with neither STOP_WAITING nor WAIT_CANCELED fails that wait connection (it is out of step)', () => withFake(async (c) => {
  await rejectsWith(c.get('garbage', { timeoutMs: 50 }), 'ERR_GROUPCOMM_TIMEOUT');
  for (let t = 0; t < 100 && inside(c).waitConns.size > 0; t++) await sleep(10);
  assert.is(inside(c).waitConns.size, 0, 'closed, not pooled');
  assert.is(inside(c).idle.length, 0);
  assert.ok((await c.ping()) >= 0, 'the main connection is unaffected');
}));

test('SUBSCRIBE never answered: TIMEOUT after timeoutMs naming the prefix; the half-made subscription is closed', () => withFake(async (c) => {
  const t0 = performance.now();
  const e = await failure(c.subscribe('t/', () => {}, { timeoutMs: 300 }));
  const took = performance.now() - t0;
  assert.is(e.code, 'ERR_GROUPCOMM_TIMEOUT', String(e));
  assert.is(e.key, 't/');
  assert.is(e.timeoutMs, 300);
  assert.ok(took >= 250, `gave up after ${took} ms`);
  assert.ok(e.elapsedMs !== undefined && e.elapsedMs <= took + 1, `elapsedMs ${e.elapsedMs}`);
  assert.is(inside(c).subscriptions.size, 0);
}));

test('SUBSCRIBE aborted while unanswered: ABORTED naming the prefix, at the abort; the half-made subscription is closed', () => withFake(async (c) => {
  const ac = new AbortController();
  setTimeout(() => ac.abort('enough'), 150);
  const t0 = performance.now();
  const e = await failure(c.subscribe('t/', () => {}, { timeoutMs: 10_000, signal: ac.signal }));
  assert.is(e.code, 'ERR_GROUPCOMM_ABORTED', String(e));
  assert.is(e.key, 't/');
  assert.ok(performance.now() - t0 < 3000);
  assert.is(inside(c).subscriptions.size, 0);
}));

test('a subscription whose connection never opens: the abort reaches the connect (ABORTED at once, not at the deadline)', () => withFake(async (c, f) => {
  const ac = new AbortController();
  setTimeout(() => ac.abort('enough'), 150);
  const t0 = performance.now();
  const e = await failure(c.subscribe('t/', () => {}, { timeoutMs: 10_000, signal: ac.signal }));
  assert.is(e.code, 'ERR_GROUPCOMM_ABORTED', String(e));
  assert.ok(performance.now() - t0 < 3000, 'ended at the abort');
  assert.is(f.connections(), 2);
}, 'silent'));

test.run();
