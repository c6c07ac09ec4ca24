/**
 * `groupcomm bench core [--quick]`: the WebAssembly core against plain-TypeScript baselines in
 * the same run — tensor-dict frame encode+decode (32 entries) and reduce sum (float32, bfloat16,
 * int32 at 4 KiB, 1 MiB, 64 MiB).
 */
import type { Report } from './report.js';
import { runFrame } from './core_frame.js';
import { runReduce } from './core_reduce.js';

export async function run(argv: string[], report: Report): Promise<void> {
  const quick = argv.includes('--quick');
  report.note(`runtime ${typeof (process.versions as Record<string, string>).bun === 'string' ? 'bun ' + (process.versions as Record<string, string>).bun : 'node ' + process.version}`);
  await runFrame(report, { quick });
  await runReduce(report, { quick });
}
