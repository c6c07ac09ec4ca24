// SUBSCRIBE (groupcomm-only): a connection that receives, instead of the store keeping them,
// every key written under one prefix — first the keys already stored there (the backlog), then
// every SET / MULTI_SET as it is applied. Checked over TCP and over the in-process link of an
// isServer client, at the byte level with raw sockets, and through PrefixStore.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { PrefixStore, TcpStore, TcpStoreServer } from '../../host/index.js';
import { isGroupcommError } from '../../host/base/errors.js';
import type { Subscription } from '../../host/store/types.js';
import { Raw, VALIDATE, le64, ping, str } from './store_raw.js';
import { rejectsWith } from '../helpers/rejects.js';

const text = (b: Uint8Array) => Buffer.from(b).toString('utf8');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const SUBSCRIBE = Buffer.from([0xe6]);

type Mode = 'tcp' | 'in-process';
const MODES: Mode[] = ['tcp', 'in-process'];

/**
 * `sub` is the client that subscribes: a plain TCP client, or (in-process) the isServer client
 * whose requests reach its own server in memory. `writer` is always a separate TCP client.
 */
async function setup(mode: Mode): Promise<{ sub: TcpStore; writer: TcpStore; server: TcpStoreServer; close(): Promise<void> }> {
  if (mode === 'tcp') {
    const server = await TcpStoreServer.listen({ port: 0, subscribePrefixes: 'any' });
    const sub = await TcpStore.create({ port: server.port, timeoutMs: 5000 });
    const writer = await TcpStore.create({ port: server.port, timeoutMs: 5000 });
    return { sub, writer, server, close: async () => { await sub.close(); await writer.close(); await server.close(); } };
  }
  const sub = await TcpStore.create({ port: 0, isServer: true, timeoutMs: 5000, subscribePrefixes: 'any' });
  const writer = await TcpStore.create({ port: sub.port, timeoutMs: 5000 });
  return { sub, writer, server: sub.server!, close: async () => { await writer.close(); await sub.close(); } };
}

/** Records pushes as they come (values kept as handed over, not copied). */
function collector() {
  const got: [string, Uint8Array][] = [];
  const on = (k: string, v: Uint8Array) => { got.push([k, v]); };
  const keys = () => got.map(([k]) => k);
  async function until(n: number, timeoutMs = 5000): Promise<void> {
    const t0 = Date.now();
    while (got.length < n) {
      if (Date.now() - t0 > timeoutMs) throw new Error(`got ${got.length}/${n} pushes: ${keys().join(' ')}`);
      await sleep(5);
    }
  }
  return { got, on, keys, until };
}


/** Resolves with the argument onClose got (or throws after timeoutMs). */
function closed(s: Subscription, timeoutMs = 5000): Promise<Error | undefined> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('onClose was not called')), timeoutMs);
    s.onClose((e) => { clearTimeout(t); resolve(e); });
  });
}

for (const mode of MODES) {
  test(`${mode}: the backlog is pushed first, in insertion order, and removed; keys outside the prefix stay`, async () => {
    const { sub, writer, close } = await setup(mode);
    try {
      await writer.set('g/to/1/a', 'A');
      await writer.set('g/to/10/x', 'sibling');
      await writer.set('g/to/1', 'the prefix without its slash');
      await writer.set('g/to/1/n/m', 'nested');
      await writer.set('other', 'o');
      await writer.set('g/to/1/b', 'B');
      const before = await writer.numKeys();
      const c = collector();
      const s = await sub.subscribe('g/to/1/', c.on);
      assert.ok(s);
      await writer.set('g/to/1/live', 'L');
      await c.until(4);
      await sleep(30);
      assert.equal(c.keys(), ['g/to/1/a', 'g/to/1/n/m', 'g/to/1/b', 'g/to/1/live']);
      assert.equal(c.got.map(([, v]) => text(v)), ['A', 'nested', 'B', 'L']);
      assert.is(await writer.numKeys(), before - 3);
      assert.not.ok(await writer.check(['g/to/1/a']));
      assert.not.ok(await writer.check(['g/to/1/b']));
      assert.not.ok(await writer.check(['g/to/1/n/m']));
      assert.is(text(await writer.get('g/to/10/x')), 'sibling');
      assert.is(text(await writer.get('g/to/1')), 'the prefix without its slash');
      assert.is(text(await writer.get('other')), 'o');
      s!.close();
    } finally {
      await close();
    }
  });

  test(`${mode}: set and multiSet under the prefix are pushed in write order and never stored`, async () => {
    const { sub, writer, close } = await setup(mode);
    try {
      const c = collector();
      const s = await sub.subscribe('p/', c.on);
      const before = await writer.numKeys();
      // Pipelined, not awaited one by one: the order is the order the server applied them.
      const w = [
        writer.set('p/1', 'one'),
        writer.multiSet(['p/2', 'q/stored', 'p/deep/er/3', 'p2/stored'], ['two', 'kept', 'three', 'kept too']),
        writer.set('p/4', 'four'),
        writer.multiSet(['p/5', 'p/6'], ['five', 'six']),
        writer.set('p', 'no slash: stored'),
      ];
      await Promise.all(w);
      // A set resolves once written, not once applied; a reply on the same connection proves it.
      await writer.ping();
      // The subscriber's own pipelined connection may write under its prefix too.
      await sub.set('p/7', 'seven');
      await c.until(7);
      await sleep(30);
      assert.equal(c.keys(), ['p/1', 'p/2', 'p/deep/er/3', 'p/4', 'p/5', 'p/6', 'p/7']);
      assert.equal(c.got.map(([, v]) => text(v)), ['one', 'two', 'three', 'four', 'five', 'six', 'seven']);
      assert.is(await writer.numKeys(), before + 3);
      assert.not.ok(await writer.check(['p/1']));
      assert.not.ok(await writer.check(['p/deep/er/3']));
      assert.not.ok(await writer.check(['p/6']));
      assert.ok(await writer.check(['q/stored', 'p2/stored', 'p']));
      s!.close();
    } finally {
      await close();
    }
  });

  test(`${mode}: values of 0, 1, 5000 bytes and 3 MiB (and UTF-8 keys) arrive byte-exact`, async () => {
    const { sub, writer, close } = await setup(mode);
    try {
      const pattern = (n: number, seed: number) => new Uint8Array(n).map((_, i) => (i * 31 + seed + (i >> 11)) & 0xff);
      // Two in the backlog (one big), the rest live; the 3 MiB ones back to back, with small
      // ones between, so a view of the server's read buffer would be overwritten if it were reused.
      await writer.set('v/backlog/big', pattern(3 << 20, 7));
      await writer.set('v/backlog/ключ/é', pattern(1, 9));
      await writer.ping(); // applied before the subscription starts
      const c = collector();
      const s = await sub.subscribe('v/', c.on);
      const sent: [string, Uint8Array][] = [
        ['v/empty', new Uint8Array(0)],
        ['v/one', new Uint8Array([0xfe])],
        ['v/5000', pattern(5000, 3)],
        ['v/big1', pattern(3 << 20, 1)],
        ['v/small', pattern(10, 5)],
        ['v/big2', pattern(3 << 20, 2)],
        ['v/日本/x', pattern(4097, 4)],
      ];
      const writes = sent.map(([k, v]) => writer.set(k, v));
      await Promise.all(writes);
      await c.until(2 + sent.length, 5000);
      const expect: [string, Uint8Array][] = [['v/backlog/big', pattern(3 << 20, 7)], ['v/backlog/ключ/é', pattern(1, 9)], ...sent];
      assert.equal(c.keys(), expect.map(([k]) => k));
      for (let i = 0; i < expect.length; i++) {
        const [k, v] = expect[i];
        const g = c.got[i][1];
        assert.is(g.length, v.length, k);
        assert.ok(Buffer.from(g).equals(Buffer.from(v)), `${k}: bytes differ`);
      }
      s!.close();
    } finally {
      await close();
    }
  });

  test(`${mode}: one subscriber per prefix; after it closes, writes are stored again and a new one gets them`, async () => {
    const { sub, writer, close } = await setup(mode);
    try {
      const c1 = collector();
      const first = (await sub.subscribe('t/', c1.on))!;
      const e = await rejectsWith(writer.subscribe('t/', () => {}), 'ERR_GROUPCOMM_INVALID_ARGUMENT');
      assert.is(e.key, 't/');
      // The refused attempt did not disturb the live one.
      await writer.set('t/1', 'x');
      await c1.until(1);
      assert.equal(c1.keys(), ['t/1']);
      const ended = closed(first);
      first.close();
      assert.is(await ended, undefined);
      // Once the server noticed the close, writes under the prefix are stored again.
      let probe = '';
      const t0 = Date.now();
      for (let i = 0; ; i++) {
        assert.ok(Date.now() - t0 < 3000, 'writes under the prefix were never stored again');
        probe = `t/probe${i}`;
        await writer.set(probe, String(i));
        if (await writer.check([probe])) break;
        await sleep(10);
      }
      await writer.set('t/2', 'y');
      assert.ok(await writer.check(['t/2']));
      const c2 = collector();
      const second = (await writer.subscribe('t/', c2.on))!;
      assert.ok(second);
      await c2.until(2);
      await sleep(30);
      assert.equal(c2.keys(), [probe, 't/2']);
      assert.equal(c1.keys(), ['t/1'], 'the closed subscription got nothing more');
      assert.not.ok(await sub.check(['t/2']));
      second.close();
    } finally {
      await close();
    }
  });

  test(`${mode}: onClose gets an error when the server closes`, async () => {
    const { sub, writer, server, close } = await setup(mode);
    try {
      const s = (await sub.subscribe('s/', () => {}))!;
      const ended = closed(s);
      await server.close();
      const e = await ended;
      assert.ok(e, 'onClose got no error');
      assert.ok(isGroupcommError(e, 'ERR_GROUPCOMM_PEER_LOST'), String(e));
    } finally {
      await close().catch(() => {});
      await writer.close().catch(() => {});
    }
  });
}

test('onClose: undefined after close() (also when registered afterwards), an error when the TcpStore closes', async () => {
  const { sub, writer, close } = await setup('tcp');
  try {
    const a = (await sub.subscribe('a/', () => {}))!;
    const ended = closed(a);
    a.close();
    a.close(); // idempotent
    assert.is(await ended, undefined);
    assert.is(await closed(a, 100), undefined);
    const c = collector();
    const b = (await sub.subscribe('b/', c.on))!;
    await writer.set('b/1', '1');
    await c.until(1);
    const bEnded = closed(b);
    await sub.close();
    const e = await bEnded;
    assert.ok(e && isGroupcommError(e), `expected a GroupcommError, got ${e}`);
    // The server dropped the subscription: writes under b/ are stored again.
    const t0 = Date.now();
    for (let i = 0; ; i++) {
      assert.ok(Date.now() - t0 < 3000, 'the subscription outlived TcpStore.close()');
      await writer.set(`b/again${i}`, 'x');
      if (await writer.check([`b/again${i}`])) break;
      await sleep(10);
    }
    assert.equal(c.keys(), ['b/1']);
    await rejectsWith(sub.subscribe('c/', () => {}), 'ERR_GROUPCOMM_DESTROYED');
  } finally {
    await close();
  }
});

test('torch-compatible client (extensions: false) resolves undefined; a prefix not ending in / is rejected client-side', async () => {
  const server = await TcpStoreServer.listen({ port: 0, subscribePrefixes: 'any' });
  const plain = await TcpStore.create({ port: server.port, timeoutMs: 5000, extensions: false });
  const ext = await TcpStore.create({ port: server.port, timeoutMs: 5000 });
  try {
    assert.is(await plain.subscribe('p/', () => {}), undefined);
    // Nothing was subscribed: writes under p/ are stored.
    await ext.set('p/k', 'v');
    assert.is(text(await plain.get('p/k')), 'v');
    const conns = server.numConnections;
    await rejectsWith(ext.subscribe('p', () => {}), 'ERR_GROUPCOMM_INVALID_ARGUMENT');
    await rejectsWith(ext.subscribe('', () => {}), 'ERR_GROUPCOMM_INVALID_ARGUMENT');
    await rejectsWith(plain.subscribe('p', () => {}), 'ERR_GROUPCOMM_INVALID_ARGUMENT');
    assert.is(server.numConnections, conns, 'a refused prefix opened no connection');
  } finally {
    await plain.close();
    await ext.close();
    await server.close();
  }
});

test('raw wire: the reply byte, then `str key` `bytes value` per push; TAKEN leaves the connection usable', async () => {
  const server = await TcpStoreServer.listen({ port: 0, subscribePrefixes: 'any' });
  const writer = await TcpStore.create({ port: server.port, timeoutMs: 5000 });
  const r = await Raw.connect(server.port);
  const r2 = await Raw.connect(server.port);
  try {
    await writer.set('r/old', 'backlog');
    await writer.ping();
    // TcpStore puts '/' before every key: the wire prefix is '/r/'.
    r.write(VALIDATE, SUBSCRIBE, str('/r/'));
    assert.equal([...await r.read(1)], [0]);
    assert.ok((await r.read(8 + 6 + 8 + 7)).equals(Buffer.concat([str('/r/old'), str('backlog')])));
    await writer.multiSet(['r/a', 'r/b'], ['1', '']);
    assert.ok((await r.read(8 + 4 + 8 + 1 + 8 + 4 + 8)).equals(Buffer.concat([str('/r/a'), str('1'), str('/r/b'), le64(0)])));
    // A second subscriber is told TAKEN and stays an ordinary connection.
    r2.write(VALIDATE, SUBSCRIBE, str('/r/'), ping(77));
    assert.equal([...await r2.read(1)], [1]);
    assert.is((await r2.read(4)).readUInt32LE(0), 77);
    await sleep(30);
    assert.is(r.pending, 0, 'nothing more was pushed');
    assert.not.ok(r.closed);
  } finally {
    r.close();
    r2.close();
    await writer.close();
    await server.close();
  }
});

test('hostile raw clients: bad SUBSCRIBE prefixes and any request after SUBSCRIBE close only that connection', async () => {
  const server = await TcpStoreServer.listen({ port: 0, subscribePrefixes: 'any' });
  const good = await TcpStore.create({ port: server.port, timeoutMs: 5000 });
  const listener = await TcpStore.create({ port: server.port, timeoutMs: 5000 });
  try {
    const c = collector();
    const live = (await listener.subscribe('live/', c.on))!;
    await good.set('precious', 'kept');
    const closedBy = async (...bytes: Buffer[]) => {
      const r = await Raw.connect(server.port);
      r.write(...bytes);
      const was = await r.waitClosed(3000);
      r.close();
      return was;
    };
    assert.ok(await closedBy(VALIDATE, SUBSCRIBE, str('')), 'empty prefix');
    assert.ok(await closedBy(VALIDATE, SUBSCRIBE, str('/x')), 'no trailing slash');
    assert.ok(await closedBy(VALIDATE, SUBSCRIBE, str('/x/'), ping(1)), 'PING after SUBSCRIBE');
    assert.ok(await closedBy(VALIDATE, SUBSCRIBE, str('/y/'), Buffer.from([1]), str('/y/k'), str('v')), 'SET after SUBSCRIBE');
    assert.ok(await closedBy(VALIDATE, SUBSCRIBE, str('/z/'), SUBSCRIBE, str('/z2/')), 'SUBSCRIBE twice');
    // The server dropped those subscriptions with their connections: writes there are stored.
    await good.multiSet(['x/k', 'y/k', 'z/k', 'z2/k'], ['1', '2', '3', '4']);
    assert.ok(await good.check(['x/k', 'y/k', 'z/k', 'z2/k']));
    // Everyone else carried on.
    assert.is(text(await good.get('precious')), 'kept');
    await good.set('live/after', 'still pushed');
    await c.until(1);
    assert.equal(c.keys(), ['live/after']);
    let liveErr: Error | undefined | 'open' = 'open';
    live.onClose((e) => { liveErr = e; });
    assert.is(liveErr, 'open', 'the good subscription was closed');
    live.close();
  } finally {
    await listener.close();
    await good.close();
    await server.close();
  }
});

test('in-process subscriber: pushes are calls inside the write (nothing on the link); one that throws loses nothing for the writer', async () => {
  const s = await TcpStore.create({ port: 0, isServer: true, timeoutMs: 5000, subscribePrefixes: 'any' });
  const tcp = await TcpStore.create({ port: s.port, timeoutMs: 5000 });
  try {
    const got: string[] = [];
    const sub = await s.subscribe('in/', (k, v) => {
      if (k === 'in/boom') throw new Error('subscriber bug');
      got.push(`${k}=${text(v)}`);
    });
    assert.ok(sub);
    // No connection was opened for it: the server still has only the two clients' main links.
    assert.is(s.server!.numConnections, 2);
    await tcp.set('in/a', '1');
    await tcp.set('in/boom', 'x');
    await tcp.multiSet(['in/b', 'out/c'], ['2', '3']);
    assert.is(text(await tcp.get('out/c')), '3', 'the writer\'s connection survived the throwing subscriber');
    assert.equal(got, ['in/a=1', 'in/b=2']);
    assert.not.ok(await tcp.check(['in/boom']), 'a pushed key is not stored even when its subscriber threw');
    sub!.close();
    await tcp.set('in/d', '4');
    assert.ok(await tcp.check(['in/d']), 'stored again once the subscriber closed');
  } finally {
    await tcp.close();
    await s.close();
  }
});

test('PrefixStore: subscribe(p/) receives keys written as x/p/... with x/ stripped', async () => {
  for (const mode of MODES) {
    const { sub, writer, close } = await setup(mode);
    try {
      const c = collector();
      const ps = new PrefixStore('x', sub);
      await writer.set('x/p/old', 'backlog');
      await writer.ping();
      const s = (await ps.subscribe('p/', c.on))!;
      assert.ok(s);
      await new PrefixStore('x', writer).set('p/1', 'via prefix store');
      await writer.set('x/p/n/2', 'plain');
      await writer.set('p/3', 'outside x/: stored');
      await c.until(3);
      await sleep(30);
      assert.equal(c.keys(), ['p/old', 'p/1', 'p/n/2'], mode);
      assert.equal(c.got.map(([, v]) => text(v)), ['backlog', 'via prefix store', 'plain']);
      assert.ok(await writer.check(['p/3']));
      // Nested prefix stores strip every level.
      const c2 = collector();
      const s2 = (await new PrefixStore('b', new PrefixStore('a', sub)).subscribe('q/', c2.on))!;
      await writer.set('a/b/q/k', 'deep');
      await c2.until(1);
      assert.equal(c2.keys(), ['q/k']);
      s.close();
      s2.close();
    } finally {
      await close();
    }
  }
});

test.run();
