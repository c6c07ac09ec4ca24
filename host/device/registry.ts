/**
 * Finding a device backend: by name ('cpu', 'cuda', or any name registered at run time) or by
 * module specifier (a package name, or a path to a module file). The choice comes from the
 * `backend` option, else GROUPCOMM_DEVICE_PLUGIN, else 'cuda'. A module plugin exports its
 * DeviceBackendV1 as `backend` or as the default export.
 *
 * `resolveBackend` also probes: a backend that is not usable here is never returned; the error
 * (ERR_GROUPCOMM_PLUGIN_UNAVAILABLE) carries the plugin's own reason.
 */
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { pluginUnavailable, invalidArgument } from '../base/errors.js';
import { logger } from '../base/log.js';
import { setting } from '../base/config.js';
import { checkBackend } from './check.js';
import type { DeviceBackendV1 } from './types.js';

const log = logger('DEVICE');

// Built-ins are imported lazily so that CPU-only users never load koffi or look for CUDA.
const BUILTIN: Record<string, () => Promise<unknown>> = {
  cpu: () => import('../../plugins/cpu/index.js'),
  cuda: () => import('../../plugins/cuda/index.js'),
};

const registered = new Map<string, DeviceBackendV1>();
const loaded = new Map<string, Promise<DeviceBackendV1>>();

/** Makes `backend` resolvable by its name (replacing a previous registration of that name). */
export function registerBackend(backend: DeviceBackendV1): void {
  const b = checkBackend(backend, `'${(backend as { name?: unknown })?.name}'`);
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
  const builtin = BUILTIN[spec];
  if (builtin) return checkBackend(pickExport(await builtin()), `'${spec}'`);
  const url = isPathLike(spec) && !spec.startsWith('file:') ? pathToFileURL(path.resolve(spec)).href : spec;
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
  return checkBackend(pickExport(mod), `'${spec}'`);
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
