/**
 * The store's wire helpers on their own (host/store/protocol.ts), no sockets: limits and their
 * defaults, Frame's field layout, Cursor's INCOMPLETE bookkeeping and u64 range, Inbox's
 * buffering (borrow a read, copy at most once, size for the declared need, bounded growth for
 * untrusted lengths), isAscii and toBytes. The same bytes over real sockets: store_wire.test.ts.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  Cursor, DEFAULT_LIMITS, Frame, INCOMPLETE, Inbox, TORCH_LIMITS, isAscii, keyListFrame, resolveLimits, toBytes,
} from '../../host/store/protocol.js';

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

test('limits: defaults, torch limits, and maxRequestBytes following a raised maxValueBytes', () => {
  assert.equal(resolveLimits(), DEFAULT_LIMITS);
  assert.equal(DEFAULT_LIMITS, { maxKeyBytes: 8192, maxValueBytes: 64 << 20, maxKeysPerRequest: 131072, maxRequestBytes: 256 << 20 });
  assert.equal(TORCH_LIMITS, { maxKeyBytes: 8192, maxValueBytes: 8 << 20, maxKeysPerRequest: 131072, maxRequestBytes: Number.MAX_SAFE_INTEGER });
  assert.equal(resolveLimits({ maxKeyBytes: 10, maxKeysPerRequest: 3 }), { ...DEFAULT_LIMITS, maxKeyBytes: 10, maxKeysPerRequest: 3 });
  assert.is(resolveLimits({ maxValueBytes: 100 }).maxRequestBytes, 256 << 20, 'small values: the default stays');
  assert.is(resolveLimits({ maxValueBytes: 200 << 20 }).maxRequestBytes, 2 * (200 << 20) + (1 << 20), 'COMPARE_SET carries two values');
  assert.is(resolveLimits({ maxValueBytes: 200 << 20, maxRequestBytes: 5 }).maxRequestBytes, 5, 'given wins');
  assert.is(resolveLimits({ maxValueBytes: 200 << 20 }).maxValueBytes, 200 << 20);
});

test('Frame: u8, u32, u64 (both halves), i64, bytes with a length, raw, and a size check', () => {
  const f = new Frame(1 + 4 + 8 + 8 + 8 + (8 + 2) + 2 + 8);
  f.u8(0xab).u32(0xdeadbeef).u64(0x1_2345_6789).i64(-2n).u64(2 ** 53 - 1).bytes(Uint8Array.of(1, 2)).raw(Uint8Array.of(9, 8)).u32(-1).u32(7);
  assert.is(hex(f.done()),
    'ab' + 'efbeadde' + '8967452301000000' + 'feffffffffffffff' + 'ffffffffffff1f00' + '0200000000000000' + '0102' + '0908' + 'ffffffff' + '07000000');
  assert.throws(() => new Frame(3).u8(1).done(), /frame size mismatch: 1 != 3/);
  assert.is(hex(keyListFrame(6, [Uint8Array.of(0x61), Uint8Array.of()])), '06' + '0200000000000000' + '0100000000000000' + '61' + '0000000000000000');
  assert.is(hex(keyListFrame(5, [])), '05' + '0000000000000000');
});

/** Runs `f` on a cursor; returns the needed end if it threw INCOMPLETE. */
function incomplete(c: Cursor, f: () => unknown): number {
  try {
    f();
  } catch (e) {
    assert.is(e, INCOMPLETE);
    return c.needed;
  }
  assert.unreachable('complete');
  return -1;
}

test('Cursor: reads each field, and says how far a message must reach when it stops short', () => {
  const b = Buffer.from('ab' + 'efbeadde' + '8967452301000000' + 'feffffffffffffff' + '0102030405', 'hex');
  const c = new Cursor();
  c.reset(b, 0, b.length);
  assert.is(c.u8(), 0xab);
  assert.is(c.u32(), 0xdeadbeef);
  assert.is(c.u64(), 0x1_2345_6789);
  assert.is(c.i64(), -2n);
  assert.is(c.take(2), 21);
  assert.is(c.pos, 23);
  assert.is(incomplete(c, () => c.take(4)), 27, 'three bytes left, four wanted');
  assert.is(c.pos, 23, 'a short read consumes nothing');
  assert.is(c.take(3), 23, 'exactly what is left');
  assert.is(incomplete(c, () => c.u8()), 27);
  // Each reader checks its own width against `end`, which may stop before the buffer does.
  c.reset(b, 1, 4);
  assert.is(incomplete(c, () => c.u32()), 5);
  c.reset(b, 5, 12);
  assert.is(incomplete(c, () => c.u64()), 13);
  c.reset(b, 13, 20);
  assert.is(incomplete(c, () => c.i64()), 21);
  c.reset(b, 1, 1);
  assert.is(incomplete(c, () => c.u8()), 2);
});

test('Cursor.u64: values from 2^53 up are Infinity (over any limit), below are exact', () => {
  const c = new Cursor();
  const at = (lo: number, hi: number) => {
    const b = Buffer.alloc(8);
    b.writeUInt32LE(lo, 0);
    b.writeUInt32LE(hi, 4);
    c.reset(b, 0, 8);
    return c.u64();
  };
  assert.is(at(0xffffffff, 0x1fffff), 2 ** 53 - 1);
  assert.is(at(0, 0x200000), Infinity);
  assert.is(at(0, 0xffffffff), Infinity);
  assert.is(at(5, 1), 2 ** 32 + 5);
});

test('Inbox: a read arriving when nothing is pending is borrowed; what is left over is copied once', () => {
  const ib = new Inbox();
  const r1 = Buffer.from('abcdef');
  assert.is(ib.push(r1), true, 'need 0: ready');
  assert.is(ib.buf, r1, 'borrowed');
  assert.is(ib.held, 6);
  ib.consume(4, 10); // 'ef' pending; the next message needs 10 bytes
  assert.is(ib.held, 2);
  assert.is(ib.push(Buffer.from('gh')), false, '4 of 10');
  assert.is.not(ib.buf, r1, 'own buffer');
  assert.is(ib.buf.length, 10, 'sized for the whole message');
  assert.is(ib.held, 10);
  assert.is(ib.buf.toString('latin1', ib.start, ib.end), 'efgh');
  const own = ib.buf;
  assert.is(ib.push(Buffer.from('ijklmn')), true, 'exactly 10: ready');
  assert.is(ib.buf, own, 'appended in place, no second copy');
  assert.is(ib.buf.toString('latin1', ib.start, ib.end), 'efghijklmn');
  assert.is(r1.toString(), 'abcdef', 'the borrowed read was never written');
  ib.consume(ib.start + 3, 0);
  assert.is(ib.push(Buffer.from('XY')), true);
  assert.is.not(ib.buf, own, 'no room left in the own buffer: a new one');
  assert.is(ib.buf.toString('latin1', ib.start, ib.end), 'hijklmnXY');
  ib.clear();
  assert.is(ib.start, 0);
  assert.is(ib.end, 0);
  assert.is(ib.held, 0);
  assert.is(ib.need, 0);
  const r2 = Buffer.from('zz');
  ib.push(r2);
  assert.is(ib.buf, r2, 'empty again: the next read is borrowed');
});

test('Inbox: push answers whether the pending bytes reach what the parser needs', () => {
  const ib = new Inbox();
  assert.is(ib.held, 0);
  ib.push(Buffer.from('abcdef'));
  ib.consume(4, 10);
  ib.push(Buffer.from('gh')); // own buffer of 10: 'efgh'
  ib.consume(2, 6); // 'gh' pending, the next message needs 6 bytes
  assert.is(ib.push(Buffer.from('ij')), false, '4 of 6 (appended in place)');
  assert.is(ib.push(Buffer.from('kl')), true, '6 of 6');
  assert.is(ib.buf.toString('latin1', ib.start, ib.end), 'ghijkl');
  // Without growWithReceived (the default) the buffer is sized for the declared need at once.
  const d = new Inbox();
  d.push(Buffer.alloc(10));
  d.consume(2, 1_000_000);
  d.push(Buffer.alloc(5));
  assert.is(d.buf.length, 1_000_000);
});

test('Inbox: parsed bytes are never written again (a value view stays valid)', () => {
  const ib = new Inbox();
  ib.push(Buffer.from('0123'));
  ib.consume(2, 4);
  ib.push(Buffer.from('45'));
  const own = ib.buf;
  const view = own.subarray(0, 2); // "parsed" bytes '23'
  ib.consume(ib.start + 2, 8); // '45' pending, need 8
  ib.push(Buffer.from('6789'));
  assert.is(view.toString(), '23');
  assert.ok(ib.buf !== own || ib.end <= own.length);
  assert.is(ib.buf.toString('latin1', ib.start, ib.end), '456789');
});

test('Inbox with growWithReceived: a huge declared length does not allocate more than 4× what arrived (64 KiB at least)', () => {
  const ib = new Inbox(true);
  ib.push(Buffer.alloc(10));
  ib.consume(2, 1 << 30); // the peer says: 1 GiB follows
  ib.push(Buffer.alloc(100));
  assert.is(ib.buf.length, 64 * 1024, 'small reads: 64 KiB');
  assert.is(ib.end - ib.start, 108);
  ib.push(Buffer.alloc(64 * 1024)); // 65644 held, no room: grows to four times that
  assert.is(ib.buf.length, 4 * (108 + 64 * 1024));
  const trusting = new Inbox(false);
  trusting.push(Buffer.alloc(10));
  trusting.consume(2, 1000);
  trusting.push(Buffer.alloc(5));
  assert.is(trusting.buf.length, 1000, 'without it: sized for the declared need');
  const small = new Inbox(true);
  small.push(Buffer.alloc(10));
  small.consume(2, 20);
  small.push(Buffer.alloc(5));
  assert.is(small.buf.length, 20, 'a need below the bound is met exactly');
  const over = new Inbox(true);
  over.push(Buffer.alloc(10));
  over.consume(2, 4);
  over.push(Buffer.alloc(100_000));
  assert.is(over.buf.length, 100_008, 'never less than what arrived');
});

test('Inbox: a transient read (a buffer the socket reuses) is copied, never borrowed', () => {
  const ib = new Inbox();
  const r = Buffer.from('abcd');
  assert.is(ib.push(r, true), true);
  assert.is.not(ib.buf, r, 'copied');
  r.fill(0x7a);
  assert.is(ib.buf.toString('latin1', ib.start, ib.end), 'abcd', 'the socket reusing its buffer changes nothing');
  ib.consume(2, 6);
  const r2 = Buffer.from('ef');
  ib.push(r2, true);
  r2.fill(0x7a);
  assert.is(ib.buf.toString('latin1', ib.start, ib.end), 'cdef');
  const big = Buffer.alloc(5000, 0x41);
  const jb = new Inbox();
  jb.push(big, true);
  assert.is.not(jb.buf, big);
  assert.is(jb.buf.length, 5000);
  big[0] = 0;
  assert.is(jb.buf[0], 0x41);
  const kb = new Inbox();
  const own = Buffer.from('xy');
  kb.push(own);
  assert.is(kb.buf, own, 'not transient: borrowed as before');
});

test('isAscii and toBytes', () => {
  assert.ok(isAscii(''));
  assert.ok(isAscii('abc\x00\x7f'));
  assert.not.ok(isAscii('caf\u00e9'));
  assert.not.ok(isAscii('a\x80'));
  assert.not.ok(isAscii('\u00e9abc'), 'anchored at the start');
  assert.not.ok(isAscii('abc\u00e9'), 'anchored at the end');
  assert.is(hex(toBytes('\u00e9')), 'c3a9', 'strings are UTF-8');
  assert.instance(toBytes('a'), Uint8Array);
  assert.is(toBytes('').length, 0);
  const b = Uint8Array.of(0xff);
  assert.is(toBytes(b), b, 'bytes pass through');
});

test.run();
