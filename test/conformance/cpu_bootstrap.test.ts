// The cpu backend's second transport: a bootstrap with no store behind it, so every byte goes
// through broadcastBytes / sendBytes (world sizes 2 and 3; the CPU-group transport runs in cpu_ws*).
import { suite } from 'uvu';
import { defineConformance } from 'groupcomm/conformance';

await defineConformance({ plugin: 'cpu', worldSizes: [2, 3], bareBootstrap: true }, { suite });
