// CPU collectives between the ranks of one group. Run: node bin/groupcomm.js launch -n 2 examples/cpu-group.mjs
import { CpuGroup, TcpStore, tensor } from 'groupcomm';

const rank = Number(process.env.RANK);
const worldSize = Number(process.env.WORLD_SIZE);
const store = await TcpStore.create({ host: process.env.MASTER_ADDR, port: Number(process.env.MASTER_PORT) });
const g = await CpuGroup.create({ store, rank, worldSize, groupName: 'tp0', timeoutMs: 60_000 });
const t = tensor(new Float32Array(1 << 20).fill(rank));
const sum = await g.allReduce(t, { op: 'sum' });   // new tensor; t is not written
await g.allReduce(t, { op: 'sum', out: t });       // in place: out is the input
const all = await g.allGather(t);                  // new tensor [worldSize * 2^20]
console.log(`rank ${rank}: sum[0] = ${sum.data[0]}, in place t[0] = ${t.data[0]}, gathered ${all.shape}`);
await g.destroy();
await store.close();                               // or the process keeps its connection (and runs on)
