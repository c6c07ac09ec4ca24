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

const { rank, worldSize } = rankEnv();
const port = Number(process.env.COORD_STORE_PORT);
const timeoutMs = 30_000;
const store = await TcpStore.create({ host: '127.0.0.1', port, timeoutMs });

let checks = 0;
const failures: string[] = [];
function check(ok: boolean, what: string): void {
  checks++;
  if (!ok) failures.push(`rank ${rank}: ${what}`);
}
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
  }
  await p2pTimeout(cpu);
  await dev.destroy();
  await cpu.destroy();
}

try {
  await main();
  reportResult({ checks, failures });
} catch (e) {
  reportResult({ checks, failures: [...failures, `rank ${rank}: threw ${(e as Error).stack ?? e}`] });
} finally {
  await store.close();
}
