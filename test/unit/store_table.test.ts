/**
 * The store server's data table (host/store/table.ts) on its own, no sockets: strtoll's edge
 * cases, small and big values, COMPARE_SET's four cases, APPEND's limit and copy-on-write, queues,
 * WAIT counting (one count per connection, a replaced WAIT, CANCEL_WAIT, closed waiters), a push
 * waking exactly one waiter, watchers, and takePrefix. The same semantics over the wire are in
 * store_wire.test.ts; this file pins the boundaries the mutation run found unchecked.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { KeyTable, SMALL_VALUE_BYTES, Violation, bytesOf, strtoll, valueOf, type Waiter } from '../../host/store/table.js';

interface W extends Waiter { id: number }
const waiter = (id: number): W => ({ id, waitCount: 0, waitKeys: null, closed: false });

function table(always: string[] = []) {
  const woken: number[] = [];
  const t = new KeyTable<W>((w) => woken.push(w.id), new Set(always));
  return { t, woken };
}

const b = (s: string) => Buffer.from(s, 'latin1');
const text = (v: unknown) => (v === undefined ? undefined : bytesOf(v as string | Buffer).toString('latin1'));

function violation(fn: () => unknown, re: RegExp): void {
  try {
    fn();
  } catch (e) {
    assert.instance(e, Violation);
    assert.match((e as Error).message, re);
    return;
  }
  assert.unreachable(`no Violation (${re})`);
}

test('strtoll: white space, sign, leading zeros, trailing text, and the int64 range', () => {
  assert.is(strtoll('42'), 42n);
  assert.is(strtoll(' \t\n\v\f\r-17xyz'), -17n);
  assert.is(strtoll('+5'), 5n);
  assert.is(strtoll('000000000000000000000000000123'), 123n, 'leading zeros are not significant digits');
  assert.is(strtoll(b('  99 bottles')), 99n, 'a Buffer value');
  assert.is(strtoll('9223372036854775807'), 0x7fffffffffffffffn);
  assert.is(strtoll('-9223372036854775808'), -0x8000000000000000n);
  violation(() => strtoll('9223372036854775808'), /range/);
  violation(() => strtoll('-9223372036854775809'), /range/);
  violation(() => strtoll('1' + '0'.repeat(19)), /range/); // 20 significant digits
  assert.is(strtoll('1' + '0'.repeat(18)), 10n ** 18n); // 19 digits
  violation(() => strtoll('x1'), /not a decimal integer/);
  violation(() => strtoll(''), /not a decimal integer/);
  violation(() => strtoll('- 1'), /not a decimal integer/);
});

test('valueOf: small values are strings, big ones are a view when they fill half the buffer, else a copy', () => {
  const small = Buffer.alloc(SMALL_VALUE_BYTES + 10, 0x61);
  assert.type(valueOf(small, 10, 10 + SMALL_VALUE_BYTES), 'string');
  assert.is((valueOf(small, 10, 10 + SMALL_VALUE_BYTES) as string).length, SMALL_VALUE_BYTES);
  const n = SMALL_VALUE_BYTES + 1;
  const half = Buffer.alloc(2 * n, 0x62);
  const view = valueOf(half, 0, n);
  assert.ok(Buffer.isBuffer(view));
  assert.is(view.length, n);
  assert.is((view as Buffer).buffer, half.buffer, 'exactly half the buffer: kept as a view');
  const big = Buffer.alloc(2 * n + 1, 0x63);
  big[5] = 0x64;
  const copy = valueOf(big, 5, 5 + n) as Buffer;
  assert.ok(Buffer.isBuffer(copy));
  assert.is.not(copy.buffer, big.buffer, 'less than half: copied');
  assert.is(copy.length, n);
  assert.is(copy[0], 0x64);
  assert.is(copy[1], 0x63);
  big[5] = 0;
  assert.is(copy[0], 0x64, 'the copy does not follow the read buffer');
});

test('set/get/delete/size and exists (queues and always-present keys)', () => {
  const { t } = table(['probe']);
  assert.is(t.size, 0);
  t.set('a', 'x');
  assert.is(t.size, 1);
  assert.is(t.get('a'), 'x');
  assert.ok(t.exists('a'));
  assert.ok(t.exists('probe'));
  assert.is(t.get('probe'), undefined);
  assert.not.ok(t.exists('q'));
  t.queuePush('q', 'v');
  assert.ok(t.exists('q'), 'a non-empty queue exists');
  t.queuePop('q');
  assert.not.ok(t.exists('q'), 'an emptied queue does not');
  assert.is(t.delete('a'), true);
  assert.is(t.delete('a'), false);
  assert.is(t.size, 0);
});

test('add: a missing key starts at 0, values stay decimal text, overflow is a violation', () => {
  const { t } = table();
  assert.is(t.add('n', 5n), 5n);
  assert.is(t.add('n', -7n), -2n);
  assert.is(t.get('n'), '-2');
  t.set('m', '9223372036854775806');
  assert.is(t.add('m', 1n), 0x7fffffffffffffffn);
  violation(() => t.add('m', 1n), /overflows/);
  t.set('k', '-9223372036854775807');
  assert.is(t.add('k', -1n), -0x8000000000000000n);
  violation(() => t.add('k', -1n), /overflows/);
  assert.is(t.get('k'), '-9223372036854775808', 'a failed ADD stores nothing');
});

test('compareSet: missing+empty expected stores, missing+non-empty echoes expected, match stores, mismatch returns current', () => {
  const { t } = table();
  const buf = b('oldnew');
  assert.is(t.compareSet('k', buf, 0, 0, 3, 6), 'new', 'missing key, empty expected: stored');
  assert.is(t.get('k'), 'new');
  assert.is(t.compareSet('j', buf, 0, 3, 3, 6), 'old', 'missing key, expected "old": echoes expected');
  assert.is(t.get('j'), undefined);
  assert.is(t.compareSet('k', buf, 0, 3, 0, 3), 'new', 'mismatch: current value');
  assert.is(t.compareSet('k', b('ne'), 0, 2, 0, 1), 'new', 'a prefix of the current value is a mismatch');
  assert.is(t.compareSet('k', buf, 3, 6, 0, 3), 'old', 'match: desired stored');
  assert.is(t.get('k'), 'old');
  // Big values compare byte for byte.
  const big = Buffer.alloc(1000, 7);
  t.set('big', Buffer.from(big));
  const exp = Buffer.concat([big, b('Z')]);
  assert.is(text(t.compareSet('big', exp, 0, 1000, 1000, 1001)), 'Z');
  exp[3] = 8;
  t.set('big', Buffer.from(big));
  assert.ok(Buffer.isBuffer(t.compareSet('big', exp, 0, 1000, 1000, 1001)), 'one byte differs: current returned');
  assert.is((t.get('big') as Buffer).length, 1000);
});

test('append: creates, concatenates small strings, switches to a fresh buffer when big, refuses past the limit', () => {
  const { t } = table();
  t.append('k', b('ab'), 0, 2, 1000);
  assert.is(t.get('k'), 'ab');
  t.append('k', b('xcdx'), 1, 3, 1000);
  assert.is(t.get('k'), 'abcd');
  const fill = Buffer.alloc(SMALL_VALUE_BYTES - 4, 0x65);
  t.append('k', fill, 0, fill.length, 1000);
  assert.type(t.get('k'), 'string', 'exactly SMALL_VALUE_BYTES: still a string');
  assert.is((t.get('k') as string).length, SMALL_VALUE_BYTES);
  const before = t.get('k');
  t.append('k', b('z'), 0, 1, 1000);
  const v = t.get('k') as Buffer;
  assert.ok(Buffer.isBuffer(v));
  assert.is(v.length, SMALL_VALUE_BYTES + 1);
  assert.is(v.toString('latin1'), (before as string) + 'z');
  t.append('k', b('yy'), 0, 2, 1000);
  const w = t.get('k') as Buffer;
  assert.is.not(w, v, 'a new buffer, the old one untouched');
  assert.is(v.length, SMALL_VALUE_BYTES + 1);
  assert.is(w.toString('latin1'), (before as string) + 'zyy');
  t.set('m', 'abc');
  t.append('m', b('de'), 0, 2, 5);
  assert.is(t.get('m'), 'abcde', 'exactly the limit is allowed');
  violation(() => t.append('m', b('f'), 0, 1, 5), /maxValueBytes 5/);
  // The limit counts the appended span [a, b), not its end offset.
  t.set('o', 'abc');
  t.append('o', b('xde'), 1, 3, 5);
  assert.is(t.get('o'), 'abcde');
  assert.is(t.get('m'), 'abcde');
});

test('queues: FIFO, pop answers the length before, an emptied queue is gone', () => {
  const { t } = table();
  assert.equal(t.queuePop('q'), [0, undefined]);
  t.queuePush('q', 'a');
  t.queuePush('q', 'b');
  assert.is(t.queueLen('q'), 2);
  assert.equal(t.queuePop('q'), [2, 'a']);
  assert.equal(t.queuePop('q'), [1, 'b']);
  assert.is(t.queueLen('q'), 0);
  assert.equal(t.queuePop('q'), [0, undefined]);
});

test('wait: counts each missing key once per connection; fires once when all were written', () => {
  const { t, woken } = table(['probe']);
  t.set('a', '1');
  const w = waiter(1);
  assert.is(t.wait(w, ['a', 'probe']), true, 'all present');
  assert.is(w.waitKeys, null);
  assert.is(t.wait(w, ['a', 'b', 'c']), false);
  assert.is(w.waitCount, 2);
  assert.equal(w.waitKeys, ['a', 'b', 'c']);
  t.set('b', '1');
  assert.equal(woken, []);
  assert.is(w.waitCount, 1);
  t.delete('b'); // counted, stays counted
  t.set('c', '1');
  assert.equal(woken, [1]);
  assert.is(w.waitKeys, null);
  assert.is(w.waitCount, 0);
  t.set('c', '2');
  assert.equal(woken, [1], 'no second wake-up');
});

test('wait: a new WAIT replaces the previous one; cancelWait forgets it; closed waiters are skipped', () => {
  const { t, woken } = table();
  const w = waiter(1);
  t.wait(w, ['x']);
  t.wait(w, ['y']);
  t.set('x', '1');
  assert.equal(woken, [], 'the replaced WAIT no longer counts');
  t.set('y', '1');
  assert.equal(woken, [1]);
  const u = waiter(2);
  const v = waiter(3);
  t.wait(u, ['z']);
  t.wait(v, ['z']);
  t.cancelWait(u);
  assert.is(u.waitKeys, null);
  assert.is(u.waitCount, 0);
  t.set('z', '1');
  assert.equal(woken, [1, 3], 'only the waiter that did not cancel');
  const c = waiter(4);
  const d = waiter(5);
  t.wait(c, ['p']);
  t.wait(d, ['p']);
  c.closed = true;
  t.set('p', '1');
  assert.equal(woken, [1, 3, 5]);
  // Cancelling after some keys were written (their lists are gone) forgets the rest.
  const f = waiter(7);
  t.wait(f, ['s1', 's2']);
  t.set('s1', '1');
  t.cancelWait(f);
  t.set('s2', '1');
  assert.equal(woken, [1, 3, 5]);
  // Cancelling the only waiter of a key leaves nothing behind: a later set wakes no one.
  const e = waiter(6);
  t.wait(e, ['r', 's']);
  t.cancelWait(e);
  t.cancelWait(e);
  t.set('r', '1');
  t.set('s', '1');
  assert.equal(woken, [1, 3, 5]);
});

test('queuePush wakes only the oldest live waiter, skipping closed or satisfied ones', () => {
  const { t, woken } = table();
  const ws = [waiter(1), waiter(2), waiter(3), waiter(4)];
  for (const w of ws) t.wait(w, ['q']);
  ws[0].closed = true;
  t.queuePush('q', 'a');
  assert.equal(woken, [2]);
  assert.is(ws[2].waitCount, 1);
  t.queuePush('q', 'b');
  assert.equal(woken, [2, 3]);
  // A waiter for two keys is counted down, not woken, by one push.
  const m = waiter(5);
  t.wait(m, ['q2', 'k2']);
  t.queuePush('q2', 'x');
  assert.equal(woken, [2, 3]);
  assert.is(m.waitCount, 1);
  t.set('k2', '1');
  assert.equal(woken, [2, 3, 5]);
  t.queuePush('q', 'c');
  assert.equal(woken, [2, 3, 5, 4]);
  t.queuePush('q', 'd');
  assert.equal(woken, [2, 3, 5, 4], 'no waiter left: nothing more');
});

test('watchers: called after each write to their key, removable; notify() calls all', () => {
  const { t } = table();
  const calls: string[] = [];
  const offA = t.watch('a', () => calls.push('a1'));
  const offA2 = t.watch('a', () => calls.push('a2'));
  t.watch('b', () => calls.push('b'));
  t.set('a', '1');
  assert.equal(calls, ['a1', 'a2']);
  t.add('b', 1n);
  assert.equal(calls, ['a1', 'a2', 'b']);
  offA();
  t.append('a', b('x'), 0, 1, 100);
  assert.equal(calls, ['a1', 'a2', 'b', 'a2']);
  offA2();
  t.set('a', '2');
  assert.equal(calls.length, 4);
  const offC = t.watch('a', () => calls.push('c'));
  offA2(); // a stale remover must not drop the key's new watchers
  calls.length = 0;
  t.notify();
  assert.equal(calls, ['b', 'c']);
  t.notify('a');
  assert.equal(calls, ['b', 'c', 'c']);
  offC();
});

test('takePrefix: removes and returns the matching keys in insertion order', () => {
  const { t } = table();
  t.set('p/1', 'a');
  t.set('x', 'b');
  t.set('p/2', 'c');
  assert.equal(t.takePrefix('p/'), [['p/1', 'a'], ['p/2', 'c']]);
  assert.is(t.size, 1);
  assert.equal(t.takePrefix('p/'), []);
  assert.is(t.get('x'), 'b');
});

test.run();
