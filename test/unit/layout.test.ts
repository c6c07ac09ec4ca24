import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  findGroup, validatePortTriple, groupPortsFor, encodePortRecord, decodePortRecord,
  ringNeighbors, binomialTree, disseminationPartners, recursiveDoubling, chunkPlan,
  ringBlocks, chainNeighbors, directPeers, segmentPlan,
} from '../../host/core/layout.js';
import { ErrorCode, isGroupcommError } from '../../host/base/errors.js';
import { prng } from './reduce_reference.js';

const MAX_WORLD = 33;

/** Asserts that fn throws INVALID_ARGUMENT with a message matching re. */
function invalid(fn: () => unknown, re: RegExp): void {
  try {
    fn();
  } catch (e) {
    assert.ok(isGroupcommError(e, ErrorCode.INVALID_ARGUMENT), `expected INVALID_ARGUMENT, got ${String(e)}`);
    assert.match((e as Error).message, re);
    return;
  }
  assert.unreachable(`expected an error matching ${re}`);
}

test('findGroup: group, rank in group, ring neighbours as global ranks', () => {
  const g = findGroup([[0, 1, 2, 3], [4, 5, 6, 7]], 5, 8);
  assert.equal(g, {
    groupIndex: 1, ranks: [4, 5, 6, 7], rankInGroup: 1, worldSize: 4,
    firstRank: 4, lastRank: 7, nextRank: 6, prevRank: 4,
  });
  // Ranks in any order, wrap-around both ways.
  const h = findGroup([[3, 1, 7]], 3);
  assert.equal([h.rankInGroup, h.nextRank, h.prevRank, h.firstRank, h.lastRank], [0, 1, 7, 3, 7]);
  const t = findGroup([[9], [2, 4]], 4);
  assert.equal([t.groupIndex, t.rankInGroup, t.nextRank, t.prevRank], [1, 1, 2, 2]);
  // A group of one is its own neighbour.
  const one = findGroup([[0], [1]], 1, 2);
  assert.equal([one.worldSize, one.nextRank, one.prevRank], [1, 1, 1]);
  // The returned ranks are a copy.
  const input = [[0, 1]];
  findGroup(input, 0).ranks.push(99);
  assert.equal(input, [[0, 1]]);
});

test('findGroup: every validation error, by code and message', () => {
  invalid(() => findGroup([], 0), /groupRanks is empty/);
  invalid(() => findGroup([[0, 1], []], 0), /groupRanks\[1\] is empty/);
  invalid(() => findGroup([[0, -1]], 0), /groupRanks\[0\] holds the negative rank -1/);
  invalid(() => findGroup([[0, 1], [2, 8]], 0, 8), /groupRanks\[1\] holds rank 8, outside \[0, 8\)/);
  invalid(() => findGroup([[0, 1, 0]], 0), /rank 0 appears twice in groupRanks\[0\]/);
  invalid(() => findGroup([[0, 1], [2, 1]], 0), /rank 1 appears in groupRanks\[0\] and groupRanks\[1\]/);
  invalid(() => findGroup([[0, 1], [2, 3]], 5), /globalRank 5 is in none of the 2 groups/);
  invalid(() => findGroup([[0, 1], [2, 3]], 4, 4), /globalRank 4 is outside \[0, 4\)/);
  invalid(() => findGroup([[0, 1]], -1), /globalRank -1 is outside/);
  invalid(() => findGroup([[0, 1.5]], 0), /not an integer rank/);
  invalid(() => findGroup([[0, '1' as unknown as number]], 0), /not an integer rank/);
  invalid(() => findGroup([[0, 1]], 0.5), /globalRank must be an integer/);
  invalid(() => findGroup([[0, 1]], 0, 0), /globalWorldSize must be an integer >= 1/);
  invalid(() => findGroup([[0], 3 as unknown as number[]], 0), /groupRanks\[1\] must be an array/);
  // The error carries the rank for callers that branch on it.
  try { findGroup([[0, 1], [1]], 0); } catch (e) { assert.is((e as { rank?: number }).rank, 1); }
});

test('findGroup: random partitions up to 40 ranks agree with a brute-force lookup for every rank', () => {
  const rnd = prng(31337);
  for (let trial = 0; trial < 200; trial++) {
    const world = 1 + Math.floor(rnd() * 40);
    const perm = Array.from({ length: world }, (_, i) => i);
    for (let i = world - 1; i > 0; i--) {
      const j = Math.floor(rnd() * (i + 1));
      [perm[i], perm[j]] = [perm[j], perm[i]];
    }
    // Cut the permutation into groups; some ranks (the tail) may belong to no group.
    const groups: number[][] = [];
    let i = 0;
    const used = world - Math.floor(rnd() * 3);
    while (i < used) {
      const len = Math.min(used - i, 1 + Math.floor(rnd() * 8));
      groups.push(perm.slice(i, i + len));
      i += len;
    }
    if (groups.length === 0) continue;
    for (let r = 0; r < world; r++) {
      const gi = groups.findIndex((g) => g.includes(r));
      if (gi < 0) {
        invalid(() => findGroup(groups, r, world), /is in none of the/);
        continue;
      }
      const g = groups[gi];
      const k = g.indexOf(r);
      const got = findGroup(groups, r, world);
      assert.equal(got, {
        groupIndex: gi, ranks: g, rankInGroup: k, worldSize: g.length, firstRank: g[0],
        lastRank: g[g.length - 1], nextRank: g[(k + 1) % g.length], prevRank: g[(k - 1 + g.length) % g.length],
      });
    }
  }
});

test('ports: triples in 1..65535, all different; each error by code and message', () => {
  assert.equal(validatePortTriple([29500, 29501, 29502]), [29500, 29501, 29502]);
  assert.equal(validatePortTriple([1, 65535, 2]), [1, 65535, 2]);
  invalid(() => validatePortTriple([0, 2, 3]), /device port 0 is not in 1\.\.65535/);
  invalid(() => validatePortTriple([1, 65536, 3]), /cpu port 65536 is not in 1\.\.65535/);
  invalid(() => validatePortTriple([1, 2, -5]), /store port -5 is not in 1\.\.65535/);
  invalid(() => validatePortTriple([1, 2, 2 ** 40]), /store port .* is not in 1\.\.65535/);
  invalid(() => validatePortTriple([1, 2.5, 3]), /cpu port 2.5 is not an integer/);
  invalid(() => validatePortTriple([5, 5, 3]), /device and cpu ports are both 5/);
  invalid(() => validatePortTriple([5, 6, 5]), /device and store ports are both 5/);
  invalid(() => validatePortTriple([4, 6, 6]), /cpu and store ports are both 6/);
  invalid(() => validatePortTriple([1, 2]), /expected \[devicePort, cpuPort, storePort\]/);
});

test('groupPortsFor: one triple per group, in groupRanks order', () => {
  const gp = [[100, 101, 102], [200, 201, 202]];
  assert.equal(groupPortsFor(gp, 1, 2), [200, 201, 202]);
  assert.equal(groupPortsFor(gp, 0), [100, 101, 102]);
  invalid(() => groupPortsFor(gp, 0, 3), /groupPorts has 2 triples but groupRanks has 3 groups/);
  invalid(() => groupPortsFor(gp, 2), /no entry for group 2/);
  invalid(() => groupPortsFor([[1, 1, 2]], 0), /groupPorts\[0\]: .*device and cpu ports are both 1/);
});

test('port record: 12 bytes big-endian (struct "!3I"), round trip, bad lengths and values', () => {
  const rec = encodePortRecord([1, 256, 65535]);
  assert.equal(Array.from(rec), [0, 0, 0, 1, 0, 0, 1, 0, 0, 0, 0xff, 0xff]);
  assert.equal(decodePortRecord(rec), [1, 256, 65535]);
  const rnd = prng(5);
  for (let i = 0; i < 200; i++) {
    const p = [1 + Math.floor(rnd() * 65535), 1 + Math.floor(rnd() * 65535), 1 + Math.floor(rnd() * 65535)];
    if (new Set(p).size < 3) continue;
    const r = encodePortRecord(p);
    const dv = new DataView(r.buffer, r.byteOffset, 12);
    assert.equal([dv.getUint32(0), dv.getUint32(4), dv.getUint32(8)], p);
    assert.equal(decodePortRecord(r), p);
  }
  for (const len of [0, 4, 11, 13, 24]) invalid(() => decodePortRecord(new Uint8Array(len)), new RegExp(`12 bytes, got ${len}`));
  const bad = (d: number, c: number, s: number) => {
    const b = new Uint8Array(12);
    const dv = new DataView(b.buffer);
    dv.setUint32(0, d); dv.setUint32(4, c); dv.setUint32(8, s);
    return b;
  };
  invalid(() => decodePortRecord(bad(0, 1, 2)), /device port 0/);
  invalid(() => decodePortRecord(bad(1, 65536, 2)), /cpu port 65536/);
  invalid(() => decodePortRecord(bad(1, 2, 0xffffffff)), /store port \d+ is not in/);
  invalid(() => decodePortRecord(bad(7, 8, 7)), /device and store ports are both 7/);
  invalid(() => encodePortRecord([1, 2, 0]), /store port 0/);
  // A subarray at an odd offset decodes the same.
  const wide = new Uint8Array(15);
  wide.set(rec, 3);
  assert.equal(decodePortRecord(wide.subarray(3)), [1, 256, 65535]);
});

test('ring: next/prev for every rank of world sizes 1..33', () => {
  for (let n = 1; n <= MAX_WORLD; n++) {
    for (let r = 0; r < n; r++) {
      assert.equal(ringNeighbors(r, n), { next: (r + 1) % n, prev: (r + n - 1) % n });
    }
  }
  invalid(() => ringNeighbors(3, 3), /rank 3 is outside \[0, 3\)/);
  invalid(() => ringNeighbors(0, 0), /worldSize must be an integer in 1\.\.2\^30/);
  invalid(() => ringNeighbors(0, 2 ** 30 + 1), /worldSize must be an integer in 1\.\.2\^30/);
});

/** Brute force: simulate a halving binomial broadcast from relative rank 0. */
function bruteTree(n: number): { parent: number[]; children: number[][] } {
  const parent = new Array(n).fill(-1);
  const children: number[][] = Array.from({ length: n }, () => []);
  let top = 1;
  while (top < n) top *= 2;
  const have = new Set([0]);
  for (let m = top / 2; m >= 1; m /= 2) {
    for (const v of [...have].sort((a, b) => a - b)) {
      if (v % (2 * m) === 0 && v + m < n) {
        parent[v + m] = v;
        children[v].push(v + m);
        have.add(v + m);
      }
    }
  }
  return { parent, children };
}

test('binomial tree: every root and rank of world sizes 1..33 against a brute-force broadcast', () => {
  for (let n = 1; n <= MAX_WORLD; n++) {
    const ref = bruteTree(n);
    const depthLimit = Math.ceil(Math.log2(n));
    for (let root = 0; root < n; root++) {
      const abs = (v: number) => (v + root) % n;
      const seen = new Array(n).fill(0);
      const trees = Array.from({ length: n }, (_, r) => binomialTree(r, root, n));
      for (let r = 0; r < n; r++) {
        const v = (r - root + n) % n;
        const t = trees[r];
        assert.is(t.parent, ref.parent[v] < 0 ? -1 : abs(ref.parent[v]), `n=${n} root=${root} rank=${r} parent`);
        assert.equal(Array.from(t.children), ref.children[v].map(abs), `n=${n} root=${root} rank=${r} children`);
        for (const c of t.children) {
          seen[c]++;
          assert.is(trees[c].parent, r, 'child names its parent');
        }
      }
      // Every rank except the root is somebody's child exactly once; depth is at most ceil(log2 n).
      seen.forEach((s, r) => assert.is(s, r === root ? 0 : 1, `n=${n} root=${root} rank ${r} reached ${s} times`));
      for (let r = 0; r < n; r++) {
        let d = 0;
        for (let x = r; x !== root; x = trees[x].parent) d++;
        assert.ok(d <= depthLimit, `n=${n} depth ${d}`);
      }
    }
  }
  invalid(() => binomialTree(0, 4, 4), /root 4 is outside/);
  invalid(() => binomialTree(-1, 0, 4), /rank -1 is outside/);
});

test('dissemination barrier: ceil(log2 n) rounds, consistent partners, everyone hears everyone', () => {
  for (let n = 1; n <= MAX_WORLD; n++) {
    const plans = Array.from({ length: n }, (_, r) => disseminationPartners(r, n));
    const rounds = plans[0].sendTo.length;
    assert.ok(2 ** rounds >= n && (rounds === 0 || 2 ** (rounds - 1) < n), `n=${n} rounds=${rounds}`);
    let know = Array.from({ length: n }, (_, r) => new Set([r]));
    for (let k = 0; k < rounds; k++) {
      for (let r = 0; r < n; r++) {
        assert.is(plans[r].sendTo[k], (r + 2 ** k) % n);
        assert.is(plans[plans[r].sendTo[k]].recvFrom[k], r, `n=${n} round ${k}: receiver expects the sender`);
      }
      know = know.map((s, r) => new Set([...s, ...know[plans[r].recvFrom[k]]]));
    }
    know.forEach((s, r) => assert.is(s.size, n, `n=${n}: rank ${r} heard from ${s.size} ranks`));
  }
});

test('recursive doubling: every world size 1..33 combines all contributions at every rank', () => {
  for (let n = 1; n <= MAX_WORLD; n++) {
    const plans = Array.from({ length: n }, (_, r) => recursiveDoubling(r, n));
    const p = 2 ** Math.floor(Math.log2(n));
    const value = Array.from({ length: n }, (_, r) => new Set([r]));
    // Fold: extras hand their data over; partners agree about the pairing.
    for (let r = 0; r < n; r++) {
      const f = plans[r].foldPartner;
      if (f >= 0) assert.is(plans[f].foldPartner, r, `n=${n}: fold pairing of ${r}`);
      if (plans[r].isExtra) {
        assert.ok(f >= 0 && !plans[f].isExtra);
        assert.is(plans[r].partners.length, 0);
        for (const x of value[r]) value[f].add(x);
      }
    }
    const active = plans.map((pl, r) => (pl.isExtra ? -1 : r)).filter((r) => r >= 0);
    assert.is(active.length, p, `n=${n}: ${active.length} participants`);
    const rounds = Math.log2(p);
    for (let k = 0; k < rounds; k++) {
      const next = value.map((s) => new Set(s));
      for (const r of active) {
        const q = plans[r].partners[k];
        assert.ok(!plans[q].isExtra, `n=${n} round ${k}: partner ${q} of ${r} is an extra`);
        assert.is(plans[q].partners[k], r, `n=${n} round ${k}: partners disagree`);
        for (const x of value[q]) next[r].add(x);
      }
      for (const r of active) value[r] = next[r];
    }
    for (let r = 0; r < n; r++) {
      assert.is(plans[r].partners.length, plans[r].isExtra ? 0 : rounds);
      if (plans[r].isExtra) value[r] = value[plans[r].foldPartner];
      assert.is(value[r].size, n, `n=${n}: rank ${r} ends with ${value[r].size} contributions`);
    }
  }
});

test('schedules at the largest world size (2^30) stay exact: no overflow, no endless loop', () => {
  const n = 2 ** 30;
  const last = n - 1;
  assert.equal(ringNeighbors(last, n), { next: 0, prev: last - 1 });
  const rootTree = binomialTree(0, 0, n);
  assert.is(rootTree.children.length, 30);
  assert.is(rootTree.children[0], 2 ** 29);
  assert.is(binomialTree(last, 0, n).parent, last - 1);
  assert.is(binomialTree(0, last, n).parent, last);
  const d = disseminationPartners(last, n);
  assert.is(d.sendTo.length, 30);
  assert.is(d.sendTo[29], 2 ** 29 - 1);
  assert.is(d.recvFrom[29], 2 ** 29 - 1);
  const rd = recursiveDoubling(last, n);
  assert.equal([rd.foldPartner, rd.isExtra, rd.partners.length], [-1, false, 30]);
  assert.is(rd.partners[29], last - 2 ** 29);
  // One below: 2^30 - 1 = 2^29 + (2^29 - 1) extra ranks.
  const odd = recursiveDoubling(1, n - 1);
  assert.equal([odd.foldPartner, odd.isExtra, odd.partners.length], [0, false, 29]);
});

test('chunkPlan: segments as even as possible, chunks cover [0, count) exactly, no overlap', () => {
  for (const count of [0, 1, 2, 7, 33, 100, 1023, 12345]) {
    for (let parts = 1; parts <= MAX_WORLD; parts++) {
      for (const chunkElems of [1, 3, 64, 1000]) {
        if (count / chunkElems > 20000) continue;
        const plan = chunkPlan(count, parts, chunkElems);
        const tag = `count=${count} parts=${parts} chunk=${chunkElems}`;
        assert.is(plan.partOffsets.length, parts + 1);
        assert.is(plan.partOffsets[0], 0);
        assert.is(plan.partOffsets[parts], count, tag);
        const base = Math.floor(count / parts);
        let next = 0; // the element the next chunk must start at
        for (let p = 0; p < parts; p++) {
          const lo = plan.partOffsets[p];
          const hi = plan.partOffsets[p + 1];
          assert.is(hi - lo, base + (p < count % parts ? 1 : 0), `${tag} segment ${p}`);
          const first = plan.chunkStart[p];
          const end = plan.chunkStart[p + 1];
          assert.is(end - first, Math.ceil((hi - lo) / chunkElems), `${tag} chunks in segment ${p}`);
          for (let c = first; c < end; c++) {
            assert.is(plan.chunkOffsets[c], next, `${tag} chunk ${c} starts where the last ended`);
            const len = plan.chunkLengths[c];
            assert.ok(len >= 1 && len <= chunkElems, `${tag} chunk ${c} length ${len}`);
            if (c < end - 1) assert.is(len, chunkElems, `${tag}: only a segment's last chunk may be short`);
            next += len;
          }
          assert.is(next, hi, `${tag}: segment ${p} fully covered`);
        }
        assert.is(plan.chunkStart[parts], plan.chunkOffsets.length);
        assert.is(plan.chunkLengths.length, plan.chunkOffsets.length);
      }
    }
  }
});

test('chunkPlan: large counts stay exact beyond 2^31; bad arguments are refused', () => {
  const big = 2 ** 33 + 5;
  const plan = chunkPlan(big, 3, 2 ** 30);
  assert.is(plan.partOffsets[3], big);
  assert.is(plan.chunkLengths.reduce((a, b) => a + b, 0), big);
  invalid(() => chunkPlan(-1, 2, 4), /count must be a safe integer/);
  invalid(() => chunkPlan(10, 0, 4), /parts must be an integer/);
  invalid(() => chunkPlan(10, 2, 0), /chunkElems must be an integer >= 1/);
  invalid(() => chunkPlan(2 ** 40, 2, 1), /raise chunkElems/);
});

// The CPU group's segmentation before it moved into the core (host/cpu/algorithms.ts `split`
// and its K), kept here as the reference: the frames on the wire must not change.
function referenceSegments(count: number, parts: number, itemSize: number, chunkBytes: number): { K: number; segs: Array<[number, number]> } {
  const split = (n: number, p: number, baseByte = 0): Array<[number, number]> => {
    const base = Math.floor(n / p);
    const rem = n % p;
    const out: Array<[number, number]> = [];
    let el = 0;
    for (let i = 0; i < p; i++) {
      const m = base + (i < rem ? 1 : 0);
      out.push([baseByte + el * itemSize, m * itemSize]);
      el += m;
    }
    return out;
  };
  const blocks = split(count, parts);
  const maxBlock = Math.max(...blocks.map((b) => b[1]));
  const K = Math.max(1, Math.ceil(maxBlock / chunkBytes));
  return { K, segs: blocks.flatMap(([off, len]) => split(len / itemSize, K, off)) };
}

test('segmentPlan: the same segments as the JS ring and chain cut before (every block K segments)', () => {
  let cases = 0;
  for (const itemSize of [1, 2, 4, 8]) {
    for (const count of [0, 1, 2, 3, 7, 31, 100, 1023, 4099]) {
      for (const parts of [1, 2, 3, 4, 5, 8, 13]) {
        // chunkBytes not a multiple of itemSize too: K is computed in bytes.
        for (const chunkBytes of [1, 3, 6, 64, 100, 4096, 1 << 19]) {
          if ((count * itemSize) / chunkBytes > 50_000) continue;
          const want = referenceSegments(count, parts, itemSize, chunkBytes);
          const got = segmentPlan(count, parts, itemSize, chunkBytes);
          const tag = `count=${count} parts=${parts} itemSize=${itemSize} chunk=${chunkBytes}`;
          assert.is(got.segments, want.K, tag);
          assert.equal(Array.from(got.offsets), want.segs.map((s) => s[0]), tag);
          assert.equal(Array.from(got.lengths), want.segs.map((s) => s[1]), tag);
          cases++;
        }
      }
    }
  }
  assert.ok(cases > 1000);
});

test('segmentPlan: byte offsets stay exact beyond 2^32; bad arguments are refused', () => {
  const big = segmentPlan(2 ** 31 + 3, 2, 4, 1 << 19);
  const last = big.offsets.length - 1;
  assert.is(big.offsets[last] + big.lengths[last], (2 ** 31 + 3) * 4);
  assert.is(big.lengths.reduce((a, b) => a + b, 0), (2 ** 31 + 3) * 4);
  invalid(() => segmentPlan(-1, 2, 4, 8), /count must be an integer/);
  invalid(() => segmentPlan(10, 0, 4, 8), /parts must be an integer/);
  invalid(() => segmentPlan(10, 2, 9, 8), /itemSize must be an integer in 1..8/);
  invalid(() => segmentPlan(10, 2, 4, 0), /chunkBytes must be an integer >= 1/);
  invalid(() => segmentPlan(2 ** 40, 2, 1, 1), /raise chunkBytes/);
});

test('ringBlocks, chainNeighbors, directPeers: the ring, chain and direct schedules', () => {
  const mod = (a: number, n: number) => ((a % n) + n) % n;
  for (let n = 1; n <= MAX_WORLD; n++) {
    const sent = new Set<string>();
    for (let r = 0; r < n; r++) {
      for (const shift of [0, -1]) {
        const b = ringBlocks(r, n, shift, 2 * n - 1);
        assert.equal(Array.from(b), Array.from({ length: 2 * n - 1 }, (_, s) => mod(r - s + shift, n)));
      }
      for (let root = 0; root < n; root++) {
        const c = chainNeighbors(r, root, n);
        const v = mod(r - root, n);
        assert.is(c.prev, v === 0 ? -1 : mod(r - 1, n), `n=${n} r=${r} root=${root}`);
        assert.is(c.next, v === n - 1 ? -1 : mod(r + 1, n), `n=${n} r=${r} root=${root}`);
      }
      const d = directPeers(r, n);
      assert.equal(Array.from(d.sendTo), Array.from({ length: n - 1 }, (_, i) => mod(r + i + 1, n)));
      assert.equal(Array.from(d.recvFrom), Array.from({ length: n - 1 }, (_, i) => mod(r - i - 1, n)));
      for (const p of d.sendTo) sent.add(`${r}->${p}`);
    }
    assert.is(sent.size, n * (n - 1), `n=${n}: every ordered pair exactly once`);
  }
  invalid(() => ringBlocks(0, 4, 5, 7), /shift 5 is outside/);
  invalid(() => ringBlocks(4, 4, 0, 7), /rank 4 is outside/);
  invalid(() => chainNeighbors(0, 4, 4), /root 4 is outside/);
  invalid(() => directPeers(0, 0), /worldSize must be an integer/);
});

test.run();
