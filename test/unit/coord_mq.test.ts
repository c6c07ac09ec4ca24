/**
 * The message-queue broadcaster (host/coordinator/mq.ts) in one process: MessageQueue.create
 * over the store channel and CPU group of in-process coordinators (real sockets, a real
 * shared-memory segment mapped by every reader), each rank's settings given before its create
 * (they are read per call). A small ring (4 slots of 4 KiB) so messages span chunks and the
 * writer laps the readers. Which readers take the ring and which the CPU group; broadcasts
 * with readers polling and readers sleeping on doorbells; a writer blocked by a reader that
 * never reads names it; a reader with nothing to read times out naming rank 0; close() fails
 * the waiting readers (rank 0 left) and every later call; takePublished hands over only
 * messages published in full.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { StatelessGroupCoordinator } from '../../host/coordinator/coordinator.js';
import { MessageQueue } from '../../host/coordinator/mq.js';
import type { Channels } from '../../host/coordinator/channels.js';
import { TcpStore, TcpStoreServer } from '../../host/store/index.js';
import { Deadline } from '../../host/base/deadline.js';
import { encodeObject } from '../../host/pg/codec.js';
import { failure } from '../helpers/rejects.js';

const opened: { close(): Promise<unknown> }[] = [];
const track = <T extends { close(): Promise<unknown> }>(x: T): T => (opened.push(x), x);
test.after.each(async () => {
  for (const x of opened.splice(0).reverse()) await x.close().catch(() => {});
});

let seq = 0;
async function world(n: number): Promise<StatelessGroupCoordinator[]> {
  const server = track(await TcpStoreServer.listen({ port: 0 }));
  const stores = await Promise.all(Array.from({ length: n }, async () => track(await TcpStore.create({ port: server.port, timeoutMs: 5_000 }))));
  const name = `mqu${seq++}`;
  const groups = await Promise.all(stores.map((rendezvous, r) => StatelessGroupCoordinator.create({
    groupRanks: [[...Array(n).keys()]], globalRank: r, groupName: name, rendezvous, timeoutMs: 5_000,
  })));
  for (const g of groups) track({ close: () => g.destroy({ lingerMs: 50 }) });
  return groups;
}

type Env = Record<string, string | undefined>;
const KEYS = ['GROUPCOMM_MQ_SLOTS', 'GROUPCOMM_MQ_SLOT_BYTES', 'GROUPCOMM_MQ_SPIN_US', 'GROUPCOMM_MQ_TRANSPORT'];

/** Each rank's MessageQueue, rank r's settings from `env(r)` (read before create's first await). */
async function queues(gs: StatelessGroupCoordinator[], env: (r: number) => Env = () => ({}), timeoutMs = 3_000): Promise<MessageQueue[]> {
  const saved = KEYS.map((k) => process.env[k]);
  const ps: Promise<MessageQueue>[] = [];
  try {
    for (const [r, g] of gs.entries()) {
      const e: Env = { GROUPCOMM_MQ_SLOTS: '4', GROUPCOMM_MQ_SLOT_BYTES: '4096', ...env(r) };
      for (const k of KEYS) {
        if (e[k] === undefined) delete process.env[k];
        else process.env[k] = e[k];
      }
      const ch = (g as unknown as { ch: Channels }).ch;
      ps.push(MessageQueue.create({ pg: ch.pg!, cpu: ch.cpu!, rank: r, worldSize: gs.length, label: 'mqt_0' }, { timeoutMs }));
    }
  } finally {
    KEYS.forEach((k, i) => { if (saved[i] === undefined) delete process.env[k]; else process.env[k] = saved[i]; });
  }
  const qs = await Promise.all(ps);
  for (const q of qs) track({ close: async () => q.close() });
  return qs;
}

const dl = (ms = 3_000) => new Deadline(ms, undefined, 'test');
/** The i-th message: every 3rd larger than the whole ring (4 × 4 KiB). */
const message = (i: number) => ({ i, big: i % 3 === 1 ? Array.from({ length: 3000 }, (_, k) => k * i) : [] });

async function stream(qs: MessageQueue[], count: number, late?: number): Promise<void> {
  await Promise.all(qs.map(async (q, r) => {
    for (let i = 0; i < count; i++) {
      if (r === late && i === 2) await new Promise((res) => setTimeout(res, 100));
      const m = message(i);
      const got = await q.broadcastObj(r === 0 ? m : undefined, dl());
      if (r === 0) assert.is(got, m);
      else assert.equal(got, m);
    }
  }));
}

test('three ranks on one host: both readers map the ring; messages spanning chunks, the writer lapping the readers', async () => {
  const qs = await queues(await world(3));
  assert.equal([[...qs[0].shmReaders], [...qs[0].socketReaders]], [[1, 2], []]);
  assert.equal([[...qs[1].shmReaders], [...qs[2].shmReaders]], [[1, 2], [1, 2]]);
  await stream(qs, 12, 1);
});

test('readers that sleep on doorbells at once (no spin), and readers that only poll', async () => {
  await stream(await queues(await world(3), () => ({ GROUPCOMM_MQ_SPIN_US: '0' })), 9, 2);
  await stream(await queues(await world(2), () => ({ GROUPCOMM_MQ_SPIN_US: '10000000' })), 9, 1);
});

test('a reader told to use sockets reads over the CPU group; rank 0 told so: every reader does, no segment', async () => {
  let qs = await queues(await world(3), (r) => ({ GROUPCOMM_MQ_TRANSPORT: r === 2 ? 'socket' : 'auto' }));
  assert.equal([[...qs[0].shmReaders], [...qs[0].socketReaders]], [[1], [2]]);
  await stream(qs, 6);
  qs = await queues(await world(3), (r) => ({ GROUPCOMM_MQ_TRANSPORT: r === 0 ? 'socket' : undefined }));
  assert.equal([[...qs[0].shmReaders], [...qs[0].socketReaders]], [[], [1, 2]]);
  assert.equal([...qs[1].shmReaders], []);
  assert.is(qs[1].takePublished(), undefined);
  await stream(qs, 4);
});

test('a writer blocked by readers that never read names them; a reader with nothing to read names rank 0', async () => {
  const qs = await queues(await world(3));
  const big = Array.from({ length: 20_000 }, (_, k) => k);
  let e = await failure(qs[0].broadcastObj(big, dl(300)));
  assert.equal([e.code, e.rank, e.peerRanks], ['ERR_GROUPCOMM_TIMEOUT', 0, [1, 2]]);
  assert.match(e.message, /^mqt_0: message queue: group ranks 1, 2 did not read \(all 4 slots of the ring are full\) within 300ms/);
  const qs2 = await queues(await world(2));
  e = await failure(qs2[0].broadcastObj(big, dl(200)));
  assert.equal([e.code, e.peerRanks], ['ERR_GROUPCOMM_TIMEOUT', [1]]);
  assert.match(e.message, /group rank 1 did not read/);
  e = await failure(qs2[1].broadcastObj(undefined, dl(150)));
  // What was published before the writer gave up is read; the message never ends.
  assert.equal([e.code, e.rank, e.peerRank], ['ERR_GROUPCOMM_TIMEOUT', 1, 0]);
  const qs3 = await queues(await world(2), () => ({ GROUPCOMM_MQ_SPIN_US: '0' }));
  e = await failure(qs3[1].broadcastObj(undefined, dl(150)));
  assert.equal([e.code, e.rank, e.peerRank], ['ERR_GROUPCOMM_TIMEOUT', 1, 0]);
  assert.match(e.message, /^mqt_0: message queue: nothing from group rank 0 within 150ms/);
  const qs4 = await queues(await world(2), () => ({ GROUPCOMM_MQ_SPIN_US: '10000000' }));
  const t0 = performance.now();
  e = await failure(qs4[1].broadcastObj(undefined, dl(150)));
  assert.is(e.code, 'ERR_GROUPCOMM_TIMEOUT');
  assert.ok(performance.now() - t0 < 2_000, 'the spin stops at the deadline');
});

test('close: a waiting reader fails at once naming rank 0 as having left; later calls fail; idempotent', async () => {
  const qs = await queues(await world(3), (r) => ({ GROUPCOMM_MQ_SPIN_US: r === 1 ? '0' : '10000000' }));
  const waiting = [failure(qs[1].broadcastObj(undefined, dl())), failure(qs[2].broadcastObj(undefined, dl()))];
  await new Promise((r) => setTimeout(r, 50));
  qs[0].close();
  qs[0].close();
  for (const e of await Promise.all(waiting.slice(1))) {
    assert.equal([e.code, e.rank, e.peerRank], ['ERR_GROUPCOMM_PEER_LEFT', 2, 0]);
    assert.match(e.message, /group rank 0 closed the message queue/);
  }
  qs[1].close();
  const e1 = await waiting[0];
  assert.ok(['ERR_GROUPCOMM_PEER_LEFT', 'ERR_GROUPCOMM_PEER_LOST'].includes(e1.code), e1.message);
  const e = await failure(qs[0].broadcastObj(1, dl()));
  assert.equal([e.code, e.rank], ['ERR_GROUPCOMM_PEER_LOST', 0]);
  assert.match(e.message, /^mqt_0: the message queue is closed/);
  assert.is((await failure(qs[1].broadcastObj(undefined, dl()))).code, 'ERR_GROUPCOMM_PEER_LOST');
  assert.is((await failure(qs[2].broadcastObj(undefined, dl()))).code, 'ERR_GROUPCOMM_PEER_LEFT');
});

test('takePublished: whole messages published and not yet read, in order; none on rank 0, a socket reader or after close', async () => {
  const qs = await queues(await world(3), (r) => ({ GROUPCOMM_MQ_TRANSPORT: r === 2 ? 'socket' : 'auto' }));
  // Rank 2 reads over the CPU group: it must take its copies for the writer to finish.
  // One chunk, two chunks, one chunk: the whole ring.
  const msgs = ['a', 'b'.repeat(6000), 'c'];
  const r2 = (async () => { for (let i = 0; i < 3; i++) await qs[2].broadcastObj(undefined, dl()); })();
  for (const m of msgs) await qs[0].broadcastObj(m, dl());
  await r2;
  assert.is(qs[0].takePublished(), undefined);
  assert.is(qs[2].takePublished(), undefined);
  for (const m of msgs) assert.equal([...qs[1].takePublished() ?? []], [...encodeObject(m)]);
  assert.is(qs[1].takePublished(), undefined);
  // Reading goes on after what was taken.
  const next = qs[1].broadcastObj(undefined, dl());
  const r2b = qs[2].broadcastObj(undefined, dl());
  await qs[0].broadcastObj(message(4), dl());
  assert.equal(await next, message(4));
  await r2b;
  const r2c = qs[2].broadcastObj(undefined, dl());
  await qs[0].broadcastObj(message(5), dl());
  await r2c;
  qs[1].close();
  assert.is(qs[1].takePublished(), undefined);
});

test.run();
