// Trivial worker used to test the rank harness itself.
import { rankEnv, reportResult } from '../../helpers/ranks.js';
const { rank, worldSize } = rankEnv();
if (process.argv.includes('--fail') && rank === 1) {
  console.error('rank 1 failing on purpose');
  process.exit(3);
}
reportResult({ rank, worldSize, runtime: typeof (process.versions as any).bun === 'string' ? 'bun' : 'node' });
