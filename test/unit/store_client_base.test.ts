// TcpStore's connection side (host/store/client_base.ts): the limits learnt from the server and
// the checks against them at their exact boundaries (refused here, before anything is sent, so the
// connection survives), the key named in a refusal, the in-process paths (publish, subscribe) and
// their wire keys, a LIMITS never answered, and the liveness ping against a server that stops
// answering.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { TcpStore } from '../../host/index.js';
import { TORCH_LIMITS } from '../../host/store/protocol.js';
import { rejectsWith } from '../helpers/rejects.js';
import { scriptedServer } from '../helpers/fake_store_server.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const text = (b: Uint8Array) => Buffer.from(b).toString('utf8');
const LIMITS = { maxKeyBytes: 16, maxValueBytes: 32, maxKeysPerRequest: 3, maxRequestBytes: 150 };

test('the limits are learnt from the server, and each check refuses just past its bound, before sending', async () => {
  const c = await TcpStore.create({ port: 0, isServer: true, inProcess: false, limits: LIMITS, timeoutMs: 5000 });
  try {
    assert.equal({ ...c.limits }, LIMITS, 'LIMITS negotiated');
    // maxKeyBytes counts the wire key: '/' + key with prefixKeys (the default)
    await c.set('k'.repeat(15), 'x');
    let e = await rejectsWith(c.set('k'.repeat(16), 'x'), 'ERR_GROUPCOMM_INVALID_ARGUMENT');
    assert.is(e.key, 'k'.repeat(16));
    // maxValueBytes
    await c.set('v', 'y'.repeat(32));
    e = await rejectsWith(c.set('v', 'y'.repeat(33)), 'ERR_GROUPCOMM_INVALID_ARGUMENT');
    assert.is(e.key, 'v');
    // maxKeysPerRequest
    await c.multiSet(['a', 'b', 'c'], ['1', '2', '3']);
    await rejectsWith(c.multiSet(['a', 'b', 'c', 'd'], ['1', '2', '3', '4']), 'ERR_GROUPCOMM_INVALID_ARGUMENT');
    await rejectsWith(c.check(['a', 'b', 'c', 'd']), 'ERR_GROUPCOMM_INVALID_ARGUMENT');
    // maxRequestBytes: 9 + 3 * (16 + 2 + 29) = 150 fits, one value byte more does not
    await c.multiSet(['a', 'b', 'c'], ['p'.repeat(29), 'q'.repeat(29), 'r'.repeat(29)]);
    await rejectsWith(c.multiSet(['a', 'b', 'c'], ['p'.repeat(29), 'q'.repeat(29), 'r'.repeat(30)]), 'ERR_GROUPCOMM_INVALID_ARGUMENT');
    // nothing refused reached the server: the connection and the values are intact
    assert.is(text(await c.get('c')), 'r'.repeat(29));
    assert.is(text(await c.get('v')), 'y'.repeat(32));
    await rejectsWith(c.set(7 as unknown as string, 'x'), 'ERR_GROUPCOMM_INVALID_ARGUMENT');
    const raw = await TcpStore.create({ port: c.port, prefixKeys: false, timeoutMs: 5000 });
    try {
      await raw.set('k'.repeat(16), 'unprefixed'); // no '/': 16 bytes fit
      await rejectsWith(raw.set('k'.repeat(17), 'x'), 'ERR_GROUPCOMM_INVALID_ARGUMENT');
      assert.is(text(await raw.get('k'.repeat(16))), 'unprefixed');
    } finally {
      await raw.close();
    }
  } finally {
    await c.close();
  }
});

test('without extensions the client keeps torch\'s limits and never asks LIMITS', async () => {
  const c = await TcpStore.create({ port: 0, isServer: true, inProcess: false, limits: LIMITS, timeoutMs: 5000 });
  try {
    const t = await TcpStore.create({ port: c.port, extensions: false, timeoutMs: 5000 });
    try {
      assert.not.ok(t.extended);
      assert.equal({ ...t.limits }, { ...TORCH_LIMITS });
    } finally {
      await t.close();
    }
  } finally {
    await c.close();
  }
});

test('a refused key is named by its first 200 characters', async () => {
  const c = await TcpStore.create({ port: 0, isServer: true, inProcess: false, timeoutMs: 5000 });
  try {
    const e = await rejectsWith(c.set('k'.repeat(9000), 'x'), 'ERR_GROUPCOMM_INVALID_ARGUMENT');
    assert.is(e.key, 'k'.repeat(200));
  } finally {
    await c.close();
  }
});

test('in process: a published non-ASCII key is stored as the wire has it (latin1 of its UTF-8); a subscription at the key bound is local, one past it refused', async () => {
  const c = await TcpStore.create({ port: 0, isServer: true, limits: LIMITS, timeoutMs: 5000 });
  try {
    await c.publish(['é/x'], [Buffer.from('v')]);
    assert.is(text(await c.get('é/x', { timeoutMs: 1000 })), 'v', 'a get over the link finds it');
    const links = c.server!.numConnections;
    // '/' + 15 characters: exactly maxKeyBytes (16); a local subscription opens no connection
    const sub = (await c.subscribe('abcdefgh/to/12/', () => {}))!;
    assert.is(c.server!.numConnections, links, 'subscribed in process, not over a connection');
    sub.close();
    await rejectsWith(c.subscribe('abcdefghi/to/12/', () => {}), 'ERR_GROUPCOMM_INVALID_ARGUMENT');
  } finally {
    await c.close();
  }
});

test('a server that never answers LIMITS: create() times out naming the negotiation', async () => {
  const f = await scriptedServer(() => (op) => (op === 0xe7 ? 0 : undefined));
  try {
    const e = await rejectsWith(TcpStore.create({ port: f.port, timeoutMs: 300 }), 'ERR_GROUPCOMM_TIMEOUT');
    assert.match(e.message, /negotiate limits/);
  } finally {
    await f.close();
  }
});

/**
 * A groupcomm-like server (test/helpers/fake_store_server.ts) that answers until `state.muted`:
 * from then on it reads and answers nothing. Counts the PINGs it saw, muted or not.
 */
async function fakeServer() {
  const state = { muted: false, pings: 0 };
  const server = await scriptedServer(() => (op, buf) => {
    if (op === 13) { // PING: counted; the basics echo it unless muted
      if (buf.length < 5) return 0;
      state.pings++;
      return state.muted ? 5 : undefined;
    }
    return state.muted ? 0 : undefined;
  });
  return { port: server.port, state, close: server.close };
}

async function withLiveness(ms: string, fn: (c: TcpStore, f: Awaited<ReturnType<typeof fakeServer>>) => Promise<void>): Promise<void> {
  const old = process.env.GROUPCOMM_LIVENESS_MS;
  process.env.GROUPCOMM_LIVENESS_MS = ms;
  const f = await fakeServer();
  let c: TcpStore | undefined;
  try {
    c = await TcpStore.create({ port: f.port, timeoutMs: 5000, hostRank: 3 });
    await fn(c, f);
  } finally {
    if (old === undefined) delete process.env.GROUPCOMM_LIVENESS_MS;
    else process.env.GROUPCOMM_LIVENESS_MS = old;
    await c?.abort();
    await f.close();
  }
}

test('liveness: no ping while nothing waits; a call waiting on a server that went silent fails PEER_LOST naming the host rank, and so does every later call', () => withLiveness('100', async (c, f) => {
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
}));

test('liveness off (0): a silent server only costs the call its own timeout', () => withLiveness('0', async (c, f) => {
  const before = f.state.pings;
  f.state.muted = true;
  await rejectsWith(c.ping({ timeoutMs: 300 }), 'ERR_GROUPCOMM_TIMEOUT');
  assert.is(f.state.pings, before + 1, 'only the call\'s own ping');
}));

test.run();
