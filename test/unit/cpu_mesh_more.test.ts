/**
 * The CPU group's mesh (host/cpu/mesh.ts) on its own, without a group above it: which peers
 * setup connects, a world of one, two meshes over loopback (transportOf, connectedPeers, send's
 * refusals, a goodbye, close), and a setup that times out or is aborted (its address removed).
 */
import { test } from 'uvu';
import net from 'node:net';
import { getEventListeners } from 'node:events';
import * as assert from 'uvu/assert';
import { Mesh, setupPeers, type MeshOptions } from '../../host/cpu/mesh.js';
import { meshFile, addrKey } from '../helpers/mesh_file.js';
import { KIND_P2P } from '../../host/cpu/wire.js';
import { ErrorCode, isGroupcommError, type GroupcommError } from '../../host/base/errors.js';
import { withEnv } from '../helpers/env.js';

const file = meshFile();
let groups = 0;
const opts = file.opts;
const addr = addrKey;
const has = (k: string) => file.store.check([k]);

test('setupPeers: the ring neighbours, and with a hub that rank (the hub itself: everyone); an unknown hub is ignored', () => {
  assert.equal(setupPeers(0, 1), []);
  assert.equal(setupPeers(0, 1, 0), []);
  assert.equal(setupPeers(0, 2), [1]);
  assert.equal(setupPeers(1, 2), [0]);
  assert.equal(setupPeers(0, 5), [1, 4]);
  assert.equal(setupPeers(2, 5), [1, 3]);
  assert.equal(setupPeers(4, 5), [0, 3]);
  assert.equal(setupPeers(2, 6, 2), [0, 1, 3, 4, 5]);
  assert.equal(setupPeers(0, 6, 0), [1, 2, 3, 4, 5]);
  assert.equal(setupPeers(2, 6, 4), [1, 3, 4]);
  assert.equal(setupPeers(2, 6, 0), [0, 1, 3]);
  assert.equal(setupPeers(2, 6, 5), [1, 3, 5]);
  for (const hub of [-1, 6, 7, 1.5 * 0 - 2]) assert.equal(setupPeers(2, 6, hub), [1, 3], `hub ${hub}`);
  assert.equal(setupPeers(0, 3, 3), [1, 2]);
});

test('a world of one: no listener, no address published, nothing to close', async () => {
  const before = await file.store.numKeys();
  const m = await Mesh.connect(opts('mesh-one', 0, 1));
  assert.equal(m.address, { host: '', port: 0 });
  assert.is(await file.store.numKeys(), before);
  assert.is(m.transportOf(0), 'self');
  assert.equal(m.connectedPeers(), []);
  await m.close();
});

test('two meshes over loopback: tcp both ways; send refuses itself, unknown ranks and frames above the peer\'s maximum', async () => {
  groups++;
  const g = `mesh-two-${groups}`;
  const [m0, m1] = await Promise.all([Mesh.connect(opts(g, 0, 2, { maxFrameBytes: 8 })), Mesh.connect(opts(g, 1, 2, { maxFrameBytes: 16 }))]);
  try {
    assert.is(m0.transportOf(0), 'self');
    assert.is(m0.transportOf(1), 'tcp');
    assert.is(m1.transportOf(0), 'tcp');
    assert.equal(m0.connectedPeers(), [1]);
    assert.equal(m1.connectedPeers(), [0]);
    assert.ok(m0.address.port > 0);
    assert.is(m0.address.host, '127.0.0.1');
    assert.is(Buffer.from(await file.store.get(addr(g, 0))).toString(), `127.0.0.1:${m0.address.port}`);
    const frame = { kind: KIND_P2P, tag: 3, seq: 0, slot: 0 };
    const results: string[] = [];
    const send = (m: Mesh, peer: number, n: number) => new Promise<void>((resolve) => {
      m.send(peer, frame, new Uint8Array(n), { copy: true }, (e) => {
        results.push(e === undefined || e === null ? 'ok' : isGroupcommError(e) ? `${e.code} ${e.rank} ${e.peerRank}` : `Error ${e.message}`);
        resolve();
      });
    });
    for (const peer of [0, -1, 2, NaN]) await send(m0, peer, 1);
    assert.equal(results, ['Error no connection to rank 0', 'Error no connection to rank -1', 'Error no connection to rank 2', 'Error no connection to rank NaN']);
    results.length = 0;
    // Rank 1 accepts 8 bytes (m0's maximum is its own): 8 go, 9 do not; rank 0 accepts 16.
    const got: number[] = [];
    m0.register(1, '2:3:0', { dest: () => null, done: (_s, b) => { got.push(b.byteLength); }, fail: () => {} });
    m1.register(0, '2:3:0', { dest: () => null, done: (_s, b) => { got.push(100 + b.byteLength); }, fail: () => {} });
    await send(m0, 1, 16);
    await send(m0, 1, 17);
    await send(m1, 0, 8);
    await send(m1, 0, 9);
    assert.equal(results, ['ok', `${ErrorCode.INVALID_ARGUMENT} 0 1`, 'ok', `${ErrorCode.INVALID_ARGUMENT} 1 0`]);
    // A verdict reaches the peer's onVerdict with our rank, the seq and our fingerprint.
    const verdicts: number[][] = [];
    m1.onVerdict((peer, seq, fp) => verdicts.push([peer, seq, fp]));
    m0.sendVerdict(1, 7, 0xfeedbeef);
    const until = Date.now() + 5000;
    while (got.length < 2 && Date.now() < until) await new Promise((r) => setTimeout(r, 5));
    assert.equal(got.sort((a, b) => a - b), [8, 116], "each side got the frame within its maximum");
    while (!verdicts.length && Date.now() < until) await new Promise((r) => setTimeout(r, 5));
    assert.equal(verdicts, [[0, 7, 0xfeedbeef]]);
  } finally {
    await Promise.all([m0.close(), m1.close()]);
  }
  assert.not.ok(await has(addr(g, 0)), 'close deletes our address');
  assert.not.ok(await has(addr(g, 1)));
});

test('a goodbye: the peer is departed once (onDeparted), frames to it fail; close is idempotent and ends sends', async () => {
  groups++;
  const g = `mesh-bye-${groups}`;
  const [m0, m1] = await Promise.all([Mesh.connect(opts(g, 0, 2)), Mesh.connect(opts(g, 1, 2))]);
  const departed: number[] = [];
  const lost: GroupcommError[] = [];
  m0.onDeparted((p) => departed.push(p));
  m0.onLost((e) => lost.push(e));
  await m1.close();
  await m1.close();
  const until = Date.now() + 5000;
  while (!departed.length && Date.now() < until) await new Promise((r) => setTimeout(r, 5));
  assert.equal(departed, [1]);
  assert.ok(m0.departed.has(1));
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(lost, [], 'a departure is no loss');
  const errs: string[] = [];
  m1.send(0, { kind: KIND_P2P, tag: 0, seq: 0, slot: 0 }, new Uint8Array(1), {}, (e) => errs.push(String(e?.message)));
  assert.equal(errs, ['no connection to rank 0'], 'a closed mesh sends nothing');
  await m0.close();
  assert.not.ok(await has(addr(g, 0)));
});

test('a setup that times out names the ranks it has no handshake with, and leaves no address behind', async () => {
  groups++;
  const g = `mesh-timeout-${groups}`;
  const t0 = Date.now();
  const e = await Mesh.connect(opts(g, 0, 3, { timeoutMs: 600 })).then(() => undefined, (x) => x as GroupcommError);
  assert.ok(isGroupcommError(e, ErrorCode.TIMEOUT), String(e));
  assert.is(e!.rank, 0);
  assert.ok(Date.now() - t0 < 5000);
  assert.not.ok(await has(addr(g, 0)), 'its own address is deleted');
  // Every address published, but the peers never answer: the mesh's own timer names them.
  const silent = net.createServer((s) => { s.on('error', () => {}); });
  await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
  const at = `127.0.0.1:${(silent.address() as net.AddressInfo).port}`;
  const g2 = `${g}-silent`;
  await file.store.set(addr(g2, 1), at);
  await file.store.set(addr(g2, 2), at);
  try {
    const e2 = await Mesh.connect(opts(g2, 0, 3, { timeoutMs: 800, helloTimeoutMs: 5000 })).then(() => undefined, (x) => x as GroupcommError);
    assert.ok(isGroupcommError(e2, ErrorCode.TIMEOUT), String(e2));
    assert.match(e2!.message, /mesh not connected after 800ms; no handshake with ranks 1, 2$/);
    assert.equal([e2!.rank, e2!.peerRanks, e2!.timeoutMs], [0, [1, 2], 800]);
    assert.not.ok(await has(addr(g2, 0)));
  } finally {
    silent.close();
    for (const r of [1, 2]) await file.store.deleteKey(addr(g2, r));
  }
});

test('an aborted setup rejects with ABORTED at once and leaves no address behind', async () => {
  groups++;
  const g = `mesh-abort-${groups}`;
  // Rank 0 is a listener that never answers: setup then waits for its handshake.
  let dialed!: () => void;
  const dialedP = new Promise<void>((r) => { dialed = r; });
  const silent = net.createServer((s) => { s.on('error', () => {}); dialed(); });
  await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
  await file.store.set(addr(g, 0), `127.0.0.1:${(silent.address() as net.AddressInfo).port}`);
  const ac = new AbortController();
  try {
    const p = Mesh.connect(opts(g, 1, 2, { signal: ac.signal, timeoutMs: 20_000, helloTimeoutMs: 20_000 })).then(() => undefined, (x) => x as GroupcommError);
    await dialedP;
    const t0 = Date.now();
    const reason = new Error('stop');
    ac.abort(reason);
    const e = await p;
    assert.ok(isGroupcommError(e, ErrorCode.ABORTED), String(e));
    assert.is(e!.rank, 1);
    assert.is(e!.cause, reason);
    assert.ok(Date.now() - t0 < 3000);
    assert.not.ok(await has(addr(g, 1)));
    // The dial to rank 0, even one that connected only after the abort, is closed (it would
    // otherwise stay open, the silent peer never answering, and keep the process alive).
    const open = () => new Promise<number>((r) => silent.getConnections((_e, n) => r(n)));
    const until = Date.now() + 3000;
    while ((await open()) > 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 10));
    assert.is(await open(), 0, 'no connection left open');
  } finally {
    silent.close();
    await file.store.deleteKey(addr(g, 0));
  }
});

test('four ranks: a pair that is not ring neighbours is \'none\' until a send connects it; its frames wait and arrive in order', async () => {
  groups++;
  const g = `mesh-four-${groups}`;
  const ms = await Promise.all([0, 1, 2, 3].map((r) => Mesh.connect(opts(g, r, 4))));
  try {
    assert.is(ms[0].transportOf(2), 'none');
    assert.equal(ms[0].connectedPeers(), [1, 3]);
    const got: string[] = [];
    ms[2].register(0, '2:8:0', { dest: () => null, done: (slot, b) => { got.push(`${slot}:${b[0]}`); }, fail: () => {} });
    const done: string[] = [];
    for (let i = 0; i < 3; i++) ms[0].send(2, { kind: KIND_P2P, tag: 8, seq: 0, slot: i }, Uint8Array.of(10 + i), { copy: true }, (e) => done.push(e ? String(e) : `ok ${i}`));
    const until = Date.now() + 5000;
    while (got.length < 3 && Date.now() < until) await new Promise((r) => setTimeout(r, 5));
    assert.equal(got, ['0:10', '1:11', '2:12']);
    assert.equal(done, ['ok 0', 'ok 1', 'ok 2']);
    assert.is(ms[0].transportOf(2), 'tcp');
    assert.is(ms[2].transportOf(0), 'tcp');
    assert.equal(ms[0].connectedPeers(), [1, 2, 3]);
    assert.equal(ms[2].connectedPeers(), [0, 1, 3]);
    // Frames still waiting for their pair when the mesh closes fail with the reason.
    const waiting: string[] = [];
    ms[1].send(3, { kind: KIND_P2P, tag: 8, seq: 0, slot: 0 }, Uint8Array.of(1), { copy: true }, (e) => waiting.push(String(e?.message)));
    await ms[1].close();
    assert.equal(waiting, ['the group was closed']);
  } finally {
    await Promise.all(ms.map((m) => m.close()));
  }
});

test('shared memory both ways between two ranks of this host: transportOf says shm', async () => {
  groups++;
  const g = `mesh-shm-${groups}`;
  const ac = new AbortController();
  const [m0, m1] = await Promise.all([0, 1].map((r) => Mesh.connect(opts(g, r, 2, { transport: 'shm', signal: ac.signal }))));
  try {
    assert.is(getEventListeners(ac.signal, 'abort').length, 0, 'a finished setup leaves no listener on the caller\'s signal');
    assert.is(m0.transportOf(1), 'shm');
    assert.is(m1.transportOf(0), 'shm');
  } finally {
    await Promise.all([m0.close(), m1.close()]);
  }
});

test('a setup whose peer refuses every dial fails, and deletes that peer\'s stale address as well as its own', async () => {
  groups++;
  const g = `mesh-stale-${groups}`;
  const closed = net.createServer();
  await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
  const port = (closed.address() as net.AddressInfo).port;
  await new Promise<void>((r) => closed.close(() => r()));
  await file.store.set(addr(g, 1), `127.0.0.1:${port}`);
  const t0 = Date.now();
  const e = await Mesh.connect(opts(g, 0, 2, { timeoutMs: 700 })).then(() => undefined, (x) => x as GroupcommError);
  assert.ok(isGroupcommError(e), String(e));
  assert.ok(Date.now() - t0 >= 600, `a refused dial is retried until the setup's deadline (${Date.now() - t0} ms)`);
  assert.is(e!.rank, 0);
  assert.not.ok(await has(addr(g, 0)), 'its own address');
  assert.not.ok(await has(addr(g, 1)), 'the address of the rank that refused');
});

test('advertiseHost is the address published (the listener may be a wildcard); discard drops a key from the peers named only', async () => {
  groups++;
  const g = `mesh-adv-${groups}`;
  const ms = await Promise.all([0, 1, 2].map((r) => Mesh.connect(opts(g, r, 3, r === 0 ? { host: '0.0.0.0', advertiseHost: '127.0.0.1' } : {}))));
  try {
    assert.equal(ms[0].address.host, '127.0.0.1');
    assert.is(Buffer.from(await file.store.get(addr(g, 0))).toString(), `127.0.0.1:${ms[0].address.port}`);
    ms[0].discard('2:5:0', [1]);
    const f = { kind: KIND_P2P, tag: 5, seq: 0, slot: 0 };
    const sent = Promise.all([1, 2].map((r) => new Promise<void>((res) => ms[r].send(0, f, Uint8Array.of(r), { copy: true }, () => res()))));
    await sent;
    await new Promise((r) => setTimeout(r, 100));
    const got: number[] = [];
    for (const r of [1, 2]) ms[0].register(r, '2:5:0', { dest: () => null, done: (_s, b) => { got.push(b[0]); }, fail: () => {} });
    assert.equal(got, [2], 'rank 1\'s frame was dropped, rank 2\'s kept');
    // Unregistered: a later frame is kept again, not handed to the old sink.
    ms[0].unregister(2, '2:5:0');
    await new Promise<void>((res) => ms[2].send(0, { ...f, slot: 1 }, Uint8Array.of(7), { copy: true }, () => res()));
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(got, [2]);
  } finally {
    await Promise.all(ms.map((m) => m.close()));
  }
});

test('a peer that vanishes without a goodbye is lost: onLost once with PEER_LOST naming it; later sends fail', async () => {
  groups++;
  const g = `mesh-lost-${groups}`;
  const [m0, m1] = await Promise.all([0, 1].map((r) => Mesh.connect(opts(g, r, 2))));
  const lost: GroupcommError[] = [];
  m0.onLost((e) => lost.push(e));
  // Rank 1 "crashes": its sockets go without a goodbye.
  const inner = m1 as unknown as { dialed: (net.Socket | undefined)[]; links: ({ destroy(): void } | undefined)[] };
  for (const s of inner.dialed) s?.destroy();
  for (const l of inner.links) l?.destroy();
  const until = Date.now() + 5000;
  while (!lost.length && Date.now() < until) await new Promise((r) => setTimeout(r, 5));
  await new Promise((r) => setTimeout(r, 50));
  assert.is(lost.length, 1);
  assert.ok(isGroupcommError(lost[0], ErrorCode.PEER_LOST), lost[0].message);
  assert.equal([lost[0].rank, lost[0].peerRank, lost[0].peerRanks], [0, 1, undefined]);
  assert.match(lost[0].message, /rank 0: lost rank 1 \(/);
  assert.not.ok(m0.departed.has(1));
  await Promise.all([m0.close(), m1.close()]);
});

test('liveness in a real mesh: heartbeats keep idle pairs alive, unconnected pairs are not watched; a peer that stops sending is lost, named', async () => {
  groups++;
  const g = `mesh-live-${groups}`;
  // loose: a starved machine fires timers late
  await withEnv({ GROUPCOMM_LIVENESS_MS: '1000' }, async () => {
    // Four ranks: 0 and 2 are not connected (nothing to watch between them).
    const ms = await Promise.all([0, 1, 2, 3].map((r) => Mesh.connect(opts(g, r, 4))));
    const [m0, m1] = ms;
    const lost: GroupcommError[][] = [[], [], [], []];
    ms.forEach((m, r) => m.onLost((e) => lost[r].push(e)));
    await new Promise((r) => setTimeout(r, 1300));
    assert.equal(lost, [[], [], [], []], 'an idle mesh is kept alive by its heartbeats; an unconnected pair is not watched');
    assert.is(m0.transportOf(2), 'none');
    // Rank 1 stops its heartbeats (a stuck process): rank 0 hears nothing more from it.
    (m1 as unknown as { stopLiveness?: () => void }).stopLiveness?.();
    const until = Date.now() + 5000;
    while (!lost[0].length && Date.now() < until) await new Promise((r) => setTimeout(r, 10));
    assert.is(lost[0].length, 1);
    assert.ok(isGroupcommError(lost[0][0], ErrorCode.PEER_LOST), lost[0][0].message);
    assert.is(lost[0][0].peerRank, 1);
    assert.match(lost[0][0].message, /lost rank 1 \(nothing received for \d+ ms/);
    await Promise.all(ms.map((m) => m.close()));
  });
});

test.run();
