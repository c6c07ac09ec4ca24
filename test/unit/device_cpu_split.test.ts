// The cpu backend's split() beyond the conformance case: splits of splits and a second split of
// the same parent (each child group is named after its parent's, the split's sequence number and
// the color, so none shares store keys with another), and a bad color refused locally.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { storeBootstrap } from '../../host/device/bootstrap.js';
import { fromDevice, freeTensor, toDevice } from '../../host/device/tensors.js';
import { TcpStore, TcpStoreServer } from '../../host/store/index.js';
import { isGroupcommError } from '../../host/base/errors.js';
import type { DeviceCommunicatorV1 } from '../../host/device/types.js';
import { CpuBackend } from '../../plugins/cpu/index.js';

const b = new CpuBackend();
let server: TcpStoreServer;
const stores: TcpStore[] = [];
let world: DeviceCommunicatorV1[] = [];
test.before(async () => {
  server = await TcpStoreServer.listen({ host: '127.0.0.1', port: 0 });
  for (let r = 0; r < 4; r++) stores.push(await TcpStore.create({ host: '127.0.0.1', port: server.port }));
  world = await Promise.all([0, 1, 2, 3].map((r) => b.createCommunicator({ rank: r, worldSize: 4, deviceIndex: r, bootstrap: storeBootstrap(stores[r], { rank: r, worldSize: 4, prefix: 'split' }), timeoutMs: 20_000 })));
});
test.after(async () => {
  await Promise.all(world.map((c) => c.close()));
  for (const s of stores) await s.close();
  await server.close();
});

/** allReduce(sum) of `vals[i]` on comms[i] (all of one communicator); every rank's result. */
async function sums(comms: DeviceCommunicatorV1[], vals: number[]): Promise<number[]> {
  return Promise.all(comms.map(async (c, i) => {
    const x = toDevice(b, { dtype: 'float32', shape: [1], device: 'cpu', data: Float32Array.of(vals[i]) }, c.deviceIndex);
    await c.allReduce(x, { out: x });
    const v = (fromDevice(b, x).data as Float32Array)[0];
    freeTensor(b, x);
    return v;
  }));
}

test('a split of a split, and a second split of the same parent, each get groups of their own', async () => {
  // Parent split by parity, then each child split again into one grandchild (key reverses it).
  const kids = await Promise.all(world.map((c, r) => c.split!({ color: r % 2, key: r })));
  assert.equal(kids.map((k) => [k!.rank, k!.worldSize]), [[0, 2], [0, 2], [1, 2], [1, 2]]);
  const grand = await Promise.all(kids.map((k) => k!.split!({ color: 0, key: -k!.rank })));
  assert.equal(grand.map((g) => [g!.rank, g!.worldSize]), [[1, 2], [1, 2], [0, 2], [0, 2]]);
  // A second split of the parent, all in one color, while the first split's children live.
  const again = await Promise.all(world.map((c, r) => c.split!({ color: 7, key: 3 - r })));
  assert.equal(again.map((a) => a!.rank), [3, 2, 1, 0]);
  assert.equal(await sums(grand as DeviceCommunicatorV1[], [1, 2, 10, 20]), [11, 22, 11, 22]);
  assert.equal(await sums(again as DeviceCommunicatorV1[], [1, 2, 3, 4]), [10, 10, 10, 10]);
  assert.equal(await sums(kids as DeviceCommunicatorV1[], [1, 2, 3, 4]), [4, 6, 4, 6]);
  for (const c of [...grand, ...again, ...kids]) await c!.close();
  assert.equal(await sums(world, [1, 1, 1, 1]), [4, 4, 4, 4]);
});

test('a color that is not a 32-bit integer is refused on the calling rank, nothing sent', async () => {
  const e = await world[0].split!({ color: 1.5 }).then(() => null, (x) => x);
  assert.ok(isGroupcommError(e, 'ERR_GROUPCOMM_INVALID_ARGUMENT' as never), String(e));
  assert.equal(await sums(world, [1, 2, 3, 4]), [10, 10, 10, 10]);
});

test.run();
