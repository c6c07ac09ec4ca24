#!/usr/bin/env node
// Mutation testing (issue 20): runs Stryker (stryker.config.mjs, its command runner, Node) on one
// layer's sources against the tests that cover it, and writes reports/mutation/<name>.{json,html,txt}
// (the .txt: score and every surviving mutant). Not part of `npm test`.
//   npm run mutate -- store|pg|cpu|coordinator|device|all
//   npm run mutate -- --files host/pg/codec.ts --tests pg_codec [--name codec]
// A whole folder takes long (every mutant runs its tests); on a shared machine run one file
// with a tight test selection. `--concurrency N` runs N mutants at once (default 1).
// Reruns are incremental: reports/mutation/<name>.incremental.json keeps the killed mutants of
// the last run; a rerun retests only mutants in changed code and the previous survivors (the
// command runner gives Stryker no per-test coverage, so survivors are always retested).
// `--full` ignores that file and tests every mutant. `--timeout-ms N` (default 60000) is the
// margin over twice the unmutated run's time after which a mutant's run counts as a Timeout.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/**
 * Each layer: what to mutate, and the test files (substrings of their paths, as scripts/test.js
 * takes them) that cover it, fastest and sharpest first (a mutant stops at the first failure).
 */
const TARGETS = {
  store: {
    files: ['host/store/**/*.ts'],
    tests: ['unit/store_table', 'unit/store_protocol', 'unit/store_prefix', 'unit/store', 'integration/store.test', 'golden'],
  },
  pg: {
    files: ['host/pg/**/*.ts'],
    tests: ['unit/pg_tracker', 'unit/pg_codec', 'unit/pg', 'unit/trust_decode', 'integration/pg.test', 'integration/pg_faults'],
  },
  cpu: {
    files: ['host/cpu/**/*.ts'],
    tests: ['unit/shm_ring_exact', 'unit/cpu_shm', 'unit/shm_ring_wrap', 'unit/cpu_', 'unit/ws1_out', 'integration/cpu_'],
  },
  coordinator: {
    files: ['host/coordinator/**/*.ts'],
    tests: ['unit/coord', 'unit/tensor_dict', 'unit/ws1_out', 'integration/coord.test', 'integration/coord_groups', 'integration/coord_faults'],
  },
  device: {
    files: ['host/device/**/*.ts'],
    tests: ['unit/device_check', 'unit/device_minifloat', 'unit/device_', 'unit/plugin_kit', 'unit/ws1_out', 'conformance/cpu_ws12'],
  },
};

function parse(argv) {
  const o = { targets: [], files: [], tests: [], name: undefined, concurrency: 1, full: false, timeoutMs: 60_000 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const list = () => argv[++i].split(',').filter(Boolean);
    if (a === '--files') o.files.push(...list());
    else if (a === '--tests') o.tests.push(...list());
    else if (a === '--name') o.name = argv[++i];
    else if (a === '--concurrency') o.concurrency = Number(argv[++i]);
    else if (a === '--full') o.full = true;
    else if (a === '--timeout-ms') o.timeoutMs = Number(argv[++i]);
    else if (a === 'all') o.targets.push(...Object.keys(TARGETS));
    else if (TARGETS[a]) o.targets.push(a);
    else throw new Error(`unknown argument ${a}; expected ${Object.keys(TARGETS).join('|')}|all, or --files F --tests T`);
  }
  return o;
}

/** Reads Stryker's JSON report and writes the score and the survivors as text. */
function summarize(name, jsonFile, txtFile, command) {
  const report = JSON.parse(fs.readFileSync(jsonFile, 'utf8'));
  const counts = {};
  const survivors = [];
  for (const [file, f] of Object.entries(report.files)) {
    for (const m of f.mutants) {
      counts[m.status] = (counts[m.status] ?? 0) + 1;
      if (m.status === 'Survived' || m.status === 'NoCoverage') {
        const at = `${path.relative(root, path.resolve(root, file))}:${m.location.start.line}:${m.location.start.column}`;
        survivors.push(`${at}  ${m.mutatorName}  ${JSON.stringify(m.replacement ?? '').slice(0, 100)}  (${m.status})`);
      }
    }
  }
  const detected = (counts.Killed ?? 0) + (counts.Timeout ?? 0);
  const valid = detected + (counts.Survived ?? 0) + (counts.NoCoverage ?? 0);
  const score = valid ? (100 * detected) / valid : 100;
  const lines = [
    `mutation score ${score.toFixed(1)} % (${detected} detected of ${valid}) — ${name}, ${new Date().toISOString()}`,
    `statuses: ${Object.entries(counts).map(([k, v]) => `${k} ${v}`).join(', ')}`,
    `tests run per mutant: ${command}`,
    `survivors (${survivors.length}):`,
    ...survivors.map((s) => `  ${s}`),
  ];
  fs.writeFileSync(txtFile, lines.join('\n') + '\n');
  console.log(lines.slice(0, 3).join('\n'));
  console.log(`survivors: ${survivors.length} (listed in ${path.relative(root, txtFile)})`);
  return score;
}

/**
 * Keeps only the detected mutants (Killed, Timeout) in an incremental report, so that Stryker
 * reuses those and retests everything else: a survivor may be killed by a test added since.
 */
function keepDetected(incrementalFile) {
  if (!fs.existsSync(incrementalFile)) return;
  const report = JSON.parse(fs.readFileSync(incrementalFile, 'utf8'));
  let kept = 0, dropped = 0;
  for (const f of Object.values(report.files ?? {})) {
    const before = f.mutants.length;
    f.mutants = f.mutants.filter((m) => m.status === 'Killed' || m.status === 'Timeout');
    kept += f.mutants.length;
    dropped += before - f.mutants.length;
  }
  fs.writeFileSync(incrementalFile, JSON.stringify(report));
  console.log(`[mutate] ${path.relative(root, incrementalFile)}: reusing ${kept} detected mutants, retesting ${dropped} others`);
}

/**
 * The command Stryker runs per mutant: each compiled test file that scripts/test.js would select
 * for `tests` (Node), run directly and chained with `&&`, so a mutant is killed by the first
 * failing file without running the rest (a hang is a Timeout). Each file runs under
 * scripts/uvu-strict.mjs, which also fails when uvu's summary shows a failed test but uvu exited 0
 * (a test that threw a non-Error).
 * In the order given: put the fastest, sharpest tests first.
 */
function testCommand(tests) {
  const base = path.join(root, 'dist-test', 'test');
  const all = [];
  const walk = (dir) => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith('.test.js')) all.push(path.relative(base, p));
    }
  };
  if (!fs.existsSync(base)) throw new Error('dist-test/ is missing: run `npm run build` first');
  walk(base);
  all.sort();
  const files = [];
  for (const t of tests) for (const f of all) if (f.includes(t) && !files.includes(f)) files.push(f);
  if (!files.length) throw new Error(`no compiled test file matches ${tests.join(', ')}`);
  return files.map((f) => `node scripts/uvu-strict.mjs ${JSON.stringify(path.join('dist-test', 'test', f))}`).join(' && ');
}

function run(name, files, tests, { concurrency, full, timeoutMs }) {
  if (!files.length || !tests.length) throw new Error('need files to mutate and tests to run');
  const outDir = path.join(root, 'reports', 'mutation');
  fs.mkdirSync(outDir, { recursive: true });
  const command = testCommand(tests);
  const json = path.join(outDir, `${name}.json`);
  const incremental = path.join(outDir, `${name}.incremental.json`);
  if (full) fs.rmSync(incremental, { force: true });
  else keepDetected(incremental);
  const env = {
    ...process.env,
    STRYKER_MUTATE: JSON.stringify(files),
    STRYKER_COMMAND: command,
    STRYKER_JSON: path.relative(root, json),
    STRYKER_HTML: path.relative(root, path.join(outDir, `${name}.html`)),
    STRYKER_CONCURRENCY: String(concurrency),
    STRYKER_TIMEOUT_MS: String(timeoutMs),
    STRYKER_INCREMENTAL_FILE: path.relative(root, incremental),
  };
  const stryker = path.join(root, 'node_modules', '.bin', 'stryker');
  const r = spawnSync(stryker, ['run', 'stryker.config.mjs'], { cwd: root, env, stdio: 'inherit' });
  if (r.status !== 0 || !fs.existsSync(json)) {
    console.error(`stryker failed for ${name} (exit ${r.status})`);
    return undefined;
  }
  return summarize(name, json, path.join(outDir, `${name}.txt`), command);
}

if (process.argv[2] === '--build') {
  // Stryker's buildCommand (run in its sandbox, not through a shell): the sources with every
  // mutant switched in, compiled as `npm run build:ts && npm run build:test` would. Type errors
  // do not stop it: the instrumented code widens inferred types (a function's result may become
  // `T | undefined`), which the tests that use it then trip over; tsc emits all the same.
  const cwd = process.cwd();
  const step = (args) => spawnSync('npm', ['run', '--silent', ...args], { cwd, stdio: 'inherit' }).status;
  step(['build:ts']);
  step(['build:test']); // on a type error it stops before linking dist-test/ to dist/: link here
  if (spawnSync('node', ['scripts/link-test-build.js'], { cwd, stdio: 'inherit' }).status !== 0) process.exit(1);
  const missing = ['dist/host/index.js', 'dist-test/test/unit/layers.test.js'].filter((f) => !fs.existsSync(path.join(cwd, f)));
  if (missing.length) {
    console.error(`mutate --build: ${missing.join(', ')} not emitted`);
    process.exit(1);
  }
  process.exit(0);
}

const o = parse(process.argv.slice(2));
let failed = false;
if (o.files.length) {
  failed = run(o.name ?? path.basename(o.files[0]).replace(/\W+/g, '_'), o.files, o.tests, o) === undefined;
} else {
  if (!o.targets.length) throw new Error(`name a target: ${Object.keys(TARGETS).join('|')}|all, or --files F --tests T`);
  for (const t of o.targets) failed = run(t, TARGETS[t].files, TARGETS[t].tests, o) === undefined || failed;
}
process.exit(failed ? 1 : 0);
