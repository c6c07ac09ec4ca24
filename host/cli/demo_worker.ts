/**
 * One rank of `groupcomm demo` (host/cli/demo.ts starts these). It serves on a group —
 * broadcastTensorDict from the group's rank 0, then allReduce, checking both results every
 * step — and, when rank 0 says so in the broadcast dict, creates the next group while the
 * current one keeps serving, moves to it, and destroys the old one.
 *
 * Events go to the parent as `@@EVENT {json}` lines on stdout; failures go to stderr and the
 * exit code.
 */
import { StatelessGroupCoordinator } from '../coordinator/coordinator.js';
import { TcpStore } from '../store/index.js';
import { tensor, type CpuTensor, type DeviceBuffer, type Tensor } from '../core/tensor.js';
import { sleep } from '../base/deadline.js';
import { setting } from '../base/config.js';

const rank = Number(process.env.RANK);
// Set by demo.ts for each rank; declared (with their defaults) in base/config.ts.
const port = setting('GROUPCOMM_DEMO_STORE_PORT');
if (port === undefined) throw new Error('demo_worker: GROUPCOMM_DEMO_STORE_PORT is not set (groupcomm demo starts this file)');
const backend = setting('GROUPCOMM_DEMO_BACKEND');
const stepMs = setting('GROUPCOMM_DEMO_STEP_MS');
const steps = setting('GROUPCOMM_DEMO_STEPS');
const timeoutMs = setting('GROUPCOMM_DEMO_TIMEOUT_MS');
const t0 = setting('GROUPCOMM_DEMO_T0') ?? Date.now();
/** Device tensors ride along every this many steps (the cpu reference backend is store-bound). */
const deviceEvery = setting('GROUPCOMM_DEMO_DEVICE_EVERY');

function emit(ev: Record<string, unknown>): void {
  process.stdout.write(`@@EVENT ${JSON.stringify({ ...ev, rank, t: Date.now() - t0 })}\n`);
}

/** The groups of the demo; each phase's membership is fixed, the move between them is not. */
const PLAN: Record<string, { members: number[]; next?: string; trigger?: string }> = {
  A: { members: [0, 1, 2, 3], next: 'B', trigger: 'demo/scale-up' },
  B: { members: [0, 1, 2, 3, 4, 5], next: 'C', trigger: 'demo/scale-down' },
  C: { members: [0, 1, 2] },
};

const store = await TcpStore.create({ host: '127.0.0.1', port, timeoutMs });

async function join(name: string): Promise<StatelessGroupCoordinator> {
  const start = performance.now();
  const g = await StatelessGroupCoordinator.create({
    groupRanks: [PLAN[name].members], globalRank: rank, groupName: name, rendezvous: store, timeoutMs,
    // One device per rank for real devices; the cpu backend's single host device is shared.
    backend, useDeviceCommunicator: true, localRank: backend === 'cpu' ? 0 : rank,
  });
  emit({ ev: 'created', group: name, ms: Math.round(performance.now() - start), uniqueName: g.uniqueName });
  return g;
}

/** A float32 device tensor of `g`'s backend holding `values`. */
function onDevice(g: StatelessGroupCoordinator, values: Float32Array): Tensor {
  const t = g.empty([values.length], 'float32');
  g.backend!.copyFromHost(t.data as DeviceBuffer, new Uint8Array(values.buffer, values.byteOffset, values.byteLength));
  return t;
}

function fromDevice(g: StatelessGroupCoordinator, t: Tensor): Float32Array {
  const out = new Float32Array(t.shape.reduce((a, b) => a * b, 1));
  g.backend!.copyToHost(new Uint8Array(out.buffer), t.data as DeviceBuffer);
  return out;
}

interface Outcome { steps: number; ops: number; wrong: number; next?: Promise<StatelessGroupCoordinator> }

/**
 * Serves on `g` until its rank 0 says stop. Rank 0 says "next" once the parent has set the
 * group's trigger key and "stop" once its own next group is up, so every member leaves the loop
 * after the same step and the old group serves all the while the new one is being created.
 */
async function serve(g: StatelessGroupCoordinator, name: string): Promise<Outcome> {
  const plan = PLAN[name];
  const leader = g.rankInGroup === 0;
  let step = 0, ops = 0, wrong = 0, nextReady = false, servedWhileCreating = 0;
  let next: Promise<StatelessGroupCoordinator> | undefined;
  const reduced = new Float32Array(16);
  for (;;) {
    step++;
    let out: Record<string, unknown> | undefined;
    if (leader) {
      let wantNext = next !== undefined;
      if (!wantNext && plan.next && step > steps) wantNext = await store.check([plan.trigger!]);
      const stop = plan.next ? nextReady : step >= steps;
      if (step === steps) emit({ ev: 'steps', group: name, n: step });
      out = {
        step, next: wantNext, stop,
        x: tensor(Float32Array.from({ length: 8 }, (_, i) => step + i / 8)),
        ids: tensor(BigInt64Array.from([BigInt(step), -1n, 1n << 40n])),
        empty: tensor(new Int32Array(0), { shape: [0, 3] }),
        scalar: tensor(new Float64Array([step * 0.5]), { shape: [] }),
        meta: { group: name, members: plan.members, note: `step ${step}` },
      };
      if (step % deviceEvery === 0) out.dev = onDevice(g, Float32Array.from([step, -step]));
    }
    const d = await g.broadcastTensorDict(out, 0);
    ops++;
    if (!checkDict(d, step, name, plan.members)) wrong++;
    if (d.step !== step) wrong++; // members step in lockstep
    // The device tensor came over the device communicator, onto this rank's device.
    if (step % deviceEvery === 0) {
      const dv = d.dev as Tensor;
      const dvals = dv?.device === g.device ? fromDevice(g, dv) : undefined;
      if (!dvals || dvals[0] !== d.step || dvals[1] !== -(d.step as number)) wrong++;
      if (dv) g.free(dv);
    }
    if (d.next && !next && plan.next) {
      if (PLAN[plan.next].members.includes(rank)) {
        next = join(plan.next);
        next.then(() => { nextReady = true; }, () => {});
      } else next = Promise.resolve(undefined as unknown as StatelessGroupCoordinator);
      emit({ ev: 'creating', group: plan.next, from: name, step });
    }
    if (next && !d.stop) servedWhileCreating++;
    // allReduce: rank r contributes (r + 1) · step; everyone expects the sum over the members.
    // A CPU tensor (CPU group) and a device tensor (device communicator) every step.
    const expect = plan.members.reduce((s, r) => s + (r + 1) * step, 0);
    const sum = await g.allReduce(tensor(new Float32Array(16).fill((rank + 1) * step)));
    ops++;
    reduced.set((sum as CpuTensor).data as Float32Array);
    if (!reduced.every((v) => v === expect)) wrong++;
    if (step % deviceEvery === 0) {
      const mineDev = onDevice(g, new Float32Array(4).fill((rank + 1) * step));
      const sumDev = await g.allReduce(mineDev);
      ops++;
      if (!fromDevice(g, sumDev).every((v) => v === expect)) wrong++;
      g.free(mineDev);
      g.free(sumDev);
    }
    if (d.stop) break;
    if (stepMs > 0) await sleep(stepMs);
  }
  emit({ ev: 'stopped', group: name, steps: step, ops, wrong, servedWhileCreating });
  return { steps: step, ops, wrong, next };
}

function checkDict(d: Record<string, unknown>, _step: number, name: string, members: number[]): boolean {
  const step = d.step as number;
  const x = d.x as CpuTensor, ids = d.ids as CpuTensor, empty = d.empty as CpuTensor, scalar = d.scalar as CpuTensor;
  const meta = d.meta as { group: string; members: number[]; note: string };
  return typeof step === 'number' &&
    x?.dtype === 'float32' && x.shape.join() === '8' && [...(x.data as Float32Array)].every((v, i) => v === step + i / 8) &&
    ids?.dtype === 'int64' && (ids.data as BigInt64Array)[0] === BigInt(step) && (ids.data as BigInt64Array)[2] === 1n << 40n &&
    empty?.dtype === 'int32' && empty.shape.join() === '0,3' && empty.data.length === 0 &&
    scalar?.dtype === 'float64' && scalar.shape.length === 0 && (scalar.data as Float64Array)[0] === step * 0.5 &&
    meta?.group === name && meta.members.join() === members.join() && meta.note === `step ${step}`;
}

let exit = 0;
try {
  // Ranks that start in A serve there first; ranks 4 and 5 start straight into B.
  let name = rank < 4 ? 'A' : 'B';
  let g = await join(name);
  for (;;) {
    const o = await serve(g, name);
    const next = o.next ? await o.next : undefined;
    await g.destroy();
    emit({ ev: 'destroyed', group: name });
    if (!next) break;
    g = next;
    name = PLAN[name].next!;
  }
} catch (e) {
  const err = e as { code?: string; message?: string };
  process.stderr.write(`rank ${rank}: ${err.code ?? ''} ${err.message ?? String(e)}\n`);
  exit = 1;
} finally {
  await store.close();
}
process.exit(exit);
