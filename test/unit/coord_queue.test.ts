/**
 * The coordinator's operation queue (host/coordinator/queue.ts) on its own, with a recording
 * stand-in for the group's failure state (faults.ts): operations run one after the other in
 * call order (not awaited, failing ones included), collectives are numbered and recorded while
 * send/recv are not, each gets one deadline (its own timeoutMs, else the group's) and a signal
 * that fires on abort(); abort rejects the one in flight and the queued ones with ABORTED; a
 * failed group returns what was published or its failure; an error is judged and named with the
 * group, this rank and the peers; `busy` counts the one running; the tracer gets one line each.
 */
import { test as uvuTest } from 'uvu';
import * as assert from 'uvu/assert';
import { OpQueue } from '../../host/coordinator/queue.js';
import type { Deadline } from '../../host/base/deadline.js';
import { GroupcommError, timeoutError } from '../../host/base/errors.js';
import { tensor } from '../../host/core/tensor.js';
import type { GroupFaults } from '../../host/coordinator/faults.js';
import type { Logger } from '../../host/base/log.js';

function fakeFaults() {
  const f = {
    calls: 0,
    busy: 0,
    failure: undefined as GroupcommError | undefined,
    recorded: [] as [number, string][],
    judged: [] as [unknown, number, string, number][],
    judgeWith: undefined as ((e: unknown) => unknown) | undefined,
    record(n: number, what: string) { f.recorded.push([n, what]); },
    async judge(e: unknown, n: number, what: string, timeoutMs: number) {
      f.judged.push([e, n, what, timeoutMs]);
      return f.judgeWith ? f.judgeWith(e) : e;
    },
  };
  return f;
}
function queue(tracer?: Logger) {
  const q = new OpQueue({ label: 'g_3', rank: 7, ranks: [5, 7, 9], timeoutMs: 4_000, tracer });
  const f = fakeFaults();
  q.faults = f as unknown as GroupFaults;
  return { q, f };
}
// uvu exits 0 when a test throws `undefined` (it reports the test as neither passed nor failed),
// and a broken queue can reject with exactly that (an explained `undefined` reason): turn any
// such throw into a real failure.
const test = (name: string, fn: () => Promise<void>) => uvuTest(name, async () => {
  try {
    await fn();
  } catch (e) {
    throw e instanceof Error ? e : new Error(`threw ${String(e)}`);
  }
});
test.run = () => uvuTest.run();
const caught = (p: Promise<unknown>) => p.then(() => undefined, (e) => e);
const tick = () => new Promise((r) => setTimeout(r, 5));

test('operations run one at a time in call order, failing ones included; idle settles after all', async () => {
  const { q, f } = queue();
  const order: string[] = [];
  const step = (name: string, fail = false) => async () => {
    order.push(`${name}+`);
    assert.is(f.busy, 1, 'busy while one runs');
    await tick();
    order.push(`${name}-`);
    if (fail) throw new Error(`${name} broke`);
    return name;
  };
  const a = q.run('allReduce', undefined, step('a'));
  const b = q.run('barrier', undefined, step('b', true));
  const c = q.run('broadcast', undefined, step('c'));
  assert.is(await a, 'a');
  assert.match(String(await caught(b)), /b broke/);
  assert.is(await c, 'c');
  assert.equal(order, ['a+', 'a-', 'b+', 'b-', 'c+', 'c-']);
  assert.is(f.busy, 0);
  assert.is(await q.idle, 'c');
  const d = q.run('gather', undefined, async () => { throw new Error('x'); });
  assert.is(await q.idle, undefined, 'idle never rejects');
  await caught(d);
});

test('collectives are numbered and recorded in call order; send and recv (and variants) are not', async () => {
  const { q, f } = queue();
  const ns: number[] = [];
  const run = (what: string) => q.run(what, undefined, async (_b, n) => { ns.push(n); });
  await Promise.all([run('allReduce'), run('send'), run('recvObject'), run('barrier'), run('sendTensorDict'), run('broadcastObject')]);
  assert.equal(ns, [0, -1, -1, 1, -1, 2]);
  assert.equal(f.recorded, [[0, 'allReduce'], [1, 'barrier'], [2, 'broadcastObject']]);
  assert.is(f.calls, 3);
  // 'send'/'recv' only at the start of the name: a collective whose name merely contains them is counted.
  await run('resend');
  assert.equal(ns.at(-1), 3);
});

test('each operation gets one deadline: its own timeoutMs, else the group\'s; named after the group and the call', async () => {
  const { q } = queue();
  const seen: Deadline[] = [];
  await q.run('allGather', undefined, async (b) => { seen.push(b); });
  await q.run('allGather', { timeoutMs: 50 }, async (b) => { seen.push(b); });
  assert.is(seen[0].timeoutMs, 4_000);
  assert.is(seen[1].timeoutMs, 50);
  await new Promise((r) => setTimeout(r, 60));
  const e = (() => { try { seen[1].next(); } catch (x) { return x as GroupcommError; } })();
  assert.is(e?.code, 'ERR_GROUPCOMM_TIMEOUT');
  assert.match(String(e?.message), /g_3\.allGather timed out after 50ms/);
});

test('abort() rejects the operation in flight (through its signal) and the queued ones with ABORTED, the reason as cause', async () => {
  const { q, f } = queue();
  const caller = new AbortController();
  let signal: AbortSignal | undefined;
  const inFlight = q.run('allReduce', { signal: caller.signal }, (b) => new Promise((_, reject) => {
    signal = b.signal;
    b.signal!.addEventListener('abort', () => reject(b.signal!.reason));
  }));
  let ran = false;
  const queued = q.run('barrier', undefined, async () => { ran = true; });
  await tick();
  assert.is(q.aborted, false);
  const reason = new Error('shutting down');
  q.abort(reason);
  assert.is(q.aborted, true);
  const e1 = await caught(inFlight);
  const e2 = await caught(queued);
  for (const [e, what] of [[e1, 'allReduce'], [e2, 'barrier']] as const) {
    assert.is(e?.code, 'ERR_GROUPCOMM_ABORTED', String(e));
    assert.match(e.message, new RegExp(`^g_3\\.${what} \\(global rank 7\\): group g_3 was aborted: shutting down`));
    assert.is(e.rank, 7);
    assert.is(e.cause?.cause, reason, 'ABORTED (named by the call) caused by the reason');
  }
  assert.is(signal?.aborted, true);
  assert.is(ran, false, 'a queued operation never starts after abort');
  assert.equal(f.judged, [], 'an aborted operation is not judged');
  // The caller's own signal also reaches the operation.
  const { q: q2 } = queue();
  const own = new AbortController();
  const p = q2.run('allReduce', { signal: own.signal }, (b) => new Promise((_, reject) => b.signal!.addEventListener('abort', () => reject(new Error('own abort')))));
  await tick();
  own.abort();
  assert.match(String(await caught(p)), /own abort/);
  assert.is(q.life.signal.aborted, true);
  assert.is(q2.life.signal.aborted, false);
  // abort() without a reason says just that.
  const { q: q3 } = queue();
  q3.abort(undefined);
  const e3 = await caught(q3.run('barrier', undefined, async () => 1));
  assert.match(e3.message, /group g_3 was aborted$/);
});

test('a failed group: the failure (named), or what was published before it; nothing runs', async () => {
  const { q, f } = queue();
  f.failure = new GroupcommError('ERR_GROUPCOMM_PEER_LOST', 'rank 2 is gone', { peerRank: 2 });
  let ran = false;
  const e = await caught(q.run('allReduce', undefined, async () => { ran = true; }));
  assert.is(e?.code, 'ERR_GROUPCOMM_PEER_LOST');
  assert.match(e.message, /^g_3\.allReduce \(global rank 7\): rank 2 is gone \[group rank 2 = global rank 9\]$/);
  assert.is(await q.run<unknown>('broadcastObject', undefined, async () => { ran = true; }, () => ({ value: 'kept' })), 'kept');
  const e2 = await caught(q.run('broadcastObject', undefined, async () => { ran = true; }, () => undefined));
  assert.is(e2?.code, 'ERR_GROUPCOMM_PEER_LOST');
  assert.is(ran, false);
  assert.is(f.busy, 0);
});

test('an error is judged (call number, name, timeout) and named; a failure found meanwhile returns what was published', async () => {
  const { q, f } = queue();
  const t = timeoutError('took too long', { peerRank: 0 });
  const e = await caught(q.run('gather', { timeoutMs: 900 }, async () => { throw t; }));
  assert.equal(f.judged, [[t, 0, 'gather', 900]]);
  assert.is(e.code, 'ERR_GROUPCOMM_TIMEOUT');
  assert.is(e.cause, t, 'the judged error, with context');
  assert.is(e.rank, 7);
  assert.match(e.message, /^g_3\.gather \(global rank 7\): took too long \[group rank 0 = global rank 5\]$/);
  // What judge returns is what the caller gets.
  f.judgeWith = () => new GroupcommError('ERR_GROUPCOMM_MISMATCH', 'calls differ', { peerRanks: [0, 2] });
  const e2 = await caught(q.run('barrier', undefined, async () => { throw new Error('raw'); }));
  assert.is(e2.code, 'ERR_GROUPCOMM_MISMATCH');
  assert.match(e2.message, /\[group rank 0 = global rank 5; group rank 2 = global rank 9\]$/);
  assert.equal(f.judged[1].slice(1), [1, 'barrier', 4_000]);
  // Judging found the group failed, and the broadcast had been published: its value.
  f.judgeWith = (x) => { f.failure = new GroupcommError('ERR_GROUPCOMM_PEER_LOST', 'gone'); return x; };
  assert.is(await q.run<number>('broadcastObject', undefined, async () => { throw new Error('cut'); }, () => ({ value: 42 })), 42);
  // Judging found the group failed, and nothing was published (or nothing can be): the judged error.
  f.failure = undefined;
  const e4 = await caught(q.run('allReduce', undefined, async () => { throw timeoutError('slow'); }));
  assert.is(e4?.code, 'ERR_GROUPCOMM_TIMEOUT', String(e4));
  // Not failed: the published value is not consulted.
  const { q: q2, f: f2 } = queue();
  let asked = false;
  const e3 = await caught(q2.run('broadcastObject', undefined, async () => { throw new Error('cut'); }, () => { asked = true; return { value: 1 }; }));
  assert.match(String(e3), /cut/);
  assert.is(asked, false);
  assert.is(f2.busy, 0);
  // A non-groupcomm error passes through unchanged.
  assert.is(e3.message, 'cut');
});

test('with a tracer: one line per operation (bytes of a tensor result, the other members\' global ranks)', async () => {
  const lines: string[] = [];
  const tracer = { trace: (m: string) => lines.push(m) } as unknown as Logger;
  const { q } = queue(tracer);
  await q.run('allReduce', undefined, async () => tensor(Float32Array.of(1, 2)));
  await q.run('barrier', undefined, async () => undefined);
  await caught(q.run('gather', undefined, async () => { throw timeoutError('late'); }));
  await tick();
  assert.is(lines.length, 3, lines.join('\n'));
  assert.match(lines[0], /^op=allReduce bytes=8 peers=5,9 us=\d+$/);
  assert.match(lines[1], /^op=barrier peers=/);
  assert.match(lines[2], /^op=gather peers=.* failed=ERR_GROUPCOMM_TIMEOUT$/);
  const { q: q2 } = queue();
  assert.is(await q2.run('allReduce', undefined, async () => 3), 3, 'without a tracer: the plain result');
});

test.run();
