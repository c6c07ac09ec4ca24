// One lifecycle for the store client and server, PrefixStore, the process group, the CPU group
// and the coordinator (host/base/lifecycle.ts): close() lets what is in flight finish and then
// refuses, close({ timeoutMs }) gives up on the rest with ABORTED, abort() rejects what is in
// flight with ABORTED at once, both are idempotent (one promise), and `await using` closes.
// Every object here is real: sockets on 127.0.0.1, a real TcpStoreServer.
import { test } from 'uvu';
import net from 'node:net';
import * as assert from 'uvu/assert';
import { TcpStore, TcpStoreServer, PrefixStore } from '../../host/store/index.js';
import { StatelessProcessGroup } from '../../host/pg/group.js';
import { CpuGroup } from '../../host/cpu/group.js';
import { StatelessGroupCoordinator } from '../../host/coordinator/coordinator.js';
import { empty, tensor, type CpuTensor } from '../../host/core/tensor.js';
import { sleep } from '../../host/base/deadline.js';
import { ErrorCode } from '../../host/base/errors.js';
import { MemStoreServer } from '../helpers/memstore.js';
import { rejectsWith } from '../helpers/rejects.js';

const TIMEOUT = 10_000;
const text = (b: Uint8Array) => Buffer.from(b).toString();

/** `p`, marked as handled now (it may reject before the test awaits it). */
function inFlight<T>(p: Promise<T>): Promise<T> {
  p.catch(() => {});
  return p;
}

/** Rejects if `p` has not settled within `ms` (a liveness bound, not a speed claim). */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`${what}: still pending after ${ms}ms`)), ms); });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

/** True once `p` has settled (checked after a short pause: "still pending" is the claim). */
async function settledYet(p: Promise<unknown>): Promise<boolean> {
  let done = false;
  p.then(() => (done = true), () => (done = true));
  await sleep(40);
  return done;
}

/** Rejects with ABORTED, and `reason` is in the error or along its causes. */
async function aborted(p: Promise<unknown>, reason: string): Promise<void> {
  const e = await rejectsWith(p, ErrorCode.ABORTED);
  const chain: unknown[] = [];
  for (let x: unknown = e; x !== undefined && chain.length < 8; x = (x as { cause?: unknown }).cause) chain.push(x);
  assert.ok(chain.some((x) => x === reason || (x instanceof Error && x.message.includes(reason))),
    `the reason reaches the error: ${chain.map(String).join(' <- ')}`);
}

/** Waits until `s` holds `n` connections. */
async function connections(s: TcpStoreServer, n: number): Promise<void> {
  for (let i = 0; s.numConnections < n; i++) {
    if (i > 2000) throw new Error(`${s.numConnections} connections, expected ${n}`);
    await sleep(5);
  }
}

/**
 * Leaves `c` with an open, idle wait connection, so that its next wait is on the server at once
 * (a wait that is still connecting when its server goes away retries until its timeout).
 */
async function warmWaitConnection(c: TcpStore): Promise<void> {
  const w = c.wait(['warm']);
  await c.set('warm', '1');
  await w;
}

let server: TcpStoreServer;
test.before(async () => {
  server = await TcpStoreServer.listen({ port: 0 });
});
test.after(async () => {
  await server.close({ timeoutMs: 2000 });
});
const client = () => TcpStore.create({ port: server.port, timeoutMs: TIMEOUT });

test('TcpStore: close() refuses new calls at once but lets a get in flight finish; one promise', async () => {
  const [a, b] = await Promise.all([client(), client()]);
  const got = inFlight(a.get('ts/late'));
  await sleep(20);
  const closing = a.close();
  assert.is(a.close(), closing);
  await rejectsWith(a.set('ts/x', 'y'), ErrorCode.DESTROYED);
  assert.not.ok(await settledYet(closing), 'close waits for the get in flight');
  await b.set('ts/late', 'v');
  assert.is(text(await got), 'v');
  await closing;
  assert.is(a.abort('after'), closing, 'abort after close: the same promise');
  await b.close();
});

test('TcpStore: close({ timeoutMs }) aborts what is still in flight; abort() rejects at once; later calls DESTROYED', async () => {
  const a = await client();
  const w = inFlight(a.wait(['ts/never']));
  await a.close({ timeoutMs: 50 });
  await aborted(w, 'close() waited 50ms');
  const c = await client();
  const w2 = inFlight(c.wait(['ts/never']));
  await sleep(20);
  const ab = c.abort('stop');
  await aborted(w2, 'stop');
  assert.is(c.abort(), ab);
  assert.is(c.close(), ab);
  await ab;
  await rejectsWith(c.get('ts/x'), ErrorCode.DESTROYED);
});

test('TcpStoreServer: close() ends every connection (a blocked client sees PEER_LOST) and waits for them; abort() cuts it short', async () => {
  const s = await TcpStoreServer.listen({ port: 0 });
  const c = await TcpStore.create({ port: s.port, timeoutMs: TIMEOUT });
  await warmWaitConnection(c);
  const w = inFlight(c.wait(['never']));
  await sleep(20);
  const closing = s.close();
  assert.is(s.close(), closing);
  await rejectsWith(w, ErrorCode.PEER_LOST);
  await closing;
  await c.close();
  // A client that keeps its side open (half-open) holds a graceful close; abort() cuts it short.
  const s2 = await TcpStoreServer.listen({ port: 0 });
  const raw = net.connect({ port: s2.port, host: '127.0.0.1', allowHalfOpen: true });
  await new Promise((resolve) => raw.once('connect', resolve));
  await connections(s2, 1);
  const ended = new Promise((resolve) => raw.once('end', resolve));
  const closing2 = s2.close();
  await ended; // the server ended its side (FIN, after any replies), it did not reset the connection
  assert.not.ok(await settledYet(closing2), 'close waits for the client to hang up');
  const ab = s2.abort('stop');
  assert.is(ab, closing2);
  await within(ab, TIMEOUT, 'abort() of a closing server');
  raw.destroy();
});

test('PrefixStore: close and abort end the view, never the store it wraps', async () => {
  const [a, b] = await Promise.all([client(), client()]);
  const view = new PrefixStore('pv', a);
  const got = inFlight(view.get('k'));
  await sleep(20);
  const closing = view.close();
  await rejectsWith(view.set('k2', 'x'), ErrorCode.DESTROYED);
  assert.not.ok(await settledYet(closing), 'close waits for the get through the view');
  await b.set('pv/k', 'v');
  assert.is(text(await got), 'v');
  await closing;
  const v2 = new PrefixStore('pv', a);
  const w = inFlight(v2.wait(['never']));
  const ab = v2.abort('stop');
  await aborted(w, 'stop');
  assert.is(v2.abort(), ab);
  await a.set('still', 'open'); // the wrapped store is untouched
  await Promise.all([a.close(), b.close()]);
});

test('many operations in flight on one object raise no listener-leak warning (its lifetime signal is shared by design)', async () => {
  const warnings: string[] = [];
  const onWarning = (w: Error) => warnings.push(`${w.name}: ${w.message}`);
  process.on('warning', onWarning);
  const [a, b] = await Promise.all([client(), client()]);
  try {
    const view = new PrefixStore('many', a);
    // 24 gets waiting at once, as 24 ranks of one process joining a group through one store.
    const gets = [...Array(24).keys()].map((i) => view.get(`k${i}`));
    await sleep(30);
    await Promise.all([...Array(24).keys()].map((i) => b.set(`many/k${i}`, String(i))));
    assert.equal((await Promise.all(gets)).map(text), [...Array(24).keys()].map(String));
    await sleep(10); // warnings are emitted on a later tick
    assert.equal(warnings.filter((w) => w.includes('MaxListeners')), []);
  } finally {
    process.off('warning', onWarning);
    await Promise.all([a.close(), b.close()]);
  }
});

test('StatelessProcessGroup: close() lets a recv in flight finish, then departs; abort() rejects with ABORTED', async () => {
  const mem = new MemStoreServer();
  const make = (rank: number, groupName: string) =>
    StatelessProcessGroup.create({ rank, worldSize: 2, store: mem.client(), timeoutMs: TIMEOUT, groupName });
  const [a, b] = await Promise.all([make(0, 'lc'), make(1, 'lc')]);
  const got = inFlight(b.recvObj(0));
  const closing = b.close();
  assert.is(b.close(), closing);
  await rejectsWith(b.sendObj(1, 0), ErrorCode.DESTROYED);
  assert.not.ok(await settledYet(closing), 'close waits for the recv in flight');
  await a.sendObj('hi', 1);
  assert.is(await got, 'hi');
  await Promise.all([closing, a.close()]);
  assert.equal([...mem.data.keys()].filter((k) => k.startsWith('lc/') && k !== 'lc/epoch'), [], 'the departure cleaned up');

  const [c, d] = await Promise.all([make(0, 'lc2'), make(1, 'lc2')]);
  const r = inFlight(d.recvObj(0));
  const ab = d.abort('stop');
  await aborted(r, 'stop');
  assert.is(d.close(), ab);
  assert.is(d.destroy(), ab);
  await rejectsWith(d.barrier(), ErrorCode.DESTROYED);
  await c.destroy({ force: true });

  // An operation stuck in a store that ignores signals (a server that stopped answering, say):
  // abort() still rejects it at once.
  const [e, f] = await Promise.all([make(0, 'lc3'), make(1, 'lc3')]);
  const never = () => new Promise<never>(() => {});
  Object.assign(f.store, { set: never, multiSet: never, publish: never });
  const stuck = inFlight(f.sendObj('x', 0));
  await sleep(10);
  void f.abort('stop');
  await aborted(within(stuck, TIMEOUT, 'a send stuck in the store'), 'stop');
  await e.destroy({ force: true });
});

test('CpuGroup: close() lets a recv in flight finish; abort() rejects with ABORTED; destroy is close', async () => {
  const store = await client();
  const pair = (groupName: string) => Promise.all([0, 1].map((rank) =>
    CpuGroup.create({ store, rank, worldSize: 2, groupName, timeoutMs: TIMEOUT })));
  const [a, b] = await pair('lc-cpu');
  const got = inFlight(b.recv(empty([2], 'float32'), 0));
  const closing = b.close();
  assert.is(b.destroy(), closing);
  await rejectsWith(b.barrier(), ErrorCode.DESTROYED);
  assert.not.ok(await settledYet(closing), 'close waits for the recv in flight');
  await a.send(tensor(new Float32Array([1, 2])), 1);
  assert.equal([...((await got) as CpuTensor).data], [1, 2]);
  await Promise.all([closing, a.close()]);

  const [c, d] = await pair('lc-cpu2');
  const r = inFlight(d.recv(empty([1], 'int32'), 0));
  const ab = d.abort('stop');
  await aborted(r, 'stop');
  assert.is(d.abort(), ab);
  await Promise.all([ab, c.close()]);
  await store.close();
});

test('StatelessGroupCoordinator: close() finishes the op in flight; abort() rejects with ABORTED; destroy() is close()', async () => {
  const stores = await Promise.all([client(), client()]);
  const pair = (groupName: string) => Promise.all(stores.map((rendezvous, r) => StatelessGroupCoordinator.create({
    groupRanks: [[0, 1]], globalRank: r, groupName, rendezvous, timeoutMs: TIMEOUT,
  })));
  const [a, b] = await pair('lc-co');
  const got = inFlight(b.recvObject(0));
  const got2 = inFlight(b.recvObject(0)); // queued behind the first: close() waits for it too
  const closing = b.close({ lingerMs: 2000 });
  assert.is(b.destroy(), closing);
  await rejectsWith(b.barrier(), ErrorCode.DESTROYED);
  assert.not.ok(await settledYet(closing), 'close waits for the recv in flight');
  await a.sendObject('hi', 1);
  assert.is(await got, 'hi');
  await a.sendObject('again', 1);
  assert.is(await got2, 'again');
  await Promise.all([closing, a.close({ lingerMs: 2000 })]);
  assert.ok(a.destroyed && b.destroyed);

  const [c, d] = await pair('lc-co2');
  const r = inFlight(d.recvObject(0));
  const ab = d.abort('stop');
  await aborted(r, 'stop');
  assert.is(d.close(), ab);
  await Promise.all([ab, c.close({ lingerMs: 200 })]);
  await Promise.all(stores.map((s) => s.close()));
});

test('await using closes every kind at the end of its block (Symbol.asyncDispose is close())', async () => {
  assert.is(typeof Symbol.asyncDispose, 'symbol', 'this runtime has Symbol.asyncDispose');
  let kept: { store: TcpStore; view: PrefixStore; pg: StatelessProcessGroup; cpu: CpuGroup; coord: StatelessGroupCoordinator; srv: TcpStoreServer };
  {
    await using srv = await TcpStoreServer.listen({ port: 0 });
    await using store = await TcpStore.create({ port: srv.port, timeoutMs: TIMEOUT });
    await using view = new PrefixStore('u', store);
    await using pg = await StatelessProcessGroup.create({ rank: 0, worldSize: 1, store, timeoutMs: TIMEOUT, groupName: 'using' });
    await using cpu = await CpuGroup.create({ store, rank: 0, worldSize: 1, groupName: 'using', timeoutMs: TIMEOUT });
    await using coord = await StatelessGroupCoordinator.create({ groupRanks: [[0]], globalRank: 0, groupName: 'using' });
    await view.set('k', 'v');
    kept = { store, view, pg, cpu, coord, srv };
  }
  await rejectsWith(kept.coord.barrier(), ErrorCode.DESTROYED);
  await rejectsWith(kept.cpu.barrier(), ErrorCode.DESTROYED);
  await rejectsWith(kept.pg.barrier(), ErrorCode.DESTROYED);
  await rejectsWith(kept.view.get('k'), ErrorCode.DESTROYED);
  await rejectsWith(kept.store.get('u/k'), ErrorCode.DESTROYED);
  assert.is(kept.srv.connectLocal(), undefined, 'the server is closed');
});

test.run();
