// AlarmClock: many deadlines on one timer (the process group's receives use it instead of a
// timer each). Checked: each alarm fires once, on time and in deadline order; cancelled ones never
// fire; an earlier deadline added later is not held up by a later one; and an idle clock does not
// keep the process alive. Also the rest of the module: effectiveTimeout's fallbacks, Deadline
// across steps, anySignal, settled.
import { spawnSync } from 'node:child_process';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { AlarmClock, anySignal, Deadline, effectiveTimeout, settled } from '../../host/base/deadline.js';
import { ErrorCode, isGroupcommError } from '../../host/base/errors.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('alarms fire once each, in deadline order, not before their time; cancelled ones never fire', async () => {
  const clock = new AlarmClock();
  const t0 = performance.now();
  const fired: [string, number][] = [];
  const at = (name: string) => () => fired.push([name, performance.now() - t0]);
  clock.add(60, at('60'));
  const c = clock.add(30, at('30 cancelled'));
  clock.add(20, at('20'));
  clock.add(90, at('90'));
  const d = clock.add(40, at('40 cancelled twice'));
  c.cancel();
  d.cancel();
  d.cancel();
  await sleep(160);
  assert.equal(fired.map(([n]) => n), ['20', '60', '90']);
  for (const [name, ms] of fired) assert.ok(ms >= Number(name) - 1, `${name} fired at ${ms.toFixed(1)} ms`);
});

test('an earlier deadline added after a later one fires on its own time (the timer is re-armed)', async () => {
  const clock = new AlarmClock();
  const t0 = performance.now();
  let late = -1;
  let early = -1;
  clock.add(2000, () => { late = performance.now() - t0; }).cancel();
  clock.add(1000, () => { late = performance.now() - t0; });
  clock.add(30, () => { early = performance.now() - t0; });
  await sleep(300);
  assert.ok(early >= 29 && early < 250, `fired at ${early.toFixed(1)} ms`);
  assert.is(late, -1);
});

test('thousands of add/cancel pairs (the hot path) leave nothing behind and later alarms still fire', async () => {
  const clock = new AlarmClock();
  let fired = 0;
  for (let i = 0; i < 10_000; i++) clock.add(50, () => { fired++; }).cancel();
  clock.add(20, () => { fired += 1000; });
  await sleep(120);
  assert.is(fired, 1000);
});

test('a clock whose alarms were all cancelled does not keep the process alive', () => {
  const mod = new URL('../../host/base/deadline.js', import.meta.url).href;
  const script = `const { AlarmClock } = await import(${JSON.stringify(mod)});
    const c = new AlarmClock(); const a = c.add(60000, () => {}); c.add(30000, () => {}).cancel(); a.cancel();
    setTimeout(() => console.log('still here'), 10);`;
  const t0 = Date.now();
  const isBun = typeof (process.versions as Record<string, string | undefined>).bun === 'string';
  const r = spawnSync(process.execPath, isBun ? ['-e', script] : ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 20_000 });
  assert.is(r.status, 0, r.stderr);
  assert.match(r.stdout, /still here/);
  assert.ok(Date.now() - t0 < 10_000, `the child took ${Date.now() - t0} ms to exit`);
});

test('effectiveTimeout: the call\'s timeoutMs, else the object\'s, else GROUPCOMM_TIMEOUT_MS (300 s unset)', () => {
  assert.is(effectiveTimeout({ timeoutMs: 5 }, 10), 5);
  assert.is(effectiveTimeout({ timeoutMs: 0 }, 10), 10);
  assert.is(effectiveTimeout(undefined, 10), 10);
  assert.is(effectiveTimeout({ timeoutMs: -1 }, Number.NaN), process.env.GROUPCOMM_TIMEOUT_MS ? Number(process.env.GROUPCOMM_TIMEOUT_MS) : 300_000);
});

test('Deadline: each step gets what is left; a spent deadline throws TIMEOUT naming what', async () => {
  const d = Deadline.of({ timeoutMs: 60 }, 1000, 'the op');
  const first = d.next().timeoutMs;
  assert.ok(first <= 60 && first > 0, String(first));
  await sleep(80);
  assert.is(d.remainingMs(), 0);
  try {
    d.next();
    assert.unreachable('a spent deadline gave a step');
  } catch (e) {
    assert.ok(isGroupcommError(e, ErrorCode.TIMEOUT));
    assert.match((e as Error).message, 'the op timed out after 60ms');
  }
});

test('anySignal: none, one (itself), several (fires with the first reason)', () => {
  assert.is(anySignal([undefined]), undefined);
  const a = new AbortController();
  assert.is(anySignal([undefined, a.signal]), a.signal);
  const b = new AbortController();
  const both = anySignal([a.signal, b.signal])!;
  b.abort('b first');
  assert.ok(both.aborted);
  assert.is(both.reason, 'b first');
});

test('settled: true once all settle (rejections too), false at the timeout or when the signal fires', async () => {
  assert.is(await settled([], { timeoutMs: 1 }), true);
  assert.is(await settled([Promise.reject(new Error('x')), sleep(5)], { timeoutMs: 5000 }), true);
  assert.is(await settled([new Promise(() => {})], { timeoutMs: 20 }), false);
  const ac = new AbortController();
  setTimeout(() => ac.abort(), 10);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise((resolve) => { timer = setTimeout(() => resolve('still waiting'), 10_000); });
  const r = await Promise.race([settled([new Promise(() => {})], { timeoutMs: 600_000, signal: ac.signal }), late]);
  clearTimeout(timer);
  assert.is(r, false, 'the signal ends the wait');
});

test.run();
