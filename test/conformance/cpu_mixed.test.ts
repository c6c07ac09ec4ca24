// The cpu backend's conformance with Node and Bun ranks in one group (even ranks Node, odd Bun):
// the bootstrap traffic and the reductions must agree bit for bit across the two runtimes.
import { suite } from 'uvu';
import { defineConformance } from 'groupcomm/conformance';
import { bunPath } from '../helpers/ranks.js';

await defineConformance({ plugin: 'cpu', worldSizes: [3], runtime: 'mixed', bunPath: bunPath() }, { suite });
