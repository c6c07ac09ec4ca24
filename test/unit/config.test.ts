// The configuration registry (host/base/config.ts): every kind of bad value is refused naming
// the variable and what it accepts, defaults, the logging switches' warning, the listing for
// `groupcomm doctor`, and docs/env.md matching what the registry generates.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { accepts, setting, settingsInForce, SETTINGS, type SettingName } from '../../host/base/config.js';
import { renderEnvDoc } from '../../host/base/config_doc.js';
import { defaultTimeoutMs, effectiveTimeout } from '../../host/base/deadline.js';
import { ErrorCode, isGroupcommError } from '../../host/base/errors.js';
import { packageRoot, runningSources } from '../../host/base/pkgroot.js';
import { TcpStore } from '../../host/store/client.js';
import { CpuGroup } from '../../host/cpu/group.js';
import { rejectsWith } from '../helpers/rejects.js';

/** Asserts that reading `name` = `raw` throws ERR_GROUPCOMM_CONFIG naming both and what it accepts. */
function refused(name: SettingName, raw: string): void {
  try {
    setting(name, { [name]: raw });
  } catch (e) {
    assert.ok(isGroupcommError(e, ErrorCode.CONFIG), `${name}=${raw}: ${e}`);
    assert.is((e as { variable?: string }).variable, name);
    assert.match((e as Error).message, name);
    assert.match((e as Error).message, JSON.stringify(raw));
    assert.match((e as Error).message, accepts(name));
    return;
  }
  assert.unreachable(`${name}=${JSON.stringify(raw)} was accepted`);
}

/** Runs `fn` with process.env[name] = value, restoring it afterwards. */
async function withEnv<T>(name: string, value: string, fn: () => Promise<T> | T): Promise<T> {
  const old = process.env[name];
  process.env[name] = value;
  try {
    return await fn();
  } finally {
    if (old === undefined) delete process.env[name];
    else process.env[name] = old;
  }
}

test('a positive integer: 5s, abc, 0, -1, 1.5, 1e3 and an empty-looking value are refused, never turned into the default', () => {
  for (const raw of ['5s', 'abc', '0', '-1', '1.5', '1e3', ' ', '9007199254740993']) refused('GROUPCOMM_TIMEOUT_MS', raw);
  for (const raw of ['0', 'x']) refused('GROUPCOMM_CUDA_PROBE_TIMEOUT_MS', raw);
});

test('ranges, powers of two, choices, ports and decimals are refused outside what they accept', () => {
  refused('GROUPCOMM_CPU_CHUNK_BYTES', String(2 ** 32));
  refused('GROUPCOMM_CPU_WINDOW', '0');
  refused('GROUPCOMM_CPU_SHM_RING_BYTES', '100000'); // not a power of two
  refused('GROUPCOMM_CPU_SHM_RING_BYTES', '32768'); // a power of two below 64 KiB
  refused('GROUPCOMM_CPU_TRANSPORT', 'udp');
  refused('GROUPCOMM_INLINE_CPU_BYTES', '-1');
  refused('GROUPCOMM_PG_SPIN_US', 'fast');
  refused('GROUPCOMM_PG_SPIN_US', '-5');
  refused('GROUPCOMM_DEMO_STORE_PORT', '70000');
});

test('unset or empty means the default; good values parse (whitespace and case forgiven)', () => {
  assert.is(setting('GROUPCOMM_TIMEOUT_MS', {}), 300_000);
  assert.is(setting('GROUPCOMM_TIMEOUT_MS', { GROUPCOMM_TIMEOUT_MS: '' }), 300_000);
  assert.is(setting('GROUPCOMM_TIMEOUT_MS', { GROUPCOMM_TIMEOUT_MS: ' 5000 ' }), 5000);
  assert.is(setting('GROUPCOMM_CPU_TRANSPORT', {}), 'auto');
  assert.is(setting('GROUPCOMM_CPU_TRANSPORT', { GROUPCOMM_CPU_TRANSPORT: 'TCP' }), 'tcp');
  assert.is(setting('GROUPCOMM_CPU_SHM_RING_BYTES', {}), undefined); // the CPU group computes it
  assert.is(setting('GROUPCOMM_CPU_SHM_RING_BYTES', { GROUPCOMM_CPU_SHM_RING_BYTES: '65536' }), 65536);
  assert.is(setting('GROUPCOMM_PG_SPIN_US', { GROUPCOMM_PG_SPIN_US: '0' }), 0);
  assert.is(setting('GROUPCOMM_PG_SPIN_US', { GROUPCOMM_PG_SPIN_US: '12.5' }), 12.5);
  assert.is(setting('GROUPCOMM_DEVICE_PLUGIN', {}), 'cuda');
  assert.is(setting('GROUPCOMM_DEBUG', { GROUPCOMM_DEBUG: 'TRUE' }), 'info');
  assert.equal(setting('GROUPCOMM_DEBUG_SUBSYS', { GROUPCOMM_DEBUG_SUBSYS: 'pg, store' }), ['PG', 'STORE']);
});

test('GROUPCOMM_DEBUG refuses an unknown level (CONFIG, naming the levels); the subsystem filter warns instead', () => {
  // Loading groupcomm with such a value fails: test/unit/log.test.ts.
  try {
    setting('GROUPCOMM_DEBUG', { GROUPCOMM_DEBUG: 'verbose' });
    assert.unreachable('GROUPCOMM_DEBUG=verbose was accepted');
  } catch (e) {
    assert.ok(isGroupcommError(e, ErrorCode.CONFIG), String(e));
    assert.is((e as { variable?: string }).variable, 'GROUPCOMM_DEBUG');
    assert.match((e as Error).message, 'GROUPCOMM_DEBUG="verbose" is not valid: expected one of off, warn, info, debug, trace');
  }
  assert.is(setting('GROUPCOMM_DEBUG_SUBSYS', { GROUPCOMM_DEBUG_SUBSYS: 'PG,NET' }), undefined);
});

test('a bad GROUPCOMM_DEBUG_SUBSYS is reported once on stderr, naming the variable and the default used', () => {
  const log = path.join(packageRoot(), ...(runningSources ? ['host'] : ['dist', 'host']), 'base', runningSources ? 'log.ts' : 'log.js');
  const config = log.replace(/log\.(ts|js)$/, 'config.$1');
  // log.ts reads it once; another read through the registry must not repeat the warning.
  const code = `const m = await import(${JSON.stringify(pathToFileURL(log).href)}); m.logger('PG').warn('a'); m.logger('CPU').warn('b');` +
    `const c = await import(${JSON.stringify(pathToFileURL(config).href)}); c.setting('GROUPCOMM_DEBUG_SUBSYS');`;
  const r = spawnSync(process.execPath, [...(runningSources ? [] : ['--input-type=module']), '-e', code], {
    env: { ...process.env, GROUPCOMM_DEBUG: 'warn', GROUPCOMM_DEBUG_SUBSYS: 'PG,NET' }, encoding: 'utf8', timeout: 20_000,
  });
  assert.is(r.status, 0, r.stderr);
  const lines = r.stderr.split('\n').filter((l) => l.includes('GROUPCOMM_DEBUG_SUBSYS'));
  assert.is(lines.length, 1, r.stderr);
  assert.match(lines[0], 'GROUPCOMM_DEBUG_SUBSYS="PG,NET" is not valid');
  assert.match(lines[0], 'using the default (all)');
  assert.match(r.stderr, ' WARN a', 'every subsystem logs');
  assert.match(r.stderr, ' WARN b', 'every subsystem logs');
});

test('the call that needs a bad GROUPCOMM_TIMEOUT_MS fails with CONFIG; an explicit timeoutMs does not need it', async () => {
  await withEnv('GROUPCOMM_TIMEOUT_MS', '5s', async () => {
    try {
      defaultTimeoutMs();
      assert.unreachable('defaultTimeoutMs accepted 5s');
    } catch (e) {
      assert.ok(isGroupcommError(e, ErrorCode.CONFIG), String(e));
    }
    const e = await rejectsWith(TcpStore.create({ port: 0, isServer: true }), ErrorCode.CONFIG);
    assert.is(e.variable, 'GROUPCOMM_TIMEOUT_MS');
    assert.is(effectiveTimeout({ timeoutMs: 1000 }), 1000);
    const s = await TcpStore.create({ port: 0, isServer: true, timeoutMs: 5000 });
    await s.close();
  });
});

test('GROUPCOMM_CPU_TRANSPORT=udp: CpuGroup.create refuses before any store traffic', async () => {
  const s = await TcpStore.create({ port: 0, isServer: true, timeoutMs: 5000 });
  try {
    const before = await s.numKeys();
    await withEnv('GROUPCOMM_CPU_TRANSPORT', 'udp', async () => {
      const e = await rejectsWith(CpuGroup.create({ store: s, rank: 0, worldSize: 2, groupName: 'cfg', timeoutMs: 1000 }), ErrorCode.CONFIG);
      assert.is(e.variable, 'GROUPCOMM_CPU_TRANSPORT');
      assert.match(e.message, 'one of auto, tcp, shm');
    });
    assert.is(await s.numKeys(), before);
  } finally {
    await s.close();
  }
});

test("settings read 'process' are cached after the first read; 'call' ones follow process.env", async () => {
  const first = setting('GROUPCOMM_INLINE_CPU_BYTES');
  await withEnv('GROUPCOMM_INLINE_CPU_BYTES', String(first + 1), () => assert.is(setting('GROUPCOMM_INLINE_CPU_BYTES'), first));
  await withEnv('GROUPCOMM_CPU_WINDOW', '7', () => assert.is(setting('GROUPCOMM_CPU_WINDOW'), 7));
});

test('settingsInForce: every variable once, with its value and source; a bad one is reported, not thrown', () => {
  const list = settingsInForce({ GROUPCOMM_TIMEOUT_MS: '1234', GROUPCOMM_CPU_WINDOW: 'x', GROUPCOMM_DEBUG: 'loud' });
  assert.equal(list.map((s) => s.name), Object.keys(SETTINGS));
  const by = Object.fromEntries(list.map((s) => [s.name, s]));
  assert.equal({ value: by.GROUPCOMM_TIMEOUT_MS.value, source: by.GROUPCOMM_TIMEOUT_MS.source }, { value: 1234, source: 'env' });
  assert.equal({ value: by.GROUPCOMM_CPU_CHUNK_BYTES.value, source: by.GROUPCOMM_CPU_CHUNK_BYTES.source }, { value: 524288, source: 'default' });
  assert.match(by.GROUPCOMM_CPU_WINDOW.error!, 'GROUPCOMM_CPU_WINDOW="x" is not valid');
  assert.match(by.GROUPCOMM_DEBUG.error!, 'GROUPCOMM_DEBUG="loud" is not valid: expected one of off, warn, info, debug, trace');
  assert.is(by.GROUPCOMM_DEBUG.value, 'off');
});

test('docs/env.md is what the registry generates (node scripts/gen-env-doc.js rewrites it)', () => {
  const doc = fs.readFileSync(path.join(packageRoot(), 'docs', 'env.md'), 'utf8');
  assert.fixture(doc, renderEnvDoc());
  for (const name of Object.keys(SETTINGS)) assert.match(doc, `\`${name}\``);
});

test.run();
