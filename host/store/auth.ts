/**
 * The optional shared-secret handshake (a groupcomm extension; torch has no authentication).
 * After VALIDATE the client sends AUTH_HELLO with a random nonce; the server answers with its
 * own nonce and a proof that it knows the secret; the client checks it and sends its proof.
 * Both proofs are HMAC-SHA256 over both nonces with a role label, so neither can be replayed
 * as the other, and the secret itself never crosses the wire.
 */
import crypto from 'node:crypto';

export function authProof(secret: Uint8Array, role: 'server' | 'client', first: Uint8Array, second: Uint8Array): Buffer {
  return crypto.createHmac('sha256', secret)
    .update(`groupcomm-store-auth-v1 ${role}\n`)
    .update(first)
    .update(second)
    .digest();
}

export function secretBytes(secret: string | Uint8Array): Buffer {
  return typeof secret === 'string' ? Buffer.from(secret, 'utf8') : Buffer.from(secret);
}
