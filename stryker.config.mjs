// Mutation testing (issue 20): `npm run mutate -- <target>`. scripts/mutate.js picks the files
// to mutate and the tests that run against each mutant (STRYKER_* variables below), then runs
// Stryker with this config and writes reports/mutation/<name>.{json,html,txt}.
// Not part of `npm test`: a folder takes from many minutes to hours on 2 cores.
const env = (k, d) => process.env[k] ?? d;

/** @type {import('@stryker-mutator/api/core').PartialStrykerOptions} */
export default {
  mutate: JSON.parse(env('STRYKER_MUTATE', '["host/pg/codec.ts"]')),
  // Mutants are compiled once into the sandbox's build (mutation switching: each one is
  // switched on by an environment variable); each test run is then a plain Node run of the
  // compiled tests, through the repository's runner (non-zero exit = mutant killed).
  testRunner: 'command',
  commandRunner: { command: env('STRYKER_COMMAND', 'node scripts/test.js node pg_codec') },
  buildCommand: 'node scripts/mutate.js --build', // build:ts then build:test, in the sandbox
  coverageAnalysis: 'off',
  // Mutants in error-message and log text are skipped (they change wording, not behaviour).
  plugins: ['@stryker-mutator/*', './scripts/stryker-ignore-messages.mjs'],
  ignorers: ['messages'],
  // Shared machine: one mutant at a time by default; a run that hangs counts as killed (Timeout).
  concurrency: Number(env('STRYKER_CONCURRENCY', '1')),
  timeoutMS: Number(env('STRYKER_TIMEOUT_MS', '60000')),
  timeoutFactor: 2,
  // Instrumented files are not type-checked by the sandbox build.
  disableTypeChecks: 'host/**/*.ts',
  ignorePatterns: ['dist', 'dist-test', 'reports', 'bench-results', 'node_modules'],
  reporters: ['clear-text', 'progress', 'json', 'html'],
  jsonReporter: { fileName: env('STRYKER_JSON', 'reports/mutation/mutation.json') },
  htmlReporter: { fileName: env('STRYKER_HTML', 'reports/mutation/mutation.html') },
  // Stryker would rewrite tsconfig.json's outside paths with TypeScript's JS API, which the
  // native TypeScript 7 compiler here does not have; ours name no path outside the sandbox.
  tsconfigFile: 'no-tsconfig-rewrite.json',
  // scripts/mutate.js keeps one incremental file per run name and strips its survivors first:
  // the command runner reports no per-test coverage, so Stryker would otherwise reuse a
  // survivor's status after a new test was added. Killed mutants of unchanged code are reused.
  incremental: Boolean(process.env.STRYKER_INCREMENTAL_FILE),
  incrementalFile: env('STRYKER_INCREMENTAL_FILE', 'reports/stryker-incremental.json'),
  tempDirName: '.stryker-tmp',
  cleanTempDir: true,
};
