// The cpu reference backend against the whole conformance suite, world sizes 1-4, real processes.
import { defineConformance } from './define.js';

await defineConformance({ plugin: 'cpu', worldSizes: [1, 2, 3, 4] });
