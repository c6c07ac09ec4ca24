// Every rank adds its number; each prints the sum and the runtime it ran on.
// Run: npx groupcomm launch -n 2 hello.mjs
import { StatelessGroupCoordinator, TcpStore, tensor } from 'groupcomm';

// groupcomm launch gives every rank these (torchrun's names), and hosts a store at MASTER_ADDR:MASTER_PORT.
const rank = Number(process.env.RANK);
const worldSize = Number(process.env.WORLD_SIZE);
const store = await TcpStore.create({ host: process.env.MASTER_ADDR, port: Number(process.env.MASTER_PORT) });
const everyone = [...Array(worldSize).keys()];
const group = await StatelessGroupCoordinator.create({ groupRanks: [everyone], globalRank: rank, groupName: 'hello', rendezvous: store });

const sum = await group.allReduce(tensor(new Float32Array([rank + 1])));
const runtime = process.versions.bun ? `Bun ${process.versions.bun}` : `Node ${process.version}`;
console.log(`rank ${rank}/${worldSize} on ${runtime}: sum = ${sum.data[0]}`);

await group.destroy();
await store.close();
