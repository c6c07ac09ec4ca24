// watchLiveness (host/cpu/liveness.ts) against a scripted mesh: who is pinged, when a silent peer
// is lost, who is named with it, and when the check stops. Timing bounds are loose (a shared
// machine fires timers late): only "not before" and "at most this many" are asserted tightly.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { watchLiveness, type LivenessPeers } from '../../host/cpu/liveness.js';
import { KIND_PING, type FrameHeader } from '../../host/cpu/wire.js';
import { sleep } from '../../host/base/deadline.js';

interface Loss { silent: number[]; why: string; at: number }

/** A mesh of `worldSize` ranks seen from `rank`; every peer watched and silent unless changed. */
function mesh(worldSize: number, rank = 0) {
  const bytes = new Array<number>(worldSize).fill(0);
  const pings: { peer: number; frame: FrameHeader; payload: Uint8Array }[] = [];
  const losses: Loss[] = [];
  const t0 = performance.now();
  const m = {
    rank, worldSize, bytes, pings, losses,
    isActive: true,
    activeCalls: 0,
    gone: new Set<number>(),
    unwatched: new Set<number>(),
    cut: async (_silent: number[]): Promise<number[]> => [],
    cutCalls: [] as number[][],
    active() { m.activeCalls++; return m.isActive; },
    departed: (p: number) => m.gone.has(p),
    watched: (p: number) => !m.unwatched.has(p),
    ping(peer: number, frame: FrameHeader, payload: Uint8Array, done: () => void) { pings.push({ peer, frame: { ...frame }, payload }); done(); },
    bytesIn(p: number) {
      if (p === rank) throw new Error('bytesIn of this rank itself');
      return bytes[p];
    },
    lose(silent: number[], why: string) { losses.push({ silent, why, at: performance.now() - t0 }); },
    alsoCut(silent: number[]) { m.cutCalls.push(silent); return m.cut(silent); },
  };
  return m satisfies LivenessPeers;
}

function withBound<T>(ms: number | undefined, fn: () => Promise<T>): Promise<T> {
  const old = process.env.GROUPCOMM_LIVENESS_MS;
  if (ms === undefined) delete process.env.GROUPCOMM_LIVENESS_MS;
  else process.env.GROUPCOMM_LIVENESS_MS = String(ms);
  return fn().finally(() => {
    if (old === undefined) delete process.env.GROUPCOMM_LIVENESS_MS;
    else process.env.GROUPCOMM_LIVENESS_MS = old;
  });
}

async function until(cond: () => boolean, ms = 3000): Promise<void> {
  const end = performance.now() + ms;
  while (!cond()) {
    if (performance.now() > end) throw new Error('condition not reached');
    await sleep(5);
  }
}

test('a bound of 0 or a group of one starts nothing', () => withBound(0, async () => {
  assert.is(watchLiveness(mesh(3)), undefined);
  process.env.GROUPCOMM_LIVENESS_MS = '100';
  assert.is(watchLiveness(mesh(1)), undefined);
  const stop = watchLiveness(mesh(2));
  assert.type(stop, 'function');
  stop!();
}));

test('the default bound (30 s) is on: a silent peer is not lost at once', () => withBound(undefined, async () => {
  const m = mesh(2);
  const stop = watchLiveness(m)!;
  assert.type(stop, 'function');
  await sleep(50);
  stop();
  assert.equal(m.losses, []);
}));

test('every watched peer but this rank gets PING frames every fifth of the bound', () => withBound(200, async () => {
  const m = mesh(4, 1);
  m.gone.add(3);
  let n = 0;
  const feed = setInterval(() => { m.bytes[0] = ++n; m.bytes[2] = n; }, 5);
  const stop = watchLiveness(m)!;
  await sleep(220);
  stop();
  clearInterval(feed);
  const before = m.pings.length;
  await sleep(100);
  assert.is(m.pings.length, before, 'no pings after stop()');
  const peers = new Set(m.pings.map((p) => p.peer));
  assert.equal([...peers].sort(), [0, 2], 'not itself, not a departed peer');
  for (const p of m.pings) {
    assert.equal(p.frame, { kind: KIND_PING, tag: 0, seq: 0, slot: 0 });
    assert.is(p.payload.length, 0);
  }
  const to0 = m.pings.filter((p) => p.peer === 0).length;
  // Every 40 ms: about 5 in 220 ms (fewer when timers run late, never many more).
  assert.ok(to0 >= 1 && to0 <= 7, `pings to rank 0: ${to0}`);
  assert.equal(m.losses, [], 'peers that send are not lost');
}));

test('the period is at least 10 ms, even for a tiny bound', () => withBound(20, async () => {
  const m = mesh(2);
  let n = 0;
  const feed = setInterval(() => { m.bytes[1] = ++n; }, 2);
  const stop = watchLiveness(m)!;
  await sleep(100);
  stop();
  clearInterval(feed);
  const count = m.pings.length;
  assert.ok(count >= 1 && count <= 12, `pings in 100 ms: ${count}`);
}));

test('a silent watched peer is lost after the bound, not before, naming it and the bound', () => withBound(150, async () => {
  const m = mesh(3);
  // Bytes received before the check starts are its baseline (read once per peer, at once), not news.
  m.bytes[1] = 5;
  const asked: number[] = [];
  const bytesIn = m.bytesIn;
  m.bytesIn = (p: number) => { asked.push(p); return bytesIn(p); };
  let n = 0;
  const feed = setInterval(() => { m.bytes[2] = ++n; }, 5);
  const stop = watchLiveness(m)!;
  assert.equal(asked, [1, 2]);
  await until(() => m.losses.length > 0);
  stop();
  clearInterval(feed);
  const [l] = m.losses;
  assert.ok(l.at >= 150, `lost after ${l.at} ms`);
  assert.equal(l.silent, [1]);
  assert.equal(m.cutCalls, [[1]]);
  assert.match(l.why, /bound 150 ms \(GROUPCOMM_LIVENESS_MS\)/);
  const said = Number(/nothing received for (\d+) ms/.exec(l.why)![1]);
  assert.ok(said >= 150 && said <= l.at + 5, `silent for ${said} ms by the message, lost at ${l.at}`);
}));

test('named with it: peers silent for half the bound, the longest silent first; not those heard from since', () => withBound(200, async () => {
  const m = mesh(5);
  // Rank 3 silent from the start; rank 1 stops after 50 ms; rank 4 keeps sending; rank 2 stops late.
  let n = 0;
  const t0 = performance.now();
  const feed = setInterval(() => {
    n++;
    const t = performance.now() - t0;
    if (t < 50) m.bytes[1] = n;
    m.bytes[4] = n;
    if (t < 190) m.bytes[2] = n;
  }, 5);
  const stop = watchLiveness(m)!;
  await until(() => m.losses.length > 0);
  stop();
  clearInterval(feed);
  const [l] = m.losses;
  assert.equal(l.silent.slice(0, 2), [3, 1]);
  assert.not.ok(l.silent.includes(4));
  // Rank 2 is named only if it was already silent for half the bound (timers may run late).
  if (l.silent.includes(2)) assert.ok(l.at - 190 >= 100 - 5, `rank 2 named at ${l.at}`);
}));

test('an unwatched peer is neither pinged nor lost; once watched it gets the whole bound', () => withBound(100, async () => {
  const m = mesh(2);
  m.unwatched.add(1);
  const stop = watchLiveness(m)!;
  await sleep(250);
  assert.equal(m.pings, []);
  assert.equal(m.losses, []);
  const watchedAt = performance.now();
  m.unwatched.delete(1);
  await until(() => m.losses.length > 0);
  stop();
  // Watched from the last tick that saw it unwatched: at most one period (20 ms) before.
  assert.ok(performance.now() - watchedAt >= 75, 'lost a bound after it was first watched');
  assert.ok(m.pings.length >= 1);
}));

test('peers found unreachable with the silent ones are named after them; a failed probe names none', () => withBound(100, async () => {
  const m = mesh(4);
  m.unwatched.add(2);
  m.unwatched.add(3);
  m.cut = async () => [3, 2];
  let stop = watchLiveness(m)!;
  await until(() => m.losses.length > 0);
  stop();
  assert.equal(m.losses[0].silent, [1, 3, 2]);
  assert.match(m.losses[0].why, /; unreachable with them: ranks 3, 2$/);

  const one = mesh(3);
  one.unwatched.add(2);
  one.cut = async () => [2];
  stop = watchLiveness(one)!;
  await until(() => one.losses.length > 0);
  stop();
  assert.equal(one.losses[0].silent, [1, 2]);
  assert.match(one.losses[0].why, /; unreachable with them: rank 2$/);

  const failing = mesh(2);
  failing.cut = () => Promise.reject(new Error('probe failed'));
  stop = watchLiveness(failing)!;
  await until(() => failing.losses.length > 0);
  stop();
  assert.equal(failing.losses[0].silent, [1]);
  assert.not.match(failing.losses[0].why, /unreachable/);
  assert.match(failing.losses[0].why, /link cut or process stuck$/);
}));

test('while the probe runs nothing else happens; a mesh that went inactive meanwhile loses nobody', () => withBound(60, async () => {
  const m = mesh(2);
  let release!: (v: number[]) => void;
  m.cut = () => new Promise((r) => { release = r; });
  const stop = watchLiveness(m)!;
  await until(() => m.cutCalls.length > 0);
  const pings = m.pings.length;
  const calls = m.activeCalls;
  await sleep(100);
  assert.is(m.pings.length, pings, 'no pings while deciding');
  assert.is(m.activeCalls, calls, 'no ticks while deciding');
  assert.is(m.cutCalls.length, 1);
  m.isActive = false;
  release([]);
  await sleep(20);
  stop();
  assert.equal(m.losses, []);
}));

test('an inactive mesh stops the check by itself', () => withBound(50, async () => {
  const m = mesh(2);
  m.isActive = false;
  watchLiveness(m);
  await sleep(60);
  const calls = m.activeCalls;
  assert.ok(calls >= 1);
  await sleep(100);
  assert.is(m.activeCalls, calls, 'not asked again after it said inactive');
  assert.equal(m.pings, []);
}));

test('a running check does not keep the process alive (this file must exit with one left running)', () => withBound(1000, async () => {
  const m = mesh(2);
  m.unwatched.add(1);
  assert.type(watchLiveness(m), 'function');
}));

test.run();
