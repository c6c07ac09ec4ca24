// Which transport the cpu backend picks: its own CPU group when the bootstrap has a store
// behind it, the bootstrap's bytes otherwise; both give the same answers.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { storeBootstrap } from '../../host/device/bootstrap.js';
import { fromDevice, freeTensor, subBuffer, toDevice } from '../../host/device/tensors.js';
import { TcpStore, TcpStoreServer } from '../../host/store/index.js';
import { tensor, type Tensor } from '../../host/core/tensor.js';
import { CpuBackend, CpuCommunicator } from '../../plugins/cpu/index.js';

let server: TcpStoreServer;
let store: TcpStore;
test.before(async () => {
  server = await TcpStoreServer.listen({ host: '127.0.0.1', port: 0 });
  store = await TcpStore.create({ host: '127.0.0.1', port: server.port });
});
test.after(async () => { await store.close(); await server.close(); });

for (const bare of [false, true]) {
  test(`${bare ? 'a bare bootstrap → bootstrap' : 'a bootstrap over a Store → CPU group'} transport, and allReduce works on it`, async () => {
    const b = new CpuBackend();
    const boot = storeBootstrap(store, { rank: 0, worldSize: 1, prefix: `sel-${bare}` });
    assert.is(boot.store === undefined, false);
    const comm = (await b.createCommunicator({ rank: 0, worldSize: 1, deviceIndex: 0, bootstrap: bare ? { ...boot, store: undefined } : boot, timeoutMs: 10_000 })) as CpuCommunicator;
    assert.is(comm.transport, bare ? 'bootstrap' : 'group');
    const x = toDevice(b, tensor(new Float32Array([1, 2, 3])));
    const r = await comm.allReduce(x, { op: 'max' });
    assert.equal([...(fromDevice(b, r).data as Float32Array)], [1, 2, 3]);
    freeTensor(b, x);
    freeTensor(b, r);
    await comm.close();
  });
}

test('a sub-buffer at an unaligned offset still gets its result (the group path copies back)', async () => {
  const b = new CpuBackend();
  const comm = await b.createCommunicator({ rank: 0, worldSize: 1, deviceIndex: 0, bootstrap: storeBootstrap(store, { rank: 0, worldSize: 1, prefix: 'unaligned' }), timeoutMs: 10_000 });
  const buf = b.alloc(9, 0);
  b.copyFromHost(buf, new Uint8Array([9, 1, 0, 0, 0, 2, 0, 0, 0]));
  const inner = subBuffer(buf, 1, 8);
  const out = subBuffer(b.alloc(9, 0), 1, 8);
  await comm.allGather({ dtype: 'int32', shape: [2], device: 'host:0', data: inner }, { out: { dtype: 'int32', shape: [2], device: 'host:0', data: out } });
  const got = new Int32Array(2);
  b.copyToHost(new Uint8Array(got.buffer), out);
  assert.equal([...got], [1, 2]);
  const at: Tensor = { dtype: 'int32', shape: [2], device: 'host:0', data: out };
  await comm.allReduce(at, { op: 'sum', out: at });
  b.copyToHost(new Uint8Array(got.buffer), out);
  assert.equal([...got], [1, 2]);
  await comm.close();
});

async function pair(prefix: string, bareRank0: boolean) {
  const b = new CpuBackend();
  const stores = [store, await TcpStore.create({ host: '127.0.0.1', port: server.port })];
  const comms = await Promise.all([0, 1].map((r) => {
    const boot = storeBootstrap(stores[r], { rank: r, worldSize: 2, prefix });
    // Per-rank names (the coordinator's unique names differ per process) must not matter.
    return b.createCommunicator({ rank: r, worldSize: 2, deviceIndex: r, bootstrap: r === 0 && bareRank0 ? { ...boot, store: undefined } : boot, timeoutMs: 10_000, name: `name-${r}` });
  })) as CpuCommunicator[];
  const xs = [0, 1].map((r) => toDevice(b, tensor(new Int32Array([r + 1, 10])), r));
  await Promise.all(comms.map((c, r) => c.allReduce(xs[r], { out: xs[r] })));
  const got = xs.map((x) => [...(fromDevice(b, x).data as Int32Array)]);
  const kinds = comms.map((c) => c.transport);
  await Promise.all(comms.map((c) => c.close()));
  await stores[1].close();
  return { got, kinds };
}

test('two ranks with different communicator names form one CPU group', async () => {
  const { got, kinds } = await pair('names', false);
  assert.equal(kinds, ['group', 'group']);
  assert.equal(got, [[3, 20], [3, 20]]);
});

test('rank 0 decides the transport: without a store it picks the bootstrap, and rank 1 follows', async () => {
  const { got, kinds } = await pair('follow', true);
  assert.equal(kinds, ['bootstrap', 'bootstrap']);
  assert.equal(got, [[3, 20], [3, 20]]);
});

test('a bootstrap over a partial store (no full Store contract) exposes no store', () => {
  const partial = { set: store.set.bind(store), get: store.get.bind(store), add: store.add.bind(store), check: store.check.bind(store), wait: store.wait.bind(store), deleteKey: store.deleteKey.bind(store) };
  assert.is(storeBootstrap(partial, { rank: 0, worldSize: 1, prefix: 'p' }).store, undefined);
});

test.run();
