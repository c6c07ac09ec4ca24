/**
 * CpuGroup.create's argument checks (refused before it listens or writes to the store), and a
 * peer that leaves on purpose: hasLeft, PEER_LEFT at once for the next call, and no onLost (a
 * lost connection, a killed process, is the fault tests' part: integration/cpu_faults).
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { CpuGroup, type CpuGroupOptions } from '../../host/cpu/group.js';
import { TcpStore } from '../../host/store/client.js';
import { tensor } from '../../host/core/tensor.js';
import { isGroupcommError, type GroupcommError } from '../../host/base/errors.js';

let store: TcpStore;
test.before(async () => {
  store = await TcpStore.create({ host: '127.0.0.1', port: 0, isServer: true, timeoutMs: 10_000 });
});
test.after(() => store.close());

test('bad options are refused with INVALID_ARGUMENT before anything is published', async () => {
  const base = { store, rank: 0, worldSize: 2, groupName: 'refused', timeoutMs: 2000 };
  const cases: [Partial<CpuGroupOptions>, string][] = [
    [{ worldSize: 0 }, 'worldSize must be an integer >= 1, got 0'],
    [{ worldSize: 1.5 }, 'worldSize must be an integer >= 1, got 1.5'],
    [{ rank: -1 }, 'rank must be in [0, 2), got -1'],
    [{ rank: 2 }, 'rank must be in [0, 2), got 2'],
    [{ rank: 0.5 }, 'rank must be in [0, 2), got 0.5'],
    [{ groupName: '' }, 'groupName must be a non-empty string of at most 1024 bytes'],
    [{ groupName: 'é'.repeat(513) }, 'groupName must be a non-empty string of at most 1024 bytes'],
    [{ groupName: 7 as never }, 'groupName must be a non-empty string of at most 1024 bytes'],
    [{ hub: 2 }, 'hub must be a rank in [0, 2), got 2'],
    [{ hub: -1 }, 'hub must be a rank in [0, 2), got -1'],
    [{ epoch: -1 }, 'epoch must be an integer >= 0, got -1'],
    [{ epoch: 0.5 }, 'epoch must be an integer >= 0, got 0.5'],
    [{ maxFrameBytes: 0 }, 'maxFrameBytes must be a positive integer, got 0'],
    [{ maxFrameBytes: 2.5 }, 'maxFrameBytes must be a positive integer, got 2.5'],
  ];
  const keys = await store.numKeys();
  for (const [bad, msg] of cases) {
    const e = await CpuGroup.create({ ...base, ...bad } as CpuGroupOptions).then((g) => { void g.abort('x'); return undefined; }, (x: unknown) => x);
    assert.ok(isGroupcommError(e, 'ERR_GROUPCOMM_INVALID_ARGUMENT'), `${JSON.stringify(bad)}: ${e}`);
    assert.is((e as Error).message, msg, JSON.stringify(bad));
  }
  assert.is(await store.numKeys(), keys, 'nothing was published for a refused create');
  // A name of exactly 1024 bytes is fine (refused only above), with a hub inside the group.
  const name = 'é'.repeat(512);
  const gs = await Promise.all([0, 1].map((rank) => CpuGroup.create({ ...base, rank, groupName: name, hub: 1 })));
  assert.is(await store.numKeys() > keys, true, 'the accepted group published its addresses');
  await Promise.all(gs.map((g) => g.destroy()));
});

test('two ranks of one group and epoch that disagree on the world size: the one refused fails at once with MISMATCH naming the peer', async () => {
  // Rank 0 thinks the group has 2 ranks, rank 1 thinks 3: rank 0 dials rank 1, whose handshake
  // refuses a HELLO with another world size. Rank 1 waits for a rank 2 that never comes.
  const t0 = performance.now();
  const [e0, e1] = await Promise.all([[0, 2], [1, 3]].map(([rank, worldSize]) =>
    CpuGroup.create({ store, rank, worldSize, groupName: 'sizes-differ', timeoutMs: 1500 })
      .then((g) => { void g.abort('x'); return undefined; }, (e: GroupcommError) => ({ e, ms: performance.now() - t0 }))));
  assert.is(e0?.e.code, 'ERR_GROUPCOMM_MISMATCH', String(e0?.e));
  assert.equal([e0!.e.rank, e0!.e.peerRank], [0, 1]);
  assert.match(e0!.e.message, 'world size differs (this rank has world size 2): the ranks disagree on the group\'s members');
  assert.ok(e0!.ms < e1!.ms, `rank 0 failed first (${e0!.ms} ms), before rank 1's timeout (${e1!.ms} ms)`);
  assert.is(e1?.e.code, 'ERR_GROUPCOMM_TIMEOUT', String(e1?.e));
  assert.ok(e1!.e.peerRanks?.includes(2), `rank 1 names the rank it waited for: ${e1!.e.message}`);
});

test('a peer that leaves (destroy or abort: both say goodbye) is no loss: hasLeft, and the next call fails at once with PEER_LEFT', async () => {
  for (const how of ['destroy', 'abort'] as const) {
    const gs = await Promise.all([0, 1, 2].map((rank) => CpuGroup.create({ store, rank, worldSize: 3, groupName: `leave-${how}`, timeoutMs: 5000 })));
    try {
      const lost: GroupcommError[] = [];
      gs[0].onLost((e) => lost.push(e));
      await Promise.all(gs.map((g) => g.allReduce(tensor(new Float32Array([1])))));
      assert.is(gs[0].hasLeft(1), false);
      await (how === 'destroy' ? gs[1].destroy() : gs[1].abort('gone'));
      for (let i = 0; i < 200 && !(gs[0].hasLeft(1) && gs[2].hasLeft(1)); i++) await new Promise((r) => setTimeout(r, 10));
      assert.equal([gs[0].hasLeft(1), gs[2].hasLeft(1), gs[0].hasLeft(2)], [true, true, false], how);
      const t0 = performance.now();
      const errs = await Promise.all([0, 2].map((r) => gs[r].allReduce(tensor(new Float32Array([1]))).then(() => undefined, (e: GroupcommError) => e)));
      errs.forEach((e, i) => {
        assert.is(e?.code, 'ERR_GROUPCOMM_PEER_LEFT', `${how}: ${e}`);
        assert.equal([e!.rank, e!.peerRank], [i * 2, 1], how);
      });
      assert.ok(performance.now() - t0 < 4000, `${how}: failed at once, not at the 5 s timeout`);
      assert.equal(lost, [], `${how}: a goodbye is not a loss`);
    } finally {
      await Promise.all(gs.map((g) => g.abort('test over')));
    }
  }
});

test.run();
