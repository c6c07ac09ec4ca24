// The CPU group's Listener (host/cpu/link/listener.ts) with a scripted handshake (a test double of
// Handshake.readHello): connections without a HELLO are bounded in time and number, accepted ones
// are handed over, close drops the strangers, a taken port is a BIND error, a stranger's reset and
// a server error after listening are survived. Loopback only.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import net from 'node:net';
import { Listener } from '../../host/cpu/link/listener.js';
import type { Handshake, PeerHello } from '../../host/cpu/link/handshake.js';
import type { Logger } from '../../host/base/log.js';
import { ErrorCode } from '../../host/base/errors.js';
import { sleep } from '../../host/base/deadline.js';
import { failure } from '../helpers/rejects.js';

/** A handshake that accepts a connection once it sends one byte (its value is the rank). */
function scripted() {
  const asked: number[] = [];
  const hs = {
    readHello(s: net.Socket, connected: (r: number) => boolean, accepted: (h: PeerHello) => void) {
      s.once('data', (d: Buffer) => {
        const rank = d[0];
        asked.push(rank);
        if (connected(rank)) { s.destroy(); return; }
        accepted({ rank } as PeerHello);
      });
    },
  } as unknown as Handshake;
  return { hs, asked };
}

function logger() {
  const warnings: string[] = [];
  const log = { warn: (m: string) => warnings.push(m), info() {}, debug() {}, trace() {}, enabled: () => false } as unknown as Logger;
  return { log, warnings };
}

/** Closed after each test even when an assertion failed (an open server keeps the process alive). */
const opened: { close(): void }[] = [];
test.after.each(() => { for (const o of opened.splice(0)) o.close(); });

function connect(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port }, () => resolve(s));
    opened.push({ close: () => s.destroy() });
    s.once('error', reject);
  });
}

const closedBy = (s: net.Socket, ms = 2000) => new Promise<boolean>((resolve) => {
  const t = setTimeout(() => resolve(false), ms);
  s.on('error', () => {});
  s.once('close', () => { clearTimeout(t); resolve(true); });
  s.resume();
});

test('a HELLO hands the connection over (with no-delay set); one already connected is refused by the handshake', async () => {
  const { hs, asked } = scripted();
  const { log } = logger();
  const got: [number, net.Socket][] = [];
  const l = await Listener.open({ host: '127.0.0.1', port: 0, what: 'test listener', worldSize: 4, hs, log, connected: (r) => r === 2, accepted: (s, h) => { opened.push({ close: () => s.destroy() }); got.push([h.rank, s]); } });
  opened.push(l);
  assert.ok(l.port > 0);
  const a = await connect(l.port);
  a.write(Buffer.from([1]));
  const b = await connect(l.port);
  b.write(Buffer.from([2]));
  assert.ok(await closedBy(b), 'rank 2 is already connected: closed');
  for (let i = 0; i < 100 && got.length === 0; i++) await sleep(5);
  assert.equal(got.map(([r]) => r), [1]);
  assert.equal(asked.sort(), [1, 2]);
  l.close();
  // An accepted connection is the mesh's: close does not drop it.
  await sleep(20);
  assert.not.ok(got[0][1].destroyed);
  got[0][1].destroy();
  a.destroy();
});

test('a connection without a HELLO is closed after helloTimeoutMs, with a warning', async () => {
  const { hs } = scripted();
  const { log, warnings } = logger();
  const l = await Listener.open({ host: '127.0.0.1', port: 0, what: 'x', worldSize: 2, helloTimeoutMs: 80, hs, log, connected: () => false, accepted: () => {} });
  opened.push(l);
  const t0 = performance.now();
  const s = await connect(l.port);
  assert.ok(await closedBy(s), 'closed');
  const after = performance.now() - t0;
  assert.ok(after >= 70, `closed after ${after} ms`);
  assert.is(warnings.length, 1);
  assert.match(warnings[0], /no valid HELLO/);
  // One that sent its HELLO in time is not closed by the timer.
  let accepted: net.Socket | undefined;
  const l2 = await Listener.open({ host: '127.0.0.1', port: 0, what: 'x', worldSize: 2, helloTimeoutMs: 60, hs, log, connected: () => false, accepted: (c) => { opened.push({ close: () => c.destroy() }); accepted = c; } });
  opened.push(l2);
  const ok = await connect(l2.port);
  ok.write(Buffer.from([1]));
  await sleep(150);
  assert.ok(accepted && !accepted.destroyed, 'kept');
  assert.not.ok(ok.destroyed);
  accepted!.destroy();
  ok.destroy();
  l.close();
  l2.close();
});

test('strangers are bounded: 64 plus 2 per rank held at once, the next refused; close drops them', async () => {
  const { hs } = scripted();
  const { log, warnings } = logger();
  const l = await Listener.open({ host: '127.0.0.1', port: 0, what: 'x', worldSize: 3, hs, log, connected: () => false, accepted: () => {} });
  opened.push(l);
  const held: net.Socket[] = [];
  for (let i = 0; i < 70; i++) held.push(await connect(l.port));
  const closed = held.map((s) => closedBy(s, 500));
  const states = await Promise.all(closed);
  assert.is(states.filter((c) => !c).length, 70, 'all 70 held (helloTimeoutMs is 10 s by default)');
  const extra = await connect(l.port);
  assert.ok(await closedBy(extra), 'the 71st is refused');
  assert.match(warnings.join('\n'), /too many connections/);
  // One stranger leaving frees its place.
  held[0].destroy();
  await sleep(50);
  const again = await connect(l.port);
  assert.not.ok(await closedBy(again, 200), 'a freed place is taken again');
  l.close();
  l.close();
  const all = await Promise.all([...held.slice(1), again].map((s) => closedBy(s)));
  assert.ok(all.every(Boolean), 'close destroys every stranger');
});

test('a port already taken is a BIND error naming the listener', async () => {
  const { hs } = scripted();
  const { log } = logger();
  const l = await Listener.open({ host: '127.0.0.1', port: 0, what: 'first', worldSize: 2, hs, log, connected: () => false, accepted: () => {} });
  opened.push(l);
  const e = await failure(Listener.open({ host: '127.0.0.1', port: l.port, what: 'second listener', worldSize: 2, hs, log, connected: () => false, accepted: () => {} }));
  assert.is(e.code, ErrorCode.BIND);
  assert.match(e.message, /^second listener/);
  assert.is((e as { port?: number }).port, l.port);
  l.close();
});

test('a stranger that resets its connection before its HELLO does not take the listener down; an error of the server after listening is a warning', async () => {
  const { hs } = scripted();
  const { log, warnings } = logger();
  const got: number[] = [];
  const l = await Listener.open({ host: '127.0.0.1', port: 0, what: 'x', worldSize: 2, hs, log, connected: () => false, accepted: (s, h) => { opened.push({ close: () => s.destroy() }); got.push(h.rank); } });
  opened.push(l);
  const rude = await connect(l.port);
  await sleep(20);
  rude.resetAndDestroy(); // the listener's side reads ECONNRESET: an 'error' event on its socket
  await sleep(50);
  const ok = await connect(l.port);
  ok.write(Buffer.from([1]));
  for (let i = 0; i < 100 && got.length === 0; i++) await sleep(5);
  assert.equal(got, [1], 'still accepting');
  // Past listen(), a server error (EMFILE on accept, say) is logged, not thrown.
  (l as unknown as { server: net.Server }).server.emit('error', new Error('accept failed'));
  assert.equal(warnings, ['listener error: accept failed']);
  l.close();
});

test.run();
