// TcpStore's operations (host/store/client.ts) where they refuse or wait: each refusal of an
// oversized request names the operation that refused it (nothing is sent, the connection
// stays); close() lets reads waiting for their keys finish, their later requests included; a
// read that times out names its key, and queuePop keeps to its own deadline.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { TcpStore } from '../../host/index.js';
import { rejectsWith } from '../helpers/rejects.js';

const text = (b: Uint8Array | undefined) => Buffer.from(b!).toString('utf8');
const big = 'x'.repeat(33);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('every refusal of an oversized request names the operation that refused it; nothing is sent and the connection stays', async () => {
  const s = await TcpStore.create({ port: 0, isServer: true, inProcess: false, timeoutMs: 5000, limits: { maxValueBytes: 32, maxKeysPerRequest: 4, maxRequestBytes: 200 } });
  const c = await TcpStore.create({ port: s.port, timeoutMs: 5000 });
  try {
    const five = ['a', 'b', 'c', 'd', 'e'];
    const four = ['a', 'b', 'c', 'd'];
    const v30 = (n: number) => Array.from({ length: n }, () => Buffer.from('y'.repeat(30)));
    const cases: [string, () => Promise<unknown>][] = [
      ['set', () => c.set('k', big)],
      ['compareSet', () => c.compareSet('k', big, 'a')],
      ['compareSet', () => c.compareSet('k', 'a', big)],
      ['append', () => c.append('k', big)],
      ['queuePush', () => c.queuePush('q', big)],
      ['multiSet', () => c.multiSet(['a'], [big])],
      ['multiSet', () => c.multiSet(five, five)],
      ['multiSet', () => c.multiSet(four, v30(4))],
      ['publish', () => c.publish(['a'], [Buffer.from(big)])],
      ['publish', () => c.publish(five, five.map((k) => Buffer.from(k)))],
      ['publish', () => c.publish(four, v30(4))],
      ['check', () => c.check(five)],
      ['wait', () => c.wait(five)],
      ['multiGet', () => c.multiGet(five)],
    ];
    for (const [op, call] of cases) {
      const e = await rejectsWith(call(), 'ERR_GROUPCOMM_INVALID_ARGUMENT');
      assert.ok(e.message.startsWith(`${op}: `), `${op} refused as: ${e.message}`);
    }
    assert.is(await c.numKeys(), 0, 'nothing was written');
    await c.set('k', 'fits');
    assert.is(text(await c.get('k')), 'fits', 'the connection still works');
    // A counter past Number's exact range: the add is done on the server, the answer refused by name.
    const e = await rejectsWith(c.add('n', 2n ** 60n), 'ERR_GROUPCOMM_PROTOCOL');
    assert.match(e.message, /^add returned 1152921504606846976/);
  } finally {
    await c.close();
    await s.close();
  }
});

test('close() lets reads waiting for their keys finish, their later requests too: multiGet without extensions (WAIT, then MULTI_GET), queuePop (QUEUE_POP again once the wait ends), take', async () => {
  const s = await TcpStore.create({ port: 0, isServer: true, inProcess: false, timeoutMs: 5000 });
  const torch = await TcpStore.create({ port: s.port, timeoutMs: 5000, extensions: false });
  const ext = await TcpStore.create({ port: s.port, timeoutMs: 5000 });
  try {
    await s.set('a', '1');
    const many = torch.multiGet(['a', 'b']);
    const popped = torch.queuePop('q');
    const taken = ext.take('t');
    await sleep(50);
    const closing = [torch.close(), ext.close()];
    await rejectsWith(torch.get('a'), 'ERR_GROUPCOMM_DESTROYED');
    await s.set('b', '2');
    await s.queuePush('q', 'x');
    await s.set('t', 'T');
    assert.equal((await many).map(text), ['1', '2']);
    assert.is(text(await popped), 'x');
    assert.is(text(await taken), 'T');
    await Promise.all(closing);
  } finally {
    await torch.abort();
    await ext.abort();
    await s.close();
  }
});

test('a read that times out names its key: get without extensions, take, queuePop; queuePop waits out its own timeout, no less', async () => {
  const s = await TcpStore.create({ port: 0, isServer: true, inProcess: false, timeoutMs: 5000 });
  const torch = await TcpStore.create({ port: s.port, timeoutMs: 5000, extensions: false });
  try {
    const g = await rejectsWith(torch.get('gk', { timeoutMs: 150 }), 'ERR_GROUPCOMM_TIMEOUT');
    assert.equal(g.keys, ['gk']);
    assert.match(g.message, 'gk');
    const t = await rejectsWith(s.take('tk', { timeoutMs: 150 }), 'ERR_GROUPCOMM_TIMEOUT');
    assert.equal(t.keys, ['tk']);
    for (const c of [s, torch]) {
      const t0 = performance.now();
      const q = await rejectsWith(c.queuePop('qk', { timeoutMs: 300 }), 'ERR_GROUPCOMM_TIMEOUT');
      const ms = performance.now() - t0;
      assert.ok(ms >= 250 && ms < 3000, `queuePop gave up after ${ms} ms, its timeout is 300`);
      assert.equal(q.keys, ['qk']);
      assert.is(q.timeoutMs, 300);
    }
    assert.is(await s.queueLen('qk'), 0);
  } finally {
    await torch.close();
    await s.close();
  }
});

test.run();
