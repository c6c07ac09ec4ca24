// One rank of a StatelessProcessGroup test: runs the scenario named in argv and reports what it
// saw (the test process does the asserting). Env: RANK, WORLD_SIZE, PG_PORT, and PG_OWNED=1 for
// "rank 0 hosts the store" (else every rank is a client of the store the test process runs).
import { StatelessProcessGroup } from '../../../host/pg/group.js';
import { TcpStore } from '../../../host/store/client.js';
import { isGroupcommError } from '../../../host/base/errors.js';
import { tensor } from '../../../host/core/tensor.js';
import { rankEnv, reportResult } from '../../helpers/ranks.js';

const { rank, worldSize } = rankEnv();
const scenario = process.argv[2];
const port = Number(process.env.PG_PORT);
const owned = process.env.PG_OWNED === '1';
const timeoutMs = Number(process.env.PG_TIMEOUT_MS ?? 20_000);

async function open(groupName?: string): Promise<StatelessProcessGroup> {
  if (owned) return StatelessProcessGroup.create({ host: '127.0.0.1', port, rank, worldSize, timeoutMs, groupName });
  const store = await TcpStore.create({ host: '127.0.0.1', port, timeoutMs });
  return StatelessProcessGroup.create({ rank, worldSize, timeoutMs, store, groupName });
}

async function close(g: StatelessProcessGroup): Promise<void> {
  await g.destroy();
  if (!owned) await g.store.close();
}

const errInfo = (e: unknown) => (isGroupcommError(e)
  ? { code: e.code, peerRank: e.peerRank, peerRanks: e.peerRanks, key: e.key, message: e.message }
  : { code: 'NOT_GROUPCOMM', message: String((e as Error)?.stack ?? e) });

async function ops(): Promise<unknown> {
  const g = await open();
  const out: Record<string, unknown> = { epoch: g.epoch, runtime: typeof (process.versions as Record<string, string>).bun === 'string' ? 'bun' : 'node' };
  const next = (rank + 1) % worldSize, prev = (rank + worldSize - 1) % worldSize;
  if (worldSize > 1) {
    const s = g.sendObj({ from: rank, m: new Map([[rank, 'x']]), big: BigInt(rank) << 60n }, next);
    const got = (await g.recvObj(prev)) as { from: number; m: Map<number, string>; big: bigint };
    await s;
    out.recvObj = { from: got.from, mapOk: got.m instanceof Map && got.m.get(prev) === 'x', big: String(got.big) };
    const t = tensor(new Float64Array([rank, rank * 1.5]), { shape: [1, 2] });
    const into = tensor(new Float64Array(2), { shape: [1, 2] });
    await Promise.all([g.send(t, next), g.recv(into, prev)]);
    out.recv = [...(into.data as Float64Array)];
  }
  const bc: unknown[] = [];
  const bt: number[][] = [];
  for (let src = 0; src < worldSize; src++) {
    const v = await g.broadcastObj(rank === src ? { src, s: new Set([src]) } : null, src);
    bc.push({ src: v!.src, set: [...v!.s] });
    const x = tensor(new Int16Array(2).fill(rank === src ? src + 100 : 0));
    await g.broadcast(x, { src: src, out: x });
    bt.push([...(x.data as Int16Array)]);
  }
  out.broadcastObj = bc;
  out.broadcast = bt;
  out.allGatherObj = await g.allGatherObj({ r: rank });
  await g.barrier();
  const sum = tensor(new Int32Array([rank, 1]));
  await g.allReduce(sum, { op: 'sum', out: sum });
  out.allReduceSum = [...(sum.data as Int32Array)];
  const mn = tensor(new Float32Array([rank + 0.25]));
  await g.allReduce(mn, { op: 'min', out: mn });
  out.allReduceMin = [...(mn.data as Float32Array)];
  await close(g);
  return out;
}

async function inflight(): Promise<unknown> {
  const g = await open();
  const N = 300;
  const next = (rank + 1) % worldSize, prev = (rank + worldSize - 1) % worldSize;
  const sends: Promise<unknown>[] = [];
  const recvs: Promise<unknown>[] = [];
  for (let i = 0; i < N; i++) {
    sends.push(g.sendObj({ i, from: rank }, next));
    recvs.push(g.recvObj(prev));
    recvs.push(g.broadcastObj(rank === i % worldSize ? `b${i}` : null, i % worldSize));
    if (i % 10 === 0) recvs.push(g.allGatherObj(i + rank));
  }
  const got = await Promise.all(recvs);
  await Promise.all(sends);
  let bad = 0, k = 0;
  for (let i = 0; i < N; i++) {
    const m = got[k++] as { i: number; from: number };
    if (m.i !== i || m.from !== prev) bad++;
    if (got[k++] !== `b${i}`) bad++;
    if (i % 10 === 0) {
      const ag = got[k++] as number[];
      if (ag.some((v, r) => v !== i + r)) bad++;
    }
  }
  await close(g);
  return { bad, count: got.length };
}

async function twoSenders(): Promise<unknown> {
  const g = await open();
  const N = 50;
  let result: unknown = null;
  if (rank === 0) {
    const seq: Promise<unknown>[] = [];
    for (let i = 0; i < N; i++) seq.push(g.recvObj(2), g.recvObj(1));
    result = await Promise.all(seq);
  } else {
    await Promise.all([...Array(N).keys()].map((i) => g.sendObj(`${rank}:${i}`, 0)));
  }
  await close(g);
  return result;
}

async function recreate(): Promise<unknown> {
  const epochs: number[] = [];
  const seen: unknown[] = [];
  for (let round = 0; round < 3; round++) {
    const g = await open('again');
    epochs.push(g.epoch);
    const next = (rank + 1) % worldSize, prev = (rank + worldSize - 1) % worldSize;
    await g.sendObj(`round ${round} from ${rank}`, next);
    seen.push(await g.recvObj(prev));
    seen.push(await g.broadcastObj(rank === 0 ? `bcast ${round}` : null, 0));
    // Left unread on purpose: the next incarnation must not see these.
    await g.sendObj(`stale ${round}`, next);
    if (rank === 0) await g.broadcastObj(`stale bcast ${round}`, 0);
    await close(g);
  }
  return { epochs, seen };
}

async function keys(): Promise<unknown> {
  const g = await open();
  const N = Number(process.env.PG_MESSAGES ?? 10_000);
  const next = (rank + 1) % worldSize, prev = (rank + worldSize - 1) % worldSize;
  const BATCH = 500;
  for (let i = 0; i < N; i += BATCH) {
    const ops: Promise<unknown>[] = [];
    for (let j = i; j < Math.min(N, i + BATCH); j++) ops.push(g.sendObj(j, next), g.recvObj(prev));
    if (i % 2000 === 0) ops.push(g.broadcastObj(rank === 0 ? i : null, 0), g.allGatherObj(rank));
    await Promise.all(ops);
  }
  await g.barrier();
  await g.barrier();
  const live = await g.store.numKeys();
  await close(g);
  return { live };
}

async function hostile(): Promise<unknown> {
  const g = await open();
  const res: Record<string, unknown> = {};
  if (rank === 0) {
    // Message #0 to rank 1 is overwritten with garbage before rank 1 reads it (the barrier
    // orders the two), then a good message #1 follows.
    await g.sendObj('to be overwritten', 1);
    await g.store.set(`${g.keyPrefix}to/1/p/0/0`, new Uint8Array([0xde, 0xad, 0xbe, 0xef, 9, 9]));
    await g.sendObj('after the garbage', 1);
    await g.barrier();
  } else {
    await g.barrier();
  }
  if (rank === 1) {
    try {
      await g.recvObj(0);
      res.first = 'no error';
    } catch (e) {
      res.first = errInfo(e);
    }
    res.second = await g.recvObj(0);
  }
  await g.barrier();
  await close(g);
  return res;
}

async function die(): Promise<unknown> {
  const victim = Number(process.env.PG_VICTIM);
  const g = await open();
  await g.barrier();
  if (rank === victim) {
    // Give the others time to leave the barrier too: a store host dying inside it is a
    // different (also correct) failure, PEER_LOST in the barrier.
    await new Promise((r) => setTimeout(r, 300));
    process.kill(process.pid, 'SIGKILL');
  }
  const t0 = performance.now();
  try {
    // rank 0 also waits on a message from the victim; everyone else in a barrier.
    if (rank === (victim + 1) % worldSize) await g.recvObj(victim, { timeoutMs: 3000 });
    else await g.barrier({ timeoutMs: 3000 });
    return { error: null };
  } catch (e) {
    return { error: errInfo(e), elapsedMs: performance.now() - t0 };
  } finally {
    await g.destroy({ force: true });
    if (!owned) await g.store.close();
  }
}

/**
 * Rank 1 is SIGKILLed after a barrier; then the survivors leave it what nobody would ever read:
 * 1,000 messages to its mailbox, a 1 MiB broadcast it never acknowledges. They report the key
 * count, reclaim rank 1, wait for each other, send 100 more to it, and close.
 */
async function reclaim(): Promise<unknown> {
  const g = await open('reclaim');
  await g.barrier();
  if (rank === 1) process.kill(process.pid, 'SIGKILL');
  // The test sets this key once the victim has exited (and the store has seen its connections close).
  await g.store.get('reclaim-test/victim-exited', { timeoutMs: 30_000 });
  if (rank === 0) {
    await Promise.all(Array.from({ length: 1000 }, (_, i) => g.sendObj({ i }, 1)));
    await g.broadcastObj(new Uint8Array(1 << 20).fill(7), 0);
  } else {
    const v = await g.broadcastObj<Uint8Array>(new Uint8Array(0), 0);
    if (v.length !== 1 << 20) throw new Error(`broadcast of ${v.length} bytes`);
  }
  // Both survivors are past the broadcast (rank 2's ack is queued: let it go out).
  await new Promise((r) => setTimeout(r, 300));
  const queued = await g.store.numKeys();
  const held = await g.reclaim([1]);
  // Neither survivor closes before both have reclaimed: close() gives the mailbox up, and the
  // other, still retrying, would then take it too (two holders in turn, never at once).
  await g.store.set(`reclaim-test/reclaimed/${rank}`, '1');
  await g.store.get(`reclaim-test/reclaimed/${2 - rank}`, { timeoutMs: 10_000 });
  if (rank === 0) await Promise.all(Array.from({ length: 100 }, (_, i) => g.sendObj({ late: i }, 1)));
  const t0 = performance.now();
  await g.close({ timeoutMs: 3000 });
  return { queued, held, closeMs: performance.now() - t0 };
}

const scenarios: Record<string, () => Promise<unknown>> = { ops, inflight, twoSenders, recreate, keys, hostile, die, reclaim };
const run = scenarios[scenario];
if (!run) {
  console.error(`unknown scenario ${scenario}`);
  process.exit(2);
}
try {
  reportResult(await run());
  process.exit(0);
} catch (e) {
  console.error(`rank ${rank}:`, e);
  process.exit(1);
}
