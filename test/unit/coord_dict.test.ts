/**
 * Tensor dicts between two coordinators in this process (host/coordinator/dict.ts), over a real
 * store, process group, CPU group and the cpu plugin's device communicator: small CPU tensors in
 * the frame, larger ones packed (odd sizes, mixed dtypes: the 8-byte alignment), one over the
 * pack limit alone, empty tensors, device tensors landing on the receiver's device, point to
 * point as well as broadcast, and a receiver given something that is not a dict frame.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { StatelessGroupCoordinator } from '../../host/coordinator/coordinator.js';
import { PACK_CPU_MAX_BYTES } from '../../host/coordinator/dict.js';
import { TcpStore, TcpStoreServer } from '../../host/store/index.js';
import { tensor, type CpuTensor, type Tensor } from '../../host/core/tensor.js';

async function pair(name: string) {
  const server = await TcpStoreServer.listen({ port: 0 });
  const stores = await Promise.all([0, 1].map(() => TcpStore.create({ port: server.port, timeoutMs: 20_000 })));
  const groups = await Promise.all(stores.map((rendezvous, r) => StatelessGroupCoordinator.create({
    groupRanks: [[0, 1]], globalRank: r, groupName: name, rendezvous, timeoutMs: 10_000, backend: 'cpu', useDeviceCommunicator: true,
  })));
  const close = async () => {
    await Promise.all(groups.map((g) => g.abort()));
    await Promise.all(stores.map((s) => s.close()));
    await server.close();
  };
  return { groups, close };
}

const onDevice = (g: StatelessGroupCoordinator, vals: number[]): Tensor => {
  const t = g.empty([vals.length], 'float32');
  g.backend!.copyFromHost(t.data as never, new Uint8Array(Float32Array.from(vals).buffer));
  return t;
};
const host = (g: StatelessGroupCoordinator, t: Tensor): number[] => {
  const out = new Float32Array(t.shape.reduce((a, b) => a * b, 1));
  g.backend!.copyToHost(new Uint8Array(out.buffer), t.data as never);
  return [...out];
};
const vals = (t: unknown) => Array.from((t as CpuTensor).data as ArrayLike<number | bigint>, Number);
const ramp = (n: number, k: number) => Array.from({ length: n }, (_, i) => (i * 7 + k) % 251);

/** A dict that takes every path: inline values, packed tensors of odd sizes, one alone, empties, device tensors. */
function bigDict(g: StatelessGroupCoordinator): Record<string, unknown> {
  return {
    note: 'x', n: 5, nested: { a: [1, 2] },
    i8: tensor(Int8Array.from(ramp(3, 1))),
    f64: tensor(Float64Array.from(ramp(5, 2))),
    u8: tensor(Uint8Array.from(ramp(40_001, 3))),
    i16: tensor(Int16Array.from(ramp(20_003, 4)), { shape: [20_003, 1] }),
    none: tensor(new Float32Array(0), { shape: [0, 3] }),
    big: tensor(Int32Array.from(ramp(PACK_CPU_MAX_BYTES / 4 + 1, 5))),
    dev: onDevice(g, [9, 8, 7]),
    devEmpty: g.empty([0], 'float32'),
  };
}

function checkBig(g: StatelessGroupCoordinator, d: Record<string, unknown>): void {
  assert.is(d.note, 'x');
  assert.is(d.n, 5);
  assert.equal(d.nested, { a: [1, 2] });
  assert.equal(vals(d.i8), ramp(3, 1));
  assert.equal(vals(d.f64), ramp(5, 2));
  assert.equal(vals(d.u8), ramp(40_001, 3));
  assert.equal((d.i16 as Tensor).shape, [20_003, 1]);
  assert.is((d.i16 as Tensor).dtype, 'int16');
  assert.equal(vals(d.i16), ramp(20_003, 4));
  assert.equal((d.none as Tensor).shape, [0, 3]);
  assert.equal(vals(d.big), ramp(PACK_CPU_MAX_BYTES / 4 + 1, 5));
  assert.is((d.dev as Tensor).device, g.device);
  assert.equal(host(g, d.dev as Tensor), [9, 8, 7]);
  assert.equal((d.devEmpty as Tensor).shape, [0]);
}

test('broadcast and point to point: every path of a dict arrives intact', async () => {
  const { groups, close } = await pair('dict_all');
  try {
    const small = { a: tensor(Float32Array.of(1, 2)), b: tensor(Int32Array.of(3)), s: 'hi' };
    const got = await Promise.all(groups.map((g, r) => g.broadcastTensorDict(r === 0 ? small : undefined, 0)));
    assert.is(got[0], small);
    assert.equal(vals(got[1].a), [1, 2]);
    assert.equal(vals(got[1].b), [3]);
    assert.is(got[1].s, 'hi');
    const big = await Promise.all(groups.map((g, r) => g.broadcastTensorDict(r === 1 ? bigDict(g) : undefined, 1)));
    checkBig(groups[0], big[0]);
    const [, recv] = await Promise.all([groups[0].sendTensorDict(bigDict(groups[0]), 1), groups[1].recvTensorDict(0)]);
    checkBig(groups[1], recv);
    const [, one] = await Promise.all([groups[1].sendTensorDict({ only: tensor(Float64Array.of(4, 5)) }, 0), groups[0].recvTensorDict(1)]);
    assert.equal(vals(one.only), [4, 5]);
  } finally {
    await close();
  }
});

test('a receiver given an object instead of a dict frame fails with ERR_GROUPCOMM_PROTOCOL naming the peer', async () => {
  const { groups, close } = await pair('dict_bad');
  try {
    const [, r] = await Promise.allSettled([groups[0].sendObject({ not: 'a frame' }, 1), groups[1].recvTensorDict(0)]);
    assert.is(r.status, 'rejected');
    const e = (r as PromiseRejectedResult).reason as { code: string; peerRank?: number };
    assert.is(e.code, 'ERR_GROUPCOMM_PROTOCOL', String(e));
    assert.is(e.peerRank, 0);
  } finally {
    await close();
  }
});

test('a dict holding a tensor this group cannot carry is refused before anything is sent', async () => {
  const { groups, close } = await pair('dict_pre');
  try {
    const alien = { dtype: 'float32', shape: [1], device: 'cuda:0', data: { ptr: 1n, nbytes: 4 } } as Tensor;
    const e = await groups[0].broadcastTensorDict({ ok: tensor(Float32Array.of(1)), alien }, 0).then(() => undefined, (x) => x);
    assert.is(e?.code, 'ERR_GROUPCOMM_INVALID_ARGUMENT', String(e));
    // Nothing went out: the next broadcast is the one rank 1 receives.
    const got = await Promise.all(groups.map((g, r) => g.broadcastTensorDict(r === 0 ? { a: 1 } : undefined, 0)));
    assert.equal(got[1], { a: 1 });
  } finally {
    await close();
  }
});

test.run();
