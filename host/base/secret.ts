/**
 * The job secret (docs/security.md): one shared secret, from an option or GROUPCOMM_SECRET, that
 * every listener of a job (store server, CPU-group mesh) makes its peers prove they know, and
 * the rule that keeps jobs safe by default: a listener on an address other hosts can reach
 * needs a secret, unless the user opts out explicitly (`insecure: true` / GROUPCOMM_INSECURE=1).
 */
import crypto from 'node:crypto';
import { setting } from './config.js';
import { authError, invalidArgument } from './errors.js';
import type { Logger } from './log.js';

export type SecretOption = string | Uint8Array;

/** The secret in force: the option, else GROUPCOMM_SECRET, else undefined. Empty is an error. */
export function resolveSecret(opt: SecretOption | undefined, what: string): Buffer | undefined {
  const v = opt ?? setting('GROUPCOMM_SECRET');
  if (v === undefined) return undefined;
  const b = typeof v === 'string' ? Buffer.from(v, 'utf8') : Buffer.from(v);
  if (b.length === 0) throw invalidArgument(`${what}: the secret must not be empty`);
  return b;
}

/** A fresh random secret (what `groupcomm launch` hands its ranks when none is given). */
export function generateSecret(): string {
  return crypto.randomBytes(32).toString('base64url');
}

/** True for an address only this host can reach (127.0.0.0/8, ::1, localhost). */
export function isLoopback(host: string): boolean {
  const h = host.trim().toLowerCase().replace(/^\[|\]$/g, '');
  if (h === 'localhost' || h === '::1' || h === '0:0:0:0:0:0:0:1') return true;
  if (/^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h)) return true;
  if (/^::ffff:127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h)) return true;
  return false;
}

/**
 * Refuses to listen on a non-loopback `host` without a secret, naming the variable, unless
 * `insecure` (option, else GROUPCOMM_INSECURE) is set, which is then logged as a warning.
 */
export function checkExposure(what: string, host: string, secret: Buffer | undefined, insecure: boolean | undefined, log: Logger): void {
  if (secret || isLoopback(host)) return;
  if (insecure ?? setting('GROUPCOMM_INSECURE')) {
    log.warn(`${what} listens on ${host} without a secret (insecure): anyone who can reach it can join, read and write. Set GROUPCOMM_SECRET.`);
    return;
  }
  throw authError(
    `${what}: refusing to listen on ${host} (reachable from other hosts) without a secret. ` +
    'Set GROUPCOMM_SECRET (the same on every rank; `groupcomm launch` does it for you) or pass { secret }, ' +
    'or opt out with { insecure: true } / GROUPCOMM_INSECURE=1 on a network you trust. See docs/security.md.',
    { variable: 'GROUPCOMM_SECRET', host });
}
