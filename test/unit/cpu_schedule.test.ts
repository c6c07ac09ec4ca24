// A CPU group's Schedules: what the algorithms look up comes from the core, computed once.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Schedules } from '../../host/cpu/schedule.js';
import { binomialTree, chainNeighbors, directPeers, disseminationPartners, recursiveDoubling, ringBlocks, ringNeighbors, segmentPlan } from '../../host/core/layout.js';

test('schedules equal the core layout\'s and are computed once per group (per root, per shift)', () => {
  const s = new Schedules(2, 5, 1000);
  assert.equal(s.ring(), ringNeighbors(2, 5));
  assert.is(s.ring(), s.ring());
  assert.equal(Array.from(s.ringBlocks(-1)), Array.from(ringBlocks(2, 5, -1, 9)));
  assert.is(s.ringBlocks(-1), s.ringBlocks(-1));
  assert.is.not(s.ringBlocks(0), s.ringBlocks(-1));
  assert.equal(s.tree(3), binomialTree(2, 3, 5));
  assert.is(s.tree(3), s.tree(3));
  assert.equal(s.chain(4), chainNeighbors(2, 4, 5));
  assert.is(s.recursiveDoubling(), s.recursiveDoubling());
  assert.is(s.dissemination(), s.dissemination());
  assert.is(s.directPeers(), s.directPeers());
});

test('segment plans: ring (P blocks) and chain (one block) kept per (bytes, itemSize); huge plans not kept', () => {
  const s = new Schedules(0, 4, 1000);
  const r = s.ringSegments(40_000, 4);
  assert.equal(r, segmentPlan(10_000, 4, 4, 1000));
  assert.is(s.ringSegments(40_000, 4), r);
  assert.is.not(s.ringSegments(40_000, 2), r, 'another itemSize is another plan');
  const c = s.chainSegments(40_000, 4);
  assert.equal(c, segmentPlan(10_000, 1, 4, 1000));
  assert.is(s.chainSegments(40_000, 4), c);
  // 4 blocks x 2500 segments: above what a group keeps, so a fresh (equal) plan each time.
  const tiny = new Schedules(0, 4, 4);
  const big = tiny.ringSegments(40_000, 4);
  assert.is(big.offsets.length, 10_000);
  assert.is.not(tiny.ringSegments(40_000, 4), big);
  assert.equal(tiny.ringSegments(40_000, 4), big);
});

test('every schedule is the core\'s and cached; the plan cache keys (bytes, itemSize) apart and is bounded', () => {
  const s = new Schedules(1, 6, 1000);
  assert.equal(s.recursiveDoubling(), recursiveDoubling(1, 6));
  assert.equal(s.dissemination(), disseminationPartners(1, 6));
  assert.equal(s.directPeers(), directPeers(1, 6));
  assert.is(s.chain(4), s.chain(4));
  assert.is.not(s.chain(3), s.chain(4));
  // (32 bytes, itemSize 1) and (16 bytes, itemSize 2) are different plans.
  const a = s.ringSegments(32, 1);
  assert.equal(s.ringSegments(16, 2), segmentPlan(8, 6, 2, 1000));
  assert.is(s.ringSegments(32, 1), a);
  // Two plans are kept side by side; the 65th distinct size clears the map (bounded memory).
  const t = new Schedules(0, 2, 1 << 20);
  const first = t.chainSegments(8, 8);
  const second = t.chainSegments(16, 8);
  assert.is(t.chainSegments(8, 8), first);
  assert.is(t.chainSegments(16, 8), second);
  for (let i = 3; i <= 64; i++) t.chainSegments(8 * i, 8);
  assert.is(t.chainSegments(8, 8), first, '64 plans kept');
  t.chainSegments(8 * 65, 8);
  assert.is.not(t.chainSegments(8, 8), first, 'the 65th cleared the map');
  // A plan of exactly 4096 segments is kept; 4097 is not.
  const u = new Schedules(0, 1, 8);
  const kept = u.chainSegments(4096 * 8, 8);
  assert.is(kept.offsets.length, 4096);
  assert.is(u.chainSegments(4096 * 8, 8), kept);
  const over = u.chainSegments(4097 * 8, 8);
  assert.is(over.offsets.length, 4097);
  assert.is.not(u.chainSegments(4097 * 8, 8), over);
});

test.run();
