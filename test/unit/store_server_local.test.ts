// TcpStoreServer's in-process API (server.ts: subscribeLocal, publishLocal) at its edges: the
// arguments it refuses, a prefix already held, a closed handle closed again after another
// subscriber took the prefix, the limits checked before anything is written, and a consuming
// WAIT_GET completed by publishLocal (its keys deleted once the publish is done).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { TcpStoreServer } from '../../host/index.js';
import { GroupcommError } from '../../host/base/errors.js';
import { Raw, VALIDATE, keys, ping, str } from './store_raw.js';

const WAIT_GET = 0xe4, MULTI_SET = 11;
const bytes = (s: string) => new Uint8Array(Buffer.from(s));
const noop = () => {};

function throwsCode(fn: () => unknown, code: string, what: string): GroupcommError {
  try {
    fn();
  } catch (e) {
    assert.instance(e, GroupcommError, what);
    assert.is((e as GroupcommError).code, code, what);
    return e as GroupcommError;
  }
  assert.unreachable(`${what}: did not throw`);
  throw new Error('unreachable');
}

test('subscribeLocal: refuses a prefix without a trailing / or outside a mailbox; null while another holds it; a stale handle closed again leaves the new holder', async () => {
  const server = await TcpStoreServer.listen({ port: 0 });
  try {
    throwsCode(() => server.subscribeLocal('/g/to/1', noop, noop), 'ERR_GROUPCOMM_INVALID_ARGUMENT', 'no trailing /');
    const e = throwsCode(() => server.subscribeLocal('/g/', noop, noop), 'ERR_GROUPCOMM_INVALID_ARGUMENT', 'not a mailbox');
    assert.is(e.key, '/g/', 'the prefix named');
    const got1: string[] = [];
    const got2: string[] = [];
    const first = server.subscribeLocal('/g/to/1/', (k) => { got1.push(k); }, noop)!;
    assert.ok(first);
    assert.is(server.subscribeLocal('/g/to/1/', noop, noop), null, 'held: null');
    first.close();
    server.publishLocal(['/g/to/1/a'], [bytes('a')]);
    assert.equal(got1, [], 'a closed subscriber gets nothing');
    assert.is(server.numKeys, 1, 'the key is stored instead');
    const second = server.subscribeLocal('/g/to/1/', (k) => { got2.push(k); }, noop)!;
    assert.ok(second, 'free again after close');
    assert.equal(got2, ['/g/to/1/a'], 'the backlog');
    first.close(); // again: must not take the prefix from the new holder
    server.publishLocal(['/g/to/1/b'], [bytes('b')]);
    assert.equal(got2, ['/g/to/1/a', '/g/to/1/b']);
    second.close();
  } finally {
    await server.close();
  }
  throwsCode(() => server.subscribeLocal('/g/to/2/', noop, noop), 'ERR_GROUPCOMM_DESTROYED', 'subscribe after close');
  throwsCode(() => server.publishLocal(['/k'], [bytes('v')]), 'ERR_GROUPCOMM_DESTROYED', 'publish after close');
  // With subscribePrefixes 'any' every prefix passes the mailbox rule: the trailing / is still required.
  const any = await TcpStoreServer.listen({ port: 0, subscribePrefixes: 'any' });
  try {
    throwsCode(() => any.subscribeLocal('/g', noop, noop), 'ERR_GROUPCOMM_INVALID_ARGUMENT', 'no trailing / (any)');
    const h = any.subscribeLocal('/g/', noop, noop);
    assert.ok(h, "'/g/' is fine there");
    h!.close();
  } finally {
    await any.close();
  }
});

test('publishLocal checks every key and value against the limits before writing any', async () => {
  const server = await TcpStoreServer.listen({ port: 0, limits: { maxKeyBytes: 8, maxValueBytes: 16 } });
  try {
    server.publishLocal(['/8bytes!'], [new Uint8Array(16)]); // both exactly at their limit
    assert.is(server.numKeys, 1);
    throwsCode(() => server.publishLocal(['/a', '/9bytes!!'], [bytes('1'), bytes('2')]), 'ERR_GROUPCOMM_INVALID_ARGUMENT', 'key over maxKeyBytes');
    throwsCode(() => server.publishLocal(['/a', '/b'], [bytes('1'), new Uint8Array(17)]), 'ERR_GROUPCOMM_INVALID_ARGUMENT', 'value over maxValueBytes');
    assert.is(server.numKeys, 1, 'nothing of either call was written');
  } finally {
    await server.close();
  }
});

test('a consuming WAIT_GET completed by publishLocal gets the value, and the key is deleted once the publish is done', async () => {
  const server = await TcpStoreServer.listen({ port: 0 });
  const r = await Raw.connect(server.port);
  try {
    r.write(VALIDATE, Buffer.from([WAIT_GET, 1]), keys('/t'), ping(5));
    assert.is((await r.read(4)).readUInt32LE(0), 5, 'waiting (the PING answered after it)');
    server.publishLocal(['/t'], [bytes('tv')]);
    const want = Buffer.concat([Buffer.from([0]), Buffer.from([2, 0, 0, 0, 0, 0, 0, 0]), Buffer.from('tv')]);
    assert.ok((await r.read(want.length)).equals(want), 'STOP_WAITING and the value');
    assert.is(server.numKeys, 0, 'taken');
    server.publishLocal(['/u'], [bytes('uv')]);
    assert.is(server.numKeys, 1, 'an ordinary publish stays');
  } finally {
    r.close();
    await server.close();
  }
});

test('a publishLocal nested in a request (a subscriber publishing) leaves that request\'s consuming reads for its end', async () => {
  const server = await TcpStoreServer.listen({ port: 0, subscribePrefixes: 'any' });
  const taker = await Raw.connect(server.port);
  const reader = await Raw.connect(server.port);
  const w = await Raw.connect(server.port);
  try {
    const hub = server.subscribeLocal('/s/', () => server.publishLocal(['/o'], [bytes('o')]), noop)!;
    taker.write(VALIDATE, Buffer.from([WAIT_GET, 1]), keys('/t'), ping(1)); // consuming
    reader.write(VALIDATE, Buffer.from([WAIT_GET, 0]), keys('/t', '/t2'), ping(2));
    await taker.read(4);
    await reader.read(4);
    // One request: /t (wakes the taker: /t is to be deleted), /s/x (the hub publishes /o from
    // inside it), then /t2 (wakes the reader, which must still see /t).
    w.write(VALIDATE, Buffer.from([MULTI_SET]), Buffer.from([3, 0, 0, 0, 0, 0, 0, 0]), str('/t'), str('tv'), str('/s/x'), str('1'), str('/t2'), str('t2v'));
    const one = Buffer.concat([Buffer.from([0]), str('tv')]);
    assert.ok((await taker.read(one.length)).equals(one), 'the taker');
    const two = Buffer.concat([Buffer.from([0]), str('tv'), str('t2v')]);
    assert.ok((await reader.read(two.length)).equals(two), 'the reader still saw /t');
    w.write(ping(3));
    await w.read(4);
    assert.is(server.numKeys, 2, '/t taken at the end; /t2 and /o stay');
    hub.close();
  } finally {
    taker.close();
    reader.close();
    w.close();
    await server.close();
  }
});

test.run();
