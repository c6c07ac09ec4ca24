/**
 * Runtime shape check of a loaded plugin. TypeScript types vanish at run time and a plugin may
 * come from any module specifier, so the loader verifies what it got before trusting it, and
 * says exactly what is missing (the way NCCL refuses a net plugin without the right symbol).
 */
import { pluginUnavailable } from '../base/errors.js';
import { DEVICE_API_VERSION, type DeviceBackendV1, type DeviceCommunicatorV1 } from './types.js';

const BACKEND_FUNCTIONS = [
  'probe', 'deviceCount', 'alloc', 'free', 'copyFromHost', 'copyToHost', 'createCommunicator',
] as const;

export const COMMUNICATOR_FUNCTIONS = [
  'allReduce', 'allGather', 'reduceScatter', 'broadcast', 'send', 'recv', 'gather', 'allToAll',
  'barrier', 'synchronize', 'abort', 'close',
] as const;

/** Problems with `v` as a DeviceBackendV1, one line each (empty when it is fine). */
export function backendProblems(v: unknown): string[] {
  if (typeof v !== 'object' || v === null) return [`expected an object, got ${v === null ? 'null' : typeof v}`];
  const b = v as Record<string, unknown>;
  const out: string[] = [];
  if (b.apiVersion !== DEVICE_API_VERSION) {
    out.push(`apiVersion is ${JSON.stringify(b.apiVersion)}; this groupcomm supports ${DEVICE_API_VERSION}`);
  }
  if (typeof b.name !== 'string' || b.name === '') out.push('name must be a non-empty string');
  if (typeof b.deviceType !== 'string' || !/^[a-z][a-z0-9_]*$/.test(b.deviceType) || b.deviceType === 'cpu') {
    out.push(`deviceType must match /^[a-z][a-z0-9_]*$/ and not be 'cpu' (got ${JSON.stringify(b.deviceType)})`);
  }
  const caps = b.capabilities as Record<string, unknown> | undefined;
  if (typeof caps !== 'object' || caps === null || !Array.isArray(caps.reduceDtypes) || typeof caps.sharedDevice !== 'boolean') {
    out.push('capabilities must be { reduceDtypes: DType[], sharedDevice: boolean }');
  }
  for (const f of BACKEND_FUNCTIONS) if (typeof b[f] !== 'function') out.push(`${f}() is missing`);
  return out;
}

/** Throws ERR_GROUPCOMM_PLUGIN_UNAVAILABLE listing every problem; returns the typed backend. */
export function checkBackend(v: unknown, source: string): DeviceBackendV1 {
  const problems = backendProblems(v);
  if (problems.length) {
    throw pluginUnavailable(`device plugin ${source} is not a DeviceBackendV1:\n  - ${problems.join('\n  - ')}`);
  }
  return v as DeviceBackendV1;
}

/** Same check for a communicator a plugin returned (a plugin bug, caught at creation). */
export function checkCommunicator(v: unknown, source: string): DeviceCommunicatorV1 {
  const c = v as Record<string, unknown> | null;
  const missing: string[] = COMMUNICATOR_FUNCTIONS.filter((f) => typeof c?.[f] !== 'function');
  if (typeof (c as { [Symbol.asyncDispose]?: unknown } | null)?.[Symbol.asyncDispose] !== 'function') missing.push('[Symbol.asyncDispose]');
  if (typeof c !== 'object' || c === null || missing.length) {
    throw pluginUnavailable(`device plugin ${source} returned a communicator without ${missing.join(', ') || 'an object'}`);
  }
  return v as DeviceCommunicatorV1;
}
