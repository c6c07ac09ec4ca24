// StatelessProcessGroup against the in-memory store: several group instances in one process
// stand in for ranks (gloo's HashStore tests). Real processes and sockets: test/integration/pg*.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { StatelessProcessGroup } from '../../host/pg/group.js';
import { tensor, type CpuTensor } from '../../host/core/tensor.js';
import { MemStoreServer } from '../helpers/memstore.js';
import { rejectsWith } from '../helpers/rejects.js';
import { everyOp } from '../helpers/pg_ops.js';

type PG = StatelessProcessGroup;

async function groups(n: number, server = new MemStoreServer(), opts: { groupName?: string; timeoutMs?: number } = {}): Promise<PG[]> {
  return Promise.all([...Array(n).keys()].map((rank) =>
    StatelessProcessGroup.create({ rank, worldSize: n, store: server.client(), timeoutMs: opts.timeoutMs ?? 5000, groupName: opts.groupName })));
}


for (const n of [1, 2, 3, 4, 7]) {
  test(`every op with ${n} rank(s), in-process`, async () => {
    const server = new MemStoreServer();
    const pgs = await groups(n, server);
    assert.equal(pgs.map((g) => g.epoch), new Array(n).fill(pgs[0].epoch));
    await everyOp(pgs);
    await Promise.all(pgs.map((g) => g.destroy()));
    // Nothing survives a clean destroy, the group's epoch counter included.
    assert.equal([...server.data.keys()], []);
  });
}

test('aliasing contract: inputs unchanged, out honoured, in place via out, partial overlap refused (2 ranks and 1)', async () => {
  for (const n of [2, 1]) {
    const pgs = await groups(n);
    await Promise.all(pgs.map(async (g) => {
      const r = g.rank;
      // allReduce: a new tensor, the input untouched.
      const x = tensor(new Int32Array([r + 1, 10]));
      const sum = await g.allReduce(x, { op: 'sum' });
      assert.is.not(sum, x);
      assert.equal([...x.data as Int32Array], [r + 1, 10], 'allReduce input unchanged');
      assert.equal([...sum.data as Int32Array], [(n * (n + 1)) / 2, 10 * n]);
      // into `out`
      const out = tensor(new Int32Array(2));
      assert.is(await g.allReduce(x, { op: 'max', out }), out);
      assert.equal([...out.data as Int32Array], [n, 10]);
      assert.equal([...x.data as Int32Array], [r + 1, 10]);
      // in place
      assert.is(await g.allReduce(x, { op: 'sum', out: x }), x);
      assert.equal([...x.data as Int32Array], [(n * (n + 1)) / 2, 10 * n]);
      // broadcast: receivers' tensors are not written without out: x
      const b = tensor(new Float32Array([r === 0 ? 7 : -1, r]));
      const got = await g.broadcast(b, { src: 0 });
      assert.is.not(got, b);
      assert.equal([...got.data as Float32Array], [7, 0]);
      assert.equal([...b.data as Float32Array], [r === 0 ? 7 : -1, r], 'broadcast input unchanged');
      const bo = tensor(new Float32Array(2));
      assert.is(await g.broadcast(b, { src: 0, out: bo }), bo);
      assert.equal([...bo.data as Float32Array], [7, 0]);
      assert.is(await g.broadcast(b, { src: 0, out: b }), b);
      assert.equal([...b.data as Float32Array], [7, 0]);
    }));
    // A partial overlap and a wrong out are refused on the calling rank before anything is sent.
    const buf = new Int32Array(3);
    const inp = tensor(buf.subarray(0, 2));
    await rejectsWith(pgs[0].allReduce(inp, { out: tensor(buf.subarray(1, 3)) }), 'ERR_GROUPCOMM_INVALID_ARGUMENT');
    await rejectsWith(pgs[0].broadcast(inp, { src: 0, out: tensor(buf.subarray(1, 3)) }), 'ERR_GROUPCOMM_INVALID_ARGUMENT');
    await rejectsWith(pgs[0].allReduce(inp, { out: tensor(new Int32Array(3)) }), 'ERR_GROUPCOMM_INVALID_ARGUMENT');
    await rejectsWith(pgs[0].allReduce(inp, { out: tensor(new Float32Array(2)) as CpuTensor }), 'ERR_GROUPCOMM_INVALID_ARGUMENT');
    await Promise.all(pgs.map((g) => g.destroy()));
  }
});

test('broadcasts above 64 KiB (one shared copy) reach every rank and leave no keys', async () => {
  const server = new MemStoreServer();
  const pgs = await groups(4, server);
  const big = new Uint8Array(100 * 1024).map((_, i) => i * 7);
  await Promise.all(pgs.map(async (g) => {
    for (let src = 0; src < 4; src++) {
      const got = await g.broadcastObj(g.rank === src ? { src, big } : null, src) as { src: number; big: Uint8Array };
      assert.is(got.src, src);
      assert.equal([...got.big.subarray(0, 16)], [...big.subarray(0, 16)]);
      assert.is(got.big.length, big.length);
      const t = tensor(new Float64Array(20_000).fill(g.rank === src ? src + 0.5 : -1));
      await g.broadcast(t, { src: src, out: t });
      assert.ok((t.data as Float64Array).every((x) => x === src + 0.5), `rank ${g.rank}: tensor from ${src} differs`);
    }
    await g.barrier();
  }));
  // Acks and deletes go out on a short timer when no write follows; let it fire.
  await new Promise((r) => setTimeout(r, 50));
  for (let i = 0; i < 3; i++) await new Promise((r) => setImmediate(r));
  const left = [...server.data.keys()].filter((k) => k.includes('/b/'));
  assert.equal(left, [], `broadcast keys left: ${left.join(' ')}`);
  await Promise.all(pgs.map((g) => g.destroy()));
  assert.equal([...server.data.keys()], []);
});

test('objects keep their types: Map, Set, Date, bigint, typed arrays, nesting', async () => {
  const [a, b] = await groups(2);
  const obj = {
    m: new Map<unknown, unknown>([[1, 'one'], ['k', new Map([[2n, [new Set([3])]]])]]),
    s: new Set(['x', 4]),
    d: new Date(1_700_000_000_123),
    big: 2n ** 70n,
    f32: new Float32Array([1.5, -2]),
    u8: new Uint8Array([0, 255]),
    i64: new BigInt64Array([-1n]),
    arr: [null, true, 'str', { nested: new Map([['deep', 1]]) }],
  };
  a.sendObj(obj, 1);
  const got = (await b.recvObj(0)) as typeof obj;
  assert.ok(got.m instanceof Map);
  assert.is(got.m.get(1), 'one');
  assert.ok((got.m.get('k') as Map<bigint, unknown>).get(2n) !== undefined);
  assert.equal([...((got.m.get('k') as Map<bigint, Set<number>[]>).get(2n)![0])], [3]);
  assert.equal(got.s, new Set(['x', 4]));
  assert.is(got.d.getTime(), obj.d.getTime());
  assert.is(got.big, 2n ** 70n);
  assert.ok(got.f32 instanceof Float32Array && got.f32[0] === 1.5);
  assert.ok(got.u8 instanceof Uint8Array && got.u8[1] === 255);
  assert.ok(got.i64 instanceof BigInt64Array && got.i64[0] === -1n);
  assert.ok((got.arr[3] as { nested: Map<string, number> }).nested instanceof Map);
  // The sender's object was not modified by the Map boxing.
  assert.ok(obj.m instanceof Map && obj.arr[3] !== null);
  await Promise.all([a.destroy(), b.destroy()]);
});

test('many unawaited ops match by program order', async () => {
  const [a, b, c] = await groups(3);
  const N = 200;
  const sends: Promise<unknown>[] = [];
  for (let i = 0; i < N; i++) sends.push(a.sendObj(i, 1), a.broadcastObj(`b${i}`, 0), a.allGatherObj(i * 3));
  const recvs: Promise<unknown>[] = [];
  for (let i = 0; i < N; i++) recvs.push(b.recvObj(0), b.broadcastObj(null, 0), b.allGatherObj(i * 3 + 1));
  const cs: Promise<unknown>[] = [];
  for (let i = 0; i < N; i++) cs.push(c.broadcastObj(null, 0), c.allGatherObj(i * 3 + 2));
  const got = await Promise.all(recvs);
  for (let i = 0; i < N; i++) {
    assert.is(got[3 * i], i);
    assert.is(got[3 * i + 1], `b${i}`);
    assert.equal(got[3 * i + 2], [3 * i, 3 * i + 1, 3 * i + 2]);
  }
  const cg = await Promise.all(cs);
  for (let i = 0; i < N; i++) assert.is(cg[2 * i], `b${i}`);
  await Promise.all(sends);
  await Promise.all([a, b, c].map((g) => g.destroy()));
});

test('tensors of odd dtypes and empty shapes travel intact', async () => {
  const [a, b] = await groups(2);
  const cases = [
    tensor(new Uint16Array([0x3c00, 0xc000, 0x7e00]), { dtype: 'float16' }),
    tensor(new Uint16Array([0x3f80, 0x4049]), { dtype: 'bfloat16' }),
    tensor(new BigInt64Array([-(2n ** 62n), 5n]), { shape: [2, 1] }),
    tensor(new Uint8Array([1, 0, 1]), { dtype: 'bool' }),
    tensor(new Float32Array(0), { shape: [2, 0, 3] }),
  ];
  for (const t of cases) a.send(t, 1);
  for (const t of cases) {
    const into = { ...t, shape: [...t.shape], data: new (t.data.constructor as Uint8ArrayConstructor)(t.data.length) } as typeof t;
    assert.is(await b.recv(into, 0), into);
    assert.equal([...(into.data as Uint8Array)], [...(t.data as Uint8Array)], t.dtype);
  }
  const [x, y] = [tensor(new BigInt64Array([2n ** 40n, -3n])), tensor(new BigInt64Array([1n, 7n]))];
  await Promise.all([a.allReduce(x, { op: 'sum', out: x }), b.allReduce(y, { op: 'sum', out: y })]);
  assert.equal([...x.data as BigInt64Array], [2n ** 40n + 1n, 4n]);
  assert.equal([...y.data as BigInt64Array], [...x.data as BigInt64Array]);
  await Promise.all([a.destroy(), b.destroy()]);
});

test('two senders to one receiver never collide', async () => {
  const pgs = await groups(3);
  const [r0, r1, r2] = pgs;
  const p = Promise.all([r1.sendObj('from 1 #0', 0), r2.sendObj('from 2 #0', 0), r1.sendObj('from 1 #1', 0), r2.sendObj('from 2 #1', 0)]);
  assert.equal(await Promise.all([r0.recvObj(2), r0.recvObj(1), r0.recvObj(2), r0.recvObj(1)]), ['from 2 #0', 'from 1 #0', 'from 2 #1', 'from 1 #1']);
  await p;
  await Promise.all(pgs.map((g) => g.destroy()));
});

test('destroy and re-create on the same store reads nothing stale', async () => {
  const server = new MemStoreServer();
  const first = await groups(3, server);
  // Left behind on purpose: a message never received and a broadcast never read.
  await first[0].sendObj('stale', 1);
  await first[0].broadcastObj('stale broadcast', 0);
  // Non-zero ranks re-create while rank 0 is still leaving the first incarnation.
  const leaving = first.map((g) => g.destroy());
  const second = await groups(3, server);
  await Promise.all(leaving);
  assert.ok(second[0].epoch > first[0].epoch);
  assert.equal(second.map((g) => g.epoch), [second[0].epoch, second[0].epoch, second[0].epoch]);
  second[0].sendObj('fresh', 1);
  assert.is(await second[1].recvObj(0), 'fresh');
  second[0].broadcastObj('fresh broadcast', 0);
  assert.is(await second[2].broadcastObj(null, 0), 'fresh broadcast');
  await second[1].broadcastObj(null, 0);
  await Promise.all(second.map((g) => g.destroy()));
});

test('joining ranks skip a finished epoch and leave an abandoned one', async () => {
  const server = new MemStoreServer();
  const raw = server.client();
  // A finished incarnation whose rank 0 never cleaned up (g/open still names it, g/E/all exists).
  await raw.set('pg/open', '7');
  await raw.set('pg/7/all', '1');
  const early = [1, 2].map((rank) => StatelessProcessGroup.create({ rank, worldSize: 3, store: server.client(), timeoutMs: 5000 }));
  await new Promise((r) => setTimeout(r, 50));
  // Now an abandoned one: rank 0 opened epoch 8 and died before anyone else joined.
  await raw.set('pg/open', '8');
  await new Promise((r) => setTimeout(r, 100));
  assert.ok(server.data.has('pg/8/join/1'), 'rank 1 should have joined the abandoned epoch 8');
  const zero = StatelessProcessGroup.create({ rank: 0, worldSize: 3, store: server.client(), timeoutMs: 5000 });
  const pgs = await Promise.all([zero, ...early]);
  assert.equal(pgs.map((g) => g.epoch), [1, 1, 1]);
  await new Promise((r) => setTimeout(r, 20));
  assert.not.ok(server.data.has('pg/8/join/1') || server.data.has('pg/8/join/2'), 'join keys left in the abandoned epoch');
  pgs[0].sendObj('fresh', 2);
  assert.is(await pgs[2].recvObj(0), 'fresh');
  await Promise.all(pgs.map((g) => g.destroy()));
});

test('store key count stays bounded after 10k messages', async () => {
  const server = new MemStoreServer();
  const pgs = await groups(3, server);
  const [a, b, c] = pgs;
  const jobs: Promise<unknown>[] = [];
  for (let i = 0; i < 10_000; i++) jobs.push(a.sendObj(i, 1), b.recvObj(0));
  for (let i = 0; i < 500; i++) {
    jobs.push(a.broadcastObj(i, 0), b.broadcastObj(null, 0), c.broadcastObj(null, 0));
    jobs.push(...pgs.map((g) => g.allGatherObj(g.rank)), ...pgs.map((g) => g.barrier()));
  }
  await Promise.all(jobs);
  // Cleanups left queued after the last write go out on a short timer; let it fire, then let
  // the store handle them.
  await new Promise((r) => setTimeout(r, 50));
  for (let i = 0; i < 3; i++) await new Promise((r) => setImmediate(r));
  const live = [...server.data.keys()];
  assert.ok(live.length <= 2 + 2 * 3 + 2, `${live.length} keys left: ${live.slice(0, 12).join(' ')} …`);
  await Promise.all(pgs.map((g) => g.destroy()));
  assert.equal([...server.data.keys()], []);
});

test('garbage under a recv key gives ERR_GROUPCOMM_PROTOCOL naming key and src; group stays usable', async () => {
  const server = new MemStoreServer();
  const [a, b] = await groups(2, server);
  const key0 = `${a.keyPrefix}to/1/p/0/0`;
  const writer = server.client();
  await writer.set(key0, new Uint8Array([0xde, 0xad, 0xbe, 0xef, 1, 2, 3]));
  const e = await rejectsWith(b.recvObj(0), 'ERR_GROUPCOMM_PROTOCOL');
  assert.is(e.key, key0);
  assert.is(e.peerRank, 0);
  // A valid header with an undecodable msgpack body.
  await writer.set(`${a.keyPrefix}to/1/p/0/1`, new Uint8Array([0x67, 0x63, 1, 1, 0xc1, 0xc1]));
  await rejectsWith(b.recvObj(0), 'ERR_GROUPCOMM_PROTOCOL');
  // A tensor header claiming more bytes than there are.
  await writer.set(`${a.keyPrefix}to/1/p/0/2`, new Uint8Array([0x67, 0x63, 1, 2, 7, 1, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 1, 2, 3, 4]));
  await rejectsWith(b.recv(tensor(new Float32Array(1)), 0), 'ERR_GROUPCOMM_PROTOCOL');
  // The counters moved past the bad messages; real traffic still works.
  a.sendObj('skip', 1).catch(() => {});
  a.sendObj('skip', 1).catch(() => {});
  a.sendObj('skip', 1).catch(() => {});
  await a.sendObj('ok', 1);
  assert.is(await b.recvObj(0), 'ok');
  await Promise.all([a.destroy(), b.destroy()]);
});

test('object/tensor mismatch is a protocol error, a shape mismatch an invalid argument', async () => {
  const [a, b] = await groups(2);
  a.sendObj({ x: 1 }, 1);
  await rejectsWith(b.recv(tensor(new Float32Array(1)), 0), 'ERR_GROUPCOMM_PROTOCOL');
  a.send(tensor(new Float32Array([1, 2])), 1);
  await rejectsWith(b.recv(tensor(new Float32Array(3)), 0), 'ERR_GROUPCOMM_INVALID_ARGUMENT');
  a.send(tensor(new Float32Array([1, 2])), 1);
  await rejectsWith(b.recv(tensor(new Int32Array(2)), 0), 'ERR_GROUPCOMM_INVALID_ARGUMENT');
  await Promise.all([a.destroy(), b.destroy()]);
});

test('barrier timeout names exactly the ranks that never arrived', async () => {
  const pgs = await groups(4);
  const errs = await Promise.all(pgs.slice(0, 2).map((g) => rejectsWith(g.barrier({ timeoutMs: 300 }), 'ERR_GROUPCOMM_TIMEOUT')));
  for (const e of errs) assert.equal(e.peerRanks, [2, 3]);
  await Promise.all(pgs.map((g) => g.destroy({ force: true })));
});

test('recv timeout names the source rank and the key', async () => {
  const [a, b] = await groups(2);
  const e = await rejectsWith(b.recvObj(0, { timeoutMs: 100 }), 'ERR_GROUPCOMM_TIMEOUT');
  assert.is(e.peerRank, 0);
  assert.match(e.key, /to\/1\/p\/0\/0$/);
  await Promise.all([a.destroy({ force: true }), b.destroy({ force: true })]);
});

test('an op queued behind a slow one keeps its own deadline', async () => {
  const [a, b] = await groups(2, undefined, { timeoutMs: 1500 });
  let firstDone = false;
  const first = b.recvObj(0).finally(() => (firstDone = true));
  const e = await rejectsWith(b.recvObj(0, { timeoutMs: 100 }), 'ERR_GROUPCOMM_TIMEOUT');
  assert.is(e.peerRank, 0);
  const bar = a.barrier().catch((x) => x);
  const eb = await rejectsWith(a.barrier({ timeoutMs: 100 }), 'ERR_GROUPCOMM_TIMEOUT');
  assert.equal(eb.peerRanks, [1]);
  assert.not.ok(firstDone, 'the queued op waited for the one ahead of it');
  await a.sendObj('first', 1);
  assert.is(await first, 'first');
  await Promise.all([a.destroy({ force: true }), b.destroy({ force: true })]);
  await bar;
});

test('an aborted signal rejects with ERR_GROUPCOMM_ABORTED', async () => {
  const [a, b] = await groups(2);
  const ac = new AbortController();
  const p = b.recvObj(0, { signal: ac.signal });
  ac.abort();
  await rejectsWith(p, 'ERR_GROUPCOMM_ABORTED');
  await Promise.all([a.destroy({ force: true }), b.destroy({ force: true })]);
});

test('create times out naming the ranks that never joined', async () => {
  const server = new MemStoreServer();
  const mk = (rank: number) => StatelessProcessGroup.create({ rank, worldSize: 4, store: server.client(), timeoutMs: 400 });
  const [e0, e1] = await Promise.all([rejectsWith(mk(0), 'ERR_GROUPCOMM_TIMEOUT'), rejectsWith(mk(2), 'ERR_GROUPCOMM_TIMEOUT')]);
  assert.equal(e0.peerRanks, [1, 3]);
  assert.equal(e1.peerRanks, [1, 3]);
});

test('worldSize 1: collectives return their input at once, point-to-point to self is invalid', async () => {
  const server = new MemStoreServer();
  const [g] = await groups(1, server);
  const obj = { a: 1 };
  assert.is(await g.broadcastObj(obj, 0), obj);
  assert.equal(await g.allGatherObj(obj), [obj]);
  await g.barrier();
  const t = tensor(new Float32Array([3]));
  assert.is(await g.broadcast(t, { src: 0, out: t }), t);
  assert.is(await g.allReduce(t, { op: 'avg', out: t }), t);
  assert.is((t.data as Float32Array)[0], 3);
  await rejectsWith(g.sendObj(1, 0), 'ERR_GROUPCOMM_INVALID_ARGUMENT');
  await rejectsWith(g.recvObj(0), 'ERR_GROUPCOMM_INVALID_ARGUMENT');
  await rejectsWith(g.broadcastObj(1, 1), 'ERR_GROUPCOMM_INVALID_ARGUMENT');
  await g.destroy();
  assert.equal([...server.data.keys()], []);
});

test('arguments are validated: ranks, ops, tensors', async () => {
  const [a, b] = await groups(2);
  await rejectsWith(a.sendObj(1, 2), 'ERR_GROUPCOMM_INVALID_ARGUMENT');
  await rejectsWith(a.sendObj(1, 0), 'ERR_GROUPCOMM_INVALID_ARGUMENT');
  await rejectsWith(a.recvObj(-1), 'ERR_GROUPCOMM_INVALID_ARGUMENT');
  await rejectsWith(a.allReduce(tensor(new Float32Array(1)), { op: 'bitwise_or' as never }), 'ERR_GROUPCOMM_INVALID_ARGUMENT');
  await rejectsWith(a.send({ dtype: 'float32', shape: [1], device: 'cuda:0', data: { ptr: 0n, nbytes: 4 } }, 1), 'ERR_GROUPCOMM_INVALID_ARGUMENT');
  await rejectsWith(a.sendObj(() => 1, 1), 'ERR_GROUPCOMM_INVALID_ARGUMENT');
  await Promise.all([a.destroy(), b.destroy()]);
});

test('allReduce with mismatched shapes fails on every rank', async () => {
  const [a, b] = await groups(2);
  const [ea, eb] = await Promise.all([
    rejectsWith(a.allReduce(tensor(new Float32Array(2))), 'ERR_GROUPCOMM_INVALID_ARGUMENT'),
    rejectsWith(b.allReduce(tensor(new Float32Array(3))), 'ERR_GROUPCOMM_INVALID_ARGUMENT'),
  ]);
  assert.is(ea.peerRank, 1);
  assert.is(eb.peerRank, 0);
  await Promise.all([a.destroy(), b.destroy()]);
});

test('destroy is idempotent and later ops fail with ERR_GROUPCOMM_DESTROYED', async () => {
  const [a, b] = await groups(2);
  const d1 = a.destroy();
  assert.is(a.destroy(), d1);
  await Promise.all([d1, b.destroy()]);
  await rejectsWith(a.sendObj(1, 1), 'ERR_GROUPCOMM_DESTROYED');
  await rejectsWith(b.barrier(), 'ERR_GROUPCOMM_DESTROYED');
});

test('groups with different names share one store without interference', async () => {
  const server = new MemStoreServer();
  const [x, y] = await Promise.all([groups(2, server, { groupName: 'x' }), groups(2, server, { groupName: 'y' })]);
  x[0].sendObj('to x', 1);
  y[0].sendObj('to y', 1);
  assert.equal(await Promise.all([y[1].recvObj(0), x[1].recvObj(0)]), ['to y', 'to x']);
  await Promise.all([...x, ...y].map((g) => g.destroy()));
  assert.equal([...server.data.keys()].sort(), []);
});

test.run();
