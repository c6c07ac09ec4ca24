/**
 * `groupcomm bench device [--plugin cuda|cpu|SPEC] [--ranks N] [--iters N] [--warmup N]
 *   [--min-bytes B] [--max-bytes B] [--ops allReduce,allGather,reduceScatter,broadcast]`
 *
 * nccl-tests-style rows (size, count, type, op, time, algbw, busbw, #wrong) for a device
 * backend, one process per rank (one GPU per rank for cuda; ranks default to the GPU count).
 * Without a usable cuda backend it prints why and, unless `--plugin cuda` was asked for
 * explicitly, benches the cpu reference backend instead (impl 'cpu'), so the command always
 * shows the device path working; an explicit `--plugin cuda` on a machine without a GPU prints
 * the reason and exits 0 with no rows.
 */
import { loadBackend } from '../host/device/registry.js';
import { startRanks } from './ranks.js';
import { TcpStoreServer } from '../host/store/index.js';
import type { Report, Row } from './report.js';

function opt(argv: string[], name: string): string | undefined {
  const i = argv.indexOf(`--${name}`);
  if (i >= 0) return argv[i + 1];
  return argv.find((x) => x.startsWith(`--${name}=`))?.slice(name.length + 3);
}

export async function run(argv: string[], report: Report): Promise<void> {
  const asked = opt(argv, 'plugin');
  let plugin = asked ?? process.env.GROUPCOMM_DEVICE_PLUGIN ?? 'cuda';
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
  const devices = await backend.deviceCount();
  const ranks = Number(opt(argv, 'ranks') ?? (backend.capabilities.sharedDevice ? 2 : devices));
  if (!backend.capabilities.sharedDevice && ranks > devices) {
    report.note(`${ranks} ranks need ${ranks} devices; this machine has ${devices}`);
    return;
  }
  const cpu = backend.name === 'cpu';
  const minB = Number(opt(argv, 'min-bytes') ?? 1024);
  const maxB = Number(opt(argv, 'max-bytes') ?? (cpu ? 1 << 24 : 1 << 28));
  const sizes: number[] = [];
  for (let s = minB; s <= maxB; s *= 4) sizes.push(s);
  const args = {
    plugin, sizes,
    iters: Number(opt(argv, 'iters') ?? (cpu ? 5 : 20)),
    warmup: Number(opt(argv, 'warmup') ?? (cpu ? 1 : 5)),
    ops: (opt(argv, 'ops') ?? 'allReduce,allGather,reduceScatter,broadcast').split(','),
  };
  report.section(`${backend.name} backend, ${ranks} ranks, float32${cpu ? ' (host memory over its own CPU group)' : ''}`);
  const store = await TcpStoreServer.listen({ host: '127.0.0.1', port: 0 });
  try {
    const ranksRun = startRanks<{ rows: Omit<Row, 'bench'>[] }>(ranks, 'bench/device_worker', {
      env: { GC_BENCH: JSON.stringify({ ...args, port: store.port }) },
      timeoutMs: 30 * 60_000,
    });
    const outs = await ranksRun.done;
    const bad = outs.filter((o) => o.code !== 0 || !o.result);
    if (bad.length) throw new Error(`bench device: ranks ${bad.map((o) => o.rank).join(', ')} failed:\n${bad.map((o) => o.stderr.slice(-2000)).join('\n')}`);
    for (const row of outs[0].result!.rows) report.add(row);
  } finally {
    await store.close();
  }
}
