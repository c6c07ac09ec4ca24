// Every StatelessProcessGroup op once, checked, on all ranks of one group at the same time (the
// groups are instances in this process standing in for ranks). Shared by the in-memory-store
// tests and the push/poll tests over a real TcpStore.
import * as assert from 'uvu/assert';
import type { StatelessProcessGroup } from '../../host/pg/group.js';
import { tensor } from '../../host/core/tensor.js';

export async function everyOp(pgs: StatelessProcessGroup[], o: { bigBytes?: number } = {}): Promise<void> {
  const n = pgs.length;
  const big = o.bigBytes ? new Uint8Array(o.bigBytes).map((_, i) => (i * 7) & 0xff) : undefined;
  await Promise.all(pgs.map(async (g) => {
    const r = g.rank;
    if (n > 1) {
      const next = (r + 1) % n, prev = (r + n - 1) % n;
      const sent = g.sendObj({ from: r, to: next }, next);
      assert.equal(await g.recvObj(prev), { from: prev, to: r });
      await sent;
      const out = tensor(new Float32Array(2));
      await Promise.all([g.send(tensor(new Float32Array([r, r + 0.5])), next), g.recv(out, prev)]);
      assert.equal([...out.data as Float32Array], [prev, prev + 0.5]);
    }
    for (let src = 0; src < n; src++) {
      assert.equal(await g.broadcastObj(r === src ? { src, list: [1, 2] } : null, src), { src, list: [1, 2] });
      if (big) {
        const got = await g.broadcastObj(r === src ? { src, big } : null, src) as { src: number; big: Uint8Array };
        assert.is(got.src, src);
        assert.ok(Buffer.from(got.big).equals(Buffer.from(big)), `rank ${r}: big broadcast from ${src} differs`);
      }
      const bt = tensor(new Int32Array(3).fill(r === src ? src * 10 : -1));
      assert.is(await g.broadcast(bt, { src: src, out: bt }), bt);
      assert.equal([...bt.data as Int32Array], [src * 10, src * 10, src * 10]);
    }
    assert.equal(await g.allGatherObj(`r${r}`), [...Array(n).keys()].map((i) => `r${i}`));
    await g.barrier();
    const s = tensor(new Float64Array([r + 1, -r]));
    await g.allReduce(s, { op: 'sum', out: s });
    assert.equal([...s.data as Float64Array], [(n * (n + 1)) / 2, -(n * (n - 1)) / 2]);
    const m = tensor(new Int32Array([r, -r]));
    await g.allReduce(m, { op: 'max', out: m });
    assert.equal([...m.data as Int32Array], [n - 1, 0]);
    const a = tensor(new Float32Array([r * 2]));
    await g.allReduce(a, { op: 'avg', out: a });
    assert.equal([...a.data as Float32Array], [n - 1]);
  }));
}
