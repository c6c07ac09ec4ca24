// The cpu backend's conformance with Node and Bun ranks in one group (even ranks Node, odd Bun):
// the bootstrap traffic and the reductions must agree bit for bit across the two runtimes.
import { defineConformance } from './define.js';

await defineConformance({ plugin: 'cpu', worldSizes: [3], runtime: 'mixed' });
