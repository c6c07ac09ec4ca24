// vLLM's pipeline, uneven-batch and expert-parallel calls on one group of 4 ranks, with group
// rank 0's broadcasts through the shared-memory message queue. CPU tensors here; device tensors
// take the same calls. Run: node bin/groupcomm.js launch -n 4 examples/vllm-ops.mjs
import { StatelessGroupCoordinator, TcpStore, tensor } from 'groupcomm';

const rank = Number(process.env.RANK);
const rendezvous = await TcpStore.create({ host: process.env.MASTER_ADDR, port: Number(process.env.MASTER_PORT) });
const g = await StatelessGroupCoordinator.create({
  groupRanks: [[0, 1, 2, 3]], globalRank: rank, groupName: 'ops', rendezvous, useMessageQueueBroadcaster: true, timeoutMs: 60_000,
});
const me = g.rankInGroup;
// Pipeline: each stage sends to the next and receives from the previous (the defaults).
await g.send(tensor(new Float32Array([me, me])));
const act = await g.recv({ shape: [2], dtype: 'float32' });
// Uneven batches: rank r holds r + 1 rows; every rank gets all 10 rows in rank order ...
const sizes = [1, 2, 3, 4];
const rows = await g.allGatherv(tensor(new Int32Array(2 * (me + 1)).fill(me), { shape: [me + 1, 2] }), sizes, 0);
// ... and back: the sum over ranks of those 10 rows, rank r keeping its sizes[r] rows.
const mine = await g.reduceScatterv(rows, sizes, 0);
// Expert dispatch: every rank sends p + 1 entries to rank p, so rank r receives r + 1 from each.
const got = await g.allToAll(tensor(new Int32Array(10).fill(me)), { inputSplits: [1, 2, 3, 4], outputSplits: [me + 1, me + 1, me + 1, me + 1] });
const cfg = await g.broadcastObject(me === 0 ? { lr: 0.1 } : undefined);
console.log(`rank ${me}: got [${act.data}] from ${g.prevRank}, ${rows.shape[0]} rows, kept [${mine.shape}] = ${mine.data[0]}, experts sent [${got.data}], lr ${cfg.lr}`);
await g.destroy();
await rendezvous.close();
