// StatelessProcessGroup across real processes, the hard cases: unawaited ops, two senders to
// one receiver, re-creation on a live store, key growth, hostile values, and a rank that dies.
// The store server runs in this test process so it can count keys and survive any rank.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { TcpStoreServer } from '../../host/store/server.js';
import { TcpStore } from '../../host/store/client.js';
import { spawnRanks, startRanks } from '../helpers/ranks.js';

const WORKER = 'test/integration/workers/pg_worker';
let server: TcpStoreServer;
let probe: TcpStore;

test.before(async () => {
  server = await TcpStoreServer.listen({ host: '127.0.0.1', port: 0 });
  probe = await TcpStore.create({ host: '127.0.0.1', port: server.port, timeoutMs: 10_000 });
});
test.after(async () => {
  await probe.close();
  await server.close();
});

const env = (extra: Record<string, string> = {}) => ({ PG_PORT: String(server.port), ...extra });

test('hundreds of unawaited ops on 3 ranks still match by program order', async () => {
  const res = await spawnRanks<{ bad: number; count: number }>(3, WORKER, { args: ['inflight'], env: env(), timeoutMs: 50_000 });
  for (const r of res) {
    assert.is(r.bad, 0);
    assert.is(r.count, 300 + 300 + 30);
  }
});

test('two senders to one receiver never collide', async () => {
  const [r0] = await spawnRanks<string[]>(3, WORKER, { args: ['twoSenders'], env: env(), timeoutMs: 50_000 });
  const want: string[] = [];
  for (let i = 0; i < 50; i++) want.push(`2:${i}`, `1:${i}`);
  assert.equal(r0, want);
});

test('destroy and re-create on the same store reads nothing stale', async () => {
  const res = await spawnRanks<{ epochs: number[]; seen: string[] }>(3, WORKER, { args: ['recreate'], env: env(), timeoutMs: 50_000 });
  const epochs = res[0].epochs;
  // A clean destroy removes every key of the group, its epoch counter included: each
  // incarnation starts again at epoch 1 and reads nothing of the one before.
  assert.equal(epochs, [1, 1, 1], `epochs ${epochs}`);
  res.forEach((r, rank) => {
    assert.equal(r.epochs, epochs);
    const prev = (rank + 2) % 3;
    assert.equal(r.seen, [0, 1, 2].flatMap((round) => [`round ${round} from ${prev}`, `bcast ${round}`]));
  });
});

test('store key count stays bounded after 10k messages per rank', async () => {
  const before = await probe.numKeys();
  const res = await spawnRanks<{ live: number }>(2, WORKER, { args: ['keys'], env: env(), timeoutMs: 55_000 });
  // While the group is alive: join/epoch keys plus at most two collectives' worth per rank.
  for (const r of res) assert.ok(r.live - before <= 8, `live keys ${r.live} (before ${before})`);
  // After destroy only the group's epoch counter stays (it may already exist from earlier tests).
  assert.ok((await probe.numKeys()) - before <= 1);
});

test('garbage under a recv key: ERR_GROUPCOMM_PROTOCOL naming key and src, no crash', async () => {
  const res = await spawnRanks<{ first?: { code: string; peerRank: number; key: string }; second?: string }>(2, WORKER, { args: ['hostile'], env: env(), timeoutMs: 50_000 });
  assert.is(res[1].first!.code, 'ERR_GROUPCOMM_PROTOCOL');
  assert.is(res[1].first!.peerRank, 0);
  assert.match(res[1].first!.key, /\/to\/1\/p\/0\/0$/);
  assert.is(res[1].second, 'after the garbage');
});

test('a rank that dies makes the others fail within their timeout, naming it', async () => {
  const victim = 2;
  const run = startRanks<{ error: { code: string; peerRank?: number; peerRanks?: number[] }; elapsedMs: number }>(4, WORKER, {
    args: ['die'], env: env({ PG_VICTIM: String(victim) }), timeoutMs: 50_000,
  });
  const outs = await run.done;
  for (const o of outs) {
    if (o.rank === victim) {
      assert.is(o.signal, 'SIGKILL');
      continue;
    }
    assert.ok(o.result, `rank ${o.rank} reported nothing: ${o.stderr}`);
    const { error, elapsedMs } = o.result!;
    assert.is(error.code, 'ERR_GROUPCOMM_TIMEOUT');
    assert.ok(error.peerRanks!.includes(victim), JSON.stringify(error));
    assert.ok(elapsedMs < 3000 + 5000, `took ${elapsedMs} ms`);
  }
});

test('when rank 0 (the store host) dies the others fail with PEER_LOST naming rank 0', async () => {
  const net = await import('node:net');
  const port = await new Promise<number>((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => resolve(p));
    });
  });
  const outs = await startRanks<{ error: { code: string; peerRank?: number } }>(3, WORKER, {
    args: ['die'], env: { PG_PORT: String(port), PG_OWNED: '1', PG_VICTIM: '0' }, timeoutMs: 50_000,
  }).done;
  for (const o of outs.slice(1)) {
    assert.ok(o.result, `rank ${o.rank} reported nothing: ${o.stderr}`);
    assert.ok(['ERR_GROUPCOMM_PEER_LOST', 'ERR_GROUPCOMM_TIMEOUT'].includes(o.result!.error.code), JSON.stringify(o.result));
    assert.is(o.result!.error.peerRank, 0);
  }
});

test('a SIGKILLed rank: survivors reclaim its 1,000 queued messages and a 1 MiB broadcast, and leave nothing', async () => {
  const before = await probe.numKeys() + 1; // + the test's own 'victim exited' key while the ranks run
  const run = startRanks<{ queued: number; held: number[]; closeMs: number }>(3, WORKER, {
    args: ['reclaim'], env: env(), timeoutMs: 50_000,
  });
  run.children[1].once('exit', () => {
    // A moment for the server (this process) to handle the dead connections' close.
    setTimeout(() => void probe.set('reclaim-test/victim-exited', '1').catch(() => {}), 200);
  });
  const outs = await run.done;
  for (const k of ['victim-exited', 'reclaimed/0', 'reclaimed/2']) await probe.deleteKey(`reclaim-test/${k}`);
  assert.is(outs[1].signal, 'SIGKILL');
  for (const o of [outs[0], outs[2]]) assert.ok(o.result, `rank ${o.rank} reported nothing: ${o.stderr}`);
  // Really queued (seen by the sender, after its writes): the 1,000 messages, the stored
  // broadcast value and its ack counter.
  assert.ok(outs[0].result!.queued - before >= 1002, `queued ${outs[0].result!.queued} (before ${before})`);
  // Exactly one survivor holds the dead rank's mailbox (one subscriber per prefix).
  assert.equal([...outs[0].result!.held, ...outs[2].result!.held], [1]);
  // Everything is gone: mailbox, broadcast value and ack, and the group's own keys (the
  // departure handshake waited only for the survivors).
  assert.is(await probe.numKeys(), before - 1);
});

test.run();
