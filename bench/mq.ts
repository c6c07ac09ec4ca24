// `node dist/bench/mq.js [ranks=4]`: broadcastObject to the slowest of ranks−1 same-host
// receivers, with and without the message-queue broadcaster (docs/coordinator.md has results;
// compare with the vLLM-like row of `groupcomm bench pg`, docs/process-group.md).
import { TcpStoreServer } from '../host/store/index.js';
import { spawnRanks } from './ranks.js';

const n = Number(process.argv[2] ?? 4);
const server = await TcpStoreServer.listen({ host: '127.0.0.1', port: 0 });
try {
  const res = await spawnRanks<Record<string, number[]>>(n, 'bench/mq_worker', { env: { MQ_BENCH_PORT: String(server.port) }, timeoutMs: 600_000 });
  for (const k of ['store', 'mq']) {
    // Per call, the slowest receiver; then median and p99 over calls (ns → µs).
    const slowest = res[1][k].map((_, i) => Math.max(...res.slice(1).map((r) => r[k][i]))).sort((a, b) => a - b);
    const q = (p: number) => (slowest[Math.min(slowest.length - 1, Math.floor(p * slowest.length))] / 1000).toFixed(1);
    console.log(`${k === 'mq' ? 'message queue' : 'store channel'}: broadcastObject, slowest of ${n - 1} receivers: median ${q(0.5)} µs, p99 ${q(0.99)} µs (${slowest.length} calls)`);
  }
} finally {
  await server.close();
}
