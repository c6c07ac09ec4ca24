/**
 * The inbound frame parser (host/cpu/link/inbound.ts), the cases cpu_inbound leaves out: the
 * CHALLENGE that opens a dialed stream and a handshake restarted, frames that are skipped (ping,
 * goodbye and verdict payloads), every way a frame's sink can refuse it (fingerprint, dest that
 * throws or has another length, discarded keys), a sink registered while its frame arrives,
 * doorbells (closed ring, bad sizes and positions, consume), and stray collective frames.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { DIRECT_READ_MIN, Inbound, type InboundEvents, type RingSource } from '../../host/cpu/link/inbound.js';
import type { Sink } from '../../host/cpu/link/sink.js';
import {
  ACK_SIZE, CHALLENGE_SIZE, DOORBELL_SIZE, encodeAck, HEADER_SIZE, KIND_BYE, KIND_COLL, KIND_P2P, KIND_PING, KIND_SHM, KIND_VERDICT, Status, writeHeader,
} from '../../host/cpu/wire.js';
import { ErrorCode, protocolError, type GroupcommError } from '../../host/base/errors.js';

const PEER = 1;
const ACK = encodeAck(Status.OK, PEER);

function frame(kind: number, tag: number, seq: number, slot: number, payload: Uint8Array | number, flags = 0): Uint8Array {
  const body = typeof payload === 'number' ? new Uint8Array(payload) : payload;
  const b = new Uint8Array(HEADER_SIZE + body.byteLength);
  writeHeader(b, 0, { kind, tag, seq, slot }, body.byteLength, flags);
  b.set(body, HEADER_SIZE);
  return b;
}
const concat = (...parts: Uint8Array[]) => new Uint8Array(Buffer.concat(parts));
const bytes = (n: number, seed: number) => Uint8Array.from({ length: n }, (_, i) => (i * 31 + seed) & 0xff);
const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

function doorbell(seq: number, slot: number, pos: number, n: number, tag = 0, size = DOORBELL_SIZE): Uint8Array {
  const body = Buffer.alloc(size);
  if (size >= 16) { body.writeDoubleLE(pos, 0); body.writeDoubleLE(n, 8); }
  return frame(KIND_COLL, tag, seq, slot, body, KIND_SHM);
}

/** Everything the parser reports, as strings in order. */
class Log {
  out: string[] = [];
  challenges: string[] = [];
  events(withChallenge = false, withVerdict = true): InboundEvents {
    const e: InboundEvents = {
      ack: (b) => { this.out.push(`ack ${b.byteLength}`); },
      bye: () => { this.out.push('bye'); },
      malformed: (why) => { this.out.push(`malformed ${why}`); },
    };
    if (withVerdict) e.verdict = (seq, fp) => { this.out.push(`verdict ${seq} ${fp}`); };
    if (withChallenge) e.challenge = (b) => { this.challenges.push(hex(b)); this.out.push('challenge'); };
    return e;
  }
  sink(name: string, o: { dest?: (slot: number, n: number) => Uint8Array | null; consume?: (slot: number, src: Uint8Array) => boolean; fingerprint?: number } = {}): Sink {
    return {
      dest: o.dest ?? (() => null),
      consume: o.consume,
      done: (slot, buf) => { this.out.push(`${name} ${slot} ${hex(buf)}`); },
      fail: (e: GroupcommError) => { this.out.push(`${name} fail ${e.code} ${e.peerRank} ${e.message}`); },
      fingerprint: o.fingerprint,
    };
  }
}

function feedAll(inb: Inbound, chunk: Uint8Array, readBytes = Infinity): void {
  let i = 0;
  while (i < chunk.byteLength) {
    const b = inb.nextBuffer();
    const k = Math.min(b.byteLength, chunk.byteLength - i, readBytes);
    b.set(chunk.subarray(i, i + k));
    inb.feed(b, k);
    i += k;
  }
}

function ring(payloads: Map<number, Uint8Array>, open = true): RingSource & { released: string[]; asked: string[] } {
  const released: string[] = [];
  const asked: string[] = [];
  return {
    open, released, asked,
    at: (pos, n) => { asked.push(`${pos}+${n}`); return payloads.get(pos)?.byteLength === n ? payloads.get(pos) : undefined; },
    release: (pos, n) => { released.push(`${pos}+${n}`); },
  };
}

test('a dialed stream opens with the CHALLENGE, then the ACK, at any split; a restart before the ACK expects both again', () => {
  const challenge = bytes(CHALLENGE_SIZE, 5);
  const stream = concat(challenge, ACK, frame(KIND_P2P, 3, 0, 0, bytes(2, 1)));
  for (let k = 0; k <= stream.byteLength; k++) {
    for (const readBytes of [Infinity, 1, 7]) {
      const log = new Log();
      const inb = new Inbound(PEER, new Uint8Array(64), log.events(true));
      inb.register('2:3:0', log.sink('p'));
      feedAll(inb, stream.subarray(0, k), readBytes);
      feedAll(inb, stream.subarray(k), readBytes);
      assert.equal(log.out, ['challenge', `ack ${ACK_SIZE}`, `p 0 ${hex(bytes(2, 1))}`], `split ${k}, reads of ${readBytes}`);
      assert.equal(log.challenges, [hex(challenge)]);
      assert.is(inb.bytesIn, stream.byteLength);
      assert.is(inb.acked, true);
    }
  }
  // The connection dropped halfway through the ACK: the next one starts with its own CHALLENGE.
  const log = new Log();
  const inb = new Inbound(PEER, new Uint8Array(64), log.events(true));
  feedAll(inb, concat(challenge, ACK.subarray(0, 5)));
  inb.restartHandshake();
  const second = bytes(CHALLENGE_SIZE, 9);
  feedAll(inb, concat(second, ACK));
  assert.equal(log.challenges, [hex(challenge), hex(second)]);
  assert.equal(log.out, ['challenge', 'challenge', `ack ${ACK_SIZE}`]);
  // After the ACK a restart changes nothing: the next bytes are frames.
  inb.restartHandshake();
  inb.register('2:3:0', log.sink('p'));
  feedAll(inb, frame(KIND_P2P, 3, 0, 0, bytes(3, 2)));
  assert.equal(log.out.slice(3), [`p 0 ${hex(bytes(3, 2))}`]);
  // Without a challenge event, a restart still expects no CHALLENGE (the stream starts with the ACK).
  const plain = new Log();
  const p = new Inbound(PEER, new Uint8Array(64), plain.events());
  feedAll(p, ACK.subarray(0, 3));
  p.restartHandshake();
  feedAll(p, ACK);
  assert.equal(plain.out, [`ack ${ACK_SIZE}`]);
});

test('ping, goodbye and verdict frames: their payloads are skipped whatever their length; the verdict names seq and tag', () => {
  for (const readBytes of [Infinity, 1, 5]) {
    const log = new Log();
    const inb = new Inbound(PEER, new Uint8Array(16), log.events());
    inb.register('2:4:0', log.sink('p'));
    feedAll(inb, concat(ACK,
      frame(KIND_PING, 0, 0, 0, bytes(9, 1)),
      frame(KIND_VERDICT, 0xabcdef, 17, 0, bytes(5, 2)),
      frame(KIND_P2P, 4, 0, 1, bytes(2, 3)),
      frame(KIND_BYE, 0, 0, 0, bytes(3, 4)),
      frame(KIND_P2P, 4, 0, 2, bytes(1, 5))), readBytes);
    assert.equal(log.out, [`ack ${ACK_SIZE}`, `verdict 17 ${0xabcdef}`, `p 1 ${hex(bytes(2, 3))}`, 'bye', `p 2 ${hex(bytes(1, 5))}`], `reads of ${readBytes}`);
  }
  const log = new Log();
  const inb = new Inbound(PEER, new Uint8Array(16), log.events(false, false));
  feedAll(inb, concat(ACK, frame(KIND_VERDICT, 1, 2, 0, 0), frame(KIND_BYE, 0, 0, 0, 0)));
  assert.equal(log.out, [`ack ${ACK_SIZE}`, 'bye'], 'a verdict without a verdict event is dropped');
});

test('a frame\'s sink refuses it: another fingerprint, a dest that throws or has another length; the payload is skipped', () => {
  const cases: [string, (l: Log) => Sink, RegExp][] = [
    ['fingerprint', (l) => l.sink('s', { fingerprint: 5, dest: (_s, n) => new Uint8Array(n) }), /^s fail ERR_GROUPCOMM_MISMATCH 1 rank 1 made a different call for collective #3/],
    ['dest throws', (l) => l.sink('s', { dest: () => { throw protocolError('no room', { peerRank: 1 }); } }), /^s fail ERR_GROUPCOMM_PROTOCOL 1 no room$/],
    ['dest length', (l) => l.sink('s', { dest: (_s, n) => new Uint8Array(n + 1) }), /^s fail ERR_GROUPCOMM_PROTOCOL 1 frame 1:0:3 slot 2 from rank 1 has (\d+) bytes, expected \d+/],
  ];
  for (const [what, mk, re] of cases) {
    for (const len of [6, DIRECT_READ_MIN + 6]) {
      const log = new Log();
      const inb = new Inbound(PEER, new Uint8Array(32), log.events());
      const payload = bytes(len, 7);
      const sink = mk(log);
      inb.register('1:0:3', sink);
      inb.register('2:9:0', log.sink('next'));
      feedAll(inb, concat(ACK, frame(KIND_COLL, 6, 3, 2, payload), frame(KIND_P2P, 9, 0, 0, bytes(2, 1))));
      assert.is(log.out.length, 3, `${what}, ${len} bytes: ${log.out.join(' | ')}`);
      assert.match(log.out[1], re, what);
      if (what === 'dest length') assert.ok(log.out[1].includes(`has ${len} bytes, expected ${len + 1}`));
      assert.is(log.out[2], `next 0 ${hex(bytes(2, 1))}`, `${what}: the next frame is parsed`);
      assert.is(inb.nextBuffer().byteLength, 32, `${what}: a refused frame is never read in place`);
    }
  }
});

test('a discarded key\'s frames are skipped, before and after; a key not registered is kept until it is', () => {
  const log = new Log();
  const inb = new Inbound(PEER, new Uint8Array(32), log.events());
  feedAll(inb, ACK);
  feedAll(inb, frame(KIND_P2P, 5, 0, 0, bytes(3, 1)));
  inb.discard('2:5:0');
  feedAll(inb, frame(KIND_P2P, 5, 0, 1, bytes(3, 2)));
  inb.register('2:5:0', log.sink('gone'));
  assert.equal(log.out, [`ack ${ACK_SIZE}`], 'neither the kept frame nor the later one');
  inb.register('2:6:0', log.sink('kept'));
  inb.unregister('2:6:0');
  feedAll(inb, frame(KIND_P2P, 6, 0, 0, bytes(2, 3)));
  assert.equal(log.out, [`ack ${ACK_SIZE}`], 'unregistered: kept, not delivered');
  inb.register('2:6:0', log.sink('kept'));
  assert.equal(log.out.slice(1), [`kept 0 ${hex(bytes(2, 3))}`]);
});

test('a sink registered while its frame is arriving gets it at the end, copied into its dest (or the side buffer)', () => {
  for (const withDest of [true, false]) {
    const log = new Log();
    const inb = new Inbound(PEER, new Uint8Array(8), log.events());
    const payload = bytes(20, 4);
    const f = frame(KIND_P2P, 2, 0, 1, payload);
    feedAll(inb, concat(ACK, f.subarray(0, HEADER_SIZE + 5)));
    const dests: Uint8Array[] = [];
    inb.register('2:2:0', log.sink('late', { dest: withDest ? (_s, n) => { const d = new Uint8Array(n); dests.push(d); return d; } : undefined }));
    feedAll(inb, f.subarray(HEADER_SIZE + 5));
    assert.equal(log.out.slice(1), [`late 1 ${hex(payload)}`]);
    assert.is(dests.length, withDest ? 1 : 0);
  }
});

test('a frame within the limit that cannot be allocated ends the stream as malformed; later bytes are ignored', () => {
  const log = new Log();
  const inb = new Inbound(PEER, new Uint8Array(32), log.events(), Number.MAX_SAFE_INTEGER);
  const h = new Uint8Array(HEADER_SIZE);
  writeHeader(h, 0, { kind: KIND_P2P, tag: 1, seq: 0, slot: 0 }, 2 ** 50);
  feedAll(inb, concat(ACK, h, frame(KIND_BYE, 0, 0, 0, 0)));
  assert.is(log.out.length, 2);
  assert.match(log.out[1], /^malformed cannot allocate 1125899906842624 bytes for a frame/);
  // The limit itself is accepted (a frame exactly at maxFrameBytes is parsed).
  const at = new Log();
  const p = new Inbound(PEER, new Uint8Array(32), at.events(), 4);
  p.register('2:1:0', at.sink('p'));
  feedAll(p, concat(ACK, frame(KIND_P2P, 1, 0, 0, bytes(4, 1)), frame(KIND_P2P, 1, 0, 1, bytes(5, 1))));
  assert.equal(at.out.slice(1, 2), [`p 0 ${hex(bytes(4, 1))}`]);
  assert.match(at.out[2], /^malformed frame length 5 is above the negotiated maximum of 4 bytes/);
});

test('doorbells: payload copied out of the ring to the dest, a side buffer, or consumed in place; ring space freed each time', () => {
  const a = bytes(6, 1), b = bytes(4, 2), c = bytes(3, 3), d = bytes(5, 4);
  const r = ring(new Map([[100, a], [200, b], [300, c], [400, d], [500, new Uint8Array(0)]]));
  const log = new Log();
  const inb = new Inbound(PEER, new Uint8Array(64), log.events());
  inb.ring = r;
  const dests: Uint8Array[] = [];
  const consumed: string[] = [];
  inb.register('1:0:1', log.sink('s', {
    dest: (slot, n) => { if (slot !== 0) return null; const x = new Uint8Array(n); dests.push(x); return x; },
    consume: (slot, src) => { if (slot !== 2) return false; consumed.push(hex(src)); return true; },
  }));
  feedAll(inb, concat(ACK, doorbell(1, 0, 100, 6), doorbell(1, 1, 200, 4), doorbell(1, 2, 300, 3), doorbell(2, 0, 400, 5), doorbell(1, 3, 500, 0)));
  assert.equal(log.out.slice(1), [`s 0 ${hex(a)}`, `s 1 ${hex(b)}`, 's 3 ']);
  assert.equal(consumed, [hex(c)]);
  assert.equal(r.released, ['100+6', '200+4', '300+3', '400+5', '500+0']);
  assert.equal([...dests[0]], [...a]);
  // Kept for a later operation in a copy of its own (the ring view is freed): handed over on registration.
  d.fill(0);
  inb.register('1:0:2', log.sink('later'));
  assert.equal(log.out.slice(4), [`later 0 ${hex(bytes(5, 4))}`]);
});

test('doorbells refused by their sink (fingerprint, throwing consume or dest, another length) or discarded: freed, not delivered', () => {
  const payload = bytes(6, 1);
  const cases: [string, (l: Log) => Sink, RegExp][] = [
    ['fingerprint', (l) => l.sink('s', { fingerprint: 9 }), /^s fail ERR_GROUPCOMM_MISMATCH 1 /],
    ['consume throws', (l) => l.sink('s', { consume: () => { throw protocolError('consume', { peerRank: 1 }); } }), /^s fail ERR_GROUPCOMM_PROTOCOL 1 consume$/],
    ['dest throws', (l) => l.sink('s', { dest: () => { throw protocolError('dest', { peerRank: 1 }); } }), /^s fail ERR_GROUPCOMM_PROTOCOL 1 dest$/],
    ['dest length', (l) => l.sink('s', { dest: () => new Uint8Array(7) }), /^s fail ERR_GROUPCOMM_PROTOCOL 1 frame 1:0:1 slot 0 from rank 1 has 6 bytes, expected 7/],
  ];
  for (const [what, mk, re] of cases) {
    const log = new Log();
    const inb = new Inbound(PEER, new Uint8Array(64), log.events());
    const r = ring(new Map([[8, payload], [16, bytes(2, 5)]]));
    inb.ring = r;
    inb.register('1:0:1', mk(log));
    inb.register('1:0:2', log.sink('next'));
    feedAll(inb, concat(ACK, doorbell(1, 0, 8, 6, 3), doorbell(2, 0, 16, 2, 0)));
    assert.is(log.out.length, 3, `${what}: ${log.out.join(' | ')}`);
    assert.match(log.out[1], re, what);
    assert.is(log.out[2], `next 0 ${hex(bytes(2, 5))}`, what);
    assert.equal(r.released, ['8+6', '16+2'], what);
  }
  const log = new Log();
  const inb = new Inbound(PEER, new Uint8Array(64), log.events());
  const r = ring(new Map([[8, payload]]));
  inb.ring = r;
  inb.discard('1:0:1');
  feedAll(inb, concat(ACK, doorbell(1, 0, 8, 6)));
  inb.register('1:0:1', log.sink('gone'));
  assert.equal(log.out, [`ack ${ACK_SIZE}`]);
  assert.equal(r.released, ['8+6']);
});

test('doorbells: a closed ring ignores them; a bad size, position or length, or no room for a copy, is malformed', () => {
  const closed = ring(new Map([[8, bytes(6, 1)]]), false);
  const log = new Log();
  const inb = new Inbound(PEER, new Uint8Array(64), log.events());
  inb.ring = closed;
  inb.register('1:0:1', log.sink('s'));
  feedAll(inb, concat(ACK, doorbell(1, 0, 8, 6), frame(KIND_COLL, 0, 1, 1, bytes(2, 2))));
  assert.equal(log.out.slice(1), [`s 1 ${hex(bytes(2, 2))}`]);
  assert.equal([closed.asked, closed.released], [[], []]);
  const bad: [string, Uint8Array, RegExp, string[]][] = [
    ['8-byte doorbell', doorbell(1, 0, 8, 6, 0, 8), /^malformed doorbell of 8 bytes$/, []],
    ['24-byte doorbell', doorbell(1, 0, 8, 6, 0, 24), /^malformed doorbell of 24 bytes$/, []],
    ['negative length', doorbell(1, 0, 8, -1), /^malformed doorbell for -1 bytes at ring position 8 is outside the ring$/, []],
    ['fractional length', doorbell(1, 0, 8, 1.5), /outside the ring/, []],
    ['fractional position', doorbell(1, 0, 8.5, 6), /outside the ring/, []],
    ['NaN position', doorbell(1, 0, NaN, 6), /outside the ring/, []],
    ['unknown position', doorbell(1, 0, 64, 6), /^malformed doorbell for 6 bytes at ring position 64 is outside the ring$/, ['64+6']],
  ];
  for (const [what, bell, re, asked] of bad) {
    const l = new Log();
    const p = new Inbound(PEER, new Uint8Array(64), l.events());
    const r = ring(new Map([[8, bytes(6, 1)]]));
    p.ring = r;
    p.register('1:0:1', l.sink('s'));
    feedAll(p, concat(ACK, bell, frame(KIND_COLL, 0, 1, 1, bytes(2, 2)), frame(KIND_BYE, 0, 0, 0, 0)));
    assert.is(l.out.length, 2, `${what}: ${l.out.join(' | ')}`);
    assert.match(l.out[1], re, what);
    assert.equal(r.asked, asked, what);
    assert.equal(r.released, [], what);
  }
  // A ring that hands out a payload the parser cannot copy (no sink dest): malformed, not thrown.
  const l = new Log();
  const p = new Inbound(PEER, new Uint8Array(64), l.events());
  const released: string[] = [];
  p.ring = { open: true, at: () => new Uint8Array(1), release: (pos, n) => { released.push(`${pos}+${n}`); } };
  feedAll(p, concat(ACK, doorbell(1, 0, 0, 2 ** 50)));
  assert.match(l.out[1], /^malformed cannot allocate 1125899906842624 bytes/);
  assert.equal(released, []);
});

test('stray collective frames: one kept for an earlier collective fails the next collective to register, or the one registered', () => {
  // Kept first, then a later collective registers: it fails naming the earlier one.
  const log = new Log();
  const inb = new Inbound(PEER, new Uint8Array(64), log.events());
  feedAll(inb, concat(ACK, frame(KIND_COLL, 0, 2, 0, bytes(2, 1)), frame(KIND_P2P, 4, 0, 0, bytes(1, 1)), frame(KIND_COLL, 0, 9, 0, bytes(1, 2))));
  inb.register('2:4:0', log.sink('p2p', { fingerprint: 4 }));
  inb.register('1:0:5', log.sink('c5', { fingerprint: 7 }));
  assert.is(log.out.length, 3, log.out.join(' | '));
  assert.is(log.out[1], `p2p 0 ${hex(bytes(1, 1))}`, 'a point-to-point key is never a stray');
  assert.match(log.out[2], /^c5 fail ERR_GROUPCOMM_MISMATCH 1 rank 1 sent a frame for collective #2 .*found at collective #5$/);
  inb.register('1:0:2', log.sink('c2'));
  assert.is(log.out.length, 3, 'the stray frame was dropped');
  inb.register('1:0:9', log.sink('c9', { fingerprint: 0 }));
  assert.is(log.out[3], `c9 0 ${hex(bytes(1, 2))}`, 'a later collective\'s frame is not a stray');
  // Without a fingerprint (not a checked collective) nothing is looked for.
  const plain = new Log();
  const q = new Inbound(PEER, new Uint8Array(64), plain.events());
  feedAll(q, concat(ACK, frame(KIND_COLL, 0, 1, 0, bytes(1, 3))));
  q.register('1:0:4', plain.sink('c4'));
  q.register('1:0:1', plain.sink('c1'));
  assert.equal(plain.out.slice(1), [`c1 0 ${hex(bytes(1, 3))}`]);
  // Arriving while a later collective is registered: that one fails; an earlier or a p2p one does not.
  for (const via of ['socket', 'ring'] as const) {
    const l = new Log();
    const p = new Inbound(PEER, new Uint8Array(64), l.events());
    p.ring = ring(new Map([[0, bytes(3, 4)]]));
    p.register('2:0:7', l.sink('p2p'));
    p.register('1:0:1', l.sink('c1'));
    feedAll(p, concat(ACK, via === 'socket' ? frame(KIND_COLL, 0, 2, 0, bytes(3, 4)) : doorbell(2, 0, 0, 3)));
    assert.is(l.out.length, 1, `${via}: kept while only earlier collectives are registered`);
    p.register('1:0:6', l.sink('c6'));
    feedAll(p, via === 'socket' ? frame(KIND_COLL, 0, 3, 0, bytes(3, 4)) : doorbell(3, 0, 0, 3));
    assert.is(l.out.length, 2, via);
    assert.match(l.out[1], /^c6 fail ERR_GROUPCOMM_MISMATCH 1 rank 1 sent a frame for collective #3 .*found at collective #6$/, via);
    p.register('1:0:2', l.sink('c2'));
    assert.is(l.out[2], `c2 0 ${hex(bytes(3, 4))}`, `${via}: the frame kept before is still delivered`);
  }
});

test('routing details: socket frames never go to consume, dest is asked once per frame, frames kept for one key all arrive in order', () => {
  const log = new Log();
  const inb = new Inbound(PEER, new Uint8Array(64), log.events());
  inb.ring = ring(new Map([[0, bytes(4, 9)]]));
  const asked: string[] = [];
  inb.register('2:1:0', log.sink('s', {
    dest: (slot, n) => { asked.push(`dest ${slot}`); return new Uint8Array(n); },
    consume: (slot) => { asked.push(`consume ${slot}`); return slot === 5; },
  }));
  inb.register('1:0:1', log.sink('r', { dest: (slot, n) => { asked.push(`rdest ${slot}`); return new Uint8Array(n); } }));
  feedAll(inb, concat(ACK, frame(KIND_P2P, 1, 0, 5, bytes(3, 1)), doorbell(1, 0, 0, 4), frame(KIND_P2P, 2, 0, 0, bytes(2, 2)), frame(KIND_P2P, 2, 0, 1, bytes(2, 3))));
  assert.equal(asked, ['dest 5', 'rdest 0'], 'a socket frame is read into dest, not offered to consume; one dest per frame');
  assert.equal(log.out.slice(1), [`s 5 ${hex(bytes(3, 1))}`, `r 0 ${hex(bytes(4, 9))}`]);
  inb.register('2:2:0', log.sink('k'));
  assert.equal(log.out.slice(3), [`k 0 ${hex(bytes(2, 2))}`, `k 1 ${hex(bytes(2, 3))}`], 'both kept frames, in order');
  // Pings are neither kept nor delivered, whatever registers later.
  feedAll(inb, concat(frame(KIND_PING, 0, 0, 0, bytes(2, 1)), frame(KIND_PING, 0, 0, 0, 0)));
  inb.register(`${KIND_PING}:0:0`, log.sink('ping'));
  assert.is(log.out.length, 5);
  // A doorbell without a ring is named as such.
  const l = new Log();
  const q = new Inbound(PEER, new Uint8Array(64), l.events());
  feedAll(q, concat(ACK, doorbell(1, 0, 0, 4)));
  assert.equal(l.out.slice(1), ['malformed doorbell without a shared-memory ring']);
});

test('a doorbell whose dest is shorter than its payload fails the sink (nothing is copied), and the stream goes on', () => {
  const log = new Log();
  const inb = new Inbound(PEER, new Uint8Array(64), log.events());
  const r = ring(new Map([[0, bytes(6, 1)], [8, bytes(2, 2)]]));
  inb.ring = r;
  inb.register('1:0:1', log.sink('s', { dest: () => new Uint8Array(5) }));
  feedAll(inb, concat(ACK, doorbell(1, 0, 0, 6), doorbell(1, 1, 8, 2)));
  assert.match(log.out[1], /^s fail ERR_GROUPCOMM_PROTOCOL 1 frame 1:0:1 slot 0 from rank 1 has 6 bytes, expected 5/);
  assert.equal(r.released, ['0+6', '8+2']);
});

test('stray lookups: the earliest kept collective is found past later ones, own frames and point-to-point keys', () => {
  // Kept: this collective's own frame, a later one, a point-to-point frame, then an earlier one.
  const log = new Log();
  const inb = new Inbound(PEER, new Uint8Array(64), log.events());
  feedAll(inb, concat(ACK, frame(KIND_COLL, 7, 5, 0, bytes(1, 1)), frame(KIND_COLL, 0, 9, 0, bytes(1, 2)),
    frame(KIND_P2P, 4, 0, 0, bytes(1, 3)), frame(KIND_COLL, 0, 2, 0, bytes(1, 4))));
  inb.register('1:0:5', log.sink('c5', { fingerprint: 7 }));
  assert.is(log.out.length, 2, log.out.join(' | '));
  assert.match(log.out[1], /^c5 fail ERR_GROUPCOMM_MISMATCH 1 rank 1 sent a frame for collective #2 .*found at collective #5$/, 'the earlier collective, nothing else');
  // No stray: own frames are handed over (a later collective and a p2p frame are kept besides).
  const ok = new Log();
  const q = new Inbound(PEER, new Uint8Array(64), ok.events());
  feedAll(q, concat(ACK, frame(KIND_COLL, 7, 5, 0, bytes(1, 1)), frame(KIND_COLL, 0, 9, 0, bytes(1, 2)), frame(KIND_P2P, 4, 9, 0, bytes(1, 3))));
  q.register('1:0:5', ok.sink('c5', { fingerprint: 7 }));
  assert.equal(ok.out.slice(1), [`c5 0 ${hex(bytes(1, 1))}`]);
  // A point-to-point key is never looked up as a collective, even with a fingerprint and a seq past a kept collective.
  const pl = new Log();
  const y = new Inbound(PEER, new Uint8Array(64), pl.events());
  feedAll(y, concat(ACK, frame(KIND_COLL, 0, 3, 0, bytes(1, 5)), frame(KIND_P2P, 4, 9, 0, bytes(1, 3))));
  y.register('2:4:9', pl.sink('p', { fingerprint: 4 }));
  assert.equal(pl.out.slice(1), [`p 0 ${hex(bytes(1, 3))}`]);
  // A point-to-point frame kept while a collective is registered is no stray.
  const r = new Log();
  const x = new Inbound(PEER, new Uint8Array(64), r.events());
  x.register('1:0:6', r.sink('c6'));
  feedAll(x, concat(ACK, frame(KIND_P2P, 4, 3, 0, bytes(1, 6))));
  x.register('2:4:3', r.sink('p'));
  assert.equal(r.out.slice(1), [`p 0 ${hex(bytes(1, 6))}`]);
});

test('a large frame completed by a direct read is delivered at once; reads go in place only while DIRECT_READ_MIN or more is to come', () => {
  for (const len of [DIRECT_READ_MIN - 1, DIRECT_READ_MIN, DIRECT_READ_MIN + 1]) {
    const log = new Log();
    const recv = new Uint8Array(64);
    const inb = new Inbound(PEER, recv, log.events());
    const target = new Uint8Array(len);
    inb.register('2:1:0', log.sink('s', { dest: () => target }));
    const payload = bytes(len, 3);
    feedAll(inb, concat(ACK, frame(KIND_P2P, 1, 0, 0, payload).subarray(0, HEADER_SIZE)));
    const b = inb.nextBuffer();
    if (len >= DIRECT_READ_MIN) {
      assert.is(b.buffer, target.buffer, `${len}: read in place`);
      assert.is(b.byteLength, len);
      b.set(payload);
      inb.feed(b, len);
      assert.is(log.out.length, 2, `${len}: delivered with the read that completed it`);
      assert.ok(Buffer.from(target).equals(Buffer.from(payload)));
    } else {
      assert.is(b, recv, `${len}: read into the receive buffer`);
    }
  }
});

test.run();
