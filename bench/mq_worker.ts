// One rank of bench/mq.ts: broadcastObject latency from group rank 0 to the slowest receiver
// (root's stamp → receiver's clock, CLOCK_MONOTONIC: bench/clock.ts), iterations separated by an
// untimed barrier, on a coordinator with and without the message-queue broadcaster. The object
// is the pg bench's SMALL one (bench/pg_cases.ts), as vLLM-like rows use.
import { StatelessGroupCoordinator } from '../host/coordinator/coordinator.js';
import { TcpStore } from '../host/store/client.js';
import { now } from './clock.js';
import { SMALL } from './pg_cases.js';
import { rankEnv, reportResult } from './ranks.js';

const { rank, worldSize } = rankEnv();
const calls = Number(process.env.MQ_BENCH_CALLS ?? 3000);
const warm = Number(process.env.MQ_BENCH_WARMUP ?? 3000);
const store = await TcpStore.create({ host: '127.0.0.1', port: Number(process.env.MQ_BENCH_PORT), timeoutMs: 60_000 });
const res: Record<string, number[]> = {};
for (const mq of [false, true]) {
  const g = await StatelessGroupCoordinator.create({
    groupRanks: [[...Array(worldSize).keys()]], globalRank: rank, groupName: mq ? 'mq' : 'store', rendezvous: store,
    timeoutMs: 60_000, useMessageQueueBroadcaster: mq,
  });
  const lat: number[] = [];
  for (let i = 0; i < warm + calls; i++) {
    await g.barrier();
    if (rank === 0) await g.broadcastObject({ ...SMALL, t0: now() }, 0);
    else {
      const o = await g.broadcastObject<{ t0: number; name: string }>(undefined, 0);
      if (i >= warm) lat.push(now() - o.t0);
      if (o.name !== SMALL.name) throw new Error('broadcast mismatch');
    }
  }
  res[mq ? 'mq' : 'store'] = lat;
  await g.destroy();
}
await store.close();
reportResult(res);
