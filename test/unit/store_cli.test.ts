// `groupcomm store` argument handling (the running server is covered by test/integration/store.test.ts).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { run } from '../../host/cli/store.js';
import { TcpStoreServer } from '../../host/index.js';
import { isGroupcommError } from '../../host/base/errors.js';

async function quiet<T>(fn: () => Promise<T>): Promise<{ result: T; out: string }> {
  const log = console.log;
  const err = console.error;
  let out = '';
  console.log = (...a: unknown[]) => { out += a.join(' ') + '\n'; };
  console.error = console.log;
  try {
    return { result: await fn(), out };
  } finally {
    console.log = log;
    console.error = err;
  }
}

test('--help prints the options and exits 0', async () => {
  const { result, out } = await quiet(() => run(['--help']));
  assert.is(result, 0);
  assert.match(out, /--world-size N/);
  assert.match(out, /SIGINT\/SIGTERM/);
});

test('an unknown flag or a bad number is a usage error (exit 2)', async () => {
  assert.is((await quiet(() => run(['--bogus']))).result, 2);
  assert.is((await quiet(() => run(['--port', 'abc']))).result, 2);
  assert.is((await quiet(() => run(['--world-size', '-1']))).result, 2);
});

test('closing a server fails a pending waitForWorkers at once', async () => {
  const server = await TcpStoreServer.listen({ port: 0 });
  const p = server.waitForWorkers({ worldSize: 3, timeoutMs: 60_000 });
  await server.close();
  try {
    await p;
    assert.unreachable('must reject');
  } catch (e) {
    assert.ok(isGroupcommError(e, 'ERR_GROUPCOMM_DESTROYED'), String(e));
  }
});

test.run();
