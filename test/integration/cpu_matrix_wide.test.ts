/**
 * The collective matrix (see cpu_matrix.test.ts) at world sizes 4, 5 and 8. Every collective,
 * dtype and op still runs; the sizes are fewer so that eight processes fit the time budget of a
 * 2-core machine: 0 and 7 elements (latency algorithms), and 1000 / 3000 elements (ring
 * paths, many segments) for a subset of dtypes.
 */
import { test } from 'uvu';
import { cpuMatrix } from '../helpers/scenarios.js';

const matrix = cpuMatrix;

test('world size 4: all collectives × 14 dtypes × 5 ops, sizes 0, 7, 1000 (+3000 for float32, bfloat16)', () => matrix(4, ['', '0,7,1000', '3000', 'float32,bfloat16']));
test('world size 5: all collectives × 14 dtypes × 5 ops, sizes 0, 7 (+1000 for float32, int8, float16)', () => matrix(5, ['', '0,7', '1000', 'float32,int8,float16']));
test('world size 8: all collectives × 14 dtypes × 5 ops, size 7 (+3000 for float32, bfloat16)', () => matrix(8, ['', '7', '3000', 'float32,bfloat16']));

test.run();
