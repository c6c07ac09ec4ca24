/**
 * Multi-rank tests from real processes: bench/ranks.ts's spawner, pointed at the tests' compiled
 * tree. Worker scripts are repo-relative paths without extension
 * ('test/integration/workers/pg_worker'); Node children run `dist-test/<path>.js` (the tests'
 * build, tsconfig.test.json), Bun children run `<path>.ts`.
 */
import * as ranks from '../../bench/ranks.js';

export { currentRuntime, bunPath, reportResult, rankEnv } from '../../bench/ranks.js';
export type { Runtime, SpawnOptions, RankOutcome, Spawned } from '../../bench/ranks.js';

/** Where `npm run build:test` puts the compiled tests (never shipped). */
export const TEST_TREE = 'dist-test';

/** The file that runs `script` (repo-relative, no extension) on `runtime`. */
export function scriptFile(script: string, runtime: 'node' | 'bun'): string {
  return ranks.scriptFile(script, runtime, TEST_TREE);
}

/** Command + args that run `script` on `runtime`. */
export function commandFor(script: string, runtime: 'node' | 'bun'): [string, string[]] {
  return ranks.commandFor(script, runtime, TEST_TREE);
}

/** Starts the ranks and returns at once; `done` settles when all exit (or the deadline hits). */
export function startRanks<T = unknown>(n: number, script: string, opts: ranks.SpawnOptions = {}): ranks.Spawned<T> {
  return ranks.startRanks<T>(n, script, { compiledDir: TEST_TREE, ...opts });
}

/** How long the other ranks may go on once one rank failed (they usually fail at once too). */
const FAIL_FAST_GRACE_MS = 5000;

/**
 * Runs `n` ranks to completion; rejects with every failing rank's output. Returns results by
 * rank. Fails fast: once a rank exits non-zero (one not in `allowFailure`), the others get a
 * few seconds, then are killed, so a broken rank ends the test in seconds rather than at the
 * others' operation timeouts.
 */
export async function spawnRanks<T = unknown>(n: number, script: string, opts: ranks.SpawnOptions = {}): Promise<T[]> {
  const started = startRanks<T>(n, script, opts);
  const allowed = new Set(opts.allowFailure ?? []);
  let reaper: NodeJS.Timeout | undefined;
  started.children.forEach((c, rank) => c.on('exit', (code, signal) => {
    if (allowed.has(rank) || (code === 0 && !signal) || reaper) return;
    reaper = setTimeout(() => { for (const o of started.children) if (o.exitCode === null && o.signalCode === null) o.kill('SIGKILL'); }, FAIL_FAST_GRACE_MS);
  }));
  try {
    const outs = await started.done;
    const bad = outs.filter((o) => !allowed.has(o.rank) && (o.code !== 0 || o.result === undefined));
    if (bad.length) {
      const detail = bad.map((o) => `--- rank ${o.rank} exit=${o.code} signal=${o.signal}\n${o.stderr.slice(-4000)}${o.stdout.slice(-2000)}`).join('\n');
      throw new Error(`spawnRanks(${script}): ${bad.length} of ${n} ranks failed\n${detail}`);
    }
    return outs.map((o) => o.result as T);
  } finally {
    clearTimeout(reaper);
    // However the test ends, no rank outlives it.
    for (const o of started.children) if (o.exitCode === null && o.signalCode === null) o.kill('SIGKILL');
  }
}
