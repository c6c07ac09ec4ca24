// One rank of `groupcomm bench pg` (started by bench/pg.ts). Rank 0 hosts the store on port 0
// and prints `@@PORT n` so the parent can start the others; every rank prints `@@BENCH {json}`
// with its raw samples (ns) at the end. The cases mirror peers/vllm_like_pg_bench.py.
import { StatelessProcessGroup } from '../host/pg/group.js';
import { TcpStore } from '../host/store/client.js';
import { now } from './clock.js';
import { budgetNs, timedCalls, warmupNs, warmUp } from './warmup.js';
import { SMALL } from './pg_cases.js';

const rank = Number(process.env.RANK);
const worldSize = Number(process.env.WORLD_SIZE);
const MiB = 1 << 20;

let store: TcpStore;
if (rank === 0) {
  store = await TcpStore.create({ host: '127.0.0.1', port: 0, isServer: true, timeoutMs: 30_000 });
  process.stdout.write(`@@PORT ${store.port}\n`);
} else {
  store = await TcpStore.create({ host: '127.0.0.1', port: Number(process.env.PG_PORT), timeoutMs: 30_000 });
}
const pg = await StatelessProcessGroup.create({ rank, worldSize, store, timeoutMs: 30_000, groupName: 'bench' });
const res: Record<string, number[]> = {};

/** Warm-up, then the number of timed calls (see warmup.ts); rank 0's plan travels by broadcastObj. */
function iterations(fn: () => Promise<unknown>, minCalls?: number): Promise<number> {
  return warmUp(rank, fn, (plan) => pg.broadcastObj(plan, 0) as Promise<number>, undefined, minCalls);
}

/** Rank 0 times round trips; rank 1 echoes until a message says stop. Warm-up is by time. */
async function pingPong(name: string, payload: unknown, cap: number): Promise<void> {
  await pg.barrier();
  if (rank === 0) {
    const msg = { stop: false, p: payload };
    const rtts: number[] = [];
    const warmEnd = now() + warmupNs;
    let start = 0;
    for (;;) {
      const warming = now() < warmEnd;
      if (!warming && start === 0) start = now();
      const stop = !warming && (now() - start > budgetNs || rtts.length >= cap);
      msg.stop = stop;
      const a = now();
      pg.sendObj(msg, 1);
      const echo = (await pg.recvObj(1)) as { stop: boolean };
      if (!warming) rtts.push(now() - a);
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
  await pingPong('pingpong_small', { ...SMALL }, 200_000);
  const blob = new Uint8Array(MiB);
  for (let i = 0; i < blob.length; i += 4096) blob[i] = i & 0xff;
  await pingPong('pingpong_1MiB', blob, 1000);
} else {
  // broadcastObj one-way latency (root's stamp → receiver's clock), iterations separated by an
  // untimed barrier; the parent takes the slowest receiver per iteration. The small dict, then
  // the same dict carrying 1 MiB of bytes.
  const bcast = async (name: string, blob?: Uint8Array) => {
    const lat: number[] = [];
    const once = async (out?: number[]) => {
      await pg.barrier();
      if (rank === 0) {
        const obj = blob ? { ...SMALL, blob, t0: now() } : { ...SMALL, t0: now() };
        await pg.broadcastObj(obj, 0);
        out?.push(now() - obj.t0);
      } else {
        const obj = (await pg.broadcastObj<unknown>(null, 0)) as { t0: number; name: string; blob?: Uint8Array };
        out?.push(now() - obj.t0);
        if (obj.name !== SMALL.name || obj.blob?.length !== blob?.length) throw new Error('broadcast mismatch');
      }
    };
    const n = await iterations(() => once(), blob ? 0 : undefined);
    for (let i = 0; i < n; i++) await once(lat);
    res[name] = lat;
  };
  await bcast('broadcast_obj');
  const blob = new Uint8Array(MiB);
  for (let i = 0; i < blob.length; i += 4096) blob[i] = i & 0xff;
  await bcast('broadcast_obj_1MiB', blob);
  for (const [name, fn] of [
    ['all_gather_obj', () => pg.allGatherObj(SMALL)],
    ['barrier', () => pg.barrier()],
  ] as [string, () => Promise<unknown>][]) {
    await pg.barrier();
    res[name] = await timedCalls(await iterations(fn), fn);
  }
}
await pg.destroy();
await store.close();
// Exit only once the line is out: writes to a pipe are asynchronous, and exiting at once cut
// off samples past the pipe's 64 KiB buffer.
process.stdout.write(`@@BENCH ${JSON.stringify(res)}\n`, () => process.exit(0));
