// The TCP link of the CPU group (host/cpu/link/tcp.ts) on its own, over loopback sockets with no
// mesh: what a send puts on the wire (one copied write for small frames, the pool for copies from
// 4 KiB, the caller's memory above COPY_BELOW), the events a connection raises, the goodbye of
// close(), and the dialing / listening helpers.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import net from 'node:net';
import { dialReader, listen, TcpLink } from '../../host/cpu/link/tcp.js';
import { COPY_BELOW, SidePool } from '../../host/cpu/link/sink.js';
import { HEADER_SIZE, KIND_BYE, readHeader } from '../../host/cpu/wire.js';
import type { Inbound } from '../../host/cpu/link/inbound.js';
import { linkCase, opened, socketPair } from '../helpers/link_cases.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const t = linkCase();
const pair = socketPair;

/** Everything the peer reads, until it has `n` bytes (or the connection ends). */
function readN(peer: net.Socket, n: number): Promise<Buffer> {
  const parts: Buffer[] = [];
  let have = 0;
  return new Promise((resolve) => {
    const on = (d: Buffer) => {
      parts.push(d);
      have += d.length;
      if (have >= n) { peer.off('data', on); resolve(Buffer.concat(parts)); }
    };
    peer.on('data', on);
    peer.once('end', () => resolve(Buffer.concat(parts)));
  });
}

/** A SidePool that records its calls. */
function recordingPool() {
  const real = new SidePool();
  const gets: number[] = [];
  const puts: Uint8Array[] = [];
  const pool = { get: (n: number) => { gets.push(n); return real.get(n); }, put: (b: Uint8Array) => { puts.push(b); real.put(b); } } as unknown as SidePool;
  return { pool, gets, puts };
}

function link(mine: net.Socket, pool: SidePool = new SidePool(), onData?: (d: Buffer) => void) {
  const lost: string[] = [];
  const malformed: string[] = [];
  const l = new TcpLink({ peer: 4, socket: mine, pool, events: { lost: (w) => lost.push(w), malformed: (w) => malformed.push(w) }, onData });
  return { l, lost, malformed };
}

const bytes = (n: number, seed: number) => Uint8Array.from({ length: n }, (_, i) => (i * 7 + seed) & 0xff);

function sendAndRead(l: TcpLink, peer: net.Socket, n: number, copy: boolean | undefined): Promise<{ got: Buffer; err: Error | null | undefined; payload: Uint8Array }> {
  const payload = bytes(n, n & 0xff);
  const reading = readN(peer, HEADER_SIZE + n);
  return new Promise((resolve) => {
    l.send({ kind: 2, tag: 5, seq: 6, slot: 7 }, payload, copy === undefined ? {} : { copy }, (err) => {
      void reading.then((got) => resolve({ got, err, payload }));
    });
  });
}

t('send: the header (kind, tag, seq, slot, length) then the payload, for small, pooled and direct frames', async () => {
  const { mine, peer } = await pair();
  const { l } = link(mine);
  assert.is(l.transport, 'tcp');
  assert.is(l.peer, 4);
  for (const n of [0, 10, 4095, 4096, COPY_BELOW, COPY_BELOW + 1, 300_000]) {
    const { got, err, payload } = await sendAndRead(l, peer, n, undefined);
    assert.not.ok(err);
    assert.is(got.length, HEADER_SIZE + n, `${n} bytes`);
    assert.equal(readHeader(got, 0), { kind: 2, tag: 5, seq: 6, slot: 7, length: n });
    assert.ok(Buffer.from(payload).equals(got.subarray(HEADER_SIZE)), `payload of ${n} bytes`);
  }
  l.destroy();
  peer.destroy();
});

t('send: copies from 4 KiB to COPY_BELOW (or asked to copy) come from the pool and go back after the write; others do not use it', async () => {
  const { mine, peer } = await pair();
  const p = recordingPool();
  const { l } = link(mine, p.pool);
  const cases: [number, boolean | undefined, boolean][] = [
    [4095, undefined, false], [4096, undefined, true], [COPY_BELOW, undefined, true], [COPY_BELOW + 1, undefined, false],
    [COPY_BELOW + 1, false, false], [COPY_BELOW + 1, true, true], [100, true, false],
  ];
  for (const [n, copy, pooled] of cases) {
    p.gets.length = 0;
    p.puts.length = 0;
    const { got } = await sendAndRead(l, peer, n, copy);
    assert.is(got.length, HEADER_SIZE + n);
    assert.equal(p.gets, pooled ? [HEADER_SIZE + n] : [], `${n} bytes, copy ${copy}: pool.get`);
    assert.is(p.puts.length, pooled ? 1 : 0, `${n} bytes, copy ${copy}: pool.put after the write`);
    if (pooled) assert.is(p.puts[0].byteLength, HEADER_SIZE + n);
  }
  l.destroy();
  peer.destroy();
});

t('send: a copied payload may be changed at once; a direct one is read from the caller\'s memory', async () => {
  const { mine, peer } = await pair();
  peer.pause(); // nothing is read yet: most of a large write waits in the socket's queue
  const { l } = link(mine);
  const n = 8 << 20;
  for (const copy of [true, false]) {
    const payload = new Uint8Array(n).fill(1);
    const reading = readN(peer, HEADER_SIZE + n);
    l.send({ kind: 2, tag: 0, seq: 0, slot: 0 }, payload, { copy }, () => {});
    payload.fill(2);
    peer.resume();
    const got = await reading;
    peer.pause();
    // Bun copies every write; Node writes a Uint8Array from its memory.
    if (copy || !process.versions.bun) assert.is(got[got.length - 1], copy ? 1 : 2, `copy ${copy}`);
  }
  l.destroy();
  peer.destroy();
});

t('send on a destroyed connection fails at once; destroyed says so', async () => {
  const { mine, peer } = await pair();
  const { l } = link(mine);
  assert.is(l.destroyed, false);
  l.destroy();
  assert.is(l.destroyed, true);
  let err: Error | null | undefined;
  l.send({ kind: 2, tag: 0, seq: 0, slot: 0 }, new Uint8Array(4), {}, (e) => { err = e; });
  assert.ok(err instanceof Error);
  assert.match(err!.message, /no connection to rank 4/);
  peer.destroy();
});

t('events: bytes on the send side are malformed (unless onData takes them); the peer\'s end and the close are losses', async () => {
  const a = await pair();
  const la = link(a.mine);
  a.peer.write('x');
  await sleep(50);
  assert.equal(la.malformed, ['unexpected bytes on the send-side connection']);
  a.peer.end();
  await new Promise((r) => a.mine.once('close', r));
  assert.equal(la.lost, ['connection closed by the peer', 'connection closed']);

  const b = await pair();
  const seen: string[] = [];
  const lb = link(b.mine, new SidePool(), (d) => seen.push(d.toString()));
  b.peer.write('wake');
  await sleep(50);
  assert.equal(seen, ['wake']);
  assert.equal(lb.malformed, []);
  lb.l.destroy();
  b.peer.destroy();
});

t('events: a connection error is a loss with its message', async () => {
  const { mine, peer } = await pair();
  const { lost } = link(mine);
  if (typeof (peer as { resetAndDestroy?: () => void }).resetAndDestroy !== 'function') { // older runtimes
    peer.destroy();
    return;
  }
  peer.resetAndDestroy();
  await new Promise((r) => mine.once('close', r));
  assert.ok(lost.length >= 2, lost.join(' | '));
  assert.match(lost[0], /ECONNRESET/);
  assert.is(lost[lost.length - 1], 'connection closed');
});

t('close: one goodbye frame behind what was sent, then the end; a second close sends nothing', async () => {
  const { mine, peer } = await pair();
  const { l, lost } = link(mine);
  const got = readN(peer, 1 << 30);
  l.send({ kind: 2, tag: 1, seq: 2, slot: 3 }, bytes(10, 1), {}, () => {});
  l.close();
  l.close();
  const b = await got;
  assert.is(b.length, 2 * HEADER_SIZE + 10);
  assert.equal(readHeader(b, HEADER_SIZE + 10), { kind: KIND_BYE, tag: 0, seq: 0, slot: 0, length: 0 });
  await new Promise((r) => mine.once('close', r));
  assert.not.ok(lost.some((w) => !/^connection closed/.test(w)), lost.join(' | '));
});

t('close: a peer that keeps its side open is cut off after a second', async () => {
  const { mine, peer } = await pair(true);
  const { l } = link(mine);
  peer.on('data', () => {});
  const t0 = performance.now();
  l.close();
  await new Promise((r) => mine.once('close', r));
  const ms = performance.now() - t0;
  assert.ok(ms >= 900 && ms < 5000, `${ms} ms`);
  peer.destroy();
});

t('close after destroy writes nothing and raises nothing new', async () => {
  const { mine, peer } = await pair();
  const { l, lost, malformed } = link(mine);
  l.destroy();
  await new Promise((r) => mine.once('close', r));
  const before = [...lost];
  l.close();
  await sleep(50);
  assert.equal(lost, before);
  assert.equal(malformed, []);
  peer.destroy();
});

t('writeRaw: the bytes as given', async () => {
  const { mine, peer } = await pair();
  const { l } = link(mine);
  const got = readN(peer, 5);
  let called = false;
  l.writeRaw(Uint8Array.from([9, 8, 7, 6, 5]), () => { called = true; });
  assert.equal([...(await got)], [9, 8, 7, 6, 5]);
  await sleep(10);
  assert.ok(called);
  l.destroy();
  peer.destroy();
});

t('listen and dialReader: connections handed over, read into the parser\'s buffer; a taken port refused; later errors reported', async () => {
  const conns: net.Socket[] = [];
  const errors: Error[] = [];
  const srv = await listen('127.0.0.1', 0, (s) => { conns.push(s); opened.push(s); }, (e) => errors.push(e));
  const port = (srv.address() as net.AddressInfo).port;
  assert.ok(port > 0);
  const fed: string[] = [];
  const buf = new Uint8Array(64);
  const inbound = {
    nextBuffer: () => buf,
    feed: (b: Uint8Array, n: number) => { assert.is(b, buf); fed.push(Buffer.from(b.subarray(0, n)).toString()); },
  } as unknown as Inbound;
  const s = dialReader('127.0.0.1', port, inbound);
  opened.push(s, srv);
  await new Promise((r) => s.once('connect', r));
  await sleep(30);
  assert.is(conns.length, 1);
  conns[0].write('hello');
  await sleep(50);
  assert.is(fed.join(''), 'hello');
  await listen('127.0.0.1', port, () => {}, () => {}).then(
    () => assert.unreachable('a taken port must be refused'),
    (e: NodeJS.ErrnoException) => assert.is(e.code, 'EADDRINUSE'),
  );
  srv.emit('error', new Error('later'));
  assert.equal(errors.map((e) => e.message), ['later']);
  s.destroy();
  conns[0].destroy();
  await new Promise((r) => srv.close(r));
});

test.run();
