// TcpStore's lifecycle and call path (host/store/client_base.ts) against real servers and a
// scripted one (test/helpers/fake_store_server.ts) that holds requests on cue: close() lets
// operations under way finish (a later step of one too) but no longer than its budget or its
// signal, then hands the rest of the budget (and the signal) to the server it started; abort's
// reason; a call's own timeout and signal; subscriptions ended by close().
import net from 'node:net';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { TcpStore, TcpStoreServer } from '../../host/index.js';
import { failure, rejectsWith, within } from '../helpers/rejects.js';
import { scriptedServer } from '../helpers/fake_store_server.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const text = (b: Uint8Array) => Buffer.from(b).toString('utf8');

/** A raw client that never ends its side (allowHalfOpen): only the server can close it. */
async function halfOpen(port: number): Promise<net.Socket> {
  const socket = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
  socket.on('error', () => {});
  await new Promise((r) => socket.once('connect', r));
  return socket;
}

async function connections(server: TcpStoreServer, n: number): Promise<void> {
  for (let t0 = Date.now(); server.numConnections !== n && Date.now() - t0 < 3000;) await sleep(10);
  assert.is(server.numConnections, n);
}

/** A server whose main connection answers until `state.muted` (then reads and answers nothing). */
async function mutedServer() {
  const state = { muted: false };
  const server = await scriptedServer(() => (op) => (state.muted && op !== 0 ? 0 : undefined));
  return { port: server.port, state, close: server.close };
}

test('TcpStoreServer.close({ signal }) with a signal aborted already cuts the half-open clients at once', async () => {
  const server = await TcpStoreServer.listen({ port: 0 });
  const c = await halfOpen(server.port);
  try {
    await connections(server, 1);
    assert.ok(await within(server.close({ signal: AbortSignal.abort(), timeoutMs: 60_000 }), 3000), 'not held by the client');
  } finally {
    c.destroy();
    await server.abort();
  }
});

test('TcpStore.close() hands its server the signal', async () => {
  const a = await TcpStore.create({ port: 0, isServer: true, inProcess: false, timeoutMs: 60_000 });
  const ha = await halfOpen(a.port);
  try {
    await connections(a.server!, 2);
    assert.ok(await within(a.close({ signal: AbortSignal.abort() }), 3000), 'the signal reached the server');
  } finally {
    ha.destroy();
    await a.abort();
  }
});

test('close() lets an operation under way finish, its later steps too; new ones are refused', async () => {
  const s = await TcpStore.create({ port: 0, isServer: true, inProcess: false, timeoutMs: 5000 });
  const t = await TcpStore.create({ port: s.port, extensions: false, timeoutMs: 5000 });
  try {
    await t.set('k', 'v');
    // without extensions a get is CHECK, then GET once the CHECK's reply is in: a second step
    const got = t.get('k');
    const t0 = performance.now();
    const closing = t.close();
    await rejectsWith(t.set('x', 'y'), 'ERR_GROUPCOMM_DESTROYED');
    assert.is(text(await got), 'v');
    await closing;
    assert.ok(performance.now() - t0 < 2500, 'close() returned once the get was done, not at its budget');
  } finally {
    await t.abort();
    await s.close();
  }
});

test('close() ends a subscription with DESTROYED (nothing was cut short)', async () => {
  const s = await TcpStore.create({ port: 0, isServer: true, inProcess: false, timeoutMs: 5000 });
  const t = await TcpStore.create({ port: s.port, timeoutMs: 5000 });
  try {
    const sub = (await t.subscribe('mb/to/0/', () => {}))!;
    const ended = new Promise<Error | undefined>((r) => sub.onClose(r));
    await t.close();
    assert.ok(await within(ended, 3000), 'the subscription ended');
    assert.is(((await ended) as { code?: string }).code, 'ERR_GROUPCOMM_DESTROYED');
  } finally {
    await t.abort();
    await s.close();
  }
});

test('close({ timeoutMs }) aborts what is still in flight at the deadline; close({ signal }) when the signal fires; abort(reason) at once, with the reason as cause', async () => {
  const f = await mutedServer();
  try {
    const c1 = await TcpStore.create({ port: f.port, timeoutMs: 60_000 });
    const c2 = await TcpStore.create({ port: f.port, timeoutMs: 60_000 });
    const c3 = await TcpStore.create({ port: f.port, timeoutMs: 60_000 });
    f.state.muted = true;
    const held1 = failure(c1.ping());
    const t0 = performance.now();
    assert.ok(await within(c1.close({ timeoutMs: 300 }), 3000), 'the deadline ended the wait');
    assert.ok(performance.now() - t0 >= 250);
    let e = await held1;
    assert.is(e.code, 'ERR_GROUPCOMM_ABORTED');
    assert.match(e.message, /close\(\) waited 300ms/);

    const held2 = failure(c2.ping());
    const ac = new AbortController();
    const closing = c2.close({ signal: ac.signal });
    await sleep(50);
    const why = new Error('enough');
    ac.abort(why);
    assert.ok(await within(closing, 3000), 'the signal ended the wait');
    e = await held2;
    assert.is(e.code, 'ERR_GROUPCOMM_ABORTED');
    assert.is(e.cause, why);

    const held3 = failure(c3.ping());
    await c3.abort('why not');
    e = await held3;
    assert.is(e.code, 'ERR_GROUPCOMM_ABORTED');
    assert.is(e.cause, 'why not');
  } finally {
    await f.close();
  }
});

test('close() returns as soon as the requests in flight are answered', async () => {
  const s = await TcpStore.create({ port: 0, isServer: true, inProcess: false, timeoutMs: 5000 });
  const t = await TcpStore.create({ port: s.port, timeoutMs: 5000 });
  try {
    const done = t.set('a', 'b');
    const t0 = performance.now();
    await t.close({ timeoutMs: 5000 });
    await done;
    assert.ok(performance.now() - t0 < 2500, 'not at the end of its budget');
  } finally {
    await t.abort();
    await s.close();
  }
});

test('a call\'s own timeout and signal: guarded (its fields, no watchdog wording); without either, the connection\'s watchdog', async () => {
  const f = await mutedServer();
  const c = await TcpStore.create({ port: f.port, timeoutMs: 1100 });
  try {
    await c.ping({ signal: AbortSignal.abort() }).then(() => assert.unreachable('an aborted signal sends nothing'), (e) => {
      assert.is(e.code, 'ERR_GROUPCOMM_ABORTED');
    });
    f.state.muted = true;
    let e = await rejectsWith(c.add('k', 1, { timeoutMs: 200 }), 'ERR_GROUPCOMM_TIMEOUT');
    assert.is(e.key, 'k');
    assert.is(e.timeoutMs, 200);
    assert.ok(e.elapsedMs >= 150, String(e.elapsedMs));
    assert.not.match(e.message, /no completed write|no reply/, 'the call\'s guard, not the watchdog');
    const ac = new AbortController();
    const held = failure(c.ping({ signal: ac.signal }));
    await sleep(30);
    ac.abort();
    assert.ok(await within(held, 900), 'the signal ended it'); // its 1100 ms timeout would come ~1070 ms after the abort
    assert.is((await held).code, 'ERR_GROUPCOMM_ABORTED');
    // no timeout or signal given: the connection's watchdog (a tick each second) times it out
    e = await rejectsWith(c.ping(), 'ERR_GROUPCOMM_TIMEOUT');
    assert.match(e.message, /no reply/);
  } finally {
    await c.abort();
    await f.close();
  }
});

// Last: a budget computed wrongly from performance.now() (the process's age) shows only once
// that age is seconds, as it is after the cases above.
test('TcpStore.close({ timeoutMs }) hands its server what is left of the budget', async () => {
  const b = await TcpStore.create({ port: 0, isServer: true, inProcess: false, timeoutMs: 60_000 });
  const hb = await halfOpen(b.port);
  try {
    await connections(b.server!, 2);
    const t0 = performance.now();
    assert.ok(await within(b.close({ timeoutMs: 400 }), 2000), 'the budget reached the server');
    assert.ok(performance.now() - t0 >= 300, 'the server waited for its half-open client within the budget');
  } finally {
    hb.destroy();
    await b.abort();
  }
});

test.run();
