/**
 * The cuda plugin's own cost per call on the CUDA/NCCL test double (not a test; run
 * `node dist-test/test/cuda-double/overhead.js [N]` after `npm run build`, or with bun on the
 * .ts). The measurement is bench/device_overhead.ts, the one `groupcomm bench device --plugin
 * cuda` prints; this only builds the double and points the plugin's discovery at it.
 */
import { measureOverhead } from '../../bench/device_overhead.js';
import { CudaBackend } from '../../plugins/cuda/index.js';
import { useCudaDouble } from './build.js';

const d = useCudaDouble({ GCDOUBLE_INLINE_STREAMS: '1' });
if ('skip' in d) { console.log(d.skip); process.exit(0); }
const m = await measureOverhead(new CudaBackend(), { calls: Number(process.argv[2] ?? 20_000) });
if (typeof m === 'string') throw new Error(m);
console.log(`runtime ${typeof Bun === 'undefined' ? `node ${process.version}` : `bun ${Bun.version}`}, N=${m.calls}, best of ${m.rounds} rounds`);
console.log(`plugin allReduce (1 float32, awaited): ${m.pluginUs.toFixed(2)} µs/call`);
console.log(`bare koffi ncclAllReduce+record+query: ${m.bareUs.toFixed(2)} µs/call`);
console.log(`plugin overhead: ${m.overheadUs.toFixed(2)} µs/call`);
