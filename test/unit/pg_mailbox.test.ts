// The two mailboxes of host/pg/mailbox.ts, each on its own: PushMailbox fed by hand (deliver is
// what the store subscription calls), PollMailbox over a real TcpStore (in-process server). What
// the group builds on: order of results, what a timeout names (the tags still missing), what an
// abort drops, and that a take that gave up never consumes a later message.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { PushMailbox, PollMailbox, openMailbox } from '../../host/pg/mailbox.js';
import { TcpStore } from '../../host/index.js';
import { abortedError, destroyedError, isGroupcommError } from '../../host/base/errors.js';
import type { Store, Subscription } from '../../host/store/types.js';
import { failure } from '../helpers/rejects.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const b = (s: string) => Buffer.from(s);
const text = (vs: Uint8Array[]) => vs.map((v) => Buffer.from(v).toString());

/** A subscription whose end the test controls (what attach() listens to). */
function fakeSub(): Subscription & { closed: number; endWith(e?: Error): void } {
  const fns: ((e?: Error) => void)[] = [];
  return {
    closed: 0,
    close() { this.closed++; },
    onClose(fn) { fns.push(fn); },
    endWith(e) { for (const fn of fns) fn(e); },
  };
}

test('push: messages delivered before or after take come back in tag order, each taken once', async () => {
  const box = new PushMailbox();
  box.deliver('b', b('B'));
  const p = box.take(['a', 'b', 'c'], 'l', { timeoutMs: 2000 }, 'op');
  box.deliver('c', b('C'));
  box.deliver('a', b('A'));
  assert.equal(text(await p), ['A', 'B', 'C']);
  // 'b' came from the box: the take never waited for it, so a new 'b' is boxed, not lost.
  box.deliver('b', b('B2'));
  assert.equal(box.arrived(['b']), [true]);
  // All present at the call: resolved without waiting.
  box.deliver('x', b('X'));
  box.deliver('y', b('Y'));
  assert.equal(text(await box.take(['y', 'x'], 'l', { timeoutMs: 2000 }, 'op')), ['Y', 'X']);
  // Taken means gone: the same tag again waits (and times out).
  const e = await failure(box.take(['x'], 'l', { timeoutMs: 30 }, 'again'));
  assert.is(e.code, 'ERR_GROUPCOMM_TIMEOUT');
});

test('push: a timeout names only the tags still missing and its timeoutMs; a late message is dropped, the next one kept', async () => {
  const box = new PushMailbox();
  const t0 = performance.now();
  const p = box.take(['a', 'b', 'c'], 'l', { timeoutMs: 60 }, 'recv');
  box.deliver('b', b('B'));
  const e = await failure(p);
  const took = performance.now() - t0;
  assert.is(e.code, 'ERR_GROUPCOMM_TIMEOUT');
  assert.equal(e.keys, ['a', 'c']);
  assert.ok(took >= 55 && took < 1500, `timed out after ${took} ms`);
  assert.ok(e.elapsedMs! >= 55 && e.elapsedMs! <= took, `elapsedMs ${e.elapsedMs}, took ${took}`);
  assert.is(e.timeoutMs, 60);
  assert.match(e.message, /recv/);
  // The late ones are dropped on arrival, once: a second message with the same tag is kept.
  box.deliver('a', b('late'));
  assert.equal(box.arrived(['a']), [false]);
  box.deliver('a', b('next'));
  assert.equal(box.arrived(['a', 'c']), [true, false]);
  assert.equal(text(await box.take(['a'], 'l', { timeoutMs: 1000 }, 'recv')), ['next']);
});

test('push: early fires leadMs before the deadline, once; never when the take resolved first', async () => {
  const box = new PushMailbox();
  let early = 0;
  let firedAt = 0;
  const t0 = performance.now();
  const p = box.take(['a'], 'l', { timeoutMs: 400 }, 'op', { leadMs: 300, fn: () => { early++; firedAt = performance.now() - t0; } });
  await sleep(200);
  assert.is(early, 1, 'early ran by 200 ms (due at 100 ms)');
  assert.ok(firedAt >= 90, `early ran at ${firedAt} ms`);
  box.deliver('a', b('A'));
  assert.equal(text(await p), ['A']);
  // Resolved before its early call was due: the call is cancelled.
  let late = 0;
  const q = box.take(['z'], 'l', { timeoutMs: 200 }, 'op', { leadMs: 150, fn: () => { late++; } });
  box.deliver('z', b('Z'));
  await q;
  await sleep(120);
  assert.is(late, 0);
  assert.is(early, 1);
});

test('push: an abort while waiting names the missing tags and the reason; what arrives after is dropped', async () => {
  const box = new PushMailbox();
  const ac = new AbortController();
  const p = box.take(['a', 'b'], 'l', { timeoutMs: 5000, signal: ac.signal }, 'gather');
  box.deliver('a', b('A'));
  const why = new Error('stop');
  ac.abort(why);
  const e = await failure(p);
  assert.is(e.code, 'ERR_GROUPCOMM_ABORTED');
  assert.equal(e.keys, ['b']);
  assert.is(e.cause, why);
  box.deliver('b', b('late'));
  assert.equal(box.arrived(['a', 'b']), [false, false]);
});

test('push: a take aborted before it began drops its messages, boxed now or arriving later', async () => {
  const box = new PushMailbox();
  box.deliver('a', b('A'));
  const ac = new AbortController();
  ac.abort('gone');
  const e = await failure(box.take(['a', 'b'], 'l', { timeoutMs: 5000, signal: ac.signal }, 'op'));
  assert.is(e.code, 'ERR_GROUPCOMM_ABORTED');
  assert.equal(e.keys, ['a', 'b']);
  assert.is(e.cause, 'gone');
  box.deliver('b', b('late'));
  assert.equal(box.arrived(['a', 'b']), [false, false]);
  // Dropped once: the next message under 'b' is kept.
  box.deliver('b', b('B'));
  assert.equal(box.arrived(['b']), [true]);
});

test('push: a resolved take ignores a later abort of its signal', async () => {
  const box = new PushMailbox();
  const ac = new AbortController();
  const p = box.take(['a'], 'l', { timeoutMs: 5000, signal: ac.signal }, 'op');
  box.deliver('a', b('A'));
  assert.equal(text(await p), ['A']);
  ac.abort();
  box.deliver('a', b('again'));
  assert.equal(box.arrived(['a']), [true], 'the abort after the fact marked nothing abandoned');
});

test('push: arrived() — boxed, held by a take waiting for others, awaited, unknown', async () => {
  const box = new PushMailbox();
  box.deliver('boxed', b('1'));
  const first = box.take(['other'], 'l', { timeoutMs: 2000 }, 'op'); // another take, waiting first
  const p = box.take(['held', 'awaited'], 'l', { timeoutMs: 2000 }, 'op');
  box.deliver('held', b('2'));
  assert.equal(box.arrived(['boxed', 'held', 'awaited', 'unknown']), [true, true, false, false]);
  box.deliver('awaited', b('3'));
  assert.equal(text(await p), ['2', '3']);
  assert.equal(box.arrived(['held', 'awaited']), [false, false]);
  box.deliver('other', b('4'));
  await first;
});

test('push: tags under interceptPrefix go to onIntercept, not to the box', () => {
  const box = new PushMailbox();
  const seen: string[] = [];
  box.deliver('q/1', b('before'));
  box.interceptPrefix = 'q/';
  box.onIntercept = (tag, v) => seen.push(`${tag}=${Buffer.from(v).toString()}`);
  box.deliver('q/2', b('hub'));
  box.deliver('r/2', b('box'));
  assert.equal(seen, ['q/2=hub']);
  box.onIntercept = undefined;
  box.deliver('q/3', b('no handler: dropped'));
  assert.equal(box.arrived(['q/3']), [false]);
  assert.equal(box.arrived(['q/1', 'q/2', 'r/2']), [true, false, true]);
});

test('push: close() fails waiting and later takes with the reason and closes the subscription, once', async () => {
  const box = new PushMailbox();
  const sub = fakeSub();
  box.attach(sub);
  const p = box.take(['a'], 'l', { timeoutMs: 5000 }, 'op');
  const q = box.take(['b', 'c'], 'l', { timeoutMs: 5000 }, 'op');
  const reason = destroyedError('group destroyed');
  box.close(reason);
  assert.is(await failure(p), reason);
  assert.is(await failure(q), reason);
  assert.is(await failure(box.take(['d'], 'l', { timeoutMs: 5000 }, 'op')), reason);
  assert.is(sub.closed, 1);
  box.close(abortedError('second'));
  assert.is(await failure(box.take(['d'], 'l', { timeoutMs: 5000 }, 'op')), reason, 'the first reason stays');
});

test('push: close() without a subscription; the early calls of the takes it failed never run', async () => {
  const box = new PushMailbox();
  let early = 0;
  const p = box.take(['a'], 'l', { timeoutMs: 120 }, 'op', { leadMs: 100, fn: () => { early++; } });
  const reason = destroyedError('closed');
  box.close(reason);
  assert.is(await failure(p), reason);
  await sleep(60);
  assert.is(early, 0);
});

test('push: a take that gives up leaves another take\'s claim on the same tag alone', async () => {
  const box = new PushMailbox();
  const short = failure(box.take(['t'], 'l', { timeoutMs: 30 }, 'op'));
  const long = box.take(['t'], 'l', { timeoutMs: 2000 }, 'op');
  assert.is((await short).code, 'ERR_GROUPCOMM_TIMEOUT');
  box.deliver('t', b('dropped')); // the first delivery after a give-up is dropped
  box.deliver('t', b('kept'));
  assert.equal(text(await long), ['kept']);
});

/** Counts setImmediate calls while `fn` runs (the spin's turns: nothing else here schedules one). */
async function countTurns(fn: (count: () => number) => Promise<void>): Promise<void> {
  const real = globalThis.setImmediate;
  let n = 0;
  globalThis.setImmediate = ((f: (...a: unknown[]) => void, ...args: unknown[]) => { n++; return real(f, ...args); }) as typeof setImmediate;
  try {
    await fn(() => n);
  } finally {
    globalThis.setImmediate = real;
  }
}

test('push spinUs: a waiting take turns the loop until its message arrives or spinUs passed; 0 never turns it', async () => {
  await countTurns(async (turns) => {
    const still = new PushMailbox(0);
    const p0 = still.take(['a'], 'l', { timeoutMs: 1000 }, 'op');
    await sleep(30);
    assert.is(turns(), 0, 'spinUs 0');
    still.deliver('a', b('A'));
    await p0;

    const spun = new PushMailbox(150_000);
    const p = spun.take(['a'], 'l', { timeoutMs: 1000 }, 'op');
    await sleep(40);
    assert.ok(turns() > 5, `turned the loop ${turns()} times while waiting 40 ms`);
    spun.deliver('a', b('A'));
    await p;
    await sleep(5);
    const atArrival = turns();
    await sleep(40);
    assert.is(turns(), atArrival, 'stopped when the message arrived (well before 150 ms)');

    const q = spun.take(['z'], 'l', { timeoutMs: 1000 }, 'op');
    await sleep(200);
    const after = turns();
    await sleep(40);
    assert.is(turns(), after, 'stopped after 150 ms without a message');
    spun.deliver('z', b('Z'));
    await q;
  });
});

test('push: a subscription that ends with an error fails the box; one closed on purpose does not', async () => {
  const quiet = new PushMailbox();
  const s1 = fakeSub();
  quiet.attach(s1);
  s1.endWith(undefined);
  quiet.deliver('a', b('A'));
  assert.equal(text(await quiet.take(['a'], 'l', { timeoutMs: 1000 }, 'op')), ['A']);

  const lost = new PushMailbox();
  const s2 = fakeSub();
  lost.attach(s2);
  const p = lost.take(['a'], 'l', { timeoutMs: 5000 }, 'op');
  const why = new Error('server gone');
  s2.endWith(why);
  assert.is(await failure(p), why);
  assert.is(await failure(lost.take(['b'], 'l', { timeoutMs: 5000 }, 'op')), why);
});

// PollMailbox over a real store.

async function withStore(fn: (s: TcpStore) => Promise<void>, extensions = true): Promise<void> {
  const s = await TcpStore.create({ port: 0, isServer: true, timeoutMs: 5000, extensions });
  try {
    await fn(s);
  } finally {
    await s.close();
  }
}

/** `s` without take(): the get + discard path (a store that has no consuming read). */
const withoutTake = (s: TcpStore): Store => new Proxy(s, {
  get: (t, prop) => (prop === 'take' ? undefined : (v => (typeof v === 'function' ? v.bind(t) : v))(Reflect.get(t, prop, t))),
}) as unknown as Store;

test('openMailbox: push with a store that subscribes, poll with one that cannot', async () => {
  await withStore(async (s) => {
    const box = await openMailbox(s, 'g/to/0/', { timeoutMs: 2000 }, () => {});
    assert.instance(box, PushMailbox);
    await s.set('g/to/0/t', 'pushed');
    assert.equal(text(await box.take(['t'], 'l', { timeoutMs: 2000 }, 'op')), ['pushed']);
    box.close(destroyedError('done'));
  });
  await withStore(async (s) => {
    assert.instance(await openMailbox(s, 'g/to/0/', { timeoutMs: 2000 }, () => {}), PollMailbox);
  }, false);
  await withStore(async (s) => {
    const noSubscribe = new Proxy(s, { get: (t, p) => p === 'subscribe' ? undefined : ((v) => typeof v === 'function' ? v.bind(t) : v)(Reflect.get(t, p, t)) }) as unknown as Store;
    assert.instance(await openMailbox(noSubscribe, 'g/to/0/', { timeoutMs: 2000 }, () => {}), PollMailbox);
  });
});

test('poll: one tag by take (no discard), one by get + discard, several by multiGet + discard, in order', async () => {
  await withStore(async (s) => {
    const discarded: string[][] = [];
    const box = new PollMailbox(s, 'in/', (keys) => { discarded.push(keys); });
    await s.set('in/a', 'A');
    assert.equal(text(await box.take(['a'], 'l', { timeoutMs: 2000 }, 'op')), ['A']);
    assert.equal(discarded, []);
    await sleep(20);
    assert.not.ok(await s.check(['in/a']), 'take consumed the key');

    const viaGet = new PollMailbox(withoutTake(s), 'in/', (keys) => { discarded.push(keys); });
    const p = viaGet.take(['b'], 'l', { timeoutMs: 2000 }, 'op');
    await s.set('in/b', 'B');
    assert.equal(text(await p), ['B']);
    assert.equal(discarded, [['in/b']]);

    await s.multiSet(['in/d', 'in/c'], ['D', 'C']);
    assert.equal(text(await box.take(['c', 'd'], 'l', { timeoutMs: 2000 }, 'op')), ['C', 'D']);
    assert.equal(discarded, [['in/b'], ['in/c', 'in/d']]);
  });
});

test('poll: a one-tag timeout names the tag, never the store key, whichever timer fires first', async () => {
  await withStore(async (s) => {
    for (const store of [s, withoutTake(s)]) {
      const box = new PollMailbox(store, 'in/', () => {});
      const errs = await Promise.all(Array.from({ length: 12 }, (_, i) =>
        failure(box.take([`t${i}`], `lane${i}`, { timeoutMs: 20 + (i % 3) }, 'recv'))));
      for (const [i, e] of errs.entries()) {
        assert.is(e.code, 'ERR_GROUPCOMM_TIMEOUT');
        assert.equal(e.keys, [`t${i}`]);
      }
    }
  });
});

test('poll: a several-tag timeout names only the tags still missing', async () => {
  await withStore(async (s) => {
    const box = new PollMailbox(s, 'in/', () => {});
    await s.set('in/b', 'B');
    const e = await failure(box.take(['a', 'b', 'c'], 'l', { timeoutMs: 80 }, 'gather'));
    assert.is(e.code, 'ERR_GROUPCOMM_TIMEOUT');
    assert.equal(e.keys, ['a', 'c']);
  });
});

test('poll: a take queued behind a slow one on its lane times out on time and never reads its message', async () => {
  await withStore(async (s) => {
    const box = new PollMailbox(s, 'in/', () => {});
    const t0 = performance.now();
    const first = failure(box.take(['a'], 'lane', { timeoutMs: 400 }, 'first'));
    const second = await failure(box.take(['b'], 'lane', { timeoutMs: 80 }, 'second'));
    const at = performance.now() - t0;
    assert.is(second.code, 'ERR_GROUPCOMM_TIMEOUT');
    assert.ok(at < 350, `the queued take timed out after ${at} ms`);
    await s.set('in/b', 'B');
    assert.is((await first).code, 'ERR_GROUPCOMM_TIMEOUT');
    await sleep(50);
    assert.ok(await s.check(['in/b']), 'the take that gave up before its turn did not consume in/b');
    // Another lane is not queued behind a slow one.
    const slow = failure(box.take(['x'], 'lane', { timeoutMs: 300 }, 'slow'));
    await s.set('in/y', 'Y');
    assert.equal(text(await box.take(['y'], 'other', { timeoutMs: 200 }, 'fast')), ['Y']);
    await slow;
    // And the lane works again after its takes settled.
    await s.set('in/z', 'Z');
    assert.equal(text(await box.take(['z'], 'lane', { timeoutMs: 1000 }, 'op')), ['Z']);
  });
});

test('poll: a lane stays in order after its first take settled (the next ones still queue)', async () => {
  await withStore(async (s) => {
    const box = new PollMailbox(s, 'in/', () => {});
    const one = box.take(['a'], 'lane', { timeoutMs: 2000 }, 'op');
    const two = box.take(['b'], 'lane', { timeoutMs: 2000 }, 'op');
    await s.set('in/a', 'A');
    assert.equal(text(await one), ['A']);
    const three = box.take(['c'], 'lane', { timeoutMs: 2000 }, 'op');
    let thirdDone = false;
    void three.then(() => { thirdDone = true; });
    await s.set('in/c', 'C');
    await sleep(80);
    assert.not.ok(thirdDone, 'the third take waits for the second');
    await s.set('in/b', 'B');
    assert.equal(text(await two), ['B']);
    assert.equal(text(await three), ['C']);
  });
});

test('poll: several tags that all arrived just after the timeout: the error names them all', async () => {
  await withStore(async (s) => {
    // The check after the timeout is slow (30 ms), and the messages land meanwhile.
    const slowCheck = new Proxy(s, {
      get: (t, p) => p === 'check' ? async (ks: string[], o: unknown) => { await sleep(30); return t.check(ks, o as never); }
        : ((v) => typeof v === 'function' ? v.bind(t) : v)(Reflect.get(t, p, t)),
    }) as unknown as Store;
    const box = new PollMailbox(slowCheck, 'in/', () => {});
    const p = failure(box.take(['a', 'b'], 'l', { timeoutMs: 50 }, 'gather'));
    await sleep(60);
    await s.multiSet(['in/a', 'in/b'], ['A', 'B']);
    const e = await p;
    assert.is(e.code, 'ERR_GROUPCOMM_TIMEOUT');
    assert.equal(e.keys, ['a', 'b']);
  });
});

test('poll: close() aborts reads in flight, and later takes fail with the reason', async () => {
  await withStore(async (s) => {
    const box = new PollMailbox(s, 'in/', () => {});
    const p = failure(box.take(['a'], 'l', { timeoutMs: 5000 }, 'op'));
    await sleep(20);
    const reason = destroyedError('group destroyed');
    const t0 = performance.now();
    box.close(reason);
    const e = await p;
    assert.ok(performance.now() - t0 < 1000, 'the read in flight gave up at once');
    assert.ok(isGroupcommError(e), String(e));
    assert.is(await failure(box.take(['b'], 'l', { timeoutMs: 5000 }, 'op')), reason);
    box.close(abortedError('again'));
    assert.is(await failure(box.take(['b'], 'l', { timeoutMs: 5000 }, 'op')), reason, 'the first reason stays');
  });
});

test.run();
