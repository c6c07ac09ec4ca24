/**
 * The shared-memory ring's boundaries, case by case (issue 20's mutation run left these open):
 * a frame that ends exactly at the ring's end stays where it is, a ring filled to exactly its
 * size accepts the last frame, a doorbell is checked against the unread region (a hostile or
 * stale position is refused), the receiver wakes the sender exactly when a credit step is freed,
 * and the ring size option accepts exactly the powers of two in [64 KiB, 1 GiB].
 * The random wrap cases are in shm_ring_wrap.test.ts. Real segments (koffi, /dev/shm).
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { RecvRing, Segment, SendRing, creditStep, validRingBytes } from '../../host/cpu/shm.js';

const R = 65536;
const Q = R / 4; // four frames of Q fill the ring exactly (Q <= maxFrame = 28672)

/** A sender and a receiver on one fresh segment pair; closed after `body`. */
function withRing(body: (tx: SendRing, rx: RecvRing, a: Segment) => void): void {
  const a = Segment.create(R);
  const b = Segment.open(a.name, R);
  try {
    body(new SendRing(a), new RecvRing(b), a);
  } finally {
    a.close();
    b.close();
  }
}

const bytes = (n: number, v: number) => new Uint8Array(n).fill(v);

test('a frame ending exactly at the ring end is written in place, not skipped to offset 0', () => {
  withRing((tx, rx) => {
    assert.is(tx.put(bytes(Q, 1)), 0);
    assert.is(tx.put(bytes(Q, 2)), Q);
    rx.release(0, 2 * Q);
    assert.is(tx.put(bytes(Q, 3)), 2 * Q);
    // off + n === R: fits before the end; skipping would waste Q bytes and move it to R.
    assert.is(tx.put(bytes(Q, 4)), 3 * Q);
    const v = rx.at(3 * Q, Q);
    assert.ok(v, 'doorbell at the last quarter refused');
    assert.is(v!.byteOffset - rx.seg.ring.byteOffset, 3 * Q);
    assert.ok(v!.every((x) => x === 4));
  });
  withRing((tx, rx) => {
    for (let i = 0; i < 3; i++) tx.put(bytes(Q, 1));
    rx.release(0, 3 * Q);
    // One byte more than fits before the end: skips to offset 0 (position R).
    assert.is(tx.put(bytes(Q + 1, 5)), R);
  });
});

test('a ring filled to exactly its size takes the last frame; one byte more waits', () => {
  withRing((tx, rx) => {
    for (let i = 0; i < 4; i++) assert.is(tx.put(bytes(Q, i + 1)), i * Q, `frame ${i}`);
    assert.is(tx.put(bytes(1, 9)), -1, 'a byte beyond a full ring was accepted');
    // An empty payload still fits a full ring, and its doorbell (at tail + R) is accepted.
    assert.is(tx.put(new Uint8Array(0)), R);
    assert.ok(rx.at(R, 0), 'empty payload at tail + R refused');
    for (let i = 0; i < 4; i++) assert.ok(rx.at(i * Q, Q)!.every((x) => x === i + 1), `frame ${i} intact`);
    rx.release(0, 1);
    assert.is(tx.put(bytes(2, 9)), -1, 'two bytes fit where one was freed');
    assert.is(tx.put(bytes(1, 9)), R, 'the freed byte at offset 0 is reused');
  });
});

test('doorbells outside the unread region or past the ring end are refused', () => {
  withRing((_tx, rx) => {
    assert.ok(rx.at(0, R), 'a whole-ring payload at offset 0 is in bounds');
    assert.is(rx.at(0, R + 1), undefined, 'longer than the ring');
    assert.is(rx.at(1, R), undefined, 'runs past the ring end');
    assert.is(rx.at(R - 10, 11), undefined, 'runs past the ring end by one byte');
    assert.ok(rx.at(R - 10, 10), 'ends exactly at the ring end');
    assert.is(rx.at(R + 1, 1), undefined, 'more than a ring ahead of the tail');
    assert.is(rx.at(3 * R, 1), undefined, 'far ahead of the tail');
    rx.release(100, 100); // tail = 200
    assert.is(rx.at(100, 1), undefined, 'behind the tail (already freed)');
    assert.ok(rx.at(200, 10), 'at the tail');
  });
});

test('the receiver wakes the sender exactly when another credit step has been freed', () => {
  withRing((_tx, rx) => {
    const T = creditStep(R);
    assert.is(T, R / 8);
    assert.is(rx.release(0, 1), false, 'one byte freed: no wake-up');
    assert.is(rx.release(1, T - 2), false, 'T - 1 bytes freed: no wake-up');
    assert.is(rx.release(T - 1, 1), true, 'exactly T bytes freed: wake-up');
    assert.is(rx.release(T, 100), false, '100 bytes since the last wake-up');
    assert.is(rx.release(T + 100, T - 100), true, 'T bytes since the last wake-up');
    // The released position travels to the sender through the control word.
    assert.is(Atomics.load(rx.seg.control, 0) >>> 0, 2 * T);
  });
});

test('the ring size option: powers of two from 64 KiB to 1 GiB only', () => {
  for (const ok of [65536, 131072, 1 << 20, 1 << 30]) assert.ok(validRingBytes(ok), `${ok} refused`);
  for (const bad of [0, 32768, 65535, 65537, 3 * 65536, 2 ** 31, 2 ** 32, 65536.5, NaN, -65536]) {
    assert.not.ok(validRingBytes(bad), `${bad} accepted`);
  }
});

test('a segment reports closed only after close()', () => {
  const a = Segment.create(R);
  const b = Segment.open(a.name, R);
  assert.is(a.closed, false);
  a.close();
  b.close();
  assert.is(a.closed, true);
  assert.is(b.closed, true);
});

test.run();
