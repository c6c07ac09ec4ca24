/**
 * The message queue's shared-memory ring (host/coordinator/mq_ring.ts) over a real segment
 * mapped twice in this process (writer and reader views of the same pages): slots and their
 * headers, free-running u32 counters, read counts, the asleep flags, the writer's closed flag,
 * close; and poll(): spin, then 1 ms polls, under the deadline and the signal.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { MAX_READERS, MqRing, poll } from '../../host/coordinator/mq_ring.js';
import { Segment } from '../../host/cpu/shm.js';
import { timeoutError } from '../../host/base/errors.js';
import { shmAvailable } from '../helpers/scenarios.js';

function pair(slots: number, slotBytes: number): [MqRing, MqRing] {
  const bytes = MqRing.bytesFor(slots, slotBytes);
  const w = Segment.create(bytes);
  const r = Segment.open(w.name, bytes);
  return [new MqRing(w, slots, slotBytes), new MqRing(r, slots, slotBytes)];
}

test('bytesFor: the slots, at least 64 KiB; a control page counts 504 readers', () => {
  assert.is(MqRing.bytesFor(4, 1024), 65536);
  assert.is(MqRing.bytesFor(16, 8192), 131072);
  assert.is(MAX_READERS, 504);
});

if (shmAvailable) {
  test('a chunk written in slot k mod slots is read from the other mapping, with its last flag', () => {
    const [w, r] = pair(4, 64);
    try {
      assert.is(w.chunkBytes, 56);
      assert.is(r.written, 0);
      w.put(0, Uint8Array.of(1, 2, 3), false);
      assert.is(r.written, 1);
      w.put(1, new Uint8Array(56).fill(9), true);
      w.put(5, Uint8Array.of(7), true); // slot 1 again
      assert.is(r.written, 6);
      const c0 = r.get(0);
      assert.equal([...c0.part], [1, 2, 3]);
      assert.is(c0.last, false);
      const c5 = r.get(5);
      assert.equal([...c5.part], [7]);
      assert.is(c5.last, true);
      assert.is(r.get(1).part.length, 1, 'slot 1 now holds chunk 5');
      assert.is(r.get(4).part.length, 3, 'chunk 4 maps to slot 0');
      // The counter runs free as a u32: after chunk 2^32 − 1 it reads 0 (slot 3).
      w.put(2 ** 32 - 1, Uint8Array.of(5, 5), false);
      assert.is(r.written, 0);
      assert.equal([...r.get(3).part], [5, 5]);
    } finally {
      w.close();
      r.close();
    }
  });

  test('a slot claiming more than a chunk is refused; a full chunk is not', () => {
    const [w, r] = pair(2, 32);
    try {
      w.put(0, new Uint8Array(24), true);
      assert.is(r.get(0).part.length, 24);
      new DataView(w.seg.ring.buffer, w.seg.ring.byteOffset).setUint32(0, 25, true);
      assert.throws(() => r.get(0), /claims 25 bytes \(at most 24\)/);
    } finally {
      w.close();
      r.close();
    }
  });

  test('read counts and asleep flags are per reader and seen across mappings', () => {
    const [w, r] = pair(4, 64);
    try {
      r.ack(0, 3);
      r.ack(MAX_READERS - 1, 2 ** 32 - 2);
      assert.is(w.readCount(0), 3);
      assert.is(w.readCount(1), 0);
      assert.is(w.readCount(MAX_READERS - 1), 2 ** 32 - 2);
      assert.is(w.wake(0), false);
      r.sleep(1);
      r.sleep(MAX_READERS - 1);
      assert.is(w.wake(0), false);
      assert.is(w.wake(1), true);
      assert.is(w.wake(1), false, 'cleared by the first wake');
      assert.is(r.wake(MAX_READERS - 1), true);
      // The flags live apart from the counters.
      assert.is(w.readCount(1), 0);
      assert.is(w.written, 0);
      assert.is(w.writerClosed, false);
    } finally {
      w.close();
      r.close();
    }
  });

  test('markClosed is seen by readers; after close() nothing touches the mapping, and close is idempotent', () => {
    const [w, r] = pair(4, 64);
    try {
      assert.is(r.writerClosed, false);
      w.markClosed();
      assert.is(r.writerClosed, true);
      assert.is(w.written, 0, 'the closed flag is not the write counter');
    } finally {
      w.close();
      w.markClosed(); // unmapped: must not write (a write here would fault)
      w.close();
      assert.is(w.unmapped, true);
      assert.is(w.seg.closed, true);
      r.close();
    }
  });
} else {
  test('shared memory is not available here: the ring tests are skipped', () => {});
}

const spec = (over: Partial<Parameters<typeof poll>[1]> = {}) => ({
  timeoutMs: 2000, spinUs: 0, what: 'mq read', onTimeout: (ms: number) => timeoutError(`mq read timed out after ${ms}`), ...over,
});

test('poll: resolves at once when ready, later when it becomes ready; a throwing check rejects', async () => {
  let calls = 0;
  await poll(() => (calls++, true), spec());
  assert.is(calls, 1);
  let n = 0;
  await poll(() => ++n >= 5, spec());
  assert.is(n, 5);
  const boom = new Error('closed');
  // A check that throws at once throws out of poll (its caller is async), a later one rejects.
  assert.throws(() => poll(() => { throw boom; }, spec()), (e: unknown) => e === boom);
  let m = 0;
  await poll(() => { if (++m === 3) throw boom; return false; }, spec()).then(() => assert.unreachable('resolved'), (e) => assert.is(e, boom));
});

test('poll: spins (no pause) for spinUs, then polls once a millisecond', async () => {
  const count = async (spinUs: number) => {
    let calls = 0;
    const t0 = performance.now();
    await poll(() => (calls++, performance.now() - t0 > 40), spec({ spinUs }));
    return calls;
  };
  const slow = await count(0);
  const fast = await count(10_000_000);
  assert.ok(slow < 60, `1 ms polls: ${slow} checks in 40 ms`);
  assert.ok(fast > 200, `spinning: ${fast} checks in 40 ms`);
});

test('poll: the spin lasts spinUs microseconds, measured from the call', async () => {
  const t0 = performance.now();
  const at: number[] = [];
  await poll(() => (at.push(performance.now() - t0), performance.now() - t0 > 45), spec({ spinUs: 10_000 }));
  const early = at.filter((t) => t < 8).length;
  const late = at.filter((t) => t > 25).length;
  assert.ok(early > 10, `spinning for the first 10 ms: ${early} checks in 8 ms`);
  assert.ok(late < 60, `1 ms polls after it: ${late} checks in the last 20 ms`);
});

test('poll: the deadline and the signal end it, and the checks stop', async () => {
  let calls = 0;
  const e = await poll(() => (calls++, false), spec({ timeoutMs: 20 })).then(() => undefined, (x) => x);
  assert.ok(e && e.code === 'ERR_GROUPCOMM_TIMEOUT', String(e));
  const after = calls;
  await new Promise((r) => setTimeout(r, 20));
  assert.ok(calls <= after + 1, `still polled: ${after} → ${calls}`);
  const ac = new AbortController();
  setTimeout(() => ac.abort(), 10);
  const a = await poll(() => false, spec({ signal: ac.signal })).then(() => undefined, (x) => x);
  assert.ok(a && a.code === 'ERR_GROUPCOMM_ABORTED', String(a));
});

test.run();
