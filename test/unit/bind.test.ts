// A port that is taken is ERR_GROUPCOMM_BIND (host, port, the errno code as the cause), not
// INVALID_ARGUMENT: for the store server, the CPU group's mesh listener and `groupcomm launch`.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { TcpStore, TcpStoreServer } from '../../host/store/index.js';
import { CpuGroup } from '../../host/cpu/group.js';
import { ErrorCode } from '../../host/base/errors.js';
import { packageRoot } from '../../host/base/pkgroot.js';
import { rejectsWith } from '../helpers/rejects.js';

let taken: net.Server;
let port: number;
test.before(async () => {
  taken = net.createServer();
  await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', () => resolve()));
  port = (taken.address() as net.AddressInfo).port;
});
test.after(async () => {
  await new Promise((resolve) => taken.close(resolve));
});

function isBind(e: { host?: string; port?: number; cause?: unknown; message: string }): void {
  assert.is(e.host, '127.0.0.1');
  assert.is(e.port, port);
  assert.is((e.cause as NodeJS.ErrnoException).code, 'EADDRINUSE');
  assert.match(e.message, `127.0.0.1:${port}: EADDRINUSE`);
}

test('TcpStoreServer.listen on a taken port', async () => {
  isBind(await rejectsWith(TcpStoreServer.listen({ port }), ErrorCode.BIND));
  // and through TcpStore.create({ isServer }), which listens first
  isBind(await rejectsWith(TcpStore.create({ port, isServer: true, timeoutMs: 2000 }), ErrorCode.BIND));
});

test('CpuGroup.create on a taken port: the mesh listener', async () => {
  const store = await TcpStore.create({ port: 0, isServer: true, timeoutMs: 5000 });
  try {
    const e = await rejectsWith(CpuGroup.create({ store, rank: 0, worldSize: 2, groupName: 'bind', port, timeoutMs: 2000 }), ErrorCode.BIND);
    isBind(e);
    assert.match(e.message, "CPU group 'bind' rank 0");
  } finally {
    await store.close();
  }
});

test('groupcomm launch --master-port on a taken port exits 1 naming the code and the address', () => {
  const bin = path.join(packageRoot(), 'bin', 'groupcomm.js');
  const script = fileURLToPath(import.meta.url); // never started: the launcher fails before
  const r = spawnSync(process.execPath, [bin, 'launch', '-n', '1', '--master-port', String(port), script], { encoding: 'utf8', timeout: 20_000 });
  assert.is(r.status, 1, r.stderr);
  assert.match(r.stderr, `ERR_GROUPCOMM_BIND`);
  assert.match(r.stderr, `127.0.0.1:${port}: EADDRINUSE`);
});

test.run();
