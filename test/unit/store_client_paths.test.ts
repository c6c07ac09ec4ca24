// Which requests each read of TcpStore (host/store/client.ts) sends, and on which connection:
// the pipelined one ("main") or a wait connection ("wait"). Recorded at Connection.request, so a
// read that takes the slow path (an extra round trip, a connection opened for nothing, a read on
// a wait connection that could overtake this client's own write) fails here even though every
// value it returns is right.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { TcpStore, TcpStoreServer } from '../../host/index.js';
import { Connection } from '../../host/store/connection.js';
import { Op, WAIT_GET_DELETE } from '../../host/store/protocol.js';

const NAMES = new Map<number, string>(Object.entries(Op).map(([k, v]) => [v as number, k]));
const text = (b: Uint8Array) => Buffer.from(b).toString('utf8');

/** Every request `store` sends from now on, as "main:OP" or "wait:OP" (WAIT_GET's delete flag as WAIT_GET+DEL). */
function recorder(store: TcpStore): { log: string[]; stop(): void } {
  const main = (store as unknown as { main: Connection }).main;
  const waits = (store as unknown as { waitConns: Set<Connection> }).waitConns;
  const log: string[] = [];
  const orig = Connection.prototype.request;
  Connection.prototype.request = function (this: Connection, frame: Buffer | Buffer[], ...rest: unknown[]) {
    const b = Array.isArray(frame) ? frame[0] : frame;
    const where = this === main ? 'main' : waits.has(this) ? 'wait' : undefined;
    if (where) log.push(`${where}:${NAMES.get(b[0])}${b[0] === Op.WAIT_GET && b[1] === WAIT_GET_DELETE ? '+DEL' : ''}`);
    return (orig as (...a: unknown[]) => unknown).call(this, frame, ...rest);
  } as typeof orig;
  return { log, stop: () => { Connection.prototype.request = orig; } };
}

/** A server, the client under test (`ext`: groupcomm's extensions or torch's protocol alone) and a second writer. */
async function trio(ext: boolean, fn: (c: TcpStore, other: TcpStore, log: string[]) => Promise<void>): Promise<void> {
  const server = await TcpStoreServer.listen({ host: '127.0.0.1', port: 0 });
  const c = await TcpStore.create({ port: server.port, timeoutMs: 5000, extensions: ext });
  const other = await TcpStore.create({ port: server.port, timeoutMs: 5000 });
  const r = recorder(c);
  try {
    await fn(c, other, r.log);
  } finally {
    r.stop();
    await c.close();
    await other.close();
    await server.close();
  }
}

/** Lets a write of `other` land while `p` (a read of `c`) waits for it. */
async function writeWhileWaiting<T>(p: Promise<T>, write: () => Promise<unknown>): Promise<T> {
  await new Promise((r) => setTimeout(r, 50));
  await write();
  return p;
}

test('get with extensions: a present key is one TRY_GET on the main connection; a missing one then waits with WAIT_GET (no CHECK first); with an idle wait connection, WAIT_GET alone', async () => {
  await trio(true, async (c, other, log) => {
    await other.set('here', 'h');
    assert.is(text(await c.get('here')), 'h');
    assert.equal(log.splice(0), ['main:TRY_GET']);
    const v = await writeWhileWaiting(c.get('later'), () => other.set('later', 'l'));
    assert.is(text(v), 'l');
    assert.equal(log.splice(0), ['main:TRY_GET', 'wait:WAIT_GET']);
    // The wait connection went back to the pool: the next read goes there, one round trip whether the key is there or not.
    assert.is(text(await c.get('here')), 'h');
    assert.equal(log.splice(0), ['wait:WAIT_GET']);
  });
});

test('get right after this client\'s own write of the key stays on the main connection (a wait connection could overtake the write)', async () => {
  await trio(true, async (c, other, log) => {
    await writeWhileWaiting(c.get('k'), () => other.set('k', 'old')); // leaves an idle wait connection
    log.length = 0;
    const main = (c as unknown as { main: Connection }).main;
    const written = c.set('k', 'new');
    // Sent, not yet answered: the server may not have applied it.
    assert.ok(!main.applied(main.seq), 'the set is still unconfirmed when get is called');
    const got = c.get('k');
    await written;
    assert.is(text(await got), 'new');
    assert.equal(log.splice(0), ['main:SET', 'main:TRY_GET']);
  });
});

test('take with extensions: a present key is TRY_GET then a DELETE_KEY on the main connection; with an idle wait connection, one WAIT_GET with the delete flag', async () => {
  await trio(true, async (c, other, log) => {
    await other.set('a', '1');
    assert.is(text(await c.take('a')), '1');
    assert.equal(log.splice(0), ['main:TRY_GET', 'main:DELETE_KEY']);
    await writeWhileWaiting(c.get('x'), () => other.set('x', 'x'));
    log.length = 0;
    await other.set('b', '2');
    assert.is(text(await c.take('b')), '2');
    assert.equal(log.splice(0), ['wait:WAIT_GET+DEL']);
    assert.not.ok(await other.check(['a']));
    assert.not.ok(await other.check(['b']));
  });
  await trio(true, async (c, other, log) => {
    // A missing key, no idle wait connection: TRY_GET finds nothing, then a consuming WAIT_GET.
    assert.is(text(await writeWhileWaiting(c.take('later'), () => other.set('later', 'l'))), 'l');
    assert.equal(log.splice(0), ['main:TRY_GET', 'wait:WAIT_GET+DEL']);
    assert.not.ok(await other.check(['later']));
  });
});

test('get and take on torch\'s protocol alone: CHECK then GET; a missing key waits with WAIT on a wait connection between them; take deletes after', async () => {
  await trio(false, async (c, other, log) => {
    await other.set('here', 'h');
    assert.is(text(await c.get('here')), 'h');
    assert.equal(log.splice(0), ['main:CHECK', 'main:GET']);
    assert.is(text(await writeWhileWaiting(c.get('later'), () => other.set('later', 'l'))), 'l');
    assert.equal(log.splice(0), ['main:CHECK', 'wait:WAIT', 'main:GET']);
    assert.is(text(await c.take('here')), 'h');
    await c.check(['here']); // the unawaited delete has gone out before this
    assert.equal(log.splice(0), ['main:CHECK', 'main:GET', 'main:DELETE_KEY', 'main:CHECK']);
  });
});

test('multiGet with extensions: CHECK and MULTI_GET back to back when no wait connection is idle; WAIT_GET on an idle one; a missing key then waits with WAIT_GET', async () => {
  await trio(true, async (c, other, log) => {
    await other.multiSet(['m1', 'm2'], ['1', '2']);
    assert.equal((await c.multiGet(['m1', 'm2'])).map(text), ['1', '2']);
    assert.equal(log.splice(0), ['main:CHECK', 'main:MULTI_GET']);
    const v = await writeWhileWaiting(c.multiGet(['m1', 'm3']), () => other.set('m3', '3'));
    assert.equal(v.map(text), ['1', '3']);
    assert.equal(log.splice(0), ['main:CHECK', 'main:MULTI_GET', 'wait:WAIT_GET']);
    assert.equal((await c.multiGet(['m2', 'm3'])).map(text), ['2', '3']);
    assert.equal(log.splice(0), ['wait:WAIT_GET']);
    assert.equal(await c.multiGet([]), []);
    assert.equal(log.splice(0), [], 'no keys, no request');
    // One of the keys just written by this client, not yet confirmed: the whole read stays on the main connection.
    const written = c.set('m2', 'new');
    const got = c.multiGet(['m2', 'm3']);
    await written;
    assert.equal((await got).map(text), ['new', '3']);
    assert.equal(log.splice(0), ['main:SET', 'main:CHECK', 'main:MULTI_GET']);
  });
});

test('multiGet on torch\'s protocol alone: CHECK (then WAIT while a key is missing) and MULTI_GET', async () => {
  await trio(false, async (c, other, log) => {
    await other.multiSet(['m1', 'm2'], ['1', '2']);
    assert.equal((await c.multiGet(['m1', 'm2'])).map(text), ['1', '2']);
    assert.equal(log.splice(0), ['main:CHECK', 'main:MULTI_GET']);
    assert.equal((await writeWhileWaiting(c.multiGet(['m1', 'm3']), () => other.set('m3', '3'))).map(text), ['1', '3']);
    assert.equal(log.splice(0), ['main:CHECK', 'wait:WAIT', 'main:MULTI_GET']);
  });
});

test('queuePop on an empty queue: QUEUE_POP, a wait for the queue (CHECK first where no wait connection is idle), then QUEUE_POP once more', async () => {
  for (const ext of [true, false]) {
    await trio(ext, async (c, other, log) => {
      assert.is(text((await writeWhileWaiting(c.queuePop('q'), () => other.queuePush('q', 'x')))!), 'x');
      assert.equal(log.splice(0), ['main:QUEUE_POP', 'main:CHECK', 'wait:WAIT', 'main:QUEUE_POP'], ext ? 'with extensions' : 'without');
    });
  }
});

test('discard and append: one DELETE_QUIET and APPEND_CHECKED with extensions; a DELETE_KEY per key and APPEND without', async () => {
  await trio(true, async (c, other, log) => {
    await other.multiSet(['d1', 'd2'], ['1', '2']);
    await c.discard(['d1', 'd2']);
    await c.append('q', 'x');
    await c.discard([]);
    assert.equal(log.splice(0), ['main:DELETE_QUIET', 'main:APPEND_CHECKED']);
    assert.not.ok(await other.check(['d1']));
    assert.not.ok(await other.check(['d2']));
  });
  await trio(false, async (c, other, log) => {
    await other.multiSet(['d1', 'd2'], ['1', '2']);
    await c.discard(['d1', 'd2']);
    await c.append('q', 'x');
    assert.equal(log.splice(0), ['main:DELETE_KEY', 'main:DELETE_KEY', 'main:APPEND']);
    assert.not.ok(await other.check(['d1', 'd2']));
    assert.is(text(await other.get('q')), 'x');
  });
});

test('publish through a store that started its server in this process: in memory, nothing on the wire; a store without the local server, or without extensions, sends SET or MULTI_SET', async () => {
  const host = await TcpStore.create({ port: 0, isServer: true, timeoutMs: 5000 });
  const torchHost = await TcpStore.create({ port: 0, isServer: true, timeoutMs: 5000, extensions: false });
  const reader = await TcpStore.create({ port: host.port, timeoutMs: 5000 });
  const recs: { log: string[]; stop(): void }[] = [];
  try {
    let r = recorder(host);
    recs.push(r);
    assert.ok(host.publishesLocally);
    await host.publish(['p1'], [Buffer.from('1')]);
    assert.equal(r.log.splice(0), []);
    assert.is(text(await reader.get('p1')), '1');
    r.stop();
    r = recorder(reader);
    recs.push(r);
    assert.not.ok(reader.publishesLocally);
    await reader.publish([], []);
    assert.equal(r.log.splice(0), [], 'no keys, no request');
    await reader.publish(['p2'], [Buffer.from('2')]);
    await reader.publish(['p3', 'p4'], [Buffer.from('3'), Buffer.from('4')]);
    assert.equal(r.log.splice(0), ['main:SET', 'main:MULTI_SET']);
    assert.equal((await host.multiGet(['p2', 'p3', 'p4'])).map(text), ['2', '3', '4']);
    r.stop();
    r = recorder(torchHost);
    recs.push(r);
    assert.not.ok(torchHost.publishesLocally, 'a client without extensions cannot be told apart from a torch client by its server');
    await torchHost.publish(['p5'], [Buffer.from('5')]);
    assert.equal(r.log.splice(0), ['main:SET']);
    assert.is(text(await torchHost.get('p5')), '5');
  } finally {
    for (const r of recs) r.stop();
    await reader.close();
    await host.close();
    await torchHost.close();
  }
});

test.run();
