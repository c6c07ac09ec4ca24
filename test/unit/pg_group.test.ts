// StatelessProcessGroup's own code (host/pg/group.ts), edge by edge: create's refusals (before
// any store traffic) and what it passes on, worldSize 1, the hub chosen at create, each op's
// argument checks and the fields of their errors, allReduce's and broadcast's `out`, reclaim's
// checks, abort/destroy/close and what they reach (the mailbox, the store the group opened).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import net from 'node:net';
import { StatelessProcessGroup } from '../../host/pg/group.js';
import { TcpStore } from '../../host/index.js';
import { tensor, type CpuTensor } from '../../host/core/tensor.js';
import type { Store } from '../../host/store/types.js';
import { MemStoreServer } from '../helpers/memstore.js';
import { failure } from '../helpers/rejects.js';

type PG = StatelessProcessGroup;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function groups(n: number, server = new MemStoreServer(), groupName?: string): Promise<PG[]> {
  return Promise.all([...Array(n).keys()].map((rank) =>
    StatelessProcessGroup.create({ rank, worldSize: n, store: server.client(), timeoutMs: 3000, groupName })));
}

/** A store that counts every call (and must never be called). */
function untouched(): { store: Store; calls: string[] } {
  const calls: string[] = [];
  const store = new Proxy({}, { get: (_, p) => { calls.push(String(p)); return () => Promise.reject(new Error('called')); } }) as Store;
  return { store, calls };
}

async function freePort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise((r) => srv.close(r));
  return port;
}

test('create refuses bad ranks, sizes, names and ports before any store traffic', async () => {
  const bad: [Record<string, unknown>, RegExp][] = [
    [{ rank: 0, worldSize: 0 }, /worldSize must be a positive integer/],
    [{ rank: 0, worldSize: 1.5 }, /worldSize/],
    [{ rank: -1, worldSize: 2 }, /rank -1 is not in \[0, 2\)/],
    [{ rank: 2, worldSize: 2 }, /rank 2/],
    [{ rank: 0.5, worldSize: 2 }, /rank 0.5/],
    [{ rank: 0, worldSize: 2, groupName: '' }, /groupName/],
    [{ rank: 0, worldSize: 2, groupName: 'a/b' }, /groupName/],
    [{ rank: 0, worldSize: 2, groupName: 7 }, /groupName/],
  ];
  for (const [o, msg] of bad) {
    const u = untouched();
    const e = await failure(StatelessProcessGroup.create({ store: u.store, timeoutMs: 1000, ...o } as never));
    assert.is(e.code, 'ERR_GROUPCOMM_INVALID_ARGUMENT', JSON.stringify(o));
    assert.match(e.message, msg);
    assert.equal(u.calls, [], `${JSON.stringify(o)}: no store call`);
  }
  assert.match((await failure(StatelessProcessGroup.create({ rank: 0, worldSize: 2 } as never))).message, /pass \{ port \}/);
  const p0 = await failure(StatelessProcessGroup.create({ rank: 1, worldSize: 2, port: 0 }));
  assert.is(p0.code, 'ERR_GROUPCOMM_INVALID_ARGUMENT');
  assert.match(p0.message, /port 0 cannot be shared/);
  // A group of one may host its store on any port.
  const one = await StatelessProcessGroup.create({ rank: 0, worldSize: 1, port: 0 });
  assert.is(one.epoch, 1);
  await one.close();
});

test('create with a port: rank 0 hosts the store on 127.0.0.1 by default; a failed join closes the store it opened', async () => {
  const port = await freePort();
  const e = await failure(StatelessProcessGroup.create({ rank: 0, worldSize: 2, port, timeoutMs: 200 }));
  assert.is(e.code, 'ERR_GROUPCOMM_TIMEOUT');
  assert.equal(e.peerRanks, [1]);
  // The server of the failed create is gone: the port is free for the next group.
  const [a, b] = await Promise.all([0, 1].map((rank) => StatelessProcessGroup.create({ rank, worldSize: 2, port, timeoutMs: 3000 })));
  assert.is((a.store as TcpStore).server?.port, port, 'rank 0 is the server');
  assert.is(b.store instanceof TcpStore && (b.store as TcpStore).server, undefined, 'rank 1 only connects');
  await b.sendObj('x', 0);
  assert.is(await a.recvObj(1), 'x');
  await Promise.all([b.close(), a.close()]);
  // ...and close() closed the stores it opened: the port is free again.
  const again = net.createServer();
  await new Promise<void>((r, j) => { again.once('error', j); again.listen(port, '127.0.0.1', () => r()); });
  await new Promise((r) => again.close(r));
});

test('worldSize 1: each create takes the next epoch; a signal and the timeout reach the store', async () => {
  const server = new MemStoreServer();
  const [g1] = await groups(1, server, 'solo');
  const [g2] = await groups(1, server, 'solo');
  assert.equal([g1.epoch, g2.epoch], [1, 2]);
  assert.is(g2.keyPrefix, 'solo/2/');
  assert.is(g2.timeoutMs, 3000);
  assert.equal([g2.rank, g2.worldSize, g2.groupName], [0, 1, 'solo']);
  const ac = new AbortController();
  let seen: { timeoutMs?: number; signal?: AbortSignal } | undefined;
  const spy = server.client();
  const add = spy.add.bind(spy) as (k: string, d: number, o?: unknown) => Promise<number>;
  (spy as { add: unknown }).add = (k: string, d: number, o?: { timeoutMs?: number; signal?: AbortSignal }) => { seen = o; return add(k, d, o); };
  const g3 = await StatelessProcessGroup.create({ rank: 0, worldSize: 1, store: spy, timeoutMs: 1234, signal: ac.signal, groupName: 'solo' });
  assert.is(seen?.timeoutMs, 1234);
  assert.is(seen?.signal, ac.signal);
  assert.is(g3.epoch, 3);
  assert.is(g3.store, spy, 'the store given is kept');
});

test('ops refuse bad peers and roots, naming this rank and the peer; a group of one refuses point to point', async () => {
  const all = await groups(3);
  const a = all[1];
  for (const [p, peer] of [[a.sendObj(1, 5), 5], [a.recvObj(1.5), 1.5], [a.send(tensor(new Float32Array(1)), -1), -1], [a.recv(tensor(new Float32Array(1)), 3), 3],
    [a.sendObj(1, 1), 1], [a.recvObj(1), 1], [a.broadcastObj(1, 3), 3], [a.broadcastObj(1, -1), -1], [a.broadcast(tensor(new Float32Array(1)), { src: 0.5 }), 0.5]] as const) {
    const e = await failure(p);
    assert.is(e.code, 'ERR_GROUPCOMM_INVALID_ARGUMENT', String(peer));
    assert.is(e.rank, 1);
    assert.is(e.peerRank, peer);
  }
  assert.match((await failure(a.sendObj(1, 1))).message, /sendObj: dst is this rank/);
  assert.match((await failure(a.recvObj(7))).message, /recvObj: src 7 is not a rank/);
  await Promise.all(all.map((g) => g.close()));
  const e = await failure(a.sendObj(1, 0));
  assert.is(e.code, 'ERR_GROUPCOMM_DESTROYED');
  assert.is(e.rank, 1);
});

test('allReduce: ops by name only, avg not on bool, `out` of the wrong kind named with this rank; every rank folds in rank order', async () => {
  const [a, b] = await groups(2);
  const f = () => tensor(new Float32Array([1, 2]));
  const refused = async (p: Promise<unknown>, msg: RegExp) => {
    const e = await failure(p);
    assert.is(e.code, 'ERR_GROUPCOMM_INVALID_ARGUMENT');
    assert.match(e.message, msg);
    return e;
  };
  await refused(a.allReduce(f(), { op: { premulSum: 2 } as never }), /by name/);
  await refused(a.allReduce(tensor(new Uint8Array([1]), { dtype: 'bool' }), { op: 'avg' }), /avg is not defined for bool/);
  const o1 = await refused(a.allReduce(f(), { out: tensor(new Float32Array(3)) }), /out must be \[2\] float32, got \[3\] float32/);
  assert.is(o1.rank, 0);
  await refused(a.allReduce(f(), { out: tensor(new Int32Array(2)) as never }), /got \[2\] int32/);
  await refused(a.allReduce(f(), { out: tensor(new Float32Array(2), { shape: [1, 2] }) }), /got \[1, 2\]/);
  await refused(a.broadcast(f(), { src: 0, out: tensor(new Float32Array(1)) }), /broadcast: out must be/);
  // bool sums and maxes are fine; avg of ints divides once.
  const [s0, s1] = await Promise.all([a, b].map((g) => g.allReduce(tensor(new Uint8Array([1, 0]), { dtype: 'bool' }), { op: 'max' })));
  assert.equal([...(s0 as CpuTensor).data as Uint8Array], [1, 0]);
  assert.equal([...(s1 as CpuTensor).data as Uint8Array], [1, 0]);
  const [v0] = await Promise.all([a.allReduce(tensor(new Float32Array([1, 3])), { op: 'avg' }), b.allReduce(tensor(new Float32Array([3, 5])), { op: 'avg' })]);
  assert.equal([...(v0 as CpuTensor).data as Float32Array], [2, 4]);
  // A new tensor by default; `out` itself when given (and the input untouched).
  const inp = f();
  const out = tensor(new Float32Array(2));
  const [r0, r1] = await Promise.all([a.allReduce(inp, { out }), b.allReduce(f())]);
  assert.is(r0, out);
  assert.not.equal(r1, inp);
  assert.equal([...(inp.data as Float32Array)], [1, 2]);
  assert.equal([...(out.data as Float32Array)], [2, 4]);
  await Promise.all([a.close(), b.close()]);
});

test('broadcast and allGatherObj: the root\'s result is its own value; receivers get `out` filled or a new tensor; recv resolves with its destination', async () => {
  const [a, b] = await groups(2);
  const t = tensor(new Float32Array([5, 6]));
  const out = tensor(new Float32Array(2));
  const [ra, rb] = await Promise.all([a.broadcast(t, { src: 0, out }), b.broadcast(tensor(new Float32Array(2)), { src: 0 })]);
  assert.is(ra, out);
  assert.equal([...(out.data as Float32Array)], [5, 6], 'the root copies into its out');
  assert.equal([...((rb as CpuTensor).data as Float32Array)], [5, 6]);
  const inPlace = await Promise.all([a.broadcast(t, { src: 0, out: t }), b.broadcast(tensor(new Float32Array(2)), { src: 0 })]);
  assert.is(inPlace[0], t);
  const mine = { me: 'a' };
  const got = await Promise.all([a.allGatherObj(mine), b.allGatherObj({ me: 'b' })]);
  assert.is(got[0][0], mine);
  assert.equal(got[1], [{ me: 'a' }, { me: 'b' }]);
  const dst = tensor(new Float32Array(2));
  await a.send(t, 1);
  assert.is(await b.recv(dst, 0), dst);
  await Promise.all([a.close({ timeoutMs: 200 }), b.close({ timeoutMs: 200 })]);
});

test('reclaim: refuses ranks that are not other ranks of the group (naming them); after close it only reports', async () => {
  const [a, b, c] = await groups(3);
  for (const r of [-1, 3, 0.5, 1]) {
    const e = await failure(b.reclaim([r]));
    assert.is(e.code, 'ERR_GROUPCOMM_INVALID_ARGUMENT', String(r));
    assert.equal([e.rank, e.peerRank], [1, r]);
  }
  // MemStore cannot push: no mailbox to hold.
  assert.equal(await b.reclaim([2], { timeoutMs: 100 }), []);
  await Promise.all([a.close(), b.close(), c.close()]);
  assert.equal(await b.reclaim([2]), []);
});

test('abort: ops in flight reject with ABORTED (rank, cause), the mailbox is closed, a store the group opened is aborted; idempotent', async () => {
  const port = await freePort();
  const [a, b] = await Promise.all([0, 1].map((rank) => StatelessProcessGroup.create({ rank, worldSize: 2, port, timeoutMs: 5000 })));
  const waiting = failure(b.recvObj(0));
  await sleep(20);
  const why = new Error('stop');
  const ab = b.abort(why);
  const e = await waiting;
  assert.is(e.code, 'ERR_GROUPCOMM_ABORTED');
  assert.is(e.rank, 1);
  assert.is(e.cause, why);
  assert.is(b.abort('again'), ab);
  assert.is(b.destroy({ force: true }), ab);
  await ab;
  assert.is((await failure(b.store.get('x', { timeoutMs: 100 }))).code, 'ERR_GROUPCOMM_DESTROYED', 'its store is closed');
  // destroy({ force }) is abort: rank 0 aborts at once, its server goes with it.
  const t0 = performance.now();
  await a.destroy({ force: true });
  assert.ok(performance.now() - t0 < 1000);
  assert.is((await failure(a.recvObj(1))).code, 'ERR_GROUPCOMM_DESTROYED');
});

test('a store given to the group is not closed by close or abort; await using closes the group', async () => {
  const server = new MemStoreServer();
  const [a, b] = await groups(2, server);
  {
    await using g = b;
    void g;
  }
  assert.is((await failure(b.barrier())).code, 'ERR_GROUPCOMM_DESTROYED');
  await a.abort('x');
  await a.store.set('still', 'open');
  assert.ok(server.data.has('still'));
});

test.run();
