/**
 * Poll mode (a store that cannot push, like torch's TCPStore): receives queued on one lane park
 * ONE store wait between them, not one each. With a torch store every parked blocking read holds
 * its own wait connection on the server, so N receives queued before their sends would open N
 * connections — a leak that gives no wrong result, which is why it is counted here: blocking
 * reads in flight through the group's store, and connections the server holds.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { StatelessProcessGroup } from '../../host/pg/group.js';
import { TcpStore } from '../../host/index.js';
import type { Store } from '../../host/store/types.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const BLOCKING = new Set(['get', 'take', 'multiGet', 'wait']);

/** `s` with its blocking reads counted: in flight now, and the most at once. */
function counted(s: TcpStore): { store: Store; now: () => number; max: () => number; reset: () => void } {
  let now = 0;
  let max = 0;
  const store = new Proxy(s, {
    get(target, prop) {
      const v = Reflect.get(target, prop, target);
      if (typeof v !== 'function') return v;
      if (typeof prop === 'string' && BLOCKING.has(prop)) {
        return (...args: unknown[]) => {
          now++;
          max = Math.max(max, now);
          const p = (v as (...a: unknown[]) => Promise<unknown>).apply(target, args);
          return p.finally(() => { now--; });
        };
      }
      return v.bind(target);
    },
  }) as unknown as Store;
  return { store, now: () => now, max: () => max, reset: () => { max = now; } };
}

// Whatever a test opened is closed after it, pass or fail, so a failure cannot keep the file alive.
const opened: (() => Promise<unknown>)[] = [];
test.after.each(async () => {
  for (const c of opened.splice(0).reverse()) await c().catch(() => {});
});

async function pollPair(name: string) {
  const s0 = await TcpStore.create({ port: 0, isServer: true, timeoutMs: 10_000, extensions: false });
  opened.push(() => s0.close());
  const s1 = await TcpStore.create({ port: s0.port, timeoutMs: 10_000, extensions: false });
  opened.push(() => s1.close());
  const c1 = counted(s1);
  const [g0, g1] = await Promise.all([
    StatelessProcessGroup.create({ rank: 0, worldSize: 2, store: s0, timeoutMs: 10_000, groupName: name }),
    StatelessProcessGroup.create({ rank: 1, worldSize: 2, store: c1.store, timeoutMs: 10_000, groupName: name }),
  ]);
  opened.push(() => g0.destroy({ force: true }), () => g1.destroy({ force: true }));
  return { g0, g1, c1, server: s0.server! };
}

test('poll mode: 8 receives queued on one lane park one store wait and one wait connection; all arrive in order', async () => {
  const { g0, g1, c1, server } = await pollPair('lane');
  await sleep(100); // setup's own reads settle
  c1.reset();
  const conns = server.numConnections;
  const N = 8;
  const got = Array.from({ length: N }, () => g1.recvObj<{ i: number }>(0));
  await sleep(300); // long enough for every receive to have parked, were each to park its own
  const parked = c1.max();
  const connsWhileParked = server.numConnections;
  for (let i = 0; i < N; i++) await g0.sendObj({ i }, 1);
  assert.equal((await Promise.all(got)).map((o) => o.i), [...Array(N).keys()]);
  assert.is(parked, 1, `${parked} blocking store reads in flight for one lane`);
  assert.ok(connsWhileParked <= conns + 1, `the server held ${connsWhileParked - conns} more connections while ${N} receives waited`);
});

test('poll mode: two lanes (a receive from a peer and a collective) park at most one wait each', async () => {
  const { g0, g1, c1 } = await pollPair('lanes');
  await sleep(100);
  c1.reset();
  const recvs = Array.from({ length: 4 }, () => g1.recvObj<number>(0));
  const gathered = g1.allGatherObj('one');
  await sleep(300);
  const parked = c1.max();
  for (let i = 0; i < 4; i++) await g0.sendObj(i, 1);
  const [, g] = await Promise.all([Promise.all(recvs), g0.allGatherObj('zero')]);
  assert.equal(await Promise.all(recvs), [0, 1, 2, 3]);
  assert.equal(await gathered, ['zero', 'one']);
  assert.equal(g, ['zero', 'one']);
  assert.ok(parked <= 2, `${parked} blocking store reads in flight for two lanes`);
});

test.run();
