// dialPeer (host/cpu/link/dial.ts) over loopback with a scripted store and inbound (test doubles
// of the few members it uses): connect, re-read the key and retry on a refusal, give up at the
// deadline or after the grace at an unchanged address, a key gone means the peer left, and a
// connection dropped in its handshake after setup is retried.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import net from 'node:net';
import { dialPeer, REFUSED_GRACE_MS } from '../../host/cpu/link/dial.js';
import { sleep } from '../../host/base/deadline.js';
import { deadAddr, has, opened, server, spec, until } from '../helpers/dial_spec.js';

test.after.each(() => { for (const o of opened.splice(0)) o.close(); });

test('connects to the published address: refused(false), then connected; the peer ending it after the ACK is a loss', async () => {
  let peerSide: net.Socket | undefined;
  const { addr } = await server((c) => { peerSide = c; });
  const s = spec(addr, {});
  dialPeer(s.d);
  await until(() => has(s.events, 'connected'));
  assert.equal(s.events, [{ ev: 'refused', arg: false }, { ev: 'connected' }]);
  assert.ok(s.sockets[0].remotePort === Number(addr.split(':')[1]));
  assert.ok(s.sockets[0].remoteAddress === '127.0.0.1');
  peerSide!.end();
  await until(() => has(s.events, 'lost'));
  assert.is(s.events[2].arg, 'connection closed by the peer');
  assert.equal(s.storeCalls, []);
});

test('during setup a refusal re-reads the key and retries at the new address', async () => {
  const dead = await deadAddr();
  const { addr } = await server();
  let reads = 0;
  const s = spec(dead, { key: () => (++reads < 2 ? dead : addr) });
  dialPeer(s.d);
  await until(() => has(s.events, 'connected'));
  assert.equal(s.events.map((e) => [e.ev, e.arg]), [['refused', true], ['refused', true], ['refused', false], ['connected', undefined]]);
  assert.equal(s.storeCalls.map((c) => [c.op, c.key]), [['get', 'k/1'], ['get', 'k/1']]);
  for (const c of s.storeCalls) assert.ok(c.timeoutMs! >= 1 && c.timeoutMs! <= 2000, String(c.timeoutMs));
});

test('during setup a key that cannot be read is retried too; the deadline ends it with the last error and address', async () => {
  const dead = await deadAddr();
  const s = spec(dead, { key: () => undefined, deadlineMs: 300 });
  const t0 = performance.now();
  dialPeer(s.d);
  await until(() => has(s.events, 'failed'));
  assert.ok(performance.now() - t0 >= 250, 'not before the deadline');
  const f = s.events.find((e) => e.ev === 'failed')!;
  assert.equal(f.arg, ['ECONNREFUSED', dead]);
  assert.ok(s.storeCalls.length >= 2, 'retried');
  assert.not.ok(has(s.events, 'left'), 'during setup a missing key is not a departure');
});

test('a deadline already passed: the first refusal fails at once, without reading the key', async () => {
  const dead = await deadAddr();
  const s = spec(dead, { deadlineMs: 0, key: () => dead });
  dialPeer(s.d);
  await until(() => has(s.events, 'failed'));
  await sleep(100);
  assert.equal(s.storeCalls, []);
  assert.equal(s.events.filter((e) => e.ev === 'failed').length, 1);
});

test('after setup a key that is gone means the peer left', async () => {
  const dead = await deadAddr();
  const s = spec(dead, { afterSetup: true, key: () => undefined });
  dialPeer(s.d);
  await until(() => has(s.events, 'left'));
  assert.equal(s.storeCalls.map((c) => c.op), ['check']);
  assert.not.ok(has(s.events, 'failed'));
});

test('after setup refusals at an unchanged address fail after the grace, well before the deadline', async () => {
  const dead = await deadAddr();
  const s = spec(dead, { afterSetup: true, key: () => dead, deadlineMs: 60_000 });
  const t0 = performance.now();
  dialPeer(s.d);
  await until(() => has(s.events, 'failed'), 5000);
  const took = performance.now() - t0;
  // Upper bound: until() above gives up after 5 s, far below the 60 s deadline.
  assert.ok(took >= REFUSED_GRACE_MS, `failed after ${took} ms`);
  assert.equal(s.events.find((e) => e.ev === 'failed')!.arg, ['ECONNREFUSED', dead]);
  assert.ok(s.storeCalls.some((c) => c.op === 'get'), 'the key was read again');
});

test('after setup a key that moved to a live address connects there', async () => {
  const dead = await deadAddr();
  const { addr } = await server();
  const s = spec(dead, { afterSetup: true, key: () => addr });
  dialPeer(s.d);
  await until(() => has(s.events, 'connected'));
  assert.equal(s.storeCalls.map((c) => c.op), ['check', 'get']);
});

test('after setup a connection dropped before the ACK restarts the handshake and dials again', async () => {
  let conns = 0;
  const { addr } = await server((c) => { if (++conns === 1) c.destroy(); });
  const s = spec(addr, { afterSetup: true, key: () => addr, acked: false });
  dialPeer(s.d);
  await until(() => s.events.filter((e) => e.ev === 'connected').length === 2);
  assert.ok(s.inbound.restarts >= 1);
  assert.not.ok(has(s.events, 'lost'), 'not a loss');
  assert.not.ok(has(s.events, 'failed'));
});

test('during setup a connection dropped before the ACK is a loss, not a retry', async () => {
  const { addr } = await server((c) => c.destroy());
  const s = spec(addr, { afterSetup: false, key: () => addr, acked: false });
  dialPeer(s.d);
  await until(() => has(s.events, 'lost'));
  assert.is(s.inbound.restarts, 0);
  assert.equal(s.storeCalls, []);
});

test('an inactive mesh makes no attempt, and stops retrying', async () => {
  const { addr } = await server();
  const s = spec(addr, {});
  s.stop();
  dialPeer(s.d);
  await sleep(50);
  assert.equal(s.events, []);
  const dead = await deadAddr();
  const r = spec(dead, { key: () => dead });
  dialPeer(r.d);
  await until(() => r.events.length > 0);
  r.stop();
  await sleep(150);
  const n = r.events.length;
  await sleep(150);
  assert.is(r.events.length, n);
  assert.not.ok(has(r.events, 'connected'));
});

test.run();
