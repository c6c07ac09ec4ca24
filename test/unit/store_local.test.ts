// The in-process link between a TcpStore created with isServer and its own server (local.ts):
// same protocol as over TCP, no sockets.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { TcpStore } from '../../host/index.js';
import { isGroupcommError } from '../../host/base/errors.js';

const text = (b: Uint8Array) => Buffer.from(b).toString('utf8');
const remote = (s: TcpStore) => (s as unknown as { main: { socket: { remoteAddress?: string } } }).main.socket.remoteAddress;

test('isServer: the master client and its clones talk to the server in memory; inProcess: false uses TCP', async () => {
  const s = await TcpStore.create({ port: 0, isServer: true, timeoutMs: 10_000 });
  const tcp = await TcpStore.create({ port: 0, isServer: true, inProcess: false, timeoutMs: 10_000 });
  try {
    assert.is(remote(s), 'in-process');
    const c = await s.clone();
    assert.is(remote(c), 'in-process');
    await c.close();
    assert.is(remote(tcp), '127.0.0.1');
    assert.ok(s.extended, 'the handshake ran over the link and found the extensions');
  } finally {
    await s.close();
    await tcp.close();
  }
});

test('in-process and TCP clients see each other\'s writes, blocking gets and waits included', async () => {
  const s = await TcpStore.create({ port: 0, isServer: true, timeoutMs: 10_000 });
  const other = await TcpStore.create({ port: s.port, timeoutMs: 10_000 });
  try {
    const g = s.get('from-tcp');
    const w = other.get('from-local');
    await new Promise((r) => setTimeout(r, 20));
    await other.set('from-tcp', 'a');
    await s.set('from-local', 'b');
    assert.is(text(await g), 'a');
    assert.is(text(await w), 'b');
    const big = new Uint8Array(3 << 20).map((_, i) => i & 0xff);
    await s.set('big', big);
    big[0] = 99;
    assert.equal(await other.get('big').then((v) => v[0]), 0, 'the stored value is a copy');
    assert.is(await s.add('n', 5), 5);
  } finally {
    await other.close();
    await s.close();
  }
});

test('a client polling check in a loop still lets the server serve other connections', async () => {
  const s = await TcpStore.create({ port: 0, isServer: true, timeoutMs: 10_000 });
  const other = await TcpStore.create({ port: s.port, timeoutMs: 10_000 });
  try {
    setTimeout(() => { void other.set('flag', '1'); }, 20);
    let polls = 0;
    while (!(await s.check(['flag']))) polls++;
    assert.ok(polls > 0);
  } finally {
    await other.close();
    await s.close();
  }
});

test('closing the server fails the in-process client\'s pending get with PEER_LOST', async () => {
  const s = await TcpStore.create({ port: 0, isServer: true, timeoutMs: 10_000 });
  try {
    const g = s.get('never', { timeoutMs: 10_000 });
    await new Promise((r) => setTimeout(r, 20));
    await s.server!.close();
    try {
      await g;
      assert.unreachable('get should fail');
    } catch (e) {
      assert.ok(isGroupcommError(e, 'ERR_GROUPCOMM_PEER_LOST'), String(e));
    }
  } finally {
    await s.close();
  }
});

test('a polling loop of check on the in-process link yields to the event loop: timers and TCP writes get through', async () => {
  const s = await TcpStore.create({ port: 0, isServer: true, timeoutMs: 10_000 });
  const other = await TcpStore.create({ port: s.port, timeoutMs: 10_000 });
  try {
    let fired = 0;
    setTimeout(() => { fired++; }, 0);
    let sawTimer = false;
    const t0 = performance.now();
    while (performance.now() - t0 < 50) {
      assert.not.ok(await s.check(['missing']));
      if (fired) {
        sawTimer = true;
        break;
      }
    }
    assert.ok(sawTimer, 'a setTimeout(0) never ran during 50 ms of in-process checks');
    // A TCP client's write lands while the in-process client polls, and the poll sees it.
    let sent = false;
    setTimeout(() => { void other.set('tcp-flag', 'x').then(() => { sent = true; }); }, 0);
    let seen = false;
    const t1 = performance.now();
    while (performance.now() - t1 < 2000) {
      if (await s.check(['tcp-flag'])) {
        seen = true;
        break;
      }
    }
    assert.ok(seen, `the TCP client's set was never seen (its reply came: ${sent})`);
  } finally {
    await other.close();
    await s.close();
  }
});

test('an in-process writer\'s requests and the pushes to an in-process subscriber keep program order; each write is pushed before it is acknowledged', async () => {
  const s = await TcpStore.create({ port: 0, isServer: true, timeoutMs: 10_000, subscribePrefixes: 'any' });
  const w = await s.clone();
  try {
    assert.is(remote(w), 'in-process');
    const got: string[] = [];
    const sub = await s.subscribe('sub/', (k, v) => { got.push(`${k}=${text(v)}`); });
    assert.ok(sub);
    const want: string[] = [];
    const acked: Promise<void>[] = [];
    const counts: Promise<number>[] = [];
    for (let i = 0; i < 300; i++) {
      if (i % 3 === 0) {
        want.push(`${i}=v${i}`);
        const before = want.length;
        acked.push(w.set(`sub/${i}`, `v${i}`).then(() => {
          assert.ok(got.length >= before, `set sub/${i} acknowledged before its push (${got.length} pushes of ${before})`);
        }));
      } else if (i % 3 === 1) {
        want.push(`${i}a=A${i}`, `${i}b=B${i}`);
        acked.push(w.multiSet([`sub/${i}a`, `other/${i}`, `sub/${i}b`], [`A${i}`, `O${i}`, `B${i}`]));
      } else {
        counts.push(w.add('counter', 1));
        if (i % 6 === 2) acked.push(s.set(`other/s${i}`, 'x'));
      }
    }
    await Promise.all(acked);
    assert.equal(await Promise.all(counts), [...Array(100).keys()].map((k) => k + 1), 'adds applied in program order');
    assert.equal(got, want.map((x) => `sub/${x}`));
    assert.is(text(await w.get('other/1')), 'O1');
    await sub!.close();
  } finally {
    await w.close();
    await s.close();
  }
});

test.run();
