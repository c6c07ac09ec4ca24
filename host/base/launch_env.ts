/**
 * env:// — the variables `groupcomm launch` (and torchrun) give each rank: RANK, WORLD_SIZE,
 * LOCAL_RANK, LOCAL_WORLD_SIZE, GROUP_RANK, MASTER_ADDR, MASTER_PORT and the run id. A script
 * started without a launcher gets an ERR_GROUPCOMM_CONFIG naming the variable that is missing or
 * malformed (instead of "TcpStore: bad port NaN" from a Number(undefined) further down).
 *
 * These are torch's names, not GROUPCOMM_* settings, so they are read here and not declared in
 * config.ts; GROUPCOMM_RUN_ID is (the launcher sets it).
 */
import { configError, missingVariableError, type GroupcommError } from './errors.js';
import { setting } from './config.js';

export interface LaunchEnv {
  /** RANK: this process's global rank. */
  rank: number;
  /** WORLD_SIZE: ranks in the job. */
  worldSize: number;
  /** LOCAL_RANK (default 0): rank on this node, the device index. */
  localRank: number;
  /** LOCAL_WORLD_SIZE (default 1): ranks on this node. */
  localWorldSize: number;
  /** GROUP_RANK (default 0): this node's index. */
  nodeRank: number;
  /** MASTER_ADDR: node 0's address, where the launcher's store listens. */
  masterAddr: string;
  /** MASTER_PORT: the store's port. */
  masterPort: number;
  /** GROUPCOMM_RUN_ID (or TORCHELASTIC_RUN_ID): set by a launcher. */
  runId?: string;
}

type Env = Record<string, string | undefined>;

function missing(name: string, what: string): GroupcommError {
  return missingVariableError(name,
    `${name} is not set: ${what}. Start the script with \`groupcomm launch\` (or torchrun), or set ${name} yourself`);
}

function int(env: Env, name: string, what: string, min: number, max: number, dflt?: number): number {
  const raw = env[name];
  if (raw === undefined || raw.trim() === '') {
    if (dflt !== undefined) return dflt;
    throw missing(name, what);
  }
  const t = raw.trim();
  const v = Number(t);
  if (!/^\d+$/.test(t) || v < min || v > max) throw configError(name, raw, `an integer in [${min}, ${max}] (${what})`);
  return v;
}

/** Reads and checks the launcher's variables; throws ERR_GROUPCOMM_CONFIG naming the first bad one. */
export function launchEnv(env: Env = process.env): LaunchEnv {
  const worldSize = int(env, 'WORLD_SIZE', 'the number of ranks in the job', 1, 0x7fffffff);
  const rank = int(env, 'RANK', 'this process\'s global rank', 0, worldSize - 1);
  const localWorldSize = int(env, 'LOCAL_WORLD_SIZE', 'ranks on this node', 1, worldSize, 1);
  const localRank = int(env, 'LOCAL_RANK', 'this rank\'s index on its node', 0, localWorldSize - 1, 0);
  const nodeRank = int(env, 'GROUP_RANK', 'this node\'s index', 0, 0xffff, 0);
  const masterAddr = (env.MASTER_ADDR ?? '').trim();
  if (!masterAddr) throw missing('MASTER_ADDR', 'the address of node 0, where the store listens');
  if (/\s|\/|^\[?$/.test(masterAddr)) throw configError('MASTER_ADDR', env.MASTER_ADDR ?? '', 'a host name or an IP address (IPv6 with or without [ ])');
  const masterPort = int(env, 'MASTER_PORT', 'the port of the store on MASTER_ADDR', 1, 65535);
  const runId = (env === process.env ? setting('GROUPCOMM_RUN_ID') : setting('GROUPCOMM_RUN_ID', env)) ?? env.TORCHELASTIC_RUN_ID;
  return { rank, worldSize, localRank, localWorldSize, nodeRank, masterAddr: unbracket(masterAddr), masterPort, runId };
}

/** `[::1]` → `::1` (URL form to socket form); anything else unchanged. */
export function unbracket(host: string): string {
  return host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host;
}

/**
 * WORLD_SIZE when this process was started by `groupcomm launch` (GROUPCOMM_RUN_ID is set and
 * WORLD_SIZE parses): every global rank of the job is below it. undefined otherwise.
 */
export function launchedWorldSize(env: Env = process.env): number | undefined {
  if (setting('GROUPCOMM_RUN_ID', env) === undefined) return undefined;
  const raw = env.WORLD_SIZE?.trim();
  return raw && /^\d+$/.test(raw) && Number(raw) > 0 ? Number(raw) : undefined;
}
