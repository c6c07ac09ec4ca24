/**
 * Group layout, ports and schedules, computed by the WebAssembly core (assembly/layout.ts);
 * this module hides the pointers and turns error codes into GroupcommError INVALID_ARGUMENT
 * messages that name the offending rank, group or port.
 *
 * Layout
 * - `findGroup(groupRanks, globalRank, globalWorldSize?)` → GroupLayout. groupRanks are
 *   disjoint lists of global ranks (vLLM's group_ranks). Errors: no groups, an empty group, a
 *   rank that is not a non-negative integer, a rank >= globalWorldSize (when given), a rank
 *   listed twice (in one group or in two), globalRank out of range, globalRank in no group.
 *   nextRank/prevRank/firstRank/lastRank are global ranks (vLLM's next_rank etc.).
 *
 * Ports
 * - A triple is vLLM's `[devicePort, cpuPort, storePort]`: three distinct ports in 1..65535.
 *   Port 0 is refused: a triple names ports that peers connect to. "Let the OS choose" is the
 *   rendezvous scheme instead: group rank 0 binds port 0 and publishes the real ports as a port
 *   record, so a record never holds 0 either.
 * - `groupPortsFor(groupPorts, groupIndex, numGroups?)`: vLLM's explicit `group_ports`, one
 *   triple per group in groupRanks order.
 * - `encodePortRecord(ports)` / `decodePortRecord(bytes)`: the 12-byte record, three big-endian
 *   u32 (Python `struct.pack("!3I", ...)`), as vLLM stores under "{group_name}_{idx}".
 *
 * Schedules (ranks within the group, 0..worldSize-1; worldSize 1..LAYOUT_MAX_WORLD = 2^30)
 * - `ringNeighbors(rank, n)` → { next, prev }.
 * - `binomialTree(rank, root, n)` → { parent (-1 at the root), children (send order: largest
 *   subtree first) }. With v = (rank - root) mod n: parent = v minus its lowest set bit,
 *   children = v + 2^k below that bit.
 * - `disseminationPartners(rank, n)` → { sendTo, recvFrom }: ceil(log2 n) rounds, round k sends
 *   to (rank + 2^k) mod n and receives from (rank - 2^k) mod n.
 * - `recursiveDoubling(rank, n)` → { foldPartner, isExtra, partners }. For n not a power of two,
 *   with p = the largest power of two <= n and e = n - p, the first 2e ranks pair up (2i, 2i+1):
 *   the even one ("extra", isExtra) sends its data to foldPartner before the exchange and gets
 *   the result from it after; the odd one (foldPartner = its even neighbour) folds that data in
 *   first and sends the result back at the end. partners[k] is the round-k exchange partner of
 *   a participating rank (empty for an extra).
 * - `ringBlocks(rank, n, shift, count)`: the ring's block per step: at step s a rank sends block
 *   (rank - s + shift) mod n, and receives block entry s + 1.
 * - `chainNeighbors(rank, root, n)` → { prev (-1 at the root), next (-1 at the chain's end) }:
 *   the pipelined broadcast's chain from root along the ring.
 * - `directPeers(rank, n)` → { sendTo, recvFrom }: direct exchange's visiting order, rank + i and
 *   rank - i (mod n) for i = 1..n-1.
 * - `segmentPlan(count, parts, itemSize, chunkBytes)`: what the pipelined ring and chain send
 *   (host/cpu/algorithms.ts). `count` elements in `parts` blocks as evenly as possible, every
 *   block cut into the same number K = max(1, ceil(largest block's bytes / chunkBytes)) of
 *   segments, again as evenly as possible; segment k of block b is entry b·K + k of `offsets`
 *   and `lengths` (bytes). Equal K for every block is what lets a frame name its segment as
 *   step·K + k on every rank.
 * - `chunkPlan(count, parts, chunkElems)`: `count` elements split into `parts` segments as
 *   evenly as possible (the first count % parts get one more), each cut into chunks of at most
 *   chunkElems (the last chunk of a segment may be shorter; an empty segment has no chunks).
 *   Typed arrays, not per-chunk objects: chunks of segment p are indices
 *   chunkStart[p] .. chunkStart[p+1]-1 of chunkOffsets/chunkLengths (element units).
 */
import { getCore, Scratch, type CoreConstants, type CoreExports } from './loader.js';
import { internalError, invalidArgument } from '../base/errors.js';

export interface GroupLayout {
  /** Index of the group in groupRanks. */
  groupIndex: number;
  /** The group's global ranks, in group order (a copy). */
  ranks: number[];
  rankInGroup: number;
  worldSize: number;
  firstRank: number;
  lastRank: number;
  /** Global rank after this one in the ring (wraps around). */
  nextRank: number;
  /** Global rank before this one in the ring (wraps around). */
  prevRank: number;
}

export type PortTriple = [device: number, cpu: number, store: number];

export interface BinomialTree {
  /** Parent rank, or -1 for the root. */
  parent: number;
  /** Children in send order (largest subtree first). */
  children: Int32Array;
}

export interface RecursiveDoublingPlan {
  /** The pair partner for non-power-of-two sizes, or -1. */
  foldPartner: number;
  /** True for a rank that only hands its data to foldPartner and gets the result back. */
  isExtra: boolean;
  /** Exchange partner in each round (empty for an extra rank). */
  partners: Int32Array;
}

export interface ChunkPlan {
  /** parts + 1 element offsets: segment p is [partOffsets[p], partOffsets[p+1]). */
  partOffsets: Float64Array;
  /** parts + 1 indices into chunkOffsets/chunkLengths; the last one is the total. */
  chunkStart: Int32Array;
  chunkOffsets: Float64Array;
  chunkLengths: Float64Array;
}

export interface SegmentPlan {
  /** K: segments per block (the same for every block, at least 1). */
  segments: number;
  /** parts·K byte offsets and lengths; segment k of block b is entry b·K + k. */
  offsets: Float64Array;
  lengths: Float64Array;
}

/** Refuse plans with more chunks than this (chunkElems far too small for count). */
const MAX_CHUNKS = 1 << 20;
/** Refuse segment plans with more segments than this (chunkBytes far too small for the tensor). */
const MAX_SEGMENTS = 1 << 24;
const PORT_NAMES = ['device', 'cpu', 'store'];

let ex: CoreExports | undefined;
const x = (): CoreExports => (ex ??= getCore().exports);
/** The core's constants: LAYOUT_ERR_* codes, LAYOUT_MAX_WORLD (largest world a schedule takes). */
const k = (): CoreConstants => getCore().consts;

// One region for inputs and outputs of these (small, infrequent) calls.
const scratch = new Scratch();
const OUT_BYTES = 16;

function i32s(ptr: number, n: number): Int32Array {
  return new Int32Array(getCore().memory.buffer, ptr, n);
}

const isRankInt = (v: unknown): v is number => Number.isInteger(v) && (v as number) <= 0x7fffffff && (v as number) >= -0x80000000;

export function findGroup(groupRanks: number[][], globalRank: number, globalWorldSize?: number): GroupLayout {
  if (!Array.isArray(groupRanks)) throw invalidArgument('groupRanks must be an array of rank lists');
  if (globalWorldSize !== undefined && (!Number.isInteger(globalWorldSize) || globalWorldSize < 1 || globalWorldSize > 0x7fffffff)) {
    throw invalidArgument(`globalWorldSize must be an integer >= 1, got ${globalWorldSize}`);
  }
  if (!isRankInt(globalRank)) throw invalidArgument(`globalRank must be an integer, got ${globalRank}`, { rank: globalRank });
  let total = 0;
  groupRanks.forEach((g, gi) => {
    if (!Array.isArray(g)) throw invalidArgument(`groupRanks[${gi}] must be an array of ranks`);
    for (const r of g) {
      if (!isRankInt(r)) throw invalidArgument(`groupRanks[${gi}] holds ${String(r)}, which is not an integer rank`);
    }
    total += g.length;
  });
  const numGroups = groupRanks.length;
  const offBytes = (numGroups + 1) * 4;
  const base = scratch.ensure(OUT_BYTES + offBytes + total * 4);
  const out = base;
  const offsets = base + OUT_BYTES;
  const ranks = offsets + offBytes;
  {
    const offView = i32s(offsets, numGroups + 1);
    const rankView = i32s(ranks, total);
    let k = 0;
    for (let g = 0; g < numGroups; g++) {
      offView[g] = k;
      for (const r of groupRanks[g]) rankView[k++] = r;
    }
    offView[numGroups] = k;
  }
  const rc = x().layoutFindGroup(ranks, offsets, numGroups, globalRank, globalWorldSize ?? 0, out);
  const [a, b, c] = i32s(out, 3);
  const range = globalWorldSize === undefined ? '' : ` (globalWorldSize ${globalWorldSize})`;
  const ERR = k();
  switch (rc) {
    case ERR.LAYOUT_OK: {
      const ranksOf = groupRanks[a].slice();
      const n = c;
      return {
        groupIndex: a, ranks: ranksOf, rankInGroup: b, worldSize: n,
        firstRank: ranksOf[0], lastRank: ranksOf[n - 1],
        nextRank: ranksOf[x().layoutRingNext(b, n)], prevRank: ranksOf[x().layoutRingPrev(b, n)],
      };
    }
    case ERR.LAYOUT_ERR_NO_GROUPS: throw invalidArgument('groupRanks is empty: at least one group is needed');
    case ERR.LAYOUT_ERR_EMPTY_GROUP: throw invalidArgument(`groupRanks[${a}] is empty: every group needs at least one rank`);
    case ERR.LAYOUT_ERR_NEGATIVE_RANK: throw invalidArgument(`groupRanks[${a}] holds the negative rank ${b}`, { rank: b });
    case ERR.LAYOUT_ERR_RANK_OUT_OF_RANGE: throw invalidArgument(`groupRanks[${a}] holds rank ${b}, outside [0, ${globalWorldSize})`, { rank: b });
    case ERR.LAYOUT_ERR_DUPLICATE_RANK: throw invalidArgument(
      b === c ? `rank ${a} appears twice in groupRanks[${b}]` : `rank ${a} appears in groupRanks[${b}] and groupRanks[${c}]; groups must be disjoint`,
      { rank: a });
    case ERR.LAYOUT_ERR_BAD_GLOBAL_RANK: throw invalidArgument(`globalRank ${a} is outside [0, ${globalWorldSize})`, { rank: a });
    case ERR.LAYOUT_ERR_RANK_IN_NO_GROUP: throw invalidArgument(`globalRank ${a} is in none of the ${numGroups} groups${range}`, { rank: a });
    default: throw invalidArgument(`findGroup: core error ${rc}`);
  }
}

function portError(rc: number, what: string): never {
  const [a, b, c] = i32s(scratch.ptr, 3);
  const ERR = k();
  if (rc === ERR.LAYOUT_ERR_BAD_PORT) throw invalidArgument(`${what}: ${PORT_NAMES[a]} port ${b} is not in 1..65535`);
  if (rc === ERR.LAYOUT_ERR_DUPLICATE_PORT) throw invalidArgument(`${what}: ${PORT_NAMES[a]} and ${PORT_NAMES[b]} ports are both ${c}; the three ports must differ`);
  if (rc === ERR.LAYOUT_ERR_BAD_RECORD_LENGTH) throw invalidArgument(`${what}: a port record is ${ERR.LAYOUT_PORT_RECORD_BYTES} bytes, got ${a}`);
  throw invalidArgument(`${what}: core error ${rc}`);
}

function portInts(ports: readonly number[], what: string): PortTriple {
  if (!Array.isArray(ports) || ports.length !== 3) {
    throw invalidArgument(`${what}: expected [devicePort, cpuPort, storePort], got ${JSON.stringify(ports)}`);
  }
  ports.forEach((p, i) => {
    if (!Number.isInteger(p)) throw invalidArgument(`${what}: ${PORT_NAMES[i]} port ${String(p)} is not an integer`);
  });
  // Clamp so that huge values still reach the core's range check as "not in 1..65535".
  return ports.map((p) => Math.max(-0x80000000, Math.min(p, 0x7fffffff))) as PortTriple;
}

/** Checks [device, cpu, store] and returns a copy. */
export function validatePortTriple(ports: readonly number[]): PortTriple {
  const [d, c, s] = portInts(ports, 'port triple');
  const out = scratch.ensure(OUT_BYTES);
  const rc = x().layoutValidatePorts(d, c, s, out);
  if (rc !== k().LAYOUT_OK) portError(rc, 'port triple');
  return [d, c, s];
}

/** The triple of group `groupIndex` in vLLM's explicit groupPorts (one per group, in order). */
export function groupPortsFor(groupPorts: readonly (readonly number[])[], groupIndex: number, numGroups?: number): PortTriple {
  if (!Array.isArray(groupPorts)) throw invalidArgument('groupPorts must be an array of [device, cpu, store] triples');
  if (numGroups !== undefined && groupPorts.length !== numGroups) {
    throw invalidArgument(`groupPorts has ${groupPorts.length} triples but groupRanks has ${numGroups} groups; give one triple per group`);
  }
  if (!Number.isInteger(groupIndex) || groupIndex < 0 || groupIndex >= groupPorts.length) {
    throw invalidArgument(`groupPorts has no entry for group ${groupIndex} (${groupPorts.length} triples)`);
  }
  try {
    return validatePortTriple(groupPorts[groupIndex]);
  } catch (e) {
    throw invalidArgument(`groupPorts[${groupIndex}]: ${(e as Error).message}`, { cause: e });
  }
}

/** The port record (12 bytes): three big-endian u32 (device, cpu, store), as vLLM's "!3I". */
export function encodePortRecord(ports: readonly number[]): Uint8Array {
  const [d, c, s] = portInts(ports, 'port record');
  const size = k().LAYOUT_PORT_RECORD_BYTES;
  const out = scratch.ensure(OUT_BYTES + size);
  const rc = x().layoutEncodePorts(d, c, s, out + OUT_BYTES, out);
  if (rc !== k().LAYOUT_OK) portError(rc, 'port record');
  return getCore().u8().slice(out + OUT_BYTES, out + OUT_BYTES + size);
}

/** Parses a port record; refuses any length but 12 and any port outside 1..65535 or repeated. */
export function decodePortRecord(bytes: Uint8Array): PortTriple {
  if (!(bytes instanceof Uint8Array)) throw invalidArgument('port record must be a Uint8Array');
  // Never copy more than a record's worth: a long buffer is an error whatever it holds.
  const len = bytes.byteLength;
  const size = k().LAYOUT_PORT_RECORD_BYTES;
  const out = scratch.ensure(OUT_BYTES + size);
  if (len === size) getCore().u8().set(bytes, out + OUT_BYTES);
  const rc = x().layoutDecodePorts(out + OUT_BYTES, Math.min(len, 0x7fffffff), out);
  if (rc !== k().LAYOUT_OK) portError(rc, 'port record');
  const [d, c, s] = i32s(out, 3);
  return [d, c, s];
}

function checkWorld(rank: number, n: number, what: string, root?: number): void {
  const max = k().LAYOUT_MAX_WORLD;
  if (!Number.isInteger(n) || n < 1 || n > max) throw invalidArgument(`${what}: worldSize must be an integer in 1..2^${Math.log2(max)}, got ${n}`);
  if (!Number.isInteger(rank) || rank < 0 || rank >= n) throw invalidArgument(`${what}: rank ${rank} is outside [0, ${n})`, { rank });
  if (root !== undefined && (!Number.isInteger(root) || root < 0 || root >= n)) {
    throw invalidArgument(`${what}: root ${root} is outside [0, ${n})`);
  }
}

/** Slots for one per-round list: a schedule has at most log2(LAYOUT_MAX_WORLD) + 1 rounds. */
const rounds = () => 32 - Math.clz32(k().LAYOUT_MAX_WORLD);

export function ringNeighbors(rank: number, worldSize: number): { next: number; prev: number } {
  checkWorld(rank, worldSize, 'ring');
  return { next: x().layoutRingNext(rank, worldSize), prev: x().layoutRingPrev(rank, worldSize) };
}

export function binomialTree(rank: number, root: number, worldSize: number): BinomialTree {
  checkWorld(rank, worldSize, 'binomial tree', root);
  const out = scratch.ensure(rounds() * 4);
  const count = x().layoutTreeChildren(rank, root, worldSize, out);
  return { parent: x().layoutTreeParent(rank, root, worldSize), children: i32s(out, count).slice() };
}

export function disseminationPartners(rank: number, worldSize: number): { sendTo: Int32Array; recvFrom: Int32Array } {
  checkWorld(rank, worldSize, 'dissemination barrier');
  const half = rounds() * 4;
  const out = scratch.ensure(2 * half);
  const n = x().layoutDissemination(rank, worldSize, out, out + half);
  return { sendTo: i32s(out, n).slice(), recvFrom: i32s(out + half, n).slice() };
}

export function recursiveDoubling(rank: number, worldSize: number): RecursiveDoublingPlan {
  checkWorld(rank, worldSize, 'recursive doubling');
  const out = scratch.ensure(8 + rounds() * 4);
  const n = x().layoutRecursiveDoubling(rank, worldSize, out);
  const head = i32s(out, 2);
  return { foldPartner: head[0], isExtra: head[1] === 1, partners: i32s(out + 8, n).slice() };
}

export function ringBlocks(rank: number, worldSize: number, shift: number, count: number): Int32Array {
  checkWorld(rank, worldSize, 'ring blocks');
  if (!Number.isInteger(shift) || shift < -worldSize || shift > worldSize) {
    throw invalidArgument(`ring blocks: shift ${shift} is outside [-${worldSize}, ${worldSize}]`);
  }
  if (!Number.isInteger(count) || count < 0 || count > 2 * worldSize) {
    throw invalidArgument(`ring blocks: count ${count} is outside [0, ${2 * worldSize}]`);
  }
  const out = scratch.ensure(Math.max(count, 1) * 4);
  const n = x().layoutRingBlocks(rank, worldSize, shift, count, out);
  return i32s(out, n).slice();
}

export function chainNeighbors(rank: number, root: number, worldSize: number): { prev: number; next: number } {
  checkWorld(rank, worldSize, 'chain', root);
  const out = scratch.ensure(8);
  x().layoutChain(rank, root, worldSize, out);
  const [prev, next] = i32s(out, 2);
  return { prev, next };
}

export function directPeers(rank: number, worldSize: number): { sendTo: Int32Array; recvFrom: Int32Array } {
  checkWorld(rank, worldSize, 'direct exchange');
  const half = Math.max(worldSize - 1, 1) * 4;
  const out = scratch.ensure(2 * half);
  const n = x().layoutDirectPeers(rank, worldSize, out, out + half);
  return { sendTo: i32s(out, n).slice(), recvFrom: i32s(out + half, n).slice() };
}

export function segmentPlan(count: number, parts: number, itemSize: number, chunkBytes: number): SegmentPlan {
  if (!Number.isInteger(itemSize) || itemSize < 1 || itemSize > 8) throw invalidArgument(`segmentPlan: itemSize must be an integer in 1..8, got ${itemSize}`);
  if (!Number.isSafeInteger(count) || count < 0 || !Number.isSafeInteger(count * itemSize)) {
    throw invalidArgument(`segmentPlan: count must be an integer >= 0 with count × itemSize < 2^53, got ${count}`);
  }
  if (!Number.isInteger(parts) || parts < 1 || parts > k().LAYOUT_MAX_WORLD) throw invalidArgument(`segmentPlan: parts must be an integer in 1..${k().LAYOUT_MAX_WORLD}, got ${parts}`);
  if (!Number.isSafeInteger(chunkBytes) || chunkBytes < 1) throw invalidArgument(`segmentPlan: chunkBytes must be an integer >= 1, got ${chunkBytes}`);
  const K = x().layoutSegmentCount(count, parts, itemSize, chunkBytes);
  const total = K * parts;
  if (K < 1 || total > MAX_SEGMENTS) {
    throw invalidArgument(`segmentPlan: ${total} segments for ${count * itemSize} bytes in ${parts} blocks of chunkBytes ${chunkBytes}; raise chunkBytes`);
  }
  const off = scratch.ensure(total * 16);
  const len = off + total * 8;
  if (x().layoutSegments(count, parts, itemSize, chunkBytes, off, len) !== K) {
    throw internalError(`segmentPlan: the core planned differently from its own count (${count}, ${parts}, ${itemSize}, ${chunkBytes})`);
  }
  const buf = getCore().memory.buffer;
  return { segments: K, offsets: new Float64Array(buf, off, total).slice(), lengths: new Float64Array(buf, len, total).slice() };
}

export function chunkPlan(count: number, parts: number, chunkElems: number): ChunkPlan {
  if (!Number.isSafeInteger(count) || count < 0) throw invalidArgument(`chunkPlan: count must be a safe integer >= 0, got ${count}`);
  if (!Number.isInteger(parts) || parts < 1 || parts > 1 << 20) throw invalidArgument(`chunkPlan: parts must be an integer in 1..2^20, got ${parts}`);
  if (!Number.isSafeInteger(chunkElems) || chunkElems < 1) throw invalidArgument(`chunkPlan: chunkElems must be an integer >= 1, got ${chunkElems}`);
  const total = x().layoutChunkCount(count, parts, chunkElems);
  if (total < 0 || total > MAX_CHUNKS) {
    throw invalidArgument(`chunkPlan: ${total} chunks for ${count} elements in chunks of ${chunkElems}; raise chunkElems`);
  }
  // Layout in scratch: partOffsets f64, chunkOffsets f64, chunkLengths f64, chunkStart i32.
  const po = scratch.ensure((parts + 1) * 8 + total * 16 + (parts + 1) * 4);
  const co = po + (parts + 1) * 8;
  const cl = co + total * 8;
  const cs = cl + total * 8;
  const rc = x().layoutChunks(count, parts, chunkElems, po, cs, co, cl);
  if (rc !== k().LAYOUT_OK) throw invalidArgument(`chunkPlan: core error ${rc}`);
  const buf = getCore().memory.buffer;
  return {
    partOffsets: new Float64Array(buf, po, parts + 1).slice(),
    chunkStart: new Int32Array(buf, cs, parts + 1).slice(),
    chunkOffsets: new Float64Array(buf, co, total).slice(),
    chunkLengths: new Float64Array(buf, cl, total).slice(),
  };
}
