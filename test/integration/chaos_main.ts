// `npm run chaos [-- --rounds N --seed S --timeout-ms T --runtime mixed|node|bun]`: the full chaos
// run (chaos.ts), with its figures; exits 1 if fewer than 99 % of survivor reports named the victim.
import { parseArgs } from 'node:util';
import { runChaos, summary } from './chaos.js';

const { values } = parseArgs({
  options: {
    rounds: { type: 'string', default: '120' }, seed: { type: 'string', default: '13' },
    'timeout-ms': { type: 'string', default: '1500' }, runtime: { type: 'string', default: 'mixed' },
    quiet: { type: 'boolean', default: false },
  },
});
const timeoutMs = Number(values['timeout-ms']);
const t0 = Date.now();
const s = await runChaos({
  rounds: Number(values.rounds), seed: Number(values.seed), timeoutMs, runtime: values.runtime as 'mixed',
  log: values.quiet ? undefined : (l) => console.log(l),
});
console.log(summary(s, timeoutMs) + `; ${((Date.now() - t0) / 1000).toFixed(0)} s`);
for (const p of s.problems) console.log(`  ${p}`);
process.exit(s.named / s.reports >= 0.99 && s.regroupFailures === 0 && s.wrongResults === 0 ? 0 : 1);
