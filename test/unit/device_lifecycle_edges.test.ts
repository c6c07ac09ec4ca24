// OrderedOps (host/device/lifecycle.ts) beyond device_lifecycle: the fields and reasons of each
// failure, which failures kill the communicator, callers' signals, calls queued behind a dead or
// closed communicator, and drain. Each case's own deadlines are short; a hang means a bug.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { OrderedOps } from '../../host/device/lifecycle.js';
import { sleep } from '../../host/base/deadline.js';
import {
  abortedError, ErrorCode, GroupcommError, invalidArgument, isGroupcommError, mismatchError, peerLostError, protocolError,
} from '../../host/base/errors.js';
import { failure } from '../helpers/rejects.js';

const never = () => new Promise<never>(() => {});

function ops(rank = 2) {
  const reasons: string[] = [];
  const o = new OrderedOps('comm', rank, 2_000, (r) => { reasons.push(r); });
  return { o, reasons };
}

test('a timeout carries the call\'s fields, its timeout and the time waited; the abort reason says timed out', async () => {
  const { o, reasons } = ops(2);
  const t0 = performance.now();
  const e = await failure(o.run('allReduce', { timeoutMs: 60 }, never, { peerRank: 1, key: 'k' }));
  const waited = performance.now() - t0;
  assert.is(e.code, ErrorCode.TIMEOUT);
  assert.is(e.rank, 2);
  assert.is(e.peerRank, 1);
  assert.is(e.key, 'k');
  assert.is(e.timeoutMs, 60);
  const elapsed = (e as { elapsedMs?: number }).elapsedMs!;
  assert.ok(elapsed >= 55 && elapsed <= waited + 1, `elapsedMs ${elapsed}, waited ${waited}`);
  assert.equal(reasons, ['allReduce timed out']);
  const later = await failure(o.run('next', {}, async () => 1));
  assert.is(later.code, ErrorCode.ABORTED);
  assert.is(later.rank, 2);
});

test('the communicator\'s default timeout applies to a call without one', async () => {
  const o = new OrderedOps('comm', 0, 50, () => {});
  const e = await failure(o.run('x', undefined, never));
  assert.is(e.code, ErrorCode.TIMEOUT);
  assert.is(e.timeoutMs, 50);
});

test('failures that kill the communicator (timeout, aborted, peer lost, protocol) and those that do not', async () => {
  const fatal: [() => GroupcommError, string][] = [
    [() => peerLostError('gone', { rank: 0 }), ErrorCode.PEER_LOST],
    [() => protocolError('garbage'), ErrorCode.PROTOCOL],
    [() => abortedError('stopped'), ErrorCode.ABORTED],
  ];
  for (const [make, code] of fatal) {
    const { o, reasons } = ops(0);
    const e = await failure(o.run('recv', {}, async () => { throw make(); }));
    assert.is(e.code, code, 'the call reports its own error, not the abort it caused');
    assert.is(o.state, 'aborted');
    assert.equal(reasons, [`recv failed: ${e.message}`], 'the abort says what killed the communicator, not its code alone');
  }
  for (const make of [() => invalidArgument('bad'), () => mismatchError('differs'), () => new Error('plain')]) {
    const { o, reasons } = ops(0);
    await failure(o.run('recv', {}, async () => { throw make(); }));
    assert.is(o.state, 'ready');
    assert.equal(reasons, []);
  }
});

test('a caller\'s signal: aborting it ends only that call, with the caller\'s reason; the body\'s signal fires', async () => {
  const { o, reasons } = ops(1);
  const ctl = new AbortController();
  let bodySignal: AbortSignal | undefined;
  const p = o.run('wait', { signal: ctl.signal }, (s) => { bodySignal = s; return never(); }, { peerRank: 0 });
  await sleep(10);
  assert.ok(bodySignal && !bodySignal.aborted);
  ctl.abort('user');
  const e = await failure(p);
  assert.is(e.code, ErrorCode.ABORTED);
  assert.is(e.rank, 1);
  assert.is(e.peerRank, 0);
  assert.is(e.cause, 'user');
  assert.ok(bodySignal!.aborted, 'the body is told to stop');
  assert.ok(isGroupcommError(bodySignal!.reason, ErrorCode.ABORTED), 'with the call\'s error');
  // It had started: the communicator is dead (the peers' state is unknown).
  assert.is(o.state, 'aborted');
  assert.equal(reasons, ['wait was aborted']);
});

test('a caller\'s signal already aborted: the call is refused at once with its reason and never runs', async () => {
  const { o } = ops(0);
  const ctl = new AbortController();
  ctl.abort('early');
  let ran = false;
  const e = await failure(o.run('x', { signal: ctl.signal }, async () => { ran = true; }));
  assert.is(e.code, ErrorCode.ABORTED);
  assert.is(e.cause, 'early');
  assert.is(e.rank, 0);
  await o.drain();
  assert.not.ok(ran);
  assert.is(o.state, 'ready');
});

test('without a caller signal the body gets the communicator\'s lifetime signal', async () => {
  const { o } = ops(0);
  let s: AbortSignal | undefined;
  await o.run('x', {}, async (sig) => { s = sig; });
  assert.is(s, o.lifetime.signal);
  let own: AbortSignal | undefined;
  await o.run('y', { signal: new AbortController().signal }, async (sig) => { own = sig; });
  assert.is.not(own, o.lifetime.signal);
});

test('a queued call that times out never runs and does not abort the communicator', async () => {
  const { o, reasons } = ops(0);
  const first = o.run('first', {}, () => sleep(120));
  let ran = false;
  const e = await failure(o.run('second', { timeoutMs: 30 }, async () => { ran = true; }));
  assert.is(e.code, ErrorCode.TIMEOUT);
  await first;
  await o.drain();
  assert.not.ok(ran);
  assert.is(o.state, 'ready');
  assert.equal(reasons, []);
  assert.is(await o.run('third', {}, async () => 3), 3);
});

test('a call queued with a signal aborted while it waits never runs', async () => {
  const { o } = ops(0);
  const first = o.run('first', {}, () => sleep(60));
  const ctl = new AbortController();
  let ran = false;
  const p = o.run('second', { signal: ctl.signal }, async () => { ran = true; });
  ctl.abort('later');
  assert.is((await failure(p)).cause, 'later');
  await first;
  await o.drain();
  assert.not.ok(ran);
  assert.is(o.state, 'ready');
});

test('abort(): a call in flight that ignores its signal still rejects at once, naming the cause; queued calls never run', async () => {
  const { o, reasons } = ops(4);
  const inflight = o.run('stuck', {}, never, { peerRank: 3 });
  let ran = false;
  const queued = o.run('queued', {}, async () => { ran = true; });
  await sleep(5);
  await o.abort('stop');
  const e = await failure(inflight);
  assert.is(e.code, ErrorCode.ABORTED);
  assert.is(e.rank, 4);
  assert.is(e.peerRank, 3);
  assert.ok(isGroupcommError(e.cause, ErrorCode.ABORTED));
  assert.is((e.cause as GroupcommError).rank, 4);
  assert.is((await failure(queued)).code, ErrorCode.ABORTED);
  assert.not.ok(ran);
  await o.abort('again');
  assert.equal(reasons, ['stop'], 'onFatal once');
  assert.ok(o.lifetime.signal.aborted);
  const later = await failure(o.run('later', {}, async () => 1));
  assert.match(later.message, /\(stop\)/);
});

test('markClosed on a ready communicator ends calls in flight and fires the lifetime signal; after an abort it does neither again', async () => {
  const { o, reasons } = ops(3);
  const inflight = o.run('stuck', {}, never);
  await sleep(5);
  assert.ok(o.markClosed());
  const e = await failure(inflight);
  assert.is(e.code, ErrorCode.ABORTED);
  assert.ok(isGroupcommError(e.cause, ErrorCode.DESTROYED));
  assert.is((e.cause as GroupcommError).rank, 3);
  assert.ok(isGroupcommError(o.lifetime.signal.reason, ErrorCode.DESTROYED));
  assert.is(o.state, 'closed');
  assert.equal(reasons, [], 'closing is not a fatal failure');
  const d = await failure(o.run('after', {}, async () => 1));
  assert.is(d.code, ErrorCode.DESTROYED);
  assert.is(d.rank, 3);
  assert.throws(() => o.assertUsable('x'), (x: unknown) => isGroupcommError(x, ErrorCode.DESTROYED));
  await o.abort('too late');
  assert.is(o.state, 'closed', 'abort does not reopen a closed communicator');

  const a = ops(0);
  await a.o.abort('first');
  const reason = a.o.lifetime.signal.reason;
  assert.ok(a.o.markClosed());
  assert.is(a.o.lifetime.signal.reason, reason, 'the abort reason stays');
  assert.is(a.o.state, 'closed');
});

test('a call that settles after its deadline is not reported twice; a body that fails after a timeout is ignored', async () => {
  const { o } = ops(0);
  let fail!: (e: unknown) => void;
  const e = await failure(o.run('x', { timeoutMs: 20 }, () => new Promise((_, rej) => { fail = rej; })));
  assert.is(e.code, ErrorCode.TIMEOUT);
  fail(protocolError('late'));
  await sleep(5);
  assert.is(o.state, 'aborted');
});

test('drain waits for every call issued so far, including failed ones', async () => {
  const { o } = ops(0);
  const seen: string[] = [];
  void o.run('a', {}, async () => { await sleep(30); seen.push('a'); });
  void o.run('b', {}, async () => { await sleep(10); seen.push('b'); throw invalidArgument('bad'); }).catch(() => {});
  await o.drain();
  assert.equal(seen, ['a', 'b']);
});

test('a settled call leaves no timer behind (this file must exit at once)', async () => {
  const o = new OrderedOps('comm', 0, 60_000, () => {});
  assert.is(await o.run('quick', {}, async () => 1), 1);
  const ctl = new AbortController();
  assert.is(await o.run('quick', { signal: ctl.signal }, async () => 2), 2);
});

test.run();
