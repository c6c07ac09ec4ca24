/**
 * CpuGroup.create and the constructor (host/cpu/group.ts), beyond cpu_create's refusals: the
 * limits accepted (maxFrameBytes 1), who a refusal names (the secret's and the exposure check's
 * wording, new CpuGroup() pointing at create), where a group listens and what it advertises when
 * no host or a wildcard is given (the route toward MASTER_ADDR), and transport 'tcp' keeping the
 * shared-segment allReduce off.
 */
import { test } from 'uvu';
import fs from 'node:fs';
import * as assert from 'uvu/assert';
import { CpuGroup } from '../../host/cpu/group.js';
import { Segment } from '../../host/cpu/shm.js';
import { TcpStore } from '../../host/store/client.js';
import { tensor } from '../../host/core/tensor.js';
import { isGroupcommError, type GroupcommError } from '../../host/base/errors.js';

// The refusals below are the defaults' (no secret, not insecure); MASTER_ADDR is set per case.
delete process.env.GROUPCOMM_SECRET;
delete process.env.GROUPCOMM_INSECURE;
delete process.env.GROUPCOMM_SOCKET_IFNAME;
delete process.env.MASTER_ADDR;

let store: TcpStore;
let n = 0;
const live = new Set<CpuGroup>();
const name = () => `create-more-${n++}`;
const failure = (p: Promise<unknown>) => p.then((g) => { void (g as CpuGroup).abort('x'); return undefined; }, (e: GroupcommError) => e);

test.before(async () => {
  store = await TcpStore.create({ host: '127.0.0.1', port: 0, isServer: true, timeoutMs: 10_000 });
});
test.after.each(async () => {
  delete process.env.MASTER_ADDR;
  await Promise.all([...live].map((g) => g.abort('test over')));
  live.clear();
});
test.after(() => store.close());

test('maxFrameBytes 1 is accepted (only 0 and below are refused)', async () => {
  const g = await CpuGroup.create({ store, rank: 0, worldSize: 1, groupName: name(), maxFrameBytes: 1, timeoutMs: 2_000 });
  live.add(g);
  assert.is(g.worldSize, 1);
});

test('refusals name who refused: an empty secret ("CpuGroup: …"), a wildcard host without a secret (the group and rank)', async () => {
  const e1 = await failure(CpuGroup.create({ store, rank: 0, worldSize: 1, groupName: name(), secret: '', timeoutMs: 2_000 }));
  assert.ok(isGroupcommError(e1, 'ERR_GROUPCOMM_INVALID_ARGUMENT'), String(e1));
  assert.is(e1!.message, 'CpuGroup: the secret must not be empty');
  const groupName = name();
  const e2 = await failure(CpuGroup.create({ store, rank: 0, worldSize: 1, groupName, host: '0.0.0.0', timeoutMs: 2_000 }));
  assert.is(e2?.code, 'ERR_GROUPCOMM_AUTH', String(e2));
  assert.ok(e2!.message.startsWith(`CPU group '${groupName}' rank 0: refusing to listen on 0.0.0.0`), e2!.message);
});

test('new CpuGroup() is refused, pointing at CpuGroup.create', () => {
  let e: unknown;
  try { Reflect.construct(CpuGroup, [Symbol('not the factory')]); } catch (x) { e = x; }
  assert.ok(isGroupcommError(e, 'ERR_GROUPCOMM_INVALID_ARGUMENT'), String(e));
  assert.is((e as Error).message, 'new CpuGroup() is not supported: a CPU group connects its mesh of peers before it is usable, ' +
    'and a constructor cannot wait. Use `const group = await CpuGroup.create({ store, rank, worldSize, groupName })`');
});

test('no host: listens on the address toward MASTER_ADDR; a wildcard host advertises that address', async () => {
  // 127.0.0.2 is loopback (no secret needed) yet not the 127.0.0.1 chosen without MASTER_ADDR.
  process.env.MASTER_ADDR = '127.0.0.2';
  // Two ranks: a group of one has no peers and listens nowhere.
  const pair = async (o: { host?: string; insecure?: boolean }) => {
    const groupName = name();
    const gs = await Promise.all([0, 1].map((rank) => CpuGroup.create({ store, rank, worldSize: 2, groupName, timeoutMs: 5_000, ...o })));
    for (const g of gs) live.add(g);
    await Promise.all(gs.map((g) => g.barrier())); // and they reached each other there
    return gs;
  };
  assert.equal((await pair({})).map((g) => g.address.host), ['127.0.0.2', '127.0.0.2']);
  const w = await pair({ host: '0.0.0.0', insecure: true });
  assert.equal(w.map((g) => g.address.host), ['127.0.0.2', '127.0.0.2'], 'the wildcard is bound, never advertised');
});

// Needs shared memory (the 'shm' control); skipped (and counted as skipped) elsewhere.
const segmentsHere = fs.existsSync('/dev/shm') && (() => { try { Segment.create(1 << 16).close(); return true; } catch { return false; } })();
if (!segmentsHere) console.log('  (skipped: the shared-segment case needs shared memory)');
(segmentsHere ? test : test.skip)('transport tcp: a large allReduce never takes the shared segments (transport shm does)', async () => {
  for (const transport of ['tcp', 'shm'] as const) {
    const groupName = name();
    const gs = await Promise.all([0, 1, 2].map((rank) => CpuGroup.create({
      store, rank, worldSize: 3, groupName, timeoutMs: 10_000, transport, shmReduceBytes: 4096, shmReduceChunkBytes: 4096,
    })));
    for (const g of gs) live.add(g);
    const sums = await Promise.all(gs.map((g) => g.allReduce(tensor(new Float32Array(16_384).fill(1)))));
    assert.equal(sums[0].data[16_383], 3, transport);
    assert.equal(gs.map((g) => g.sharedSegments), new Array(3).fill(transport === 'shm'), transport);
  }
});

test.run();
