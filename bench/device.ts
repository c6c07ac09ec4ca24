/**
 * `groupcomm bench device`: nccl-tests-style rows (bench/nccl.ts) for a device backend, one
 * process per rank (one GPU per rank for cuda; ranks default to the GPU count). Without a usable
 * cuda backend it prints why and, unless `--plugin cuda` was asked for explicitly, benches the
 * cpu reference backend instead (impl 'cpu'), so the command always shows the device path
 * working; an explicit `--plugin cuda` on a machine without a GPU prints the reason and exits 0
 * with no rows. The rank processes are bench/device_worker.ts.
 */
import { loadBackend } from '../host/device/registry.js';
import { setting } from '../host/base/config.js';
import { startRanks } from './ranks.js';
import { TcpStoreServer } from '../host/store/index.js';
import type { Report, Row } from './report.js';
import { bytes, integer, list, oneOf, parse, OUTPUT_OPTIONS, PLOT_OPTION, UsageError, type Spec } from './args.js';
import type { CollOp } from './collective.js';
import { finishCollectives, ncclTable } from './nccl.js';
import { measureOverhead } from './device_overhead.js';

const DEVICE_OPS = ['allReduce', 'allGather', 'reduceScatter', 'broadcast'] as const;

export const DESCRIPTION = `Collectives of a device backend (cuda through NCCL, or the cpu reference backend), one
process per rank, in the manner of nccl-tests: sizes -b..-e by -f, -w warm-up and -n timed
calls per case (each call timed; rows give the median), the result of the first call checked.
allReduce and broadcast run in place, allGather and reduceScatter out of place. float32, sum,
root 0 (the worker's data). See docs/bench.md.`;

export const OPTIONS = {
  ranks: { short: 'g', arg: 'N', group: 'participation', parse: integer(1, 1024), help: 'ranks (default: the device count; 2 for the cpu backend)' },
  plugin: { arg: 'NAME', group: 'transport', help: 'device backend: cuda, cpu, or a module specifier (default: GROUPCOMM_DEVICE_PLUGIN, else cuda)' },
  ops: { arg: 'LIST', group: 'parameters', default: DEVICE_OPS.join(','), parse: list(oneOf<(typeof DEVICE_OPS)[number]>(DEVICE_OPS), DEVICE_OPS.join(', ')), help: 'collectives' },
  minbytes: { short: 'b', arg: 'SIZE', group: 'parameters', default: '1K', parse: bytes, help: 'smallest size' },
  maxbytes: { short: 'e', arg: 'SIZE', group: 'parameters', parse: bytes, help: 'largest size (default 16M for cpu, 256M for cuda)' },
  stepfactor: { short: 'f', arg: 'F', group: 'parameters', default: '4', parse: integer(2), help: 'multiply the size by F between cases' },
  datatype: { short: 'd', arg: 'TYPE', group: 'parameters', default: 'float32', parse: oneOf(['float32'] as const, { float: 'float32' }), help: 'element type (float32 only here)' },
  op: { short: 'o', arg: 'OP', group: 'parameters', default: 'sum', parse: oneOf(['sum'] as const), help: 'reduction (sum only here)' },
  root: { short: 'r', arg: 'RANK', group: 'parameters', default: '0', parse: oneOf(['0'] as const), help: 'root of broadcast (0 only here)' },
  iters: { short: 'n', arg: 'N', group: 'parameters', parse: integer(1, 1_000_000), help: 'timed calls per case (default 5 for cpu, 20 for cuda)' },
  warmup_iters: { short: 'w', arg: 'N', group: 'parameters', parse: integer(0, 1_000_000), help: 'untimed calls first (default 1 for cpu, 5 for cuda)' },
  overhead: { arg: 'N', group: 'parameters', default: '20000', parse: integer(0, 10_000_000), help: "cuda: the plugin's own cost per call, N calls per round of a 1-element allReduce through the plugin and through bare koffi, side by side (0: skip)" },
  ...OUTPUT_OPTIONS,
  ...PLOT_OPTION,
} satisfies Spec;

export async function run(argv: string[], report: Report): Promise<void> {
  const cmd = 'groupcomm bench device';
  const o = parse(OPTIONS, argv, cmd);
  const asked = o.plugin;
  // The same registry the library reads: a bad value is a CONFIG error here too, not a silent default.
  let plugin = asked ?? setting('GROUPCOMM_DEVICE_PLUGIN');
  let backend = await loadBackend(plugin);
  let probe = await backend.probe();
  if (!probe.available) {
    report.note(`device backend '${backend.name}' unavailable: ${probe.reason}`);
    if (asked) return;
    report.note("benching the cpu reference backend instead (impl 'cpu'); pass --plugin cuda to skip this");
    plugin = 'cpu';
    backend = await loadBackend(plugin);
    probe = await backend.probe();
  }
  if (backend.name === 'cuda' && o.overhead > 0) {
    const m = await measureOverhead(backend, { calls: o.overhead });
    if (typeof m === 'string') report.note(`per-call overhead not measured: ${m}`);
    else {
      report.note(`per-call overhead, 1-element float32 allReduce at world size 1, ${m.calls} calls, best of ${m.rounds} rounds${m.double ? ' (the CUDA/NCCL test double, stream work inline)' : ''}:`);
      report.note(`  plugin ${m.pluginUs.toFixed(2)} µs/call, bare koffi ncclAllReduce+cudaEventRecord+cudaEventQuery ${m.bareUs.toFixed(2)} µs/call: the plugin adds ${m.overheadUs.toFixed(2)} µs/call (${m.nccl})`);
    }
  }
  const devices = await backend.deviceCount();
  const ranks = o.ranks ?? (backend.capabilities.sharedDevice ? 2 : devices);
  if (!backend.capabilities.sharedDevice && ranks > devices) {
    report.note(`${ranks} ranks need ${ranks} devices; this machine has ${devices}`);
    return;
  }
  const cpu = backend.name === 'cpu';
  const minB = o.minbytes;
  const maxB = o.maxbytes ?? (cpu ? 1 << 24 : 1 << 28);
  if (maxB < minB) throw new UsageError(`${cmd}: -e must be >= -b (got ${minB} and ${maxB})`);
  const sizes: number[] = [];
  for (let s = minB; s <= maxB; s *= o.stepfactor) sizes.push(s);
  const args = {
    plugin, sizes,
    iters: o.iters ?? (cpu ? 5 : 20),
    warmup: o.warmup_iters ?? (cpu ? 1 : 5),
    ops: o.ops,
  };
  const impl = cpu ? 'cpu' : 'groupcomm';
  report.note(`${backend.name} backend, ${ranks} ranks, float32${cpu ? ' (host memory over its own CPU group)' : ''}; ${args.warmup} warm-up + ${args.iters} timed calls per case`);
  const table = ncclTable(report, { ops: o.ops as CollOp[], sizes, ranks: [ranks], dtype: 'float32', redop: 'sum', rounds: 1, impls: [impl] });
  const store = await TcpStoreServer.listen({ host: '127.0.0.1', port: 0 });
  try {
    const ranksRun = startRanks<{ rows: Omit<Row, 'bench'>[] }>(ranks, 'bench/device_worker', {
      env: { GC_BENCH: JSON.stringify({ ...args, port: store.port }) },
      timeoutMs: 30 * 60_000,
    });
    // Rank 0 prints each case as it finishes (@@ROW); the table shows it at once.
    let partial = '';
    ranksRun.children[0].stdout!.setEncoding('utf8').on('data', (d: string) => {
      partial += d;
      let nl;
      while ((nl = partial.indexOf('\n')) >= 0) {
        const line = partial.slice(0, nl);
        partial = partial.slice(nl + 1);
        if (!line.startsWith('@@ROW ')) continue;
        const row = JSON.parse(line.slice(6)) as Omit<Row, 'bench'>;
        report.record(row);
        table.row(row);
      }
    });
    const outs = await ranksRun.done;
    const bad = outs.filter((x) => x.code !== 0 || !x.result);
    if (bad.length) throw new Error(`bench device: ranks ${bad.map((x) => x.rank).join(', ')} failed:\n${bad.map((x) => x.stderr.slice(-2000)).join('\n')}`);
  } finally {
    await store.close();
  }
  finishCollectives(report, { rounds: 1, ours: [impl], plot: o.plot, title: `groupcomm bench device: ${backend.name}, ${ranks} ranks, float32` });
}
