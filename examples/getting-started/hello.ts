// The same in TypeScript, with a tensor dict whose type carries through.
// Run: bun node_modules/.bin/groupcomm launch -n 2 hello.ts   (ranks run on Bun)
import { StatelessGroupCoordinator, TcpStore, tensor, type CpuTensor } from 'groupcomm';

interface Step {
  step: number;
  ids: CpuTensor<Int32Array>;
}

const rank = Number(process.env.RANK);
const worldSize = Number(process.env.WORLD_SIZE);
const store = await TcpStore.create({ host: process.env.MASTER_ADDR, port: Number(process.env.MASTER_PORT) });
const everyone = [...Array(worldSize).keys()];
const group = await StatelessGroupCoordinator.create({ groupRanks: [everyone], globalRank: rank, groupName: 'hello', rendezvous: store });

const sum: CpuTensor<Float32Array> = await group.allReduce(tensor(new Float32Array([rank + 1])));
// Rank 0 passes the dict; every rank gets a Step back (the others a copy).
const mine: Step | undefined = rank === 0 ? { step: 7, ids: tensor(new Int32Array([4, 2])) } : undefined;
const got = await group.broadcastTensorDict<Step>(mine);
const runtime = process.versions.bun ? `Bun ${process.versions.bun}` : `Node ${process.version}`;
console.log(`rank ${rank}/${worldSize} on ${runtime}: sum = ${sum.data[0]}, step ${got.step}, ids [${got.ids.data.join(', ')}]`);

await group.destroy();
await store.close();
