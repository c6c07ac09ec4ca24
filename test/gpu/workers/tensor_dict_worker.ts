// Rank r of a device tensor-dict exchange on the cuda backend: rank 0 sends a dict of device
// tensors (metadata as JSON over the bootstrap, payloads with ncclSend), rank 1 rebuilds it on
// its own GPU from the metadata alone and reports the values it received.
import { storeBootstrap } from '../../../host/device/bootstrap.js';
import { resolveBackend } from '../../../host/device/registry.js';
import { emptyOn, freeTensor, fromDevice, toDevice } from '../../../host/device/tensors.js';
import { tensor, type DType, type Tensor } from '../../../host/core/tensor.js';
import { rankEnv, reportResult } from '../../helpers/ranks.js';
import { TcpStore } from '../../../host/store/index.js';

const { rank, worldSize } = rankEnv();
const backend = await resolveBackend('cuda');
const store = await TcpStore.create({ host: '127.0.0.1', port: Number(process.env.GC_STORE_PORT) });
const bootstrap = storeBootstrap(store, { rank, worldSize, prefix: 'dict', timeoutMs: 120_000 });
// The GPU of this rank on its machine: the launcher's LOCAL_RANK (groupcomm launch, torchrun), else the rank.
const device = Number(process.env.LOCAL_RANK ?? rank);
const comm = await backend.createCommunicator({ rank, worldSize, deviceIndex: device, bootstrap, timeoutMs: 120_000 });

type Meta = { key: string; dtype: DType; shape: number[] }[];
const seen: Record<string, number[]> = {};
if (rank === 0) {
  const dict: Record<string, Tensor> = {
    weights: toDevice(backend, tensor(new Float32Array([1, 2, 3, 4, 5, 6]), { shape: [2, 3] }), device),
    ids: toDevice(backend, tensor(new BigInt64Array([7n, 8n])), device),
    mask: toDevice(backend, tensor(new Uint8Array([1, 0, 1]), { dtype: 'bool' }), device),
  };
  const meta: Meta = Object.entries(dict).map(([key, t]) => ({ key, dtype: t.dtype, shape: t.shape }));
  await bootstrap.sendBytes(new TextEncoder().encode(JSON.stringify(meta)), 1);
  for (const m of meta) await comm.send(dict[m.key], 1);
  for (const t of Object.values(dict)) freeTensor(backend, t);
} else {
  const meta = JSON.parse(new TextDecoder().decode(await bootstrap.recvBytes(0))) as Meta;
  for (const m of meta) {
    const t = emptyOn(backend, m.shape, m.dtype, device);
    await comm.recv(t, 0);
    seen[m.key] = Array.from(fromDevice(backend, t).data as ArrayLike<number | bigint>, Number);
    freeTensor(backend, t);
  }
}
await comm.close();
await store.close();
reportResult({ rank, seen });
