/**
 * The shared-memory ring's arithmetic at the wrap, with a receiver that lags behind: mixed frame
 * sizes (so the head lands everywhere, and frames skip to offset 0 with every possible amount of
 * skipped bytes), and frames still unread while the sender writes the next ones. Every frame the
 * receiver has not yet released must stay intact whatever the sender does meanwhile; a free-space
 * check that forgets the skipped bytes lets the sender overwrite the oldest unread frame.
 * Real segments (koffi); the lagging processes of a real group are in cpu_knobs.test.ts.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { RecvRing, Segment, SendRing } from '../../host/cpu/shm.js';
import { prng } from '../helpers/prng.js';

/** An integer in [0, 2^32) from the [0, 1) generator. */
const int = (r: () => number) => () => Math.floor(r() * 2 ** 32);

interface Sent { pos: number; n: number; id: number; bytes: Uint8Array }

/** Frame `id`'s bytes: distinct per frame and per offset, so any overwrite shows. */
function frame(id: number, n: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (id * 131 + i * 7 + (i >> 8)) & 0xff;
  return b;
}

function intact(rx: RecvRing, f: Sent): string | undefined {
  const v = rx.at(f.pos, f.n);
  if (!v) return `frame ${f.id} (pos ${f.pos}, ${f.n} bytes): doorbell refused`;
  if (Buffer.compare(Buffer.from(v.buffer, v.byteOffset, v.byteLength), Buffer.from(f.bytes.buffer, 0, f.n)) === 0) return undefined;
  let i = 0;
  while (v[i] === f.bytes[i]) i++;
  return `frame ${f.id} (pos ${f.pos}, ${f.n} bytes) overwritten at byte ${i}`;
}

/**
 * Sends `count` frames of sizes from `size()`; the receiver keeps at least `behind` frames
 * unread whenever it can, and frees the oldest only when the sender is stuck. After every put,
 * every unread frame is checked.
 */
function drive(R: number, count: number, behind: number, size: () => number): { wraps: number; stalls: number } {
  const a = Segment.create(R);
  const b = Segment.open(a.name, R);
  try {
    const tx = new SendRing(a);
    const rx = new RecvRing(b);
    const unread: Sent[] = [];
    let wraps = 0;
    let stalls = 0;
    let lastPos = 0;
    for (let id = 0; id < count; id++) {
      const n = Math.min(tx.maxFrame, Math.max(1, size()));
      const bytes = frame(id, n);
      let pos: number;
      while ((pos = tx.put(bytes)) < 0) {
        stalls++;
        // Stuck: the receiver frees its oldest frame (checked once more first).
        assert.ok(unread.length > 0, `frame ${id} of ${n} bytes does not fit an empty ring of ${R}`);
        const f = unread.shift()!;
        const bad = intact(rx, f);
        if (bad) assert.unreachable(bad);
        rx.release(f.pos, f.n);
      }
      if ((pos & (R - 1)) < (lastPos & (R - 1)) || (pos - lastPos) >>> 0 >= R) wraps++;
      lastPos = pos;
      unread.push({ pos, n, id, bytes });
      for (const f of unread) {
        const bad = intact(rx, f);
        if (bad) assert.unreachable(`after frame ${id} (${n} bytes at ${pos}): ${bad}`);
      }
      // Catch up only down to `behind` frames, and only sometimes: a slow reader.
      while (unread.length > behind && id % 3 === 0) {
        const f = unread.shift()!;
        rx.release(f.pos, f.n);
      }
    }
    return { wraps, stalls };
  } finally {
    a.close();
    b.close();
  }
}

test('mixed frame sizes across many wraps, the receiver two frames behind: no unread frame is ever overwritten', () => {
  const R = 65536;
  const rand = int(prng(20));
  // Small, medium and near-maximal frames mixed: every skip length at the wrap occurs.
  const size = () => {
    const k = rand() % 4;
    return k === 0 ? 1 + (rand() % 512) : k === 1 ? 4096 + (rand() % 8192) : k === 2 ? 16384 + (rand() % 12288) : 28672 - (rand() % 64);
  };
  const { wraps, stalls } = drive(R, 3000, 2, size);
  assert.ok(wraps > 100, `only ${wraps} wraps`);
  assert.ok(stalls > 100, `the sender was stuck only ${stalls} times: the receiver did not lag`);
});

test('largest frames only, and frames just over half the free space: the wrap skip is counted as used', () => {
  const R = 65536;
  const rand = int(prng(21));
  for (const size of [() => 1 << 20, () => 20000 + (rand() % 8000), () => 9000 + (rand() % 30000)]) {
    const { wraps } = drive(R, 1500, 2, size);
    assert.ok(wraps > 50, `only ${wraps} wraps`);
  }
});

test('a larger ring (1 MiB), receiver up to five frames behind', () => {
  const rand = int(prng(22));
  const { wraps } = drive(1 << 20, 1000, 5, () => 1 + (rand() % 300_000));
  assert.ok(wraps > 50, `only ${wraps} wraps`);
});

test.run();
