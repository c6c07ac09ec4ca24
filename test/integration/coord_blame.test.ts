// Faults named right: who failed, who never arrived, who left cleanly, and calls that do not
// match (issue 13). Real processes; every scenario reports what each rank saw.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnRanks, startRanks } from '../helpers/ranks.js';
import { TcpStoreServer } from '../../host/store/index.js';

let server: TcpStoreServer;
test.before(async () => { server = await TcpStoreServer.listen({ host: '127.0.0.1', port: 0 }); });
test.after(async () => { await server.close(); });

const run = <T>(n: number, scenario: string, env: Record<string, string> = {}) => spawnRanks<T>(n, 'test/integration/workers/blame_worker', {
  args: [scenario], timeoutMs: 90_000, env: { COORD_STORE_PORT: String(server.port), ...env },
});

test('a barrier does not depend on rank 0\'s event loop after it returned', async () => {
  const outs = await run<{ barrier: unknown; sum: number }>(3, 'busy-host', { COORD_TIMEOUT_MS: '2000' });
  for (const [r, o] of outs.entries()) {
    assert.is(o.barrier, 'ok', `rank ${r}: ${JSON.stringify(o.barrier)}`);
    assert.is(o.sum, 3);
  }
});

type Seen = { code: string; message: string; peerRank?: number; peerRanks?: number[]; ms: number } | 'ok' | 'absent';
const names = (s: Seen, r: number) => typeof s === 'object' && (s.peerRanks ? s.peerRanks.length === 1 && s.peerRanks[0] === r : s.peerRank === r);

for (const scenario of ['absent', 'absent-big']) {
  test(`${scenario}: a collective's timeout names the rank that never called it, on every rank`, async () => {
    const outs = await run<Seen>(4, scenario, { COORD_TIMEOUT_MS: '1000' });
    assert.is(outs[3], 'absent');
    for (const [r, o] of outs.slice(0, 3).entries()) {
      assert.ok(typeof o === 'object' && o.code === 'ERR_GROUPCOMM_TIMEOUT' && names(o, 3), `rank ${r}: ${JSON.stringify(o)}`);
      assert.match(o.message, /global rank 3\b/);
    }
  });
}

test('create: a rank that never calls it is named on every other rank (group and global rank)', async () => {
  const outs = await run<Seen>(4, 'create-absent', { COORD_TIMEOUT_MS: '1500' });
  assert.is(outs[3], 'absent');
  for (const [r, o] of outs.slice(0, 3).entries()) {
    assert.ok(typeof o === 'object' && o.code === 'ERR_GROUPCOMM_TIMEOUT' && names(o, 3), `rank ${r}: ${JSON.stringify(o)}`);
    assert.match(o.message, /group rank 3 = global rank 3/);
  }
});

test('a rank killed during a tensor-dict broadcast loop is named by every survivor', async () => {
  const outs = await startRanks<Seen>(4, 'test/integration/workers/blame_worker', {
    args: ['dict-kill'], timeoutMs: 90_000, env: { COORD_STORE_PORT: String(server.port), COORD_TIMEOUT_MS: '5000' },
  }).done;
  assert.is(outs[2].signal, 'SIGKILL');
  for (const o of outs.filter((x) => x.rank !== 2)) {
    const e = o.result;
    assert.ok(typeof e === 'object' && e.code === 'ERR_GROUPCOMM_PEER_LOST' && names(e, 2), `rank ${o.rank}: ${JSON.stringify(e)}\n${o.stderr}`);
  }
});

for (const field of ['dtype', 'op', 'dim', 'collective']) {
  test(`a call whose ${field} differs on one rank fails with MISMATCH on every rank, naming the field`, async () => {
    const outs = await spawnRanks<{ first: Seen; later: Seen }>(4, 'test/integration/workers/blame_worker', {
      args: ['mismatch', field], timeoutMs: 90_000, env: { COORD_STORE_PORT: String(server.port), COORD_TIMEOUT_MS: '5000' },
    });
    for (const [r, o] of outs.entries()) {
      const e = o.first;
      assert.ok(typeof e === 'object' && e.code === 'ERR_GROUPCOMM_MISMATCH', `rank ${r}: ${JSON.stringify(e)}`);
      assert.match(e.message, new RegExp(`${field}`));
      assert.ok(e.ms < 4_000, `rank ${r} took ${e.ms}ms (its timeout is 5000)`);
      // The group has failed: a later operation rejects with the same cause.
      assert.ok(typeof o.later === 'object' && o.later.code === 'ERR_GROUPCOMM_MISMATCH', `rank ${r} later: ${JSON.stringify(o.later)}`);
    }
  });
}

for (const runtime of ['same', 'mixed'] as const) {
  test(`a member that destroyed its group cleanly is reported as having left (PEER_LEFT), never lost (${runtime})`, async () => {
    const outs = await spawnRanks<Seen | 'left'>(2, 'test/integration/workers/blame_worker', {
      args: ['leave', runtime], runtime, timeoutMs: 90_000, env: { COORD_STORE_PORT: String(server.port) },
    });
    assert.is(outs[0], 'left');
    const e = outs[1];
    assert.ok(typeof e === 'object' && e.code === 'ERR_GROUPCOMM_PEER_LEFT' && e.peerRank === 0, JSON.stringify(e));
    assert.match(e.message, /left the group/);
    assert.match(e.message, /group rank 0 = global rank 0/);
    assert.ok(e.ms < 15_000, `took ${e.ms}ms`);
  });
}

for (const kind of ['root', 'recv']) {
  test(`barrier against broadcastObject (${kind === 'root' ? 'rank 0 the root' : 'both wait'}): MISMATCH naming both calls on every rank`, async () => {
    const outs = await spawnRanks<{ first: Seen; later: Seen }>(2, 'test/integration/workers/blame_worker', {
      args: ['store-mismatch', kind, 'x'], timeoutMs: 90_000, env: { COORD_STORE_PORT: String(server.port), COORD_TIMEOUT_MS: '2000' },
    });
    for (const [r, o] of outs.entries()) {
      // Rank 0 as the root only sends and may resolve; its next call then fails.
      const e = r === 0 && kind === 'root' && o.first === 'ok' ? o.later : o.first;
      assert.ok(typeof e === 'object' && e.code === 'ERR_GROUPCOMM_MISMATCH', `rank ${r}: ${JSON.stringify(o)}`);
      assert.match(e.message, /barrier/);
      assert.match(e.message, /broadcastObject/);
      assert.is(e.peerRank, 1 - r);
      assert.ok(typeof o.later === 'object' && o.later.code === 'ERR_GROUPCOMM_MISMATCH', `rank ${r} later: ${JSON.stringify(o.later)}`);
    }
  });
}

test('a rank that names itself into another group of the same name fails alone with MISMATCH; the members form their group', async () => {
  const outs = await spawnRanks<Seen>(4, 'test/integration/workers/blame_worker', {
    args: ['ranks', 'other', 'x'], timeoutMs: 90_000, env: { COORD_STORE_PORT: String(server.port), COORD_TIMEOUT_MS: '8000' },
  });
  for (const r of [0, 1, 2]) assert.is(outs[r], 'ok', `rank ${r}: ${JSON.stringify(outs[r])}`);
  const e = outs[3];
  // It reaches the store before the group forms (it starts a second earlier); should it come after,
  // rank 0 has taken its port record back and it times out naming group rank 0.
  assert.ok(typeof e === 'object' && (e.code === 'ERR_GROUPCOMM_MISMATCH' || e.code === 'ERR_GROUPCOMM_TIMEOUT'), JSON.stringify(e));
  if (e.code === 'ERR_GROUPCOMM_MISMATCH') assert.match(e.message, /\[0, 1, 2\][\s\S]*\[0, 1, 3\]/);
});

for (const [kind, n] of [['bigger', 2], ['smaller', 2], ['members', 3]] as const) {
  for (const runtime of ['same', 'mixed'] as const) {
    test(`groupRanks differ (${kind}, ${runtime}): create fails with MISMATCH on every rank, naming both views`, async () => {
      const outs = await spawnRanks<Seen>(n, 'test/integration/workers/blame_worker', {
        args: ['ranks', kind, runtime], runtime, timeoutMs: 90_000, env: { COORD_STORE_PORT: String(server.port), COORD_TIMEOUT_MS: '8000' },
      });
      for (const [r, o] of outs.entries()) {
        assert.ok(typeof o === 'object' && o.code === 'ERR_GROUPCOMM_MISMATCH', `rank ${r}: ${JSON.stringify(o)}`);
        assert.match(o.message, /groupRanks/);
        // Both views, and who holds them, by group and global rank.
        assert.match(o.message, kind === 'members' ? /\[0, 1, 2\][\s\S]*\[0, 2, 1\]|\[0, 2, 1\][\s\S]*\[0, 1, 2\]/ : /\[0, 1\] \(world size 2\)[\s\S]*\[0, 1, 2\] \(world size 3\)|\[0, 1, 2\] \(world size 3\)[\s\S]*\[0, 1\] \(world size 2\)/);
        assert.match(o.message, /global rank \d/);
        assert.ok(o.ms < 7_000, `rank ${r} took ${o.ms}ms (its timeout is 8000)`);
      }
    });
  }
}

test.run();
