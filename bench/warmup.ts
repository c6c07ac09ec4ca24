/**
 * The warm-up of the multi-rank bench workers (pg_worker, pg_floor_worker), and the number of
 * timed calls that follows it.
 *
 * Warm-up lasts PG_BENCH_WARMUP_SECONDS and at least PG_BENCH_WARMUP_CALLS calls: V8 keeps
 * compiling hot paths for thousands of calls, and with 4 ranks on 2 CPUs its compiler threads
 * compete with the ranks. Measured on the 2-vCPU VM (4-rank broadcast, slowest receiver): after
 * 2000 warm-up calls 144 µs, after 5000 110–127 µs, after 10000 97 µs; a warm-up count derived
 * from 10 cold pilot calls (~5 ms each) gave 650 µs. Every rank must make the same number of
 * collective calls, so the calls run in rounds of growing size and after each round rank 0 says
 * whether to go on (`agree`); the pace of the last round sets the timed count (at least 100).
 */
import { now } from './clock.js';

/** The bench's settings, from the environment bench/pg.ts gives each worker. */
export const warmupNs = Number(process.env.PG_BENCH_WARMUP_SECONDS ?? 1) * 1e9;
const warmupCalls = Number(process.env.PG_BENCH_WARMUP_CALLS ?? 5000);
export const budgetNs = Number(process.env.PG_BENCH_SECONDS ?? 2) * 1e9;

/**
 * Warms `fn` up and resolves with the number of timed calls to make. `agree(plan)` hands rank 0's
 * decision to every rank (0: another round, else the count); other ranks pass null. `minCalls`:
 * 0 for calls of milliseconds (1 MiB), warmed up by time alone, as the 1 MiB ping-pong is.
 */
export async function warmUp(
  rank: number, fn: () => Promise<unknown>, agree: (plan: number | null) => Promise<number>, hi = 20_000, minCalls = warmupCalls,
): Promise<number> {
  const warmEnd = now() + warmupNs;
  let calls = 0;
  for (let chunk = 10; ; chunk = Math.min(2 * chunk, 1000)) {
    const t0 = now();
    for (let i = 0; i < chunk; i++) await fn();
    calls += chunk;
    const per = Math.max(1, (now() - t0) / chunk);
    const more = now() < warmEnd || calls < minCalls;
    const n = await agree(rank === 0 ? (more ? 0 : Math.max(100, Math.min(hi, Math.floor(budgetNs / per)))) : null);
    if (n > 0) return n;
  }
}

/** Makes `n` calls of `fn`, one after another; resolves with each call's duration (ns). */
export async function timedCalls(n: number, fn: () => Promise<unknown>): Promise<number[]> {
  const durs: number[] = [];
  for (let i = 0; i < n; i++) {
    const a = now();
    await fn();
    durs.push(now() - a);
  }
  return durs;
}
