// LocalSocket (host/store/local.ts), the in-memory link between a TcpStore and the server in its
// own process, on its own: the part of net.Socket that Connection and the server use — delivery
// on setImmediate (or a microtask when urgent), one copied chunk per tick, cork, end, destroy.
// store_local.test.ts runs the store over it.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { LocalSocket } from '../../host/store/local.js';

const tick = () => new Promise<void>((r) => setImmediate(r));
const micro = async (n = 5) => { for (let i = 0; i < n; i++) await Promise.resolve(); };

function pair() {
  const [a, b] = LocalSocket.pair();
  const got: Buffer[] = [];
  const closes: string[] = [];
  b.on('data', (d: Buffer) => got.push(Buffer.from(d)));
  a.on('close', (hadError: boolean) => closes.push(`a:${hadError}`));
  b.on('close', (hadError: boolean) => closes.push(`b:${hadError}`));
  return { a, b, got, closes };
}

test('pair: each end is the other\'s peer; the socket surface a Connection uses', () => {
  const [a, b] = LocalSocket.pair();
  assert.is(a.peer, b);
  assert.is(b.peer, a);
  assert.is(a.remoteAddress, 'in-process');
  assert.is(a.remotePort, 0);
  assert.is(a.setNoDelay(), a);
  assert.is(a.pause(), a);
  assert.is(a.resume(), a);
  assert.is(a.isPaused(), false);
  assert.is(a.destroyed, false);
  assert.is(a.urgent, false);
});

test('writes of one tick arrive later as one copied chunk; callbacks run after, in order', async () => {
  const { a, got } = pair();
  const w1 = Buffer.from('ab');
  const order: string[] = [];
  assert.is(a.write(w1, () => order.push('1')), true);
  a.write(new Uint8Array([0x63]), () => order.push('2'));
  assert.is(a.writableLength, 3);
  assert.equal(got, [], 'nothing delivered synchronously');
  await micro();
  assert.equal(got, [], 'nor in a microtask (not urgent)');
  await tick();
  assert.equal(got, [Buffer.from('abc')]);
  assert.equal(order, ['1', '2']);
  assert.is(a.writableLength, 0);
  w1[0] = 0x7a;
  assert.equal(got[0], Buffer.from('abc'), 'the receiver got a copy');
  a.write(Buffer.from('d'));
  await tick();
  assert.equal(got.map(String), ['abc', 'd'], 'a later tick is another chunk');
});

test('an empty write delivers no data but still calls back', async () => {
  const { a, got } = pair();
  let called = 0;
  a.write(new Uint8Array(0), () => called++);
  assert.is(a.writableLength, 0);
  await tick();
  assert.is(called, 1);
  assert.equal(got, []);
});

test('urgent: delivered in a microtask, before setImmediate', async () => {
  const { a, got } = pair();
  a.urgent = true;
  a.write(Buffer.from('x'));
  await micro();
  assert.equal(got.map(String), ['x']);
});

test('cork: held until the last uncork, then one chunk; an uncork too many is ignored', async () => {
  const { a, got } = pair();
  a.uncork(); // not corked: no effect, the count does not go below zero
  a.cork();
  a.cork();
  a.write(Buffer.from('1'));
  a.write(Buffer.from('2'));
  await tick();
  assert.equal(got, [], 'corked twice');
  a.uncork();
  await tick();
  assert.equal(got, [], 'still corked once');
  assert.is(a.writableLength, 2);
  a.uncork();
  await tick();
  assert.equal(got.map(String), ['12']);
});

test('a cork taken after a write was scheduled holds it until uncorked', async () => {
  const { a, got } = pair();
  a.write(Buffer.from('p'));
  a.cork();
  await tick();
  assert.equal(got, []);
  a.uncork();
  await tick();
  assert.equal(got.map(String), ['p']);
});

test('end(): what is pending (corked too) is delivered, then both ends close; later writes fail with EPIPE', async () => {
  const { a, b, got, closes } = pair();
  a.cork();
  a.write(Buffer.from('last'));
  assert.is(a.end(), a);
  a.end();
  let err: (Error & { code?: string }) | null | undefined;
  assert.is(a.write(Buffer.from('more'), (e) => { err = e; }), false);
  await tick();
  await tick();
  assert.equal(got.map(String), ['last']);
  assert.ok(a.destroyed && b.destroyed);
  assert.equal(closes.sort(), ['a:false', 'b:false']);
  assert.is(err?.code, 'EPIPE');
  let err2: (Error & { code?: string }) | null | undefined;
  assert.is(b.write(Buffer.from('x'), (e) => { err2 = e; }), false);
  b.write(Buffer.from('no callback'));
  await tick();
  assert.is(err2?.code, 'EPIPE');
});

test('end() with a delivery already scheduled: delivered once, then closed', async () => {
  const { a, got, closes } = pair();
  a.write(Buffer.from('q'));
  a.end();
  await tick();
  await tick();
  assert.equal(got.map(String), ['q']);
  assert.is(closes.length, 2);
});

test('destroy(): pending bytes are dropped, their callbacks get an error, both ends close once', async () => {
  const { a, b, got, closes } = pair();
  const errs: (Error | null | undefined)[] = [];
  a.write(Buffer.from('lost'), (e) => errs.push(e));
  assert.is(b.destroy(), b);
  assert.ok(a.destroyed, 'the peer is destroyed with it');
  assert.is(a.writableLength, 0);
  a.destroy();
  b.destroy();
  assert.is(a.end(), a);
  await tick();
  await tick();
  assert.equal(got, []);
  assert.is(errs.length, 1);
  assert.instance(errs[0], Error);
  assert.equal(closes.sort(), ['a:false', 'b:false']);
});

test.run();
