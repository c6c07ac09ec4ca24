// Device tensors on a real GPU through the cuda backend: memory round trips for every dtype,
// pointer arithmetic, toHost, a world-size-1 communicator, and (with 2+ GPUs) a tensor dict
// sent between processes. Skips with the printed reason where there is no usable GPU.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { setting } from '../../host/base/config.js';
import { storeBootstrap } from '../../host/device/bootstrap.js';
import { loadBackend, resolveBackend, toHost } from '../../host/device/registry.js';
import { StatelessGroupCoordinator } from '../../host/coordinator/coordinator.js';
import { premulSum } from '../../host/core/premul.js';
import { tensor } from '../../host/core/tensor.js';
import { emptyOn, freeTensor, fromDevice, subBuffer, toDevice } from '../../host/device/tensors.js';
import { DTYPE_NAMES, arrayClassOf, bytesOf, type CpuTensor } from '../../host/core/tensor.js';
import { spawnRanks } from '../helpers/ranks.js';
import { TcpStore, TcpStoreServer } from '../../host/store/index.js';

const backend = await loadBackend('cuda');
const probe = await backend.probe();
const devices = probe.available ? await backend.deviceCount() : 0;
// GROUPCOMM_REQUIRE_GPU=1 (npm run test:gpu): an unusable backend fails every GPU test instead of skipping it.
const requireGpu = setting('GROUPCOMM_REQUIRE_GPU') === '1';
const gpu = (name: string, fn: () => Promise<void> | void, minDevices = 1) => {
  if (!probe.available && requireGpu) return test(name, () => { throw new Error(`GROUPCOMM_REQUIRE_GPU=1 but the cuda backend is not usable: ${probe.reason}`); });
  if (!probe.available) return test.skip(name, () => {});
  if (devices < minDevices) {
    console.log(`# '${name}' needs ${minDevices} GPUs, this machine has ${devices}: skipped`);
    return test.skip(name, () => {});
  }
  test(name, fn);
};
if (!probe.available) console.log(`# cuda backend unavailable, GPU tests skipped: ${probe.reason}`);

test('probe() answers: available with at least one device, or a reason', () => {
  if (probe.available) assert.ok(devices >= 1, `available but ${devices} devices`);
  else assert.ok(probe.reason.length > 10, probe.reason);
});

gpu('every dtype round-trips host → device → host bit for bit', () => {
  for (const dtype of DTYPE_NAMES) {
    const C = arrayClassOf(dtype);
    const host = new C(37);
    const raw = new Uint8Array(host.buffer);
    for (let i = 0; i < raw.length; i++) raw[i] = (i * 31 + 7) & 0xff;
    const t: CpuTensor = { dtype, shape: [37], device: 'cpu', data: host };
    const d = toDevice(backend, t, 0);
    assert.is(d.device, 'cuda:0');
    assert.equal([...bytesOf(fromDevice(backend, d))], [...raw], dtype);
    freeTensor(backend, d);
  }
});

gpu('alloc is zero-filled; sub-buffer pointers address inside an allocation; free twice is a no-op', () => {
  const buf = backend.alloc(64, 0);
  const out = new Uint8Array(64).fill(1);
  backend.copyToHost(out, buf);
  assert.ok(out.every((b) => b === 0));
  backend.copyFromHost(buf, new Uint8Array(64).map((_, i) => i));
  const part = new Uint8Array(8);
  backend.copyToHost(part, subBuffer(buf, 16, 8));
  assert.equal([...part], [16, 17, 18, 19, 20, 21, 22, 23]);
  backend.free(buf);
  backend.free(buf);
});

gpu('toHost() brings a cuda tensor back through the backend that owns the cuda device type', async () => {
  const d = emptyOn(backend, [4], 'float32', 0);
  backend.copyFromHost(d.data as never, new Uint8Array(new Float32Array([1, 2, 3, 4]).buffer));
  assert.equal([...((await toHost(d)).data as Float32Array)], [1, 2, 3, 4]);
  freeTensor(backend, d);
});

gpu('a world-size-1 communicator runs allReduce, broadcast and allGather on device memory', async () => {
  const server = await TcpStoreServer.listen({ host: '127.0.0.1', port: 0 });
  const client = await TcpStore.create({ host: '127.0.0.1', port: server.port });
  try {
    const comm = await backend.createCommunicator({ rank: 0, worldSize: 1, deviceIndex: 0, bootstrap: storeBootstrap(client, { rank: 0, worldSize: 1, prefix: 'ws1' }), timeoutMs: 60_000 });
    const x = toDevice(backend, { dtype: 'float32', shape: [1 << 20], device: 'cpu', data: new Float32Array(1 << 20).fill(2) }, 0);
    await comm.allReduce(x, { op: 'sum', out: x });
    assert.is((fromDevice(backend, x).data as Float32Array)[12345], 2);
    const y = await comm.allReduce(x, { op: 'max' }); // allocated by the communicator
    assert.is((fromDevice(backend, y).data as Float32Array)[7], 2);
    await comm.broadcast(x, { src: 0, out: x });
    const out = emptyOn(backend, [1 << 20], 'float32', 0);
    await comm.allGather(x, { out });
    assert.is((fromDevice(backend, out).data as Float32Array)[(1 << 20) - 1], 2);
    await comm.barrier();
    await comm.synchronize();
    await comm.close();
    await comm.close();
    freeTensor(backend, x);
    freeTensor(backend, y);
    freeTensor(backend, out);
  } finally {
    await client.close();
    await server.close();
  }
});

gpu('a group of one over cuda: the coordinator takes device tensors (allReduce new and in place, premulSum), host tensors and a tensor dict', async () => {
  const server = await TcpStoreServer.listen({ host: '127.0.0.1', port: 0 });
  const rendezvous = await TcpStore.create({ host: '127.0.0.1', port: server.port });
  try {
    // Resolved by name, as an application does: the group of one makes no communicator, so the
    // backend must be usable for toDevice from resolveBackend alone.
    const b = await resolveBackend('cuda');
    const g = await StatelessGroupCoordinator.create({ groupRanks: [[0]], globalRank: 0, localRank: 0, groupName: 'one', rendezvous, backend: 'cuda', useDeviceCommunicator: true, timeoutMs: 60_000 });
    try {
      const x = toDevice(b, tensor(new Float32Array([1, 2, 3, 4])), 0);
      const sum = await g.allReduce(x);
      await g.allReduce(x, { out: x, op: premulSum(0.5) });
      assert.equal([...((await toHost(sum)).data as Float32Array)], [1, 2, 3, 4]);
      assert.equal([...((await toHost(x)).data as Float32Array)], [0.5, 1, 1.5, 2]);
      assert.equal([...(await g.allReduce(tensor(new Float32Array([5])))).data as Float32Array], [5]);
      const d = await g.broadcastTensorDict({ step: 7, ids: tensor(new Int32Array([1, 2])) });
      assert.is(d!.step, 7);
      g.free(sum);
      g.free(x);
    } finally {
      await g.destroy();
    }
  } finally {
    await rendezvous.close();
    await server.close();
  }
});

gpu('a tensor dict travels between two processes on two GPUs', async () => {
  const server = await TcpStoreServer.listen({ host: '127.0.0.1', port: 0 });
  try {
    const res = await spawnRanks<{ rank: number; seen: Record<string, number[]> }>(2, 'test/gpu/workers/tensor_dict_worker', {
      env: { GC_STORE_PORT: String(server.port) }, timeoutMs: 240_000,
    });
    assert.equal(res[1].seen, { weights: [1, 2, 3, 4, 5, 6], ids: [7, 8], mask: [1, 0, 1] });
  } finally {
    await server.close();
  }
}, 2);

test.run();
