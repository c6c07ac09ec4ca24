// TcpStore against a scripted groupcomm-like server, for what a real server does not do on cue:
// a WAIT_GET's values racing its CANCEL_WAIT (the cancel reader in get mode, client_wait.ts), a
// SUBSCRIBE never answered (the subscribe's own deadline and abort), and a subscription's
// connection that never opens (the abort reaches the connect).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { TcpStore } from '../../host/index.js';
import { failure, rejectsWith } from '../helpers/rejects.js';
import { keyList, oneString, scriptedServer, str, type ScriptedServer } from '../helpers/fake_store_server.js';

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
async function fakeServer(later: 'serve' | 'silent' = 'serve'): Promise<ScriptedServer> {
  return scriptedServer((i) => {
    if (i > 0 && later === 'silent') return undefined;
    let waiting: string[] = [];
    return (op, buf, s) => {
      if (op === 0xe0) { // TRY_GET: missing
        const l = oneString(buf);
        if (l) s.write(Buffer.from([0]));
        return l;
      }
      if (op === 0xe4) { // WAIT_GET: u8 flags, key list
        const l = keyList(buf, 2);
        if (!l) return 0;
        if (l.keys.length === 1 && l.keys[0] === '/z') s.write(Buffer.concat([Buffer.from([0]), str('zed')]));
        else waiting = l.keys;
        return l.end;
      }
      if (op === 0xe6) return oneString(buf); // SUBSCRIBE: str prefix, never answered
      if (op === 12 && waiting[0] === '/garbage') { // CANCEL_WAIT answered with nonsense
        s.write(Buffer.from([7]));
        waiting = [];
        return 1;
      }
      if (op === 12) { // CANCEL_WAIT: the values raced it
        s.write(Buffer.concat([Buffer.from([0]), ...waiting.map((k) => str(`raced ${k}`)), Buffer.from([1])]));
        waiting = [];
        return 1;
      }
      return undefined;
    };
  });
}

/** A client of a fresh fake server (see fakeServer), both closed after `fn`, pass or fail. */
async function withFake(fn: (c: TcpStore, f: ScriptedServer) => Promise<void>, later: 'serve' | 'silent' = 'serve'): Promise<void> {
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
