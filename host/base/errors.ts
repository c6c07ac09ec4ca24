/**
 * One error family for the whole library. Tests and callers branch on `code`, never on the
 * message; the message names the actors (rank, peer ranks, keys) and the knob to turn.
 */

export const ErrorCode = {
  TIMEOUT: 'ERR_GROUPCOMM_TIMEOUT',
  ABORTED: 'ERR_GROUPCOMM_ABORTED',
  PEER_LOST: 'ERR_GROUPCOMM_PEER_LOST',
  PROTOCOL: 'ERR_GROUPCOMM_PROTOCOL',
  INVALID_ARGUMENT: 'ERR_GROUPCOMM_INVALID_ARGUMENT',
  PLUGIN_UNAVAILABLE: 'ERR_GROUPCOMM_PLUGIN_UNAVAILABLE',
  DESTROYED: 'ERR_GROUPCOMM_DESTROYED',
  AUTH: 'ERR_GROUPCOMM_AUTH',
  INTERNAL: 'ERR_GROUPCOMM_INTERNAL',
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

export const timeoutError = (msg: string, f: GroupcommErrorFields = {}) =>
  new GroupcommError(ErrorCode.TIMEOUT, msg, f);
export const abortedError = (msg: string, f: GroupcommErrorFields = {}) =>
  new GroupcommError(ErrorCode.ABORTED, msg, f);
export const peerLostError = (msg: string, f: GroupcommErrorFields = {}) =>
  new GroupcommError(ErrorCode.PEER_LOST, msg, f);
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
export const internalError = (msg: string, f: GroupcommErrorFields = {}) =>
  new GroupcommError(ErrorCode.INTERNAL, msg, f);
