// Two groups over the same 4 processes. Run: node bin/groupcomm.js launch -n 4 examples/two-groups.mjs
import { StatelessGroupCoordinator, TcpStore, tensor } from 'groupcomm';

const rank = Number(process.env.RANK);
// The launcher hosts a store at MASTER_ADDR:MASTER_PORT; groups meet there (rank 0 of each
// group binds port 0 and publishes its ports under the group's name: nothing to pre-allocate).
const store = await TcpStore.create({ host: process.env.MASTER_ADDR, port: Number(process.env.MASTER_PORT) });
const world = await StatelessGroupCoordinator.create({ groupRanks: [[0, 1, 2, 3]], globalRank: rank, groupName: 'world', rendezvous: store });
const pair = await StatelessGroupCoordinator.create({ groupRanks: [[0, 1], [2, 3]], globalRank: rank, groupName: 'pair', rendezvous: store });

const sum = await world.allReduce(tensor(new Float32Array([rank + 1])));   // a CpuTensor<Float32Array>
const d = await pair.broadcastTensorDict(pair.rankInGroup === 0 ? { from: rank, x: tensor(new Int32Array([rank, 7])) } : undefined);
console.log(`world sum ${sum.data[0]}; ${pair.uniqueName} [${pair.ranks}] got x=[${d.x.data}] from rank ${d.from}`);

await pair.destroy();                                           // the world group keeps serving
const all = await world.allGather(tensor(new Int32Array([rank * 10])), 0);
console.log(`after the pairs are gone: [${all.data}]`);
await world.destroy();
await store.close();
