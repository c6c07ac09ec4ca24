// Every coordinator method on world sizes 1, 2, 3 and 4, one process per rank (Node and Bun
// ranks mixed in the 4-rank group). The worker checks each result and reports what failed.
import { test } from 'uvu';
import { assertClean, coordScenario } from '../helpers/scenarios.js';

for (const n of [1, 2, 3]) {
  test(`every method, world size ${n}`, async () => {
    assertClean(await coordScenario(n, 'methods'), 40);
  });
}

test('every method, world size 4, Node and Bun ranks in one group', async () => {
  assertClean(await coordScenario(4, 'methods', { runtime: 'mixed' }), 40);
});

test.run();
