// One rank of `groupcomm bench pg` (started by bench/pg.ts). Rank 0 hosts the store on port 0
// and prints `@@PORT n` so the parent can start the others; every rank prints `@@BENCH {json}`
// with its raw samples (ns) at the end. The cases mirror peers/vllm_like_pg_bench.py.
import { StatelessProcessGroup } from '../host/pg/group.js';
import { TcpStore } from '../host/store/client.js';

const rank = Number(process.env.RANK);
const worldSize = Number(process.env.WORLD_SIZE);
const seconds = Number(process.env.PG_BENCH_SECONDS ?? 2);
const budgetNs = seconds * 1e9;
const now = () => Number(process.hrtime.bigint()); // CLOCK_MONOTONIC: comparable across processes
const MiB = 1 << 20;
const SMALL = { op: 'step', seq: 0, shape: [8, 4096], dtype: 'float16', ranks: [0, 1, 2, 3], flag: true, name: 'layer.0.weight' };

let store: TcpStore;
if (rank === 0) {
  store = await TcpStore.create({ host: '127.0.0.1', port: 0, isServer: true, timeoutMs: 30_000 });
  process.stdout.write(`@@PORT ${store.port}\n`);
} else {
  store = await TcpStore.create({ host: '127.0.0.1', port: Number(process.env.PG_PORT), timeoutMs: 30_000 });
}
const pg = await StatelessProcessGroup.create({ rank, worldSize, store, timeoutMs: 30_000, groupName: 'bench' });
const res: Record<string, number[]> = {};

/**
 * Warm up with 50 calls (the first ones open wait connections and run cold code; a fixed count,
 * since every rank must make the same number of collective calls), then let rank 0 pick an
 * iteration count that fits the budget from the pace of the last 25. At least 100 timed
 * iterations, so a median means something.
 */
async function iterations(fn: () => Promise<unknown>, hi = 20_000): Promise<number> {
  for (let i = 0; i < 25; i++) await fn();
  const t0 = now();
  for (let i = 0; i < 25; i++) await fn();
  const per = Math.max(1, (now() - t0) / 25);
  const n = rank === 0 ? Math.floor(budgetNs / per) : 0;
  return Math.max(100, Math.min(hi, (await pg.broadcastObj(n, 0)) as number));
}

async function pingPong(name: string, payload: unknown, cap: number, warmup: number): Promise<void> {
  await pg.barrier();
  if (rank === 0) {
    const msg = { stop: false, p: payload };
    for (let i = 0; i < warmup; i++) {
      await pg.sendObj(msg, 1);
      await pg.recvObj(1);
    }
    const rtts: number[] = [];
    const start = now();
    for (;;) {
      const stop = now() - start > budgetNs || rtts.length >= cap;
      msg.stop = stop;
      const a = now();
      pg.sendObj(msg, 1);
      const echo = (await pg.recvObj(1)) as { stop: boolean };
      rtts.push(now() - a);
      if (echo.stop !== stop) throw new Error('ping-pong echo mismatch');
      if (stop) break;
    }
    res[name] = rtts;
  } else if (rank === 1) {
    for (;;) {
      const m = (await pg.recvObj(0)) as { stop: boolean };
      pg.sendObj(m, 0);
      if (m.stop) break;
    }
  }
}

if (worldSize === 2) {
  await pingPong('pingpong_small', { ...SMALL }, 200_000, 50);
  const blob = new Uint8Array(MiB);
  for (let i = 0; i < blob.length; i += 4096) blob[i] = i & 0xff;
  await pingPong('pingpong_1MiB', blob, 1000, 5);
} else {
  // broadcastObj one-way latency (root's stamp → receiver's clock), iterations separated by an
  // untimed barrier; the parent takes the slowest receiver per iteration.
  const lat: number[] = [];
  const once = async (out?: number[]) => {
    await pg.barrier();
    if (rank === 0) {
      const obj = { ...SMALL, t0: BigInt(now()) };
      await pg.broadcastObj(obj, 0);
      out?.push(now() - Number(obj.t0));
    } else {
      const obj = (await pg.broadcastObj<unknown>(null, 0)) as { t0: bigint; name: string };
      out?.push(now() - Number(obj.t0));
      if (obj.name !== SMALL.name) throw new Error('broadcast mismatch');
    }
  };
  const n = await iterations(() => once());
  for (let i = 0; i < n; i++) await once(lat);
  res.broadcast_obj = lat;
  for (const [name, fn] of [
    ['all_gather_obj', () => pg.allGatherObj(SMALL)],
    ['barrier', () => pg.barrier()],
  ] as [string, () => Promise<unknown>][]) {
    await pg.barrier();
    const k = await iterations(fn);
    const durs: number[] = [];
    for (let i = 0; i < k; i++) {
      const a = now();
      await fn();
      durs.push(now() - a);
    }
    res[name] = durs;
  }
}
await pg.destroy();
await store.close();
process.stdout.write(`@@BENCH ${JSON.stringify(res)}\n`);
process.exit(0);
