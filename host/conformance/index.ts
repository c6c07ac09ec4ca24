/**
 * The device conformance suite, shipped as `groupcomm/conformance` so a plugin author runs it on
 * their own package. Every case (./cases.ts) runs on every rank of world sizes 1…N, each rank a
 * real process (./spawn.ts) talking through a TcpStoreServer on 127.0.0.1.
 *
 * Two ways in, neither tied to a test framework the plugin must depend on:
 * - `runConformance(spec)` resolves with a report (every case passed, failed or skipped, with
 *   the reason); `formatReport` prints it. Usable from any script or test runner.
 * - `defineConformance(spec, { suite })` registers the cases with a uvu-style `suite` function
 *   the caller passes in (uvu's own `suite`): one suite per world size, one test per case.
 *
 * A plugin whose probe() fails is reported, and every case is skipped (never passed); world
 * sizes above the device count are dropped with a note when the backend cannot share a device;
 * reductions on dtypes outside capabilities.reduceDtypes are skipped.
 */
import { DTYPE_NAMES } from '../core/tensor.js';
import { loadBackend } from '../device/registry.js';
import type { DeviceBackendV1, ProbeResult } from '../device/types.js';
import { TcpStoreServer } from '../store/index.js';
import { conformanceCases } from './cases.js';
import { variableCaseIds } from './variable.js';
import { spawnRanks, type Runtime, type WorkerResult } from './spawn.js';

export type { Runtime };

export interface ConformanceSpec {
  /** The plugin: a registered name ('cpu'), a package name, or a path (resolved against the working directory). */
  plugin: string;
  /** World sizes to run (default [1, 2, 3, 4]); trimmed to the device count when the backend cannot share a device. */
  worldSizes?: number[];
  /** Runtime of the rank processes (default: this process's). 'mixed': even ranks Node, odd ranks Bun. */
  runtime?: Runtime;
  /** Default timeoutMs of every operation in the ranks (default 30 s). */
  timeoutMs?: number;
  /** Bound on one world size's run, all ranks together (default 150 s). */
  deadlineMs?: number;
  /** Give the backend a bootstrap without a store behind it. */
  bareBootstrap?: boolean;
  /** Executables for the rank processes (default: this process's for its runtime, else `node` / `bun` on PATH). */
  nodePath?: string;
  bunPath?: string;
}

export type CaseStatus = 'passed' | 'failed' | 'skipped';
export interface CaseResult { id: string; status: CaseStatus; message?: string }
export interface WorldSizeReport { worldSize: number; cases: CaseResult[] }
export interface ConformanceReport {
  plugin: string;
  /** The backend's name. */
  backend: string;
  probe: ProbeResult;
  /** Why world sizes or cases were left out. */
  notes: string[];
  runs: WorldSizeReport[];
  passed: number;
  failed: number;
  skipped: number;
}

/** What a spec amounts to before anything runs: the backend, its probe, the world sizes and their cases. */
interface Plan {
  backend: DeviceBackendV1;
  probe: ProbeResult;
  notes: string[];
  sizes: { worldSize: number; ids: string[]; unsupported: string[] }[];
}

async function plan(spec: ConformanceSpec): Promise<Plan> {
  const backend = await loadBackend(spec.plugin);
  const probe = await backend.probe();
  const notes: string[] = [];
  let sizes = spec.worldSizes ?? [1, 2, 3, 4];
  if (!probe.available) notes.push(`${backend.name} plugin unavailable, conformance cases skipped: ${probe.reason}`);
  else if (!backend.capabilities.sharedDevice) {
    const n = await backend.deviceCount();
    const dropped = sizes.filter((w) => w > n);
    sizes = sizes.filter((w) => w <= n);
    if (dropped.length) notes.push(`${backend.name}: ${n} device(s); world sizes ${dropped.join(', ')} need one device per rank and are not run`);
  }
  return {
    backend, probe, notes,
    sizes: sizes.map((worldSize) => {
      const { cases, failures, unsupported } = conformanceCases(backend, worldSize);
      if (unsupported.length) {
        notes.push(`${backend.name}, world size ${worldSize}: ${unsupported.length} case(s) skipped, their dtype is not in capabilities.reduceDtypes${worldSize === 1 && backend.capabilities.premulSumRefusedAtOneRank?.length ? ' or their premulSum is in capabilities.premulSumRefusedAtOneRank' : ''}`);
      }
      // The optional variable-size collectives: run when the backend says it has them, else listed as skipped.
      const variable = variableCaseIds(worldSize);
      const has = backend.capabilities.variableCollectives === true;
      return {
        worldSize, ids: [...cases.map((c) => c.id), ...(has ? variable : []), ...failures],
        unsupported: [...unsupported.map((c) => `${c.id} (${backend.capabilities.reduceDtypes.includes(c.dtype) ? 'its premulSum is in' : 'not in'} ${backend.name}'s capabilities.${backend.capabilities.reduceDtypes.includes(c.dtype) ? 'premulSumRefusedAtOneRank' : 'reduceDtypes'})`),
          ...(has ? [] : variable.map((id) => `${id} (capabilities.variableCollectives is not set)`))],
      };
    }),
  };
}

/** Runs every rank of one world size; resolves with each rank's result. */
async function runWorldSize(spec: ConformanceSpec, worldSize: number): Promise<WorkerResult[]> {
  const server = await TcpStoreServer.listen({ host: '127.0.0.1', port: 0 });
  try {
    return await spawnRanks({
      plugin: spec.plugin, worldSize, storePort: server.port, prefix: `conformance/ws${worldSize}`,
      timeoutMs: spec.timeoutMs ?? 30_000, bareBootstrap: spec.bareBootstrap ?? false,
    }, { runtime: spec.runtime ?? 'same', nodePath: spec.nodePath, bunPath: spec.bunPath, deadlineMs: spec.deadlineMs ?? 150_000 });
  } finally {
    await server.close();
  }
}

/** A case's verdict over every rank: undefined when it passed everywhere, else why not. */
function verdict(results: WorkerResult[], id: string): string | undefined {
  const problems: string[] = [];
  results.forEach((r, rank) => {
    if (r.unavailable) problems.push(`rank ${rank}: plugin unavailable in the rank process: ${r.unavailable}`);
    else if (!r.verdicts || !(id in r.verdicts)) problems.push(`rank ${rank} has no verdict for '${id}'`);
    else if (r.verdicts[id] !== null) problems.push(`rank ${rank}: ${r.verdicts[id]}`);
  });
  return problems.length ? problems.join('\n') : undefined;
}

/** Runs the suite and reports every case; rejects only when the plugin cannot be loaded at all. */
export async function runConformance(spec: ConformanceSpec): Promise<ConformanceReport> {
  const p = await plan(spec);
  const runs: WorldSizeReport[] = [];
  for (const s of p.sizes) {
    const skipped = (id: string, message: string): CaseResult => ({ id, status: 'skipped', message });
    let cases: CaseResult[];
    if (!p.probe.available) {
      cases = s.ids.map((id) => skipped(id, 'plugin unavailable'));
    } else {
      let results: WorkerResult[] | undefined;
      let error: string | undefined;
      try { results = await runWorldSize(spec, s.worldSize); } catch (e) { error = (e as Error).message; }
      cases = s.ids.map((id) => {
        const why = error ?? verdict(results!, id);
        return why === undefined ? { id, status: 'passed' } : { id, status: 'failed', message: why };
      });
    }
    cases.push(...s.unsupported.map((id) => skipped(id, 'not in the backend\'s capabilities')));
    runs.push({ worldSize: s.worldSize, cases });
  }
  const all = runs.flatMap((r) => r.cases);
  const count = (st: CaseStatus) => all.filter((c) => c.status === st).length;
  return { plugin: spec.plugin, backend: p.backend.name, probe: p.probe, notes: p.notes, runs, passed: count('passed'), failed: count('failed'), skipped: count('skipped') };
}

/** The report as text: the notes, every failed case with its reason, and the totals. */
export function formatReport(r: ConformanceReport): string {
  const lines = [`conformance of device plugin '${r.plugin}' (backend ${r.backend})`, ...r.notes.map((n) => `# ${n}`)];
  for (const run of r.runs) {
    for (const c of run.cases) if (c.status === 'failed') lines.push(`FAIL world size ${run.worldSize}: ${c.id}\n  ${c.message!.replace(/\n/g, '\n  ')}`);
  }
  lines.push(`${r.passed} passed, ${r.failed} failed, ${r.skipped} skipped`);
  return lines.join('\n');
}

/** The parts of a uvu-style suite this module uses (uvu's `suite(name)` returns one). */
type Body = () => void | Promise<void>;
export interface SuiteLike {
  (name: string, fn: Body): void;
  before(fn: Body): void;
  skip(name: string, fn: Body): void;
  run(): void;
}

/**
 * Registers the suite with a uvu-style test framework: `defineConformance(spec, { suite })`
 * with uvu's `suite`. One suite per world size, one test per case (ranks run in the suite's
 * `before` hook); skipped cases are registered with `skip`, never as passing tests.
 */
export async function defineConformance(spec: ConformanceSpec, t: { suite: (name: string) => SuiteLike }): Promise<void> {
  const p = await plan(spec);
  for (const n of p.notes) console.log(`# ${n}`);
  const head = t.suite(`${p.backend.name} plugin`);
  head('probe() answers: available, or unavailable with a reason', () => {
    if (!(p.probe.available || p.probe.reason.length > 0)) throw new Error(`probe() answered ${JSON.stringify(p.probe)}`);
  });
  head('capabilities list only known dtypes', () => {
    for (const d of p.backend.capabilities.reduceDtypes) if (!DTYPE_NAMES.includes(d)) throw new Error(`unknown dtype ${d}`);
  });
  head.run();
  const variant = `${spec.runtime && spec.runtime !== 'same' ? `, ${spec.runtime} runtimes` : ''}${spec.bareBootstrap ? ', bare bootstrap' : ''}`;
  for (const s of p.sizes) {
    const su = t.suite(`${p.backend.name} conformance, world size ${s.worldSize}${variant}`);
    if (!p.probe.available) {
      for (const id of s.ids) su.skip(id, () => {});
    } else {
      const state: { results?: WorkerResult[]; error?: unknown } = {};
      su.before(async () => {
        try { state.results = await runWorldSize(spec, s.worldSize); } catch (e) { state.error = e; }
      });
      for (const id of s.ids) {
        su(id, () => {
          if (state.error) throw state.error;
          const why = verdict(state.results!, id);
          if (why !== undefined) throw new Error(why);
        });
      }
    }
    for (const id of s.unsupported) su.skip(id, () => {});
    su.run();
  }
}
