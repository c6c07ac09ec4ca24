// The join of a process group (host/pg/join.ts) on its own: ranks as concurrent join() calls on
// one real TcpStore. The keys it leaves, the epochs it picks (a finished incarnation skipped, an
// abandoned one left), and who a timeout names.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { join, joinKeys, type JoinSpec } from '../../host/pg/join.js';
import { withStore } from '../helpers/server_store.js';
import { TcpStore } from '../../host/index.js';
import { timeoutError } from '../../host/base/errors.js';
import type { Store } from '../../host/store/types.js';
import { failure } from '../helpers/rejects.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const spec = (store: Store, rank: number, worldSize: number, ms: number, groupName = 'g'): JoinSpec =>
  ({ store, groupName, rank, worldSize, deadline: performance.now() + ms });

const has = (s: Store, k: string) => s.check([k]);

test('key names', () => {
  assert.is(joinKeys.epoch('g'), 'g/epoch');
  assert.is(joinKeys.open('g'), 'g/open');
  assert.is(joinKeys.join('g', 4, 2), 'g/4/join/2');
  assert.is(joinKeys.all('g', 4), 'g/4/all');
});

test('three ranks join epoch 1; rank 0 takes the join keys back; a second incarnation is epoch 2', async () => {
  await withStore(async (s) => {
    const one = await Promise.all([2, 0, 1].map((r) => join(spec(s, r, 3, 3000), 3000)));
    assert.equal(one, [1, 1, 1]);
    assert.is(Buffer.from(await s.get('g/open')).toString(), '1');
    assert.ok(await has(s, 'g/1/all'));
    await sleep(30);
    assert.not.ok(await has(s, 'g/1/join/1') || await has(s, 'g/1/join/2'), 'join keys deleted');
    // Members that start first read open=1, whose all exists: a finished incarnation; they wait.
    const members = [1, 2].map((r) => join(spec(s, r, 3, 3000), 3000));
    await sleep(60);
    const host = join(spec(s, 0, 3, 3000), 3000);
    assert.equal(await Promise.all([host, ...members]), [2, 2, 2]);
  });
});

test('a rank that joined an abandoned epoch takes its join key back and joins the next one', async () => {
  await withStore(async (s) => {
    await s.set('g/epoch', '5');
    await s.set('g/open', '5'); // rank 0 opened epoch 5 and died
    const member = join(spec(s, 1, 2, 4000), 4000);
    await sleep(100);
    assert.ok(await has(s, 'g/5/join/1'), 'joined epoch 5');
    const host = join(spec(s, 0, 2, 4000), 4000);
    assert.equal(await Promise.all([host, member]), [6, 6]);
    await sleep(30);
    assert.not.ok(await has(s, 'g/5/join/1'), 'left epoch 5 clean');
  });
});

test('rank 0 times out naming the ranks that never joined (not the one that did)', async () => {
  await withStore(async (s) => {
    const host = failure(join(spec(s, 0, 3, 400), 400));
    await sleep(50);
    await s.set('g/1/join/1', '1');
    const e = await host;
    assert.is(e.code, 'ERR_GROUPCOMM_TIMEOUT');
    assert.is(e.rank, 0);
    assert.equal(e.peerRanks, [2]);
    assert.is(e.timeoutMs, 400);
    assert.ok(e.cause, 'the store wait that timed out');
    assert.not.ok(await has(s, 'g/1/all'));
  });
});

test('rank 0 does not name a rank that took its join key back just before the deadline (it timed out first)', async () => {
  await withStore(async (s) => {
    await s.set('g/1/join/1', '1');
    // Rank 0's look at who is missing comes 150 ms before its 600 ms deadline (a quarter of
    // it); rank 1 gives up at 525 ms and deletes its key (same client: the requests stay in order).
    const host = failure(join(spec(s, 0, 3, 600), 600));
    setTimeout(() => { s.deleteKey('g/1/join/1').catch(() => {}); }, 525);
    const e = await host;
    assert.is(e.code, 'ERR_GROUPCOMM_TIMEOUT');
    assert.equal(e.peerRanks, [2]);
  });
});

test('a member whose rank 0 never opens an epoch times out naming rank 0', async () => {
  await withStore(async (s) => {
    const t0 = performance.now();
    const e = await failure(join(spec(s, 2, 3, 300), 300));
    assert.is(e.code, 'ERR_GROUPCOMM_TIMEOUT');
    assert.is(e.rank, 2);
    assert.equal(e.peerRanks, [0]);
    assert.ok(performance.now() - t0 >= 280);
  });
});

test('a member in an epoch that never completes names the other missing ranks and takes its key back', async () => {
  await withStore(async (s) => {
    await s.set('g/open', '7');
    const e = await failure(join(spec(s, 1, 3, 350), 350));
    assert.is(e.code, 'ERR_GROUPCOMM_TIMEOUT');
    assert.equal(e.peerRanks, [2], 'itself excluded');
    await sleep(30);
    assert.not.ok(await has(s, 'g/7/join/1'));
  });
});

test('a member stuck behind a finished incarnation times out at its deadline', async () => {
  await withStore(async (s) => {
    await s.set('g/open', '3');
    await s.set('g/3/all', '1');
    const t0 = performance.now();
    const e = await failure(join(spec(s, 1, 2, 200), 200));
    assert.is(e.code, 'ERR_GROUPCOMM_TIMEOUT');
    assert.equal(e.peerRanks, [0]);
    assert.ok(performance.now() - t0 >= 190);
  });
});

test('a store request that times out near the deadline is still the join\'s timeout, naming rank 0', async () => {
  await withStore(async (s) => {
    await s.set('g/open', '3');
    await s.set('g/3/all', '1');
    // CHECK sent with less than 40 ms left times out on its own, as the real client's does when
    // its answer comes later than that; with more time left it is answered. So the join's own
    // deadline test never fires first: the store's timeout ends it.
    const slow = new Proxy(s, {
      get: (t, p) => p === 'check'
        ? async (keys: string[], o: { timeoutMs: number }) => {
          if (o.timeoutMs < 40) {
            await sleep(o.timeoutMs);
            throw timeoutError(`store check timed out after ${o.timeoutMs}ms`, { keys });
          }
          return t.check(keys, o);
        }
        : ((v) => typeof v === 'function' ? v.bind(t) : v)(Reflect.get(t, p, t)),
    }) as unknown as Store;
    const e = await failure(join({ store: slow, groupName: 'g', rank: 1, worldSize: 2, deadline: performance.now() + 200 }, 200));
    assert.is(e.code, 'ERR_GROUPCOMM_TIMEOUT');
    assert.equal(e.peerRanks, [0]);
    assert.is(e.rank, 1);
    assert.ok(e.cause, 'the store\'s own timeout is the cause');
  });
});

test('rank 0: a store write that times out after every rank joined is the join\'s timeout, naming rank 0 and the key', async () => {
  await withStore(async (s) => {
    // Epoch 1's member key is there already; the write of g/1/all then times out on its own, as
    // a real client's does when it is sent with a moment left before the deadline.
    await s.set(joinKeys.join('g', 1, 1), '1');
    const slow = new Proxy(s, {
      get: (t, p) => p === 'set'
        ? (k: string, v: string, o: { timeoutMs: number }) => k === joinKeys.all('g', 1)
          ? Promise.reject(timeoutError(`store set timed out after ${o.timeoutMs}ms`, { key: k }))
          : t.set(k, v, o)
        : ((v) => typeof v === 'function' ? v.bind(t) : v)(Reflect.get(t, p, t)),
    }) as unknown as Store;
    const e = await failure(join(spec(slow, 0, 2, 2000), 2000));
    assert.is(e.code, 'ERR_GROUPCOMM_TIMEOUT');
    assert.is(e.rank, 0);
    assert.is(e.key, 'g/1/all');
    assert.is(e.timeoutMs, 2000);
    assert.match(e.message, /create\(group 'g', epoch 1\) timed out on rank 0 of 2/);
    assert.ok(e.cause, 'the store\'s own timeout is the cause');
  });
});

test('rank 0 opens its epoch again when g/open is deleted under it (an old incarnation\'s cleanup)', async () => {
  await withStore(async (s) => {
    const host = join(spec(s, 0, 2, 3000), 3000);
    await s.wait(['g/open']);
    await s.deleteKey('g/open');
    const member = join(spec(s, 1, 2, 3000), 3000);
    assert.equal(await Promise.all([host, member]), [1, 1]);
  });
});

test('an abort ends a join at once with ABORTED', async () => {
  await withStore(async (s) => {
    const ac = new AbortController();
    const p = failure(join({ ...spec(s, 0, 2, 5000), signal: ac.signal }, 5000));
    const q = failure(join({ ...spec(s, 1, 3, 5000, 'h'), signal: ac.signal }, 5000));
    await sleep(50);
    const t0 = performance.now();
    ac.abort();
    assert.is((await p).code, 'ERR_GROUPCOMM_ABORTED');
    assert.is((await q).code, 'ERR_GROUPCOMM_ABORTED');
    assert.ok(performance.now() - t0 < 1000);
  });
});

test.run();
