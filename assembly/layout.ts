// Group layout, port records, ring/tree/dissemination/recursive-doubling schedules and chunking.
// Pure functions over caller-provided memory; results and error details go to an out pointer.
// Ranks in schedules are ranks within the group (0..n-1). host/core/layout.ts documents the
// user-facing contract and turns error codes into messages.

export const LAYOUT_OK: i32 = 0;
export const LAYOUT_ERR_NO_GROUPS: i32 = 1;
export const LAYOUT_ERR_EMPTY_GROUP: i32 = 2;        // detail: group
export const LAYOUT_ERR_NEGATIVE_RANK: i32 = 3;      // detail: group, rank
export const LAYOUT_ERR_RANK_OUT_OF_RANGE: i32 = 4;  // detail: group, rank
export const LAYOUT_ERR_DUPLICATE_RANK: i32 = 5;     // detail: rank, first group, second group
export const LAYOUT_ERR_BAD_GLOBAL_RANK: i32 = 6;    // detail: rank
export const LAYOUT_ERR_RANK_IN_NO_GROUP: i32 = 7;   // detail: rank
export const LAYOUT_ERR_BAD_PORT: i32 = 8;           // detail: index, value
export const LAYOUT_ERR_DUPLICATE_PORT: i32 = 9;     // detail: first index, second index, value
export const LAYOUT_ERR_BAD_RECORD_LENGTH: i32 = 10; // detail: length
export const LAYOUT_ERR_BAD_WORLD: i32 = 11;         // bad world size / rank / root / parts

/** Bytes of a port record: three big-endian u32 (Python struct "!3I"). */
export const LAYOUT_PORT_RECORD_BYTES: i32 = 12;

// @ts-ignore: decorator
@inline function setOut(out: usize, a: i32, b: i32 = 0, c: i32 = 0): void {
  store<i32>(out, a);
  store<i32>(out, b, 4);
  store<i32>(out, c, 8);
}

// In-place heapsort of u64 keys (no allocation beyond the caller's array).
function siftDown(a: usize, start: i32, end: i32): void {
  let root = start;
  while (true) {
    let child = 2 * root + 1;
    if (child >= end) return;
    if (child + 1 < end && load<u64>(a + (<usize>(child + 1) << 3)) > load<u64>(a + (<usize>child << 3))) child++;
    const r = load<u64>(a + (<usize>root << 3));
    const c = load<u64>(a + (<usize>child << 3));
    if (r >= c) return;
    store<u64>(a + (<usize>root << 3), c);
    store<u64>(a + (<usize>child << 3), r);
    root = child;
  }
}

function heapSort(a: usize, n: i32): void {
  for (let i = (n >> 1) - 1; i >= 0; i--) siftDown(a, i, n);
  for (let end = n - 1; end > 0; end--) {
    const t = load<u64>(a);
    store<u64>(a, load<u64>(a + (<usize>end << 3)));
    store<u64>(a + (<usize>end << 3), t);
    siftDown(a, 0, end);
  }
}

/**
 * Finds `globalRank`'s group. `ranks` holds every group's ranks back to back (i32), `offsets`
 * numGroups + 1 i32 boundaries into it. globalWorldSize <= 0 means "not known" (no upper
 * bound check). On success out = [groupIndex, rankInGroup, worldSize]; on error out holds the
 * detail fields listed next to the error code. Checks run in this order: no groups, empty
 * group, negative rank, rank >= globalWorldSize, duplicate rank (the smallest), the caller's
 * rank out of range, the caller's rank in no group.
 */
export function layoutFindGroup(
  ranks: usize, offsets: usize, numGroups: i32, globalRank: i32, globalWorldSize: i32, out: usize,
): i32 {
  setOut(out, 0);
  if (numGroups <= 0) return LAYOUT_ERR_NO_GROUPS;
  for (let g = 0; g < numGroups; g++) {
    const lo = load<i32>(offsets + (<usize>g << 2));
    const hi = load<i32>(offsets + (<usize>(g + 1) << 2));
    if (hi <= lo) { setOut(out, g); return LAYOUT_ERR_EMPTY_GROUP; }
  }
  const total = load<i32>(offsets + (<usize>numGroups << 2));
  for (let g = 0; g < numGroups; g++) {
    const lo = load<i32>(offsets + (<usize>g << 2));
    const hi = load<i32>(offsets + (<usize>(g + 1) << 2));
    for (let i = lo; i < hi; i++) {
      const r = load<i32>(ranks + (<usize>i << 2));
      if (r < 0) { setOut(out, g, r); return LAYOUT_ERR_NEGATIVE_RANK; }
      if (globalWorldSize > 0 && r >= globalWorldSize) { setOut(out, g, r); return LAYOUT_ERR_RANK_OUT_OF_RANGE; }
    }
  }
  // Duplicates within or across groups: sort (rank, group, position) keys, compare neighbours.
  const keys = heap.alloc(<usize>total << 3);
  let k = 0;
  for (let g = 0; g < numGroups; g++) {
    const lo = load<i32>(offsets + (<usize>g << 2));
    const hi = load<i32>(offsets + (<usize>(g + 1) << 2));
    for (let i = lo; i < hi; i++) {
      const r = <u64>load<i32>(ranks + (<usize>i << 2));
      // Rank (non-negative, checked above) in the high half, flat position in the low half:
      // equal ranks end up adjacent, and the position names the groups afterwards.
      store<u64>(keys + (<usize>k << 3), (r << 32) | <u64>i);
      k++;
    }
  }
  heapSort(keys, total);
  let dupPos1: i32 = -1;
  let dupPos2: i32 = -1;
  for (let i = 1; i < total; i++) {
    const a = load<u64>(keys + (<usize>(i - 1) << 3));
    const b = load<u64>(keys + (<usize>i << 3));
    if ((a >> 32) == (b >> 32)) { dupPos1 = <i32>(a & 0xffffffff); dupPos2 = <i32>(b & 0xffffffff); break; }
  }
  heap.free(keys);
  if (dupPos1 >= 0) {
    setOut(out, load<i32>(ranks + (<usize>dupPos1 << 2)), groupOf(offsets, numGroups, dupPos1), groupOf(offsets, numGroups, dupPos2));
    return LAYOUT_ERR_DUPLICATE_RANK;
  }
  if (globalRank < 0 || (globalWorldSize > 0 && globalRank >= globalWorldSize)) {
    setOut(out, globalRank);
    return LAYOUT_ERR_BAD_GLOBAL_RANK;
  }
  for (let g = 0; g < numGroups; g++) {
    const lo = load<i32>(offsets + (<usize>g << 2));
    const hi = load<i32>(offsets + (<usize>(g + 1) << 2));
    for (let i = lo; i < hi; i++) {
      if (load<i32>(ranks + (<usize>i << 2)) == globalRank) {
        setOut(out, g, i - lo, hi - lo);
        return LAYOUT_OK;
      }
    }
  }
  setOut(out, globalRank);
  return LAYOUT_ERR_RANK_IN_NO_GROUP;
}

function groupOf(offsets: usize, numGroups: i32, pos: i32): i32 {
  for (let g = 0; g < numGroups; g++) {
    if (pos < load<i32>(offsets + (<usize>(g + 1) << 2))) return g;
  }
  return -1;
}

// ---------------------------------------------------------------------------------------------
// Ports. A port here is where peers connect, so it must be a real port: 1..65535. Port 0
// ("let the OS choose") is a bind-time notion; the rendezvous scheme binds port 0 and then
// publishes the real port in a record, so 0 never appears in a triple or a record.

/** 0 if [device, cpu, store] are three distinct ports in 1..65535; else an error, detail in out. */
export function layoutValidatePorts(device: i32, cpu: i32, store_: i32, out: usize): i32 {
  setOut(out, 0);
  if (device < 1 || device > 65535) { setOut(out, 0, device); return LAYOUT_ERR_BAD_PORT; }
  if (cpu < 1 || cpu > 65535) { setOut(out, 1, cpu); return LAYOUT_ERR_BAD_PORT; }
  if (store_ < 1 || store_ > 65535) { setOut(out, 2, store_); return LAYOUT_ERR_BAD_PORT; }
  if (device == cpu) { setOut(out, 0, 1, device); return LAYOUT_ERR_DUPLICATE_PORT; }
  if (device == store_) { setOut(out, 0, 2, device); return LAYOUT_ERR_DUPLICATE_PORT; }
  if (cpu == store_) { setOut(out, 1, 2, cpu); return LAYOUT_ERR_DUPLICATE_PORT; }
  return LAYOUT_OK;
}

// @ts-ignore: decorator
@inline function storeBE32(p: usize, v: u32): void {
  store<u32>(p, bswap<u32>(v));
}

/** Validates the triple and writes the 12-byte record (big-endian u32 x 3) at dst. */
export function layoutEncodePorts(device: i32, cpu: i32, store_: i32, dst: usize, out: usize): i32 {
  const rc = layoutValidatePorts(device, cpu, store_, out);
  if (rc != LAYOUT_OK) return rc;
  storeBE32(dst, <u32>device);
  storeBE32(dst + 4, <u32>cpu);
  storeBE32(dst + 8, <u32>store_);
  return LAYOUT_OK;
}

/** Reads a record of `len` bytes at src; on success out = [device, cpu, store]. */
export function layoutDecodePorts(src: usize, len: i32, out: usize): i32 {
  setOut(out, 0);
  if (len != LAYOUT_PORT_RECORD_BYTES) { setOut(out, len); return LAYOUT_ERR_BAD_RECORD_LENGTH; }
  const d = bswap<u32>(load<u32>(src));
  const c = bswap<u32>(load<u32>(src, 4));
  const s = bswap<u32>(load<u32>(src, 8));
  // Values above 2^31 would turn negative as i32; report them as the biggest bad port.
  const rc = layoutValidatePorts(clampPort(d), clampPort(c), clampPort(s), out);
  if (rc != LAYOUT_OK) return rc;
  setOut(out, <i32>d, <i32>c, <i32>s);
  return LAYOUT_OK;
}

// @ts-ignore: decorator
@inline function clampPort(v: u32): i32 {
  return v > 0x7fffffff ? 0x7fffffff : <i32>v;
}

// ---------------------------------------------------------------------------------------------
// Schedules. Every function returns -1 (or LAYOUT_ERR_BAD_WORLD) when n is outside
// 1..LAYOUT_MAX_WORLD or a rank is outside [0, n). The cap keeps every sum of two ranks and
// every power of two up to n inside i32.

export const LAYOUT_MAX_WORLD: i32 = 1 << 30;

// @ts-ignore: decorator
@inline function badRank(r: i32, n: i32): bool {
  return n < 1 || n > LAYOUT_MAX_WORLD || r < 0 || r >= n;
}

export function layoutRingNext(rank: i32, n: i32): i32 {
  if (badRank(rank, n)) return -1;
  return rank + 1 == n ? 0 : rank + 1;
}

export function layoutRingPrev(rank: i32, n: i32): i32 {
  if (badRank(rank, n)) return -1;
  return rank == 0 ? n - 1 : rank - 1;
}

/**
 * Binomial tree rooted at `root`. With v = (rank - root) mod n, the parent of v is v with its
 * lowest set bit cleared, and its children are v + 2^k for every 2^k below that bit (every
 * k for the root) with v + 2^k < n. Returns the parent rank, or -1 for the root, or -2 on bad
 * input.
 */
export function layoutTreeParent(rank: i32, root: i32, n: i32): i32 {
  if (badRank(rank, n) || badRank(root, n)) return -2;
  const v = (rank - root + n) % n;
  if (v == 0) return -1;
  return ((v & (v - 1)) + root) % n;
}

/**
 * Writes rank's children (i32) at out in send order: largest subtree first, which lets the
 * deepest branch start earliest. Returns the count, or -1 on bad input. out needs 31 slots.
 */
export function layoutTreeChildren(rank: i32, root: i32, n: i32, out: usize): i32 {
  if (badRank(rank, n) || badRank(root, n)) return -1;
  const v = (rank - root + n) % n;
  // Children use the bits below v's lowest set bit; for the root every bit below n.
  let top: i32;
  if (v == 0) {
    top = 1;
    while (top < n) top <<= 1;
  } else {
    top = v & -v;
  }
  let count = 0;
  for (let m = top >> 1; m > 0; m >>= 1) {
    if (v + m < n) {
      store<i32>(out + (<usize>count << 2), (v + m + root) % n);
      count++;
    }
  }
  return count;
}

/** Rounds of the dissemination barrier: ceil(log2 n) (0 for n = 1), or -1 for n < 1. */
export function layoutDisseminationRounds(n: i32): i32 {
  if (n < 1 || n > LAYOUT_MAX_WORLD) return -1;
  let rounds = 0;
  for (let d = 1; d < n; d <<= 1) rounds++;
  return rounds;
}

/**
 * Dissemination barrier: in round k rank sends to (rank + 2^k) mod n and receives from
 * (rank - 2^k) mod n. Writes the partners to sendTo/recvFrom (i32 each), returns the rounds.
 */
export function layoutDissemination(rank: i32, n: i32, sendTo: usize, recvFrom: usize): i32 {
  if (badRank(rank, n)) return -1;
  let k = 0;
  for (let d = 1; d < n; d <<= 1) {
    store<i32>(sendTo + (<usize>k << 2), (rank + d) % n);
    store<i32>(recvFrom + (<usize>k << 2), (rank - d + n) % n);
    k++;
  }
  return k;
}

/**
 * Recursive doubling for any n. With p the largest power of two <= n and extra = n - p, the
 * first 2 * extra ranks pair up: each even rank there is an "extra" that hands its data to
 * rank + 1 before the exchange and gets the result back from it afterwards; the odd rank
 * takes part. The p participating ranks exchange with partner (new ^ 2^k) in round k, where
 * new = rank >> 1 for the paired ranks and rank - extra for the rest.
 * out[0] = fold partner (-1 when the rank is not paired), out[1] = 1 for an extra rank,
 * out[2..] = partners per round. Returns the number of rounds (0 for an extra), -1 on bad input.
 */
export function layoutRecursiveDoubling(rank: i32, n: i32, out: usize): i32 {
  if (badRank(rank, n)) return -1;
  let p = 1;
  while (p <= n >> 1) p <<= 1;
  const extra = n - p;
  let fold = -1;
  let isExtra = 0;
  let newRank: i32;
  if (rank < 2 * extra) {
    if ((rank & 1) == 0) { fold = rank + 1; isExtra = 1; newRank = -1; }
    else { fold = rank - 1; newRank = rank >> 1; }
  } else {
    newRank = rank - extra;
  }
  store<i32>(out, fold);
  store<i32>(out, isExtra, 4);
  if (isExtra) return 0;
  let k = 0;
  for (let m = 1; m < p; m <<= 1) {
    const partner = newRank ^ m;
    store<i32>(out + 8 + (<usize>k << 2), partner < extra ? partner * 2 + 1 : partner + extra);
    k++;
  }
  return k;
}

/**
 * The ring's block schedule: at step s a rank sends block (rank - s + shift) mod n to its ring
 * successor, so it receives block (rank - s - 1 + shift) mod n, which is out[s + 1]. Writes
 * `count` i32 at out; returns count, or -1 on bad input (shift must be in [-n, n]).
 */
export function layoutRingBlocks(rank: i32, n: i32, shift: i32, count: i32, out: usize): i32 {
  if (badRank(rank, n) || shift < -n || shift > n || count < 0) return -1;
  for (let s = 0; s < count; s++) {
    // i64: rank - s + shift may leave i32 for large n and count.
    const b = (<i64>rank - <i64>s + <i64>shift) % <i64>n;
    store<i32>(out + (<usize>s << 2), <i32>(b < 0 ? b + <i64>n : b));
  }
  return count;
}

/**
 * A chain from `root` along the ring (pipelined broadcast): out[0] = the rank this one receives
 * from (-1 at the root), out[1] = the rank it forwards to (-1 for the last rank of the chain,
 * the root's ring predecessor). Returns 0, or -1 on bad input.
 */
export function layoutChain(rank: i32, root: i32, n: i32, out: usize): i32 {
  if (badRank(rank, n) || badRank(root, n)) return -1;
  const v = (rank - root + n) % n;
  store<i32>(out, v == 0 ? -1 : (rank == 0 ? n - 1 : rank - 1));
  store<i32>(out, v + 1 < n ? (rank + 1 == n ? 0 : rank + 1) : -1, 4);
  return 0;
}

/**
 * Direct exchange (every message in flight at once): peers in visiting order, sendTo[i - 1] =
 * (rank + i) mod n and recvFrom[i - 1] = (rank - i) mod n for i in 1..n-1, so that not every
 * rank sends to the same peer first. Returns n - 1, or -1 on bad input.
 */
export function layoutDirectPeers(rank: i32, n: i32, sendTo: usize, recvFrom: usize): i32 {
  if (badRank(rank, n)) return -1;
  for (let i = 1; i < n; i++) {
    store<i32>(sendTo + (<usize>(i - 1) << 2), <i32>((<i64>rank + <i64>i) % <i64>n));
    store<i32>(recvFrom + (<usize>(i - 1) << 2), <i32>((<i64>rank - <i64>i + <i64>n) % <i64>n));
  }
  return n - 1;
}

// ---------------------------------------------------------------------------------------------
// Chunking for pipelined ring collectives. `count` elements are split into `parts` segments as
// evenly as possible (the first count % parts segments get one more element), and each
// segment into chunks of chunkElems elements (the last chunk of a segment may be shorter;
// an empty segment has no chunks). Counts are f64 so that they can exceed 2^31.

// @ts-ignore: decorator
@inline function validChunkArgs(count: f64, parts: i32, chunkElems: f64): bool {
  return parts >= 1 && count >= 0 && count <= 9007199254740991 && count == Math.floor(count) &&
    chunkElems >= 1 && chunkElems == Math.floor(chunkElems);
}

/** Total chunks for (count, parts, chunkElems), or -1 on bad input. */
export function layoutChunkCount(count: f64, parts: i32, chunkElems: f64): f64 {
  if (!validChunkArgs(count, parts, chunkElems)) return -1;
  const base = Math.floor(count / parts);
  const rem = count - base * parts;
  const perBig = Math.ceil((base + 1) / chunkElems);
  const perSmall = Math.ceil(base / chunkElems);
  return rem * perBig + (parts - rem) * perSmall;
}

/**
 * Writes the plan: partOffsets (f64 x parts + 1), chunkStart (i32 x parts + 1: the first
 * chunk index of each segment, then the total), chunkOffsets and chunkLengths (f64 x total).
 * Returns LAYOUT_OK or LAYOUT_ERR_BAD_WORLD.
 */
export function layoutChunks(
  count: f64, parts: i32, chunkElems: f64,
  partOffsets: usize, chunkStart: usize, chunkOffsets: usize, chunkLengths: usize,
): i32 {
  if (!validChunkArgs(count, parts, chunkElems)) return LAYOUT_ERR_BAD_WORLD;
  const base = Math.floor(count / parts);
  const rem = <i32>(count - base * parts);
  let off: f64 = 0;
  let c: i32 = 0;
  for (let p = 0; p < parts; p++) {
    const len = base + (p < rem ? 1 : 0);
    store<f64>(partOffsets + (<usize>p << 3), off);
    store<i32>(chunkStart + (<usize>p << 2), c);
    let done: f64 = 0;
    while (done < len) {
      const l = Math.min(chunkElems, len - done);
      store<f64>(chunkOffsets + (<usize>c << 3), off + done);
      store<f64>(chunkLengths + (<usize>c << 3), l);
      done += l;
      c++;
    }
    off += len;
  }
  store<f64>(partOffsets + (<usize>parts << 3), off);
  store<i32>(chunkStart + (<usize>parts << 2), c);
  return LAYOUT_OK;
}

// ---------------------------------------------------------------------------------------------
// Segments of the pipelined ring and chain (what host/cpu/algorithms.ts sends). Unlike
// layoutChunks, every block gets the same number K of segments, so a segment is named by
// step * K + k on every rank whatever the block sizes:
// - `count` elements of `itemSize` bytes are split into `parts` blocks as evenly as possible
//   (the first count % parts blocks get one more element);
// - K = max(1, ceil(largest block in bytes / chunkBytes));
// - each block's elements are split over its K segments the same way (the first ones get one
//   more), so a segment may be empty when a block has fewer than K elements.
// Offsets and lengths are in bytes, as f64 (exact up to 2^53).

// @ts-ignore: decorator
@inline function validSegmentArgs(count: f64, parts: i32, itemSize: i32, chunkBytes: f64): bool {
  return parts >= 1 && itemSize >= 1 && count >= 0 && count * <f64>itemSize <= 9007199254740991 &&
    count == Math.floor(count) && chunkBytes >= 1 && chunkBytes == Math.floor(chunkBytes);
}

/** K, the segments per block, for these arguments; -1 on bad input. */
export function layoutSegmentCount(count: f64, parts: i32, itemSize: i32, chunkBytes: f64): f64 {
  if (!validSegmentArgs(count, parts, itemSize, chunkBytes)) return -1;
  const largest = Math.ceil(count / <f64>parts) * <f64>itemSize;
  return Math.max(1, Math.ceil(largest / chunkBytes));
}

/**
 * Writes parts * K byte offsets and lengths (f64 each) at offsets/lengths, block-major: segment
 * k of block b is entry b * K + k. Returns K, or -1 on bad input.
 */
export function layoutSegments(
  count: f64, parts: i32, itemSize: i32, chunkBytes: f64, offsets: usize, lengths: usize,
): f64 {
  const kf = layoutSegmentCount(count, parts, itemSize, chunkBytes);
  if (kf < 0) return -1;
  const K = <i32>kf;
  const size = <f64>itemSize;
  const base = Math.floor(count / <f64>parts);
  const rem = count - base * <f64>parts;
  let el: f64 = 0; // first element of the current block
  let e: usize = 0;
  for (let b = 0; b < parts; b++) {
    const len = base + (<f64>b < rem ? 1 : 0);
    const sBase = Math.floor(len / <f64>K);
    const sRem = len - sBase * <f64>K;
    let at = el;
    for (let k = 0; k < K; k++) {
      const n = sBase + (<f64>k < sRem ? 1 : 0);
      store<f64>(offsets + (e << 3), at * size);
      store<f64>(lengths + (e << 3), n * size);
      at += n;
      e++;
    }
    el += len;
  }
  return kf;
}
