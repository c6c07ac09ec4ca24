// Messages (host/pg/messages.ts) on its own, over a real TcpStore and PushMailboxes: the key
// layout, per-peer sequence numbers, a broadcast fanned out or stored once with its ack counter,
// and how a store failure is re-labelled with the ranks waited for.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Messages, type MessagesOptions } from '../../host/pg/messages.js';
import { PushMailbox } from '../../host/pg/mailbox.js';
import { OpTracker } from '../../host/pg/tracker.js';
import { TcpStore } from '../../host/index.js';
import type { Store } from '../../host/store/types.js';
import { isGroupcommError, peerLostError, timeoutError, invalidArgument } from '../../host/base/errors.js';
import { failure } from '../helpers/rejects.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const str = (b: Uint8Array) => Buffer.from(b).toString();

const opts = (rank: number, worldSize: number, store: Store, o: Partial<MessagesOptions> = {}): MessagesOptions =>
  ({ rank, worldSize, groupName: 'g', epoch: 3, store, timeoutMs: 2000, ownsStore: false, tracker: new OpTracker(), ...o });

/** `n` ranks' Messages on one store, each with a push mailbox subscribed to its inbox. */
async function ranks(s: TcpStore, n: number, o: Partial<MessagesOptions> = {}): Promise<Messages[]> {
  const ms: Messages[] = [];
  for (let r = 0; r < n; r++) {
    const m = new Messages(opts(r, n, s, o));
    const box = new PushMailbox();
    const inbox = m.inbox(r);
    const sub = await s.subscribe(inbox, (k, v) => box.deliver(k.slice(inbox.length), v));
    box.attach(sub!);
    m.mailbox = box;
    ms.push(m);
  }
  return ms;
}

/**
 * A client of a server in this process, as every rank but the store's host has: its publish goes
 * over a socket (publishesLocally false), so big broadcasts take the stored-once path.
 */
async function withStore(fn: (s: TcpStore) => Promise<void>): Promise<void> {
  const server = await TcpStore.create({ port: 0, isServer: true, timeoutMs: 5000 });
  const s = await TcpStore.create({ host: '127.0.0.1', port: server.port, timeoutMs: 5000 });
  try {
    assert.not.ok(s.publishesLocally);
    await fn(s);
  } finally {
    await s.close();
    await server.close();
  }
}

test('keys: ns is "<group>/<epoch>/", inboxes "<ns>to/<rank>/", others every rank but this one', () => {
  const m = new Messages(opts(1, 3, {} as Store));
  assert.is(m.ns, 'g/3/');
  assert.equal(m.others, [0, 2]);
  assert.equal([0, 1, 2].map((r) => m.inbox(r)), ['g/3/to/0/', 'g/3/to/1/', 'g/3/to/2/']);
  assert.is(m.rank, 1);
  assert.is(m.worldSize, 3);
  assert.is(m.timeoutMs, 2000);
  assert.is(m.tracer, undefined, 'no tracing unless GROUPCOMM_DEBUG asks');
});

test('send/recv: per-peer sequence numbers, in order; the origin names the key and the source', async () => {
  await withStore(async (s) => {
    const [a, b, c] = await ranks(s, 3);
    await a.send(Buffer.from('a0'), 1, 'send');
    await a.send(Buffer.from('a1'), 1, 'send');
    await c.send(Buffer.from('c0'), 1, 'send');
    await a.send(Buffer.from('to2'), 2, 'send');
    const [v1, o1] = await b.recv(0, 'recv');
    assert.is(str(v1), 'a0');
    assert.equal(o1, { key: 'g/3/to/1/p/0/0', src: 0 });
    assert.is(str((await b.recv(2, 'recv'))[0]), 'c0');
    const [v2, o2] = await b.recv(0, 'recv');
    assert.is(str(v2), 'a1');
    assert.is(o2.key, 'g/3/to/1/p/0/1');
    assert.equal((await c.recv(0, 'recv'))[1], { key: 'g/3/to/2/p/0/0', src: 0 });
  });
});

test('broadcast up to 64 KiB: one key per reader, nothing stored', async () => {
  await withStore(async (s) => {
    const [a, b, c] = await ranks(s, 3);
    const small = Buffer.alloc(64 * 1024, 7);
    await a.bcastSend(small, 'bcast');
    const [vb, ob] = await b.bcastRecv(0, 'bcast');
    assert.is(vb.length, small.length);
    assert.equal(ob, { key: 'g/3/to/1/b/0/0', src: 0 });
    assert.is((await c.bcastRecv(0, 'bcast'))[0].length, small.length);
    assert.equal(a.stored, []);
    assert.not.ok(await s.check(['g/3/b/0/0']));
    await a.bcastSend(Buffer.from('second'), 'bcast');
    await a.bcastSend(Buffer.from('third'), 'bcast');
    assert.equal([str((await b.bcastRecv(0, 'bcast'))[0]), str((await b.bcastRecv(0, 'bcast'))[0])], ['second', 'third']);
  });
});

test('broadcast over 64 KiB to 2+ readers: stored once, markers to the readers; the last ack deletes value and counter', async () => {
  await withStore(async (s) => {
    const [a, b, c] = await ranks(s, 3);
    const big = Buffer.alloc(64 * 1024 + 1, 9);
    await a.bcastSend(big, 'bcast');
    assert.equal(a.stored, ['g/3/b/0/0']);
    assert.ok(await s.check(['g/3/b/0/0']));
    const [vb, ob] = await b.bcastRecv(0, 'bcast');
    assert.ok(Buffer.from(vb).equals(big));
    assert.equal(ob, { key: 'g/3/b/0/0', src: 0 });
    await sleep(30); // the ack is a queued cleanup
    assert.is(str(await s.get('g/3/b/0/0/ack')), '1');
    assert.equal(b.stored, ['g/3/b/0/0'], 'not the last reader: remembered');
    const [vc] = await c.bcastRecv(0, 'bcast');
    assert.is(vc.length, big.length);
    await sleep(30);
    assert.not.ok(await s.check(['g/3/b/0/0']), 'the last reader deleted the value');
    assert.not.ok(await s.check(['g/3/b/0/0/ack']), 'and the counter');
    assert.equal(c.stored, []);
  });
});

test('broadcast over 64 KiB to one reader goes to its mailbox', async () => {
  await withStore(async (s) => {
    const [a, b] = await ranks(s, 2);
    await a.bcastSend(Buffer.alloc(70_000, 1), 'bcast');
    assert.equal(a.stored, []);
    const [v, o] = await b.bcastRecv(0, 'bcast');
    assert.is(v.length, 70_000);
    assert.is(o.key, 'g/3/to/1/b/0/0');
  });
});

test('a receive that times out names its source rank and its key', async () => {
  await withStore(async (s) => {
    const [, b] = await ranks(s, 3);
    const e = await failure(b.recv(2, 'recv', { timeoutMs: 50 }));
    assert.is(e.code, 'ERR_GROUPCOMM_TIMEOUT');
    assert.is(e.rank, 1);
    assert.is(e.peerRank, 2);
    assert.equal(e.peerRanks, [2]);
    assert.is(e.key, 'g/3/to/1/p/2/0');
    assert.is(e.timeoutMs, 50);
  });
});

test('take of several: a timeout names the senders still missing, and the first missing key', async () => {
  await withStore(async (s) => {
    const [a, b, c] = await ranks(s, 3);
    await c.send(Buffer.from('x'), 0, 'send');
    const e = await failure(a.take(['p/1/0', 'p/2/0'], [1, 2], 'l', 'gather', { timeoutMs: 60 }));
    assert.is(e.code, 'ERR_GROUPCOMM_TIMEOUT');
    assert.is(e.peerRank, 1);
    assert.equal(e.peerRanks, [1]);
    assert.is(e.key, 'g/3/to/0/p/1/0');
    void b;
  });
});

test('a receive from a closed mailbox fails with the close\'s reason (no keys to name)', async () => {
  await withStore(async (s) => {
    const [, b] = await ranks(s, 2);
    const reason = peerLostError('group gone');
    b.mailbox!.close(reason);
    assert.is(await failure(b.recv(0, 'recv')), reason);
  });
});

test('fail: timeouts name the peers (peerRank only for one); other groupcomm errors pass; anything else is PROTOCOL with the key', () => {
  const m = new Messages(opts(2, 4, {} as Store));
  const cause = timeoutError('store wait timed out');
  const many = m.fail(cause, 'gather', [0, 3], 'k', 100);
  assert.is(many.code, 'ERR_GROUPCOMM_TIMEOUT');
  assert.is(many.peerRank, undefined);
  assert.equal(many.peerRanks, [0, 3]);
  assert.is(many.rank, 2);
  assert.is(many.key, 'k');
  assert.is(many.timeoutMs, 100);
  assert.is(many.cause, cause);
  assert.match(many.message, /ranks \[0, 3\]/);
  assert.is(m.fail(cause, 'recv', [3], 'k', 100).peerRank, 3);

  const other = invalidArgument('bad');
  assert.is(m.fail(other, 'send', [1], 'k', 100), other);
  const lost = peerLostError('gone');
  assert.is(m.fail(lost, 'send', [1], 'k', 100), lost, 'a group that does not own its store passes PEER_LOST on');

  const odd = m.fail(new Error('boom'), 'send', [1], 'k', 100);
  assert.is(odd.code, 'ERR_GROUPCOMM_PROTOCOL');
  assert.is(odd.rank, 2);
  assert.is(odd.key, 'k');
  assert.ok(isGroupcommError(m.fail('text', 'send', [1], 'k', 100), 'ERR_GROUPCOMM_PROTOCOL'));
});

test('fail: with its own store, PEER_LOST on a rank other than 0 is rank 0\'s server gone', () => {
  const lost = peerLostError('connection reset');
  const m = new Messages(opts(2, 4, {} as Store, { ownsStore: true }));
  const e = m.fail(lost, 'recv', [3], 'k', 100);
  assert.is(e.code, 'ERR_GROUPCOMM_PEER_LOST');
  assert.not.equal(e, lost);
  assert.is(e.peerRank, 0);
  assert.equal(e.peerRanks, [0]);
  assert.is(e.rank, 2);
  assert.is(e.key, 'k');
  assert.is(e.cause, lost);
  const m0 = new Messages(opts(0, 4, {} as Store, { ownsStore: true }));
  assert.is(m0.fail(lost, 'recv', [3], 'k', 100), lost, 'rank 0 hosts the server itself');
});

test('a write that times out names its destinations and its first key (the stored value\'s, for a big broadcast)', async () => {
  await withStore(async (s) => {
    // The store's write fails as a store whose server stopped reading would fail it.
    const stuck = new Proxy(s, {
      get: (t, p) => p === 'publish' ? () => Promise.reject(timeoutError('store publish timed out'))
        : ((v) => typeof v === 'function' ? v.bind(t) : v)(Reflect.get(t, p, t)),
    }) as unknown as Store;
    const m = new Messages(opts(0, 3, stuck));
    const e = await failure(m.send(Buffer.from('x'), 2, 'send', { timeoutMs: 70 }));
    assert.is(e.code, 'ERR_GROUPCOMM_TIMEOUT');
    assert.is(e.peerRank, 2);
    assert.is(e.key, 'g/3/to/2/p/0/0');
    assert.is(e.timeoutMs, 70);
    const big = await failure(m.bcastSend(Buffer.alloc(70_000), 'bcast'));
    assert.equal(big.peerRanks, [1, 2]);
    assert.is(big.key, 'g/3/b/0/0');
    const small = await failure(m.bcastSend(Buffer.alloc(10), 'bcast'));
    assert.is(small.key, 'g/3/to/1/b/0/1');
  });
});

test('a store without publish: set for one destination, multiSet for several', async () => {
  await withStore(async (s) => {
    const calls: string[] = [];
    const plain = new Proxy(s, {
      get: (t, p) => p === 'publish' ? undefined
        : ((v) => typeof v === 'function' ? (...a: unknown[]) => { calls.push(String(p)); return v.apply(t, a); } : v)(Reflect.get(t, p, t)),
    }) as unknown as Store;
    const m = new Messages(opts(0, 3, plain));
    await m.send(Buffer.from('one'), 1, 'send');
    await m.bcastSend(Buffer.from('all'), 'bcast');
    await m.bcastSend(Buffer.alloc(70_000, 5), 'bcast');
    assert.equal(calls, ['set', 'multiSet', 'multiSet']);
    assert.is(str(await s.get('g/3/to/1/p/0/0')), 'one');
    assert.equal((await s.multiGet(['g/3/to/1/b/0/0', 'g/3/to/2/b/0/0'])).map(str), ['all', 'all']);
    assert.equal((await s.multiGet(['g/3/to/1/b/0/1', 'g/3/to/2/b/0/1'])).map((v) => v.length), [0, 0], 'markers');
    assert.is((await s.get('g/3/b/0/1')).length, 70_000);
  });
});

test('a marker whose stored value never comes: TIMEOUT naming the source and the stored key', async () => {
  await withStore(async (s) => {
    const [, b] = await ranks(s, 3);
    await s.set('g/3/to/1/b/0/0', '');
    const t0 = performance.now();
    const e = await failure(b.bcastRecv(0, 'bcast', { timeoutMs: 80 }));
    assert.ok(performance.now() - t0 < 1000, 'the stored value\'s read gets what is left of the 80 ms');
    assert.is(e.code, 'ERR_GROUPCOMM_TIMEOUT');
    assert.is(e.peerRank, 0);
    assert.is(e.key, 'g/3/b/0/0');
  });
});

test('stored keys: only the latest 1024 to 2048 are remembered', async () => {
  const failing = new Proxy({} as Store, { get: (_, p) => p === 'publish' ? () => Promise.reject(timeoutError('t')) : undefined });
  const m = new Messages(opts(0, 3, failing));
  const big = Buffer.alloc(70_000);
  await Promise.all(Array.from({ length: 2048 }, () => m.bcastSend(big, 'bcast').catch(() => {})));
  assert.is(m.stored.length, 2048, 'up to 2048 kept');
  await m.bcastSend(big, 'bcast').catch(() => {});
  assert.is(m.stored.length, 1025);
  assert.is(m.stored[0], 'g/3/b/0/1024');
  assert.is(m.stored[1024], 'g/3/b/0/2048');
});

test('discard: through Store.discard when the store has it, else one deleteKey per key', async () => {
  await withStore(async (s) => {
    await s.multiSet(['d/1', 'd/2', 'd/3'], ['1', '2', '3']);
    const used: string[] = [];
    const spied = new Proxy(s, {
      get: (t, p) => ((v) => typeof v === 'function' ? (...a: unknown[]) => { used.push(String(p)); return v.apply(t, a); } : v)(Reflect.get(t, p, t)),
    }) as unknown as Store;
    await new Messages(opts(0, 2, spied)).discard(['d/1']);
    assert.equal(used, ['discard']);
    const deletes: string[] = [];
    const plain = new Proxy(s, {
      get: (t, p) => p === 'discard' ? undefined
        : p === 'deleteKey' ? (k: string) => { deletes.push(k); return t.deleteKey(k); }
          : ((v) => typeof v === 'function' ? v.bind(t) : v)(Reflect.get(t, p, t)),
    }) as unknown as Store;
    await new Messages(opts(0, 2, plain)).discard(['d/2', 'd/3']);
    assert.equal(deletes, ['d/2', 'd/3']);
    await sleep(20);
    assert.equal(await Promise.all(['d/1', 'd/2', 'd/3'].map((k) => s.check([k]))), [false, false, false]);
  });
});

test.run();
