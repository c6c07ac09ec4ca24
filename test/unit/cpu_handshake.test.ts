// The CPU mesh's connection setup (host/cpu/link/handshake.ts) between two Handshake objects,
// without a mesh: the acceptor reads HELLOs on a real loopback socket (whole, or a byte at a
// time), each refusal answers its status in an ACK, warns naming the remote address and closes;
// the dialer's readAck names each kind of refusal; the MACs are the documented HMACs; the
// shared-memory offer, take and answer; fallback's level by transport; closeSegments. Loopback only.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import net from 'node:net';
import crypto from 'node:crypto';
import { Handshake, helloMac, signAck, signHello, type HandshakeOptions, type PeerHello } from '../../host/cpu/link/handshake.js';
import {
  ACK_SIZE, CHALLENGE_SIZE, decodeAck, encodeAck, encodeChallenge, encodeHello, MAX_NAME_BYTES, Status, VERSION, WANT_SHM, WANT_TCP,
} from '../../host/cpu/wire.js';
import { hostId, type Segment } from '../../host/cpu/shm.js';
import type { Logger } from '../../host/base/log.js';
import { sleep } from '../../host/base/deadline.js';

const SECRET = Buffer.from('handshake secret');

function logger() {
  const lines: [string, string][] = [];
  const at = (level: string) => (m: string) => { lines.push([level, m]); };
  const log = { warn: at('warn'), info: at('info'), debug: at('debug'), trace: at('trace'), error: at('error'), enabled: () => true } as unknown as Logger;
  return { log, lines };
}

function hs(rank: number, o: Partial<HandshakeOptions> = {}) {
  const { log, lines } = logger();
  const h = new Handshake({
    rank, worldSize: 4, groupName: 'g', epoch: 7, framing: { chunkBytes: 4096, smallBytes: 1024 }, transport: 'tcp',
    shmRingBytes: 1 << 16, secret: SECRET, maxFrameBytes: 1 << 20, log, ...o,
  });
  return { h, lines };
}

const opened: { close(): void }[] = [];
test.after.each(() => { for (const o of opened.splice(0)) o.close(); });

/**
 * An acceptor (rank 0 of `acc`) reading one connection; the dialer's side gets the CHALLENGE,
 * answers with `helloFor(challenge)` in pieces of `piece` bytes, and collects what comes back.
 */
async function knock(acc: Handshake, helloFor: (challenge: Buffer) => Buffer, o: { piece?: number; connected?: (r: number) => boolean; extra?: Buffer } = {}) {
  let accepted: PeerHello | undefined;
  let server!: net.Socket;
  const srv = net.createServer((s) => {
    server = s;
    s.on('error', () => {});
    opened.push({ close: () => s.destroy() });
    acc.readHello(s, o.connected ?? (() => false), (h) => { accepted = h; });
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  opened.push({ close: () => srv.close() });
  const c = net.connect((srv.address() as net.AddressInfo).port, '127.0.0.1');
  opened.push({ close: () => c.destroy() });
  c.on('error', () => {});
  let got = Buffer.alloc(0);
  let closed = false;
  let localPort = 0;
  c.on('connect', () => { localPort = c.localPort!; });
  c.on('close', () => { closed = true; });
  c.on('data', async (d) => {
    const first = got.length < CHALLENGE_SIZE;
    got = Buffer.concat([got, d]);
    if (first && got.length >= CHALLENGE_SIZE) {
      const hello = Buffer.concat([helloFor(got.subarray(0, CHALLENGE_SIZE)), o.extra ?? Buffer.alloc(0)]);
      const piece = o.piece ?? hello.length;
      for (let i = 0; i < hello.length; i += piece) {
        c.write(hello.subarray(i, i + piece));
        if (piece < hello.length) await sleep(1);
      }
    }
  });
  const end = performance.now() + 2000;
  while (!accepted && !closed && performance.now() < end) await sleep(5);
  return { accepted, closed, reply: got.subarray(CHALLENGE_SIZE), server: () => server, localPort, client: c };
}

/** A HELLO as rank `from` would send it to rank 0 of group 'g' (epoch 7, 4 ranks), signed. */
function helloOf(overrides: Partial<Parameters<typeof encodeHello>[0]> = {}, secret: Buffer | false = SECRET) {
  return (challenge: Buffer) => {
    const b = encodeHello({ rank: 2, worldSize: 4, epoch: 7, name: 'g', chunkBytes: 4096, smallBytes: 1024, toRank: 0, maxFrameBytes: 1 << 18, want: WANT_SHM, hostId: 'host-x', ...overrides });
    if (secret) signHello(secret, b, challenge.subarray(8, CHALLENGE_SIZE));
    return b;
  };
}

test('the dialer\'s HELLO is accepted whole or a byte at a time: rank, want, host id, maxFrameBytes and MAC; its ACK checks out once', async () => {
  for (const piece of [undefined, 1, 33]) {
    const acc = hs(0);
    const dia = hs(2, { transport: 'auto', maxFrameBytes: 12345 });
    const r = await knock(acc.h, (ch) => dia.h.hello(0, ch) as Buffer, { piece });
    assert.ok(r.accepted, `piece ${piece}: accepted`);
    assert.equal({ ...r.accepted!, mac: undefined }, { rank: 2, want: WANT_SHM, hostId: hostId(), maxFrameBytes: 12345, mac: undefined });
    assert.is(r.accepted!.mac.length, 32);
    assert.equal(acc.lines, []);
    // Reading stopped: what follows on the connection is the mesh's, not the handshake's.
    r.client.write(Buffer.alloc(200, 0x41));
    await sleep(20);
    assert.equal(acc.lines, []);
    assert.not.ok(r.server().destroyed);
    const ack = acc.h.ack(r.accepted!, undefined);
    assert.equal(dia.h.readAck(0, ack), { ok: true, ringBytes: 0, shmName: '' });
    assert.is(dia.h.readAck(0, ack).ok, false, 'the MAC it was signed over is used once');
  }
  const tcp = hs(2, { transport: 'tcp' });
  const r = await knock(hs(0).h, (ch) => tcp.h.hello(0, ch) as Buffer);
  assert.is(r.accepted!.want, WANT_TCP);
  // The limits themselves are allowed: maxFrameBytes 1, a group name of MAX_NAME_BYTES bytes.
  const long = 'n'.repeat(MAX_NAME_BYTES);
  const edgeDialer = hs(2, { groupName: long, maxFrameBytes: 1 });
  const edge = await knock(hs(0, { groupName: long }).h, (ch) => edgeDialer.h.hello(0, ch) as Buffer);
  assert.is(edge.accepted?.maxFrameBytes, 1);
});

test('each bad HELLO is refused with its status in an ACK, a warning naming the remote address, and the connection closed', async () => {
  const cases: [string, (ch: Buffer) => Buffer, number, RegExp][] = [
    ['magic', (ch) => { const b = helloOf()(ch); b.writeUInt32LE(0x11111111, 0); return b; }, Status.BAD_MAGIC, /magic 0x11111111/],
    ['version', (ch) => { const b = helloOf()(ch); b.writeUInt16LE(VERSION + 1, 4); return b; }, Status.BAD_VERSION, /version 4/],
    ['long name', (ch) => { const b = helloOf()(ch).subarray(0, 32); b.writeUInt16LE(MAX_NAME_BYTES + 1, 6); return b; }, Status.WRONG_GROUP, /name of 1025 bytes/],
    ['unsigned', helloOf({}, false), Status.BAD_AUTH, /not signed/],
    ['another secret', helloOf({}, Buffer.from('x')), Status.BAD_AUTH, /not signed/],
    ['group', helloOf({ name: 'h' }), Status.WRONG_GROUP, /group 'h', this is 'g'/],
    ['epoch', helloOf({ epoch: 8 }), Status.WRONG_EPOCH, /epoch 8, this is 7/],
    ['size', helloOf({ worldSize: 5 }), Status.WRONG_SIZE, /world size 5, this is 4/],
    ['rank = size', helloOf({ rank: 4 }), Status.BAD_RANK, /\(rank 4\)/],
    ['own rank', helloOf({ rank: 0 }), Status.BAD_RANK, /\(rank 0\)/],
    ['toRank', helloOf({ toRank: 3 }), Status.BAD_RANK, /meant to reach rank 3, this is rank 0/],
    ['maxFrameBytes 0', helloOf({ maxFrameBytes: 0 }), Status.BAD_MAGIC, /maxFrameBytes 0/],
    ['maxFrameBytes 1.5', helloOf({ maxFrameBytes: 1.5 }), Status.BAD_MAGIC, /maxFrameBytes 1.5/],
    ['chunkBytes', helloOf({ chunkBytes: 8192 }), Status.WRONG_TUNING, /chunkBytes 8192 \/ smallBytes 1024, this rank uses 4096 \/ 1024/],
    ['smallBytes', helloOf({ smallBytes: 2048 }), Status.WRONG_TUNING, /smallBytes 2048/],
  ];
  for (const [what, hello, status, detail] of cases) {
    const acc = hs(0);
    const r = await knock(acc.h, hello);
    assert.is(r.accepted, undefined, what);
    assert.ok(r.closed, `${what}: closed`);
    assert.ok(r.reply.length >= ACK_SIZE, `${what}: an ACK`);
    const a = decodeAck(r.reply);
    assert.equal([a.status, a.rank], [status, 0], what);
    assert.is(acc.lines.length, 1, what);
    assert.is(acc.lines[0][0], 'warn');
    assert.match(acc.lines[0][1], `refused connection from 127.0.0.1:${r.localPort}`);
    assert.match(acc.lines[0][1], detail, what);
  }
  // Bytes after the HELLO, and a rank that already has a connection.
  const extra = hs(0);
  const r1 = await knock(extra.h, helloOf(), { extra: Buffer.from([1]) });
  assert.equal([r1.accepted, decodeAck(r1.reply).status], [undefined, Status.BAD_MAGIC]);
  assert.match(extra.lines[0][1], /bytes after the HELLO/);
  const dup = hs(0);
  const asked: number[] = [];
  const r2 = await knock(dup.h, helloOf(), { connected: (r) => { asked.push(r); return true; } });
  assert.equal([r2.accepted, decodeAck(r2.reply).status, asked], [undefined, Status.DUPLICATE, [2]]);
  assert.match(dup.lines[0][1], /\(rank 2\)$/);
});

test('a refused peer that keeps its end open is closed after 100 ms; what it sends after the HELLO is not read', async () => {
  const acc = hs(0);
  const srvSide: net.Socket[] = [];
  const srv = net.createServer((s) => { srvSide.push(s); s.on('error', () => {}); acc.h.readHello(s, () => false, () => {}); });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  opened.push({ close: () => srv.close() });
  const c = net.connect({ port: (srv.address() as net.AddressInfo).port, host: '127.0.0.1', allowHalfOpen: true });
  opened.push({ close: () => c.destroy() });
  let got = Buffer.alloc(0);
  c.on('data', (d) => {
    const first = got.length < CHALLENGE_SIZE;
    got = Buffer.concat([got, d]);
    if (first && got.length >= CHALLENGE_SIZE) c.write(helloOf({ epoch: 1 })(got.subarray(0, CHALLENGE_SIZE)));
  });
  let closedAt = 0;
  c.on('close', () => { closedAt = performance.now(); });
  const t0 = performance.now();
  while (got.length < CHALLENGE_SIZE + ACK_SIZE) await sleep(5);
  const refusedAt = performance.now();
  c.write(Buffer.alloc(64, 0x42)); // more bytes: no second refusal
  await sleep(40);
  assert.not.ok(srvSide[0].destroyed, 'kept for the ACK to drain');
  while (!srvSide[0].destroyed && performance.now() - t0 < 2000) await sleep(5);
  assert.ok(srvSide[0].destroyed);
  assert.ok(performance.now() - refusedAt >= 60, `destroyed ${performance.now() - refusedAt} ms after the ACK`);
  assert.is(acc.lines.length, 1);
  void closedAt;
});

test('readAck names each refusal; hello() refuses a challenge that is not one', () => {
  const dia = hs(2);
  const ch = encodeChallenge(Buffer.alloc(32, 9));
  assert.ok(Buffer.isBuffer(dia.h.hello(0, ch)));
  const bad = Buffer.from(ch);
  bad.writeUInt32LE(0, 0);
  assert.match(dia.h.hello(1, bad) as string, /not a groupcomm CPU group/);
  const notUs = encodeAck(Status.OK, 0);
  notUs.writeUInt32LE(0x12345678, 0);
  assert.equal(dia.h.readAck(0, notUs), { ok: false, status: undefined, why: 'not a groupcomm CPU group' });
  const v = encodeAck(Status.OK, 0);
  v.writeUInt16LE(VERSION + 1, 4);
  assert.equal(dia.h.readAck(0, v), { ok: false, status: undefined, why: `protocol version ${VERSION + 1}` });
  const refused = dia.h.readAck(0, encodeAck(Status.WRONG_EPOCH, 0));
  assert.equal([refused.ok, (refused as { status?: number }).status], [false, Status.WRONG_EPOCH]);
  assert.match((refused as { why: string }).why, /epoch/);
  assert.equal(dia.h.readAck(0, encodeAck(Status.OK, 3)), { ok: false, status: Status.OK, why: 'it is rank 3' });
  // Signed for nothing we sent (rank 1 got no HELLO of ours), or with another secret.
  const unsigned = dia.h.readAck(1, encodeAck(Status.OK, 1));
  assert.is(unsigned.ok, false);
  assert.match((unsigned as { why: string }).why, /not signed/);
  const other = hs(1, { secret: Buffer.from('another') });
  const r = dia.h.readAck(0, other.h.ack({ rank: 2, want: WANT_TCP, hostId: '', maxFrameBytes: 1, mac: Buffer.alloc(32) }, undefined));
  assert.is(r.ok, false);
});

test('shared memory: offered only when both want it on one host; taken unless tcp; a failure falls back (warning under shm)', () => {
  const peer = (o: Partial<PeerHello>): PeerHello => ({ rank: 2, want: WANT_SHM, hostId: hostId(), maxFrameBytes: 1, mac: Buffer.alloc(32), ...o });
  assert.is(hs(0, { transport: 'tcp' }).h.offer(peer({})), undefined);
  const auto = hs(0, { transport: 'auto' });
  assert.is(auto.h.offer(peer({ want: WANT_TCP })), undefined);
  assert.is(auto.h.offer(peer({ hostId: 'elsewhere' })), undefined);
  assert.is(auto.h.offer(peer({ hostId: '' })), undefined, 'an unknown host is another host');
  assert.equal(auto.lines, [['debug', 'rank 2 is on another host (elsewhere): TCP'], ['debug', 'rank 2 is on another host (unknown): TCP']]);
  assert.is(auto.h.segments.length, 0);
  const seg = auto.h.offer(peer({}));
  if (seg) {
    // This host can make segments: the offer is signed into the ACK, and taken by the dialer.
    assert.equal(auto.h.segments, [seg]);
    const dia = hs(2, { transport: 'auto' });
    const ch = encodeChallenge(Buffer.alloc(32, 3));
    const hello = dia.h.hello(0, ch) as Buffer;
    const mac = hello.subarray(hello.length - 32);
    const a = dia.h.readAck(0, auto.h.ack(peer({ mac: Buffer.from(mac) }), seg));
    assert.equal(a, { ok: true, ringBytes: seg.ringBytes, shmName: seg.name });
    assert.is(hs(2, { transport: 'tcp' }).h.take(0, a as { ringBytes: number; shmName: string }), undefined);
    const taken = dia.h.take(0, a as { ringBytes: number; shmName: string });
    assert.ok(taken);
    assert.equal(dia.h.segments, [taken]);
    dia.h.closeSegments();
    assert.is(dia.h.segments.length, 0);
    auto.h.closeSegments();
    assert.is(auto.h.segments.length, 0);
  }
  // A name no rank of this host makes: not mapped, a fallback (info under auto, warn under shm).
  for (const [transport, level] of [['auto', 'info'], ['shm', 'warn']] as const) {
    const t = hs(2, { transport });
    assert.is(t.h.take(0, { ringBytes: 1 << 16, shmName: '/not-ours' }), undefined);
    assert.is(t.h.segments.length, 0);
    assert.is(t.lines.length, 1);
    assert.is(t.lines[0][0], level);
    assert.match(t.lines[0][1], /^rank 0: shared memory not used, falling back to TCP \(/);
  }
  // A segment that cannot be made (a negative size: ftruncate refuses): the offer falls back too.
  const odd = hs(0, { transport: 'shm', shmRingBytes: -(1 << 20) });
  assert.is(odd.h.offer(peer({})), undefined);
  assert.equal(odd.lines.map(([l]) => l), ['warn']);
  assert.match(odd.lines[0][1], /^rank 2: shared memory not used/);
  // closeSegments unmaps every segment even when one fails (logged), and forgets them all.
  const closing = hs(0);
  const closed: string[] = [];
  const fake = (name: string, fail: boolean) => ({ name, close() { closed.push(name); if (fail) throw new Error('EINVAL'); } }) as unknown as Segment;
  closing.h.segments.push(fake('/a', true), fake('/b', false));
  closing.h.closeSegments();
  assert.equal(closed, ['/a', '/b']);
  assert.is(closing.h.segments.length, 0);
  assert.equal(closing.lines, [['debug', 'could not unmap /a: Error: EINVAL']]);
  assert.equal([...hs(2).h.answer(true)], [1, 0, 0, 0]);
  assert.equal([...hs(2).h.answer(false)], [0, 0, 0, 0]);
});

test('the MACs are the documented HMAC-SHA256s (docs/cpu-group.md, wire format), an empty key without a secret', () => {
  const hmac = (key: Buffer, label: string, ...parts: Uint8Array[]) => {
    const h = crypto.createHmac('sha256', key).update(`groupcomm-cpu-${label}-v3\n`);
    for (const p of parts) h.update(p);
    return h.digest();
  };
  const nonce = Buffer.alloc(32, 5);
  for (const secret of [SECRET, undefined]) {
    const key = secret ?? Buffer.alloc(0);
    const hello = encodeHello({ rank: 1, worldSize: 2, epoch: 0, name: 'g', chunkBytes: 1, smallBytes: 1 });
    const m = signHello(secret, hello, nonce);
    const want = hmac(key, 'hello', hello.subarray(0, hello.length - 32), nonce);
    assert.equal([...m], [...want]);
    assert.equal([...hello.subarray(hello.length - 32)], [...want], 'written at the end of the HELLO');
    assert.equal([...helloMac(secret, hello, nonce)], [...want], 'the MAC bytes themselves are not covered');
    const ack = signAck(secret, encodeAck(0, 1), m);
    assert.equal([...ack.subarray(ACK_SIZE - 32)], [...hmac(key, 'ack', ack.subarray(0, ACK_SIZE - 32), m)]);
  }
});

test.run();
