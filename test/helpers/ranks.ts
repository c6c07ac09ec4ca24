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

/** Runs `n` ranks to completion; rejects with every failing rank's output. Returns results by rank. */
export function spawnRanks<T = unknown>(n: number, script: string, opts: ranks.SpawnOptions = {}): Promise<T[]> {
  return ranks.spawnRanks<T>(n, script, { compiledDir: TEST_TREE, ...opts });
}
