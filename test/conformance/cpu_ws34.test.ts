// The cpu reference backend against the whole conformance suite, world sizes 3 and 4, real processes.
import { defineConformance } from './define.js';

await defineConformance({ plugin: 'cpu', worldSizes: [3, 4] });
