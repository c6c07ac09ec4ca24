// StatelessProcessGroup across real processes on 127.0.0.1: every op with 1, 2, 3, 4 and 7
// ranks, rank 0 hosting the store; and Node and Bun ranks in one group.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import net from 'node:net';
import { spawnRanks } from '../helpers/ranks.js';

const WORKER = 'test/integration/workers/pg_worker';

/** A port that was free a moment ago (rank 0 must bind a port the others know in advance). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

interface OpsResult {
  epoch: number;
  runtime: string;
  recvObj?: { from: number; mapOk: boolean; big: string };
  recv?: number[];
  broadcastObj: { src: number; set: number[] }[];
  broadcast: number[][];
  allGatherObj: { r: number }[];
  allReduceSum: number[];
  allReduceMin: number[];
}

function checkOps(res: OpsResult[], n: number): void {
  const ranks = [...Array(n).keys()];
  res.forEach((r, rank) => {
    const prev = (rank + n - 1) % n;
    if (n > 1) {
      assert.equal(r.recvObj, { from: prev, mapOk: true, big: String(BigInt(prev) << 60n) });
      assert.equal(r.recv, [prev, prev * 1.5]);
    } else {
      assert.is(r.recvObj, undefined);
    }
    assert.equal(r.broadcastObj, ranks.map((src) => ({ src, set: [src] })));
    assert.equal(r.broadcast, ranks.map((src) => [src + 100, src + 100]));
    assert.equal(r.allGatherObj, ranks.map((i) => ({ r: i })));
    assert.equal(r.allReduceSum, [(n * (n - 1)) / 2, n]);
    assert.equal(r.allReduceMin, [0.25]);
    assert.is(r.epoch, res[0].epoch);
  });
}

for (const n of [1, 2, 3, 4, 7]) {
  test(`every op with ${n} rank(s) in separate processes (rank 0 hosts the store)`, async () => {
    const port = await freePort();
    const res = await spawnRanks<OpsResult>(n, WORKER, { args: ['ops'], env: { PG_PORT: String(port), PG_OWNED: '1' }, timeoutMs: 50_000 });
    checkOps(res, n);
  });
}

test('Node and Bun ranks in one group', async () => {
  const port = await freePort();
  const res = await spawnRanks<OpsResult>(4, WORKER, { args: ['ops'], runtime: 'mixed', env: { PG_PORT: String(port), PG_OWNED: '1' }, timeoutMs: 50_000 });
  assert.equal(res.map((r) => r.runtime), ['node', 'bun', 'node', 'bun']);
  checkOps(res, 4);
});

test.run();
