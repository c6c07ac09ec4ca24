// Objects and small tensors over the store. Run: node bin/groupcomm.js launch -n 2 examples/process-group.mjs
import os from 'node:os';
import { StatelessProcessGroup, TcpStore, tensor } from 'groupcomm';

const rank = Number(process.env.RANK);
const worldSize = Number(process.env.WORLD_SIZE);
// Without { store }, rank 0 would host a server on { host, port } itself; here the launcher's serves.
const store = await TcpStore.create({ host: process.env.MASTER_ADDR, port: Number(process.env.MASTER_PORT) });
const pg = await StatelessProcessGroup.create({ store, rank, worldSize, timeoutMs: 60_000 });
if (rank === 0) await pg.sendObj({ step: 3, shapes: new Map([[0, [8, 4096]]]) }, 1);
if (rank === 1) console.log('rank 1 got', await pg.recvObj(0));
const cfg = await pg.broadcastObj(rank === 0 ? { lr: 0.1 } : null, 0);       // every rank
const all = await pg.allGatherObj({ host: os.hostname(), pid: process.pid });
const mean = await pg.allReduce(tensor(new Float32Array([rank + 0.5])), { op: 'avg' });
await pg.barrier({ timeoutMs: 5000 });
console.log(`rank ${rank}: cfg ${JSON.stringify(cfg)}, ${all.length} members, mean ${mean.data[0]}`);
await pg.destroy();
await store.close();
