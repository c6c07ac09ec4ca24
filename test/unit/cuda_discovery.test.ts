/**
 * The cuda backend on a machine without a usable GPU, for real: library discovery, the
 * child-process probe, and the reasons it gives. These run everywhere (CI has no GPU); the
 * CUDA-runtime case needs libcudart from a CUDA toolkit and is skipped, with the reason
 * printed, where there is none.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { resolveBackend } from '../../host/device/registry.js';
import { isGroupcommError, ErrorCode } from '../../host/base/errors.js';
import { CudaBackend, libraryCandidates, probeLibraries } from '../../plugins/cuda/index.js';

/** Runs `fn` with env vars set (undefined deletes), restoring them after. */
async function withEnv<T>(vars: Record<string, string | undefined>, fn: () => Promise<T>): Promise<T> {
  const old: Record<string, string | undefined> = {};
  for (const [k, v] of Object.entries(vars)) {
    old[k] = process.env[k];
    if (v === undefined) delete process.env[k]; else process.env[k] = v;
  }
  try { return await fn(); } finally {
    for (const [k, v] of Object.entries(old)) if (v === undefined) delete process.env[k]; else process.env[k] = v;
  }
}

function toolkitCudart(): string | undefined {
  for (const base of ['/usr/local/cuda/lib64', '/usr/local/cuda/lib', '/usr/local/cuda-13.0/lib', '/usr/local/cuda-13.0/lib64', '/usr/local/cuda-12/lib64']) {
    for (const so of ['libcudart.so.13', 'libcudart.so.12']) {
      const p = path.join(base, so);
      if (fs.existsSync(p)) return p;
    }
  }
  return undefined;
}

test("resolveBackend('cuda') with a missing NCCL rejects ERR_GROUPCOMM_PLUGIN_UNAVAILABLE naming the path and the variable", async () => {
  await withEnv({ GROUPCOMM_NCCL_PATH: '/nonexistent/libnccl.so.2' }, async () => {
    try {
      await resolveBackend('cuda');
      assert.unreachable('resolved');
    } catch (e) {
      assert.ok(isGroupcommError(e, ErrorCode.PLUGIN_UNAVAILABLE), String(e));
      assert.match((e as Error).message, '/nonexistent/libnccl.so.2');
      assert.match((e as Error).message, 'GROUPCOMM_NCCL_PATH');
      assert.match((e as Error).message, 'libnccl.so.2 not found (tried: ');
    }
  });
});

test('GROUPCOMM_CUDART_PATH=/nonexistent: the reason names it and the variable', async () => {
  await withEnv({ GROUPCOMM_CUDART_PATH: '/nonexistent/libcudart.so.13' }, async () => {
    const p = await new CudaBackend().probe();
    assert.is(p.available, false);
    if (p.available) return;
    assert.match(p.reason, '/nonexistent/libcudart.so.13');
    assert.match(p.reason, 'GROUPCOMM_CUDART_PATH');
  });
});

const cudart = toolkitCudart();
if (cudart) {
  test('libcudart loads but there is no driver: cudaGetDeviceCount rc 35 becomes a plain reason', async () => {
    await withEnv({ GROUPCOMM_CUDART_PATH: cudart }, async () => {
      const r = await probeLibraries();
      assert.ok(!('error' in r), JSON.stringify(r));
      if ('error' in r) return;
      assert.is(r.cudart?.path, cudart);
      assert.ok((r.cudart?.runtimeVersion ?? 0) >= 12000, `runtime version ${r.cudart?.runtimeVersion}`);
      if (r.cudart?.deviceCountRc !== 35) {
        console.log(`# ${cudart}: cudaGetDeviceCount returned ${r.cudart?.deviceCountRc} (a driver is present); the rc-35 reason is not exercised here`);
        return;
      }
      const p = await new CudaBackend().probe();
      assert.is(p.available, false);
      if (!p.available) assert.match(p.reason, 'CUDA driver missing or too old: cudaErrorInsufficientDriver (35)');
    });
  });
} else {
  console.log('# no libcudart from a CUDA toolkit on this machine: the rc-35 probe case is skipped');
  test.skip('libcudart loads but there is no driver: cudaGetDeviceCount rc 35 becomes a plain reason', () => {});
}

test('an unavailable backend reports 0 devices and refuses memory calls with ERR_GROUPCOMM_PLUGIN_UNAVAILABLE', async () => {
  await withEnv({ GROUPCOMM_NCCL_PATH: '/nonexistent/libnccl.so.2' }, async () => {
    const b = new CudaBackend();
    assert.is((await b.probe()).available, false);
    assert.is(await b.deviceCount(), 0);
    assert.throws(() => b.alloc(16, 0), (e: unknown) => isGroupcommError(e, ErrorCode.PLUGIN_UNAVAILABLE));
    await b.createCommunicator({ rank: 0, worldSize: 1, deviceIndex: 0, bootstrap: {} as never }).then(
      () => assert.unreachable('created'),
      (e) => assert.ok(isGroupcommError(e, ErrorCode.PLUGIN_UNAVAILABLE), String(e)));
  });
});

test('discovery: an env override is the only candidate; otherwise pip folders of python3 on PATH, then sonames', () => {
  assert.equal(libraryCandidates('nccl', { GROUPCOMM_NCCL_PATH: '/x/libnccl.so.2', PATH: '' }).candidates, ['/x/libnccl.so.2']);
  // A fake python3 whose site-packages holds nvidia/nccl/lib/libnccl.so.2.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gc-pip-'));
  const site = path.join(dir, 'site-packages');
  fs.mkdirSync(path.join(site, 'nvidia', 'nccl', 'lib'), { recursive: true });
  fs.writeFileSync(path.join(site, 'nvidia', 'nccl', 'lib', 'libnccl.so.2'), 'not a library');
  const bin = path.join(dir, 'bin');
  fs.mkdirSync(bin);
  fs.writeFileSync(path.join(bin, 'python3'), `#!/bin/sh\necho '${JSON.stringify([site])}'\n`, { mode: 0o755 });
  try {
    const c = libraryCandidates('nccl', { PATH: bin }).candidates;
    assert.equal(c, [path.join(site, 'nvidia', 'nccl', 'lib', 'libnccl.so.2'), 'libnccl.so.2']);
    assert.equal(libraryCandidates('cudart', { PATH: bin }).candidates, ['libcudart.so.13', 'libcudart.so.12']);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('a probe that does not finish in time is reported as such (the child is killed)', async () => {
  await withEnv({ GROUPCOMM_CUDA_PROBE_TIMEOUT_MS: '1' }, async () => {
    const r = await probeLibraries(1);
    assert.ok('error' in r, JSON.stringify(r));
    if ('error' in r) assert.match(r.error, 'did not finish within 1ms');
  });
});

test.run();
