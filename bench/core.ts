/**
 * `groupcomm bench core [--quick]`: the WebAssembly core against plain-TypeScript baselines in
 * the same run — tensor-dict frame encode+decode (32 entries) and reduce sum (float32, bfloat16,
 * int32 at 4 KiB, 1 MiB, 64 MiB).
 */
import type { Report } from './report.js';
import { parse, OUTPUT_OPTIONS, type Spec } from './args.js';
import { runFrame } from './core_frame.js';
import { runReduce } from './core_reduce.js';

export const DESCRIPTION = `The WebAssembly core against plain-TypeScript baselines in the same run: tensor-dict
frame encode+decode (32 entries) and reduce sum (float32, bfloat16, int32 at 4 KiB, 1 MiB,
64 MiB). Every implementation is checked against the baseline first (#wrong).`;

export const OPTIONS = {
  quick: { group: 'parameters', help: 'fewer sizes and repetitions (4 KiB and 1 MiB only)' },
  ...OUTPUT_OPTIONS,
} satisfies Spec;

export async function run(argv: string[], report: Report): Promise<void> {
  const { quick } = parse(OPTIONS, argv, 'groupcomm bench core');
  report.note(`runtime ${typeof (process.versions as Record<string, string>).bun === 'string' ? 'bun ' + (process.versions as Record<string, string>).bun : 'node ' + process.version}`);
  await runFrame(report, { quick });
  await runReduce(report, { quick });
}
