// Groups with a device communicator. The cpu backend stands in for cuda here (same calls: with
// cuda, tensors live on the GPU and collectives go through NCCL).
// Run: node bin/groupcomm.js launch -n 4 examples/coordinator.mjs
import { resolveBackend, StatelessGroupCoordinator, TcpStore, tensor, toDevice, toHost } from 'groupcomm';

const rank = Number(process.env.RANK);
const rendezvous = await TcpStore.create({ host: process.env.MASTER_ADDR, port: Number(process.env.MASTER_PORT) });
const backend = await resolveBackend('cpu');            // on a GPU machine: 'cuda'
const g = await StatelessGroupCoordinator.create({
  groupRanks: [[0, 1], [2, 3]], globalRank: rank, localRank: 0,
  groupName: 'dp', rendezvous, backend: backend.name, useDeviceCommunicator: true, timeoutMs: 60_000,
});
const x = toDevice(backend, tensor(new Float32Array([rank, 1, 2, 3])), g.localRank);   // on g.device
const sum = await g.allReduce(x);                       // device tensor → device communicator (new tensor)
await g.allReduce(x, { out: x });                       // in place
const h = await g.allReduce(tensor(new Float32Array([rank])));   // CPU tensor → CPU group
const d = await g.broadcastTensorDict(g.rankInGroup === 0 ? { step: 7, ids: tensor(new Int32Array([1, 2])) } : undefined);
console.log(`rank ${rank} in [${g.ranks}]: device sum ${(await toHost(sum)).data}, host sum ${h.data[0]}, step ${d.step}, ids [${d.ids.data}]`);
g.free(sum);
g.free(x);
await g.destroy();
await rendezvous.close();
