// More of the join (host/pg/join.ts), next to pg_join.test: what each store request carries (the
// caller's signal, never more time than is left; the 2 s bound of the missing-ranks check), the
// values it writes, that a waiting member announces itself once, that nothing is sent after the
// join settled (the early look at who is missing is cancelled), when that early look is taken,
// and who a timeout names in the cases the first file does not build.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { join, type JoinSpec } from '../../host/pg/join.js';
import { withStore } from '../helpers/server_store.js';
import { abortedError, timeoutError } from '../../host/base/errors.js';
import type { Store } from '../../host/store/types.js';
import { failure } from '../helpers/rejects.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const str = (v: Uint8Array) => Buffer.from(v).toString();

interface Call { method: string; key: string; timeoutMs?: number; signal?: AbortSignal; at: number; left: number }

/** `s` recording every request of the join (method, first key, options, time left then). */
function spy(s: Store, deadline: number): { store: Store; calls: Call[] } {
  const calls: Call[] = [];
  const methods = ['get', 'set', 'add', 'check', 'wait', 'deleteKey'];
  const store = new Proxy(s, {
    get: (t, p) => {
      const v = Reflect.get(t, p, t);
      if (typeof v !== 'function') return v;
      if (!methods.includes(p as string)) return v.bind(t);
      return (...args: unknown[]) => {
        const key = Array.isArray(args[0]) ? (args[0] as string[])[0] : args[0] as string;
        const o = args.find((a, i) => i > 0 && typeof a === 'object' && a !== null) as { timeoutMs?: number; signal?: AbortSignal } | undefined;
        const now = performance.now();
        calls.push({ method: p as string, key, timeoutMs: o?.timeoutMs, signal: o?.signal, at: now, left: deadline - now });
        return v.apply(t, args);
      };
    },
  }) as unknown as Store;
  return { store, calls };
}

test('every request carries the signal and at most the time left (the missing-ranks check at most 2 s); values are "1"', async () => {
  await withStore(async (s) => {
    const ac = new AbortController();
    const ms = 1500;
    const deadline = performance.now() + ms;
    const host = spy(s, deadline);
    const mem = spy(s, deadline);
    const spec = (store: Store, rank: number): JoinSpec => ({ store, groupName: 'g', rank, worldSize: 3, deadline, signal: ac.signal });
    // Rank 2 never comes: rank 0 and rank 1 time out, after re-polls, and look at who is missing.
    const [e0, e1] = await Promise.all([failure(join(spec(host.store, 0), ms)), failure(join(spec(mem.store, 1), ms))]);
    assert.equal([e0.peerRanks, e1.peerRanks], [[2], [2]]);
    for (const [who, c] of [...host.calls.map((c) => ['rank 0', c] as const), ...mem.calls.map((c) => ['rank 1', c] as const)]) {
      const what = `${who} ${c.method} ${c.key}`;
      if (c.method === 'deleteKey') continue; // best-effort cleanups, bounded by the store's own timeout
      assert.ok(c.timeoutMs !== undefined, `${what}: a timeout`);
      if (c.method === 'check' && /\/join\//.test(c.key)) {
        assert.is(c.timeoutMs, 2000, `${what}: the missing-ranks check is bounded at 2 s`);
        continue;
      }
      assert.is(c.signal, ac.signal, `${what}: the caller's signal`);
      assert.ok(c.timeoutMs! <= Math.max(1, c.left) + 1, `${what}: ${c.timeoutMs} ms asked, ${c.left.toFixed(1)} ms left`);
    }
    const sets = mem.calls.filter((c) => c.method === 'set' && c.key === 'g/1/join/1');
    assert.is(sets.length, 1, 'a member announces itself once, however often it re-reads g/open');
    assert.is(host.calls.filter((c) => c.method === 'set' && c.key === 'g/open').length, 1, 'rank 0 opens its epoch once while g/open stays');
    assert.ok(host.calls.filter((c) => c.method === 'check' && c.key === 'g/open').length >= 2, 'it did look at g/open between wait slices');
    assert.ok(mem.calls.filter((c) => c.method === 'get' && c.key === 'g/open').length >= 3, 'it did re-read g/open');
  });
});

test('the values written: g/open the epoch, g/E/join/r and g/E/all "1"', async () => {
  await withStore(async (s) => {
    await s.set('g/open', '7');
    const member = failure(join({ store: s, groupName: 'g', rank: 1, worldSize: 3, deadline: performance.now() + 300 }, 300));
    await sleep(100);
    assert.is(str(await s.get('g/7/join/1')), '1');
    await member;
    await s.deleteKey('g/open');
    const all = await Promise.all([0, 1].map((rank) => join({ store: s, groupName: 'h', rank, worldSize: 2, deadline: performance.now() + 3000 }, 3000)));
    assert.equal(all, [1, 1]);
    assert.is(str(await s.get('h/open')), '1');
    assert.is(str(await s.get('h/1/all')), '1');
  });
});

test('nothing is sent after a join settled: the early look at who is missing is cancelled', async () => {
  await withStore(async (s) => {
    const ms = 400; // the early look would come at 300 ms
    const deadline = performance.now() + ms;
    const spies = [0, 1, 2].map(() => spy(s, deadline));
    const got = await Promise.all(spies.map((sp, rank) => join({ store: sp.store, groupName: 'g', rank, worldSize: 3, deadline }, ms)));
    assert.equal(got, [1, 1, 1]);
    const done = performance.now();
    await sleep(ms + 50);
    for (const [rank, sp] of spies.entries()) {
      for (const c of sp.calls.filter((x) => x.method !== 'deleteKey' && !(x.method === 'check' && /\/join\//.test(x.key)))) {
        assert.ok(c.timeoutMs !== undefined && c.timeoutMs <= Math.max(1, c.left) + 1, `rank ${rank} ${c.method} ${c.key}: ${c.timeoutMs} ms asked, ${c.left.toFixed(1)} left`);
      }
      const late = sp.calls.filter((c) => c.at > done && c.method !== 'deleteKey');
      assert.equal(late.map((c) => `${c.method} ${c.key}`), [], `rank ${rank}: requests after the join settled`);
    }
  });
});

test('rank 0 names a rank missing both at its early look and at the deadline: not one that came after the look, nor one that left after it', async () => {
  await withStore(async (s) => {
    // 1000 ms: the early look at 750 ms (a quarter before the deadline, at most 500 ms).
    // Rank 1 joins at 625 ms and takes its key back at 880 ms (it timed out first); rank 2 never
    // comes; rank 3 joins at 850 ms and stays. Missing at 750: [2, 3]; at 1000: [1, 2].
    const t0 = performance.now();
    const host = failure(join({ store: s, groupName: 'g', rank: 0, worldSize: 4, deadline: t0 + 1000 }, 1000));
    const at = (ms: number, fn: () => Promise<unknown>) => sleep(ms - (performance.now() - t0)).then(fn);
    await Promise.all([
      at(625, () => s.set('g/1/join/1', '1')),
      at(850, () => s.set('g/1/join/3', '1')),
      at(880, () => s.deleteKey('g/1/join/1')),
    ]);
    const e = await host;
    assert.is(e.code, 'ERR_GROUPCOMM_TIMEOUT');
    assert.equal(e.peerRanks, [2], e.message);
    assert.match(e.message, 'ranks [2] never joined');
  });
});

test('a member whose epoch opened after its early look names the ranks missing at the deadline', async () => {
  await withStore(async (s) => {
    // 600 ms: the member's early look at 450 ms finds no epoch yet; rank 0 opens epoch 4 at 500 ms.
    const deadline = performance.now() + 600;
    const sp = spy(s, deadline);
    const member = failure(join({ store: sp.store, groupName: 'g', rank: 1, worldSize: 3, deadline }, 600));
    await sleep(500);
    await s.set('g/open', '4');
    const e = await member;
    assert.is(e.code, 'ERR_GROUPCOMM_TIMEOUT', e.message);
    assert.equal(e.peerRanks, [2]);
    assert.match(e.message, 'epoch 4');
    await sleep(20);
    assert.equal(sp.calls.filter((c) => /\/(-1|undefined|NaN)\//.test(c.key)).map((c) => `${c.method} ${c.key}`), [], 'no request for an epoch not found yet');
  });
});

test('a member whose own announcement timed out does not name itself', async () => {
  await withStore(async (s) => {
    await s.set('g/open', '2');
    const deadline = performance.now() + 300;
    const stuck = new Proxy(s, {
      get: (t, p) => p === 'set'
        ? async (k: string, v: string, o: { timeoutMs: number }) => {
          if (k !== 'g/2/join/1') return t.set(k, v, o);
          await sleep(o.timeoutMs);
          throw timeoutError(`store set timed out after ${o.timeoutMs}ms`, { key: k });
        }
        : ((v) => typeof v === 'function' ? v.bind(t) : v)(Reflect.get(t, p, t)),
    }) as unknown as Store;
    const e = await failure(join({ store: stuck, groupName: 'g', rank: 1, worldSize: 3, deadline }, 300));
    assert.is(e.code, 'ERR_GROUPCOMM_TIMEOUT');
    assert.equal(e.peerRanks, [2], e.message);
  });
});

test('rank 0: its epoch counter timing out names no epoch; other failures of its requests pass through unchanged', async () => {
  await withStore(async (s) => {
    const failing = (err: Error) => new Proxy(s, {
      get: (t, p) => p === 'add' ? () => Promise.reject(err) : ((v) => typeof v === 'function' ? v.bind(t) : v)(Reflect.get(t, p, t)),
    }) as unknown as Store;
    const e = await failure(join({ store: failing(timeoutError('store add timed out')), groupName: 'g', rank: 0, worldSize: 2, deadline: performance.now() + 500 }, 500));
    assert.is(e.code, 'ERR_GROUPCOMM_TIMEOUT');
    assert.is(e.key, 'g/epoch');
    assert.match(e.message, /create\(group 'g'\) timed out on rank 0 of 2/);
    const other = abortedError('stopped');
    assert.is(await failure(join({ store: failing(other), groupName: 'g', rank: 0, worldSize: 2, deadline: performance.now() + 500 }, 500)), other);
  });
});

test('a member names only the ranks whose join keys are missing (not one that joined), in words too', async () => {
  await withStore(async (s) => {
    await s.set('g/open', '5');
    await s.set('g/5/join/2', '1');
    const e = await failure(join({ store: s, groupName: 'g', rank: 1, worldSize: 5, deadline: performance.now() + 200 }, 200));
    assert.equal(e.peerRanks, [3, 4]);
    assert.match(e.message, 'ranks [3, 4] never joined');
  });
});

test('a timeout with no epoch names rank 0 in words: "rank 0 never completed the join"', async () => {
  await withStore(async (s) => {
    const e = await failure(join({ store: s, groupName: 'g', rank: 2, worldSize: 3, deadline: performance.now() + 150 }, 150));
    assert.equal(e.peerRanks, [0]);
    assert.match(e.message, 'rank 0 never completed the join');
    assert.match(e.message, 'timed out on rank 2 of 3');
  });
});

test.run();
