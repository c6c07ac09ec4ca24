/**
 * The CPU group's inbound frame parser (host/cpu/link/inbound.ts) on its own: fed the way
 * `onread` feeds it (ask `nextBuffer()` where the next read lands, copy at most that many bytes
 * there, `feed`), with every split of the stream into reads, hostile headers, and — through a
 * real mesh with one hand-made rank — that a malformed stream closes only that peer's link.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import net from 'node:net';
import { DIRECT_READ_MIN, Inbound, MAX_FRAME_BYTES, type InboundEvents, type RingSource } from '../../host/cpu/link/inbound.js';
import type { Sink } from '../../host/cpu/link/sink.js';
import { Mesh } from '../../host/cpu/mesh.js';
import { signAck, signHello } from '../../host/cpu/link/handshake.js';
import {
  ACK_SIZE, decodeAck, DOORBELL_SIZE, encodeAck, encodeChallenge, encodeHello, HEADER_SIZE, KIND_BYE, KIND_COLL, KIND_P2P, KIND_SHM, Status, writeHeader,
} from '../../host/cpu/wire.js';
import { TcpStore } from '../../host/store/client.js';
import { ErrorCode, isGroupcommError, type GroupcommError } from '../../host/base/errors.js';

const PEER = 1;

function frame(kind: number, tag: number, seq: number, slot: number, payload: Uint8Array, flags = 0): Uint8Array {
  const b = new Uint8Array(HEADER_SIZE + payload.byteLength);
  writeHeader(b, 0, { kind, tag, seq, slot }, payload.byteLength, flags);
  b.set(payload, HEADER_SIZE);
  return b;
}

/** A header declaring `length` bytes (nothing follows it). */
function header(kind: number, length: number): Uint8Array {
  const b = new Uint8Array(HEADER_SIZE);
  writeHeader(b, 0, { kind, tag: 0, seq: 0, slot: 0 }, length);
  return b;
}

const concat = (...parts: Uint8Array[]) => new Uint8Array(Buffer.concat(parts));
const bytes = (n: number, seed: number) => Uint8Array.from({ length: n }, (_, i) => (i * 31 + seed) & 0xff);

/** What the parser reported and delivered. */
class Recorder {
  acks: number[] = []; // the acceptor rank in each ACK
  byes = 0;
  malformed: string[] = [];
  /** Frames delivered, as "key slot bytes…" strings in delivery order. */
  got: string[] = [];
  readonly events: InboundEvents = {
    ack: (b) => { this.acks.push(decodeAck(b).rank); },
    bye: () => { this.byes++; },
    malformed: (why) => { this.malformed.push(why); },
  };
  sink(key: string, dest?: (slot: number, n: number) => Uint8Array | null): Sink {
    return {
      dest: dest ?? (() => null),
      done: (slot, buf) => { this.got.push(`${key} ${slot} ${Buffer.from(buf).toString('hex')}`); },
      fail: (e: GroupcommError) => { this.got.push(`${key} failed: ${e.message}`); },
    };
  }
}

function parser(rec: Recorder, recvBytes: number, ring?: RingSource): { inb: Inbound; direct: () => number } {
  const recvBuf = new Uint8Array(recvBytes);
  const inb = new Inbound(PEER, recvBuf, rec.events);
  if (ring) inb.ring = ring;
  let direct = 0;
  const orig = inb.nextBuffer.bind(inb);
  inb.nextBuffer = () => {
    const b = orig();
    if (b.buffer !== recvBuf.buffer) direct++;
    return b;
  };
  return { inb, direct: () => direct };
}

/** Feeds `chunk` as onread would: as many reads as the buffers nextBuffer() hands out need. */
function push(inb: Inbound, chunk: Uint8Array): void {
  let i = 0;
  while (i < chunk.byteLength) {
    const b = inb.nextBuffer();
    const k = Math.min(b.byteLength, chunk.byteLength - i);
    b.set(chunk.subarray(i, i + k));
    inb.feed(b, k);
    i += k;
  }
}

/** A ring double: payloads at fixed positions; records what the parser released. */
function ringOf(payloads: Map<number, Uint8Array>): RingSource & { released: string[] } {
  const released: string[] = [];
  return {
    open: true,
    released,
    at: (pos, n) => (payloads.get(pos)?.byteLength === n ? payloads.get(pos) : undefined),
    release: (pos, n) => { released.push(`${pos}+${n}`); },
  };
}

function doorbell(kind: number, seq: number, slot: number, pos: number, n: number): Uint8Array {
  const body = Buffer.alloc(DOORBELL_SIZE);
  body.writeDoubleLE(pos, 0);
  body.writeDoubleLE(n, 8);
  return frame(kind, 0, seq, slot, body, KIND_SHM);
}

// One stream with every routing case: a registered sink with its own dest, a frame before its
// operation registers (kept aside), a frame of an abandoned operation (skipped), an empty frame,
// a doorbell for a registered sink and one for a later operation, and the goodbye.
const early = bytes(9, 3);
const ringA = bytes(20, 7);
const ringB = bytes(12, 9);
const STREAM = concat(
  encodeAck(Status.OK, PEER),
  frame(KIND_COLL, 0, 1, 0, bytes(5, 1)),
  frame(KIND_COLL, 0, 2, 4, early),
  frame(KIND_COLL, 0, 9, 0, bytes(30, 2)),
  frame(KIND_P2P, 7, 0, 0, new Uint8Array(0)),
  doorbell(KIND_COLL, 1, 1, 4096, ringA.byteLength),
  doorbell(KIND_COLL, 3, 0, 8192, ringB.byteLength),
  frame(KIND_COLL, 0, 1, 2, bytes(3, 4)),
  header(KIND_BYE, 0),
);
const EXPECTED = [
  `1:0:1 0 ${Buffer.from(bytes(5, 1)).toString('hex')}`,
  `2:7:0 0 `,
  `1:0:1 1 ${Buffer.from(ringA).toString('hex')}`,
  `1:0:1 2 ${Buffer.from(bytes(3, 4)).toString('hex')}`,
  // registered after the stream: handed over on registration
  `1:0:2 4 ${Buffer.from(early).toString('hex')}`,
  `1:0:3 0 ${Buffer.from(ringB).toString('hex')}`,
];

function runStream(reads: Uint8Array[], recvBytes: number): { rec: Recorder; released: string[] } {
  const rec = new Recorder();
  const ring = ringOf(new Map([[4096, ringA], [8192, ringB]]));
  const { inb } = parser(rec, recvBytes, ring);
  inb.register('1:0:1', rec.sink('1:0:1', (_slot, n) => new Uint8Array(n)));
  inb.register('2:7:0', rec.sink('2:7:0'));
  inb.discard('1:0:9');
  for (const r of reads) push(inb, r);
  inb.register('1:0:2', rec.sink('1:0:2'));
  inb.register('1:0:3', rec.sink('1:0:3'));
  return { rec, released: ring.released };
}

test('chunked input: every split of the stream into two reads, and 1-byte reads, route every frame alike', () => {
  const cases: Uint8Array[][] = [[STREAM], [...STREAM].map((b) => Uint8Array.of(b))];
  for (let k = 1; k < STREAM.byteLength; k++) cases.push([STREAM.subarray(0, k), STREAM.subarray(k)]);
  for (const reads of cases) {
    for (const recvBytes of [7, 64, 4096]) {
      const { rec, released } = runStream(reads, recvBytes);
      const where = `${reads.length} reads (first ${reads[0].byteLength} bytes), ${recvBytes}-byte receive buffer`;
      assert.equal(rec.malformed, [], where);
      assert.equal(rec.acks, [PEER], where);
      assert.is(rec.byes, 1, where);
      assert.equal(rec.got, EXPECTED, where);
      assert.equal(released, ['4096+20', '8192+12'], where);
    }
  }
});

test('chunked input: a frame above DIRECT_READ_MIN is read straight into its destination at any split', () => {
  const big = bytes(DIRECT_READ_MIN + 1000, 5);
  const stream = concat(encodeAck(Status.OK, PEER), frame(KIND_COLL, 0, 1, 0, big), frame(KIND_COLL, 0, 1, 1, bytes(4, 6)));
  // Splits in and around the headers, at the direct-read threshold, at the end, and spread over the payload.
  const splits = new Set<number>();
  for (let k = 1; k < 200; k++) splits.add(k);
  for (let k = stream.byteLength - 200; k < stream.byteLength; k++) splits.add(k);
  for (let k = 200; k < stream.byteLength - 200; k += 997) splits.add(k);
  for (const d of [-1, 0, 1]) splits.add(ACK_SIZE + HEADER_SIZE + 1000 + d);
  for (const k of splits) {
    for (const dest of [true, false]) {
      const rec = new Recorder();
      const { inb, direct } = parser(rec, 512);
      const target = new Uint8Array(big.byteLength);
      const got: Uint8Array[] = [];
      inb.register('1:0:1', {
        dest: (slot, n) => (!dest ? null : slot === 0 ? target : new Uint8Array(n)),
        done: (_slot, buf) => { got.push(buf); },
        fail: (e) => { throw e; },
      });
      push(inb, stream.subarray(0, k));
      push(inb, stream.subarray(k));
      assert.equal(rec.malformed, []);
      assert.is(got.length, 2, `split ${k}`);
      assert.ok(Buffer.from(got[0]).equals(Buffer.from(big)), `split ${k}: the large payload is exact`);
      assert.equal([...got[1]], [...bytes(4, 6)]);
      if (dest) assert.is(got[0], target, `split ${k}: the payload is in the sink's buffer`);
      // The kernel would have written into the destination itself while ≥ DIRECT_READ_MIN was to come.
      if (k < ACK_SIZE + HEADER_SIZE + 1000) assert.ok(direct() > 0, `split ${k}: no direct read`);
    }
  }
});

test('oversized or impossible declared lengths are refused from the header, before any allocation', () => {
  for (const length of [MAX_FRAME_BYTES + 1, 2 ** 40, 2 ** 52, Number.MAX_SAFE_INTEGER, 2 ** 60, -1, 0.5, NaN, Infinity]) {
    for (const registered of [false, true]) {
      const rec = new Recorder();
      const { inb } = parser(rec, 64);
      // Without a sink the parser would need a side buffer of the declared size.
      if (registered) inb.register('1:0:0', rec.sink('1:0:0', (_slot, n) => new Uint8Array(n)));
      push(inb, concat(encodeAck(Status.OK, PEER), header(KIND_COLL, length), bytes(100, 1), frame(KIND_COLL, 0, 0, 1, bytes(3, 1))));
      assert.is(rec.malformed.length, 1, `length ${length}`);
      assert.match(rec.malformed[0], /not a byte count|negotiated maximum/);
      assert.equal(rec.got, [], `length ${length}: nothing after the bad header is delivered`);
      assert.is(inb.nextBuffer().byteLength, 64, 'reads go to the small receive buffer, never to a buffer of the declared size');
    }
  }
  // The limit itself is a length a buffer can have: a frame exactly at it is not refused by the header check.
  assert.ok(MAX_FRAME_BYTES >= 2 ** 31 && Number.isSafeInteger(MAX_FRAME_BYTES));
});

test('a malformed header is reported once, ends that stream, and leaves another peer\'s stream untouched', () => {
  const bad = [
    header(KIND_COLL, NaN),
    header(KIND_COLL, 2 ** 50),
    frame(KIND_COLL, 0, 0, 0, new Uint8Array(DOORBELL_SIZE), KIND_SHM), // a doorbell without a ring
  ];
  for (const [b, recvBytes] of bad.flatMap((x) => [[x, 16], [x, 4096]] as const)) {
    const recA = new Recorder();
    const recB = new Recorder();
    const a = parser(recA, recvBytes).inb;
    const b2 = parser(recB, recvBytes).inb;
    for (const r of [[a, recA], [b2, recB]] as const) r[0].register('1:0:0', r[1].sink('1:0:0'));
    const good = (slot: number) => frame(KIND_COLL, 0, 0, slot, bytes(6, slot));
    push(a, concat(encodeAck(Status.OK, PEER), good(0)));
    push(b2, concat(encodeAck(Status.OK, PEER), good(0)));
    push(a, concat(b, good(1), b, header(KIND_BYE, 0)));
    push(b2, concat(good(1), good(2)));
    push(a, good(3));
    assert.is(recA.malformed.length, 1, 'reported once');
    assert.is(recA.got.length, 1, 'nothing after the bad header reaches a sink');
    assert.is(recA.byes, 0, 'a goodbye after it is not parsed either');
    assert.equal(recB.malformed, []);
    assert.is(recB.got.length, 3);
  }
});

// ---- through a real mesh -----------------------------------------------------------------------

let store: TcpStore;

test.before(async () => {
  store = await TcpStore.create({ port: 0, isServer: true, timeoutMs: 10_000 });
});

test.after(async () => {
  await store.close();
});

/** Resolves when `s` has closed. */
const closed = (s: net.Socket) => new Promise<void>((resolve) => (s.destroyed ? resolve() : s.once('close', () => resolve())));

test('in a mesh, a peer that sends a malformed header loses its connections only; the other peer keeps delivering', async () => {
  const groupName = 'inbound-mesh';
  const framing = { chunkBytes: 4096, smallBytes: 1024 };
  const opts = (rank: number) => ({
    store, rank, worldSize: 3, groupName, epoch: 0, host: '127.0.0.1', port: 0, timeoutMs: 10_000,
    recvBufferBytes: 4096, framing, transport: 'tcp' as const, shmRingBytes: 1 << 16, shmMinBytes: 8192, maxFrameBytes: 1 << 20,
  });
  // Rank 1 is made by hand: it listens, answers every HELLO with an ACK and dials the others.
  const accepted = new Map<number, net.Socket>();
  const dialed: net.Socket[] = [];
  const server = net.createServer((s) => {
    s.write(encodeChallenge(Buffer.alloc(32)));
    s.once('data', (d) => {
      const rank = d.readUInt32LE(8);
      accepted.set(rank, s);
      // A rank of this job (no secret here) signs its ACK over the HELLO's MAC.
      s.write(signAck(undefined, encodeAck(Status.OK, 1), d.subarray(d.length - 32)));
    });
    s.on('error', () => {});
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  await store.set(`groupcomm/cpu/${groupName}/0/addr/1`, `127.0.0.1:${(server.address() as net.AddressInfo).port}`);
  const meshes = [Mesh.connect(opts(0)), Mesh.connect(opts(2))];
  for (const r of [0, 2]) {
    const [host, port] = Buffer.from(await store.get(`groupcomm/cpu/${groupName}/0/addr/${r}`)).toString().split(':');
    const s = net.connect(Number(port), host);
    s.on('error', () => {});
    // The CHALLENGE, answered with a signed HELLO; then the ACK.
    const challenge = await new Promise<Buffer>((res) => s.once('data', res));
    s.on('data', () => {});
    const hello = encodeHello({ rank: 1, worldSize: 3, epoch: 0, name: groupName, ...framing, toRank: r, maxFrameBytes: 1 << 20 });
    signHello(undefined, hello, challenge.subarray(8, 40));
    s.write(hello);
    dialed[r] = s;
  }
  const [m0, m2] = await Promise.all(meshes);
  try {
    const lost: GroupcommError[] = [];
    m0.onLost((e) => lost.push(e));
    // Rank 1 writes a header declaring 2^40 bytes (above the 1 MiB this rank accepts, and what
    // once made a Node rank exit allocating it) on the connection rank 0 reads from it.
    accepted.get(0)!.write(header(KIND_COLL, 2 ** 40));
    await Promise.all([closed(accepted.get(0)!), closed(dialed[0])]);
    assert.is(lost.length, 1);
    assert.ok(isGroupcommError(lost[0], ErrorCode.PROTOCOL), lost[0].message);
    assert.is(lost[0].peerRank, 1);
    assert.match(lost[0].message, /protocol error.*negotiated maximum/);
    // Rank 1's connections with rank 2, and rank 2's with rank 0, are still up and carry frames.
    assert.not.ok(accepted.get(2)!.destroyed || dialed[2].destroyed);
    const got = new Promise<Uint8Array>((resolve, reject) => {
      setTimeout(() => reject(new Error('no frame from rank 2 within 5 s')), 5000).unref();
      m0.register(2, '1:0:0', { dest: () => null, done: (_slot, buf) => resolve(buf), fail: reject });
    });
    m2.send(0, { kind: KIND_COLL, tag: 0, seq: 0, slot: 0 }, Uint8Array.of(1, 2, 3), {}, () => {});
    assert.equal([...(await got)], [1, 2, 3]);
  } finally {
    m0.close();
    m2.close();
    for (const s of [...accepted.values(), ...dialed]) s?.destroy();
    server.close();
  }
});

test.run();
