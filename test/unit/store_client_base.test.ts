// TcpStore's connection side (host/store/client_base.ts): the limits learnt from the server and
// the checks against them at their exact boundaries (refused here, before anything is sent, so the
// connection survives), the key named in a refusal, the in-process paths (publish, subscribe) and
// their wire keys, and a LIMITS never answered
// (the liveness ping: store_client_base_liveness).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { TcpStore } from '../../host/index.js';
import { TORCH_LIMITS } from '../../host/store/protocol.js';
import { rejectsWith } from '../helpers/rejects.js';
import { scriptedServer } from '../helpers/fake_store_server.js';

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

test.run();
