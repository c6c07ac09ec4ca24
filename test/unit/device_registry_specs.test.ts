/**
 * How host/device/registry.ts reads a backend spec: a name (built in or registered) or a module
 * (a relative or absolute path, a file: URL, a package name), the spec's checks, loading once
 * per spec and retrying after a failure, which export is the backend, the known names in an
 * error, a probe's failure and its cause, and which backend owns a device type.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { backendForDevice, backendNames, backendSpec, loadBackend, registerBackend, resolveBackend } from '../../host/device/registry.js';
import { isGroupcommError, ErrorCode } from '../../host/base/errors.js';
import { backend as cpu } from '../../plugins/cpu/index.js';
import type { DeviceBackendV1 } from '../../host/device/types.js';

const isUnavailable = (e: unknown) => isGroupcommError(e, ErrorCode.PLUGIN_UNAVAILABLE);
const isInvalid = (e: unknown) => isGroupcommError(e, ErrorCode.INVALID_ARGUMENT);
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gc-registry-'));

/** A self-contained plugin module (no imports) exporting its backend as `how` ('default' or 'backend'). */
function pluginFile(file: string, name: string, how: 'default' | 'backend' | 'both' = 'default'): string {
  const obj = `{ apiVersion: 1, name: ${JSON.stringify(name)}, deviceType: ${JSON.stringify(name.replace(/-/g, '_'))},
    capabilities: { reduceDtypes: [], sharedDevice: true }, probe: async () => ({ available: true }),
    deviceCount: async () => 0, alloc() {}, free() {}, copyFromHost() {}, copyToHost() {}, createCommunicator() {} }`;
  const body = how === 'default' ? `export default ${obj};\n`
    : how === 'backend' ? `export const backend = ${obj};\n`
    : `export const backend = ${obj};\nexport default { ...backend, name: 'the-default' };\n`;
  const p = path.join(dir, file);
  fs.writeFileSync(p, body);
  return p;
}

function like(name: string, over: Partial<DeviceBackendV1> = {}): DeviceBackendV1 {
  return { apiVersion: 1, name, deviceType: name.replace(/-/g, '_'), capabilities: cpu.capabilities, probe: async () => ({ available: true }),
    deviceCount: cpu.deviceCount, alloc: cpu.alloc, free: cpu.free, copyFromHost: cpu.copyFromHost, copyToHost: cpu.copyToHost,
    createCommunicator: cpu.createCommunicator, ...over } as DeviceBackendV1;
}

async function refused(p: Promise<unknown>, check: (e: unknown) => boolean = isUnavailable): Promise<Error> {
  try {
    await p;
  } catch (e) {
    assert.ok(check(e), String(e));
    return e as Error;
  }
  assert.unreachable('accepted');
  throw new Error('unreachable');
}

test('a spec is trimmed; an empty or non-string one is refused', () => {
  assert.is(backendSpec('  cpu \n'), 'cpu');
  for (const bad of ['', '   ', 42, {}]) {
    assert.throws(() => backendSpec(bad as string), isInvalid, String(bad));
  }
});

test('a relative path, an absolute path and a file: URL load the module; the default export is the backend', async () => {
  const rel = pluginFile('rel.mjs', 'spec-rel');
  const relSpec = './' + path.relative(process.cwd(), rel);
  assert.ok(relSpec.startsWith('./'), relSpec);
  assert.is((await loadBackend(relSpec)).name, 'spec-rel');
  assert.is((await loadBackend(pluginFile('abs.mjs', 'spec-abs'))).name, 'spec-abs');
  assert.is((await loadBackend(pathToFileURL(pluginFile('url.mjs', 'spec-url')).href)).name, 'spec-url');
  // A bare name is a package, not a file next to the working directory.
  await refused(loadBackend('rel.mjs'));
});

test('the `backend` export wins over the default export; either alone is enough', async () => {
  assert.is((await loadBackend(pluginFile('named.mjs', 'spec-named', 'backend'))).name, 'spec-named');
  assert.is((await loadBackend(pluginFile('both.mjs', 'spec-both', 'both'))).name, 'spec-both');
});

test('a spec is loaded once (the same promise); a failed load is retried on the next call', async () => {
  const p = pluginFile('once.mjs', 'spec-once');
  assert.is(loadBackend(p), loadBackend(p));
  const late = path.join(dir, 'late.mjs');
  const e = await refused(loadBackend(late));
  assert.match(e.message, `'${late}'`);
  assert.ok(e.cause, 'the import error is the cause');
  pluginFile('late.mjs', 'spec-late');
  assert.is((await loadBackend(late)).name, 'spec-late');
});

test('built-in names: cpu and cuda load from this package (cuda without probing)', async () => {
  assert.is(await loadBackend('cpu'), cpu);
  assert.is((await loadBackend('cuda')).name, 'cuda');
  assert.is(backendForDevice(cpu.deviceType), cpu);
  assert.is(backendForDevice('no_such_type'), undefined);
});

test('the known names are sorted and include registered ones; the error for an unknown name lists them', async () => {
  registerBackend(like('aaa-spec'));
  const names = backendNames();
  assert.equal(names, [...names].sort());
  assert.ok(names.indexOf('aaa-spec') < names.indexOf('cpu'), names.join(','));
  const e = await refused(loadBackend('zzz-no-such-plugin'));
  assert.match(e.message, 'aaa-spec, cpu, cuda');
});

test('registering again under the same name replaces the backend; a malformed one is refused by its name', async () => {
  const first = like('spec-again');
  const second = like('spec-again');
  registerBackend(first);
  registerBackend(second);
  assert.is(await loadBackend('spec-again'), second);
  assert.throws(() => registerBackend({ name: 'spec-bad' } as never), (e: unknown) => isUnavailable(e) && (e as Error).message.includes("'spec-bad'"));
  assert.throws(() => registerBackend(null as never), isUnavailable);
  assert.throws(() => registerBackend(undefined as never), isUnavailable);
});

test('a module plugin taking an owned device type is refused, naming the module', async () => {
  const p = path.join(dir, 'twin.mjs');
  fs.writeFileSync(p, `export default { apiVersion: 1, name: 'spec-twin', deviceType: ${JSON.stringify(cpu.deviceType)},
    capabilities: { reduceDtypes: [], sharedDevice: true }, probe: async () => ({ available: true }),
    deviceCount: async () => 0, alloc() {}, free() {}, copyFromHost() {}, copyToHost() {}, createCommunicator() {} };\n`);
  await loadBackend('cpu');
  const e = await refused(loadBackend(p));
  assert.match(e.message, `device plugin '${p}' ('spec-twin')`);
  const bad = path.join(dir, 'bad.mjs');
  fs.writeFileSync(bad, 'export default { name: "x" };\n');
  assert.match((await refused(loadBackend(bad))).message, `'${bad}'`);
});

test('a probe that throws: the error names the plugin and carries the cause', async () => {
  const boom = new Error('boom');
  registerBackend(like('spec-boom', { probe: async () => { throw boom; } }));
  const e = await refused(resolveBackend('spec-boom'));
  assert.is(e.cause, boom);
});

test.after(() => fs.rmSync(dir, { recursive: true, force: true }));
test.run();
