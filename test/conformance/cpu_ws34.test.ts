// The cpu reference backend against the whole conformance suite, world sizes 3 and 4, real processes.
import { suite } from 'uvu';
import { defineConformance } from 'groupcomm/conformance';

await defineConformance({ plugin: 'cpu', worldSizes: [3, 4] }, { suite });
