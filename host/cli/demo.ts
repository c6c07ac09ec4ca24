/**
 * `groupcomm demo`: elastic scale-up and scale-down on local ranks, one process per rank.
 *
 *   ranks 0-3 serve on group A = [0..3]  (broadcastTensorDict + allReduce of a CPU and of a device
 *   tensor, so the store channel, the CPU group and the device communicator all carry traffic)
 *   ranks 4, 5 start; group B = [0..5] is created while A keeps serving; traffic moves to B;
 *   A is destroyed; then C = [0..2] is created while B serves, B is destroyed, ranks 3-5 leave.
 *
 * The demo hosts the coordination store (port 0, so nothing can take it) where each group's
 * rank 0 publishes its ports, and tells the ranks when to scale through two keys. It prints a
 * timeline as events arrive, then a table per group, and exits non-zero on any wrong result,
 * any failed rank, or members that disagree on how many steps a group served.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { TcpStore, TcpStoreServer } from '../store/index.js';
import { resolveBackend } from '../device/registry.js';

export const summary = 'elastic scale-up/down demo on local ranks';

const USAGE = `usage: groupcomm demo [--backend cpu|cuda|MODULE] [--steps N] [--step-ms MS] [--timeout-ms MS]

  --backend     device backend of the device communicator (default cpu: the reference backend,
                host memory; cuda needs one GPU per rank, i.e. 6)
  --steps       steps each group serves before the next scaling event (default 30)
  --step-ms     pause between steps, so new ranks get CPU to start (default 5)
  --timeout-ms  per-operation and creation timeout in the ranks (default 30000)`;

interface Ev {
  ev: string; rank: number; t: number; group?: string; ms?: number; steps?: number; ops?: number;
  wrong?: number; servedWhileCreating?: number; n?: number; from?: string; step?: number; uniqueName?: string;
}

const MEMBERS: Record<string, number[]> = { A: [0, 1, 2, 3], B: [0, 1, 2, 3, 4, 5], C: [0, 1, 2] };
const fmtT = (ms: number) => `+${(ms / 1000).toFixed(2)}s`.padStart(8);
const span = (m: number[]) => `[${m[0]}..${m[m.length - 1]}]`;

export async function run(argv: string[]): Promise<number> {
  let v;
  try {
    v = parseArgs({
      args: argv, strict: true,
      options: {
        backend: { type: 'string' }, steps: { type: 'string' }, 'step-ms': { type: 'string' },
        'timeout-ms': { type: 'string' }, help: { type: 'boolean', short: 'h' },
      },
    }).values;
  } catch (e) {
    console.error(`${(e as Error).message}\n\n${USAGE}`);
    return 2;
  }
  if (v.help) { console.log(USAGE); return 0; }
  const backend = v.backend ?? 'cpu';
  const steps = Number(v.steps ?? 30);
  const stepMs = Number(v['step-ms'] ?? 5);
  const timeoutMs = Number(v['timeout-ms'] ?? 30_000);
  if (!(Number.isInteger(steps) && steps >= 1) || !(stepMs >= 0) || !(Number.isInteger(timeoutMs) && timeoutMs > 0)) { console.error(USAGE); return 2; }

  // Fail early and plainly when the backend cannot give every rank its own device.
  const be = await resolveBackend(backend);
  if (backend !== 'cpu') {
    const n = await be.deviceCount();
    if (n < 6) {
      console.error(`groupcomm demo: backend '${be.name}' has ${n} device(s); the demo runs 6 ranks with one device each (use --backend cpu)`);
      return 2;
    }
  }

  // The cpu reference backend moves device bytes through the group's store: correct, not fast.
  const deviceEvery = backend === 'cpu' ? 5 : 1;
  const t0 = Date.now();
  const server = await TcpStoreServer.listen({ host: '127.0.0.1', port: 0 });
  const store = await TcpStore.create({ host: '127.0.0.1', port: server.port, timeoutMs });
  const here = fileURLToPath(import.meta.url);
  const worker = path.join(path.dirname(here), 'demo_worker' + path.extname(here));
  const children = new Map<number, ChildProcess>();
  const events: Ev[] = [];
  const stderr = new Map<number, string>();
  let failed: string | undefined;
  let finish!: () => void;
  const allDone = new Promise<void>((r) => (finish = r));
  let running = 0;

  console.log(`groupcomm demo: elastic groups on local ranks, one process per rank (${process.versions.bun ? 'bun ' + process.versions.bun : 'node ' + process.versions.node})`);
  console.log(`  each step: broadcastTensorDict from rank 0 (metadata over the store channel, CPU tensors over the CPU group,`);
  console.log(`  a ${be.deviceType} tensor over the '${be.name}' device communicator${deviceEvery > 1 ? ` every ${deviceEvery}th step` : ''}), allReduce of a CPU tensor`);
  console.log(`  (and of a ${be.deviceType} tensor${deviceEvery > 1 ? ` every ${deviceEvery}th step` : ''}); every result is checked on every rank`);
  const line = (t: number, s: string) => console.log(`${fmtT(t)}  ${s}`);

  const start = (ranks: number[]) => {
    line(Date.now() - t0, `start rank${ranks.length > 1 ? 's' : ''} ${ranks.join(', ')}`);
    for (const rank of ranks) {
      const child = spawn(process.execPath, [worker], {
        env: {
          ...process.env, RANK: String(rank), GROUPCOMM_DEMO_STORE_PORT: String(server.port),
          GROUPCOMM_DEMO_BACKEND: backend, GROUPCOMM_DEMO_STEPS: String(steps), GROUPCOMM_DEMO_STEP_MS: String(stepMs),
          GROUPCOMM_DEMO_TIMEOUT_MS: String(timeoutMs), GROUPCOMM_DEMO_T0: String(t0),
          GROUPCOMM_DEMO_DEVICE_EVERY: String(deviceEvery),
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      children.set(rank, child);
      running++;
      let pending = '';
      child.stdout!.on('data', (d) => {
        const lines = (pending + d).split('\n');
        pending = lines.pop()!;
        for (const l of lines) if (l.startsWith('@@EVENT ')) onEvent(JSON.parse(l.slice(8)) as Ev);
      });
      child.stderr!.on('data', (d) => stderr.set(rank, (stderr.get(rank) ?? '') + d));
      child.on('close', (code, signal) => {
        running--;
        if ((code !== 0 || signal) && !failed) {
          failed = `rank ${rank} ${signal ? `was killed by ${signal}` : `exited with code ${code}`}`;
          for (const c of children.values()) if (c.exitCode === null && c.signalCode === null) c.kill('SIGTERM');
        }
        if (running === 0) finish();
      });
    }
  };

  const onEvent = (e: Ev) => {
    events.push(e);
    const g = e.group!;
    switch (e.ev) {
      case 'created': {
        const made = events.filter((x) => x.ev === 'created' && x.group === g);
        if (made.length === MEMBERS[g].length) {
          const slowest = Math.max(...made.map((x) => x.ms!));
          line(e.t, `group ${g} = ${span(MEMBERS[g])} created on all ${made.length} ranks (slowest rank ${slowest} ms)`);
        }
        break;
      }
      case 'steps':
        line(e.t, `${g} has served ${e.n} steps`);
        if (g === 'A') {
          start([4, 5]);
          void store.set('demo/scale-up', '1');
          line(Date.now() - t0, 'scale up: A keeps serving while B = [0..5] is created');
        } else if (g === 'B') {
          void store.set('demo/scale-down', '1');
          line(Date.now() - t0, 'scale down: B keeps serving while C = [0..2] is created');
        }
        break;
      case 'stopped':
        if (e.rank === MEMBERS[g][0]) {
          line(e.t, `traffic leaves ${g} after ${e.steps} steps` +
            (e.servedWhileCreating ? ` (${e.servedWhileCreating} of them while the next group was being created)` : ''));
        }
        break;
      case 'destroyed': {
        const gone = events.filter((x) => x.ev === 'destroyed' && x.group === g);
        if (gone.length === MEMBERS[g].length) line(e.t, `group ${g} destroyed on all ranks`);
        break;
      }
    }
  };

  const deadline = setTimeout(() => {
    failed ??= `the demo did not finish within ${Math.round((timeoutMs * 4) / 1000)} s`;
    for (const c of children.values()) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  }, timeoutMs * 4);
  const onSignal = () => {
    failed ??= 'interrupted';
    for (const c of children.values()) if (c.exitCode === null && c.signalCode === null) c.kill('SIGTERM');
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    start([0, 1, 2, 3]);
    await allDone;
  } finally {
    clearTimeout(deadline);
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await store.close();
    await server.close();
  }
  return report(events, failed, stderr, Date.now() - t0);
}

/** The closing table; returns the exit status. */
function report(events: Ev[], failed: string | undefined, stderr: Map<number, string>, totalMs: number): number {
  const problems: string[] = [];
  if (failed) problems.push(failed);
  console.log('\n  group  members  created (slowest rank)  steps  ops per rank  wrong');
  let totalOps = 0;
  for (const [g, members] of Object.entries(MEMBERS)) {
    const made = events.filter((e) => e.ev === 'created' && e.group === g);
    const stopped = events.filter((e) => e.ev === 'stopped' && e.group === g);
    const stepSet = new Set(stopped.map((e) => e.steps));
    const wrong = stopped.reduce((s, e) => s + e.wrong!, 0);
    totalOps += stopped.reduce((s, e) => s + e.ops!, 0);
    const ms = made.length ? `${Math.max(...made.map((e) => e.ms!))} ms` : '-';
    const st = stopped.length ? [...stepSet].join('/') : '-';
    const ops = stopped.length ? String(stopped[0].ops) : '-';
    console.log(`  ${g.padEnd(5)}  ${span(members).padEnd(7)}  ${ms.padStart(22)}  ${st.padStart(5)}  ${ops.padStart(12)}  ${String(wrong).padStart(5)}`);
    if (!failed && stopped.length !== members.length) problems.push(`group ${g}: ${stopped.length} of ${members.length} ranks finished`);
    if (stepSet.size > 1) problems.push(`group ${g}: members disagree on the number of steps (${[...stepSet].join(', ')})`);
    if (wrong) problems.push(`group ${g}: ${wrong} wrong result(s)`);
  }
  if (problems.length) {
    for (const [rank, text] of stderr) if (text.trim()) console.error(`--- rank ${rank} stderr\n${text.trimEnd()}`);
    console.error(`\ndemo FAILED: ${problems.join('; ')}`);
    return 1;
  }
  console.log(`\nall ${totalOps} operations returned the expected results; finished in ${(totalMs / 1000).toFixed(1)} s`);
  return 0;
}
