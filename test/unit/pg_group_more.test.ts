// More of StatelessProcessGroup (host/pg/group.ts), next to pg_group.test: a group of one sends
// nothing to the store after create, allReduce's check of every rank's tensor and `out`'s shape
// checks with prefixes and permutations that a looser comparison would let through, the fields
// of an overlap refusal, a failed create leaving a given store open, close's time limit aborting
// what is in flight, and the mailboxes reclaim holds being let go by close.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { StatelessProcessGroup } from '../../host/pg/group.js';
import { TcpStore } from '../../host/index.js';
import { tensor } from '../../host/core/tensor.js';
import type { Store } from '../../host/store/types.js';
import { MemStoreServer } from '../helpers/memstore.js';
import { failure } from '../helpers/rejects.js';

type PG = StatelessProcessGroup;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function groups(n: number, server = new MemStoreServer()): Promise<PG[]> {
  return Promise.all([...Array(n).keys()].map((rank) =>
    StatelessProcessGroup.create({ rank, worldSize: n, store: server.client(), timeoutMs: 3000 })));
}

test('a group of one: create adds to the epoch counter and nothing else; no op and no abort touches the store', async () => {
  const server = new MemStoreServer();
  const inner = server.client();
  const calls: string[] = [];
  const store = new Proxy(inner, {
    get: (t, p) => {
      const v = Reflect.get(t, p, t);
      return typeof v === 'function' ? (...a: unknown[]) => { calls.push(String(p)); return v.apply(t, a); } : v;
    },
  }) as unknown as Store;
  const g = await StatelessProcessGroup.create({ rank: 0, worldSize: 1, store, timeoutMs: 1000 });
  const t = tensor(new Float32Array([1, 2]));
  const obj = { x: 1 };
  assert.is(await g.broadcastObj(obj, 0), obj);
  assert.equal([...(await g.broadcast(t, { src: 0 })).data as Float32Array], [1, 2]);
  assert.equal(await g.allGatherObj(obj), [obj]);
  await g.barrier();
  assert.equal([...(await g.allReduce(t)).data as Float32Array], [1, 2]);
  assert.equal(calls, ['add']);
  await g.abort('done');
  assert.equal(calls, ['add']);
});

test('allReduce refuses another rank\'s tensor of another dtype, rank or shape, even of the same byte size', async () => {
  const cases: [ReturnType<typeof tensor>, ReturnType<typeof tensor>][] = [
    [tensor(new Float32Array(2)), tensor(new Int32Array(2))],
    [tensor(new Float32Array(2)), tensor(new Float32Array(2), { shape: [2, 1] })],
    [tensor(new Float32Array(6), { shape: [1, 2, 3] }), tensor(new Float32Array(6), { shape: [1, 3, 2] })],
  ];
  for (const [x, y] of cases) {
    const [a, b] = await groups(2);
    const [ea, eb] = await Promise.all([failure(a.allReduce(x)), failure(b.allReduce(y as never))]);
    assert.is(ea.code, 'ERR_GROUPCOMM_INVALID_ARGUMENT', `${x.shape} ${x.dtype} vs ${y.shape} ${y.dtype}: ${ea.message}`);
    assert.equal([ea.peerRank, eb.peerRank], [1, 0]);
    await Promise.all([a.close(), b.close()]);
  }
});

test('`out` must match the input\'s rank and every dim (a prefix or a permutation is refused); a partial overlap names this rank', async () => {
  const [a, b] = await groups(2);
  const refused = async (p: Promise<unknown>) => {
    const e = await failure(p);
    assert.is(e.code, 'ERR_GROUPCOMM_INVALID_ARGUMENT', e.message);
    assert.is(e.rank, 0);
  };
  await refused(a.allReduce(tensor(new Float32Array(2), { shape: [2, 1] }), { out: tensor(new Float32Array(2)) as never }));
  await refused(a.allReduce(tensor(new Float32Array(6), { shape: [1, 2, 3] }), { out: tensor(new Float32Array(6), { shape: [1, 3, 2] }) }));
  const buf = new Float32Array(3);
  await refused(a.allReduce(tensor(buf.subarray(0, 2)), { out: tensor(buf.subarray(1, 3)) }));
  await Promise.all([a.close(), b.close()]);
});

test('broadcast without options is refused (no src), not a TypeError', async () => {
  const [a, b] = await groups(2);
  const e = await failure(a.broadcast(tensor(new Float32Array(1)), undefined as never));
  assert.is(e.code, 'ERR_GROUPCOMM_INVALID_ARGUMENT');
  assert.is(e.peerRank, undefined);
  await Promise.all([a.close(), b.close()]);
});

test('a failed create leaves a store it was given open; reclaim takes rank 0 as a dead peer', async () => {
  const server = new MemStoreServer();
  const s = server.client();
  const e = await failure(StatelessProcessGroup.create({ rank: 1, worldSize: 2, store: s, timeoutMs: 100 }));
  assert.is(e.code, 'ERR_GROUPCOMM_TIMEOUT');
  await s.set('after', 'open');
  assert.ok(server.data.has('after'));
  const [a, b, c] = await groups(3);
  assert.equal(await b.reclaim([0], { timeoutMs: 50 }), []);
  await Promise.all([a.close(), b.close(), c.close()]);
});

test('close({ timeoutMs }) aborts an op still in flight at its deadline; destroy({ force }) names itself as the cause', async () => {
  const [a, b] = await groups(2);
  const waiting = failure(b.recvObj(0));
  await sleep(10);
  const t0 = performance.now();
  const closing = b.close({ timeoutMs: 60 });
  const e = await waiting;
  assert.is(e.code, 'ERR_GROUPCOMM_ABORTED');
  assert.ok(performance.now() - t0 < 1500, `aborted after ${(performance.now() - t0).toFixed(0)} ms`);
  await closing;
  const stuck = failure(a.recvObj(1));
  await sleep(10);
  await a.destroy({ force: true });
  const f = await stuck;
  assert.is(f.code, 'ERR_GROUPCOMM_ABORTED');
  assert.is(f.cause, 'destroy({ force: true })');
});

test('push mode: the mailbox reclaim holds swallows messages until abort lets it go', async () => {
  const s0 = await TcpStore.create({ port: 0, isServer: true, timeoutMs: 5000 });
  const stores = [s0, await TcpStore.create({ port: s0.port, timeoutMs: 5000 }), await TcpStore.create({ port: s0.port, timeoutMs: 5000 })];
  const pgs = await Promise.all(stores.map((store, rank) => StatelessProcessGroup.create({ rank, worldSize: 3, store, timeoutMs: 5000 })));
  try {
    // Rank 2 dies: its connection (and subscription) goes.
    await pgs[2].abort('dead');
    await stores[2].close();
    const [a, b] = pgs;
    assert.equal(await b.reclaim([2], { timeoutMs: 2000 }), [2]);
    const key = (n: number) => `${a.keyPrefix}to/2/p/0/${n}`;
    await a.sendObj('swallowed', 2);
    await sleep(50);
    assert.not.ok(await s0.check([key(0)]), 'held by rank 1: not stored');
    await b.abort('leaving');
    await sleep(50);
    await a.sendObj('kept', 2);
    await sleep(50);
    assert.ok(await s0.check([key(1)]), 'let go by abort: stored again');
    await a.close({ timeoutMs: 500 });
  } finally {
    for (const s of stores.slice(1)) await s.close();
    await s0.close();
  }
});

test.run();
