// Algorithms of host/cpu/algorithms.ts that cpu_group does not pin, through CpuGroup: the
// dissemination barrier (no rank leaves before the last one entered, for sizes that take one, two
// and three rounds) and the chain broadcast from roots other than 0 (the chain wraps past rank 0).
// Ranks live in this process over real sockets and a real TcpStore.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { CpuGroup } from '../../host/cpu/group.js';
import { TcpStore } from '../../host/store/client.js';
import { sleep } from '../../host/base/deadline.js';
import { tensor } from '../../host/core/tensor.js';

let server: TcpStore;
let groupNo = 0;
const live = new Set<CpuGroup>();

test.before(async () => { server = await TcpStore.create({ port: 0, isServer: true, timeoutMs: 10_000 }); });
test.after.each(async () => {
  await Promise.all([...live].map((g) => g.abort('test over')));
  live.clear();
});
test.after(async () => { await server.close(); });

for (const n of [2, 3, 5]) {
  test(`barrier of ${n}: every rank leaves only after the last one entered; again in a second round`, async () => {
    const groupName = `barrier-${groupNo++}`;
    const gs = await Promise.all([...Array(n).keys()].map((rank) =>
      CpuGroup.create({ store: server, rank, worldSize: n, groupName, timeoutMs: 10_000, transport: 'tcp' })));
    for (const g of gs) live.add(g);
    for (let round = 0; round < 2; round++) {
      const late = (round + n - 1) % n;
      const left: number[] = new Array(n).fill(0);
      let enteredLast = 0;
      const waits = gs.map(async (g, r) => {
        if (r === late) { await sleep(150); enteredLast = performance.now(); }
        await g.barrier();
        left[r] = performance.now();
      });
      await Promise.all(waits);
      for (let r = 0; r < n; r++) assert.ok(left[r] >= enteredLast, `round ${round}: rank ${r} left before rank ${late} entered`);
    }
  });
}

test('a large broadcast (the chain) from every root of 3 ranks reaches every rank exactly', async () => {
  const n = 3;
  const groupName = `bcast-${groupNo++}`;
  // smallBytes 1024: 64 KiB goes through the segmented chain, not the binomial tree.
  const gs = await Promise.all([...Array(n).keys()].map((rank) =>
    CpuGroup.create({ store: server, rank, worldSize: n, groupName, timeoutMs: 10_000, transport: 'tcp', smallBytes: 1024 })));
  for (const g of gs) live.add(g);
  for (const src of [1, 2, 0]) {
    const ts = gs.map((_, r) => tensor(Float32Array.from({ length: 16384 }, (_, i) => (r === src ? src * 100_000 + i : -1))));
    await Promise.all(gs.map((g, r) => g.broadcast(ts[r], { src, out: ts[r] })));
    for (const [r, t] of ts.entries()) {
      const d = t.data as Float32Array;
      assert.ok(d.every((x, i) => x === src * 100_000 + i), `root ${src}: rank ${r} got other bytes`);
    }
  }
});

test.run();
