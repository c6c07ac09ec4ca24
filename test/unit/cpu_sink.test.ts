// The frame hand-over of the CPU group's links (host/cpu/link/sink.ts) on its own: the routing
// keys, the fingerprint check, deliver() (a frame that waited in a side buffer handed to its
// operation's sink) and SidePool, the recycled side buffers.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { COPY_BELOW, deliver, frameKey, mismatched, routeKey, SidePool, type Sink } from '../../host/cpu/link/sink.js';
import { KIND_COLL, KIND_P2P } from '../../host/cpu/wire.js';
import { ErrorCode, invalidArgument, type GroupcommError } from '../../host/base/errors.js';

/** A sink that records every call; `dest`/`consume` as given. */
function recorder(o: { dest?: (slot: number, n: number) => Uint8Array | null; consume?: (slot: number, src: Uint8Array) => boolean; fingerprint?: number } = {}) {
  const calls: string[] = [];
  const done: { slot: number; buf: Uint8Array }[] = [];
  const failed: GroupcommError[] = [];
  const sink: Sink = {
    dest: (slot, n) => { calls.push(`dest ${slot} ${n}`); return o.dest ? o.dest(slot, n) : null; },
    done: (slot, buf) => { calls.push(`done ${slot}`); done.push({ slot, buf }); },
    fail: (e) => { calls.push('fail'); failed.push(e); },
    fingerprint: o.fingerprint,
  };
  if (o.consume) sink.consume = (slot, src) => { calls.push(`consume ${slot} ${src.byteLength}`); return o.consume!(slot, src); };
  return { sink, calls, done, failed };
}

/** A SidePool stand-in that records what is given back. */
function pool() {
  const put: Uint8Array[] = [];
  return { put, pool: { put: (b: Uint8Array) => { put.push(b); }, get: (n: number) => new Uint8Array(n) } as unknown as SidePool };
}

test('frame keys: kind:tag:seq; collectives are routed without their tag (the fingerprint)', () => {
  assert.is(frameKey(2, 7, 9), '2:7:9');
  assert.is(routeKey(KIND_P2P, 7, 9), `${KIND_P2P}:7:9`);
  assert.is(routeKey(KIND_COLL, 123456, 9), `${KIND_COLL}:0:9`);
  assert.is(routeKey(KIND_COLL, 0, 4), routeKey(KIND_COLL, 99, 4));
  assert.is.not(routeKey(KIND_P2P, 0, 4), routeKey(KIND_P2P, 99, 4));
  assert.is(COPY_BELOW, 64 * 1024);
});

test('mismatched: no fingerprint or the same one passes; another fails the sink with MISMATCH naming the peer', () => {
  const none = recorder();
  assert.is(mismatched(none.sink, 5, 2, '1:0:3'), false);
  assert.equal(none.calls, []);
  const same = recorder({ fingerprint: 5 });
  assert.is(mismatched(same.sink, 5, 2, '1:0:3'), false);
  assert.equal(same.calls, []);
  const zero = recorder({ fingerprint: 0 });
  assert.is(mismatched(zero.sink, 0, 2, '1:0:3'), false, 'a fingerprint of 0 is checked like any other');
  const other = recorder({ fingerprint: 5 });
  assert.is(mismatched(other.sink, 6, 2, '1:0:3'), true);
  assert.equal(other.calls, ['fail']);
  assert.is(other.failed[0].code, ErrorCode.MISMATCH);
  assert.is(other.failed[0].peerRank, 2);
  assert.match(other.failed[0].message, /rank 2 made a different call for collective #3: /);
});

test('deliver: a frame for a sink with another fingerprint fails it and is not handed over', () => {
  const r = recorder({ fingerprint: 5, dest: (_s, n) => new Uint8Array(n), consume: () => true });
  const p = pool();
  deliver(r.sink, '1:0:3', 1, 0, new Uint8Array(8), p.pool, 6);
  assert.equal(r.calls, ['fail']);
  assert.is(r.failed[0].code, ErrorCode.MISMATCH);
  assert.is(p.put.length, 0, 'the buffer is not recycled while nobody took it');
});

test('deliver: a sink that consumes the frame ends it there; the side buffer goes back to the pool', () => {
  const buf = Uint8Array.from([1, 2, 3]);
  let seen: Uint8Array | undefined;
  const r = recorder({ fingerprint: 5, consume: (_s, src) => { seen = src; return true; } });
  const p = pool();
  deliver(r.sink, '1:0:3', 1, 4, buf, p.pool, 5);
  assert.equal(r.calls, ['consume 4 3']);
  assert.is(seen, buf);
  assert.equal(p.put, [buf]);
});

test('deliver: a sink that declines (or has no consume) gets the bytes copied into its dest, then done with the dest', () => {
  for (const consume of [() => false, undefined]) {
    const buf = Uint8Array.from([1, 2, 3]);
    const d = new Uint8Array(3);
    const r = recorder({ dest: () => d, consume });
    const p = pool();
    deliver(r.sink, '2:1:0', 1, 2, buf, p.pool, 1);
    assert.equal(r.calls, consume ? ['consume 2 3', 'dest 2 3', 'done 2'] : ['dest 2 3', 'done 2']);
    assert.equal([...d], [1, 2, 3]);
    assert.is(r.done[0].buf, d);
    assert.equal(p.put, [buf]);
  }
});

test('deliver: dest null hands over the side buffer itself (kept, not recycled)', () => {
  const buf = Uint8Array.from([7, 8]);
  const r = recorder();
  const p = pool();
  deliver(r.sink, '2:1:0', 1, 0, buf, p.pool, 1);
  assert.equal(r.calls, ['dest 0 2', 'done 0']);
  assert.is(r.done[0].buf, buf);
  assert.is(p.put.length, 0);
});

test('deliver: a dest of another size fails the sink with PROTOCOL naming the peer; nothing is written or done', () => {
  const d = new Uint8Array(4);
  const r = recorder({ dest: () => d });
  const p = pool();
  deliver(r.sink, '2:1:0', 3, 1, Uint8Array.from([1, 2, 3]), p.pool, 1);
  assert.equal(r.calls, ['dest 1 3', 'fail']);
  assert.is(r.failed[0].code, ErrorCode.PROTOCOL);
  assert.is(r.failed[0].peerRank, 3);
  assert.equal([...d], [0, 0, 0, 0]);
  assert.is(p.put.length, 0);
});

test('deliver: consume or dest throwing fails the sink with that error', () => {
  const boom = invalidArgument('boom');
  const a = recorder({ consume: () => { throw boom; } });
  deliver(a.sink, '2:1:0', 1, 0, new Uint8Array(2), pool().pool, 1);
  assert.equal(a.calls, ['consume 0 2', 'fail']);
  assert.is(a.failed[0], boom);
  const b = recorder({ dest: () => { throw boom; } });
  deliver(b.sink, '2:1:0', 1, 0, new Uint8Array(2), pool().pool, 1);
  assert.equal(b.calls, ['dest 0 2', 'fail']);
  assert.is(b.failed[0], boom);
});

test('SidePool: a kept buffer is reused for any size up to its own (a view from offset 0), the newest first', () => {
  const sp = new SidePool();
  const fresh = sp.get(5000);
  assert.is(fresh.byteLength, 5000);
  const a = new Uint8Array(8192);
  const b = new Uint8Array(8192);
  sp.put(a.subarray(100, 200)); // the whole underlying buffer is kept
  sp.put(b);
  const x = sp.get(8192);
  assert.is(x.buffer, b.buffer, 'the last one put back first');
  assert.is(x.byteLength, 8192);
  assert.is(x.byteOffset, 0);
  const y = sp.get(10);
  assert.is(y.buffer, a.buffer, 'a buffer taken out is not handed out twice');
  assert.is(y.byteLength, 10);
  assert.is(y.byteOffset, 0);
  assert.is.not(sp.get(10).buffer, a.buffer, 'the pool is empty again');
});

test('SidePool: a buffer too small for the request is skipped, not cut', () => {
  const sp = new SidePool();
  const big = new Uint8Array(16384);
  const small = new Uint8Array(4096);
  sp.put(big);
  sp.put(small);
  const x = sp.get(4097);
  assert.is(x.buffer, big.buffer);
  assert.is(x.byteLength, 4097);
  assert.is(sp.get(4096).buffer, small.buffer, 'the smaller one stayed');
});

test('SidePool: keeps buffers of 4 KiB to 64 MiB only, at most 16', () => {
  const sp = new SidePool();
  const tiny = new Uint8Array(4095);
  sp.put(tiny);
  assert.is.not(sp.get(1).buffer, tiny.buffer, 'below 4 KiB: not kept');
  const huge = new Uint8Array((64 << 20) + 1);
  sp.put(huge);
  assert.is.not(sp.get(1).buffer, huge.buffer, 'above 64 MiB: not kept');
  const max = new Uint8Array(64 << 20);
  sp.put(max);
  assert.is(sp.get(1).buffer, max.buffer, '64 MiB is kept');
  const bufs = Array.from({ length: 17 }, () => new Uint8Array(4096));
  for (const b of bufs) sp.put(b);
  const got = new Set(Array.from({ length: 17 }, () => sp.get(4096).buffer));
  assert.ok(got.has(bufs[15].buffer));
  assert.not.ok(got.has(bufs[16].buffer), 'the 17th was not kept');
  assert.is(bufs.filter((b) => got.has(b.buffer)).length, 16);
});

test.run();
