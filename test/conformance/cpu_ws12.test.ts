// The cpu reference backend against the whole conformance suite, world sizes 1 and 2, real
// processes (cpu_ws34 runs 3 and 4: split so that each file stays well under a minute).
import { suite } from 'uvu';
import { defineConformance } from 'groupcomm/conformance';

await defineConformance({ plugin: 'cpu', worldSizes: [1, 2] }, { suite });
