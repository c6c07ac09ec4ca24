// The server's reply path at the byte level (server_reply.ts, server_conn.ts), from raw sockets:
// tagged value replies of values kept as buffers, pushes with long and short keys and big and
// small values, and the back-pressure on a client that pipelines faster than it reads.
import net from 'node:net';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { TcpStoreServer } from '../../host/index.js';
import { EXT_PROBE_KEY } from '../../host/store/protocol.js';
import { MAX_PENDING_REPLY_BYTES } from '../../host/store/server_conn.js';
import { Raw, VALIDATE, keys, le64, ping, str, withServer, sync } from './store_raw.js';

const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));
const op = (n: number) => Buffer.from([n]);
const SET = 1, GET = 3, CHECK = 5, TRY_GET = 0xe0, WAIT_GET = 0xe4, SUBSCRIBE = 0xe6;
const set = (k: string, v: string | Buffer) => Buffer.concat([op(SET), str(k), str(v)]);
const get = (k: string) => Buffer.concat([op(GET), str(k)]);

test('TRY_GET and a one-key WAIT_GET of values kept as buffers: the tag byte, then the u64 length and the bytes', () => withServer(async (server) => {
  const r = await Raw.connect(server.port);
  try {
    const mid = Buffer.alloc(300, 0x5a); // a buffer in the table, not a string (table.ts)
    const big = Buffer.alloc(20 * 1024, 0xc3); // FLUSH_ALONE_BYTES or more: written on its own
    r.write(VALIDATE, set('/m', mid), set('/b', big));
    for (let i = 0; i < 3; i++) { // several times: a tag left to allocUnsafe's garbage would show
      r.write(op(TRY_GET), str('/m'), op(TRY_GET), str('/b'), op(WAIT_GET), op(0), keys('/m'), op(TRY_GET), str('/none'));
      const want = Buffer.concat([op(1), str(mid), op(1), str(big), op(0), str(mid), op(0)]);
      assert.ok((await r.read(want.length)).equals(want), `round ${i}`);
    }
    await sync(r);
  } finally {
    r.close();
  }
}));

test('small values (kept as latin1 strings) come back byte-exact, bytes over 0x7f included; exactly maxKeysPerRequest keys is fine', () => withServer(async (server) => {
  const r = await Raw.connect(server.port);
  try {
    const bytes = Buffer.from(Array.from({ length: 256 }, (_, i) => 255 - i)); // 256: the largest string value
    r.write(VALIDATE, set('/hi', bytes), set('/one', Buffer.from([0xe9])), get('/hi'), op(TRY_GET), str('/one'));
    const want = Buffer.concat([str(bytes), op(1), str(Buffer.from([0xe9]))]);
    assert.ok((await r.read(want.length)).equals(want));
    r.write(op(CHECK), keys('/hi', '/one', '/hi', '/one'));
    assert.is((await r.read(1))[0], 0, 'four keys at maxKeysPerRequest 4: READY');
    await sync(r);
  } finally {
    r.close();
  }
}, { limits: { maxKeysPerRequest: 4 } }));

test('pushes: `str key` `str value` for keys of up to 64 and over 64 bytes, values under and over 4 KiB, backlog and live', () => withServer(async (server) => {
  const sub = await Raw.connect(server.port);
  const w = await Raw.connect(server.port);
  try {
    const prefix = '/g/to/3/';
    const short = prefix + 'k'.repeat(64 - prefix.length); // exactly 64: the loop
    const long = prefix + 'L'.repeat(65 - prefix.length); // 65: the native write
    const longer = prefix + 'é'.repeat(40); // wire keys are bytes: UTF-8 sent as they are
    const small = Buffer.alloc(100, 1);
    const big = Buffer.alloc(5000, 2); // over 4 KiB: handed on without a copy
    w.write(VALIDATE, set(short, small), set(long, big));
    await sync(w);
    sub.write(VALIDATE, op(CHECK), keys(EXT_PROBE_KEY), op(SUBSCRIBE), str(prefix));
    assert.ok((await sub.read(2)).equals(Buffer.from([0, 0])), 'probe READY, SUBSCRIBE OK');
    // The backlog (stored keys under the prefix), then live writes.
    const backlog = Buffer.concat([str(short), str(small), str(long), str(big)]);
    assert.ok((await sub.read(backlog.length)).equals(backlog), 'the backlog');
    w.write(set(long, small), set(short, big), set(longer, 'u'));
    const live = Buffer.concat([str(long), str(small), str(short), str(big), str(longer), str('u')]);
    assert.ok((await sub.read(live.length)).equals(live), 'the live pushes');
    await sync(w);
    await pause(20);
    assert.is(sub.pending, 0, 'nothing more was pushed');
    assert.is(server.numKeys, 0, 'pushed keys are not stored');
  } finally {
    sub.close();
    w.close();
  }
}));

test('SUBSCRIBE by default: exactly one mailbox `<ns>/to/<rank>/` with a namespace that is not all slashes', () => withServer(async (server) => {
  const cases: [string, number][] = [
    ['a/to/0/', 0], ['/a/to/12/', 0], ['x/y/to/345/', 0], ['é/to/7/', 0],
    ['/to/1/', 2], ['//to/1/', 2], ['a/to/1/x/', 2], ['a/to//', 2], ['a/to/1x/', 2], ['a/to/x1/', 2], ['a/tox/1/', 2], ['a/xto/1/', 2], ['ab/to/1/', 0], ['a//to/1/', 0],
  ];
  for (const [prefix, want] of cases) {
    const r = await Raw.connect(server.port);
    r.write(VALIDATE, op(CHECK), keys(EXT_PROBE_KEY), op(SUBSCRIBE), str(prefix));
    assert.is((await r.read(2))[1], want, `'${prefix}'`);
    if (want === 2) await sync(r); // refused: still an ordinary connection
    r.close();
  }
}));

/** A raw client that counts the reply bytes it reads instead of keeping them. */
function counting(port: number): Promise<{ socket: net.Socket; received: () => number }> {
  return new Promise((resolve, reject) => {
    let n = 0;
    const s = net.connect({ port, host: '127.0.0.1' }, () => resolve({ socket: s, received: () => n }));
    s.on('data', (d: Buffer) => { n += d.length; });
    s.once('error', reject);
  });
}

test('a client that does not read its replies: past MAX_PENDING_REPLY_BYTES unread the server stops reading its requests, and goes on once it reads', () => withServer(async (server) => {
  const valueBytes = 1 << 20;
  const gets = Math.ceil(MAX_PENDING_REPLY_BYTES / valueBytes) + 4;
  const w = await Raw.connect(server.port);
  const c = await counting(server.port);
  try {
    w.write(VALIDATE, set('/big', Buffer.alloc(valueBytes, 7)));
    await sync(w);
    c.socket.pause(); // read nothing: the replies pile up in the server's socket
    c.socket.write(Buffer.concat([VALIDATE, ...Array.from({ length: gets }, () => get('/big'))]));
    await pause(300);
    c.socket.write(set('/marker', 'after'));
    await pause(300);
    assert.is(server.numKeys, 1, 'the SET behind the unread replies was not read');
    c.socket.resume();
    const want = gets * (8 + valueBytes);
    for (let t0 = Date.now(); c.received() < want && Date.now() - t0 < 20_000;) await pause(20);
    assert.is(c.received(), want, 'every reply arrived');
    for (let t0 = Date.now(); server.numKeys < 2 && Date.now() - t0 < 5000;) await pause(10);
    assert.is(server.numKeys, 2, 'once the replies were read, the SET was read and applied');
    w.write(get('/marker'));
    assert.ok((await w.read(8 + 5)).equals(str('after')));
  } finally {
    c.socket.destroy();
    w.close();
  }
}));

test.run();
