// The device path's call check (host/coordinator/check.ts): every N-th collective on the device
// communicator compares the ranks' calls over the store channel first (GROUPCOMM_CHECK_CALLS_EVERY).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { StatelessGroupCoordinator } from '../../host/coordinator/coordinator.js';
import { TcpStore, TcpStoreServer } from '../../host/store/index.js';
import { tensor, type Tensor } from '../../host/core/tensor.js';
import { checkEvery } from '../../host/coordinator/check.js';

async function pair(name: string) {
  const server = await TcpStoreServer.listen({ port: 0 });
  const stores = await Promise.all([0, 1].map(() => TcpStore.create({ port: server.port, timeoutMs: 20_000 })));
  const groups = await Promise.all(stores.map((rendezvous, r) => StatelessGroupCoordinator.create({
    groupRanks: [[0, 1]], globalRank: r, groupName: name, rendezvous, timeoutMs: 5_000, backend: 'cpu', useDeviceCommunicator: true,
  })));
  const close = async () => {
    await Promise.all(groups.map((g) => g.abort()));
    await Promise.all(stores.map((s) => s.close()));
    await server.close();
  };
  return { groups, close };
}

const onDevice = (g: StatelessGroupCoordinator, vals: number[], shape: number[]): Tensor => {
  const t = g.empty(shape, 'float32');
  g.backend!.copyFromHost(t.data as never, new Uint8Array(Float32Array.from(vals).buffer));
  return t;
};

test('GROUPCOMM_CHECK_CALLS_EVERY=1: a device allGather whose dim differs fails on both ranks, naming the field', async () => {
  process.env.GROUPCOMM_CHECK_CALLS_EVERY = '1';
  const { groups, close } = await pair('chk1');
  try {
    // Equal calls pass (and are checked).
    const ok = await Promise.all(groups.map((g, r) => g.allReduce(onDevice(g, [r, 1], [2]))));
    assert.is(ok.length, 2);
    const res = await Promise.allSettled(groups.map((g, r) => g.allGather(onDevice(g, [1, 2, 3, 4], [2, 2]), r === 1 ? 1 : 0)));
    for (const [r, x] of res.entries()) {
      assert.is(x.status, 'rejected', `rank ${r} resolved`);
      const e = (x as PromiseRejectedResult).reason as { code: string; message: string; peerRank?: number };
      assert.is(e.code, 'ERR_GROUPCOMM_MISMATCH', e.message);
      assert.match(e.message, /allGather: ranks made different calls .*store channel/);
      assert.match(e.message, /dim \([01] here, [01] on rank/);
      assert.is(e.peerRank, 1 - r);
    }
  } finally {
    await close();
  }
});

test('GROUPCOMM_CHECK_CALLS_EVERY=0: no check over the store channel', async () => {
  process.env.GROUPCOMM_CHECK_CALLS_EVERY = '0';
  const { groups, close } = await pair('chk0');
  try {
    const res = await Promise.allSettled(groups.map((g, r) => g.allGather(onDevice(g, [1, 2, 3, 4], [2, 2]), r === 1 ? 1 : 0)));
    for (const x of res) {
      if (x.status === 'rejected') assert.not.match(String((x.reason as Error).message), /store channel/);
    }
  } finally {
    await close();
    delete process.env.GROUPCOMM_CHECK_CALLS_EVERY;
  }
});

test('checkEvery: GROUPCOMM_CHECK_CALLS_EVERY, else every 64th (every call under GROUPCOMM_DEBUG=debug: device_trace)', () => {
  delete process.env.GROUPCOMM_CHECK_CALLS_EVERY;
  assert.is(checkEvery(), 64);
  process.env.GROUPCOMM_CHECK_CALLS_EVERY = '3';
  assert.is(checkEvery(), 3);
  delete process.env.GROUPCOMM_CHECK_CALLS_EVERY;
});

test('GROUPCOMM_CHECK_CALLS_EVERY=2: device calls 0, 2, 4 … are checked, CPU-tensor calls neither checked nor counted', async () => {
  process.env.GROUPCOMM_CHECK_CALLS_EVERY = '2';
  const { groups, close } = await pair('chk2');
  try {
    const mismatched = () => Promise.allSettled(groups.map((g, r) => g.allGather(onDevice(g, [1, 2, 3, 4], [2, 2]), r === 1 ? 1 : 0)));
    // Device call #0 (checked, equal); CPU calls in between do not count.
    await Promise.all(groups.map((g, r) => g.allReduce(onDevice(g, [r, 1], [2]))));
    for (let i = 0; i < 3; i++) await Promise.all(groups.map((g) => g.allReduce(tensor(Float32Array.of(1)))));
    // Device call #1 is not checked: the same bytes on both ranks, so it completes.
    for (const x of await mismatched()) assert.is(x.status, 'fulfilled', String((x as PromiseRejectedResult).reason));
    // Device call #2 is checked.
    for (const x of await mismatched()) {
      assert.is(x.status, 'rejected');
      assert.match(String((x as PromiseRejectedResult).reason?.message), /device collective #2, checked over the store channel/);
    }
  } finally {
    await close();
    delete process.env.GROUPCOMM_CHECK_CALLS_EVERY;
  }
});

test('GROUPCOMM_CHECK_CALLS_EVERY=1: each device collective names what differs; an omitted op equals sum', async () => {
  process.env.GROUPCOMM_CHECK_CALLS_EVERY = '1';
  type G = StatelessGroupCoordinator;
  const cases: [string, (g: G, r: number) => Promise<unknown>, RegExp][] = [
    ['broadcast', (g, r) => g.broadcast(onDevice(g, [1, 2], [2]), r), /broadcast: .*root/],
    ['allReduce', (g, r) => g.allReduce(onDevice(g, [1, 2], [2]), r === 1 ? { op: 'max' } : {}), /allReduce: .*op/],
    ['gather', (g, r) => g.gather(onDevice(g, [1, 2], [2]), r, 0), /gather: .*root/],
    ['reduceScatter', (g, r) => g.reduceScatter(onDevice(g, [1, 2, 3, 4], [2, 2]), r), /reduceScatter: .*dim/],
  ];
  try {
    for (const [name, call, re] of cases) {
      const { groups, close } = await pair(`chk_${name}`);
      try {
        for (const x of await Promise.allSettled(groups.map((g, r) => call(g, r)))) {
          assert.is(x.status, 'rejected', `${name} resolved`);
          const e = (x as PromiseRejectedResult).reason as { code: string; message: string };
          assert.is(e.code, 'ERR_GROUPCOMM_MISMATCH', e.message);
          assert.match(e.message, re);
        }
      } finally {
        await close();
      }
    }
    const { groups, close } = await pair('chk_sum');
    try {
      await Promise.all(groups.map((g, r) => g.allReduce(onDevice(g, [1, 2], [2]), r === 1 ? { op: 'sum' } : {})));
      await Promise.all(groups.map((g, r) => g.reduceScatter(onDevice(g, [1, 2, 3, 4], [4]), 0, r === 0 ? { op: 'sum' } : {})));
    } finally {
      await close();
    }
  } finally {
    delete process.env.GROUPCOMM_CHECK_CALLS_EVERY;
  }
});

test('an inner-dim allGather or gather whose dim differs is caught by the CPU group (the call view travels)', async () => {
  for (const op of ['allGather', 'gather'] as const) {
    const { groups, close } = await pair(`chk_view_${op}`);
    try {
      const t = () => tensor(new Float32Array(8), { shape: [2, 2, 2] });
      const res = await Promise.allSettled(groups.map((g, r) => (op === 'allGather' ? g.allGather(t(), r + 1) : g.gather(t(), 0, r + 1))));
      // Every rank of an allGather compares; in a gather the root does (the sender learns by a verdict, on its next call).
      for (const x of op === 'allGather' ? res : res.slice(0, 1)) {
        assert.is(x.status, 'rejected', `${op} resolved`);
        assert.is((x as PromiseRejectedResult).reason?.code, 'ERR_GROUPCOMM_MISMATCH');
      }
    } finally {
      await close();
    }
  }
});

test('the store-channel check names every differing rank (peerRanks); a group of one has nothing to check', async () => {
  process.env.GROUPCOMM_CHECK_CALLS_EVERY = '1';
  try {
    const { groups, close } = await pair('chk_peers');
    try {
      const res = await Promise.allSettled(groups.map((g, r) => g.broadcast(onDevice(g, [1, 2], [2]), r)));
      for (const [r, x] of res.entries()) assert.equal((x as PromiseRejectedResult).reason?.peerRanks, [1 - r]);
    } finally {
      await close();
    }
    const solo = await StatelessGroupCoordinator.create({ groupRanks: [[0]], globalRank: 0, groupName: 'chk_solo', timeoutMs: 5_000, backend: 'cpu', useDeviceCommunicator: true });
    try {
      const out = await solo.allReduce(onDevice(solo, [1, 2], [2]));
      assert.equal([...new Float32Array(await (async () => { const b = new Uint8Array(8); solo.backend!.copyToHost(b, out.data as never); return b.buffer; })())], [1, 2]);
    } finally {
      await solo.abort();
    }
  } finally {
    delete process.env.GROUPCOMM_CHECK_CALLS_EVERY;
  }
});

test.run();
