// The liveness bound (GROUPCOMM_LIVENESS_MS) with a peer that goes silent without closing
// anything: the peer process is stopped with SIGSTOP, so its sockets stay open and nothing
// arrives (what a cut link looks like from this side). A CPU group's allReduce and a store wait
// fail with ERR_GROUPCOMM_PEER_LOST naming the peer, long before their timeouts. (Real cut links
// between network namespaces: multinode_netns.test.ts.)
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import { commandFor, currentRuntime } from '../helpers/ranks.js';
import { TcpStore } from '../../host/store/index.js';
import { CpuGroup } from '../../host/cpu/group.js';
import { tensor } from '../../host/core/tensor.js';
import { ErrorCode, isGroupcommError } from '../../host/base/errors.js';

const BOUND_MS = 1000;
process.env.GROUPCOMM_LIVENESS_MS = String(BOUND_MS);

function peer(args: string[]): Promise<ChildProcess> {
  const [cmd, a] = commandFor('test/integration/workers/liveness_worker', currentRuntime());
  const child = spawn(cmd, [...a, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d) => { out += d; if (out.includes('ready')) resolve(child); });
    child.on('exit', (code) => reject(new Error(`peer exited ${code}`)));
  });
}

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
}

test('a CPU group peer that goes silent fails the allReduce under way with PEER_LOST naming it', async () => {
  const store = await TcpStore.create({ host: '127.0.0.1', port: 0, isServer: true, timeoutMs: 30_000 });
  // The operations' timeout is far above the bound: a TIMEOUT here means liveness did nothing.
  const [child, g] = await Promise.all([
    peer(['rank', String(store.port)]),
    CpuGroup.create({ store, rank: 0, worldSize: 2, groupName: 'live', transport: 'tcp', timeoutMs: 15_000 }),
  ]);
  try {
    for (let i = 0; i < 20; i++) await g.allReduce(tensor(new Float32Array(256).fill(1)));
    child.kill('SIGSTOP');
    const t0 = Date.now();
    try {
      for (;;) await g.allReduce(tensor(new Float32Array(256).fill(1)));
    } catch (e) {
      assert.ok(isGroupcommError(e, ErrorCode.PEER_LOST), String(e));
      assert.is(e.peerRank, 1);
      assert.match(e.message, 'GROUPCOMM_LIVENESS_MS');
      assert.ok(Date.now() - t0 < 15_000, `took ${Date.now() - t0} ms`);
    }
  } finally {
    child.kill('SIGKILL');
    await g.abort();
    await store.close();
  }
});

test('a store server that goes silent fails a wait on it with PEER_LOST, naming its host rank', async () => {
  const port = await freePort();
  const child = await peer(['store', String(port)]);
  const store = await TcpStore.create({ host: '127.0.0.1', port, hostRank: 3, timeoutMs: 120_000 });
  try {
    const waiting = store.wait(['never'], { timeoutMs: 15_000 });
    await new Promise((r) => setTimeout(r, 100));
    child.kill('SIGSTOP');
    const t0 = Date.now();
    try {
      await waiting;
      assert.unreachable('the wait resolved');
    } catch (e) {
      assert.ok(isGroupcommError(e, ErrorCode.PEER_LOST), String(e));
      assert.is(e.peerRank, 3);
      assert.match(e.message, 'did not answer a ping within 1000 ms');
      assert.ok(Date.now() - t0 < 15_000, `took ${Date.now() - t0} ms`);
    }
  } finally {
    child.kill('SIGKILL');
    await store.abort();
  }
});

test.run();
