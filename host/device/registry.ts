/**
 * Finding a device backend: by name ('cpu', 'cuda', or any name registered at run time) or by
 * module specifier (a package name, or a path to a module file). The choice comes from the
 * `backend` option, else GROUPCOMM_DEVICE_PLUGIN, else 'cuda'. A module plugin exports its
 * DeviceBackendV1 as `backend` or as the default export.
 *
 * The built-in backends are found the way an outside plugin is: their names stand for module
 * specifiers of this package's own exports map ('cpu' → 'groupcomm/plugins/cpu'), loaded by
 * dynamic import, so nothing under host/ imports plugins/, and the cuda backend (its NCCL and
 * CUDA bindings) is loaded only when it is asked for. koffi itself is not avoided that way: the
 * CPU group's shared-memory transport (host/cpu/shm.ts) loads it for same-host peers.
 *
 * `resolveBackend` also probes: a backend that is not usable here is never returned; the error
 * (ERR_GROUPCOMM_PLUGIN_UNAVAILABLE) carries the plugin's own reason.
 *
 * The registry also knows which loaded backend owns each device type: `toHost(t)` copies a
 * device tensor through the backend that owns its device type (one owner per type).
 */
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { pluginUnavailable, invalidArgument } from '../base/errors.js';
import { logger } from '../base/log.js';
import { setting } from '../base/config.js';
import { isCpu, parseDevice, type CpuTensor, type Tensor } from '../core/tensor.js';
import { checkBackend } from './check.js';
import { fromDevice } from './tensors.js';
import type { DeviceBackendV1 } from './types.js';

const log = logger('DEVICE');

/** Names of the built-in backends → their module specifiers (this package's exports map). */
const BUILTIN: Readonly<Record<string, string>> = Object.freeze({
  cpu: 'groupcomm/plugins/cpu',
  cuda: 'groupcomm/plugins/cuda',
});

const registered = new Map<string, DeviceBackendV1>();
const loaded = new Map<string, Promise<DeviceBackendV1>>();
/** Device type → the backend whose tensors carry it. */
const owners = new Map<string, DeviceBackendV1>();

/**
 * Records `b` as the owner of its device type. A second backend under another name may not
 * take a type that is already owned: its tensors would be indistinguishable.
 */
function own(b: DeviceBackendV1, source: string): DeviceBackendV1 {
  const prev = owners.get(b.deviceType);
  if (prev && prev !== b && prev.name !== b.name) {
    throw pluginUnavailable(`device plugin ${source} ('${b.name}') uses device type '${b.deviceType}', which backend '${prev.name}' already owns in this process; give it a device type of its own`);
  }
  owners.set(b.deviceType, b);
  return b;
}

/** Makes `backend` resolvable by its name (replacing a previous registration of that name). */
export function registerBackend(backend: DeviceBackendV1): void {
  const source = `'${(backend as { name?: unknown })?.name}'`;
  const b = own(checkBackend(backend, source), source);
  registered.set(b.name, b);
}

/** Names that resolve without a module specifier. */
export function backendNames(): string[] {
  return [...new Set([...Object.keys(BUILTIN), ...registered.keys()])].sort();
}

/** The backend spec in effect: the option, else GROUPCOMM_DEVICE_PLUGIN, else 'cuda' (its default in base/config.ts). */
export function backendSpec(option?: string): string {
  const s = option ?? setting('GROUPCOMM_DEVICE_PLUGIN');
  if (typeof s !== 'string' || s.trim() === '') throw invalidArgument('device backend spec must be a non-empty string');
  return s.trim();
}

function isPathLike(spec: string): boolean {
  return spec.startsWith('.') || spec.startsWith('/') || spec.startsWith('file:');
}

function pickExport(mod: unknown): unknown {
  const m = mod as { backend?: unknown; default?: unknown };
  return m.backend ?? m.default;
}

async function importSpec(spec: string): Promise<DeviceBackendV1> {
  const target = Object.hasOwn(BUILTIN, spec) ? BUILTIN[spec] : spec;
  const url = isPathLike(target) && !target.startsWith('file:') ? pathToFileURL(path.resolve(target)).href : target;
  let mod: unknown;
  try {
    mod = await import(url);
  } catch (e) {
    throw pluginUnavailable(
      `device plugin '${spec}' could not be loaded (${(e as Error).message}); known names: ` +
      `${backendNames().join(', ')}; set the backend option or GROUPCOMM_DEVICE_PLUGIN to a name or module`,
      { cause: e },
    );
  }
  return own(checkBackend(pickExport(mod), `'${spec}'`), `'${spec}'`);
}

/** Loads (once per spec) and shape-checks a backend, without probing it. */
export function loadBackend(spec?: string): Promise<DeviceBackendV1> {
  const s = backendSpec(spec);
  const r = registered.get(s);
  if (r) return Promise.resolve(r);
  let p = loaded.get(s);
  if (!p) {
    p = importSpec(s);
    loaded.set(s, p);
    p.catch(() => loaded.delete(s)); // a failed load may succeed later (library installed, env fixed)
  }
  return p;
}

/** Loads a backend and probes it; rejects with ERR_GROUPCOMM_PLUGIN_UNAVAILABLE and the reason. */
export async function resolveBackend(spec?: string): Promise<DeviceBackendV1> {
  const b = await loadBackend(spec);
  let pr;
  try {
    pr = await b.probe();
  } catch (e) {
    // probe() must not throw; a plugin that does is unusable, and we say which one.
    throw pluginUnavailable(`device plugin '${b.name}' probe() threw: ${(e as Error).message}`, { cause: e });
  }
  if (!pr.available) {
    log.info(`backend ${b.name} unavailable: ${pr.reason}`);
    throw pluginUnavailable(`device backend '${b.name}' is not available: ${pr.reason}`);
  }
  log.debug(`backend ${b.name} available`);
  return b;
}

/** The loaded backend that owns `deviceType` ('cuda', 'host'), if any. */
export function backendForDevice(deviceType: string): DeviceBackendV1 | undefined {
  return owners.get(deviceType);
}

/**
 * A CPU copy of `t` (`t` itself when it is already on the CPU), copied by the backend that owns
 * its device type: one loaded in this process (resolveBackend / loadBackend / registerBackend),
 * or the one passed.
 */
export async function toHost(t: Tensor, backend?: DeviceBackendV1): Promise<CpuTensor> {
  if (isCpu(t)) return t;
  const { type } = parseDevice(t.device);
  const b = backend ?? owners.get(type);
  if (!b) {
    throw invalidArgument(`toHost: no backend for device '${t.device}' is loaded in this process; ` +
      `resolve it first (resolveBackend) or pass it: toHost(t, backend)`);
  }
  return fromDevice(b, t);
}
