/**
 * Which error a coordinator's create reports when the store channel's join and the CPU mesh both
 * run out of time (host/coordinator/channels.ts, bothVerdict): the join's, which names exactly
 * the ranks that never arrived. The chaos test once saw group rank 0 name [1, 2] for a stopped
 * rank 1: rank 2 was in the join but had no mesh address yet when the mesh's timer fired first.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import net from 'node:net';
import { bothVerdict } from '../../host/coordinator/channels.js';
import { StatelessGroupCoordinator } from '../../host/coordinator/coordinator.js';
import { StatelessProcessGroup } from '../../host/pg/group.js';
import { TcpStore } from '../../host/store/index.js';
import { timeoutError, peerLostError } from '../../host/base/errors.js';
import { failure } from '../helpers/rejects.js';

const rejected = (reason: unknown): PromiseSettledResult<unknown> => ({ status: 'rejected', reason });
const ok: PromiseSettledResult<unknown> = { status: 'fulfilled', value: 1 };

test('two timeouts: the join\'s verdict, whichever came first', () => {
  const join = timeoutError('join', { peerRanks: [1] });
  const mesh = timeoutError('mesh', { peerRanks: [1, 2] });
  assert.is(bothVerdict(rejected(join), rejected(mesh), mesh), join);
  assert.is(bothVerdict(rejected(join), rejected(mesh), join), join);
});

test('otherwise the first failure', () => {
  const join = timeoutError('join', { peerRanks: [1] });
  const lost = peerLostError('mesh', { peerRank: 2 });
  assert.is(bothVerdict(rejected(join), rejected(lost), lost), lost);
  assert.is(bothVerdict(ok, rejected(lost), lost), lost);
  const mesh = timeoutError('mesh', { peerRanks: [1, 2] });
  assert.is(bothVerdict(ok, rejected(mesh), mesh), mesh);
  assert.is(bothVerdict(rejected(lost), rejected(mesh), lost), lost);
});

async function freePorts(n: number): Promise<number[]> {
  const servers = await Promise.all(Array.from({ length: n }, () => new Promise<net.Server>((res) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => res(s));
  })));
  const ports = servers.map((s) => (s.address() as net.AddressInfo).port);
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  return ports;
}

test('group rank 0 names only the rank that never came, not one that joined without a mesh address', async () => {
  // Group [0, 1, 2]: rank 1 never calls create; rank 2 joins the store channel (a bare process
  // group on the group's store) but never publishes a CPU address. Both of rank 0's rendezvous
  // time out at the same deadline; the mesh's would name [1, 2].
  const [device, cpu, storePort] = await freePorts(3);
  const created = failure(StatelessGroupCoordinator.create({
    groupRanks: [[0, 1, 2]], globalRank: 0, globalWorldSize: 3, groupName: 'verdict',
    groupPorts: [[device, cpu, storePort]], host: '127.0.0.1', timeoutMs: 1500,
  }));
  let store: TcpStore | undefined;
  for (let i = 0; i < 50 && !store; i++) {
    store = await TcpStore.create({ host: '127.0.0.1', port: storePort, timeoutMs: 200 }).catch(() => undefined);
  }
  assert.ok(store, 'rank 0 never listened');
  const joined = failure(StatelessProcessGroup.create({ store: store!, rank: 2, worldSize: 3, groupName: 'verdict_0', timeoutMs: 1500 }));
  const e = await created;
  assert.is(e.code, 'ERR_GROUPCOMM_TIMEOUT', e.message);
  assert.equal(e.peerRanks, [1], e.message);
  await joined;
  await store!.close();
});

test.run();
