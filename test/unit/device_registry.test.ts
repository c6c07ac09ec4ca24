// Finding a device backend: by name, by module specifier (option or GROUPCOMM_DEVICE_PLUGIN),
// shape checks with every problem listed, and probe failures surfaced with their reason.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { backendProblems, checkBackend } from '../../host/device/check.js';
import { backendNames, backendSpec, loadBackend, registerBackend, resolveBackend } from '../../host/device/registry.js';
import type { DeviceBackendV1 } from '../../host/device/types.js';
import { isGroupcommError, ErrorCode } from '../../host/base/errors.js';
import { backend as cpu } from '../../plugins/cpu/index.js';

const fixture = (name: string) => new URL(`../conformance/fixtures/${name}.js`, import.meta.url).href;
const isUnavailable = (e: unknown) => isGroupcommError(e, ErrorCode.PLUGIN_UNAVAILABLE);

test("resolveBackend('cpu') returns the cpu reference backend", async () => {
  const b = await resolveBackend('cpu');
  assert.is(b, cpu);
  assert.is(b.name, 'cpu');
  assert.is(b.apiVersion, 1);
  assert.equal(await b.probe(), { available: true });
});

test('the spec comes from the option, else GROUPCOMM_DEVICE_PLUGIN, else cuda', () => {
  const old = process.env.GROUPCOMM_DEVICE_PLUGIN;
  try {
    delete process.env.GROUPCOMM_DEVICE_PLUGIN;
    assert.is(backendSpec(), 'cuda');
    process.env.GROUPCOMM_DEVICE_PLUGIN = 'cpu';
    assert.is(backendSpec(), 'cpu');
    assert.is(backendSpec('./mine.js'), './mine.js');
  } finally {
    if (old === undefined) delete process.env.GROUPCOMM_DEVICE_PLUGIN; else process.env.GROUPCOMM_DEVICE_PLUGIN = old;
  }
});

test('GROUPCOMM_DEVICE_PLUGIN selects the backend when no option is given', async () => {
  const old = process.env.GROUPCOMM_DEVICE_PLUGIN;
  process.env.GROUPCOMM_DEVICE_PLUGIN = 'cpu';
  try {
    assert.is(await resolveBackend(), cpu);
  } finally {
    if (old === undefined) delete process.env.GROUPCOMM_DEVICE_PLUGIN; else process.env.GROUPCOMM_DEVICE_PLUGIN = old;
  }
});

test('a module plugin whose probe fails is refused with ERR_GROUPCOMM_PLUGIN_UNAVAILABLE and its reason', async () => {
  const b = await loadBackend(fixture('unavailable_plugin'));
  assert.is(b.name, 'fixture-unavailable');
  try {
    await resolveBackend(fixture('unavailable_plugin'));
    assert.unreachable('resolved');
  } catch (e) {
    assert.ok(isUnavailable(e), String(e));
    assert.match((e as Error).message, 'fixture device is switched off');
  }
});

test('a malformed module plugin is refused, listing every problem', async () => {
  try {
    await loadBackend(fixture('malformed_plugin'));
    assert.unreachable('loaded');
  } catch (e) {
    assert.ok(isUnavailable(e), String(e));
    const m = (e as Error).message;
    assert.match(m, 'apiVersion is 2');
    assert.match(m, "deviceType must");
    assert.match(m, 'createCommunicator() is missing');
    assert.match(m, 'alloc() is missing');
  }
});

test('an unknown name or missing module is refused, naming the known backends and the variable', async () => {
  try {
    await loadBackend('no-such-plugin-xyz');
    assert.unreachable('loaded');
  } catch (e) {
    assert.ok(isUnavailable(e), String(e));
    assert.match((e as Error).message, "'no-such-plugin-xyz'");
    assert.match((e as Error).message, 'cpu, cuda');
    assert.match((e as Error).message, 'GROUPCOMM_DEVICE_PLUGIN');
  }
});

test('a probe() that throws is reported as the plugin being unusable', async () => {
  const bad: DeviceBackendV1 = { ...cpu, name: 'throws-on-probe', apiVersion: 1, deviceType: 'throws', capabilities: cpu.capabilities,
    probe: async () => { throw new Error('boom'); },
    deviceCount: cpu.deviceCount, alloc: cpu.alloc, free: cpu.free, copyFromHost: cpu.copyFromHost, copyToHost: cpu.copyToHost, createCommunicator: cpu.createCommunicator };
  registerBackend(bad);
  assert.ok(backendNames().includes('throws-on-probe'));
  await resolveBackend('throws-on-probe').then(() => assert.unreachable('resolved'), (e) => {
    assert.ok(isUnavailable(e));
    assert.match((e as Error).message, 'probe() threw: boom');
  });
});

test("'cpu' is found the way an outside plugin is: through the package's exports map (groupcomm/plugins/cpu)", async () => {
  const viaExports = await import('groupcomm/plugins/cpu');
  assert.is(viaExports.backend, cpu);
  assert.is(await loadBackend('groupcomm/plugins/cpu'), cpu);
});

test('a backend of another name may not take a device type that is already owned', () => {
  const twin: DeviceBackendV1 = { ...cpu, name: 'host-twin', apiVersion: 1, deviceType: cpu.deviceType, capabilities: cpu.capabilities,
    probe: cpu.probe, deviceCount: cpu.deviceCount, alloc: cpu.alloc, free: cpu.free, copyFromHost: cpu.copyFromHost, copyToHost: cpu.copyToHost, createCommunicator: cpu.createCommunicator };
  assert.throws(() => registerBackend(twin), (e: unknown) => isUnavailable(e) && /device type 'host'.*backend 'cpu'/.test((e as Error).message));
  assert.not.ok(backendNames().includes('host-twin'));
});

test('backendProblems accepts a good backend and rejects non-objects and the reserved device type cpu', () => {
  assert.equal(backendProblems(cpu), []);
  assert.equal(backendProblems(null), ['expected an object, got null']);
  assert.ok(backendProblems({ ...cpu, deviceType: 'cpu', apiVersion: 1, name: 'x' }).some((p) => p.includes('deviceType')));
  assert.throws(() => checkBackend(42, "'x'"), (e: unknown) => isUnavailable(e));
});

test.run();
