// dialPeer and reachable (host/cpu/link/dial.ts), the cases unit/cpu_dial does not build: errors
// other than a refusal (a local ENETUNREACH: a TCP connect to the broadcast address fails in the
// kernel, no packet leaves), the grace restarting at a new address and not applying during setup,
// a drop in the handshake counted as a refusal (one handshake restart per drop), a reset and a
// local close after the ACK (losses, with their reason), the re-read's timeout near the deadline,
// and reachable's timeout against a listener whose accept queue is full (a stuck process).
// Loopback only.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import net from 'node:net';
import { spawn } from 'node:child_process';
import { dialPeer, reachable, REFUSED_GRACE_MS } from '../../host/cpu/link/dial.js';
import { sleep } from '../../host/base/deadline.js';
import { deadAddr, has, opened, server, spec, until } from '../helpers/dial_spec.js';

test.after.each(() => { for (const o of opened.splice(0)) o.close(); });

/** The code a plain connect to `addr` fails with (Bun reports ENETUNREACH as ECONNREFUSED). */
function connectError(addr: string): Promise<string | undefined> {
  const cut = addr.lastIndexOf(':');
  return new Promise((resolve) => {
    const s = net.connect({ host: addr.slice(0, cut), port: Number(addr.slice(cut + 1)) });
    s.once('connect', () => { s.destroy(); resolve(undefined); });
    s.once('error', (e: NodeJS.ErrnoException) => resolve(e.code));
  });
}

test('no grace for a non-refusal after setup, nor for refusals during setup: both retry until the deadline', async () => {
  const unreachable = '255.255.255.255:9';
  const code = await connectError(unreachable);
  const dead = await deadAddr();
  const deadlineMs = REFUSED_GRACE_MS + 700;
  const a = spec(unreachable, { afterSetup: true, key: () => unreachable, deadlineMs });
  const b = spec(dead, { afterSetup: false, key: () => dead, deadlineMs });
  const t0 = performance.now();
  const took: number[] = [];
  for (const [i, x] of [a, b].entries()) {
    const failed = x.d.failed;
    x.d.failed = (e, at) => { took[i] = performance.now() - t0; failed(e, at); };
  }
  dialPeer(a.d);
  dialPeer(b.d);
  await until(() => has(a.events, 'failed') && has(b.events, 'failed'), deadlineMs + 8000);
  assert.equal(b.events.find((e) => e.ev === 'failed')!.arg, ['ECONNREFUSED', dead]);
  assert.ok(took[1] >= deadlineMs - 50, `during setup: failed after ${took[1]} ms, before the deadline`);
  assert.ok(a.storeCalls.some((c) => c.op === 'get'), 'the key was read again');
  if (code === 'ECONNREFUSED') {
    // Bun: the same failure reads as a refusal, so the grace applies (unit/cpu_dial's case).
    assert.ok(a.events.some((e) => e.ev === 'refused' && e.arg === true));
    return;
  }
  assert.is(code, 'ENETUNREACH');
  assert.equal(a.events.find((e) => e.ev === 'failed')!.arg, ['ENETUNREACH', unreachable]);
  assert.not.ok(has(a.events, 'refused'), 'not a refusal');
  assert.ok(took[0] >= deadlineMs - 50, `after setup: failed after ${took[0]} ms, before the deadline`);
});

test('after setup the grace restarts when the key names a new address that refuses as well', async () => {
  const first = await deadAddr();
  const second = await deadAddr();
  const moveMs = 600;
  const t0 = performance.now();
  const s = spec(first, { afterSetup: true, key: () => (performance.now() - t0 < moveMs ? first : second), deadlineMs: 60_000 });
  dialPeer(s.d);
  await until(() => has(s.events, 'failed'), REFUSED_GRACE_MS + moveMs + 8000);
  const took = performance.now() - t0;
  assert.equal(s.events.find((e) => e.ev === 'failed')!.arg, ['ECONNREFUSED', second]);
  assert.ok(took >= moveMs + REFUSED_GRACE_MS - 50, `failed after ${took} ms: the grace kept counting from the first address`);
});

test('after setup, drops in the handshake count as refusals: the grace ends it; one handshake restart per drop', async () => {
  const { addr } = await server((c) => c.destroy());
  const s = spec(addr, { afterSetup: true, key: () => addr, acked: false, deadlineMs: 60_000 });
  const t0 = performance.now();
  dialPeer(s.d);
  await until(() => has(s.events, 'failed'), REFUSED_GRACE_MS + 8000);
  assert.ok(performance.now() - t0 >= REFUSED_GRACE_MS - 50);
  assert.equal(s.events.find((e) => e.ev === 'failed')!.arg, ['connection closed by the peer', addr]);
  const connects = s.events.filter((e) => e.ev === 'connected').length;
  assert.ok(connects >= 2, `${connects} connections`);
  await sleep(20);
  assert.is(s.inbound.restarts, connects);
  assert.not.ok(has(s.events, 'lost'));
});

test('after the ACK a reset is a loss naming it (no retry); a connection closed here is a loss too', async () => {
  let peerSide: net.Socket | undefined;
  const { addr } = await server((c) => { peerSide = c; });
  const s = spec(addr, { afterSetup: true, key: () => addr });
  dialPeer(s.d);
  await until(() => has(s.events, 'connected') && peerSide !== undefined);
  peerSide!.resetAndDestroy();
  await until(() => has(s.events, 'lost'));
  const lost = s.events.filter((e) => e.ev === 'lost');
  assert.match(String(lost[0].arg), /ECONNRESET/);
  await sleep(100);
  assert.equal(s.storeCalls, [], 'no retry');
  assert.is(s.events.filter((e) => e.ev === 'connected').length, 1);

  // Closed on this side (the inbound on a bad frame): only 'close' fires.
  const t = spec(addr, { afterSetup: true, key: () => addr });
  dialPeer(t.d);
  await until(() => has(t.events, 'connected'));
  t.sockets[0].destroy();
  await until(() => has(t.events, 'lost'));
  await sleep(20);
  // Node emits only 'close' here; Bun emits 'end' first (a loss 'connection closed by the peer').
  assert.ok(t.events.some((e) => e.ev === 'lost' && e.arg === 'connection closed'), JSON.stringify(t.events));
  assert.equal(t.storeCalls, []);
});

test('the re-read waits at most until the deadline (and at most 2 s)', async () => {
  const dead = await deadAddr();
  const { addr } = await server();
  let reads = 0;
  const near = spec(dead, { key: () => (++reads < 2 ? dead : addr), deadlineMs: 1000 });
  const far = spec(dead, { key: () => addr, deadlineMs: 60_000 });
  dialPeer(near.d);
  dialPeer(far.d);
  await until(() => has(near.events, 'connected') && has(far.events, 'connected'));
  for (const c of near.storeCalls) assert.ok(c.timeoutMs! > 500 && c.timeoutMs! <= 1000, `near: ${c.timeoutMs}`);
  assert.equal(far.storeCalls.map((c) => c.timeoutMs), [2000]);
});

test('reachable: false after timeoutMs when the connection does not complete (a full accept queue)', async () => {
  // A listener in another process with a backlog of 1 and its event loop blocked: the kernel
  // queues two connections, then drops SYNs (no refusal, no answer).
  const child = spawn('node', ['-e', `
    const srv = require('node:net').createServer(() => {});
    srv.listen({ port: 0, host: '127.0.0.1', backlog: 1 }, () => {
      process.stdout.write(srv.address().port + '\\n');
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 8000);
      process.exit(0);
    });`], { stdio: ['ignore', 'pipe', 'inherit'] });
  opened.push({ close: () => child.kill() });
  const port = await new Promise<number>((resolve) => child.stdout!.once('data', (d) => resolve(Number(String(d).trim()))));
  const addr = `127.0.0.1:${port}`;
  for (let i = 0; i < 4; i++) {
    const c = net.connect({ host: '127.0.0.1', port });
    c.on('error', () => {});
    opened.push({ close: () => c.destroy() });
  }
  await sleep(100);
  const t0 = performance.now();
  let t: NodeJS.Timeout | undefined;
  const r = await Promise.race([reachable(addr, 300), new Promise<string>((res) => { t = setTimeout(() => res('no answer'), 2000); })]);
  clearTimeout(t);
  assert.is(r, false);
  assert.ok(performance.now() - t0 >= 280);
});

test.run();
