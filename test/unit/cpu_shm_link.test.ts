// The shared-memory link (host/cpu/link/shm.ts) on its own, over a loopback socket pair and a
// real segment, no mesh: the peer's answer to the offer, doorbells gathered per turn (at most 64
// a write) in order with the frames that still go over TCP, frames waiting for ring space (and
// the frames behind them) until a wake-up, and RingReader's wake-ups.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import fs from 'node:fs';
import net from 'node:net';
import { RingReader, ShmLink } from '../../host/cpu/link/shm.js';
import { COPY_BELOW, SidePool } from '../../host/cpu/link/sink.js';
import { RecvRing, Segment } from '../../host/cpu/shm.js';
import { DOORBELL_SIZE, HEADER_SIZE, KIND_BYE, KIND_SHM, readHeader } from '../../host/cpu/wire.js';
import { linkCase, opened, socketPair } from '../helpers/link_cases.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const R = 1 << 16;

let shmOk = true;
try { Segment.create(R).close(); } catch (e) {
  shmOk = false;
  console.log(`  (shared memory unavailable, the cases are skipped: ${(e as Error).message})`);
}
/** Every case needs real segments: skipped (and counted as skipped) where there are none. */
const t = linkCase(shmOk);

const pair = socketPair;

/** Parses what the peer reads: plain frames (with payload) and doorbells (payload read from the ring). */
class Reader {
  buf = Buffer.alloc(0);
  frames: string[] = [];
  bells: { pos: number; n: number; slot: number }[] = [];
  chunks: number[] = [];
  constructor(peer: net.Socket, private readonly ring?: () => RecvRing) {
    peer.on('data', (d: Buffer) => {
      this.chunks.push(d.length);
      this.buf = Buffer.concat([this.buf, d]);
      for (;;) {
        if (this.buf.length < HEADER_SIZE) return;
        const h = readHeader(this.buf, 0);
        if (this.buf.length < HEADER_SIZE + h.length) return;
        const p = this.buf.subarray(HEADER_SIZE, HEADER_SIZE + h.length);
        if (h.kind & KIND_SHM) {
          assert.is(h.length, DOORBELL_SIZE);
          const pos = p.readDoubleLE(0), n = p.readDoubleLE(8);
          this.bells.push({ pos, n, slot: h.slot });
          const v = this.ring!().at(pos, n)!;
          this.frames.push(`shm ${h.kind & ~KIND_SHM}:${h.tag}:${h.seq}:${h.slot} ${n} ${v[0]}`);
        } else {
          this.frames.push(`tcp ${h.kind}:${h.tag}:${h.seq}:${h.slot} ${h.length}${h.length ? ' ' + p[0] : ''}`);
        }
        this.buf = this.buf.subarray(HEADER_SIZE + h.length);
      }
    });
  }
}

/** A link on a fresh segment with the peer's mapping of it (opened before the answer unlinks it). */
async function setup(ringBytes = R, minBytes = 1024, peerHalfOpen = false) {
  const { mine, peer } = await pair(peerHalfOpen);
  const seg = Segment.create(ringBytes);
  const theirs = Segment.open(seg.name, ringBytes, false);
  opened.push(seg, theirs);
  const rx = new RecvRing(theirs);
  const answers: boolean[] = [];
  const lost: string[] = [];
  const malformed: string[] = [];
  const link = new ShmLink({
    peer: 3, socket: mine, seg, pool: new SidePool(), minBytes,
    events: { lost: (w) => lost.push(w), malformed: (w) => malformed.push(w) },
    onAnswer: (m) => answers.push(m),
  });
  const reader = new Reader(peer, () => rx);
  const u32 = (v: number) => { const b = Buffer.alloc(4); b.writeUInt32LE(v); return b; };
  return { mine, peer, seg, theirs, rx, link, answers, lost, malformed, reader, u32 };
}

const fill = (n: number, v: number) => new Uint8Array(n).fill(v);
const send = (link: ShmLink, slot: number, n: number, v: number, copy?: boolean) =>
  new Promise<Error | null | undefined>((r) => link.send({ kind: 1, tag: 9, seq: 2, slot }, fill(n, v), copy === undefined ? {} : { copy }, r));
const shmFile = (s: Segment) => fs.existsSync(`/dev/shm${s.name}`);

t('the answer: 1 maps the ring (name unlinked, shm from then on); frames before it went over TCP', async () => {
  const s = await setup();
  assert.is(s.link.transport, 'tcp');
  assert.is(s.link.peer, 3);
  await send(s.link, 0, 4096, 1);
  assert.ok(shmFile(s.seg));
  s.peer.write(s.u32(1).subarray(0, 2)); // the answer may come in pieces
  await sleep(30);
  assert.equal(s.answers, []);
  s.peer.write(s.u32(1).subarray(2));
  await sleep(30);
  assert.equal(s.answers, [true]);
  assert.is(s.link.transport, 'shm');
  assert.not.ok(shmFile(s.seg), 'unlinked once answered');
  assert.not.ok(s.seg.closed);
  await send(s.link, 1, 4096, 2);
  await sleep(30);
  assert.equal(s.reader.frames, ['tcp 1:9:2:0 4096 1', 'shm 1:9:2:1 4096 2']);
  assert.equal(s.malformed, []);
});

t('the answer: 0 closes the segment and every frame stays on TCP; later words are wake-ups, not answers', async () => {
  const s = await setup();
  s.peer.write(Buffer.concat([s.u32(0), s.u32(1), s.u32(1)]));
  await sleep(30);
  assert.equal(s.answers, [false]);
  assert.ok(s.seg.closed);
  assert.is(s.link.transport, 'tcp');
  await send(s.link, 0, 4096, 5);
  await sleep(30);
  assert.equal(s.reader.frames, ['tcp 1:9:2:0 4096 5']);
});

t('ring frames: from minBytes to maxFrame; smaller and larger ones go over TCP', async () => {
  const s = await setup(R, 1024);
  s.peer.write(s.u32(1));
  await sleep(30);
  const max = Math.floor((R - R / 8) / 2);
  for (const [slot, n] of [[0, 1023], [1, 1024], [2, max], [3, max + 1]]) {
    await send(s.link, slot, n, slot + 1);
    s.rx.release(s.reader.bells.at(-1)?.pos ?? 0, s.reader.bells.at(-1)?.n ?? 0);
    await sleep(20);
    const last = s.reader.bells.at(-1);
    if (last) s.rx.release(last.pos, last.n);
  }
  await sleep(30);
  assert.equal(s.reader.frames, ['tcp 1:9:2:0 1023 1', `shm 1:9:2:1 1024 2`, `shm 1:9:2:2 ${max} 3`, `tcp 1:9:2:3 ${max + 1} 4`]);
});

t('doorbells of one turn go out as one write (at most 64 each), in order with TCP frames', async () => {
  const s = await setup(1 << 20, 16);
  s.peer.write(s.u32(1));
  await sleep(30);
  const writes: number[] = [];
  const w = s.mine.write.bind(s.mine);
  s.mine.write = ((b: Uint8Array, ...rest: unknown[]) => { writes.push(b.byteLength); return (w as (...a: unknown[]) => boolean)(b, ...rest); }) as typeof s.mine.write;
  const dones: (Error | null | undefined)[] = [];
  for (let i = 0; i < 65; i++) s.link.send({ kind: 1, tag: 0, seq: 0, slot: i }, fill(16, i), {}, (e) => dones.push(e));
  assert.equal(writes, [64 * (HEADER_SIZE + DOORBELL_SIZE)], 'the 65th flushed the 64 before it');
  s.link.send({ kind: 2, tag: 0, seq: 0, slot: 99 }, fill(8, 7), {}, (e) => dones.push(e)); // TCP: the bell before it goes first
  assert.equal(writes, [64 * 40, 40, HEADER_SIZE + 8]);
  s.link.send({ kind: 1, tag: 0, seq: 0, slot: 100 }, fill(16, 100), {}, (e) => dones.push(e));
  s.link.send({ kind: 1, tag: 0, seq: 0, slot: 101 }, fill(16, 101), {}, (e) => dones.push(e));
  assert.is(writes.length, 3, 'not before the turn ends');
  await Promise.resolve();
  await sleep(30);
  assert.equal(writes, [64 * 40, 40, HEADER_SIZE + 8, 80]);
  assert.is(dones.length, 68);
  assert.ok(dones.every((e) => !e));
  assert.equal(s.reader.bells.map((b) => b.slot), [...Array.from({ length: 65 }, (_, i) => i), 100, 101]);
  assert.is(s.reader.frames[65], 'tcp 2:0:0:99 8 7');
  assert.is(s.reader.frames[66], 'shm 1:0:0:100 16 100');
  // one bell alone: its own done is the write's callback
  let one: unknown = 'not called';
  s.link.send({ kind: 1, tag: 0, seq: 0, slot: 0 }, fill(16, 1), {}, (e) => { one = e; });
  await sleep(30);
  assert.is.not(one, 'not called');
  assert.not.ok(one);
});

t('a full ring: frames wait (copied when small or asked), frames behind them too, until the wake-up', async () => {
  const s = await setup(R, 1024);
  s.peer.write(s.u32(1));
  await sleep(30);
  const Q = R / 4;
  const order: string[] = [];
  const sendNamed = (name: string, n: number, v: number, copy?: boolean) => {
    const p = fill(n, v);
    s.link.send({ kind: 1, tag: 0, seq: 0, slot: v }, p, copy === undefined ? {} : { copy }, (e) => order.push(`${name}${e ? ' ' + e.message : ''}`));
    return p;
  };
  for (let i = 1; i <= 4; i++) sendNamed(`q${i}`, Q, i); // fills the ring exactly
  const p5 = sendNamed('q5', Q, 5); // waits: no room
  const p6 = sendNamed('tcp6', 100, 6); // waits behind it
  p5.fill(55);
  p6.fill(66);
  await sleep(30);
  assert.equal(order, ['q1', 'q2', 'q3', 'q4']);
  assert.is(s.reader.frames.length, 4);
  s.rx.release(0, Q); // a credit step freed: the reader would wake the sender
  s.peer.write(s.u32(1));
  await sleep(50);
  assert.equal(order, ['q1', 'q2', 'q3', 'q4', 'q5', 'tcp6']);
  assert.equal(s.reader.frames.slice(4), ['shm 1:0:0:5 16384 5', 'tcp 1:0:0:6 100 6']);
});

t('a full ring: a large frame not asked to copy waits in the caller\'s memory; one asked to copy does not', async () => {
  const s = await setup(1 << 20, 1024);
  s.peer.write(s.u32(1));
  await sleep(30);
  const big = 400_000;
  const filler = [send(s.link, 0, big, 1), send(s.link, 1, big, 2)];
  await Promise.all(filler);
  const a = fill(big, 3);
  const b = fill(big, 4);
  const c = fill(500_000, 9); // above maxFrame: TCP
  s.link.send({ kind: 1, tag: 0, seq: 0, slot: 2 }, a, {}, () => {});
  s.link.send({ kind: 1, tag: 0, seq: 0, slot: 3 }, b, { copy: true }, () => {});
  s.link.send({ kind: 2, tag: 0, seq: 0, slot: 4 }, c, {}, () => {}); // a large TCP frame behind them, not copied
  s.link.send({ kind: 1, tag: 0, seq: 0, slot: 5 }, fill(2000, 5), {}, () => {}); // would fit now, but waits its turn
  a.fill(33);
  b.fill(44);
  c.fill(99);
  await sleep(30);
  assert.is(s.reader.frames.length, 2);
  s.rx.release(0, big); // room for one more (after a skip to offset 0)
  s.peer.write(s.u32(1));
  await sleep(50);
  assert.is(s.reader.frames.length, 3, s.reader.frames.join(' | '));
  s.rx.release(s.reader.bells[2].pos, big);
  s.peer.write(s.u32(1));
  await sleep(100);
  assert.equal(s.reader.frames.slice(2), [`shm 1:0:0:2 ${big} 33`, `shm 1:0:0:3 ${big} 4`, 'tcp 2:0:0:4 500000 99', 'shm 1:0:0:5 2000 5']);
});

t('a waiting frame of exactly COPY_BELOW bytes is copied, through the ring or behind it over TCP', async () => {
  for (const minBytes of [COPY_BELOW, COPY_BELOW + 1]) { // the frame goes through the ring / over TCP
    const s = await setup(1 << 20, minBytes);
    s.peer.write(s.u32(1));
    await sleep(30);
    const big = 400_000;
    await Promise.all([send(s.link, 0, big, 1), send(s.link, 1, big, 2)]);
    await sleep(30); // the reader has their doorbells
    s.link.send({ kind: 1, tag: 0, seq: 0, slot: 2 }, fill(big, 3), {}, () => {}); // no room: waits
    const p = fill(COPY_BELOW, 7);
    s.link.send({ kind: 1, tag: 0, seq: 0, slot: 3 }, p, {}, () => {}); // waits behind it
    p.fill(8);
    s.rx.release(0, 2 * big);
    s.peer.write(s.u32(1));
    await sleep(80);
    const via = minBytes === COPY_BELOW ? 'shm' : 'tcp';
    assert.equal(s.reader.frames.slice(2), [`shm 1:0:0:2 ${big} 3`, `${via} 1:0:0:3 ${COPY_BELOW} 7`]);
  }
});

t('close flushes the bells of this turn before the goodbye and drops the frames waiting for space; later sends fail', async () => {
  const s = await setup(R, 1024, true); // the peer may still write after our goodbye (a wake-up in flight)
  s.peer.write(s.u32(1));
  await sleep(30);
  const Q = R / 4;
  const dones: string[] = [];
  const put = (slot: number, n: number) => s.link.send({ kind: 1, tag: 0, seq: 0, slot }, fill(n, slot), {}, (e) => dones.push(`${slot}${e ? ' failed' : ''}`));
  put(0, 2048);
  for (let i = 1; i <= 3; i++) put(i, Q); // rung in this turn, not yet written
  put(4, Q); // no room: waits
  s.link.close();
  await sleep(50);
  assert.equal(s.reader.frames, ['shm 1:0:0:0 2048 0', 'shm 1:0:0:1 16384 1', 'shm 1:0:0:2 16384 2', 'shm 1:0:0:3 16384 3', `tcp ${KIND_BYE}:0:0:0 0`]);
  s.rx.release(0, 2048 + 3 * Q);
  s.peer.write(s.u32(1)); // a wake-up after close: the waiting frame was dropped, nothing is sent
  await sleep(50);
  assert.equal(dones, ['0', '1', '2', '3'], 'a dropped frame\'s done is not called');
  assert.equal(s.reader.frames.length, 5);
  const e = await send(s.link, 0, 2048, 1);
  assert.match(String(e?.message), /no connection to rank 3/);
});

t('ring writes once the segment is closed or the link destroyed fail with no connection', async () => {
  const s = await setup(R, 1024);
  s.peer.write(s.u32(1));
  await sleep(30);
  s.seg.close();
  let calls = 0;
  const e1 = await new Promise<Error | null | undefined>((r) => s.link.send({ kind: 1, tag: 0, seq: 0, slot: 0 }, fill(2048, 1), {}, (e) => { calls++; r(e); }));
  assert.match(String(e1?.message), /no connection to rank 3/);
  s.peer.write(s.u32(1)); // a wake-up: the failed frame is not tried (and failed) again
  await sleep(30);
  assert.is(calls, 1);
  const s2 = await setup(R, 1024);
  s2.peer.write(s2.u32(1));
  await sleep(30);
  s2.link.destroy();
  const e2 = await send(s2.link, 0, 2048, 1);
  assert.match(String(e2?.message), /no connection to rank 3/);
  const e3 = await send(s2.link, 0, 100, 1); // a TCP-sized frame: refused before any write
  assert.match(String(e3?.message), /no connection to rank 3/);
});

t('a bell rung before destroy is written first (its write then fails with the connection, nobody waits)', async () => {
  const s = await setup(R, 1024);
  s.peer.write(s.u32(1));
  await sleep(30);
  const r = send(s.link, 0, 2048, 1);
  s.link.destroy();
  const e = await Promise.race([r, sleep(2000).then(() => 'hung')]);
  assert.is.not(e, 'hung');
});

t('the segment name is removed when the connection closes, answered or not', async () => {
  const s = await setup();
  assert.ok(shmFile(s.seg));
  s.peer.destroy();
  await new Promise((r) => s.mine.once('close', r));
  assert.not.ok(shmFile(s.seg));
});

t('RingReader: open until the segment closes; release wakes the sender (a u32 1) once a credit step is freed', async () => {
  const { mine, peer } = await pair();
  const seg = Segment.create(R);
  const theirs = Segment.open(seg.name, R);
  opened.push(seg, theirs);
  const got: Buffer[] = [];
  mine.on('data', (d: Buffer) => got.push(d));
  const rr = new RingReader(theirs, peer);
  assert.ok(rr.open);
  seg.ring.set([1, 2, 3], 0);
  assert.equal([...rr.at(0, 3)!], [1, 2, 3]);
  assert.is(rr.at(R - 1, 2), undefined);
  rr.release(0, R / 8 - 1);
  await sleep(30);
  assert.is(got.length, 0, 'less than a credit step: no wake-up');
  rr.release(R / 8 - 1, 1);
  await sleep(30);
  assert.equal(Buffer.concat(got).toJSON().data, [1, 0, 0, 0]);
  peer.destroy();
  rr.release(R / 8, R / 8); // a destroyed socket: nothing written, nothing thrown
  theirs.close();
  assert.not.ok(rr.open);
});

test.run();
