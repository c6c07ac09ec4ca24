/**
 * The mesh (host/cpu/mesh.ts) where cpu_mesh_more stops: a pair on a ring one way and TCP the
 * other ('mixed', when one side cannot map the other's segment), and a liveness loss that also
 * cuts the unconnected peers at the silent peer's host whose listener is gone — never a connected
 * peer or one that departed (itself has no address to probe). Meshes without a group, over loopback, real file.store.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Mesh, type MeshOptions } from '../../host/cpu/mesh.js';
import { Handshake } from '../../host/cpu/link/handshake.js';
import { meshFile } from '../helpers/mesh_file.js';
import { ErrorCode, isGroupcommError, type GroupcommError } from '../../host/base/errors.js';
import { withEnv } from '../helpers/env.js';

const file = meshFile();
let groups = 0;
const opts = file.opts;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('a ring one way, TCP the other: transportOf says mixed on both sides', async () => {
  groups++;
  const g = `meshl-mixed-${groups}`;
  // Rank 1 cannot map rank 0's segment (as if /dev/shm were not shared): rank 0 falls back to
  // TCP for sending to 1, while rank 1 still sends to 0 through the ring rank 0 mapped.
  type Take = typeof Handshake.prototype.take;
  const take: Take = Handshake.prototype.take;
  Handshake.prototype.take = function (this: Handshake, ...a: Parameters<Take>) {
    return (this as unknown as { o: { rank: number } }).o.rank === 1 ? undefined : take.apply(this, a);
  } as Take;
  let ms: Mesh[] = [];
  try {
    ms = await Promise.all([0, 1].map((r) => Mesh.connect(opts(g, r, 2, { transport: 'shm' }))));
  } finally {
    Handshake.prototype.take = take;
  }
  try {
    assert.is(ms[0].transportOf(1), 'mixed');
    assert.is(ms[1].transportOf(0), 'mixed');
  } finally {
    await Promise.all(ms.map((m) => m.close()));
  }
});

test('a liveness loss also cuts the unconnected peers at that host that do not answer; not a connected or a departed peer', async () => {
  groups++;
  const g = `meshl-cut-${groups}`;
  // loose: a starved machine fires timers late
  await withEnv({ GROUPCOMM_LIVENESS_MS: '1000' }, async () => {
    // Five ranks, all at 127.0.0.1: rank 0 is connected to 1 and 4 (ring) and 3 (registered
    // below), not to 2.
    const ms = await Promise.all([0, 1, 2, 3, 4].map((r) => Mesh.connect(opts(g, r, 5))));
    const lost: GroupcommError[] = [];
    ms[0].onLost((e) => lost.push(e));
    const listener = (m: Mesh) => (m as unknown as { listener: { close(): void } }).listener;
    ms[0].register(3, '2:1:0', { dest: () => null, done: () => {}, fail: () => {} });
    const end = Date.now() + 5000;
    while (ms[0].transportOf(3) !== 'tcp' && Date.now() < end) await sleep(5);
    assert.is(ms[0].transportOf(3), 'tcp');
    // Rank 3 departs (goodbye; its listener goes): its silence from then on is no loss.
    await ms[3].close();
    // Unreachable at the silent peer's host: rank 2 (not connected to rank 0: cut with rank 1)
    // and rank 4 (connected and still heard: not cut).
    listener(ms[2]).close();
    listener(ms[4]).close();
    await sleep(50);
    // Rank 1 stops its heartbeats (stuck); its listener still answers.
    (ms[1] as unknown as { stopLiveness?: () => void }).stopLiveness?.();
    const until = Date.now() + 6000;
    while (!lost.length && Date.now() < until) await sleep(10);
    assert.is(lost.length, 1, 'rank 3\'s silence after its goodbye does not stop rank 1\'s loss');
    assert.ok(isGroupcommError(lost[0], ErrorCode.PEER_LOST), lost[0].message);
    assert.equal([lost[0].rank, lost[0].peerRank, lost[0].peerRanks], [0, 1, [1, 2]]);
    assert.match(lost[0].message, /lost ranks 1, 2 \(nothing received for \d+ ms.*; unreachable with them: rank 2\)$/);
    await Promise.all(ms.map((m) => m.close()));
  });
});

test.run();
