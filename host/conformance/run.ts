/**
 * One rank of the conformance suite: creates a communicator over a store bootstrap, runs every
 * case of ./cases.ts on it, and returns one verdict per case (null = passed, else what went
 * wrong on this rank). The failure cases each get a communicator of their own.
 */
import type { OpOptions } from '../base/deadline.js';
import { ErrorCode, isGroupcommError } from '../base/errors.js';
import { bytesOf, type CpuTensor, type Tensor } from '../core/tensor.js';
import { storeBootstrap, type BootstrapStore } from '../device/bootstrap.js';
import { emptyOn, freeTensor, fromDevice, subBuffer, toDevice } from '../device/tensors.js';
import type { DeviceBackendV1, DeviceBootstrap, DeviceCommunicatorV1, ReduceOp } from '../device/types.js';
import {
  compare, conformanceCases, expectedPremul, expectedReduce, FAILURE_CASES, inputValue, makeInput, SPLIT_CASE, splitColor, type Case,
} from './cases.js';
import { runVariableCases } from './variable.js';
import { premulSum, type ReduceOpSpec } from '../core/premul.js';

export interface RunContext {
  backend: DeviceBackendV1;
  rank: number;
  worldSize: number;
  deviceIndex: number;
  store: BootstrapStore;
  /** Distinguishes this run's keys from other runs on the same store. */
  prefix: string;
  timeoutMs: number;
  /** Hide the store behind the bootstrap (backends then see only broadcastBytes / sendBytes / barrier). */
  bareBootstrap?: boolean;
}

function bootstrapFor(ctx: RunContext, prefix: string, timeoutMs = ctx.timeoutMs): DeviceBootstrap {
  const b = storeBootstrap(ctx.store, { rank: ctx.rank, worldSize: ctx.worldSize, prefix, timeoutMs });
  return ctx.bareBootstrap ? { ...b, store: undefined } : b;
}

/** A case's reduce op: its name, or premulSum(factor). */
const opOf = (c: Case): ReduceOpSpec => (c.premul === undefined ? c.op! : premulSum(c.premul));
const expected = (c: Case, ws: number, i: number): number => (c.premul === undefined ? expectedReduce(c.dtype, c.op!, ws, i) : expectedPremul(c.dtype, c.premul, ws, i));

const sameBytes = (a: CpuTensor, b: CpuTensor) => Buffer.from(bytesOf(a)).equals(Buffer.from(bytesOf(b)));

/** What the aliasing contract says of a result: where it must be, given where the case asked for it. */
function checkResult(c: Case, got: Tensor | undefined, input: Tensor, out: Tensor | undefined): string | null {
  if (!got) return `${c.id}: resolved with no tensor`;
  if (c.mode === 'out' && got !== out) return `${c.id}: did not resolve with the out tensor it was given`;
  if (c.mode === 'inPlace' && got !== input) return `${c.id}: in place (out = input) did not resolve with the input`;
  if (c.mode === 'new' && (got === input || (got.data as { ptr?: bigint }).ptr === (input.data as { ptr?: bigint }).ptr)) {
    return `${c.id}: without out, the result must be a new tensor, not the input`;
  }
  return null;
}

async function runCase(ctx: RunContext, comm: DeviceCommunicatorV1, c: Case): Promise<string | null> {
  const { backend, rank, worldSize: ws, deviceIndex: dev } = ctx;
  const own: Tensor[] = [];
  const dt = (t: CpuTensor) => { const d = toDevice(backend, t, dev); own.push(d); return d; };
  const empty = (n: number) => { const d = emptyOn(backend, [n], c.dtype, dev); own.push(d); return d; };
  const host = (t: Tensor) => fromDevice(backend, t);
  /** The `out` option of the case's mode, for a result of n elements. */
  const outFor = (input: Tensor, n: number) => (c.mode === 'out' ? empty(n) : c.mode === 'inPlace' ? input : undefined);
  /** The result, checked against the mode; a result the communicator allocated is ours to free. */
  const result = (got: Tensor | undefined, input: Tensor, out: Tensor | undefined): Tensor | string => {
    const bad = checkResult(c, got, input, out);
    if (bad) return bad;
    if (c.mode === 'new') own.push(got!);
    return got!;
  };
  /** Inputs are never written (except the in-place case's, which is the result). */
  const unchanged = (input: Tensor, want: CpuTensor) => (c.mode !== 'inPlace' && !sameBytes(host(input), want) ? `${c.id}: the input was written` : null);
  try {
    switch (c.kind) {
      case 'allReduce': {
        const mine = makeInput(c.dtype, c.op, rank, c.count);
        const t = dt(mine);
        const out = outFor(t, c.count);
        const r = result(await comm.allReduce(t, { op: opOf(c), out }), t, out);
        if (typeof r === 'string') return r;
        return unchanged(t, mine) ?? compare(c.id, c.dtype, host(r), (i) => expected(c, ws, i), c.count);
      }
      case 'reduceScatter': {
        // Rank r's input is ws blocks; block b holds the values for element index b*count+i.
        const mine = makeInput(c.dtype, c.op, rank, c.count * ws);
        const inp = dt(mine);
        const out = outFor(inp, c.count);
        const r = result(await comm.reduceScatter(inp, { op: opOf(c), out }), inp, out);
        if (typeof r === 'string') return r;
        return unchanged(inp, mine) ?? compare(c.id, c.dtype, host(r), (i) => expected(c, ws, rank * c.count + i), c.count);
      }
      case 'allGather': {
        const mine = makeInput(c.dtype, undefined, rank, c.count);
        const inp = dt(mine);
        const out = outFor(inp, c.count * ws);
        const r = result(await comm.allGather(inp, { out }), inp, out);
        if (typeof r === 'string') return r;
        return unchanged(inp, mine) ?? compare(c.id, c.dtype, host(r), (j) => inputValue(c.dtype, undefined, Math.floor(j / Math.max(1, c.count)), j % Math.max(1, c.count)), c.count * ws);
      }
      case 'broadcast': {
        const mine = makeInput(c.dtype, undefined, rank, c.count);
        const t = dt(mine);
        const out = outFor(t, c.count);
        const r = result(await comm.broadcast(t, { src: c.root!, out }), t, out);
        if (typeof r === 'string') return r;
        return unchanged(t, mine) ?? compare(c.id, c.dtype, host(r), (i) => inputValue(c.dtype, undefined, c.root!, i), c.count);
      }
      case 'sendRecv': {
        // Pairs (0,1), (2,3), …: the even rank sends first, so blocking backends cannot deadlock.
        const peer = rank % 2 === 0 ? rank + 1 : rank - 1;
        if (peer >= ws) return null;
        const input = makeInput(c.dtype, undefined, rank, c.count);
        const mine = dt(input);
        const got = empty(c.count);
        if (rank % 2 === 0) { await comm.send(mine, peer); await comm.recv(got, peer); }
        else { if ((await comm.recv(got, peer)) !== got) return `${c.id}: recv did not resolve with its destination`; await comm.send(mine, peer); }
        return unchanged(mine, input) ?? compare(c.id, c.dtype, host(got), (i) => inputValue(c.dtype, undefined, peer, i), c.count);
      }
      case 'gather': {
        const mine = makeInput(c.dtype, undefined, rank, c.count);
        const inp = dt(mine);
        const out = rank === c.root ? outFor(inp, c.count * ws) : undefined;
        const got = await comm.gather(inp, { dst: c.root!, out });
        if (rank !== c.root) return got === undefined ? unchanged(inp, mine) : `${c.id}: non-root rank got a tensor back`;
        const r = result(got, inp, out);
        if (typeof r === 'string') return r;
        return unchanged(inp, mine) ?? compare(c.id, c.dtype, host(r), (j) => inputValue(c.dtype, undefined, Math.floor(j / c.count), j % c.count), c.count * ws);
      }
      case 'allToAll': {
        // Block j of rank r's input is element indices j*count.. of rank r: rank j must get it.
        const mine = makeInput(c.dtype, undefined, rank, c.count * ws);
        const inp = dt(mine);
        const out = outFor(inp, c.count * ws);
        const r = result(await comm.allToAll(inp, { out }), inp, out);
        if (typeof r === 'string') return r;
        return unchanged(inp, mine) ?? compare(c.id, c.dtype, host(r), (j) => inputValue(c.dtype, undefined, Math.floor(j / c.count), rank * c.count + (j % c.count)), c.count * ws);
      }
      case 'barrier': {
        // Rank 0 marks its arrival in the store before it enters: nobody may leave without it.
        const key = `${ctx.prefix}/barrier-arrived`;
        if (rank === 0) await ctx.store.set(key, '1', { timeoutMs: ctx.timeoutMs });
        await comm.barrier();
        if (!(await ctx.store.check([key], { timeoutMs: ctx.timeoutMs }))) return `${c.id}: rank ${rank} left the barrier before rank 0 entered it`;
        return null;
      }
    }
    return `${c.id}: unknown kind ${c.kind}`;
  } catch (e) {
    return `${c.id}: threw ${(e as Error).stack ?? e}`;
  } finally {
    for (const t of own) freeTensor(backend, t);
  }
}

function expectCode(e: unknown, code: string, what: string): string | null {
  if (isGroupcommError(e, code as never)) return null;
  return `${what}: expected ${code}, got ${isGroupcommError(e) ? e.code : ''} ${(e as Error)?.message ?? e}`;
}

/** null when `p` rejects with INVALID_ARGUMENT, else what happened instead. */
const refused = (p: Promise<unknown>, what: string) => p.then(() => `${what} succeeded`, (e) => expectCode(e, ErrorCode.INVALID_ARGUMENT, what));

async function runFailure(ctx: RunContext, name: string, k: number): Promise<string | null> {
  const { backend, rank, worldSize: ws, deviceIndex } = ctx;
  const boot = bootstrapFor(ctx, `${ctx.prefix}/f${k}`);
  const make = (timeoutMs = ctx.timeoutMs) => backend.createCommunicator({ rank, worldSize: ws, deviceIndex, bootstrap: boot, timeoutMs, name: `conformance-${k}` });
  const f32 = (v: number, n = 4) => toDevice(backend, { dtype: 'float32', shape: [n], device: 'cpu', data: new Float32Array(n).fill(v) }, deviceIndex);
  // Ranks that must stay silent park here; the rank under test releases them at the end.
  const sync = storeBootstrap(ctx.store, { rank, worldSize: ws, prefix: `${ctx.prefix}/s${k}`, timeoutMs: ctx.timeoutMs });
  const owned: Tensor[] = [];
  const t = (v: number, n?: number) => { const x = f32(v, n); owned.push(x); return x; };
  /** A tensor of n float32 at element `at` of `base` (pointer arithmetic, as on a device). */
  const view = (base: Tensor, at: number, n: number): Tensor => ({ ...base, shape: [n], data: subBuffer(base.data as never, at * 4, n * 4) });
  try {
    switch (name) {
      case FAILURE_CASES[0]: {
        const comm = await make();
        const base = t(1, Math.max(16, 4 * ws));
        const lo = view(base, 0, 8), mid = view(base, 4, 8);
        const err = (await refused(comm.allGather(t(1, 4), { out: t(0, 3) }), 'allGather with a short output')) ??
          (await refused(comm.broadcast(t(1), { src: ws }), 'broadcast from rank worldSize')) ??
          (await refused(comm.allReduce(t(1), { out: { ...t(0), dtype: 'int32' } }), 'allReduce into an int32 out')) ??
          (await refused(comm.allReduce(lo, { out: mid }), 'allReduce into an out that partly overlaps the input')) ??
          (await refused(comm.broadcast(lo, { src: 0, out: mid }), 'broadcast into an out that partly overlaps the input')) ??
          (await refused(comm.allToAll(view(base, 0, 4 * ws), { out: view(base, 0, 4 * ws) }), 'allToAll in place')) ??
          (await refused(comm.allGather(view(base, 0, 1), { out: view(base, 0, ws) }), 'allGather into an out that holds the input')) ??
          (await refused(comm.reduceScatter(view(base, 0, ws), { out: view(base, 0, 1) }), 'reduceScatter into an out inside the input')) ??
          (rank === 0 ? await refused(comm.gather(view(base, 0, 1), { dst: 0, out: view(base, 0, ws) }), 'gather into an out that holds the input') : null);
        if (err) return err;
        const e3 = await comm.allReduce(t(1, 4), { op: 'avg' as ReduceOp }).then((r) => { owned.push(r); return null; }, (e) => e);
        if (e3) return `avg on float32 should work: ${e3}`;
        // Nothing was sent: the communicator still agrees with its peers.
        const x = t(2);
        await comm.allReduce(x, { out: x });
        const r = compare('allReduce after bad calls', 'float32', fromDevice(backend, x), () => 2 * ws, 4);
        await comm.close();
        return r;
      }
      case FAILURE_CASES[1]: {
        const comm = await make();
        const xs = [1, 2, 3].map((v) => t(v * (rank + 1)));
        const ops = [comm.allReduce(xs[0], { out: xs[0] }), comm.allReduce(xs[1], { op: 'max', out: xs[1] }), comm.allReduce(xs[2], { op: 'min', out: xs[2] })];
        await Promise.all(ops);
        const sum = (ws * (ws + 1)) / 2;
        const r = compare('sum', 'float32', fromDevice(backend, xs[0]), () => sum, 4) ??
          compare('max', 'float32', fromDevice(backend, xs[1]), () => 2 * ws, 4) ??
          compare('min', 'float32', fromDevice(backend, xs[2]), () => 3, 4);
        await comm.close();
        return r;
      }
      case FAILURE_CASES[2]: {
        const comm = await make();
        await comm.close();
        await comm.close();
        await comm[Symbol.asyncDispose]();
        return await comm.allReduce(t(1)).then(() => 'allReduce after close succeeded', (e) => expectCode(e, ErrorCode.DESTROYED, 'allReduce after close'));
      }
      case FAILURE_CASES[3]: {
        // Only rank 0 tries to create; the others stay away.
        let r: string | null = null;
        if (rank === 0) {
          r = await make(1_500).then(async (c) => { await c.close(); return 'createCommunicator succeeded without the other ranks'; },
            (e) => expectCode(e, ErrorCode.TIMEOUT, 'createCommunicator with ranks missing'));
        }
        await sync.barrier();
        return r;
      }
      case FAILURE_CASES[4]: case FAILURE_CASES[5]: case FAILURE_CASES[6]: {
        const comm = await make();
        let r: string | null = null;
        if (rank === 0) {
          const x = t(0);
          let p: Promise<unknown>;
          if (name === FAILURE_CASES[4]) p = comm.recv(x, 1, { timeoutMs: 800 });
          else if (name === FAILURE_CASES[5]) p = comm.recv(x, 1, { signal: AbortSignal.timeout(300) });
          else { p = comm.recv(x, 1); setTimeout(() => void comm.abort('test abort'), 300); }
          const want = name === FAILURE_CASES[4] ? ErrorCode.TIMEOUT : ErrorCode.ABORTED;
          r = await p.then(() => 'recv from a silent rank succeeded', (e) => {
            const bad = expectCode(e, want, 'recv from a silent rank');
            if (!bad && want === ErrorCode.TIMEOUT && (e as { rank?: number }).rank !== 0) return `timeout error names rank ${(e as { rank?: number }).rank}, expected 0`;
            return bad;
          });
          if (!r) {
            // The communicator is dead now: the next call says so at once.
            r = await comm.allReduce(t(1)).then(() => 'allReduce after the failure succeeded', (e) => expectCode(e, ErrorCode.ABORTED, 'allReduce after the failure'));
          }
        }
        await sync.barrier();
        await comm.close();
        return r;
      }
      case SPLIT_CASE: return await runSplit(ctx, await make(), t);
    }
    return `unknown failure case ${name}`;
  } catch (e) {
    return `${name}: threw ${(e as Error).stack ?? e}`;
  } finally {
    for (const x of owned) freeTensor(backend, x);
  }
}

/**
 * SPLIT_CASE on one rank: colors from splitColor, key = -rank (children reverse the parent's
 * order). The child's rank, size and an allGather of parent ranks show the membership and order;
 * an allReduce checks its results; the parent still reduces after the child is closed.
 */
async function runSplit(ctx: RunContext, comm: DeviceCommunicatorV1, t: (v: number, n?: number) => Tensor): Promise<string | null> {
  const { backend, rank, worldSize: ws, deviceIndex } = ctx;
  const color = splitColor(ws, rank);
  const members = Array.from({ length: ws }, (_, r) => r).filter((r) => splitColor(ws, r) === color).sort((a, b) => b - a);
  let child: DeviceCommunicatorV1 | undefined;
  let refusedBare = false;
  try {
    child = await comm.split!({ color, key: -rank, name: 'conformance-split' });
  } catch (e) {
    if (!ctx.bareBootstrap) return `split threw ${(e as Error).stack ?? e}`;
    const bad = expectCode(e, ErrorCode.PLUGIN_UNAVAILABLE, 'split with a bare bootstrap');
    if (bad) return bad;
    refusedBare = true;
  }
  let r: string | null = null;
  if (refusedBare) {
    // Nothing was split: only the parent is checked below.
  } else if (color < 0) {
    if (child !== undefined) r = `split with color ${color} resolved with a communicator, expected undefined`;
  } else if (child) {
    const want = members.indexOf(rank);
    if (child.rank !== want || child.worldSize !== members.length) r = `child is rank ${child.rank}/${child.worldSize}, expected ${want}/${members.length} (members ${members.join(',')} by key)`;
    else {
      const mine = toDevice(backend, { dtype: 'int32', shape: [1], device: 'cpu', data: Int32Array.of(rank) }, deviceIndex);
      const x = t(rank + 1);
      try {
        const g = await child.allGather(mine);
        const got = fromDevice(backend, g);
        freeTensor(backend, g);
        await child.allReduce(x, { out: x });
        r = compare('allGather of parent ranks on the child', 'int32', got, (i) => members[i], members.length) ??
          compare('allReduce on the child', 'float32', fromDevice(backend, x), () => members.reduce((a, m) => a + m + 1, 0), 4);
      } finally {
        freeTensor(backend, mine);
      }
    }
    await child.close();
  } else {
    r = `split with color ${color} resolved with undefined, expected a communicator`;
  }
  // The parent keeps working with the child closed.
  const y = t(1);
  await comm.allReduce(y, { out: y });
  r ??= compare('allReduce on the parent after the split', 'float32', fromDevice(backend, y), () => ws, 4);
  await comm.close();
  return r;
}

/** Runs every case on this rank; returns verdicts by case id (null = passed). */
export async function runRank(ctx: RunContext, opts: OpOptions = {}): Promise<Record<string, string | null>> {
  const { cases, failures } = conformanceCases(ctx.backend, ctx.worldSize);
  const out: Record<string, string | null> = {};
  const boot = bootstrapFor(ctx, `${ctx.prefix}/main`, opts.timeoutMs ?? ctx.timeoutMs);
  const comm = await ctx.backend.createCommunicator({ rank: ctx.rank, worldSize: ctx.worldSize, deviceIndex: ctx.deviceIndex, bootstrap: boot, timeoutMs: ctx.timeoutMs, name: 'conformance' });
  for (const c of cases) out[c.id] = await runCase(ctx, comm, c);
  Object.assign(out, await runVariableCases(ctx.backend, comm, ctx.deviceIndex));
  await comm.close();
  let k = 0;
  for (const f of failures) out[f] = await runFailure(ctx, f, k++);
  return out;
}
