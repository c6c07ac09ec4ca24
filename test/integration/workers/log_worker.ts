// One process, two ranks of a coordinator group 'world' with the cpu device backend: what
// test/unit/log.test.ts reads the log lines of (every layer: COORD, PG, CPU, DEVICE, STORE).
import { StatelessGroupCoordinator, TcpStore, tensor, toDevice, resolveBackend } from '../../../host/index.js';

const store = await TcpStore.create({ port: 0, isServer: true, timeoutMs: 30_000 });
const backend = await resolveBackend('cpu');
const gs = await Promise.all([0, 1].map((globalRank) => StatelessGroupCoordinator.create({
  groupRanks: [[0, 1]], globalRank, groupName: 'world', rendezvous: store, backend: 'cpu', useDeviceCommunicator: true, timeoutMs: 30_000,
})));
for (let i = 0; i < 3; i++) {
  // 1024 float32 = 4096 bytes on the CPU group.
  await Promise.all(gs.map((g) => g.allReduce(tensor(new Float32Array(1024).fill(1)))));
}
// 8 float32 = 32 bytes on the device communicator.
const dev = await Promise.all(gs.map((g) => g.allReduce(toDevice(backend, tensor(new Float32Array(8))))));
dev.forEach((t, i) => gs[i].free(t));
await Promise.all(gs.map((g) => g.broadcastObject(g.rankInGroup === 0 ? { hello: 'world' } : undefined, 0)));
await Promise.all(gs.map((g) => g.destroy()));
await store.close();
console.log('@@DONE');
