/**
 * A coordinator's GroupIo (host/coordinator/io.ts) on its own, with stand-in channels: which
 * channel carries a tensor (CPU group, device communicator, the local channel of a group of one)
 * and each refusal (not a tensor, no device communicator, another device); `output`'s checks
 * field by field; tensors on its device through the real cpu plugin (empty, free, reordered
 * freeing its stage) and the refusals of a device it has no backend for; objects from group rank
 * 0 through the message queue when there is one (else the store channel), what rank 0 had
 * published after a failure, and the DictIo it hands to dict.ts.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { GroupIo } from '../../host/coordinator/io.js';
import type { Net } from '../../host/coordinator/channels.js';
import type { MessageQueue } from '../../host/coordinator/mq.js';
import { encodeObject } from '../../host/pg/codec.js';
import { premulSum } from '../../host/core/premul.js';
import { tensor, type Tensor } from '../../host/core/tensor.js';
import { CpuBackend } from '../../plugins/cpu/index.js';

const backend = new CpuBackend();
const cpuCh = { name: 'cpu group' };
const devCh = { name: 'device communicator' };
const pgCalls: unknown[][] = [];
const pg = { broadcastObj: async (obj: unknown, src: number, o: unknown) => { pgCalls.push([obj, src, o]); return 'from pg'; } };
const net = (comm: unknown) => ({ cpu: cpuCh, comm, pg }) as unknown as Net;
// (No default parameters: an explicit undefined is what these tests pass.)
const io2 = (n: Net | undefined, b: CpuBackend | undefined) => new GroupIo('grp_0', n ? 2 : 1, 0, 'host:0', b, n);
const dev = (io: GroupIo, v: number[]) => {
  const t = io.empty([v.length], 'float32', 'host:0');
  backend.copyFromHost(t.data as never, new Uint8Array(Float32Array.from(v).buffer));
  return t;
};
function refused(f: () => unknown, re: RegExp): void {
  try {
    f();
  } catch (e) {
    assert.is((e as { code?: string }).code, 'ERR_GROUPCOMM_INVALID_ARGUMENT', String(e));
    assert.match((e as Error).message, re);
    return;
  }
  assert.unreachable(`expected a refusal matching ${re}`);
}

test('channel: CPU tensors on the CPU group, this device\'s on the communicator, both local in a group of one', () => {
  const io = io2(net(devCh), backend);
  assert.is(io.channel(tensor(Float32Array.of(1)), 'x'), cpuCh as never);
  const d = dev(io, [1]);
  assert.is(io.channel(d, 'x'), devCh as never);
  const solo = io2(undefined, backend);
  assert.is(solo.channel(tensor(Float32Array.of(1)), 'x'), solo.local);
  assert.is(solo.channel(d, 'x'), solo.local);
  assert.equal(io.ring, { next: 1, prev: 1 });
  io.free(d);
});

test('channel refuses what is not a tensor, a device tensor without a communicator, and another device', () => {
  const io = io2(net(devCh), backend);
  for (const bad of [null, 5, 'cpu', { shape: 1, device: 'cpu' }, { shape: [1], device: 5 }, { device: 'cpu' }]) {
    refused(() => io.channel(bad as never, 'allReduce'), /^allReduce: expected a tensor$/);
  }
  const d = dev(io, [1]);
  refused(() => io2(net(undefined), backend).channel(d, 'broadcast'), /^broadcast: tensor is on host:0 but this group has no device communicator/);
  refused(() => io.channel({ ...d, device: 'host:1' }, 'gather'), /^gather: tensor is on host:1, this rank's device is host:0$/);
  refused(() => io2(undefined, backend).channel({ ...d, device: 'host:1' }, 'gather'), /^gather: tensor is on host:1, this rank's device is host:0$/);
  io.free(d);
});

test('output: undefined passes; dtype, device, rank and each dimension must match', () => {
  const io = io2(net(devCh), backend);
  const like = tensor(new Float32Array(6), { shape: [2, 3] });
  assert.is(io.output(undefined, [2, 3], like, 'x'), undefined);
  const ok = tensor(new Float32Array(6), { shape: [2, 3] });
  assert.is(io.output(ok, [2, 3], like, 'x'), ok);
  const re = /^allGather: out must be float32\[2, 3\] on cpu, got /;
  refused(() => io.output(tensor(new Int32Array(6), { shape: [2, 3] }), [2, 3], like, 'allGather'), re);
  refused(() => io.output({ ...ok, device: 'host:0' }, [2, 3], like, 'allGather'), re);
  refused(() => io.output(tensor(new Float32Array(6), { shape: [6] }), [2, 3], like, 'allGather'), re);
  refused(() => io.output(tensor(new Float32Array(6), { shape: [2, 3, 1] }), [2, 3], like, 'allGather'), re);
  refused(() => io.output(tensor(new Float32Array(6), { shape: [3, 2] }), [2, 3], like, 'allGather'), re);
  refused(() => io.output(tensor(new Float32Array(8), { shape: [2, 4] }), [2, 3], like, 'allGather'), re);
  refused(() => io.output(tensor(new Float32Array(2), { shape: [2] }), [2, 3], like, 'allGather'), re);
});

test('device tensors: empty on this backend\'s device type only; free and reordered give memory back', async () => {
  const io = io2(net(devCh), backend);
  const live = backend.memory.liveCount;
  const t = io.empty([2], 'float32', 'host:0');
  assert.is(t.device, 'host:0');
  assert.is(backend.memory.liveCount, live + 1);
  refused(() => io.empty([2], 'float32', 'cuda:0'), /^empty: no backend for device 'cuda:0' in group grp_0 \(device host:0\)$/);
  refused(() => io2(net(devCh), undefined).empty([2], 'float32', 'host:0'), /^empty: no backend for device 'host:0'/);
  io.free(tensor(Float32Array.of(1)));  // a CPU tensor: nothing to free
  io2(net(devCh), undefined).free(t);  // no backend: nothing to free (it is not this group's)
  assert.is(backend.memory.liveCount, live + 1);
  // reordered: a rank-major stage (2 ranks × 1 row × 2) into [1, 4]; the stage is freed.
  const stage = dev(io, [1, 2, 3, 4]);
  const r = io.reordered(stage, undefined, [1, 4], t, 2, 1);
  assert.is(backend.memory.liveCount, live + 2, 'stage freed, result kept');
  const host = new Float32Array(4);
  backend.copyToHost(new Uint8Array(host.buffer), r.data as never);
  assert.equal([...host], [1, 2, 3, 4]);
  // A group of one's premulSum on a device tensor scales it in place (through host memory).
  const solo = io2(undefined, backend);
  const s = dev(solo, [2, 4]);
  assert.is(await solo.local.allReduce(s, { op: premulSum(0.5), out: s }), s);
  const h2 = new Float32Array(2);
  backend.copyToHost(new Uint8Array(h2.buffer), s.data as never);
  assert.equal([...h2], [1, 2]);
  const c = tensor(Float32Array.of(2, 4));
  await solo.local.allReduce(c, { op: premulSum(3), out: c });
  assert.equal([...c.data], [6, 12]);
  io.free(t);
  io.free(r);
  solo.free(s);
  assert.is(backend.memory.liveCount, live);
});

test('objects: from group rank 0 through the message queue when there is one, else (and from others) the store channel', async () => {
  pgCalls.length = 0;
  const io = io2(net(devCh), backend);
  const opts = { timeoutMs: 1_000 };
  assert.is(await io.broadcastObj('a', 0, opts), 'from pg');
  const mqCalls: unknown[][] = [];
  io.mq = { broadcastObj: async (obj: unknown, b: { timeoutMs: number }) => { mqCalls.push([obj, b.timeoutMs]); return 'from mq'; } } as unknown as MessageQueue;
  assert.is(await io.broadcastObj('b', 0, opts), 'from mq');
  assert.is(await io.broadcastObj('c', 1, opts), 'from pg');
  assert.equal(mqCalls, [['b', 1_000]]);
  // The queue's deadline is named after the group's broadcast (what its timeout says).
  let late: unknown;
  io.mq = { broadcastObj: async (_o: unknown, b: { next(): unknown }) => {
    await new Promise((r) => setTimeout(r, 5));
    try { b.next(); } catch (e) { late = e; }
  } } as unknown as MessageQueue;
  await io.broadcastObj('d', 0, { timeoutMs: 1 });
  assert.match(String((late as Error)?.message), /^grp_0\.broadcast timed out after 1ms/);
  assert.equal(pgCalls, [['a', 0, opts], ['c', 1, opts]]);
});

test('publishedObj: what rank 0 put in the message queue, decoded; nothing without one or from another source', () => {
  const io = io2(net(devCh), backend);
  assert.is(io.publishedObj(0), undefined);
  let taken = 0;
  io.mq = { takePublished: () => { taken++; return encodeObject({ x: [1, 2] }); } } as unknown as MessageQueue;
  assert.equal(io.publishedObj(0), { value: { x: [1, 2] } });
  assert.is(io.publishedObj(1), undefined);
  assert.is(taken, 1, 'the queue is asked only for src 0');
  io.mq = { takePublished: () => undefined } as unknown as MessageQueue;
  assert.is(io.publishedObj(0), undefined);
  io.mq = { takePublished: () => Uint8Array.of(1, 2, 3) } as unknown as MessageQueue;
  try {
    io.publishedObj(0);
    assert.unreachable('garbage decoded');
  } catch (e) {
    assert.is((e as { code?: string }).code, 'ERR_GROUPCOMM_PROTOCOL', String(e));
    assert.is((e as { key?: string }).key, 'grp_0/mq');
  }
});

test('dictIo: none in a group of one; otherwise this group\'s store channel, device, channels and memory', async () => {
  assert.is(io2(undefined, backend).dictIo(), undefined);
  pgCalls.length = 0;
  const io = io2(net(devCh), backend);
  const d = io.dictIo()!;
  assert.is(d.pg, pg as never);
  assert.is(d.device, 'host:0');
  assert.is(await d.broadcastObj('o', 1, { timeoutMs: 5 }), 'from pg');
  assert.equal(pgCalls, [['o', 1, { timeoutMs: 5 }]]);
  assert.is(d.channel(tensor(Float32Array.of(1)), 'x'), cpuCh as never);
  const live = backend.memory.liveCount;
  const t = d.empty([3], 'int8', 'host:0');
  assert.equal([t.device, t.dtype, t.shape], ['host:0', 'int8', [3]]);
  assert.is(backend.memory.liveCount, live + 1);
  d.free(t);
  assert.is(backend.memory.liveCount, live);
});

test.run();
