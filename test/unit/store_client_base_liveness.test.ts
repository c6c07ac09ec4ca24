// TcpStore's liveness ping (host/store/client_base.ts, GROUPCOMM_LIVENESS_MS) while the main
// connection itself is idle: a wait blocked on its own connection, or a subscription, keeps it
// going, one ping at a time every L/5; a server that stops answering fails them PEER_LOST. A ping
// cut short by abort() or by the connection's loss is not a silent server.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { TcpStore } from '../../host/index.js';
import { failure, rejectsWith, within } from '../helpers/rejects.js';
import { keyList, oneString, scriptedServer } from '../helpers/fake_store_server.js';
import { withEnv } from '../helpers/env.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * The main connection (the first) counts PINGs and answers CHECK "not ready" (the extension
 * probe aside); once `state.muted` it answers nothing. Every later connection holds a WAIT
 * unanswered and grants a SUBSCRIBE.
 */
async function server() {
  const state = { muted: false, pings: 0 };
  const s = await scriptedServer((i) => (op, buf, socket) => {
    if (i > 0) {
      if (op === 6) return keyList(buf, 1)?.end ?? 0; // WAIT: held
      if (op === 0xe6) { // SUBSCRIBE: OK
        const n = oneString(buf);
        if (n) socket.write(Buffer.from([0]));
        return n;
      }
      return undefined;
    }
    if (op === 13) {
      if (buf.length < 5) return 0;
      state.pings++;
      return state.muted ? 5 : undefined;
    }
    if (state.muted) return 0;
    if (op === 5) {
      const l = keyList(buf, 1);
      if (!l) return 0;
      if (l.keys[0].includes('groupcomm/ext')) return undefined;
      socket.write(Buffer.from([1])); // NOT_READY
      return l.end;
    }
    return undefined;
  });
  return { ...s, state };
}

async function withLiveness(fn: (c: TcpStore, f: Awaited<ReturnType<typeof server>>) => Promise<void>, hostRank?: number, livenessMs = '500'): Promise<void> {
  await withEnv({ GROUPCOMM_LIVENESS_MS: livenessMs }, async () => {
    const f = await server();
    let c: TcpStore | undefined;
    try {
      c = await TcpStore.create({ port: f.port, timeoutMs: 8000, hostRank });
      await fn(c, f);
    } finally {
      await c?.abort();
      await f.close();
    }
  });
}

/** Until the muted server has read a ping more than `n`. */
async function pingOut(f: { state: { pings: number } }, n: number): Promise<void> {
  for (let t0 = Date.now(); f.state.pings <= n && Date.now() - t0 < 3000;) await sleep(5);
  assert.ok(f.state.pings > n, 'a liveness ping went out');
}

test('a wait blocked on its own connection: a ping every L/5, one at a time; unanswered, the wait fails PEER_LOST (no host rank named), and so does a clone', () => withLiveness(async (c, f) => {
  const w = failure(c.wait(['k']));
  await sleep(100);
  const p0 = f.state.pings;
  await sleep(500);
  const n = f.state.pings - p0;
  assert.ok(n >= 2 && n <= 8, `${n} pings in 500 ms at L = 500 ms (one each 100 ms)`);
  f.state.muted = true;
  const m0 = f.state.pings;
  const t0 = performance.now();
  const e = await w;
  assert.is(e.code, 'ERR_GROUPCOMM_PEER_LOST', e.message);
  assert.ok(performance.now() - t0 < 3000, 'within about L, not the wait\'s timeout');
  assert.ok(f.state.pings - m0 <= 2, `one ping out at a time (${f.state.pings - m0} sent)`);
  assert.match(e.message, /^store 127\.0\.0\.1:\d+ did not answer a ping within 500 ms/, 'nothing between the address and the verb');
  assert.is(e.peerRank, undefined);
  f.state.muted = false;
  assert.is(await rejectsWith(c.clone(), 'ERR_GROUPCOMM_PEER_LOST'), e);
}));

test('a subscription keeps the pings going; unanswered, it ends PEER_LOST', () => withLiveness(async (c, f) => {
  const sub = (await c.subscribe('mb/to/0/', () => {}))!;
  const ended = new Promise<Error | undefined>((r) => sub.onClose(r));
  const p0 = f.state.pings;
  await sleep(500);
  assert.ok(f.state.pings - p0 >= 2, `${f.state.pings - p0} pings`);
  f.state.muted = true;
  assert.ok(await within(ended, 3000), 'the subscription ended');
  const e = (await ended) as { code?: string; message: string };
  assert.is(e.code, 'ERR_GROUPCOMM_PEER_LOST');
  assert.match(e.message, /hosted by rank 5/);
}, 5));

test('abort() while a ping is out is not a silent server: later calls are DESTROYED', () => withLiveness(async (c, f) => {
  const w = failure(c.wait(['k']));
  await sleep(100);
  f.state.muted = true;
  await pingOut(f, f.state.pings);
  await c.abort('done');
  assert.is((await w).code, 'ERR_GROUPCOMM_ABORTED');
  await sleep(20);
  await rejectsWith(c.set('k', 'v'), 'ERR_GROUPCOMM_DESTROYED');
}));

test('the connection lost while a ping is out: later calls fail with that loss, not with "did not answer a ping"', () => withLiveness(async (c, f) => {
  const w = failure(c.wait(['k']));
  await sleep(100);
  f.state.muted = true;
  await pingOut(f, f.state.pings);
  await f.close(); // destroys every connection
  await w;
  await sleep(50);
  const e = await rejectsWith(c.set('k', 'v'), 'ERR_GROUPCOMM_PEER_LOST');
  assert.not.match(e.message, /did not answer a ping/);
}));

test('liveness: no ping while nothing waits; a call waiting on a server that went silent fails PEER_LOST naming the host rank, and so does every later call', () => withLiveness(async (c, f) => {
  assert.ok(c.extended);
  const before = f.state.pings;
  await sleep(150);
  assert.is(f.state.pings, before, 'idle: no ping sent');
  f.state.muted = true;
  const t0 = performance.now();
  const e = await rejectsWith(c.ping({ timeoutMs: 4000 }), 'ERR_GROUPCOMM_PEER_LOST');
  assert.ok(performance.now() - t0 < 3000, 'well before the call\'s own timeout');
  assert.is(e.peerRank, 3);
  assert.match(e.message, /hosted by rank 3/);
  assert.ok(f.state.pings > before + 1, 'liveness pings went out while the call waited');
  const again = await rejectsWith(c.set('k', 'v'), 'ERR_GROUPCOMM_PEER_LOST');
  assert.is(again, e, 'later calls fail with the same error');
}, 3, '100'));

test('liveness off (0): a silent server only costs the call its own timeout', () => withLiveness(async (c, f) => {
  const before = f.state.pings;
  f.state.muted = true;
  await rejectsWith(c.ping({ timeoutMs: 300 }), 'ERR_GROUPCOMM_TIMEOUT');
  assert.is(f.state.pings, before + 1, 'only the call\'s own ping');
}, 3, '0'));

test.run();
