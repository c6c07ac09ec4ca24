/**
 * One rank of the tests of vLLM's remaining coordinator methods (coord_vllm.test.ts): tensor
 * send / recv, allGatherv / reduceScatterv, allToAll with splits. Each runs on CPU tensors and
 * on the cpu backend's device tensors, and is checked against plain-JS references computed here
 * from what every rank is known to hold. Reports `{ checks, failures }`.
 */
import { StatelessGroupCoordinator } from '../../../host/coordinator/coordinator.js';
import { TcpStore } from '../../../host/store/index.js';
import { tensor, type CpuTensor, type DType, type Tensor, type TypedArray } from '../../../host/core/tensor.js';
import { fromDevice, toDevice } from '../../../host/device/tensors.js';
import { isGroupcommError } from '../../../host/base/errors.js';
import { rankEnv, reportResult } from '../../helpers/ranks.js';
import { checker } from '../../helpers/checks.js';

const { rank, worldSize } = rankEnv();
const port = Number(process.env.COORD_STORE_PORT);
const timeoutMs = 30_000;
const store = await TcpStore.create({ host: '127.0.0.1', port, timeoutMs });

const checks = checker(rank);
const { check, failures } = checks;
const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);

async function expectCode(p: Promise<unknown>, code: string, what: string, text?: RegExp): Promise<void> {
  try {
    await p;
    check(false, `${what}: resolved, expected ${code}`);
  } catch (e) {
    check(isGroupcommError(e) && e.code === code && (!text || text.test(e.message)), `${what}: expected ${code}${text ? ` ${text}` : ''}, got ${(e as Error).message}`);
  }
}

/** Tensors on the CPU or on the group's device (the cpu backend), read back as numbers. */
class Side {
  constructor(readonly g: StatelessGroupCoordinator, readonly dev: boolean) {}
  get name(): string { return this.dev ? 'device' : 'cpu'; }
  make(values: number[], shape: number[], dtype: DType = 'float32'): Tensor {
    const Ctor = { float32: Float32Array, float64: Float64Array, int32: Int32Array, int64: BigInt64Array, bfloat16: Uint16Array, uint8: Uint8Array } as Record<string, new (n: number) => TypedArray>;
    const a = new Ctor[dtype](values.length);
    values.forEach((v, i) => { (a as unknown as (number | bigint)[])[i] = dtype === 'int64' ? BigInt(v) : v; });
    const t = tensor(a, { dtype, shape });
    return this.dev ? toDevice(this.g.backend!, t, this.g.localRank) : t;
  }
  read(t: Tensor | undefined): number[] | undefined {
    if (!t) return undefined;
    const c = this.dev ? fromDevice(this.g.backend!, t) : (t as CpuTensor);
    return [...(c.data as TypedArray)].map(Number);
  }
  get device(): string { return this.dev ? this.g.device : 'cpu'; }
}

const vals = (tag: number, from: number, n: number) => Array.from({ length: n }, (_, i) => tag * 100 + from * 10 + (i % 10));

async function p2p(s: Side): Promise<void> {
  const { g } = s;
  const ws = g.worldSize, me = g.rankInGroup, next = (me + 1) % ws, prev = (me - 1 + ws) % ws;
  const w = `${s.name} p2p`;
  // A ring of three sends in a row (order per pair), three dtypes, three ways to say what to expect.
  await g.send(s.make(vals(1, me, 6), [2, 3]), next);
  await g.send(s.make(vals(2, me, 4), [4], 'int64'), next);
  await g.send(s.make(vals(3, me, 5), [5], 'bfloat16'), next);
  const like = s.make([0, 0, 0, 0, 0, 0], [2, 3]);
  const a = await g.recv(like, prev);
  check(a !== like && same(a.shape, [2, 3]) && a.device === s.device && same(s.read(a), vals(1, prev, 6)), `${w}: first of a ring (got ${s.read(a)})`);
  check(same(s.read(like), [0, 0, 0, 0, 0, 0]), `${w}: recv leaves like alone`);
  const b = await g.recv({ shape: [4], dtype: 'int64', device: s.device }, prev);
  check(b.dtype === 'int64' && same(s.read(b), vals(2, prev, 4)), `${w}: second, int64 (got ${s.read(b)})`);
  const out = s.make([0, 0, 0, 0, 0], [5], 'bfloat16');
  const c = await g.recv(out, prev, { out });
  check(c === out && same(s.read(out), vals(3, prev, 5)), `${w}: third, bfloat16 into out`);
  // A send to this rank itself is queued as a copy: the sender may reuse its buffer at once.
  const mine = s.make(vals(4, me, 3), [3]);
  await g.send(mine, me);
  const d = await g.recv({ shape: [3], dtype: 'float32', device: s.device }, me);
  check(same(s.read(d), vals(4, me, 3)) && d !== mine, `${w}: to itself`);
  // Pairs exchange with every other rank, both directions at once (no deadlock, nothing crossed).
  for (let k = 1; k < ws; k++) {
    const to = (me + k) % ws, from = (me - k + ws) % ws;
    const [, got] = await Promise.all([g.send(s.make(vals(5 + k, me, 7), [7], 'int32'), to), g.recv({ shape: [7], dtype: 'int32', device: s.device }, from)]);
    check(same(s.read(got), vals(5 + k, from, 7)), `${w}: shift ${k}`);
  }
  // Argument checks: nothing is sent, the group stays usable.
  await expectCode(g.send(s.make([1], [1]), ws), 'ERR_GROUPCOMM_INVALID_ARGUMENT', `${w}: dst = world size`, /dst/);
  await expectCode(g.recv({ shape: [1], dtype: 'float33' as DType }, prev), 'ERR_GROUPCOMM_INVALID_ARGUMENT', `${w}: unknown dtype`, /dtype/);
  await expectCode(g.recv({ shape: [1], dtype: 'float32', device: s.device }, me), 'ERR_GROUPCOMM_INVALID_ARGUMENT', `${w}: nothing sent to itself`, /self-send/);
  await g.sendObject('not a tensor', me);
  await expectCode(g.recv({ shape: [1], dtype: 'float32', device: s.device }, me), 'ERR_GROUPCOMM_INVALID_ARGUMENT', `${w}: an object queued to itself`, /recvObject/);
  check((await g.recvObject(me)) === 'not a tensor', `${w}: the object stays queued`);
  await expectCode(g.recv({ shape: [2], dtype: 'float32', device: s.device }, prev, { out: s.make([0], [1]) }), 'ERR_GROUPCOMM_INVALID_ARGUMENT', `${w}: out of another shape`, /out must be/);
  await g.barrier();
}

// ---- references: element by element, from coordinates (no block arithmetic) -----------------------

const prod = (a: number[]) => a.reduce((x, y) => x * y, 1);
function unravel(i: number, shape: number[]): number[] {
  const c = new Array(shape.length).fill(0);
  for (let k = shape.length - 1; k >= 0; k--) { c[k] = i % shape[k]; i = Math.floor(i / shape[k]); }
  return c;
}
function ravel(c: number[], shape: number[]): number {
  let i = 0;
  for (let k = 0; k < shape.length; k++) i = i * shape[k] + c[k];
  return i;
}
const withDim = (shape: number[], d: number, n: number) => shape.map((v, k) => (k === d ? n : v));
const cum = (sizes: number[]) => sizes.map((_, r) => sizes.slice(0, r).reduce((a, b) => a + b, 0));

/** Rank r's tensor for the variable tests: r·1000 + flat index. */
const partOf = (r: number, shape: number[]) => Array.from({ length: prod(shape) }, (_, i) => r * 1000 + i);

function gathervRef(base: number[], d: number, sizes: number[]): number[] {
  const shape = withDim(base, d, sizes.reduce((a, b) => a + b, 0));
  const at = cum(sizes);
  return Array.from({ length: prod(shape) }, (_, i) => {
    const c = unravel(i, shape);
    const r = sizes.findIndex((s, k) => c[d] >= at[k] && c[d] < at[k] + s);
    const local = [...c]; local[d] -= at[r];
    return partOf(r, withDim(base, d, sizes[r]))[ravel(local, withDim(base, d, sizes[r]))];
  });
}

function scattervRef(full: number[], d: number, sizes: number[], me: number, ws: number): number[] {
  const shape = full;
  const mine = withDim(shape, d, sizes[me]);
  const at = cum(sizes);
  return Array.from({ length: prod(mine) }, (_, i) => {
    const c = unravel(i, mine); c[d] += at[me];
    const j = ravel(c, shape);
    let s = 0;
    for (let r = 0; r < ws; r++) s += partOf(r, shape)[j];
    return s;
  });
}

async function variable(s: Side): Promise<void> {
  const { g } = s;
  const ws = g.worldSize, me = g.rankInGroup;
  const w = `${s.name} v`;
  const sizes = [3, 0, 5, 1, 2].slice(0, ws); // a rank with nothing to give, uneven otherwise
  const base = [2, 4, 3];
  for (const d of [0, 1, 2]) {
    const shape = withDim(base, d, sizes[me]);
    const t = s.make(partOf(me, shape), shape);
    const r = await g.allGatherv(t, sizes, d);
    const want = withDim(base, d, sizes.reduce((a, b) => a + b, 0));
    check(same(r.shape, want) && same(s.read(r), gathervRef(base, d, sizes)), `${w}: allGatherv dim ${d} (got [${r.shape}])`);
    check(same(s.read(t), partOf(me, shape)), `${w}: allGatherv dim ${d} leaves its input alone`);
  }
  // int64 and bfloat16 move like any bytes; out; negative dim.
  const i64 = await g.allGatherv(s.make(partOf(me, [sizes[me], 2]), [sizes[me], 2], 'int64'), sizes, -2);
  check(i64.dtype === 'int64' && same(s.read(i64), gathervRef([0, 2], 0, sizes)), `${w}: allGatherv int64, dim -2`);
  const total = sizes.reduce((a, b) => a + b, 0);
  const into = s.make(new Array(total * 2).fill(0), [total, 2], 'bfloat16');
  const bf = await g.allGatherv(s.make(partOf(me, [sizes[me], 2]), [sizes[me], 2], 'bfloat16'), sizes, 0, { out: into });
  check(bf === into && same(s.read(into), gathervRef([0, 2], 0, sizes)), `${w}: allGatherv bfloat16 into out`);
  // reduceScatterv along each dim, sum and max
  for (const d of [0, 1, 2]) {
    const full = withDim(base, d, total);
    const t = s.make(partOf(me, full), full);
    const r = await g.reduceScatterv(t, sizes, d);
    check(same(r.shape, withDim(base, d, sizes[me])) && same(s.read(r), scattervRef(full, d, sizes, me, ws)), `${w}: reduceScatterv dim ${d}`);
    check(same(s.read(t), partOf(me, full)), `${w}: reduceScatterv dim ${d} leaves its input alone`);
  }
  const mx = await g.reduceScatterv(s.make(partOf(me, [total]), [total], 'int32'), sizes, -1, { op: 'max' });
  check(same(s.read(mx), partOf(ws - 1, [total]).slice(cum(sizes)[me], cum(sizes)[me] + sizes[me])), `${w}: reduceScatterv max`);
  // allToAll: rank i sends rank j split(i, j) rows of 3 (zeros included).
  const split = (i: number, j: number) => (i + 2 * j + 1) % 3;
  const ins = Array.from({ length: ws }, (_, j) => split(me, j));
  const outs = Array.from({ length: ws }, (_, i) => split(i, me));
  const rowOf = (i: number, j: number, k: number) => [0, 1, 2].map((e) => i * 10000 + j * 1000 + k * 10 + e);
  const input = ins.flatMap((n, j) => Array.from({ length: n }, (_, k) => rowOf(me, j, k)).flat());
  const a2a = await g.allToAll(s.make(input, [input.length / 3, 3], 'int32'), { inputSplits: ins, outputSplits: outs });
  const a2aRef = outs.flatMap((n, i) => Array.from({ length: n }, (_, k) => rowOf(i, me, k)).flat());
  check(same(a2a.shape, [a2aRef.length / 3, 3]) && same(s.read(a2a), a2aRef), `${w}: allToAll with splits ${ins} / ${outs}`);
  const eq = await g.allToAll(s.make(partOf(me, [2 * ws]), [2 * ws], 'float64'));
  check(same(s.read(eq), Array.from({ length: ws }, (_, i) => partOf(i, [2 * ws]).slice(2 * me, 2 * me + 2)).flat()), `${w}: allToAll equal blocks`);
  // Argument checks on this rank alone (nothing sent).
  await expectCode(g.allGatherv(s.make([1], [1]), [...sizes, 1], 0), 'ERR_GROUPCOMM_INVALID_ARGUMENT', `${w}: sizes of the wrong length`, /one per rank/);
  await expectCode(g.allGatherv(s.make(partOf(me, [sizes[me] + 1]), [sizes[me] + 1]), sizes), 'ERR_GROUPCOMM_INVALID_ARGUMENT', `${w}: own size differs`, new RegExp(`sizes\\[${me}\\]`));
  await expectCode(g.reduceScatterv(s.make([1, 2], [2]), sizes), 'ERR_GROUPCOMM_INVALID_ARGUMENT', `${w}: sizes do not add up`, /add up/);
  await expectCode(g.allToAll(s.make([1], [1]), { inputSplits: [2, ...ins.slice(1)], outputSplits: outs }), 'ERR_GROUPCOMM_INVALID_ARGUMENT', `${w}: inputSplits do not add up`, /inputSplits/);
  await expectCode(g.allGatherv(s.make(partOf(me, [sizes[me]]), [sizes[me]]), sizes, 0, { out: s.make([0], [1]) }), 'ERR_GROUPCOMM_INVALID_ARGUMENT', `${w}: out of another shape`, /out must be/);
  if (ws > 1) {
    // Ranks that disagree on the sizes fail, naming a rank, instead of hanging or misplacing data.
    const bad = me === 1 ? sizes.map((v, r) => (r === 0 ? v + 1 : v)) : sizes;
    await expectCode(g.allGatherv(s.make(partOf(me, [sizes[me]]), [sizes[me]]), bad), 'ERR_GROUPCOMM_INVALID_ARGUMENT', `${w}: disagreeing sizes`, /disagree.*rank \d/);
    const badOuts = me === 1 ? outs.map((v, r) => (r === 0 ? v + 1 : v)) : outs;
    const p = g.allToAll(s.make(input, [input.length / 3, 3], 'int32'), { inputSplits: ins, outputSplits: badOuts });
    if (me === 1) await expectCode(p, 'ERR_GROUPCOMM_INVALID_ARGUMENT', `${w}: outputSplits disagree with rank 0's inputSplits`, /rank 0/);
    else check(same(s.read(await p), a2aRef), `${w}: allToAll unaffected by rank 1's wrong outputSplits`);
  }
  const after = await g.allReduce(s.make([1], [1], 'int32'));
  check(same(s.read(after), [ws]), `${w}: group usable after argument errors`);
}

/** A recv nobody answers times out naming the group rank it waited for. */
async function p2pTimeout(g: StatelessGroupCoordinator): Promise<void> {
  if (g.worldSize < 2) return;
  if (g.rankInGroup === 0) {
    await expectCode(g.recv({ shape: [1], dtype: 'float32' }, 1, { timeoutMs: 300 }), 'ERR_GROUPCOMM_TIMEOUT', 'recv from a silent rank', /rank 1/);
  }
  // The others wait here, so rank 1 is silent rather than gone.
  await g.barrier();
}

async function main(): Promise<void> {
  const ranks = [...Array(worldSize).keys()];
  const cpu = await StatelessGroupCoordinator.create({ groupRanks: [ranks], globalRank: rank, groupName: 'vllm', rendezvous: store, timeoutMs });
  const dev = await StatelessGroupCoordinator.create({
    groupRanks: [ranks], globalRank: rank, groupName: 'vllmdev', rendezvous: store, timeoutMs, backend: 'cpu', useDeviceCommunicator: true,
  });
  for (const s of [new Side(cpu, false), new Side(dev, true)]) {
    await p2p(s);
    await variable(s);
  }
  await p2pTimeout(cpu);
  await dev.destroy();
  await cpu.destroy();
}

try {
  await main();
  reportResult({ checks: checks.count, failures });
} catch (e) {
  reportResult({ checks: checks.count, failures: [...failures, `rank ${rank}: threw ${(e as Error).stack ?? e}`] });
} finally {
  await store.close();
}
