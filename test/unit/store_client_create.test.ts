// TcpStore.create's and fromEnv's choices (host/store/client.ts): a bad worldSize, rank, port or
// secret is refused before anything listens or connects, naming what is wrong, and the edges of
// each range are accepted; fromEnv hosts the store at RANK 0 without a launcher (torch's env://
// rule) and is a client under one, at any other rank, or when told so; with worldSize it joins
// under its rank, so the host can name the ranks still missing.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { TcpStore, TcpStoreServer } from '../../host/index.js';
import { failure, rejectsWith } from '../helpers/rejects.js';
import { withEnv } from '../helpers/env.js';
import { scriptedServer } from '../helpers/fake_store_server.js';

test('create refuses a bad worldSize, rank, port or secret, naming it; the edges of each range are accepted', async () => {
  const refusals: [Parameters<typeof TcpStore.create>[0], RegExp][] = [
    // A client: the server's listen would refuse a bad worldSize too, in its own words.
    ...[0, -1, 1.5].map((w): [Parameters<typeof TcpStore.create>[0], RegExp] => [{ port: 1, worldSize: w }, new RegExp(`^TcpStore: worldSize must be a positive integer, got ${w}`)]),
    ...[-1, 1.5, 2].map((r): [Parameters<typeof TcpStore.create>[0], RegExp] => [{ port: 0, isServer: true, worldSize: 2, rank: r }, new RegExp(`rank must be an integer in \\[0, worldSize\\), got ${r}`)]),
    ...[-1, 65536, 1.5].map((p): [Parameters<typeof TcpStore.create>[0], RegExp] => [{ port: p }, new RegExp(`bad port ${p}`)]),
    [{ port: 0 }, /a client needs the server's port \(0 only with isServer\)/],
    [{ port: 1, secret: '' }, /^TcpStore: the secret must not be empty/], // refused before connecting
  ];
  for (const [opts, why] of refusals) {
    const e = await rejectsWith(TcpStore.create({ timeoutMs: 2000, ...opts }), 'ERR_GROUPCOMM_INVALID_ARGUMENT');
    assert.match(e.message, why);
  }
  // Accepted: the last rank of a group, a rank without a worldSize, a group of one (it joins itself).
  for (const opts of [{ worldSize: 2, rank: 1, waitForWorkers: false }, { rank: 7 }, { worldSize: 1, rank: 0 }]) {
    const s = await TcpStore.create({ port: 0, isServer: true, timeoutMs: 5000, ...opts });
    await s.close();
  }
  // Port 65535 is a port: nothing listens there, so the connection fails, but not as a bad argument.
  const e = await failure(TcpStore.create({ port: 65535, timeoutMs: 300 }));
  assert.is.not(e.code, 'ERR_GROUPCOMM_INVALID_ARGUMENT', e.message);
});

test('create\'s signal reaches the steps after the connection: a server that never answers LIMITS, or the join\'s ADD, is left at the abort', async () => {
  for (const held of [0xe7, 4]) { // LIMITS; the join
    let hold = false;
    // The scripted server answers neither JOIN_RANK nor ADD: with 4 the join itself is held.
    const f = await scriptedServer(() => (op) => (hold && op === held ? 0 : undefined));
    try {
      hold = true;
      const ctl = new AbortController();
      setTimeout(() => ctl.abort(new Error('enough')), 100);
      const t0 = performance.now();
      const e = await failure(TcpStore.create({ port: f.port, timeoutMs: 8000, worldSize: 2, rank: 1, signal: ctl.signal }));
      assert.is(e.code, 'ERR_GROUPCOMM_ABORTED', `${held}: ${e.message}`);
      assert.ok(performance.now() - t0 < 4000, `request ${held} held: create waited ${performance.now() - t0} ms after the abort at 100 ms`);
    } finally {
      await f.close();
    }
  }
});

test('fromEnv: RANK 0 without a launcher hosts the store; under a launcher, at another rank, or with isServer: false it is a client; with worldSize it joins under its rank', async () => {
  const probe = await TcpStoreServer.listen({ host: '127.0.0.1', port: 0 });
  const free = probe.port;
  await probe.close();
  const base = { MASTER_ADDR: '127.0.0.1', WORLD_SIZE: '3', GROUPCOMM_RUN_ID: undefined, TORCHELASTIC_RUN_ID: undefined };
  await withEnv({ ...base, MASTER_PORT: String(free), RANK: '0' }, async () => {
    const host = await TcpStore.fromEnv({ timeoutMs: 5000 });
    try {
      assert.ok(host.publishesLocally, 'RANK 0 without a launcher hosts the store in this process');
      assert.is(host.port, free);
    } finally {
      await host.close();
    }
  });
  const server = await TcpStoreServer.listen({ host: '127.0.0.1', port: 0 });
  try {
    const port = String(server.port);
    for (const [env, opts, label] of [
      [{ RANK: '0', GROUPCOMM_RUN_ID: 'run1' }, {}, 'under groupcomm launch'],
      [{ RANK: '0', TORCHELASTIC_RUN_ID: 'run2' }, {}, 'under torchrun'],
      [{ RANK: '1' }, {}, 'another rank'],
      [{ RANK: '0' }, { isServer: false }, 'isServer: false'],
    ] as const) {
      await withEnv({ ...base, MASTER_PORT: port, ...env }, async () => {
        const c = await TcpStore.fromEnv({ timeoutMs: 5000, ...opts });
        try {
          assert.not.ok(c.publishesLocally, `${label}: a client`);
          await c.set('k', label);
          assert.is(Buffer.from(await c.get('k')).toString(), label);
        } finally {
          await c.close();
        }
      });
    }
    // A group of 3 on that server: rank 2 joins by number, so the wait names ranks 0 and 1.
    await withEnv({ ...base, MASTER_PORT: port, RANK: '2', GROUPCOMM_RUN_ID: 'run3' }, async () => {
      const c = await TcpStore.fromEnv({ timeoutMs: 5000, worldSize: 3 });
      try {
        const e = await rejectsWith(server.waitForWorkers({ worldSize: 3, timeoutMs: 200 }), 'ERR_GROUPCOMM_TIMEOUT');
        assert.match(e.message, 'missing ranks: [0, 1]');
      } finally {
        await c.close();
      }
    });
  } finally {
    await server.close();
  }
});

test.run();
