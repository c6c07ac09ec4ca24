/**
 * The process group's bookkeeping on its own (host/pg/tracker.ts, host/pg/options.ts spinUs):
 * an op is tracked until it settles and abort rejects it at once; cleanups queue until the next
 * write (drain) or a short timer, run once each, and a failing one is logged, not thrown; abort
 * drops the queue. spinUs: the option, then GROUPCOMM_PG_SPIN_US, then a default that depends
 * on the runtime and on whether the ranks fit the CPUs.
 */
import os from 'node:os';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { OpTracker } from '../../host/pg/tracker.js';
import { spinUs } from '../../host/pg/options.js';
import { isGroupcommError } from '../../host/base/errors.js';
import { IS_BUN } from '../../host/base/runtime.js';

const tick = () => new Promise((r) => setImmediate(r));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('run: tracks the op until it settles, passes its value and its error through', async () => {
  const t = new OpTracker();
  let resolve!: (v: number) => void;
  const p = t.run(() => new Promise<number>((r) => { resolve = r; }));
  assert.is(t.pending.size, 1);
  resolve(7);
  assert.is(await p, 7);
  await tick();
  assert.is(t.pending.size, 0);
  await t.run(() => Promise.reject(new Error('boom'))).then(() => assert.unreachable('resolved'), (e) => assert.is((e as Error).message, 'boom'));
  await tick();
  assert.is(t.pending.size, 0);
  // A synchronous throw becomes a rejection, and nothing is left tracked.
  await t.run(() => { throw new Error('sync'); }).then(() => assert.unreachable('resolved'), (e) => assert.is((e as Error).message, 'sync'));
  assert.is(t.pending.size, 0);
  assert.is(await t.run(() => 3), 3, 'a plain value');
});

test('abortAll rejects every op in flight at once with the error; settled ops are not touched', async () => {
  const t = new OpTracker();
  const never = () => new Promise<number>(() => {});
  const a = t.run(never);
  const b = t.run(never);
  const done = await t.run(() => 1);
  assert.is(done, 1);
  const err = new Error('aborted');
  const seen: unknown[] = [];
  a.catch((e) => seen.push(e));
  b.catch((e) => seen.push(e));
  t.abortAll(err);
  await tick();
  assert.equal(seen, [err, err]);
  // Later ops still run normally.
  assert.is(await t.run(() => Promise.resolve(2)), 2);
  t.abortAll(new Error('nothing in flight'));
});

test('later: queued until drain(), run once each in order, and tracked until they finish', async () => {
  const t = new OpTracker();
  const ran: string[] = [];
  let finish!: () => void;
  t.later('a', () => { ran.push('a'); return new Promise<void>((r) => { finish = r; }); });
  t.later('b', async () => { ran.push('b'); });
  assert.equal(ran, [], 'nothing runs before a write or the timer');
  assert.is(t.pending.size, 1, 'the timer is tracked (close() waits for it)');
  t.drain();
  assert.equal(ran, ['a', 'b']);
  await tick();
  assert.is(t.pending.size, 1, 'a still running');
  finish();
  await tick();
  await tick();
  assert.is(t.pending.size, 0);
  t.drain();
  assert.equal(ran, ['a', 'b'], 'drain with an empty queue runs nothing again');
  assert.is(t.pending.size, 0, 'and tracks nothing');
  const fresh = new OpTracker();
  fresh.drain();
  assert.is(fresh.pending.size, 0, 'a new tracker has nothing queued');
});

test('later: without a write, the timer sends the queue within milliseconds', async () => {
  const t = new OpTracker();
  const ran: string[] = [];
  t.later('x', async () => { ran.push('x'); });
  t.later('y', async () => { ran.push('y'); });
  for (let i = 0; i < 200 && ran.length < 2; i++) await sleep(5);
  assert.equal(ran, ['x', 'y']);
  await tick();
  assert.is(t.pending.size, 0);
});

test('a failing cleanup (throwing or rejecting) is swallowed; the others still run', async () => {
  const t = new OpTracker();
  const ran: string[] = [];
  t.later('throws', () => { throw new Error('sync'); });
  t.later('rejects', () => Promise.reject(new Error('async')));
  t.later('ok', async () => { ran.push('ok'); });
  t.drain();
  assert.equal(ran, ['ok']);
  await Promise.all([...t.pending]);
  await tick();
  assert.is(t.pending.size, 0);
});

test('abortAll drops the queued cleanups and releases the timer', async () => {
  const t = new OpTracker();
  const ran: string[] = [];
  t.later('dropped', async () => { ran.push('dropped'); });
  assert.is(t.pending.size, 1);
  t.abortAll(new Error('x'));
  await tick();
  assert.is(t.pending.size, 0, 'the timer promise resolved');
  await sleep(20);
  t.drain();
  assert.equal(ran, []);
  // A cleanup queued after the abort gets a timer again.
  t.later('after', async () => { ran.push('after'); });
  assert.is(t.pending.size, 1);
  t.drain();
  assert.equal(ran, ['after']);
});

test('spinUs: the option wins, must be a finite non-negative number; the default fits the CPUs (0 under Bun)', () => {
  const saved = process.env.GROUPCOMM_PG_SPIN_US;
  delete process.env.GROUPCOMM_PG_SPIN_US;
  try {
    assert.is(spinUs(2, 0), 0);
    assert.is(spinUs(2, 25), 25);
    assert.is(spinUs(10_000, 25), 25, 'the option holds even when ranks outnumber CPUs');
    for (const bad of [-1, NaN, Infinity]) {
      try {
        spinUs(2, bad);
        assert.unreachable(`${bad} accepted`);
      } catch (e) {
        assert.ok(isGroupcommError(e, 'ERR_GROUPCOMM_INVALID_ARGUMENT'), String(e));
      }
    }
    const cpus = os.availableParallelism();
    assert.is(spinUs(cpus, undefined), IS_BUN ? 0 : 100, 'as many ranks as CPUs');
    assert.is(spinUs(1, undefined), IS_BUN ? 0 : 100);
    assert.is(spinUs(cpus + 1, undefined), 0, 'more ranks than CPUs');
    process.env.GROUPCOMM_PG_SPIN_US = '7';
    assert.is(spinUs(cpus + 1, undefined), 7, 'the variable when no option');
    assert.is(spinUs(2, 3), 3, 'the option over the variable');
  } finally {
    if (saved === undefined) delete process.env.GROUPCOMM_PG_SPIN_US;
    else process.env.GROUPCOMM_PG_SPIN_US = saved;
  }
});

test.run();
