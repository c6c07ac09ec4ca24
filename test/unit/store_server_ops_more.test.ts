// The server's request handling (server_ops.ts), more edges from raw sockets: the handshake on a
// server with a secret refused step by step, JOIN_RANK's range, QUEUE_POP of an empty queue,
// WAIT_GET woken by a queue push, a key equal to a subscription's prefix, and publishLocal's
// values copied (the caller may reuse its buffer at once) for in-process and socket subscribers.
import crypto from 'node:crypto';
import net from 'node:net';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { TcpStoreServer } from '../../host/index.js';
import { authProof, secretBytes } from '../../host/store/auth.js';
import { Raw, VALIDATE, keys, le64, ping, str, withServer, sync } from './store_raw.js';

const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));
const op = (n: number) => Buffer.from([n]);
const SET = 1, PING = 13, QUEUE_PUSH = 14, QUEUE_POP = 15, AUTH_HELLO = 0xe1, AUTH_PROOF = 0xe2, JOIN_RANK = 0xe3, WAIT_GET = 0xe4, SUBSCRIBE = 0xe6;
const set = (k: string, v: string | Buffer) => Buffer.concat([op(SET), str(k), str(v)]);

/** Sends `bytes` on a new connection; true when the server closed it without a byte of reply. */
async function refused(port: number, ...bytes: Buffer[]): Promise<boolean> {
  const r = await Raw.connect(port);
  try {
    r.write(...bytes);
    return (await r.waitClosed(2000)) && r.pending === 0;
  } finally {
    r.close();
  }
}

test('a server with a secret: each wrong step of the handshake closes the connection unanswered', () => withServer(async (server) => {
  const secret = secretBytes('s3cret');
  const magicPing = Buffer.concat([op(PING), VALIDATE.subarray(1)]); // a PING whose nonce is the magic
  assert.ok(await refused(server.port, magicPing), 'first message not VALIDATE');
  assert.ok(await refused(server.port, VALIDATE, op(3), Buffer.alloc(40, 1)), 'a GET before AUTH_HELLO');
  const hello = async (r: Raw): Promise<Buffer> => {
    const clientNonce = crypto.randomBytes(32);
    r.write(VALIDATE, op(AUTH_HELLO), clientNonce);
    const reply = await r.read(64);
    assert.ok(reply.subarray(32).equals(authProof(secret, 'server', clientNonce, reply.subarray(0, 32))), 'the server\'s proof');
    return authProof(secret, 'client', reply.subarray(0, 32), clientNonce);
  };
  for (const [what, proof] of [['wrong opcode', (p: Buffer) => Buffer.concat([op(AUTH_HELLO), p])], ['wrong proof', (p: Buffer) => Buffer.concat([op(AUTH_PROOF), p.map((b) => b ^ 1)])]] as const) {
    const r = await Raw.connect(server.port);
    try {
      r.write(proof(await hello(r)));
      assert.ok(await r.waitClosed(2000), `${what}: closed`);
      assert.is(r.pending, 0, `${what}: not accepted`);
    } finally {
      r.close();
    }
  }
  const r = await Raw.connect(server.port);
  try {
    r.write(op(AUTH_PROOF), await hello(r));
    assert.is((await r.read(1))[0], 0, 'the right proof is accepted');
    await sync(r);
  } finally {
    r.close();
  }
}, { secret: 's3cret' }));

test('JOIN_RANK takes 0 … 2^32−1, closes on anything else', () => withServer(async (server) => {
  const join = (rank: bigint) => Buffer.concat([op(JOIN_RANK), le64(rank)]);
  const r = await Raw.connect(server.port);
  try {
    r.write(VALIDATE, join(0n), join(0xffffffffn));
    await sync(r);
  } finally {
    r.close();
  }
  assert.ok(await refused(server.port, VALIDATE, join(-1n)), '-1');
  assert.ok(await refused(server.port, VALIDATE, join(0x100000000n)), '2^32');
}));

test('QUEUE_POP: an empty queue answers its length 0 alone; WAIT_GET woken by a queue push reads the key as empty', () => withServer(async (server) => {
  const r = await Raw.connect(server.port);
  const w = await Raw.connect(server.port);
  try {
    r.write(VALIDATE, op(QUEUE_POP), str('/empty'));
    assert.ok((await r.read(8)).equals(le64(0)));
    await sync(r);
    w.write(VALIDATE, set('/k', 'kv'));
    await sync(w);
    r.write(op(WAIT_GET), op(0), keys('/q1'));
    await pause(30);
    w.write(op(QUEUE_PUSH), str('/q1'), str('x'));
    assert.ok((await r.read(9)).equals(Buffer.concat([op(0), le64(0)])), 'one key: STOP_WAITING, an empty value');
    r.write(op(WAIT_GET), op(0), keys('/q2', '/k'));
    await pause(30);
    w.write(op(QUEUE_PUSH), str('/q2'), str('y'));
    assert.ok((await r.read(1 + 8 + 8 + 2)).equals(Buffer.concat([op(0), le64(0), str('kv')])), 'two keys: STOP_WAITING, empty, the value');
    await sync(r);
  } finally {
    r.close();
    w.close();
  }
}));

test('a key equal to a subscription\'s prefix is pushed to it', () => withServer(async (server) => {
  const sub = await Raw.connect(server.port);
  const w = await Raw.connect(server.port);
  try {
    sub.write(VALIDATE, op(SUBSCRIBE), str('/p/'));
    assert.is((await sub.read(1))[0], 0);
    w.write(VALIDATE, set('/p/', 'v'));
    await sync(w);
    assert.ok((await sub.read(8 + 3 + 8 + 1)).equals(Buffer.concat([str('/p/'), str('v')])));
    assert.is(server.numKeys, 0);
  } finally {
    sub.close();
    w.close();
  }
}, { subscribePrefixes: 'any' }));

test('publishLocal copies a value it was not handed: the caller refills its buffer at once, subscribers see the old bytes', () => withServer(async (server) => {
  // In-process subscriber.
  const got: Uint8Array[] = [];
  const local = server.subscribeLocal('/l/', (_k, v) => { got.push(v); }, () => {})!;
  const buf = Buffer.alloc(8192, 0x11); // over 4 KiB
  server.publishLocal(['/l/a'], [buf]);
  buf.fill(0x22);
  assert.is(got.length, 1);
  assert.ok(Buffer.from(got[0]).equals(Buffer.alloc(8192, 0x11)), 'in-process subscriber');
  local.close();
  // A socket subscriber that is not reading: the push waits in the server's socket buffer.
  let tail = Buffer.alloc(0);
  let total = 0;
  const s = await new Promise<net.Socket>((resolve, reject) => {
    const c = net.connect({ port: server.port, host: '127.0.0.1' }, () => resolve(c));
    c.once('error', reject);
  });
  try {
    s.on('data', (d: Buffer) => { total += d.length; tail = Buffer.concat([tail, d]).subarray(-70_000); });
    s.write(Buffer.concat([VALIDATE, op(SUBSCRIBE), str('/s/')]));
    for (let t0 = Date.now(); total < 1 && Date.now() - t0 < 3000;) await pause(5);
    s.pause();
    const filler = Buffer.alloc(1 << 20, 0x33);
    const fillers = 24; // far more than the kernel's socket buffers take from a reader that reads nothing
    for (let i = 0; i < fillers; i++) server.publishLocal(['/s/f'], [filler], true);
    const last = Buffer.alloc(64 * 1024, 0x11);
    server.publishLocal(['/s/last'], [last]);
    last.fill(0x22);
    s.resume();
    const want = 1 + fillers * (8 + 4 + 8 + filler.length) + 8 + 7 + 8 + last.length;
    for (let t0 = Date.now(); total < want && Date.now() - t0 < 10_000;) await pause(10);
    assert.is(total, want);
    assert.ok(tail.subarray(-last.length).equals(Buffer.alloc(last.length, 0x11)), 'socket subscriber: the bytes at publish time');
  } finally {
    s.destroy();
  }
}, { subscribePrefixes: 'any' }));

test.run();
