// OrderedOps: the ordering, deadline and abort rules every communicator inherits.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { OrderedOps } from '../../host/device/lifecycle.js';
import { sleep } from '../../host/base/deadline.js';
import { invalidArgument, isGroupcommError, ErrorCode, timeoutError } from '../../host/base/errors.js';

test('operations run one at a time in call order, even when not awaited', async () => {
  const ops = new OrderedOps('test', 0, 5_000, () => {});
  const seen: string[] = [];
  const a = ops.run('a', {}, async () => { await sleep(30); seen.push('a'); });
  const b = ops.run('b', {}, async () => { seen.push('b'); });
  await Promise.all([a, b]);
  assert.equal(seen, ['a', 'b']);
});

test('a timeout rejects with ERR_GROUPCOMM_TIMEOUT naming the rank, aborts once, and later calls are refused', async () => {
  let fatal = 0;
  const ops = new OrderedOps('test', 3, 5_000, () => { fatal++; });
  let sawAbort = false;
  const p = ops.run('slow', { timeoutMs: 50 }, (signal) => new Promise((_, rej) => signal.addEventListener('abort', () => { sawAbort = true; rej(signal.reason); })));
  await p.then(() => assert.unreachable(), (e) => {
    assert.ok(isGroupcommError(e, ErrorCode.TIMEOUT), String(e));
    assert.is(e.rank, 3);
  });
  assert.ok(sawAbort, 'the operation was told to stop');
  assert.is(fatal, 1);
  assert.is(ops.state, 'aborted');
  await ops.run('next', {}, async () => 1).then(() => assert.unreachable(), (e) => assert.ok(isGroupcommError(e, ErrorCode.ABORTED)));
});

test('a queued operation that is given up before it starts does not abort the communicator', async () => {
  const ops = new OrderedOps('test', 0, 5_000, () => {});
  const first = ops.run('first', {}, async () => { await sleep(100); });
  const ctl = new AbortController();
  ctl.abort();
  await ops.run('second', { signal: ctl.signal }, async () => 1).then(() => assert.unreachable(), (e) => assert.ok(isGroupcommError(e, ErrorCode.ABORTED)));
  await first;
  assert.is(ops.state, 'ready');
});

test('abort() rejects the operation in flight; markClosed is idempotent and later calls say destroyed', async () => {
  const ops = new OrderedOps('test', 0, 5_000, () => {});
  const p = ops.run('wait', {}, (signal) => new Promise((_, rej) => signal.addEventListener('abort', () => rej(signal.reason))));
  await ops.abort('stop');
  await p.then(() => assert.unreachable(), (e) => assert.ok(isGroupcommError(e, ErrorCode.ABORTED), String(e)));
  assert.ok(ops.markClosed());
  assert.not.ok(ops.markClosed());
  await ops.run('after', {}, async () => 1).then(() => assert.unreachable(), (e) => assert.ok(isGroupcommError(e, ErrorCode.DESTROYED)));
});

test('an operation whose own deadline fires first (a store wait) also kills the communicator', async () => {
  const ops = new OrderedOps('test', 1, 5_000, () => {});
  await ops.run('recv', { timeoutMs: 5_000 }, async () => { throw timeoutError('store get timed out', { rank: 1 }); })
    .then(() => assert.unreachable(), (e) => assert.ok(isGroupcommError(e, ErrorCode.TIMEOUT)));
  assert.is(ops.state, 'aborted');
});

test('an operation failing on bad input leaves the communicator usable', async () => {
  const ops = new OrderedOps('test', 0, 5_000, () => {});
  await ops.run('recv', {}, async () => { throw invalidArgument('size mismatch'); }).catch(() => {});
  assert.is(ops.state, 'ready');
  assert.is(await ops.run('next', {}, async () => 7), 7);
});

test.run();
