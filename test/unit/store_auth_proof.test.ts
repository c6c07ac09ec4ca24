// The shared-secret proofs of host/store/auth.ts, pinned: HMAC-SHA256 keyed by the secret over a
// role label and both nonces, in order. Pinned because both ends (and any other implementation
// of the extension) must compute exactly this; the handshake itself is store_auth.test.ts.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import crypto from 'node:crypto';
import { authProof, secretBytes } from '../../host/store/auth.js';

const n1 = Buffer.alloc(32, 1);
const n2 = Buffer.alloc(32, 2);

test('authProof: HMAC-SHA256(secret, "groupcomm-store-auth-v1 <role>\\n" + first + second)', () => {
  const secret = Buffer.from('s3cret');
  for (const role of ['server', 'client'] as const) {
    const want = crypto.createHmac('sha256', secret).update(Buffer.concat([Buffer.from(`groupcomm-store-auth-v1 ${role}\n`), n1, n2])).digest();
    assert.equal(authProof(secret, role, n1, n2), want);
  }
  // A known answer, computed once (fixes the label's bytes independently of the line above).
  assert.is(authProof(Buffer.from('k'), 'server', Buffer.alloc(0), Buffer.alloc(0)).toString('hex'),
    crypto.createHmac('sha256', 'k').update('groupcomm-store-auth-v1 server\n').digest('hex'));
});

test('authProof: role, nonce order and secret each change the proof', () => {
  const s = Buffer.from('s');
  const base = authProof(s, 'server', n1, n2);
  assert.is(base.length, 32);
  assert.not.equal(authProof(s, 'client', n1, n2), base);
  assert.not.equal(authProof(s, 'server', n2, n1), base);
  assert.not.equal(authProof(Buffer.from('t'), 'server', n1, n2), base);
});

test('secretBytes: a string as UTF-8; bytes copied (the caller may reuse its buffer)', () => {
  assert.equal(secretBytes('hé'), Buffer.from([0x68, 0xc3, 0xa9]));
  const u = new Uint8Array([1, 2, 3]);
  const b = secretBytes(u);
  assert.equal(b, Buffer.from([1, 2, 3]));
  assert.ok(Buffer.isBuffer(b));
  u[0] = 9;
  assert.is(b[0], 1);
});

test.run();
