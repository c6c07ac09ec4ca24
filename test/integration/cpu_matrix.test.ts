/**
 * Every collective × dtype × reduce op × element count (0, 1, 7, 1000, and 4000 for three
 * dtypes, which needs many ring segments at the 512-byte test chunk size), against results each
 * rank computes locally, at world sizes 1, 2 and 3 — one process per rank, one run per world
 * size. World sizes 4, 5 and 8 are in cpu_matrix_wide.test.ts.
 */
import { test } from 'uvu';
import { cpuMatrix } from '../helpers/scenarios.js';

const matrix = cpuMatrix;

for (const n of [1, 2, 3]) {
  test(`world size ${n}: all collectives × 14 dtypes × 5 ops × sizes 0, 1, 7, 1000 (+4000) match the local reference`, () => matrix(n));
}

test.run();
