/**
 * One error family for the whole library. Tests and callers branch on `code`, never on the
 * message; the message names the actors (rank, peer ranks, keys) and the knob to turn.
 */

export const ErrorCode = {
  TIMEOUT: 'ERR_GROUPCOMM_TIMEOUT',
  ABORTED: 'ERR_GROUPCOMM_ABORTED',
  PEER_LOST: 'ERR_GROUPCOMM_PEER_LOST',
  /**
   * A peer destroyed its end of the group on purpose (close, destroy, abort: its goodbye came)
   * while an operation still needed it: it left, it was not lost. `peerRank` names it.
   */
  PEER_LEFT: 'ERR_GROUPCOMM_PEER_LEFT',
  PROTOCOL: 'ERR_GROUPCOMM_PROTOCOL',
  INVALID_ARGUMENT: 'ERR_GROUPCOMM_INVALID_ARGUMENT',
  PLUGIN_UNAVAILABLE: 'ERR_GROUPCOMM_PLUGIN_UNAVAILABLE',
  DESTROYED: 'ERR_GROUPCOMM_DESTROYED',
  AUTH: 'ERR_GROUPCOMM_AUTH',
  INTERNAL: 'ERR_GROUPCOMM_INTERNAL',
  /** A GROUPCOMM_* environment variable holds a value it does not accept (see docs/env.md). */
  CONFIG: 'ERR_GROUPCOMM_CONFIG',
  /** Listening on host:port failed (EADDRINUSE, EADDRNOTAVAIL, EACCES…): the cause says which. */
  BIND: 'ERR_GROUPCOMM_BIND',
  /**
   * The ranks called different collectives, or the same one with different arguments (dtype, op,
   * root, count/shape, dim): `peerRanks` names the ranks that differ from this one, the message
   * the fields.
   */
  MISMATCH: 'ERR_GROUPCOMM_MISMATCH',
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

export interface GroupcommErrorFields {
  rank?: number;
  peerRank?: number;
  peerRanks?: number[];
  key?: string;
  keys?: string[];
  timeoutMs?: number;
  elapsedMs?: number;
  cause?: unknown;
  /** A numeric sub-code, e.g. the WASM decoder's error code or an NCCL result. */
  detail?: number;
  /** The environment variable at fault (ERR_GROUPCOMM_CONFIG). */
  variable?: string;
  /** The address that could not be bound (ERR_GROUPCOMM_BIND). */
  host?: string;
  port?: number;
}

// A Symbol.for brand makes isGroupcommError work across two copies of the package
// (a plugin that bundles its own groupcomm, say), where instanceof would not.
const BRAND = Symbol.for('groupcomm.error');

export class GroupcommError extends Error {
  readonly code: ErrorCode;
  rank?: number;
  peerRank?: number;
  peerRanks?: number[];
  key?: string;
  keys?: string[];
  timeoutMs?: number;
  elapsedMs?: number;
  detail?: number;
  variable?: string;
  host?: string;
  port?: number;

  /** Use the factories below: they are what keeps codes and messages uniform. */
  constructor(code: ErrorCode, message: string, fields: GroupcommErrorFields = {}) {
    super(message, fields.cause === undefined ? undefined : { cause: fields.cause });
    this.name = 'GroupcommError';
    this.code = code;
    const { cause: _cause, ...rest } = fields;
    Object.assign(this, rest);
  }

  get [BRAND](): true {
    return true;
  }
}

export function isGroupcommError(e: unknown, code?: ErrorCode): e is GroupcommError {
  return (
    typeof e === 'object' && e !== null && (e as any)[BRAND] === true &&
    (code === undefined || (e as GroupcommError).code === code)
  );
}

// Every GroupcommError is made by one of these factories (scripts/check-source.js checks
// that nothing else calls the constructor).
export const timeoutError = (msg: string, f: GroupcommErrorFields = {}) =>
  new GroupcommError(ErrorCode.TIMEOUT, msg, f);
export const abortedError = (msg: string, f: GroupcommErrorFields = {}) =>
  new GroupcommError(ErrorCode.ABORTED, msg, f);
export const peerLostError = (msg: string, f: GroupcommErrorFields = {}) =>
  new GroupcommError(ErrorCode.PEER_LOST, msg, f);
export const peerLeftError = (msg: string, f: GroupcommErrorFields = {}) =>
  new GroupcommError(ErrorCode.PEER_LEFT, msg, f);
export const protocolError = (msg: string, f: GroupcommErrorFields = {}) =>
  new GroupcommError(ErrorCode.PROTOCOL, msg, f);
export const invalidArgument = (msg: string, f: GroupcommErrorFields = {}) =>
  new GroupcommError(ErrorCode.INVALID_ARGUMENT, msg, f);
export const pluginUnavailable = (msg: string, f: GroupcommErrorFields = {}) =>
  new GroupcommError(ErrorCode.PLUGIN_UNAVAILABLE, msg, f);
export const destroyedError = (msg: string, f: GroupcommErrorFields = {}) =>
  new GroupcommError(ErrorCode.DESTROYED, msg, f);
export const authError = (msg: string, f: GroupcommErrorFields = {}) =>
  new GroupcommError(ErrorCode.AUTH, msg, f);
export const mismatchError = (msg: string, f: GroupcommErrorFields = {}) =>
  new GroupcommError(ErrorCode.MISMATCH, msg, f);
export const internalError = (msg: string, f: GroupcommErrorFields = {}) =>
  new GroupcommError(ErrorCode.INTERNAL, msg, f);

/** `variable` holds `value`, which is not what it accepts (`accepts`, in words). */
export const configError = (variable: string, value: string, accepts: string) =>
  new GroupcommError(ErrorCode.CONFIG, `${variable}=${JSON.stringify(value)} is not valid: expected ${accepts}`, { variable });

/** `variable` is not set though it is required (`message` says what it holds and who sets it). */
export const missingVariableError = (variable: string, message: string) =>
  new GroupcommError(ErrorCode.CONFIG, message, { variable });

/** Error codes of listen() that mean "this address cannot be bound", not a bug of ours. */
const BIND_CODES = new Set(['EADDRINUSE', 'EADDRNOTAVAIL', 'EACCES', 'EPERM', 'ENOTFOUND']);

/**
 * The error for a listen() on `host:port` that failed with `cause` (what `server.listen` emitted):
 * ERR_GROUPCOMM_BIND for an address that cannot be bound, naming who listened (`what`) and the
 * errno code; anything else passes through unchanged.
 */
export function bindError(what: string, host: string, port: number, cause: unknown): unknown {
  const code = (cause as NodeJS.ErrnoException | undefined)?.code;
  if (isGroupcommError(cause) || code === undefined || !BIND_CODES.has(code)) return cause;
  const hint = code === 'EADDRINUSE' ? ' (the port is taken: pick another, or 0 for any free one)'
    : code === 'EACCES' || code === 'EPERM' ? ' (not allowed: ports below 1024 need privileges)'
      : code === 'EADDRNOTAVAIL' || code === 'ENOTFOUND' ? ' (no such local address)' : '';
  return new GroupcommError(ErrorCode.BIND, `${what}: cannot listen on ${host}:${port}: ${code}${hint}`, { host, port, cause });
}

/**
 * `e` with more context: the same code and fields, `message` in front, `e` as the cause (how a
 * layer adds its own name to an error from the layer below).
 */
export function withContext(e: GroupcommError, message: string, fields: GroupcommErrorFields = {}): GroupcommError {
  return new GroupcommError(e.code, message, {
    rank: e.rank, peerRank: e.peerRank, peerRanks: e.peerRanks, key: e.key, keys: e.keys,
    timeoutMs: e.timeoutMs, elapsedMs: e.elapsedMs, detail: e.detail, variable: e.variable,
    host: e.host, port: e.port, ...fields, cause: e,
  });
}

/** `e` naming `rank` as the rank it happened on, when it names none (a lower layer did not know it). */
export function withRank(e: unknown, rank: number): unknown {
  return isGroupcommError(e) && e.rank === undefined ? withContext(e, e.message, { rank }) : e;
}
