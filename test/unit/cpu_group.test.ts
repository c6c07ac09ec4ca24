/**
 * CpuGroup behaviour that needs no extra processes: several ranks of a group live in this
 * process, over real sockets on 127.0.0.1 and a real TcpStore.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import net from 'node:net';
import { CpuGroup, type CpuGroupOptions } from '../../host/cpu/group.js';
import { TcpStore } from '../../host/store/client.js';
import { bytesOf, empty, tensor, type CpuTensor } from '../../host/core/tensor.js';
import { encodeHello, ACK_SIZE, CHALLENGE_SIZE, decodeAck, Status } from '../../host/cpu/wire.js';
import { signHello } from '../../host/cpu/link/handshake.js';
import { rejectsWith } from '../helpers/rejects.js';
import type { GroupcommError } from '../../host/base/errors.js';

let store: TcpStore;
let groupNo = 0;

async function groupOf(n: number, extra: Partial<CpuGroupOptions> = {}): Promise<CpuGroup[]> {
  const groupName = extra.groupName ?? `unit-${groupNo++}`;
  const gs = await Promise.all([...Array(n).keys()].map((rank) =>
    CpuGroup.create({ store, rank, worldSize: n, groupName, timeoutMs: 10_000, ...extra })));
  for (const g of gs) live.add(g);
  return gs;
}

// Every group a test made is aborted after it, pass or fail (a failed assertion skips the
// test's own destroy; open sockets would keep the file running until the runner's limit).
const live = new Set<CpuGroup>();
test.after.each(async () => {
  await Promise.all([...live].map((g) => g.abort('test over')));
  live.clear();
});

const destroyAll = (gs: CpuGroup[]) => Promise.all(gs.map((g) => g.destroy()));


/**
 * Reads the group's CHALLENGE, answers with `bytes` (a HELLO is signed for that challenge with
 * `secret`, as a rank would) and returns the ACK the group answered with.
 */
function knock(port: number, bytes: Uint8Array, sign: { secret?: Buffer } | false = {}): Promise<{ status: number; closed: boolean }> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1');
    let got = Buffer.alloc(0);
    let sent = false;
    s.on('data', (d) => {
      got = Buffer.concat([got, d]);
      if (!sent && got.length >= CHALLENGE_SIZE) {
        sent = true;
        const hello = Buffer.from(bytes);
        if (sign) signHello(sign.secret, hello, got.subarray(8, CHALLENGE_SIZE));
        s.write(hello);
        got = got.subarray(CHALLENGE_SIZE);
      }
    });
    s.on('error', reject);
    s.on('close', () => {
      if (got.length < ACK_SIZE) reject(new Error(`connection closed after ${got.length} bytes`));
      else resolve({ status: decodeAck(got).status, closed: true });
    });
  });
}

test.before(async () => {
  store = await TcpStore.create({ port: 0, isServer: true, timeoutMs: 10_000 });
});

test.after(async () => {
  await store.close();
});

test('strangers are refused with a status (wrong group, epoch, magic) and the group still forms', async () => {
  const name = 'knock';
  const first = CpuGroup.create({ store, rank: 0, worldSize: 2, groupName: name, timeoutMs: 10_000 });
  const addr = Buffer.from(await store.get(`groupcomm/cpu/${name}/0/addr/0`)).toString();
  const port = Number(addr.split(':')[1]);
  const hello = { rank: 1, worldSize: 2, epoch: 0, name, chunkBytes: 512 * 1024, smallBytes: 64 * 1024, toRank: 0, maxFrameBytes: 1 << 20 };
  assert.is((await knock(port, encodeHello({ ...hello, name: 'other' }))).status, Status.WRONG_GROUP);
  assert.is((await knock(port, encodeHello({ ...hello, epoch: 5 }))).status, Status.WRONG_EPOCH);
  assert.is((await knock(port, encodeHello({ ...hello, rank: 0 }))).status, Status.BAD_RANK);
  assert.is((await knock(port, encodeHello({ ...hello, worldSize: 3 }))).status, Status.WRONG_SIZE);
  assert.is((await knock(port, encodeHello({ ...hello, chunkBytes: 4096 }))).status, Status.WRONG_TUNING);
  assert.is((await knock(port, new Uint8Array(32).fill(0x41), false)).status, Status.BAD_MAGIC);
  // A HELLO signed with another secret, or not at all, is refused whatever it claims.
  assert.is((await knock(port, encodeHello(hello), { secret: Buffer.from('not the job secret') })).status, Status.BAD_AUTH);
  assert.is((await knock(port, encodeHello(hello), false)).status, Status.BAD_AUTH);
  const second = CpuGroup.create({ store, rank: 1, worldSize: 2, groupName: name, timeoutMs: 10_000 });
  const gs = await Promise.all([first, second]);
  const ts = [tensor(new Int32Array([1, 2])), tensor(new Int32Array([10, 20]))];
  await Promise.all(gs.map((g, r) => g.allReduce(ts[r], { out: ts[r] })));
  assert.equal([...ts[0].data], [11, 22]);
  await destroyAll(gs);
});

test('a rank with other framing settings is refused at setup, naming the setting', async () => {
  const name = `tuning-${groupNo++}`;
  const res = await Promise.allSettled([
    CpuGroup.create({ store, rank: 0, worldSize: 2, groupName: name, timeoutMs: 3000, chunkBytes: 4096 }),
    CpuGroup.create({ store, rank: 1, worldSize: 2, groupName: name, timeoutMs: 3000, chunkBytes: 8192 }),
  ]);
  for (const r of res) {
    assert.is(r.status, 'rejected');
    assert.is((r as PromiseRejectedResult).reason.code, 'ERR_GROUPCOMM_PROTOCOL');
    assert.match((r as PromiseRejectedResult).reason.message, /chunkBytes/);
  }
});

test('the frame parser tolerates any chunking (7-byte receive buffers)', async () => {
  const gs = await groupOf(3, { recvBufferBytes: 7, chunkBytes: 40, smallBytes: 16 });
  const ts = gs.map((_, r) => tensor(Float64Array.from({ length: 101 }, (_, i) => i * (r + 1))));
  await Promise.all(gs.map((g, r) => g.allReduce(ts[r], { out: ts[r] })));
  for (const t of ts) assert.equal([...t.data], Array.from({ length: 101 }, (_, i) => i * 6));
  const outs = await Promise.all(gs.map((g, r) => g.allGather(tensor(new Uint8Array([r, r + 10, r + 20])))));
  for (const o of outs) assert.equal([...o.data], [0, 10, 20, 1, 11, 21, 2, 12, 22]);
  await destroyAll(gs);
});

test('large messages with the default chunking (reads land straight in place) are exact', async () => {
  const gs = await groupOf(3);
  const n = 700_001; // uneven blocks, several 512 KiB segments each
  const ts = gs.map((_, r) => tensor(Float32Array.from({ length: n }, (_, i) => (i % 1000) + r)));
  await Promise.all(gs.map((g, r) => g.allReduce(ts[r], { out: ts[r] })));
  for (const t of ts) {
    let bad = 0;
    for (let i = 0; i < n; i++) if (t.data[i] !== 3 * (i % 1000) + 3) bad++;
    assert.is(bad, 0);
  }
  const bs = gs.map((_, r) => tensor(Float64Array.from({ length: n }, (_, i) => (r === 2 ? i : -1))));
  await Promise.all(gs.map((g, r) => g.broadcast(bs[r], { src: 2, out: bs[r] })));
  for (const b of bs) assert.ok(b.data.every((v, i) => v === i));
  const outs = await Promise.all(gs.map((g, r) => g.allGather(tensor(Int32Array.from({ length: n }, (_, i) => i * 3 + r)))));
  for (const o of outs) assert.ok(o.data.every((v, j) => v === (j % n) * 3 + Math.floor(j / n)));
  await destroyAll(gs);
});

test('collectives issued without awaiting run in program order', async () => {
  const gs = await groupOf(3, { chunkBytes: 64, smallBytes: 32 });
  const results = await Promise.all(gs.map(async (g, r) => {
    const a = tensor(Float32Array.from({ length: 300 }, () => r + 1));
    const b = tensor(new Int32Array([r === 1 ? 42 : 0]));
    const c = tensor(new Int32Array([r]));
    const pa = g.allReduce(a, { op: 'max', out: a });
    const pb = g.broadcast(b, { src: 1, out: b });
    const pc = g.allGather(c);
    const pd = g.barrier();
    const [, , gathered] = await Promise.all([pa, pb, pc, pd]);
    return { a: a.data[299], b: b.data[0], c: [...gathered.data] };
  }));
  for (const x of results) assert.equal(x, { a: 3, b: 42, c: [0, 1, 2] });
  await destroyAll(gs);
});

test('outputs: written into out when given, shapes follow the contract (0-d allGather → [P])', async () => {
  const gs = await groupOf(2);
  const outs = [empty([2], 'int16'), empty([2], 'int16')];
  const res = await Promise.all(gs.map((g, r) => g.allGather(tensor(new Int16Array([r + 5]), { shape: [] }), { out: outs[r] })));
  assert.ok(res[0] === outs[0] && res[1] === outs[1]);
  assert.equal([...outs[1].data], [5, 6]);
  const rs = await Promise.all(gs.map((g) => g.reduceScatter(tensor(new Float32Array([1, 2, 3, 4, 5, 6]), { shape: [2, 3] }))));
  assert.equal(rs[1].shape, [1, 3]);
  assert.equal([...rs[1].data], [8, 10, 12]);
  await destroyAll(gs);
});

test('bad arguments are refused before anything is sent', async () => {
  const gs = await groupOf(2);
  const g = gs[0];
  const t = empty([4], 'float32');
  await rejectsWith(g.allGather(t, { out: empty([4], 'float32') }), 'ERR_GROUPCOMM_INVALID_ARGUMENT');
  await rejectsWith(g.allGather(t, { out: empty([8], 'int32') as CpuTensor }), 'ERR_GROUPCOMM_INVALID_ARGUMENT');
  const big = empty([8], 'float32');
  const aliased = { ...big, shape: [4], data: (big.data as Float32Array).subarray(0, 4) };
  await rejectsWith(g.allGather(aliased, { out: big }), 'ERR_GROUPCOMM_INVALID_ARGUMENT');
  await rejectsWith(g.allReduce(t, { op: 'xor' as never }), 'ERR_GROUPCOMM_INVALID_ARGUMENT');
  await rejectsWith(g.reduceScatter(empty([3], 'float32')), 'ERR_GROUPCOMM_INVALID_ARGUMENT');
  await rejectsWith(g.broadcast(t, { src: 2 }), 'ERR_GROUPCOMM_INVALID_ARGUMENT');
  await rejectsWith(g.send(t, 0), 'ERR_GROUPCOMM_INVALID_ARGUMENT');
  await rejectsWith(g.recv(t, 0, { tag: -1 }), 'ERR_GROUPCOMM_INVALID_ARGUMENT');
  // Nothing was queued: the group still works for both ranks.
  const ts = [tensor(new Int8Array([1])), tensor(new Int8Array([2]))];
  const sums = await Promise.all(gs.map((x, r) => x.allReduce(ts[r])));
  assert.is(sums[0].data[0], 3);
  await destroyAll(gs);
});

test('different sizes on different ranks fail with MISMATCH, not a hang or a wrong result', async () => {
  const gs = await groupOf(2, { timeoutMs: 5000 });
  const res = await Promise.allSettled([gs[0].allReduce(empty([10], 'float32')), gs[1].allReduce(empty([12], 'float32'))]);
  for (const r of res) {
    assert.is(r.status, 'rejected');
    assert.is((r as PromiseRejectedResult).reason.code, 'ERR_GROUPCOMM_MISMATCH');
  }
  await destroyAll(gs);
});

test('recv with no sender times out naming the peer; send/recv tags match in order', async () => {
  const gs = await groupOf(2);
  const e = await rejectsWith(gs[1].recv(empty([3], 'int32'), 0, { tag: 99, timeoutMs: 300 }), 'ERR_GROUPCOMM_TIMEOUT');
  assert.equal((e as { peerRanks?: number[] }).peerRanks, [0]);
  assert.match(e.message, /rank 0/);
  const got = empty([1], 'int32');
  const pr = gs[1].recv(got, 0, { tag: 5 });
  await gs[0].send(tensor(new Int32Array([77])), 1, { tag: 5 });
  await pr;
  assert.is(got.data[0], 77);
  await destroyAll(gs);
});

test('an aborted signal rejects with ABORTED', async () => {
  const gs = await groupOf(2);
  const ac = new AbortController();
  const p = gs[0].recv(empty([1], 'int32'), 1, { signal: ac.signal });
  ac.abort();
  await rejectsWith(p, 'ERR_GROUPCOMM_ABORTED');
  await destroyAll(gs);
});

test('abort: pending ops fail (ABORTED here, PEER_LEFT naming the rank on the peer: its goodbye came), later ops with DESTROYED, the port is free', async () => {
  const port = await new Promise<number>((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
  const name = `destroy-${groupNo++}`;
  const gs = await Promise.all([
    CpuGroup.create({ store, rank: 0, worldSize: 2, groupName: name, port, timeoutMs: 10_000 }),
    CpuGroup.create({ store, rank: 1, worldSize: 2, groupName: name, timeoutMs: 10_000 }),
  ]);
  assert.is(gs[0].address.port, port);
  const mine = gs[0].recv(empty([1], 'int32'), 1);
  const theirs = gs[1].allReduce(empty([4], 'float32'));
  await gs[0].abort('test');
  await rejectsWith(mine, 'ERR_GROUPCOMM_ABORTED');
  const lost = await rejectsWith(theirs, 'ERR_GROUPCOMM_PEER_LEFT');
  assert.is((lost as { peerRank?: number }).peerRank, 0);
  await rejectsWith(gs[0].barrier(), 'ERR_GROUPCOMM_DESTROYED');
  await gs[0].abort(); // idempotent
  await gs[0].close();
  await new Promise<void>((resolve, reject) => {
    const s = net.createServer().once('error', reject).listen(port, '127.0.0.1', () => s.close(() => resolve()));
  });
  await gs[1].destroy();
});

test('aliasing contract: inputs unchanged after every op, out honoured, in place via out, overlap refused', async () => {
  const gs = await groupOf(2, { chunkBytes: 64, smallBytes: 32, timeoutMs: 3000 });
  try {
    // Sizes on both sides of smallBytes: the latency and the ring algorithms.
    for (const n of [2, 40]) {
      const inputs = gs.map((_, r) => tensor(Int32Array.from({ length: 2 * n }, (_, i) => i + 100 * r)));
      const copies = inputs.map((t) => [...(t.data as Int32Array)]);
      const results = await Promise.all(gs.map(async (g, r) => {
        const x = inputs[r];
        return {
          sum: await g.allReduce(x),
          gathered: await g.allGather(x),
          scattered: await g.reduceScatter(x, { op: 'max' }),
          bcast: await g.broadcast(x, { src: 1 }),
          gat: await g.gather(x, { dst: 0 }),
          a2a: await g.allToAll(x),
        };
      }));
      inputs.forEach((t, r) => assert.equal([...t.data], copies[r], `n=${n}: rank ${r}'s input was written`));
      for (const [r, res] of results.entries()) {
        for (const v of Object.values(res)) if (v) assert.ok(v.data.buffer !== inputs[r].data.buffer, 'a result aliases the input');
        assert.equal([...res.sum.data], copies[0].map((v, i) => v + copies[1][i]));
        assert.equal([...res.bcast.data], copies[1]);
        assert.equal([...res.gathered.data], [...copies[0], ...copies[1]]);
        assert.equal([...res.scattered.data], copies[1].slice(r * n, (r + 1) * n));
        assert.equal([...res.a2a.data], [...copies[0].slice(r * n, (r + 1) * n), ...copies[1].slice(r * n, (r + 1) * n)]);
      }
      assert.equal([...results[0].gat!.data], [...copies[0], ...copies[1]]);
      assert.is(results[1].gat, undefined);
      // out honoured, and in place via out (allReduce and broadcast).
      const outs = gs.map(() => empty([2 * n], 'int32'));
      const got = await Promise.all(gs.map((g, r) => g.allReduce(inputs[r], { op: 'min', out: outs[r] })));
      got.forEach((t, r) => assert.is(t, outs[r]));
      assert.equal([...outs[1].data], copies[0]);
      await Promise.all(gs.map((g, r) => g.allReduce(inputs[r], { out: inputs[r] }).then((t) => assert.is(t, inputs[r]))));
      assert.equal([...inputs[1].data], copies[0].map((v, i) => v + copies[1][i]));
      await Promise.all(gs.map((g, r) => g.broadcast(inputs[r], { src: 0, out: inputs[r] }).then((t) => assert.is(t, inputs[r]))));
    }
    // Overlaps refused before anything is sent: partial for allReduce, any for the others.
    const g = gs[0];
    const buf = new Float32Array(8);
    const lo = tensor(buf.subarray(0, 4)), mid = tensor(buf.subarray(2, 6));
    await rejectsWith(g.allReduce(lo, { out: mid }), 'ERR_GROUPCOMM_INVALID_ARGUMENT');
    await rejectsWith(g.broadcast(lo, { src: 0, out: mid }), 'ERR_GROUPCOMM_INVALID_ARGUMENT');
    await rejectsWith(g.allToAll(lo, { out: lo }), 'ERR_GROUPCOMM_INVALID_ARGUMENT');
    await rejectsWith(g.allGather(tensor(buf.subarray(0, 2)), { out: lo }), 'ERR_GROUPCOMM_INVALID_ARGUMENT');
    await rejectsWith(g.gather(tensor(buf.subarray(2, 4)), { dst: 0, out: lo }), 'ERR_GROUPCOMM_INVALID_ARGUMENT');
    await rejectsWith(g.reduceScatter(tensor(buf), { out: lo }), 'ERR_GROUPCOMM_INVALID_ARGUMENT');
    const ok = await Promise.all(gs.map((x) => x.allReduce(tensor(new Int8Array([1])))));
    assert.is(ok[0].data[0], 2);
  } finally {
    await destroyAll(gs); // also when an assertion failed: open sockets would keep the file running
  }
});

test('a frame above the peer\'s maximum (maxFrameBytes) fails the sender\'s call at once, naming the peer', async () => {
  // Rank 1 accepts frames up to 64 KiB; rank 0 keeps the default. A 1 MiB send is one frame and
  // so is each half of a 2-rank 2 MiB allReduce: rank 0's calls fail with the limit (before, they
  // resolved or waited as if the frame had gone), while rank 1 waits for rank 0 and times out.
  const groupName = `unit-${groupNo++}`;
  const gs = await Promise.all([0, 1].map((rank) => CpuGroup.create({
    store, rank, worldSize: 2, groupName, timeoutMs: 1500, maxFrameBytes: rank === 1 ? 1 << 16 : undefined,
  })));
  for (const g of gs) live.add(g);
  const big = () => tensor(new Float32Array(1 << 18));
  const limit = (e: GroupcommError, what: string) => {
    assert.is(e.code, 'ERR_GROUPCOMM_INVALID_ARGUMENT', `${what}: ${e.message}`);
    assert.equal([e.rank, e.peerRank], [0, 1], what);
    assert.match(e.message, /above rank 1's maximum of 65536 \(GROUPCOMM_CPU_MAX_FRAME_BYTES\)/, what);
  };
  const [sent, got] = await Promise.all([gs[0].send(big(), 1).then(() => undefined, (e) => e), gs[1].recv(big(), 0).then(() => undefined, (e) => e)]);
  limit(sent, 'send');
  assert.is(got?.code, 'ERR_GROUPCOMM_TIMEOUT');
  assert.equal(got.peerRanks, [0]);
  const [r0] = await Promise.all(gs.map((g) => g.allReduce(tensor(new Float32Array(1 << 19))).then(() => undefined, (e) => e)));
  limit(r0, 'allReduce');
});

test('world size 1: every collective completes locally', async () => {
  const [g] = await groupOf(1);
  const t = tensor(new Float32Array([1, 2]));
  const avg = await g.allReduce(t, { op: 'avg' });
  assert.is.not(avg, t);
  assert.equal([...avg.data], [1, 2]);
  assert.is(await g.allReduce(t, { op: 'avg', out: t }), t);
  assert.equal([...(await g.allGather(t)).data], [1, 2]);
  assert.equal([...(await g.reduceScatter(t)).data], [1, 2]);
  assert.equal([...(await g.allToAll(t)).data], [1, 2]);
  assert.equal([...(await g.gather(t, { dst: 0 }))!.data], [1, 2]);
  assert.equal([...(await g.scatter(t, { src: 0, out: empty([2], 'float32') })).data], [1, 2]);
  assert.equal([...(await g.broadcast(t, { src: 0 })).data], [1, 2]);
  await g.barrier();
  assert.equal([...bytesOf(t)], [...bytesOf(tensor(new Float32Array([1, 2])))]);
  await g.destroy();
});

test.run();
