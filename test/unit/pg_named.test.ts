// What a process group's failures name, in both mailbox modes: a broadcast receive that times out
// names its root (peerRank, peerRanks, the key), as a plain receive names its source; an aborted
// poll-mode take names the tags it had not got, as a push-mode one does (keys), and consumes none.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { StatelessProcessGroup } from '../../host/pg/group.js';
import { PollMailbox } from '../../host/pg/mailbox.js';
import { TcpStore } from '../../host/index.js';
import { tensor } from '../../host/core/tensor.js';
import { failure } from '../helpers/rejects.js';
import { withStore } from '../helpers/server_store.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** `n` groups on one in-process server; `extensions: false` clients cannot push (poll mode). */
async function groups(n: number, extensions: boolean, fn: (pgs: StatelessProcessGroup[]) => Promise<void>): Promise<void> {
  const s0 = await TcpStore.create({ port: 0, isServer: true, timeoutMs: 5000, extensions });
  const stores = [s0];
  for (let r = 1; r < n; r++) stores.push(await TcpStore.create({ port: s0.port, timeoutMs: 5000, extensions }));
  const pgs = await Promise.all(stores.map((store, rank) => StatelessProcessGroup.create({ rank, worldSize: n, store, timeoutMs: 5000 })));
  try {
    await fn(pgs);
  } finally {
    await Promise.all(pgs.map((g) => g.destroy({ force: true })));
    for (const s of stores.slice(1)) await s.close();
    await s0.close();
  }
}

for (const extensions of [true, false]) {
  const mode = extensions ? 'push' : 'poll';
  test(`${mode} mode: a broadcast receive that times out names its root (peerRank, peerRanks, key)`, async () => {
    await groups(3, extensions, async (pgs) => {
      // Rank 2 broadcasts nothing; ranks 0 and 1 wait for it.
      for (const r of [0, 1]) {
        const e = await failure(pgs[r].broadcastObj(undefined, 2, { timeoutMs: 80 }));
        assert.is(e.code, 'ERR_GROUPCOMM_TIMEOUT', e.message);
        assert.is(e.rank, r);
        assert.is(e.peerRank, 2);
        assert.equal(e.peerRanks, [2]);
        assert.is(e.key, `${pgs[r].keyPrefix}to/${r}/b/2/0`);
        assert.match(e.message, '[2]');
      }
      const t = await failure(pgs[1].broadcast(tensor(new Float32Array(2)), { src: 0, timeoutMs: 80 }));
      assert.is(t.code, 'ERR_GROUPCOMM_TIMEOUT');
      assert.equal([t.peerRank, t.peerRanks, t.key], [0, [0], `${pgs[1].keyPrefix}to/1/b/0/0`]);
    });
  });
}

test('poll mode: an abort while waiting names every tag and the reason, and consumes nothing', async () => {
  await withStore(async (s) => {
    const box = new PollMailbox(s, 'in/', () => {});
    const ac = new AbortController();
    const p = failure(box.take(['a', 'b'], 'l', { timeoutMs: 5000, signal: ac.signal }, 'gather'));
    await s.set('in/a', 'A');
    await sleep(20);
    const why = new Error('stop');
    ac.abort(why);
    const e = await p;
    assert.is(e.code, 'ERR_GROUPCOMM_ABORTED');
    assert.equal(e.keys, ['a', 'b']);
    assert.is(e.cause, why);
    await s.set('in/b', 'B');
    await sleep(30);
    assert.ok(await s.check(['in/a', 'in/b']), 'an aborted take consumed nothing');
    // One tag, through a group-level receive: the same keys field.
    const one = new AbortController();
    const q = failure(box.take(['c'], 'm', { timeoutMs: 5000, signal: one.signal }, 'recv'));
    one.abort();
    assert.equal((await q).keys, ['c']);
  });
});

test('poll mode: a take aborted before it began names its tags and sends no read', async () => {
  await withStore(async (s) => {
    const box = new PollMailbox(s, 'in/', () => {});
    await s.set('in/x', 'X');
    const ac = new AbortController();
    ac.abort('gone');
    const e = await failure(box.take(['x', 'y'], 'l', { timeoutMs: 5000, signal: ac.signal }, 'op'));
    assert.is(e.code, 'ERR_GROUPCOMM_ABORTED');
    assert.equal(e.keys, ['x', 'y']);
    assert.is(e.cause, 'gone');
    await sleep(30);
    assert.ok(await s.check(['in/x']), 'the message is still there for the next take');
  });
});

test('poll mode: an aborted recvObj of a group carries its tag in keys, like push mode', async () => {
  for (const extensions of [true, false]) {
    await groups(2, extensions, async ([, b]) => {
      const ac = new AbortController();
      const p = failure(b.recvObj(0, { signal: ac.signal }));
      await sleep(20);
      ac.abort();
      const e = await p;
      assert.is(e.code, 'ERR_GROUPCOMM_ABORTED');
      assert.equal(e.keys, ['p/0/0'], extensions ? 'push' : 'poll');
    });
  }
});

test.run();
