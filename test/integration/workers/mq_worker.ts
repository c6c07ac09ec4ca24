/**
 * One rank of the message-queue broadcaster tests (coord_mq.test.ts). The test runs the ranks
 * with a small ring (GROUPCOMM_MQ_SLOTS=4, GROUPCOMM_MQ_SLOT_BYTES=4096) so that messages span
 * several slots and the writer laps the readers; MQ_SOCKET_RANK (if set) is a rank told to take
 * its broadcasts over the CPU group. Reports `{ checks, failures }`.
 */
import fs from 'node:fs';
import { StatelessGroupCoordinator } from '../../../host/coordinator/coordinator.js';
import { TcpStore } from '../../../host/store/index.js';
import { tensor, type CpuTensor } from '../../../host/core/tensor.js';
import { isGroupcommError } from '../../../host/base/errors.js';
import { rankEnv, reportResult } from '../../helpers/ranks.js';
import { checker } from '../../helpers/checks.js';

const { rank, worldSize } = rankEnv();
const store = await TcpStore.create({ host: '127.0.0.1', port: Number(process.env.COORD_STORE_PORT), timeoutMs: 30_000 });
const socketRank = process.env.MQ_SOCKET_RANK === undefined ? -1 : Number(process.env.MQ_SOCKET_RANK);
if (rank === socketRank) process.env.GROUPCOMM_MQ_TRANSPORT = 'socket';

const checks = checker(rank);
const { check, failures } = checks;
const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function expectCode(p: Promise<unknown>, code: string, what: string, text?: RegExp): Promise<void> {
  try {
    await p;
    check(false, `${what}: resolved, expected ${code}`);
  } catch (e) {
    check(isGroupcommError(e) && e.code === code && (!text || text.test(e.message)), `${what}: expected ${code}${text ? ` ${text}` : ''}, got ${(e as Error).message}`);
  }
}

/** The i-th message: small most of the time, every 7th larger than the whole ring (4 × 4 KiB). */
const message = (i: number) => ({ i, text: `message ${i}`, big: i % 7 === 3 ? Array.from({ length: 5000 }, (_, k) => k + i) : [] });

async function main(): Promise<void> {
  const ranks = [...Array(worldSize).keys()];
  const g = await StatelessGroupCoordinator.create({
    groupRanks: [ranks], globalRank: rank, groupName: 'mq', rendezvous: store, timeoutMs: 30_000, useMessageQueueBroadcaster: true,
  });
  const mq = g.messageQueue;
  const others = ranks.filter((r) => r !== 0);
  if (worldSize === 1) check(mq === undefined, 'a group of one has no message queue');
  else {
    const expectShm = others.filter((r) => r !== socketRank && socketRank !== 0);
    check(same(mq?.shmReaders, expectShm) && same(mq?.socketReaders, others.filter((r) => !expectShm.includes(r))),
      `readers: shm ${mq?.shmReaders}, socket ${mq?.socketReaders} (expected shm ${expectShm})`);
  }
  // The names are unlinked once every reader has mapped the ring: a crash leaves nothing behind.
  if (rank === 0) check(fs.readdirSync('/dev/shm').filter((f) => new RegExp(`^gcpu-[0-9a-f]{12}-${process.pid}-`).test(f)).length === 0, 'no segment names left in /dev/shm');

  // 60 broadcasts in a row (the ring laps many times), a late reader, and other sources between.
  for (let i = 0; i < 60; i++) {
    if (rank === 1 && i === 20) await sleep(300); // the writer has to wait for it, then goes on
    const got = await g.broadcastObject(rank === 0 ? message(i) : undefined, 0);
    check(same(got, message(i)), `broadcast ${i}`);
    if (i % 20 === 5 && worldSize > 1) {
      const src = worldSize - 1;
      check((await g.broadcastObject(rank === src ? `from ${src}` : undefined, src)) === `from ${src}`, `broadcast from rank ${src} between`);
    }
  }
  const list: unknown[] = rank === 0 ? ['a', 2, { c: 3n }] : [null, null, null];
  await g.broadcastObjectList(list, 0);
  check(list[0] === 'a' && list[1] === 2 && (list[2] as { c: bigint }).c === 3n, 'broadcastObjectList through the queue');
  const dict = { step: 7, x: tensor(Float32Array.from({ length: 3000 }, (_, k) => k)), name: 'd' };
  const d = await g.broadcastTensorDict(rank === 0 ? dict : undefined, 0);
  check(d.step === 7 && d.name === 'd' && (d.x as CpuTensor).data[2999] === 2999, 'broadcastTensorDict (metadata through the queue)');

  // A reader that never reads: the writer's wait ends at its timeout, naming that reader.
  if (worldSize > 2 && socketRank !== 1 && socketRank !== 0) {
    if (rank === 0) {
      const big = Array.from({ length: 20_000 }, (_, k) => k);
      await expectCode(g.broadcastObject(big, 0, { timeoutMs: 500 }), 'ERR_GROUPCOMM_TIMEOUT', 'writer blocked by a reader that never reads', /group rank 1 = global rank 1/);
    } else if (rank === socketRank) {
      check((await g.broadcastObject<number[]>(undefined, 0)).length === 20_000, 'a socket reader gets the message the ring could not take');
    } else if (rank !== 1) {
      await expectCode(g.broadcastObject(undefined, 0, { timeoutMs: 1500 }), 'ERR_GROUPCOMM_TIMEOUT', 'reader of a message that never ends');
    } else {
      // Rank 1 stops calling until the writer gave up, then makes the same call (a rank that
      // skipped it would have called something else there: a mismatch, docs/coordinator.md).
      await sleep(1_000);
      await g.broadcastObject(undefined, 0, { timeoutMs: 1500 }).catch(() => {});
    }
  }
  await g.barrier();
  await g.destroy();
  await expectCode(g.broadcastObject(1, 0), 'ERR_GROUPCOMM_DESTROYED', 'broadcast after destroy');
}

/** Group rank 0 dies in the middle of a stream of broadcasts: every reader fails naming it. */
async function killed(): Promise<void> {
  const g = await StatelessGroupCoordinator.create({
    groupRanks: [[...Array(worldSize).keys()]], globalRank: rank, groupName: 'mqk', rendezvous: store, timeoutMs: 20_000, useMessageQueueBroadcaster: true,
  });
  try {
    for (let i = 0; ; i++) {
      if (rank === 0 && i === 10) process.kill(process.pid, 'SIGKILL');
      check(same(await g.broadcastObject(rank === 0 ? message(i) : undefined, 0), message(i)), `broadcast ${i} before the kill`);
    }
  } catch (e) {
    const err = e as { code?: string; peerRank?: number; message?: string };
    check(isGroupcommError(e) && (err.code === 'ERR_GROUPCOMM_PEER_LOST' || err.code === 'ERR_GROUPCOMM_TIMEOUT') && err.peerRank === 0 &&
      /group rank 0 = global rank 0/.test(err.message ?? ''), `a dead writer is named: ${err.code} ${err.message}`);
  }
  await g.abort('test done');
}

/**
 * Group rank 0 publishes three messages and dies before any reader reads; the readers start
 * once its death is known to them (their CPU links saw it): what it published is still read, in
 * order, and only then does a reader fail naming it.
 */
async function killedBeforeRead(): Promise<void> {
  const g = await StatelessGroupCoordinator.create({
    groupRanks: [[...Array(worldSize).keys()]], globalRank: rank, groupName: 'mqkr', rendezvous: store, timeoutMs: 20_000, useMessageQueueBroadcaster: true,
  });
  try {
    if (rank === 0) {
      for (let i = 0; i < 3; i++) await g.broadcastObject(message(i), 0);
      process.kill(process.pid, 'SIGKILL');
    }
    await sleep(1500);
    for (let i = 0; i < 3; i++) check(same(await g.broadcastObject(undefined, 0), message(i)), `broadcast ${i}, published before the kill`);
    await expectCode(g.broadcastObject(undefined, 0), 'ERR_GROUPCOMM_PEER_LOST', 'the broadcast after the last one published', /group rank 0 = global rank 0/);
  } catch (e) {
    check(false, `threw before the published messages were read: ${(e as Error).message}`);
  }
  await g.abort('test done');
}

try {
  if (process.env.MQ_SCENARIO === 'killed') await killed();
  else if (process.env.MQ_SCENARIO === 'killed-before-read') await killedBeforeRead();
  else await main();
  reportResult({ checks: checks.count, failures });
} catch (e) {
  reportResult({ checks: checks.count, failures: [...failures, `rank ${rank}: threw ${(e as Error).stack ?? e}`] });
} finally {
  await store.close();
}
