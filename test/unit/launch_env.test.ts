// env://: the launcher's variables read and checked (a missing or malformed one is named), and
// TcpStore.fromEnv / StatelessGroupCoordinator.fromEnv built from them.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { launchEnv, unbracket } from '../../host/base/launch_env.js';
import { ErrorCode, isGroupcommError } from '../../host/base/errors.js';
import { TcpStore, TcpStoreServer } from '../../host/store/index.js';
import { StatelessGroupCoordinator } from '../../host/coordinator/coordinator.js';

const good = { RANK: '3', WORLD_SIZE: '4', LOCAL_RANK: '1', LOCAL_WORLD_SIZE: '2', GROUP_RANK: '1', MASTER_ADDR: '[fd77::1]', MASTER_PORT: '29500', GROUPCOMM_RUN_ID: 'j1' };

function configErr(env: Record<string, string | undefined>, variable: string, text: string) {
  try {
    launchEnv(env);
  } catch (e) {
    assert.ok(isGroupcommError(e, ErrorCode.CONFIG), String(e));
    assert.is(e.variable, variable);
    assert.match(e.message, text);
    return;
  }
  assert.unreachable(`no error for ${JSON.stringify(env)}`);
}

test('launchEnv reads every variable; IPv6 brackets come off', () => {
  assert.equal(launchEnv(good), { rank: 3, worldSize: 4, localRank: 1, localWorldSize: 2, nodeRank: 1, masterAddr: 'fd77::1', masterPort: 29500, runId: 'j1' });
  assert.is(unbracket('[::1]'), '::1');
  assert.is(unbracket('10.0.0.1'), '10.0.0.1');
  const min = launchEnv({ RANK: '0', WORLD_SIZE: '1', MASTER_ADDR: 'h', MASTER_PORT: '1' });
  assert.is(min.localRank, 0);
  assert.is(min.runId, undefined);
});

test('a missing or malformed variable is ERR_GROUPCOMM_CONFIG naming it', () => {
  configErr({ ...good, MASTER_PORT: undefined }, 'MASTER_PORT', 'MASTER_PORT is not set');
  configErr({ ...good, MASTER_PORT: 'x' }, 'MASTER_PORT', 'MASTER_PORT="x" is not valid');
  configErr({ ...good, MASTER_ADDR: '' }, 'MASTER_ADDR', 'MASTER_ADDR is not set');
  configErr({ ...good, WORLD_SIZE: undefined }, 'WORLD_SIZE', 'groupcomm launch');
  configErr({ ...good, RANK: '4' }, 'RANK', 'an integer in [0, 3]');
  configErr({ ...good, LOCAL_RANK: '2' }, 'LOCAL_RANK', 'an integer in [0, 1]');
});

test('TcpStore.fromEnv and StatelessGroupCoordinator.fromEnv use MASTER_ADDR/PORT', async () => {
  const server = await TcpStoreServer.listen({ host: '127.0.0.1', port: 0 });
  const saved = { ...process.env };
  Object.assign(process.env, { RANK: '0', WORLD_SIZE: '1', LOCAL_RANK: '0', LOCAL_WORLD_SIZE: '1', MASTER_ADDR: '127.0.0.1', MASTER_PORT: String(server.port), GROUPCOMM_RUN_ID: 'unit' });
  try {
    const s = await TcpStore.fromEnv({ timeoutMs: 5000 });
    assert.is(s.server, undefined, 'under a launcher, the launcher hosts the store');
    await s.set('k', 'v');
    assert.is(Buffer.from(await s.get('k')).toString(), 'v');
    await s.close();
    const g = await StatelessGroupCoordinator.fromEnv({ groupRanks: [[0]], groupName: 'envg', timeoutMs: 5000 });
    assert.is(g.rank, 0);
    await g.destroy();
    delete process.env.MASTER_PORT;
    try {
      await TcpStore.fromEnv({ timeoutMs: 1000 });
      assert.unreachable('no MASTER_PORT');
    } catch (e) {
      assert.ok(isGroupcommError(e, ErrorCode.CONFIG));
      assert.is(e.variable, 'MASTER_PORT');
    }
  } finally {
    for (const k of Object.keys(process.env)) if (!(k in saved)) delete process.env[k];
    Object.assign(process.env, saved);
    await server.close();
  }
});

test.run();
