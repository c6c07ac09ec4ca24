/**
 * The CPU group's wire format (host/cpu/wire.ts; byte tables in docs/cpu-group.md): each message
 * at its documented offsets, round trips, the challenge's refusals, the ACK's shm offer and its
 * name bound, frame headers with flags, and the status texts a refused rank reports.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  ACK_BODY, ACK_SIZE, CHALLENGE_SIZE, decodeAck, decodeChallenge, decodeHelloFixed, encodeAck, encodeChallenge, encodeHello, HEADER_SIZE,
  HELLO_FIXED, HELLO_TRAILER, KIND_COLL, KIND_P2P, KIND_SHM, MAC_BYTES, MAGIC, NONCE_BYTES, readHeader, SHM_NAME_BYTES, Status, statusText,
  VERSION, WANT_SHM, WANT_TCP, writeHeader,
} from '../../host/cpu/wire.js';

const nonce = (seed: number) => Uint8Array.from({ length: NONCE_BYTES }, (_, i) => (seed + i) & 0xff);

test('sizes: the fixed parts of each message', () => {
  assert.is(CHALLENGE_SIZE, 8 + NONCE_BYTES);
  assert.is(ACK_BODY, 80);
  assert.is(ACK_SIZE, 112);
  assert.is(HELLO_TRAILER, 76);
  assert.is(HEADER_SIZE, 24);
});

test('challenge: magic, version, nonce; a bad magic or version is refused with a reason', () => {
  // The nonce may be a view into a larger buffer: only its own bytes are sent.
  const big = new Uint8Array(100);
  big.set(nonce(9), 10);
  const b = encodeChallenge(big.subarray(10, 10 + NONCE_BYTES));
  assert.is(b.length, CHALLENGE_SIZE);
  assert.is(b.readUInt32LE(0), MAGIC);
  assert.is(b.readUInt16LE(4), VERSION);
  assert.equal([...b.subarray(8)], [...nonce(9)]);
  const d = decodeChallenge(new Uint8Array(b));
  assert.ok('nonce' in d);
  assert.equal([...(d as { nonce: Buffer }).nonce], [...nonce(9)]);
  // Decoding reads at the view's offset.
  const off = new Uint8Array(CHALLENGE_SIZE + 3);
  off.set(b, 3);
  assert.ok('nonce' in decodeChallenge(off.subarray(3)));
  const badMagic = Buffer.from(b);
  badMagic.writeUInt32LE(MAGIC + 1, 0);
  assert.match((decodeChallenge(badMagic) as { why: string }).why, 'bad magic');
  const badVersion = Buffer.from(b);
  badVersion.writeUInt16LE(VERSION + 1, 4);
  assert.match((decodeChallenge(badVersion) as { why: string }).why, `version ${VERSION + 1}, this rank ${VERSION}`);
});

test('hello: every field at its offset; the trailer after the name and host id; defaults', () => {
  const h = encodeHello({ rank: 3, worldSize: 8, epoch: 2.5, name: 'grp-é', chunkBytes: 2 ** 32 + 5, smallBytes: 4096,
    want: WANT_SHM, hostId: 'host-1', toRank: 6, maxFrameBytes: 2 ** 40, nonce: nonce(1) });
  const name = Buffer.from('grp-é');
  assert.is(h.length, HELLO_FIXED + name.length + 2 + 6 + HELLO_TRAILER);
  const f = decodeHelloFixed(h);
  assert.equal(f, { magic: MAGIC, version: VERSION, nameLen: name.length, rank: 3, worldSize: 8, epoch: 2.5, chunkBytes: 5, smallBytes: 4096 });
  assert.is(h.subarray(HELLO_FIXED, HELLO_FIXED + name.length).toString(), 'grp-é');
  let at = HELLO_FIXED + name.length;
  assert.is(h[at++], WANT_SHM);
  assert.is(h[at++], 6);
  assert.is(h.subarray(at, at + 6).toString(), 'host-1');
  at += 6;
  assert.is(h.readUInt32LE(at), 6);
  assert.is(h.readDoubleLE(at + 4), 2 ** 40);
  assert.equal([...h.subarray(at + 12, at + 12 + NONCE_BYTES)], [...nonce(1)]);
  assert.equal([...h.subarray(h.length - MAC_BYTES)], new Array(MAC_BYTES).fill(0), 'the MAC is left for the caller');
  // Defaults: TCP, no host id, toRank 0, no frame limit, a zero nonce.
  const d = encodeHello({ rank: 0, worldSize: 2, epoch: 0, name: 'g', chunkBytes: 1, smallBytes: 2 });
  assert.is(d.length, HELLO_FIXED + 1 + 2 + HELLO_TRAILER);
  assert.is(d[HELLO_FIXED + 1], WANT_TCP);
  assert.is(d[HELLO_FIXED + 2], 0);
  assert.is(d.readUInt32LE(HELLO_FIXED + 3), 0);
  assert.is(d.readDoubleLE(HELLO_FIXED + 7), 0);
  assert.ok(d.subarray(HELLO_FIXED + 3).every((x) => x === 0));
  // A host id is cut at 255 bytes (its length is one byte).
  const long = encodeHello({ rank: 0, worldSize: 2, epoch: 0, name: '', chunkBytes: 1, smallBytes: 2, hostId: 'x'.repeat(300) });
  assert.is(long[HELLO_FIXED + 1], 255);
  assert.is(long.length, HELLO_FIXED + 2 + 255 + HELLO_TRAILER);
});

test('ack: status and rank; the shm offer (ring bytes, name) or zeros; a name over 64 bytes is refused', () => {
  const a = encodeAck(Status.WRONG_EPOCH, 2 ** 32 - 1);
  assert.is(a.length, ACK_SIZE);
  assert.equal(decodeAck(a), { magic: MAGIC, version: VERSION, status: 4, rank: 2 ** 32 - 1, ringBytes: 0, shmName: '' });
  assert.ok(a.subarray(12).every((x) => x === 0));
  const s = encodeAck(Status.OK, 1, { ringBytes: 1 << 20, name: '/gc-ring-ü' });
  assert.equal(decodeAck(s), { magic: MAGIC, version: VERSION, status: 0, rank: 1, ringBytes: 1 << 20, shmName: '/gc-ring-ü' });
  // A name of exactly 64 bytes has no terminating zero.
  const full = 'n'.repeat(SHM_NAME_BYTES);
  const f = encodeAck(Status.OK, 0, { ringBytes: 8, name: full });
  assert.is(decodeAck(f).shmName, full);
  // Decoding reads at the view's offset.
  const off = new Uint8Array(ACK_SIZE + 5);
  off.set(s, 5);
  assert.equal(decodeAck(off.subarray(5)), decodeAck(s));
  assert.throws(() => encodeAck(Status.OK, 0, { ringBytes: 8, name: full + 'n' }), /longer than 64 bytes/);
});

test('frame header: kind (with flags), tag, seq, slot, a double length; at an offset', () => {
  const b = new Uint8Array(40);
  writeHeader(b, 8, { kind: KIND_P2P, tag: 0x01020304, seq: 7, slot: 3 }, 2 ** 33 + 1, KIND_SHM);
  assert.ok(b.subarray(0, 8).every((x) => x === 0));
  assert.equal(readHeader(b, 8), { kind: KIND_P2P | KIND_SHM, tag: 0x01020304, seq: 7, slot: 3, length: 2 ** 33 + 1 });
  const dv = new DataView(b.buffer);
  assert.is(dv.getUint32(8, true), 0x102);
  assert.equal([...b.subarray(12, 16)], [4, 3, 2, 1], 'little-endian');
  assert.is(dv.getFloat64(24, true), 2 ** 33 + 1);
  writeHeader(b, 0, { kind: KIND_COLL, tag: -1, seq: 2 ** 32 + 4, slot: 0 }, 0);
  assert.equal(readHeader(b, 0), { kind: KIND_COLL, tag: 2 ** 32 - 1, seq: 4, slot: 0, length: 0 });
});

test('status texts: each code, and an unknown one by number', () => {
  assert.equal([0, 1, 2, 3, 4, 5, 6, 7, 8, 9].map(statusText), [
    'ok', 'bad magic', 'unsupported version', 'wrong group name', 'wrong epoch', 'rank out of range', 'rank already connected',
    'world size differs', 'chunkBytes / smallBytes differ', 'authentication failed (different GROUPCOMM_SECRET?)',
  ]);
  assert.equal(Status, { OK: 0, BAD_MAGIC: 1, BAD_VERSION: 2, WRONG_GROUP: 3, WRONG_EPOCH: 4, BAD_RANK: 5, DUPLICATE: 6, WRONG_SIZE: 7, WRONG_TUNING: 8, BAD_AUTH: 9 });
  assert.is(statusText(42), 'status 42');
});

test.run();
