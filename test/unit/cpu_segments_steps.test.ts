// host/cpu/segments.ts against a scripted Exchange: P SharedSegments in this process (each maps
// the others' real shared-memory segments), frames delivered on a timer and recorded. Pins what a
// group of CpuGroups cannot see: the chunk size, when the path is taken, the offer and answer
// rounds (every reason to stay on the ring, decided alike on every rank), the frames of one
// allReduce (one STEP per chunk and peer, STEP(0) carrying the byte count), which buffer each
// chunk uses across calls, the failures (the size, a lost wait, an element too large) and close.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import fs from 'node:fs';
import { MAX_MAPPED_BYTES, MAX_RANKS, MIN_RANKS, SharedSegments, segmentChunkBytes, type SegmentReduce } from '../../host/cpu/segments.js';
import type { Exchange } from '../../host/cpu/exchange.js';
import type { Logger } from '../../host/base/log.js';
import { GroupcommError, isGroupcommError } from '../../host/base/errors.js';
import { hostId } from '../../host/cpu/shm.js';

const OFFER = 0xfffffff0;
const ANSWER = 0xfffffff1;

type Frame = { from: number; to: number; slot: number; bytes: number[]; copy: boolean };

/** One operation's Exchanges, one per rank; `drop(r)` loses every frame rank r sends from then on. */
class World {
  readonly ranks: FakeEx[];
  readonly frames: Frame[] = [];
  readonly dropped = new Set<number>();
  /** Rewrites a payload on its way (a hostile or confused peer). */
  edit?: (f: Frame, data: Uint8Array) => Uint8Array;
  constructor(readonly P: number) {
    this.ranks = [...Array(P).keys()].map((r) => new FakeEx(this, r));
  }
  ex(r: number): Exchange { return this.ranks[r] as unknown as Exchange; }
  slots(from: number, to: number): number[] {
    return this.frames.filter((f) => f.from === from && f.to === to).map((f) => f.slot);
  }
}

class FakeEx {
  private arrived = new Map<string, Uint8Array>();
  private posted = new Map<string, { dest?: Uint8Array; resolve: (b: Uint8Array) => void; reject: (e: unknown) => void }>();
  private failure: unknown;
  constructor(readonly world: World, readonly rank: number) {}

  send(peer: number, slot: number, payload: Uint8Array, copy = false): void {
    if (!Number.isInteger(peer) || peer < 0 || peer >= this.world.P || peer === this.rank) throw new Error(`rank ${this.rank} sent to ${peer}`);
    const f: Frame = { from: this.rank, to: peer, slot, bytes: [...payload], copy };
    this.world.frames.push(f);
    if (this.world.dropped.has(this.rank)) return;
    const data = copy ? payload.slice() : payload;
    setTimeout(() => {
      const d = this.world.edit ? this.world.edit(f, data.slice()) : data.slice();
      this.world.ranks[peer].arrive(this.rank, slot, d);
    }, 0);
  }

  arrive(from: number, slot: number, data: Uint8Array): void {
    const key = `${from}:${slot}`;
    const p = this.posted.get(key);
    if (!p) { this.arrived.set(key, data); return; }
    this.posted.delete(key);
    this.deliver(from, slot, data, p);
  }

  private deliver(from: number, slot: number, data: Uint8Array, p: { dest?: Uint8Array; resolve: (b: Uint8Array) => void; reject: (e: unknown) => void }): void {
    if (p.dest && p.dest.byteLength !== data.byteLength) {
      p.reject(new GroupcommError('ERR_GROUPCOMM_PROTOCOL', `slot ${slot} from rank ${from} has ${data.byteLength} bytes, expected ${p.dest.byteLength}`, { rank: this.rank, peerRank: from }));
      return;
    }
    if (p.dest) p.dest.set(data);
    p.resolve(p.dest ?? data);
  }

  recv(peer: number, slot: number, dest?: Uint8Array): Promise<Uint8Array> {
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      const key = `${peer}:${slot}`;
      const p = { dest, resolve, reject };
      const early = this.arrived.get(key);
      if (early) { this.arrived.delete(key); this.deliver(peer, slot, early, p); return; }
      this.posted.set(key, p);
    });
  }

  /** Fails every wait of this rank (an abort, a lost peer). */
  fail(e: unknown): void {
    this.failure = e;
    for (const p of this.posted.values()) p.reject(e);
    this.posted.clear();
  }
}

const lines: string[] = [];
const log = { debug: (m: string) => lines.push(m), trace: () => {}, info: () => {}, warn: () => {}, error: () => {}, enabled: () => true } as unknown as Logger;

const make = (P: number, o: { minBytes?: number; chunkBytes?: number; shm?: (r: number) => boolean } = {}) =>
  [...Array(P).keys()].map((rank) => new SharedSegments({
    rank, worldSize: P, minBytes: o.minBytes ?? 4096, chunkBytes: o.chunkBytes ?? 4096, shm: o.shm?.(rank) ?? true, log,
  }));

/** Settles within `ms` or fails (a mutant that stops the algorithm must not hang the file). */
function within<T>(p: Promise<T>, ms = 3000): Promise<T> {
  let t: NodeJS.Timeout;
  return Promise.race([p, new Promise<T>((_, rej) => { t = setTimeout(() => rej(new Error(`not settled within ${ms} ms`)), ms); })])
    .finally(() => clearTimeout(t));
}

const setupAll = (segs: SharedSegments[], w = new World(segs.length)) => within(Promise.all(segs.map((s, r) => s.setup(w.ex(r)))));

/** Rank r's element i (float32, exact in sums of a few ranks). */
const value = (r: number, i: number) => (r + 1) * 1000 + (i % 500);
const input = (r: number, n: number) => Float32Array.from({ length: n }, (_, i) => value(r, i));
const u8 = (a: Float32Array) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
const sumReduce = (x: Float32Array, out = new Float32Array(x.length)): SegmentReduce =>
  ({ input: u8(x), out: u8(out), dtype: 'float32', itemSize: 4, op: 'sum' });

/** Every rank's allReduce of n float32 elements (sum) in a fresh operation; returns the results and the World. */
async function reduceAll(segs: SharedSegments[], n: number, extra: Partial<SegmentReduce> = {}) {
  const w = new World(segs.length);
  const xs = segs.map((_, r) => input(r, n));
  const outs = segs.map(() => new Float32Array(n).fill(-1));
  await within(Promise.all(segs.map((s, r) => s.allReduce(w.ex(r), { ...sumReduce(xs[r], outs[r]), ...extra }))));
  return { w, xs, outs };
}

const ownNames = () => fs.readdirSync('/dev/shm').filter((f) => new RegExp(`^gcpu-[0-9a-f]{12}-${process.pid}-`).test(f));
const mapped = () => fs.readFileSync('/proc/self/maps', 'utf8').split('\n').filter((l) => l.includes('/gcpu-')).length;

test('the chunk: chunkBytes, at most MAX_MAPPED_BYTES over 4 buffers of P segments, at least 4096, a multiple of 64', () => {
  assert.is(segmentChunkBytes(1 << 20, 3), 1 << 20);
  assert.is(segmentChunkBytes(4 << 20, 3), Math.floor(MAX_MAPPED_BYTES / 12) & ~63);
  assert.is(segmentChunkBytes(4 << 20, 7), Math.floor(MAX_MAPPED_BYTES / 28) & ~63);
  assert.is(segmentChunkBytes(4 << 20, 7) % 64, 0);
  assert.ok(segmentChunkBytes(4 << 20, 7) < Math.floor(MAX_MAPPED_BYTES / 28));
  assert.is(segmentChunkBytes(5000, 3), 4992);
  assert.is(segmentChunkBytes(100, 3), 4096);
  assert.is(segmentChunkBytes(1 << 30, 0), MAX_MAPPED_BYTES / 4);
  assert.is(new SharedSegments({ rank: 0, worldSize: 4, minBytes: 1, chunkBytes: 5000, shm: true, log }).chunkBytes, 4992);
});

test('wants: groups of MIN_RANKS to MAX_RANKS with a threshold, from minBytes on; not after close', () => {
  const one = (worldSize: number, minBytes = 4096) => new SharedSegments({ rank: 0, worldSize, minBytes, chunkBytes: 4096, shm: true, log });
  assert.equal([MIN_RANKS, MAX_RANKS], [3, 8]);
  assert.equal([2, 3, 8, 9].map((P) => one(P).wants(1 << 20)), [false, true, true, false]);
  assert.is(one(3, 0).wants(1 << 20), false);
  const s = one(3);
  assert.equal([s.wants(4095), s.wants(4096), s.active], [false, true, false]);
  s.close();
  assert.is(s.wants(1 << 20), false);
});

test('setup: one OFFER (host, chunk, name) and one ANSWER per pair; on everywhere; names unlinked; asked once; close unmaps', async () => {
  const P = 4;
  const before = mapped();
  const segs = make(P);
  const w = new World(P);
  assert.equal(await setupAll(segs, w), [true, true, true, true]);
  assert.equal(segs.map((s) => [s.active, s.wants(4096)]), segs.map(() => [true, true]));
  for (let r = 0; r < P; r++) {
    const peers = [1, 2, 3].map((i) => (r + i) % P);
    const sent = w.frames.filter((f) => f.from === r);
    assert.equal(sent.map((f) => [f.to, f.slot, f.copy]), [...peers.map((p) => [p, OFFER, true]), ...peers.map((p) => [p, ANSWER, true])], `rank ${r}`);
    const [host, chunk, name] = new TextDecoder().decode(Uint8Array.from(sent[0].bytes)).split('\n');
    assert.equal([host, chunk], [hostId(), '4096'], `rank ${r}'s offer`);
    assert.match(name, new RegExp(`^/gcpu-[0-9a-f]{12}-${process.pid}-`));
    assert.equal(sent[P - 1].bytes, [1], `rank ${r}'s answer`);
  }
  assert.equal(ownNames(), [], 'every name unlinked');
  assert.is(mapped() - before, P * P, 'each rank maps its own and every peer\'s');
  assert.ok(lines.some((l) => l === 'shared-segment allReduce on (4 × 4096 bytes per rank)'));
  const again = new World(P);
  assert.equal(await setupAll(segs, again), [true, true, true, true]);
  assert.is(again.frames.length, 0, 'asked once');
  for (const s of segs) s.close();
  assert.is(mapped(), before, 'close unmaps');
  assert.equal(segs.map((s) => s.wants(1 << 20)), [false, false, false, false]);
});

/** Every rank's setup answers false, nothing stays mapped or named, and the path stays off (asked once). */
async function allOff(segs: SharedSegments[], w: World, before: number, why: string): Promise<void> {
  assert.equal(await setupAll(segs, w), segs.map(() => false), why);
  assert.equal(ownNames(), [], `${why}: names`);
  assert.is(mapped(), before, `${why}: mappings`);
  assert.equal(segs.map((s) => [s.active, s.wants(1 << 20)]), segs.map(() => [false, false]), why);
  const again = new World(segs.length);
  assert.equal(await setupAll(segs, again), segs.map(() => false), why);
  assert.is(again.frames.length, 0, `${why}: asked once`);
}

const offerText = (b: Uint8Array) => new TextDecoder().decode(b).split('\n');
const offerBytes = (parts: string[]) => new TextEncoder().encode(parts.join('\n'));

test('setup off on every rank: a rank on TCP only (offers no host, no name), another chunk, another host, no name, a name that does not open', async () => {
  const before = mapped();
  // TCP only: its offer is '\n4096\n', it answers 0 and so does everyone.
  let w = new World(3);
  await allOff(make(3, { shm: (r) => r !== 1 }), w, before, 'TCP only');
  assert.equal(offerText(Uint8Array.from(w.frames.find((f) => f.from === 1 && f.slot === OFFER)!.bytes)), ['', '4096', '']);
  assert.equal(w.frames.filter((f) => f.slot === ANSWER).map((f) => f.bytes), [[0], [0], [0], [0], [0], [0]]);
  // Another chunk on rank 2: the others refuse its offer, it refuses theirs.
  w = new World(3);
  const chunks = [4096, 4096, 8192];
  await allOff([0, 1, 2].map((rank) => new SharedSegments({ rank, worldSize: 3, minBytes: 4096, chunkBytes: chunks[rank], shm: true, log })), w, before, 'chunk');
  // Rank 2's offer seen with another host (or no name, or a name that is not there) by the others:
  // they answer 0, rank 2 mapped theirs and answers 1, and everyone still stays off.
  for (const [why, change] of [
    ['another host', (p: string[]) => ['elsewhere', p[1], p[2]]],
    ['no name', (p: string[]) => [p[0], p[1], '']],
    ['a name that does not open', (p: string[]) => [p[0], p[1], p[2].slice(0, -4) + '0000']],
  ] as const) {
    w = new World(3);
    w.edit = (f, d) => (f.from === 2 && f.slot === OFFER ? offerBytes(change(offerText(d))) : d);
    lines.length = 0;
    await allOff(make(3), w, before, why);
    assert.equal(w.frames.filter((f) => f.slot === ANSWER).map((f) => [f.from, f.bytes[0]]).sort(), [[0, 0], [0, 0], [1, 0], [1, 0], [2, 1], [2, 1]], why);
    if (why === 'a name that does not open') assert.ok(lines.some((l) => l.startsWith("shared-segment allReduce off: rank 2's segment: ")), lines.join('\n'));
  }
  // One rank refuses one peer's offer, every other answer is yes: the one no keeps every rank off.
  w = new World(4);
  w.edit = (f, d) => (f.from === 3 && f.to === 0 && f.slot === OFFER ? offerBytes(['elsewhere', ...offerText(d).slice(1)]) : d);
  await allOff(make(4), w, before, 'one no among yeses');
  assert.equal(w.frames.filter((f) => f.slot === ANSWER && f.bytes[0] === 0).map((f) => f.from), [0, 0, 0]);
});

test('setup failing (the wait for the offers is failed): rejects with that error (a TCP-only rank too), the path off, nothing left mapped or named', async () => {
  const before = mapped();
  const segs = make(3, { shm: (r) => r !== 2 });
  const w = new World(3);
  w.dropped.add(2);
  const runs = segs.map((s, r) => s.setup(w.ex(r)).then(() => 'resolved', (e) => e));
  await new Promise((r) => setTimeout(r, 20));
  const err = new GroupcommError('ERR_GROUPCOMM_ABORTED', 'aborted', { rank: 0 });
  w.ranks.forEach((e) => e.fail(err));
  const got = await within(Promise.all(runs));
  assert.equal(got, [err, err, err]);
  assert.equal(ownNames(), []);
  assert.is(mapped(), before);
  assert.equal(segs.map((s) => s.wants(1 << 20)), [false, false, false]);
});

for (const P of [3, 4, 5]) {
  test(`allReduce of ${P} ranks: exact over several chunks (the last partial), in and out of place; STEP 0..K to every peer, STEP(0) the byte count`, async () => {
    const segs = make(P);
    await setupAll(segs);
    const n = 2 * 1024 + 1000 + P; // 4 KiB chunks of 1024 elements: K = 3, the last one partial
    const K = 3;
    const { w, xs, outs } = await reduceAll(segs, n);
    for (let r = 0; r < P; r++) {
      for (let i = 0; i < n; i++) {
        const want = [...Array(P).keys()].reduce((a, q) => a + value(q, i), 0);
        if (outs[r][i] !== want) assert.unreachable(`rank ${r} element ${i}: ${outs[r][i]}, want ${want}`);
      }
      assert.equal([...xs[r]], [...input(r, n)], `rank ${r}: input unchanged`);
      for (let p = 0; p < P; p++) {
        if (p === r) continue;
        assert.equal(w.slots(r, p), [...Array(K + 1).keys()], `rank ${r} → ${p}: one STEP per chunk and one more`);
      }
      const sent = w.frames.filter((f) => f.from === r);
      assert.equal(sent.filter((f) => f.slot === 0).map((f) => f.bytes), sent.filter((f) => f.slot === 0).map(() => [...new Uint8Array(Float64Array.of(n * 4).buffer)]));
      assert.ok(sent.every((f) => f.slot === 0 || f.bytes.length === 0), 'later STEPs are empty');
    }
    // In place (out is the input), then avg (divided once, by the divisor).
    const ys = segs.map((_, r) => input(r, n));
    const w2 = new World(P);
    await within(Promise.all(segs.map((s, r) => s.allReduce(w2.ex(r), sumReduce(ys[r], ys[r])))));
    for (let r = 0; r < P; r++) assert.equal([...ys[r]], [...outs[0]], `rank ${r} in place`);
    const { outs: avg } = await reduceAll(segs, n, { divisor: P });
    for (let r = 0; r < P; r++) for (let i = 0; i < n; i++) if (avg[r][i] !== outs[0][i] / P) assert.unreachable(`avg rank ${r} element ${i}: ${avg[r][i]}`);
    for (const s of segs) s.close();
  });
}

test('buffers: chunk k of a call goes to buffer (first + k) % 4, the next call starting after the last; one element of a chunk per rank or none', async () => {
  const P = 3;
  const segs = make(P);
  await setupAll(segs);
  const views = (s: SharedSegments) => (s as unknown as { views: Uint8Array[] }).views;
  const C = 4096;
  /** The float32 at element e of buffer b of rank r's own segment. */
  const at = (r: number, b: number, e: number) => new Float32Array(views(segs[r])[r].buffer, views(segs[r])[r].byteOffset + b * C, C / 4)[e];
  let first = 0;
  for (const chunks of [1, 2, 3, 5, 1]) {
    const n = chunks * 1024;
    const { outs } = await reduceAll(segs, n);
    for (let k = Math.max(0, chunks - 4); k < chunks; k++) {
      const b = (first + k) % 4;
      // The last element of chunk k lies in rank 2's slice: its own buffer holds the sum there.
      assert.is(at(2, b, 1023), outs[2][k * 1024 + 1023], `${chunks} chunks: chunk ${k} in buffer ${b}`);
      // and its first element in rank 0's slice: rank 2's buffer holds its own input there.
      assert.is(at(2, b, 0), value(2, k * 1024), `${chunks} chunks: chunk ${k} written to buffer ${b}`);
    }
    first = (first + chunks) % 4;
  }
  // Fewer elements than ranks (slices of 0 elements), and a single element.
  for (const n of [1, 2, 1025]) {
    const { outs } = await reduceAll(segs, n);
    for (let r = 0; r < P; r++) assert.equal([...outs[r]], Array.from({ length: n }, (_, i) => value(0, i) + value(1, i) + value(2, i)), `n ${n} rank ${r}`);
  }
  for (const s of segs) s.close();
});

test('another size on one rank: MISMATCH naming the peer on every rank, the path off there; an element larger than the chunk refused up front', async () => {
  const P = 3;
  const segs = make(P);
  await setupAll(segs);
  const w = new World(P);
  const sizes = [3000, 3000, 2000];
  const got = await within(Promise.all(segs.map((s, r) => s.allReduce(w.ex(r), sumReduce(input(r, sizes[r]))).then(() => undefined, (e) => e))));
  got.forEach((e, r) => {
    assert.ok(isGroupcommError(e, 'ERR_GROUPCOMM_MISMATCH'), `rank ${r}: ${e}`);
    assert.equal([e.rank, e.peerRank], [r, r === 2 ? 0 : 2], e.message);
    assert.match(e.message, r === 2 ? 'allReduce of 8000 bytes here, 12000 on rank 0' : 'allReduce of 12000 bytes here, 8000 on rank 2');
  });
  assert.equal(segs.map((s) => s.wants(1 << 20)), [false, false, false], 'the path is off after a failure');
  // An element that does not fit a chunk: refused before any frame, the path still on.
  const big = new SharedSegments({ rank: 0, worldSize: 3, minBytes: 1, chunkBytes: 4096, shm: true, log });
  const segs2 = [big, ...make(3).slice(1)];
  await setupAll(segs2);
  const w2 = new World(3);
  const e = await big.allReduce(w2.ex(0), { input: new Uint8Array(8192), out: new Uint8Array(8192), dtype: 'uint8', itemSize: 8192, op: 'sum' }).then(() => undefined, (x) => x);
  assert.ok(isGroupcommError(e, 'ERR_GROUPCOMM_INVALID_ARGUMENT'), String(e));
  assert.is(e.rank, 0);
  assert.is(w2.frames.length, 0);
  assert.is(big.active, true);
  // An element exactly the chunk's size still fits (one element per chunk, reduced by the last rank).
  const w3 = new World(3);
  const el = (r: number) => Uint8Array.from({ length: 2 * 4096 }, (_, i) => (i + r) & 63);
  const outs = [0, 1, 2].map(() => new Uint8Array(2 * 4096));
  await within(Promise.all(segs2.map((s, r) => s.allReduce(w3.ex(r), { input: el(r), out: outs[r], dtype: 'uint8', itemSize: 4096, op: 'sum' }))));
  const [e0, e1, e2] = [el(0), el(1), el(2)];
  const want = [...e0].map((v, i) => v + e1[i] + e2[i]);
  for (let r = 0; r < 3; r++) assert.equal([...outs[r]], want, `rank ${r}`);
  for (const s of [...segs, ...segs2]) s.close();
});

test('a failed wait fails the allReduce, turns the path off, and close() called during it unmaps once it settles', async () => {
  const P = 3;
  const before = mapped();
  const segs = make(P);
  await setupAll(segs);
  const w = new World(P);
  w.dropped.add(2); // rank 2's STEPs never come
  const runs = segs.map((s, r) => s.allReduce(w.ex(r), sumReduce(input(r, 5000))).then(() => undefined, (e) => e));
  await new Promise((r) => setTimeout(r, 30));
  for (const s of segs) s.close();
  assert.is(mapped() - before, P * P, 'still mapped while the operation runs');
  assert.equal(segs.map((s) => s.wants(1 << 20)), [false, false, false], 'closed: no later call takes the path');
  const err = new GroupcommError('ERR_GROUPCOMM_TIMEOUT', 'waiting for ranks 2', { rank: 0, peerRanks: [2] } as never);
  w.ranks.forEach((e) => e.fail(err));
  assert.equal(await within(Promise.all(runs)), [err, err, err]);
  assert.is(mapped(), before, 'unmapped once the operation settled');
  // Without close: the failure alone turns the path off, the segments stay mapped until close.
  const segs2 = make(P);
  await setupAll(segs2);
  const w2 = new World(P);
  w2.dropped.add(0);
  const runs2 = segs2.map((s, r) => s.allReduce(w2.ex(r), sumReduce(input(r, 5000))).then(() => undefined, (e) => e));
  await new Promise((r) => setTimeout(r, 30));
  w2.ranks.forEach((e) => e.fail(err));
  await within(Promise.all(runs2));
  assert.equal(segs2.map((s) => [s.active, s.wants(1 << 20)]), [[false, false], [false, false], [false, false]]);
  assert.is(mapped() - before, P * P);
  for (const s of segs2) s.close();
  assert.is(mapped(), before);
  for (const s of segs2) s.close(); // a second close does nothing
  assert.is(mapped(), before);
});

test('close() during setup: the segments mapped by it are unmapped once it settles', async () => {
  const before = mapped();
  const segs = make(3);
  const w = new World(3);
  const runs = segs.map((s, r) => s.setup(w.ex(r)));
  for (const s of segs) s.close();
  await within(Promise.all(runs));
  assert.is(mapped(), before);
  assert.equal(ownNames(), []);
});

test.run();
