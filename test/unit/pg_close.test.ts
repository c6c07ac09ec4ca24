// Leaving a process group (host/pg/close.ts) on its own, over a real TcpStore: the departure
// handshake (the lowest surviving rank leaves last), the keys the leader deletes, stored
// broadcast values of dead readers, and holding dead ranks' mailboxes (reclaim).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { closeGroup, cleanup, discardStored, reclaimMailboxes, type GroupState } from '../../host/pg/close.js';
import { Messages } from '../../host/pg/messages.js';
import { PushMailbox } from '../../host/pg/mailbox.js';
import { OpTracker } from '../../host/pg/tracker.js';
import { withStore } from '../helpers/server_store.js';
import { TcpStore } from '../../host/index.js';
import type { Store, Subscription } from '../../host/store/types.js';
import type { GroupcommError } from '../../host/base/errors.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function state(store: Store, rank: number, worldSize: number, o: Partial<GroupState> = {}): GroupState {
  const base = { rank, worldSize, groupName: 'g', epoch: 2, store, timeoutMs: 2000, ownsStore: false, tracker: new OpTracker() };
  return {
    ...base,
    msgs: new Messages(base),
    life: new AbortController(),
    dead: new Set<number>(),
    sinks: new Map<number, Subscription>(),
    closing: () => false,
    ...o,
  };
}

const has = async (s: Store, ks: string[]) => Promise.all(ks.map((k) => s.check([k])));
const noAbort = () => Promise.resolve();

test('close: the others depart first, the last of them opens bye/all, the leader then deletes the group\'s keys', async () => {
  await withStore(async (s) => {
    await s.multiSet(['g/open', 'g/2/all', 'g/epoch'], ['2', '1', '2']);
    const sts = [0, 1, 2].map((r) => state(s, r, 3));
    const order: number[] = [];
    const closes = sts.map((st, r) => closeGroup(st, {}, noAbort, () => {}).then(() => order.push(r)));
    await Promise.all(closes);
    assert.is(order[order.length - 1], 0, `rank 0 left last (${order})`);
    assert.equal(await has(s, ['g/open', 'g/2/all', 'g/2/bye', 'g/2/bye/all', 'g/epoch']), [false, false, false, false, false]);
    assert.is(s.server!.numKeys, 0, 'no key left at all');
  });
});

test('close: the leader waits until every other rank departed; the others delete nothing, stored values stay with their acks', async () => {
  await withStore(async (s) => {
    await s.multiSet(['g/open', 'g/2/b/1/0'], ['2', 'v']);
    const sts = [0, 1, 2].map((r) => state(s, r, 3));
    sts[1].msgs.stored.push('g/2/b/1/0');
    const done: number[] = [];
    const c0 = closeGroup(sts[0], {}, noAbort, () => {}).then(() => done.push(0));
    await closeGroup(sts[1], {}, noAbort, () => {});
    await sleep(80);
    assert.equal(done, [], 'rank 0 still waits for rank 2');
    assert.ok(await s.check(['g/open']), 'a non-leader deleted nothing');
    assert.ok(await s.check(['g/2/b/1/0']), 'no dead rank: a stored value is the ack protocol\'s');
    await closeGroup(sts[2], {}, noAbort, () => {});
    await c0;
    assert.not.ok(await s.check(['g/open']));
  });
});

test('close: an abort (of the group) while the leader waits for the others ends the wait at once', async () => {
  await withStore(async (s) => {
    const st = state(s, 0, 2);
    const t0 = performance.now();
    const p = closeGroup(st, { timeoutMs: 4000 }, noAbort, () => {});
    await sleep(50);
    st.life.abort('abort()');
    await p;
    assert.ok(performance.now() - t0 < 1500, `close ended ${performance.now() - t0} ms after it began`);
  });
});

test('close: the mailbox is closed with DESTROYED, the sinks closed, and a store the group owns closed', async () => {
  await withStore(async (s) => {
    const owned = await TcpStore.create({ port: s.port, timeoutMs: 5000 });
    const st = state(owned, 0, 1, { ownsStore: true });
    const box = new PushMailbox();
    st.msgs.mailbox = box;
    let sinksClosed = 0;
    await closeGroup(st, {}, noAbort, () => { sinksClosed++; });
    let err: GroupcommError | undefined;
    await box.take(['x'], 'l', { timeoutMs: 1000 }, 'op').catch((e) => { err = e; });
    assert.is(err?.code, 'ERR_GROUPCOMM_DESTROYED');
    assert.is(err?.rank, 0);
    assert.is(sinksClosed, 1);
    assert.is((await owned.numKeys().catch((e) => e)).code, 'ERR_GROUPCOMM_DESTROYED', 'the owned store was closed');
    const kept = state(s, 0, 1);
    await closeGroup(kept, {}, noAbort, () => {});
    assert.type(await s.numKeys(), 'number', 'a store the group does not own stays open');
  });
});

test('close with a dead rank: the survivors\' count decides; rank 0 dead makes rank 1 the leader', async () => {
  await withStore(async (s) => {
    const dead0 = new Set([0]);
    const a = state(s, 1, 3, { dead: new Set(dead0) });
    const b = state(s, 2, 3, { dead: new Set(dead0) });
    await s.set('g/open', '2');
    const order: number[] = [];
    await Promise.all([a, b].map((st) => closeGroup(st, {}, noAbort, () => {}).then(() => order.push(st.rank))));
    assert.equal(order, [2, 1], 'rank 1, the lowest survivor, left last');
    assert.equal(await has(s, ['g/open', 'g/2/bye', 'g/2/bye/all']), [false, false, false]);
  });
});

test('close, the only survivor: no waiting for a departure; stored broadcast values of the dead are deleted', async () => {
  await withStore(async (s) => {
    const st = state(s, 0, 2, { dead: new Set([1]) });
    await s.multiSet(['g/2/b/0/0', 'g/2/b/0/0/ack'], ['v', '0']);
    st.msgs.stored.push('g/2/b/0/0');
    const t0 = performance.now();
    await closeGroup(st, { timeoutMs: 3000 }, noAbort, () => {});
    assert.ok(performance.now() - t0 < 1000, 'did not wait for bye/all');
    assert.equal(await has(s, ['g/2/b/0/0', 'g/2/b/0/0/ack']), [false, false]);
    assert.equal(st.msgs.stored, []);
  });
});

test('close with an aborted signal: no departure, no cleanup; the mailbox is still closed', async () => {
  await withStore(async (s) => {
    await s.set('g/open', '2');
    const st = state(s, 0, 2);
    st.msgs.mailbox = new PushMailbox();
    const ac = new AbortController();
    ac.abort('stop');
    const t0 = performance.now();
    await closeGroup(st, { signal: ac.signal }, noAbort, () => {});
    assert.ok(performance.now() - t0 < 500);
    assert.equal(await has(s, ['g/open', 'g/2/bye']), [true, false]);
    assert.is((await st.msgs.mailbox.take(['x'], 'l', { timeoutMs: 100 }, 'op').catch((e) => e)).code, 'ERR_GROUPCOMM_DESTROYED');
  });
});

test('close waits for the operations in flight; past its timeout it calls abort with the reason', async () => {
  await withStore(async (s) => {
    const st = state(s, 0, 1);
    let release!: () => void;
    st.tracker.track(new Promise<void>((r) => { release = r; }));
    const reasons: unknown[] = [];
    const abort = async (why: unknown) => { reasons.push(why); st.life.abort(why); };
    const t0 = performance.now();
    await closeGroup(st, { timeoutMs: 100 }, abort, () => {});
    assert.ok(performance.now() - t0 >= 90);
    assert.is(reasons.length, 1);
    assert.match(String(reasons[0]), /100ms/);
    release();

    // One that finishes in time: no abort.
    const st2 = state(s, 0, 1);
    st2.tracker.track(sleep(30));
    const r2: unknown[] = [];
    await closeGroup(st2, { timeoutMs: 2000 }, async (w) => { r2.push(w); }, () => {});
    assert.is(st2.tracker.pending.size, 0);
    assert.equal(r2, []);
  });
});

test('discardStored: each value with its ack counter, 4096 keys per request; without Store.discard, deleteKey', async () => {
  await withStore(async (s) => {
    const batches: number[] = [];
    const counted = new Proxy(s, {
      get: (t, p) => p === 'discard' ? (keys: string[], o: unknown) => { batches.push(keys.length); return t.discard(keys, o as never); }
        : ((v) => typeof v === 'function' ? v.bind(t) : v)(Reflect.get(t, p, t)),
    }) as unknown as Store;
    const st = state(counted, 0, 2);
    for (let i = 0; i < 2100; i++) st.msgs.stored.push(`g/2/b/0/${i}`);
    await s.multiSet(['g/2/b/0/0', 'g/2/b/0/0/ack', 'g/2/b/0/2099', 'g/2/b/0/2099/ack'], ['v', '1', 'v', '1']);
    await discardStored(st, { timeoutMs: 2000 });
    assert.equal(batches, [4096, 104]);
    batches.length = 0;
    for (let i = 0; i < 2048; i++) st.msgs.stored.push(`g/2/b/0/${i}`);
    await discardStored(st, { timeoutMs: 2000 });
    assert.equal(batches, [4096], 'exactly 4096 keys: one request');
    assert.equal(st.msgs.stored, []);
    await sleep(20);
    assert.equal(await has(s, ['g/2/b/0/0', 'g/2/b/0/0/ack', 'g/2/b/0/2099', 'g/2/b/0/2099/ack']), [false, false, false, false]);

    const deleted: string[] = [];
    const plain = new Proxy(s, {
      get: (t, p) => p === 'discard' ? undefined
        : p === 'deleteKey' ? (k: string, o: unknown) => { deleted.push(k); return t.deleteKey(k, o as never); }
          : ((v) => typeof v === 'function' ? v.bind(t) : v)(Reflect.get(t, p, t)),
    }) as unknown as Store;
    const st2 = state(plain, 0, 2);
    st2.msgs.stored.push('g/2/b/1/5');
    await discardStored(st2, { timeoutMs: 2000 });
    assert.equal(deleted, ['g/2/b/1/5', 'g/2/b/1/5/ack']);
  });
});

test('cleanup: the epoch counter goes only if no newer incarnation bumped it', async () => {
  await withStore(async (s) => {
    await s.multiSet(['g/open', 'g/2/all', 'g/2/bye', 'g/2/bye/all', 'g/epoch'], ['2', '1', '1', '1', '3']);
    await cleanup(state(s, 0, 2), { timeoutMs: 2000 });
    assert.equal(await has(s, ['g/open', 'g/2/all', 'g/2/bye', 'g/2/bye/all']), [false, false, false, false]);
    assert.is(Buffer.from(await s.get('g/epoch')).toString(), '3', 'epoch 3 is live: the counter stays');
    await s.set('g/epoch', '2');
    await cleanup(state(s, 0, 2), { timeoutMs: 2000 });
    assert.not.ok(await s.check(['g/epoch']));
    await cleanup(state(s, 0, 2), { timeoutMs: 2000 }); // nothing left: no error
  });
});

test('reclaim: holds each dead rank\'s mailbox once; nothing without subscribe or with one rank', async () => {
  await withStore(async (s) => {
    const st = state(s, 0, 3);
    assert.equal(await reclaimMailboxes(st, [2], { timeoutMs: 1000 }), [2]);
    assert.equal([...st.dead], [2]);
    const sub = st.sinks.get(2)!;
    assert.ok(sub);
    const t1 = performance.now();
    assert.equal(await reclaimMailboxes(st, [2, 1], { timeoutMs: 1000 }), [2, 1]);
    assert.ok(performance.now() - t1 < 500, 'a mailbox already held is not subscribed to again');
    assert.is(st.sinks.get(2), sub, 'not subscribed again');
    // Held: a message to rank 2 is not stored.
    await s.set('g/2/to/2/p/0/0', 'x');
    await sleep(20);
    assert.not.ok(await s.check(['g/2/to/2/p/0/0']));
    for (const x of st.sinks.values()) x.close();

    const noSub = new Proxy(s, { get: (t, p) => p === 'subscribe' ? undefined : ((v) => typeof v === 'function' ? v.bind(t) : v)(Reflect.get(t, p, t)) }) as unknown as Store;
    const st2 = state(noSub, 0, 3);
    assert.equal(await reclaimMailboxes(st2, [1], { timeoutMs: 1000 }), []);
    assert.equal([...st2.dead], [1], 'still remembered as dead');
    assert.equal(await reclaimMailboxes(state(s, 0, 1), [0], { timeoutMs: 1000 }), []);
    const torch = await TcpStore.create({ port: s.port, timeoutMs: 2000, extensions: false });
    try {
      assert.equal(await reclaimMailboxes(state(torch, 0, 3), [1], { timeoutMs: 1000 }), [], 'a store that cannot subscribe');
    } finally {
      await torch.close();
    }
  });
});

test('reclaim: a mailbox another client holds is retried until the time is up; a closing group drops what it got', async () => {
  await withStore(async (s) => {
    const holder = await s.subscribe('g/2/to/1/', () => {});
    const st = state(s, 0, 2);
    const t0 = performance.now();
    assert.equal(await reclaimMailboxes(st, [1], { timeoutMs: 150 }), []);
    const took = performance.now() - t0;
    assert.ok(took >= 140 && took < 1500, `gave up after ${took} ms`);
    // Released while retrying: taken over.
    const p = reclaimMailboxes(st, [1], { timeoutMs: 2000 });
    await sleep(60);
    holder!.close();
    assert.equal(await p, [1]);
    st.sinks.get(1)!.close();

    // Without timeoutMs: min(1 s, the group's timeout).
    const short = state(s, 0, 2, { timeoutMs: 150 });
    const held = await s.subscribe('g/2/to/1/', () => {});
    const t1 = performance.now();
    assert.equal(await reclaimMailboxes(short, [1], {}), []);
    const took1 = performance.now() - t1;
    assert.ok(took1 >= 140 && took1 < 700, `default reclaim time ${took1} ms`);
    held!.close();
    await sleep(20);

    const closing = state(s, 0, 2, { closing: () => true });
    assert.equal(await reclaimMailboxes(closing, [1], { timeoutMs: 1000 }), []);
    assert.is(closing.sinks.size, 0);
    assert.ok(await s.subscribe('g/2/to/1/', () => {}), 'the subscription it got was closed');
  });
});

test.run();
