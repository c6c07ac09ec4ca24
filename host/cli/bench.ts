/**
 * `groupcomm bench <target> [options]`: each target is `bench/<target>.ts`, exporting its option
 * table (OPTIONS, parsed by bench/args.ts), a DESCRIPTION for `--help`, and `run(argv, report)`.
 * The whole command line is checked before anything runs: `--help` prints the target's help and
 * exits 0; an unknown flag or a bad value exits 2 naming it; no target prints the usage and exits
 * 2 (as `groupcomm` does with no command), an unknown one exits 2 saying so. Exit 1: a run failed
 * or a row counted wrong results.
 */
import type { Report } from '../../bench/report.js';
import type { Spec } from '../../bench/args.js';

const TARGETS: Record<string, string> = {
  core: 'the WebAssembly core against plain TypeScript: frame codec, reduce kernels',
  store: 'the TCPStore-compatible store: latency, throughput, server memory (peer: torch TCPStore)',
  pg: 'the object channel (StatelessProcessGroup) (peer: a vLLM-like process group)',
  cpu: 'CpuGroup collectives, nccl-tests columns (peer: gloo)',
  device: 'device-backend collectives (cuda, or the cpu reference backend), nccl-tests columns',
  coordinator: 'group creation time against rank count; broadcastTensorDict',
};

interface BenchModule {
  OPTIONS: Spec;
  DESCRIPTION: string;
  run(argv: string[], report: Report): Promise<void>;
}

export function usage(): string {
  const lines = Object.entries(TARGETS).map(([k, v]) => `  ${k.padEnd(12)} ${v}`);
  return `usage: groupcomm bench <target> [options]\n\ntargets:\n${lines.join('\n')}\n\n` +
    'Run `groupcomm bench <target> --help` for its options; docs/bench.md explains the columns.';
}

export async function run(argv: string[]): Promise<number> {
  const [target, ...rest] = argv;
  if (target === '--help' || target === '-h' || target === 'help') {
    console.log(usage());
    return 0;
  }
  if (!target) {
    console.error(usage());
    return 2;
  }
  if (!(target in TARGETS)) {
    console.error(`groupcomm bench: unknown target '${target}' (one of ${Object.keys(TARGETS).join(', ')})\n\n${usage()}`);
    return 2;
  }
  const [{ Report }, args] = await Promise.all([import('../../bench/report.js'), import('../../bench/args.js')]);
  const mod = (await import(`../../bench/${target}.js`)) as BenchModule;
  const command = `groupcomm bench ${target}`;
  if (args.wantsHelp(rest)) {
    console.log(args.helpText(command, mod.DESCRIPTION, mod.OPTIONS));
    return 0;
  }
  const report = new Report(target);
  let json: string | undefined;
  try {
    json = (args.parse(mod.OPTIONS, rest, command) as { json?: string }).json;
    await mod.run(rest, report);
  } catch (e) {
    if (!args.isUsageError(e)) throw e;
    console.error(`${e.message}\nRun \`${command} --help\` for its options.`);
    return 2;
  }
  if (json) report.writeJson(json);
  return report.wrong() > 0 ? 1 : 0;
}
