/**
 * The mesh's pairs after setup (host/cpu/mesh.ts from connectTo on): register connecting a lazy
 * pair, a lazy dial to a peer that left or crashed, a handshake refused during setup (another
 * world size: MISMATCH) and after it (PROTOCOL), a peer that breaks the framing, the send side
 * closing alone (lost a second later), and close (listener and address gone). Meshes without a
 * group, over loopback, with a real store; the internals a test pokes are named where it does.
 */
import { test } from 'uvu';
import net from 'node:net';
import * as assert from 'uvu/assert';
import { Mesh, type MeshOptions } from '../../host/cpu/mesh.js';
import { meshFile, addrKey, until } from '../helpers/mesh_file.js';
import { KIND_P2P, Status, encodeAck, encodeChallenge } from '../../host/cpu/wire.js';
import { ErrorCode, isGroupcommError, type GroupcommError } from '../../host/base/errors.js';

const file = meshFile();
let groups = 0;
const opts = file.opts;
const addr = addrKey;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** The mesh's private parts this file looks at. */
type Inner = {
  inbound: (object | undefined)[];
  dialed: (net.Socket | undefined)[];
  links: ({ destroy(): void } | undefined)[];
  listener?: { close(): void };
};
const inner = (m: Mesh) => m as unknown as Inner;
const f = (tag: number, slot = 0) => ({ kind: KIND_P2P, tag, seq: 0, slot });
const sink = (got: number[]) => ({ dest: () => null, done: (_s: number, b: Uint8Array) => { got.push(b[0]); }, fail: () => {} });

test('register connects a lazy pair both ways (no send needed); register after close dials nothing; discard without peers drops from all', async () => {
  groups++;
  const g = `meshb-reg-${groups}`;
  const ms = await Promise.all([0, 1, 2, 3].map((r) => Mesh.connect(opts(g, r, 4))));
  try {
    assert.is(ms[0].transportOf(2), 'none');
    ms[0].unregister(2, '2:4:0'); // nothing to unregister from: a no-op, no dial
    assert.is(inner(ms[0]).inbound[2], undefined);
    const got: number[] = [];
    ms[0].register(2, '2:4:0', sink(got));
    await until(() => ms[0].transportOf(2) === 'tcp' && ms[2].transportOf(0) === 'tcp');
    assert.is(ms[0].transportOf(2), 'tcp');
    assert.is(ms[2].transportOf(0), 'tcp');
    ms[2].send(0, f(4), Uint8Array.of(9), { copy: true }, () => {});
    await until(() => got.length > 0);
    assert.equal(got, [9]);
    // discard with no peers named: rank 1's and rank 3's frames of that key are both dropped.
    ms[0].discard('2:6:0');
    await Promise.all([1, 3].map((r) => new Promise<void>((res) => ms[r].send(0, f(6), Uint8Array.of(r), { copy: true }, () => res()))));
    await sleep(100);
    const kept: number[] = [];
    for (const r of [1, 3]) ms[0].register(r, '2:6:0', sink(kept));
    assert.equal(kept, []);
    await ms[1].close();
    ms[1].register(3, '2:4:0', sink(got));
    assert.is(inner(ms[1]).inbound[3], undefined, 'a closed mesh dials nothing');
  } finally {
    await Promise.all(ms.map((m) => m.close()));
  }
});

test('a lazy dial to a peer that closed (its address gone): departed, not lost; its waiting frame fails saying it left', async () => {
  groups++;
  const g = `meshb-left-${groups}`;
  const ms = await Promise.all([0, 1, 2, 3].map((r) => Mesh.connect(opts(g, r, 4))));
  const departed: number[] = [];
  const lost: GroupcommError[] = [];
  ms[0].onDeparted((p) => departed.push(p));
  ms[0].onLost((e) => lost.push(e));
  try {
    await ms[2].close();
    const errs: string[] = [];
    ms[0].send(2, f(1), Uint8Array.of(1), { copy: true }, (e) => errs.push(String(e?.message)));
    await until(() => errs.length > 0);
    assert.equal(errs, ['rank 2 left the group']);
    assert.equal(departed, [2]);
    assert.ok(ms[0].departed.has(2));
    // A frame to a departed rank fails at once (nothing would ever send it).
    ms[0].send(2, f(1), Uint8Array.of(2), { copy: true }, (e) => errs.push(String(e?.message)));
    assert.equal(errs, ['rank 2 left the group', 'no connection to rank 2']);
    await sleep(50);
    assert.equal(lost, []);
  } finally {
    await Promise.all(ms.map((m) => m.close()));
  }
});

test('a lazy dial to a peer whose listener is gone but whose address stays (a crash): lost, PEER_LOST naming where, after retrying', async () => {
  groups++;
  const g = `meshb-crash-${groups}`;
  // A timeout below the refusal grace (2 s): the dial's deadline, from the send on, decides.
  const ms = await Promise.all([0, 1, 2, 3].map((r) => Mesh.connect(opts(g, r, 4, { timeoutMs: 1500 }))));
  const lost: GroupcommError[] = [];
  ms[0].onLost((e) => lost.push(e));
  try {
    inner(ms[2]).listener!.close();
    const at = Buffer.from(await file.store.get(addr(g, 2))).toString();
    // Past setup's own deadline: a dial after setup gets the group's timeout from now.
    await sleep(1600);
    const errs: string[] = [];
    const t0 = Date.now();
    ms[0].send(2, f(1), Uint8Array.of(1), { copy: true }, (e) => errs.push(String(e?.message)));
    await until(() => lost.length > 0);
    const took = Date.now() - t0;
    assert.is(lost.length, 1);
    assert.ok(isGroupcommError(lost[0], ErrorCode.PEER_LOST), lost[0].message);
    assert.equal([lost[0].rank, lost[0].peerRank], [0, 2]);
    assert.ok(lost[0].message.includes(`lost rank 2 (cannot connect to it at ${at}: `), lost[0].message);
    assert.ok(took >= 1200, `retried until the deadline (${took} ms)`);
    assert.equal(errs, [lost[0].message], 'the waiting frame fails with the loss');
    assert.not.ok(ms[0].departed.has(2));
  } finally {
    await Promise.all(ms.map((m) => m.close()));
    await file.store.deleteKey(addr(g, 2));
  }
});

test('another world size for the same group refuses the handshake during setup: MISMATCH, naming the peer', async () => {
  groups++;
  const g = `meshb-size-${groups}`;
  // Rank 1 believes in three ranks: it listens and publishes, then waits for rank 2's address
  // (never published: it fails by its timeout); rank 0 dials it meanwhile and is refused.
  const [e0, e1] = await Promise.all([
    Mesh.connect(opts(g, 0, 2, { timeoutMs: 8000 })).then(() => undefined, (x) => x as GroupcommError),
    Mesh.connect(opts(g, 1, 3, { timeoutMs: 1500 })).then(() => undefined, (x) => x as GroupcommError),
  ]);
  assert.ok(isGroupcommError(e0, ErrorCode.MISMATCH), String(e0));
  assert.equal([e0!.rank, e0!.peerRank], [0, 1]);
  assert.match(e0!.message, /rank 0: the connection to rank 1 failed its handshake: .*\(this rank has world size 2\)/);
  assert.ok(isGroupcommError(e1), String(e1));
});

test('a failed setup deletes the address of a peer that refused its dial, not that of a peer it connected to', async () => {
  groups++;
  const g = `meshb-kept-${groups}`;
  const closed = net.createServer();
  await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
  const port = (closed.address() as net.AddressInfo).port;
  await new Promise<void>((r) => closed.close(() => r()));
  await file.store.set(addr(g, 2), `127.0.0.1:${port}`);
  // Rank 1 is alive (a long setup, ended by its signal below); rank 2 refuses every dial.
  const ac = new AbortController();
  const p1 = Mesh.connect(opts(g, 1, 3, { timeoutMs: 20_000, signal: ac.signal })).then(() => undefined, (x) => x as GroupcommError);
  try {
    const e = await Mesh.connect(opts(g, 0, 3, { timeoutMs: 900 })).then(() => undefined, (x) => x as GroupcommError);
    assert.ok(isGroupcommError(e), String(e));
    assert.not.ok(await file.store.check([addr(g, 2)]), 'the refusing rank\'s address');
    assert.ok(await file.store.check([addr(g, 1)]), 'the address of rank 1, which answered, stays');
  } finally {
    ac.abort();
    await p1;
    await file.store.deleteKey(addr(g, 2));
  }
});

test('another framing refuses the handshake during setup: PROTOCOL (not MISMATCH), naming both ranks', async () => {
  groups++;
  const g = `meshb-tuning-${groups}`;
  const [e0, e1] = await Promise.all([0, 1].map((r) => Mesh.connect(opts(g, r, 2, {
    timeoutMs: 8000, framing: { chunkBytes: r === 0 ? 4096 : 8192, smallBytes: 1024 },
  })).then(() => undefined, (x) => x as GroupcommError)));
  for (const [e, r] of [[e0, 0], [e1, 1]] as const) {
    assert.ok(isGroupcommError(e, ErrorCode.PROTOCOL), String(e));
    assert.equal([e!.rank, e!.peerRank], [r, 1 - r]);
  }
});

/** A listener at a rank's address that answers like a broken or foreign peer. */
async function fakePeer(answer: (s: net.Socket) => void): Promise<net.Server & { at: string }> {
  const srv = net.createServer((s) => { s.on('error', () => {}); answer(s); }) as net.Server & { at: string };
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  srv.at = `127.0.0.1:${(srv.address() as net.AddressInfo).port}`;
  return srv;
}

test('a handshake refused after setup (a foreign challenge; an ACK refusing us): PROTOCOL, that peer only, its dial closed', async () => {
  groups++;
  const g = `meshb-refuse-${groups}`;
  // Five ranks: 2 and 3 are not rank 0's neighbours. After setup they "move" to fake listeners.
  const ms = await Promise.all([0, 1, 2, 3, 4].map((r) => Mesh.connect(opts(g, r, 5))));
  const foreign = await fakePeer((s) => s.write(Buffer.alloc(40, 7)));
  const refusing = await fakePeer((s) => {
    s.write(encodeChallenge(new Uint8Array(32)));
    s.once('data', () => s.write(encodeAck(Status.WRONG_SIZE, 3)));
  });
  const lost: GroupcommError[] = [];
  ms[0].onLost((e) => lost.push(e));
  try {
    for (const r of [2, 3]) inner(ms[r]).listener!.close();
    await file.store.set(addr(g, 2), foreign.at);
    const errs: string[] = [];
    ms[0].send(2, f(1), Uint8Array.of(1), { copy: true }, (e) => errs.push(String(e?.message)));
    await until(() => lost.length > 0);
    assert.is(lost.length, 1);
    assert.ok(isGroupcommError(lost[0], ErrorCode.PROTOCOL), lost[0].message);
    assert.equal([lost[0].rank, lost[0].peerRank], [0, 2]);
    assert.match(lost[0].message, /lost rank 2 \(protocol error: not a groupcomm CPU group/);
    assert.equal(errs, [lost[0].message]);
    assert.ok(inner(ms[0]).dialed[2]?.destroyed, 'the dial to it is closed');
    // A lost mesh connects no more pairs: a frame to rank 3 fails at once, nothing is dialed.
    ms[0].send(3, f(1), Uint8Array.of(1), { copy: true }, (e) => errs.push(String(e?.message)));
    assert.equal(errs, [lost[0].message, 'no connection to rank 3']);
    ms[0].register(3, '2:1:0', sink([]));
    assert.is(inner(ms[0]).inbound[3], undefined);
    // A second mesh, rank 4 this time, meets the refusing ACK: a refusal after setup is a
    // protocol failure even with the world-size status (no setup to fail as a mismatch).
    const lost4: GroupcommError[] = [];
    ms[4].onLost((e) => lost4.push(e));
    await file.store.set(addr(g, 2), refusing.at);
    ms[4].register(2, '2:1:0', sink([]));
    await until(() => lost4.length > 0);
    assert.ok(isGroupcommError(lost4[0], ErrorCode.PROTOCOL), lost4[0]?.message);
    assert.equal([lost4[0].rank, lost4[0].peerRank], [4, 2]);
    assert.ok(inner(ms[4]).dialed[2]?.destroyed);
  } finally {
    foreign.close();
    refusing.close();
    await Promise.all(ms.map((m) => m.close()));
  }
});

test('a peer that breaks the framing: PROTOCOL naming it, both connections to it closed', async () => {
  groups++;
  const g = `meshb-frame-${groups}`;
  const [m0, m1] = await Promise.all([0, 1].map((r) => Mesh.connect(opts(g, r, 2))));
  const lost: GroupcommError[] = [];
  m0.onLost((e) => lost.push(e));
  try {
    // Rank 1 writes a frame header of an unknown kind on the connection it sends to rank 0 on.
    const s = (inner(m1).links[0] as unknown as { s: net.Socket }).s;
    s.write(Buffer.alloc(64, 0xee));
    await until(() => lost.length > 0);
    assert.is(lost.length, 1);
    assert.ok(isGroupcommError(lost[0], ErrorCode.PROTOCOL), lost[0].message);
    assert.equal([lost[0].rank, lost[0].peerRank], [0, 1]);
    assert.match(lost[0].message, /lost rank 1 \(protocol error: /);
    assert.ok(inner(m0).dialed[1]?.destroyed, 'our dial to it');
    const link = inner(m0).links[1] as unknown as { s: net.Socket };
    await until(() => link.s.destroyed);
    assert.ok(link.s.destroyed, 'its dial to us');
  } finally {
    await Promise.all([m0.close(), m1.close()]);
  }
});

test('only the send side closing (the peer stopped reading): lost a second later, not at once', async () => {
  groups++;
  const g = `meshb-later-${groups}`;
  const [m0, m1] = await Promise.all([0, 1].map((r) => Mesh.connect(opts(g, r, 2))));
  const lost: GroupcommError[] = [];
  m0.onLost((e) => lost.push(e));
  try {
    const t0 = Date.now();
    // Rank 1 drops the connection it reads rank 0 from: rank 0's send side ends, its own
    // receive side (rank 1's send side) stays open.
    inner(m1).dialed[0]!.destroy();
    await sleep(500);
    assert.equal(lost, [], 'not lost at once');
    await until(() => lost.length > 0);
    assert.is(lost.length, 1);
    assert.ok(Date.now() - t0 >= 950, `${Date.now() - t0} ms`);
    assert.ok(isGroupcommError(lost[0], ErrorCode.PEER_LOST), lost[0].message);
    assert.is(lost[0].peerRank, 1);
  } finally {
    await Promise.all([m0.close(), m1.close()]);
  }
});

test('close: the listener stops accepting, the address goes, later closes do nothing', async () => {
  groups++;
  const g = `meshb-close-${groups}`;
  const [m0, m1] = await Promise.all([0, 1].map((r) => Mesh.connect(opts(g, r, 2))));
  const port = m0.address.port;
  await Promise.all([m0.close(), m1.close()]);
  assert.not.ok(await file.store.check([addr(g, 0)]));
  const refused = await new Promise<string>((r) => {
    const s = net.connect(port, '127.0.0.1');
    s.on('connect', () => { s.destroy(); r('connected'); });
    s.on('error', (e: NodeJS.ErrnoException) => r(String(e.code)));
  });
  assert.is(refused, 'ECONNREFUSED');
  await file.store.set(addr(g, 0), 'x');
  await m0.close();
  assert.ok(await file.store.check([addr(g, 0)]), 'a second close deletes nothing');
  await file.store.deleteKey(addr(g, 0));
});

test.run();
