// TcpStore's request frames (host/store/client_frames.ts), byte for byte against the wire format
// that torch's TCPStore and our server parse (`u8 op`, `u64 length` + bytes per key or value,
// little-endian), and the two reply conversions next to them.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { keyFrame, keyValueFrame, waitGetFrame, multiSetFrame, valueBytes, safeNumber } from '../../host/store/client_frames.js';
import { Op, WAIT_GET_DELETE } from '../../host/store/protocol.js';
import { isGroupcommError } from '../../host/base/errors.js';
import { le64, str } from './store_raw.js';

const B = (s: string) => Buffer.from(s, 'utf8');
const concat = (...parts: (number[] | Buffer)[]) => Buffer.concat(parts.map((p) => Buffer.isBuffer(p) ? p : Buffer.from(p)));
const flat = (f: Buffer | Buffer[]) => Buffer.isBuffer(f) ? f : Buffer.concat(f);

test('keyFrame: op, then the key with its u64 length', () => {
  assert.equal(keyFrame(Op.GET, B('ab')), concat([Op.GET], str('ab')));
  assert.equal(keyFrame(Op.CHECK, B('')), concat([Op.CHECK], le64(0)));
  assert.equal(keyFrame(Op.DELETE_KEY, B('ké')), concat([Op.DELETE_KEY], str('ké')));
});

test('keyValueFrame: a small value is copied into one frame', () => {
  const v = new Uint8Array([1, 2, 3]);
  const f = keyValueFrame(Op.SET, B('k'), v);
  assert.ok(Buffer.isBuffer(f), 'one buffer');
  assert.equal(f, concat([Op.SET], str('k'), le64(3), [1, 2, 3]));
  v[0] = 9;
  assert.is((f as Buffer)[f.length - 3], 1, 'a copy: later changes to the value do not reach the frame');
  assert.equal(keyValueFrame(Op.SET, B('k'), new Uint8Array(0)), concat([Op.SET], str('k'), le64(0)));
});

test('keyValueFrame: from 64 KiB on, the value travels as its own buffer, not copied', () => {
  const below = new Uint8Array(64 * 1024 - 1).fill(7);
  const fb = keyValueFrame(Op.SET, B('k'), below);
  assert.ok(Buffer.isBuffer(fb), '64 KiB − 1 is still copied into one frame');
  assert.equal(fb, concat([Op.SET], str('k'), le64(below.length), Buffer.from(below)));

  // A view into a bigger buffer: the frame must take exactly its bytes.
  const backing = new Uint8Array(64 * 1024 + 16);
  for (let i = 0; i < backing.length; i++) backing[i] = i & 0xff;
  const big = backing.subarray(8, 8 + 64 * 1024);
  const f = keyValueFrame(Op.APPEND, B('key'), big);
  assert.ok(Array.isArray(f), 'head and value');
  const [head, value] = f as Buffer[];
  assert.equal(head, concat([Op.APPEND], str('key'), le64(big.length)));
  assert.is(value.length, big.length);
  assert.is(value.buffer, backing.buffer, 'the value is a view of the caller\'s memory');
  assert.is(value.byteOffset, 8);
  assert.equal(flat(f), concat([Op.APPEND], str('key'), le64(big.length), Buffer.from(big)));
});

test('waitGetFrame: op, flags (delete or not), then the keys as WAIT lists them', () => {
  assert.equal(waitGetFrame([B('a'), B('bc')], false), concat([Op.WAIT_GET, 0], le64(2), str('a'), str('bc')));
  assert.equal(waitGetFrame([B('a')], true), concat([Op.WAIT_GET, WAIT_GET_DELETE], le64(1), str('a')));
  assert.equal(waitGetFrame([], true), concat([Op.WAIT_GET, WAIT_GET_DELETE], le64(0)));
});

test('multiSetFrame: op, count, then each key and its value', () => {
  assert.equal(multiSetFrame([B('a'), B('bb')], [B('x'), B('')]), concat([Op.MULTI_SET], le64(2), str('a'), str('x'), str('bb'), str('')));
  assert.equal(multiSetFrame([], []), concat([Op.MULTI_SET], le64(0)));
});

test('valueBytes: a string as UTF-8, bytes as they are (no copy), anything else refused', () => {
  assert.equal(valueBytes('hé'), B('hé'));
  const u = new Uint8Array([0xff, 0]);
  assert.is(valueBytes(u), u);
  for (const bad of [1, null, undefined, { length: 1 }, [1]]) {
    try {
      valueBytes(bad as never);
      assert.unreachable(`accepted ${String(bad)}`);
    } catch (e) {
      assert.ok(isGroupcommError(e, 'ERR_GROUPCOMM_INVALID_ARGUMENT'), String(e));
    }
  }
});

test('safeNumber: a bigint within Number\'s exact range converts; beyond it is a protocol error', () => {
  assert.is(safeNumber(0n, 'add'), 0);
  assert.is(safeNumber(-5n, 'add'), -5);
  assert.is(safeNumber(2n ** 53n - 1n, 'add'), Number.MAX_SAFE_INTEGER);
  assert.is(safeNumber(-(2n ** 53n - 1n), 'add'), -Number.MAX_SAFE_INTEGER);
  for (const v of [2n ** 53n, -(2n ** 53n), 2n ** 63n - 1n]) {
    try {
      safeNumber(v, 'numKeys');
      assert.unreachable(`accepted ${v}`);
    } catch (e) {
      assert.ok(isGroupcommError(e, 'ERR_GROUPCOMM_PROTOCOL'), String(e));
    }
  }
});

test.run();
