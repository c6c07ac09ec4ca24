/**
 * The device conformance suite: what every DeviceBackendV1 must do, checked against host
 * references computed here, independently of any backend (exact integer arithmetic with
 * BigInt, float64 for floating point, then the dtype's wrap-around or rounding tolerance;
 * integer avg truncates toward zero).
 *
 * A worker process per rank runs `runConformance` and reports one verdict per case; the test
 * file turns each case into one uvu test, so a failure names the case, the rank and the reason.
 * Cases (gloo-style parametrisation): every op × every dtype × every reduce op, odd element
 * counts plus a size sweep (0, 1, 1000, 65536), then failure behaviour: creation timeout,
 * op timeout, signal abort, abort(), destroy twice, bad arguments, issue order.
 */
import type { OpOptions } from '../../host/base/deadline.js';
import { isGroupcommError, ErrorCode } from '../../host/base/errors.js';
import { storeBootstrap, type BootstrapStore } from '../../host/device/bootstrap.js';
import { decodeMiniFloat, MINIFLOATS } from '../../host/device/elementwise.js';
import { emptyOn, fromDevice, freeTensor, toDevice } from '../../host/device/tensors.js';
import type { DeviceBackendV1, DeviceBootstrap, DeviceCommunicatorV1, ReduceOp } from '../../host/device/types.js';
import { REDUCE_OPS } from '../../host/device/types.js';
import { DTYPE_NAMES, arrayClassOf, bytesOf, type CpuTensor, type DType, type Tensor } from '../../host/core/tensor.js';
import { dtypeInfo } from '../../host/core/dtype.js';

export type Kind = 'allReduce' | 'reduceScatter' | 'allGather' | 'broadcast' | 'sendRecv' | 'gather' | 'allToAll';

export interface Case { id: string; kind: Kind; dtype: DType; op?: ReduceOp; count: number; root?: number }

export const FAILURE_CASES = [
  'bad arguments fail locally and the communicator keeps working',
  'operations issued without await run in call order',
  'destroy twice resolves; later operations fail with ERR_GROUPCOMM_DESTROYED',
  'createCommunicator times out when a rank never joins',
  'an operation past its timeoutMs fails with ERR_GROUPCOMM_TIMEOUT naming the rank, then the communicator is aborted',
  'an aborted signal fails the operation with ERR_GROUPCOMM_ABORTED',
  'abort() fails the operation in flight and every later one with ERR_GROUPCOMM_ABORTED',
] as const;
/** Failure cases that need a peer that stays silent (world size 2 and up). */
const NEEDS_PEER = new Set<string>(FAILURE_CASES.slice(3));

const isFloat = (d: DType) => dtypeInfo(d)!.isFloat;

/** Every case for a world size; cases the backend does not support are returned in `unsupported`. */
export function conformanceCases(backend: Pick<DeviceBackendV1, 'capabilities'>, worldSize: number): { cases: Case[]; failures: string[]; unsupported: Case[] } {
  const cases: Case[] = [];
  const unsupported: Case[] = [];
  const N = 13;
  for (const dtype of DTYPE_NAMES) {
    for (const kind of ['allReduce', 'reduceScatter'] as const) {
      for (const op of REDUCE_OPS) {
        if (op === 'avg' && dtype === 'bool') continue;
        const c = { id: `${kind} ${dtype} ${op} n=${N}`, kind, dtype, op, count: N };
        (backend.capabilities.reduceDtypes.includes(dtype) ? cases : unsupported).push(c);
      }
    }
    cases.push({ id: `allGather ${dtype} n=${N}`, kind: 'allGather', dtype, count: N });
    cases.push({ id: `broadcast ${dtype} n=${N} root=${worldSize - 1}`, kind: 'broadcast', dtype, count: N, root: worldSize - 1 });
    if (worldSize > 1) cases.push({ id: `send/recv ${dtype} n=${N}`, kind: 'sendRecv', dtype, count: N });
    cases.push({ id: `gather ${dtype} n=${N} root=0`, kind: 'gather', dtype, count: N, root: 0 });
    cases.push({ id: `allToAll ${dtype} n=${N}×${worldSize}`, kind: 'allToAll', dtype, count: N });
  }
  for (const count of [0, 1, 1000, 65536]) {
    cases.push({ id: `allReduce float32 sum n=${count}`, kind: 'allReduce', dtype: 'float32', op: 'sum', count });
    cases.push({ id: `allGather float32 n=${count}`, kind: 'allGather', dtype: 'float32', count });
  }
  cases.push({ id: `gather int32 n=13 root=${worldSize - 1}`, kind: 'gather', dtype: 'int32', count: 13, root: worldSize - 1 });
  const failures = FAILURE_CASES.filter((f) => worldSize > 1 || !NEEDS_PEER.has(f));
  return { cases, failures, unsupported };
}

// ---- inputs and references ------------------------------------------------------------------

/** Rank `rank`'s input value at element i, as an exact number; small so that results stay exact. */
export function inputValue(dtype: DType, op: ReduceOp | undefined, rank: number, i: number): number {
  const k = (rank * 3 + i) % 5;
  if (dtype === 'bool') return (rank + i) % 2;
  const signed = isFloat(dtype) || dtypeInfo(dtype)!.isSigned;
  if (op === 'prod') return signed ? [-1, 1, 2][(rank + i) % 3] : [1, 2][(rank + i) % 2];
  if (op === 'sum' && (dtype === 'int8' || dtype === 'uint8')) return 60 + k; // wraps at 4 ranks: checks C semantics
  if (dtype === 'float8_e4m3fn' || dtype === 'float8_e5m2') return signed ? k - 2 : k;
  return signed ? k - 2 : k;
}

function toBits(dtype: DType, v: number): number {
  // Inputs are small integers: their encodings are written down by hand, not computed by the
  // code under test (the unit test for elementwise pins the encoder separately).
  const table: Record<string, Record<number, number>> = {
    float16: { [-2]: 0xc000, [-1]: 0xbc00, 0: 0, 1: 0x3c00, 2: 0x4000, 3: 0x4200, 4: 0x4400 },
    bfloat16: { [-2]: 0xc000, [-1]: 0xbf80, 0: 0, 1: 0x3f80, 2: 0x4000, 3: 0x4040, 4: 0x4080 },
    float8_e4m3fn: { [-2]: 0xc0, [-1]: 0xb8, 0: 0, 1: 0x38, 2: 0x40, 3: 0x44, 4: 0x48 },
    float8_e5m2: { [-2]: 0xc0, [-1]: 0xbc, 0: 0, 1: 0x3c, 2: 0x40, 3: 0x42, 4: 0x44 },
  };
  const b = table[dtype]?.[v];
  if (b === undefined) throw new Error(`no hand encoding of ${v} for ${dtype}`);
  return b;
}

/** A CPU tensor of `count` inputs for `rank` (block `b` of a multi-block input uses element index b*count+i). */
export function makeInput(dtype: DType, op: ReduceOp | undefined, rank: number, count: number, offset = 0): CpuTensor {
  const C = arrayClassOf(dtype);
  const a = new C(count);
  for (let i = 0; i < count; i++) {
    const v = inputValue(dtype, op, rank, offset + i);
    if (MINIFLOATS[dtype as keyof typeof MINIFLOATS]) (a as Uint16Array)[i] = toBits(dtype, v);
    else if (dtype === 'int64' || dtype === 'uint64') (a as BigInt64Array)[i] = BigInt(v);
    else (a as Int32Array)[i] = v;
  }
  return { dtype, shape: [count], device: 'cpu', data: a };
}

/** Element i of a CPU tensor as a number (exact for every value these tests produce). */
export function valueAt(t: CpuTensor, i: number): number {
  const m = MINIFLOATS[t.dtype as keyof typeof MINIFLOATS];
  const raw = (t.data as unknown as ArrayLike<number | bigint>)[i];
  return m ? decodeMiniFloat(Number(raw), m) : Number(raw);
}

function wrapInt(dtype: DType, v: bigint): number {
  const bits = dtypeInfo(dtype)!.itemSize * 8;
  return Number(dtypeInfo(dtype)!.isSigned ? BigInt.asIntN(bits, v) : BigInt.asUintN(bits, v));
}

/** The reduction of every rank's element i, per the contract (wrap for integers, exact for floats). */
export function expectedReduce(dtype: DType, op: ReduceOp, worldSize: number, i: number): number {
  const vals = Array.from({ length: worldSize }, (_, r) => inputValue(dtype, op, r, i));
  if (dtype === 'bool') return (op === 'sum' || op === 'max') ? Math.max(...vals) : Math.min(...vals);
  switch (op) {
    case 'max': return Math.max(...vals);
    case 'min': return Math.min(...vals);
    case 'avg': {
      const sum = vals.reduce((a, b) => a + b, 0);
      return isFloat(dtype) ? sum / worldSize : Math.trunc(sum / worldSize); // integers: NCCL's SumPostDiv truncates
    }
    case 'sum': return isFloat(dtype) ? vals.reduce((a, b) => a + b, 0) : wrapInt(dtype, vals.reduce((a, b) => a + BigInt(b), 0n));
    case 'prod': return isFloat(dtype) ? vals.reduce((a, b) => a * b, 1) : wrapInt(dtype, vals.reduce((a, b) => a * BigInt(b), 1n));
  }
}

/** Relative tolerance: exact for integers; about half an ulp of the dtype for floats (avg rounds). */
const TOL: Partial<Record<DType, number>> = { float32: 1e-6, float64: 1e-12, float16: 1e-3, bfloat16: 8e-3, float8_e4m3fn: 0.07, float8_e5m2: 0.13 };

function close(dtype: DType, got: number, want: number): boolean {
  const tol = TOL[dtype] ?? 0;
  return tol === 0 ? got === want : Math.abs(got - want) <= tol * Math.max(1, Math.abs(want));
}

function compare(what: string, dtype: DType, got: CpuTensor, want: (i: number) => number, n: number): string | null {
  for (let i = 0; i < n; i++) {
    const g = valueAt(got, i), w = want(i);
    if (!close(dtype, g, w)) return `${what}: element ${i} is ${g}, expected ${w}`;
  }
  return null;
}

// ---- running --------------------------------------------------------------------------------

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

async function runCase(ctx: RunContext, comm: DeviceCommunicatorV1, c: Case): Promise<string | null> {
  const { backend, rank, worldSize: ws, deviceIndex: dev } = ctx;
  const own: Tensor[] = [];
  const dt = (t: CpuTensor) => { const d = toDevice(backend, t, dev); own.push(d); return d; };
  const empty = (n: number) => { const d = emptyOn(backend, [n], c.dtype, dev); own.push(d); return d; };
  const host = (t: Tensor) => fromDevice(backend, t);
  try {
    switch (c.kind) {
      case 'allReduce': {
        const t = dt(makeInput(c.dtype, c.op, rank, c.count));
        await comm.allReduce(t, { op: c.op });
        return compare(c.id, c.dtype, host(t), (i) => expectedReduce(c.dtype, c.op!, ws, i), c.count);
      }
      case 'reduceScatter': {
        // Rank r's input is ws blocks; block b holds the values for element index b*count+i.
        const inp = dt(makeInput(c.dtype, c.op, rank, c.count * ws));
        const out = empty(c.count);
        await comm.reduceScatter(out, inp, { op: c.op });
        return compare(c.id, c.dtype, host(out), (i) => expectedReduce(c.dtype, c.op!, ws, rank * c.count + i), c.count);
      }
      case 'allGather': {
        const out = empty(c.count * ws);
        await comm.allGather(out, dt(makeInput(c.dtype, undefined, rank, c.count)));
        return compare(c.id, c.dtype, host(out), (j) => inputValue(c.dtype, undefined, Math.floor(j / Math.max(1, c.count)), j % Math.max(1, c.count)), c.count * ws);
      }
      case 'broadcast': {
        const t = dt(makeInput(c.dtype, undefined, rank, c.count));
        await comm.broadcast(t, c.root!);
        return compare(c.id, c.dtype, host(t), (i) => inputValue(c.dtype, undefined, c.root!, i), c.count);
      }
      case 'sendRecv': {
        // Pairs (0,1), (2,3), …: the even rank sends first, so blocking backends cannot deadlock.
        const peer = rank % 2 === 0 ? rank + 1 : rank - 1;
        if (peer >= ws) return null;
        const mine = dt(makeInput(c.dtype, undefined, rank, c.count));
        const got = empty(c.count);
        if (rank % 2 === 0) { await comm.send(mine, peer); await comm.recv(got, peer); }
        else { await comm.recv(got, peer); await comm.send(mine, peer); }
        return compare(c.id, c.dtype, host(got), (i) => inputValue(c.dtype, undefined, peer, i), c.count);
      }
      case 'gather': {
        const out = rank === c.root ? empty(c.count * ws) : undefined;
        const r = await comm.gather(out, dt(makeInput(c.dtype, undefined, rank, c.count)), c.root!);
        if (rank !== c.root) return r === undefined ? null : `${c.id}: non-root rank got a tensor back`;
        return compare(c.id, c.dtype, host(out!), (j) => inputValue(c.dtype, undefined, Math.floor(j / c.count), j % c.count), c.count * ws);
      }
      case 'allToAll': {
        // Block j of rank r's input is element indices j*count.. of rank r: rank j must get it.
        const out = empty(c.count * ws);
        await comm.allToAll(out, dt(makeInput(c.dtype, undefined, rank, c.count * ws)));
        return compare(c.id, c.dtype, host(out), (j) => inputValue(c.dtype, undefined, Math.floor(j / c.count), rank * c.count + (j % c.count)), c.count * ws);
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

async function runFailure(ctx: RunContext, name: string, k: number): Promise<string | null> {
  const { backend, rank, worldSize: ws, deviceIndex } = ctx;
  const boot = bootstrapFor(ctx, `${ctx.prefix}/f${k}`);
  const make = (timeoutMs = ctx.timeoutMs) => backend.createCommunicator({ rank, worldSize: ws, deviceIndex, bootstrap: boot, timeoutMs, name: `conformance-${k}` });
  const f32 = (v: number, n = 4) => toDevice(backend, { dtype: 'float32', shape: [n], device: 'cpu', data: new Float32Array(n).fill(v) }, deviceIndex);
  // Ranks that must stay silent park here; the rank under test releases them at the end.
  const sync = storeBootstrap(ctx.store, { rank, worldSize: ws, prefix: `${ctx.prefix}/s${k}`, timeoutMs: ctx.timeoutMs });
  const owned: Tensor[] = [];
  const t = (v: number, n?: number) => { const x = f32(v, n); owned.push(x); return x; };
  try {
    switch (name) {
      case FAILURE_CASES[0]: {
        const comm = await make();
        const err = await comm.allGather(t(0, 3), t(1, 4)).then(() => null, (e) => expectCode(e, ErrorCode.INVALID_ARGUMENT, 'allGather with a short output'));
        if (err) return err;
        const e2 = await comm.broadcast(t(1), ws).then(() => null, (e) => expectCode(e, ErrorCode.INVALID_ARGUMENT, 'broadcast from rank worldSize'));
        if (e2) return e2;
        const e3 = await comm.allReduce(t(1, 4), { op: 'avg' as ReduceOp }).then(() => null, (e) => e);
        if (e3) return `avg on float32 should work: ${e3}`;
        const x = t(2);
        await comm.allReduce(x);
        const r = compare('allReduce after bad calls', 'float32', fromDevice(backend, x), () => 2 * ws, 4);
        await comm.destroy();
        return r;
      }
      case FAILURE_CASES[1]: {
        const comm = await make();
        const xs = [1, 2, 3].map((v) => t(v * (rank + 1)));
        const ops = [comm.allReduce(xs[0]), comm.allReduce(xs[1], { op: 'max' }), comm.allReduce(xs[2], { op: 'min' })];
        await Promise.all(ops);
        const sum = (ws * (ws + 1)) / 2;
        const r = compare('sum', 'float32', fromDevice(backend, xs[0]), () => sum, 4) ??
          compare('max', 'float32', fromDevice(backend, xs[1]), () => 2 * ws, 4) ??
          compare('min', 'float32', fromDevice(backend, xs[2]), () => 3, 4);
        await comm.destroy();
        return r;
      }
      case FAILURE_CASES[2]: {
        const comm = await make();
        await comm.destroy();
        await comm.destroy();
        return await comm.allReduce(t(1)).then(() => 'allReduce after destroy succeeded', (e) => expectCode(e, ErrorCode.DESTROYED, 'allReduce after destroy'));
      }
      case FAILURE_CASES[3]: {
        // Only rank 0 tries to create; the others stay away.
        let r: string | null = null;
        if (rank === 0) {
          r = await make(1_500).then(async (c) => { await c.destroy(); return 'createCommunicator succeeded without the other ranks'; },
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
        await comm.destroy();
        return r;
      }
    }
    return `unknown failure case ${name}`;
  } catch (e) {
    return `${name}: threw ${(e as Error).stack ?? e}`;
  } finally {
    for (const x of owned) freeTensor(backend, x);
  }
}

/** Runs every case on this rank; returns verdicts by case id (null = passed). */
export async function runConformance(ctx: RunContext, opts: OpOptions = {}): Promise<Record<string, string | null>> {
  const { cases, failures } = conformanceCases(ctx.backend, ctx.worldSize);
  const out: Record<string, string | null> = {};
  const boot = bootstrapFor(ctx, `${ctx.prefix}/main`, opts.timeoutMs ?? ctx.timeoutMs);
  const comm = await ctx.backend.createCommunicator({ rank: ctx.rank, worldSize: ctx.worldSize, deviceIndex: ctx.deviceIndex, bootstrap: boot, timeoutMs: ctx.timeoutMs, name: 'conformance' });
  for (const c of cases) out[c.id] = await runCase(ctx, comm, c);
  await comm.destroy();
  let k = 0;
  for (const f of failures) out[f] = await runFailure(ctx, f, k++);
  return out;
}
