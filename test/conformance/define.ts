/**
 * Turns the conformance suite into uvu tests for one plugin: one uvu suite per world size, one
 * test per case, all ranks of a world size run in real processes (spawnRanks) that talk through
 * groupcomm's TcpStoreServer on 127.0.0.1. A plugin that fails probe() prints the reason and every case is
 * registered with test.skip: counted as skipped, never as passed.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { loadBackend } from '../../host/device/registry.js';
import type { DeviceBackendV1 } from '../../host/device/types.js';
import { DTYPE_NAMES } from '../../host/core/tensor.js';
import { spawnRanks, type Runtime } from '../helpers/ranks.js';
import { conformanceCases } from './suite.js';
import { TcpStoreServer } from '../../host/store/index.js';

type Verdicts = { verdicts?: Record<string, string | null>; unavailable?: string };

export interface ConformanceSpec {
  /** Name or module specifier, as resolveBackend takes it. */
  plugin: string;
  /** World sizes to run; trimmed to the device count when the backend cannot share a device. */
  worldSizes: number[];
  runtime?: Runtime;
  timeoutMs?: number;
  /** Give the backend a bootstrap without a store behind it (the cpu backend then uses its bootstrap transport). */
  bareBootstrap?: boolean;
}

export async function defineConformance(spec: ConformanceSpec): Promise<void> {
  const backend: DeviceBackendV1 = await loadBackend(spec.plugin);
  const probe = await backend.probe();
  let sizes = spec.worldSizes;
  if (probe.available && !backend.capabilities.sharedDevice) {
    const n = await backend.deviceCount();
    sizes = sizes.filter((w) => w <= n);
    const dropped = spec.worldSizes.filter((w) => w > n);
    if (dropped.length) console.log(`# ${backend.name}: ${n} device(s); world sizes ${dropped.join(', ')} need one device per rank and are not run`);
  }
  if (!probe.available) console.log(`# ${backend.name} plugin unavailable, conformance cases skipped: ${probe.reason}`);
  const head = suite(`${backend.name} plugin`);
  head('probe() answers: available, or unavailable with a reason', () => {
    assert.ok(probe.available || probe.reason.length > 0, JSON.stringify(probe));
  });
  head('capabilities list only known dtypes', () => {
    for (const d of backend.capabilities.reduceDtypes) assert.ok(DTYPE_NAMES.includes(d), d);
  });
  head.run();

  for (const ws of probe.available ? sizes : spec.worldSizes) {
    const { cases, failures, unsupported } = conformanceCases(backend, ws);
    const variant = `${spec.runtime && spec.runtime !== 'same' ? `, ${spec.runtime} runtimes` : ''}${spec.bareBootstrap ? ', bare bootstrap' : ''}`;
    const s = suite(`${backend.name} conformance, world size ${ws}${variant}`);
    const ids = [...cases.map((c) => c.id), ...failures];
    if (!probe.available) {
      for (const id of ids) s.skip(id, () => {});
      s.run();
      continue;
    }
    const state: { results?: Verdicts[]; error?: unknown } = {};
    s.before(async () => {
      const store = await TcpStoreServer.listen({ host: '127.0.0.1', port: 0 });
      try {
        state.results = await spawnRanks<Verdicts>(ws, 'test/conformance/workers/conformance_worker', {
          runtime: spec.runtime ?? 'same',
          timeoutMs: spec.timeoutMs ?? 150_000,
          env: { GC_PLUGIN: spec.plugin, GC_STORE_PORT: String(store.port), GC_PREFIX: `ws${ws}`, GC_BARE_BOOTSTRAP: spec.bareBootstrap ? '1' : '0' },
        });
      } catch (e) {
        state.error = e;
      } finally {
        await store.close();
      }
    });
    for (const id of ids) {
      s(id, () => {
        if (state.error) throw state.error;
        for (const [rank, r] of state.results!.entries()) {
          if (r.unavailable) assert.unreachable(`rank ${rank}: plugin unavailable in the worker: ${r.unavailable}`);
          assert.ok(id in r.verdicts!, `rank ${rank} has no verdict for '${id}'`);
          const v = r.verdicts![id];
          if (v !== null) assert.unreachable(`rank ${rank}: ${v}`);
        }
      });
    }
    if (unsupported.length) {
      console.log(`# ${backend.name}, world size ${ws}: ${unsupported.length} case(s) skipped, their dtype is not in capabilities.reduceDtypes: ${unsupported.map((c) => c.id).join(', ')}`);
    }
    for (const c of unsupported) s.skip(`${c.id} (not in ${backend.name}'s capabilities.reduceDtypes)`, () => {});
    s.run();
  }
}
