/**
 * premulSum on a device backend that does not offer it (host/coordinator/tensors.ts checkOp):
 * a test double of the cpu plugin registered as 'cpu-nopremul' with capabilities.premulSum
 * false (the cpu plugin itself has it, and no other backend runs in unit tests). allReduce and
 * reduceScatter of device tensors are refused on every rank, naming the collective and the
 * backend, before anything is sent; CPU tensors (the CPU group) and a group of one (the local
 * channel) take premulSum; other ops still reach the device communicator.
 *
 * The double also counts its allocations: collectives along dim 0 with `out` stage nothing (the
 * channel writes into `out`), along an inner dim they stage once and give it back; and in a
 * group of one (whose result shape along any dim is the input's) `out` may not be the input for
 * allGather, gather or reduceScatter, along dim 0 or an inner dim.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { StatelessGroupCoordinator } from '../../host/coordinator/coordinator.js';
import { TcpStore, TcpStoreServer } from '../../host/store/index.js';
import { registerBackend } from '../../host/device/registry.js';
import { premulSum } from '../../host/core/premul.js';
import { tensor } from '../../host/core/tensor.js';
import { CpuBackend } from '../../plugins/cpu/index.js';
import { onDevice, read } from '../helpers/coord_f32.js';

// The double: the real cpu plugin under another name, without premulSum (test-only).
const noPremul = new CpuBackend();
Object.defineProperty(noPremul, 'name', { value: 'cpu-nopremul' });
Object.defineProperty(noPremul, 'capabilities', { value: { ...noPremul.capabilities, premulSum: false } });
let allocs = 0;
// Counted in its memory: the backend's own allocations and its communicator's.
const alloc = noPremul.memory.alloc.bind(noPremul.memory);
noPremul.memory.alloc = (n: number) => { allocs++; return alloc(n); };
registerBackend(noPremul);

const server = await TcpStoreServer.listen({ port: 0 });
const stores = await Promise.all([0, 1].map(() => TcpStore.create({ port: server.port, timeoutMs: 20_000 })));
const groups = await Promise.all(stores.map((rendezvous, r) => StatelessGroupCoordinator.create({
  groupRanks: [[0, 1]], globalRank: r, groupName: 'cpremul', rendezvous, timeoutMs: 10_000, backend: 'cpu-nopremul', useDeviceCommunicator: true,
})));

const both = <T>(f: (g: StatelessGroupCoordinator, r: number) => Promise<T>) => Promise.all(groups.map((g, r) => f(g, r)));
const v4 = (r: number) => [0, 1, 2, 3].map((i) => r * 10 + i);

async function refused(p: Promise<unknown>, what: string): Promise<void> {
  const e = await p.then(() => undefined, (x) => x);
  assert.is(e?.code, 'ERR_GROUPCOMM_INVALID_ARGUMENT', String(e));
  // The collective's own label, after the coordinator's context ('<group>.<op> (global rank r): ').
  assert.ok(String(e.message).includes(`): ${what}: premulSum on `), e.message);
  assert.match(e.message, /'cpu-nopremul' has none/);
}

test('the double is the backend in use, and it has no premulSum', () => {
  for (const g of groups) {
    assert.is(g.backend?.name, 'cpu-nopremul');
    assert.is(g.backend?.capabilities.premulSum, false);
  }
});

test('allReduce and reduceScatter of device tensors with premulSum are refused on every rank, naming the collective', async () => {
  await both((g, r) => refused(g.allReduce(onDevice(g, v4(r), [4]), { op: premulSum(0.5) }), 'allReduce'));
  await both((g, r) => refused(g.reduceScatter(onDevice(g, v4(r), [4]), 0, { op: premulSum(0.5) }), 'reduceScatter'));
  await both((g, r) => refused(g.reduceScatter(onDevice(g, v4(r), [2, 2]), 1, { op: premulSum(2) }), 'reduceScatter'));
  // Nothing was sent: the next device call pairs up and is right.
  const sum = await both((g, r) => g.allReduce(onDevice(g, v4(r), [4])));
  assert.equal(read(groups[0], sum[0]), [10, 12, 14, 16]);
  const max = await both((g, r) => g.reduceScatter(onDevice(g, v4(r), [4]), 0, { op: 'max' }));
  assert.equal(max.map((t, r) => read(groups[r], t)), [[10, 11], [12, 13]]);
});

test('CPU tensors take premulSum over the CPU group of the same coordinators', async () => {
  const half = await both((g, r) => g.allReduce(tensor(Float32Array.from(v4(r))), { op: premulSum(0.5) }));
  assert.equal(read(groups[1], half[1]), [5, 6, 7, 8]);
  const rs = await both((g, r) => g.reduceScatter(tensor(Float32Array.from(v4(r))), 0, { op: premulSum(2) }));
  assert.equal(rs.map((t, r) => read(groups[r], t)), [[20, 24], [28, 32]]);
});

test('a group of one takes premulSum on CPU and device tensors (no device communicator, no CPU group)', async () => {
  const solo = await StatelessGroupCoordinator.create({
    groupRanks: [[0]], globalRank: 0, groupName: 'cpremul1', rendezvous: stores[0], timeoutMs: 10_000, backend: 'cpu-nopremul', useDeviceCommunicator: true,
  });
  try {
    assert.equal(read(solo, await solo.allReduce(tensor(Float32Array.of(2, 4)), { op: premulSum(0.5) })), [1, 2]);
    assert.equal(read(solo, await solo.allReduce(onDevice(solo, [2, 4], [2]), { op: premulSum(3) })), [6, 12]);
    assert.equal(read(solo, await solo.reduceScatter(onDevice(solo, [2, 4], [2]), 0, { op: premulSum(0.5) })), [1, 2]);
  } finally {
    await solo.abort();
  }
});

test('dim 0 with out stages nothing; an inner dim stages once and frees it', async () => {
  const outs = groups.map((g) => [g.empty([4], 'float32'), g.empty([4], 'float32'), g.empty([1, 2], 'float32')]);
  const live0 = noPremul.memory.liveCount;
  let before = allocs;
  await both((g, r) => g.allGather(onDevice(g, [r, r], [2]), 0, { out: outs[r][0] }));
  await both((g, r) => g.gather(onDevice(g, [r, r], [2]), 1, 0, r === 1 ? { out: outs[r][1] } : {}));
  await both((g, r) => g.reduceScatter(onDevice(g, v4(r), [2, 2]), 0, { out: outs[r][2] }));
  assert.is(allocs - before, 6, 'only the inputs were allocated');
  assert.equal(read(groups[0], outs[0][0]), [0, 0, 1, 1]);
  assert.equal(read(groups[1], outs[1][1]), [0, 0, 1, 1]);
  assert.equal(read(groups[1], outs[1][2]), [14, 16]);
  assert.is(noPremul.memory.liveCount - live0, 6, 'the inputs (not freed by the test)');
  before = allocs;
  const live1 = noPremul.memory.liveCount;
  const rs = await both((g, r) => g.reduceScatter(onDevice(g, v4(r), [2, 2]), 1, { op: 'max' }));
  assert.equal(rs.map((t, r) => read(groups[r], t)), [[10, 12], [11, 13]]);
  assert.is(noPremul.memory.liveCount - live1, 4, 'inputs and results: the staging tensors were freed');
  assert.is(allocs - before, 6, 'input, staging and result on each rank');
});

test('a group of one refuses out = input for allGather, gather and reduceScatter along any dim', async () => {
  const solo = await StatelessGroupCoordinator.create({
    groupRanks: [[0]], globalRank: 0, groupName: 'cpremul2', rendezvous: stores[0], timeoutMs: 10_000, backend: 'cpu-nopremul', useDeviceCommunicator: true,
  });
  try {
    for (const dim of [0, 1]) {
      for (const x of [tensor(Float32Array.of(1, 2, 3, 4), { shape: [2, 2] }), onDevice(solo, [1, 2, 3, 4], [2, 2])]) {
        for (const [what, p] of [
          ['allGather', solo.allGather(x, dim, { out: x })], ['gather', solo.gather(x, 0, dim, { out: x })],
          ['reduceScatter', solo.reduceScatter(x, dim, { out: x })],
        ] as const) {
          const e = await p.then(() => undefined, (z) => z);
          assert.is(e?.code, 'ERR_GROUPCOMM_INVALID_ARGUMENT', `${what} dim ${dim}: ${e}`);
          assert.match(e.message, new RegExp(`${what}: out is the input`));
        }
      }
    }
  } finally {
    await solo.abort();
  }
});

test('close', async () => {
  await Promise.all(groups.map((g) => g.abort()));
  await Promise.all(stores.map((s) => s.close()));
  await server.close();
});

test.run();
