// TcpStore's operations (host/store/client.ts) at their edges: the arguments each one refuses
// before anything is sent (the connection and the values stay), append past the server's value
// limit, a PING answered with the wrong nonce, and every operation that waits for a reply naming
// itself in its timeout.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { TcpStore } from '../../host/index.js';
import { rejectsWith } from '../helpers/rejects.js';
import { scriptedServer } from '../helpers/fake_store_server.js';

const text = (b: Uint8Array) => Buffer.from(b).toString('utf8');

test('refused before sending: add\'s non-integer delta, multiSet\'s and publish\'s count mismatch, publish\'s non-bytes value; append past maxValueBytes appends nothing', async () => {
  const c = await TcpStore.create({ port: 0, isServer: true, limits: { maxValueBytes: 32 }, timeoutMs: 5000 });
  try {
    assert.is(await c.add('n', 2), 2);
    await rejectsWith(c.add('n', 1.5), 'ERR_GROUPCOMM_INVALID_ARGUMENT');
    await rejectsWith(c.add('n', 2 ** 60), 'ERR_GROUPCOMM_INVALID_ARGUMENT');
    assert.is(await c.add('n', 0n), 2, 'nothing was added');
    await rejectsWith(c.multiSet(['a', 'b'], ['1']), 'ERR_GROUPCOMM_INVALID_ARGUMENT');
    await rejectsWith(c.publish(['a', 'b'], [Buffer.from('1')]), 'ERR_GROUPCOMM_INVALID_ARGUMENT');
    await rejectsWith(c.publish(['a'], ['1' as unknown as Uint8Array]), 'ERR_GROUPCOMM_INVALID_ARGUMENT');
    assert.not.ok(await c.check(['a']), 'no key was written');
    await c.append('v', 'x'.repeat(20));
    const e = await rejectsWith(c.append('v', 'y'.repeat(20)), 'ERR_GROUPCOMM_INVALID_ARGUMENT');
    assert.is(e.key, 'v');
    assert.is(text(await c.get('v')), 'x'.repeat(20), 'nothing appended');
  } finally {
    await c.close();
  }
  await rejectsWith(c.publish(['a'], [Buffer.from('1')]), 'ERR_GROUPCOMM_DESTROYED');
});

test('a PING answered with another nonce is PROTOCOL', async () => {
  let lie = false;
  const f = await scriptedServer(() => (op, buf, s) => {
    if (op !== 13 || !lie) return undefined;
    if (buf.length < 5) return 0;
    s.write(Buffer.from([buf[1] ^ 1, buf[2], buf[3], buf[4]]));
    return 5;
  });
  const c = await TcpStore.create({ port: f.port, timeoutMs: 5000 });
  try {
    const t0 = performance.now();
    const rtt = await c.ping();
    assert.ok(rtt >= 0 && rtt <= performance.now() - t0, `ping() answered ${rtt} ms, more than the call took`);
    lie = true;
    const e = await rejectsWith(c.ping(), 'ERR_GROUPCOMM_PROTOCOL');
    assert.match(e.message, /answered PING with \d+, expected \d+/);
  } finally {
    await c.abort();
    await f.close();
  }
});

test('a server that stops answering: each operation waiting for a reply times out under its own name', async () => {
  let muted = false;
  const f = await scriptedServer(() => () => (muted ? 0 : undefined));
  const c = await TcpStore.create({ port: f.port, timeoutMs: 5000 });
  try {
    muted = true;
    const o = { timeoutMs: 60 };
    const ops: Array<[string, () => Promise<unknown>]> = [
      ['get', () => c.get('k', o)], ['get', () => c.take('k', o)], ['add', () => c.add('k', 1, o)],
      ['compareSet', () => c.compareSet('k', 'a', 'b', o)], ['check', () => c.check(['k'], o)],
      ['deleteKey', () => c.deleteKey('k', o)], ['numKeys', () => c.numKeys(o)], ['append', () => c.append('k', 'v', o)],
      ['multiGet', () => c.multiGet(['k', 'l'], o)], ['ping', () => c.ping(o)], ['queuePop', () => c.queuePop('k', o)],
      ['queueLen', () => c.queueLen('k', o)],
    ];
    for (const [what, op] of ops) {
      const e = await rejectsWith(op(), 'ERR_GROUPCOMM_TIMEOUT');
      assert.match(e.message, new RegExp(`^store ${what} timed out after 60ms`), `${what}: ${e.message}`);
    }
  } finally {
    await c.abort();
    await f.close();
  }
});

test('without extensions, a server that holds one request: get (its CHECK, or its GET) and multiGet (its MULTI_GET after the CHECK) time out under their own names', async () => {
  const cases: Array<[string, number, (c: TcpStore) => Promise<unknown>]> = [
    ['get', 5, (c) => c.get('k', { timeoutMs: 60 })],
    ['get', 3, (c) => c.get('k', { timeoutMs: 60 })],
    ['multiGet', 10, (c) => c.multiGet(['k', 'l'], { timeoutMs: 60 })],
  ];
  for (const [what, held, op] of cases) {
    let hold = false;
    const f = await scriptedServer(() => (code) => (hold && code === held ? 0 : undefined));
    const c = await TcpStore.create({ port: f.port, timeoutMs: 5000, extensions: false });
    try {
      hold = true; // the scripted server answers every CHECK with READY
      const e = await rejectsWith(op(c), 'ERR_GROUPCOMM_TIMEOUT');
      assert.match(e.message, new RegExp(`^store ${what} timed out after 60ms`), `${what} (request ${held} held): ${e.message}`);
    } finally {
      await c.abort();
      await f.close();
    }
  }
});

test('publish while close() is under way is DESTROYED, and with an aborted signal ABORTED; neither writes anything', async () => {
  const host = await TcpStore.create({ port: 0, isServer: true, timeoutMs: 5000 });
  const c = await TcpStore.create({ port: host.port, timeoutMs: 5000 });
  try {
    const ctl = new AbortController();
    ctl.abort(new Error('not now'));
    await rejectsWith(c.publish(['s'], [Buffer.from('1')], { signal: ctl.signal }), 'ERR_GROUPCOMM_ABORTED');
    await rejectsWith(c.set('t', '1', { signal: ctl.signal }), 'ERR_GROUPCOMM_ABORTED');
    assert.is(await c.numKeys(), 0, 'an aborted signal sends nothing');
    // close() has begun, the connection is not shut yet: the in-memory path must not take it.
    const closing = host.close({ timeoutMs: 2000 });
    await rejectsWith(host.publish(['p'], [Buffer.from('1')]), 'ERR_GROUPCOMM_DESTROYED');
    await closing;
  } finally {
    await c.abort();
    await host.abort();
  }
});

test.run();
