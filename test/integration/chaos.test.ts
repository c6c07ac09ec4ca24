// A seeded slice of the chaos test (chaos.ts; the 100+ round run is `npm run chaos`): 4 ranks,
// Node and Bun mixed, a rank SIGKILLed (or stopping) at a random point each round; every
// survivor rejects naming it, and the survivors' new group computes the right result.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { currentRuntime } from '../helpers/ranks.js';
import { runChaos, summary } from './chaos.js';

const ROUNDS = 10;
const timeoutMs = 1_500;

test(`chaos slice: ${ROUNDS} seeded rounds, every survivor names the rank that died or stopped`, async () => {
  // Each host runtime drives its own seed, so the two runs of the suite cover different rounds.
  const seed = currentRuntime() === 'node' ? 1301 : 1302;
  const s = await runChaos({ rounds: ROUNDS, seed, timeoutMs, log: (l) => console.log(l) });
  console.log(summary(s, timeoutMs));
  for (const p of s.problems) console.log(`  ${p}`);
  assert.is(s.rounds, ROUNDS);
  assert.is(s.wrongResults, 0);
  assert.is(s.regroupFailures, 0, s.problems.join('\n'));
  assert.is(s.late, 0, 'a survivor rejected later than timeoutMs + 1 s');
  // The ≥ 99 % figure is the full run's (`npm run chaos`, 120 rounds: 338–341 reports). A slice
  // has ~30 reports, so 99 % of them would mean none may miss: the slice allows one, and still
  // fails on a systematic misnaming (a code path that names the wrong rank does so every time).
  assert.ok(s.reports - s.named <= 1, `${s.named}/${s.reports} named the victim:\n${s.problems.join('\n')}`);
});

test.run();
