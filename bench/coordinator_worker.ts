/**
 * A process of `groupcomm bench coordinator`. It hosts the ranks r with r % procs === proc and
 * follows the parent's lead through the bench store:
 *   create  for each iteration i: wait for `go/i`, create this process's coordinators of an
 *           `n`-rank group (all at once), set `done/i/proc`; then wait for `end/i`, destroy.
 *   dict    one rank per process; broadcastTensorDict of a 32-entry dict from rank 0, in reps
 *           of `count` back-to-back calls closed by a barrier; rank 0 reports the times.
 */
import { StatelessGroupCoordinator } from '../host/coordinator/coordinator.js';
import { PrefixStore, TcpStore } from '../host/store/index.js';
import type { Store } from '../host/store/types.js';
import { tensor, type CpuTensor, type Tensor } from '../host/core/tensor.js';

const e = process.env;
const mode = e.BENCH_MODE!;
const n = Number(e.BENCH_RANKS);
const proc = Number(e.BENCH_PROC);
const procs = Number(e.BENCH_PROCS);
const iters = Number(e.BENCH_ITERS);
const timeoutMs = 120_000;
const client = await TcpStore.create({ host: '127.0.0.1', port: Number(e.BENCH_STORE_PORT), timeoutMs });
// Each case of the bench has its own key space on the parent's store.
const store: Store = e.BENCH_PREFIX ? new PrefixStore(e.BENCH_PREFIX, client) : client;

async function create(): Promise<void> {
  const mine = [...Array(n).keys()].filter((r) => r % procs === proc);
  for (let i = 0; i < iters; i++) {
    await store.wait([`go/${i}`]);
    const groups = await Promise.all(mine.map((r) => StatelessGroupCoordinator.create({
      groupRanks: [[...Array(n).keys()]], globalRank: r, groupName: `bench${n}x${i}`, rendezvous: store, timeoutMs,
    })));
    await store.set(`done/${i}/${proc}`, '1');
    await store.wait([`end/${i}`]);
    await Promise.all(groups.map((g) => g.destroy()));
    await store.add(`gone/${i}`, 1);
  }
}

function dictOf(entryBytes: number, step: number): Record<string, unknown> {
  const d: Record<string, unknown> = {};
  for (let k = 0; k < 32; k++) {
    if (k % 4 === 3) d[`meta${k}`] = { step, k, name: `entry ${k}` };
    else if (k % 2 === 0) d[`f${k}`] = tensor(new Float32Array(entryBytes / 4).fill(step + k));
    else d[`i${k}`] = tensor(new BigInt64Array(entryBytes / 8).fill(BigInt(step)));
  }
  return d;
}

async function dict(): Promise<void> {
  const g = await StatelessGroupCoordinator.create({
    groupRanks: [[...Array(n).keys()]], globalRank: proc, groupName: 'dictbench', rendezvous: store, timeoutMs,
  });
  const sizes = JSON.parse(e.BENCH_DICT_SIZES!) as number[];
  const count = Number(e.BENCH_DICT_COUNT);
  const result: Record<string, number[]> = {};
  let wrong = 0;
  for (const bytes of sizes) {
    const src = dictOf(bytes, 1);
    const times: number[] = [];
    for (let rep = 0; rep < iters + 1; rep++) {
      await g.barrier();
      const t0 = performance.now();
      for (let c = 0; c < count; c++) {
        const d = await g.broadcastTensorDict(proc === 0 ? src : undefined, 0);
        if (rep === 0 && c === 0 && proc !== 0) {
          const f = d.f0 as CpuTensor, m = d.meta3 as { k: number };
          if ((f.data as Float32Array)[0] !== 1 || m.k !== 3 || Object.keys(d).length !== 32) wrong++;
        }
      }
      await g.barrier();
      if (rep > 0) times.push((performance.now() - t0) / count); // rep 0 warms up
    }
    result[bytes] = times;
  }
  await g.destroy();
  const all = await Promise.all([...Array(n).keys()].map(async (r) => {
    if (r === proc) await store.set(`wrong/${r}`, String(wrong));
    return Number(new TextDecoder().decode(await store.get(`wrong/${r}`)));
  }));
  // Awaited: a write to a pipe is asynchronous, and the process exits right after.
  if (proc === 0) await new Promise((r) => process.stdout.write(`@@BENCH ${JSON.stringify({ result, wrong: all.reduce((a, b) => a + b, 0) })}\n`, r));
}

await (mode === 'create' ? create() : dict());
await client.close();
process.exit(0);
