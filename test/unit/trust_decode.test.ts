/**
 * Decoders of untrusted values (docs/security.md): msgpack from a peer may not carry RegExp,
 * Error or structured-clone extensions, nor a "__proto__" key; a tensor-dict slot may not
 * declare more than GROUPCOMM_MAX_DECODE_BYTES; and only GroupcommErrors escape a decode.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Packr } from 'msgpackr';
import { decodeObject, encodeObject } from '../../host/pg/codec.js';
import { decodeTensorDict, encodeTensorDict } from '../../host/coordinator/tensor_dict.js';
import { encodeFrame } from '../../host/core/frame.js';
import { isGroupcommError } from '../../host/base/errors.js';

const o = { key: 'k', src: 1 };
/** A hostile sender's msgpackr: every extension on. */
const evil = new Packr({ moreTypes: true, structuredClone: true, useRecords: false });
const obj = (body: Uint8Array) => new Uint8Array(Buffer.concat([Buffer.from([0x67, 0x63, 0x01, 0x01]), body]));

function refused(f: () => unknown, what: string): string {
  try {
    const v = f();
    assert.unreachable(`${what}: decoded to ${String(v)}`);
  } catch (e) {
    assert.ok(isGroupcommError(e, 'ERR_GROUPCOMM_PROTOCOL'), `${what}: ${e}`);
    return (e as Error).message;
  }
  return '';
}

test('RegExp, Error and structured-clone extensions from a peer are refused', () => {
  refused(() => decodeObject(obj(evil.pack({ r: /a+/g })), o), 'RegExp');
  refused(() => decodeObject(obj(evil.pack(new Error('x'))), o), 'Error');
  const cyclic: Record<string, unknown> = { a: 1 };
  cyclic.self = cyclic;
  refused(() => decodeObject(obj(evil.pack(cyclic)), o), 'structured clone (cycle)');
  // The 'valueOf' error name that handed out msgpackr's module-global error table.
  const e = new Error('m');
  e.name = 'valueOf';
  refused(() => decodeObject(obj(evil.pack(e)), o), 'Error named valueOf');
  // Later decodes are unaffected.
  assert.equal(decodeObject(encodeObject({ ok: [1, 2] }), o), { ok: [1, 2] });
});

test('a "__proto__" key is refused, not silently renamed', () => {
  const body = Buffer.from('81a95f5f70726f746f5f5f81a178a179', 'hex'); // { "__proto__": { x: "y" } }
  const m = refused(() => decodeObject(obj(body), o), '__proto__');
  assert.match(m, /__proto__/);
  assert.equal(decodeObject(encodeObject({ proto: 1 }), o), { proto: 1 });
});

test('the sender refuses RegExp and Error values with INVALID_ARGUMENT', () => {
  for (const v of [/x/, new Error('e'), { nested: [new TypeError('t')] }]) {
    try {
      encodeObject(v);
      assert.unreachable('encoded');
    } catch (e) {
      assert.ok(isGroupcommError(e, 'ERR_GROUPCOMM_INVALID_ARGUMENT'), String(e));
    }
  }
});

test('tensor-dict slots declaring more than the maximum are refused before allocation; 2^53-1 is a PROTOCOL error, not a RangeError', () => {
  for (const n of [2 ** 33, 2 ** 40, Number.MAX_SAFE_INTEGER]) {
    const f = encodeFrame([{ key: 'a', kind: 'tensor', dtype: 'uint8', shape: [n], device: 'cuda:0', nbytes: n }]);
    const m = refused(() => decodeTensorDict(f), `${n} bytes`);
    assert.match(m, /GROUPCOMM_MAX_DECODE_BYTES/);
  }
  const small = encodeFrame([{ key: 'a', kind: 'tensor', dtype: 'uint8', shape: [2048], device: 'cuda:0', nbytes: 2048 }]);
  refused(() => decodeTensorDict(small, { maxBytes: 1024 }), 'over a configured maximum');
  assert.is(decodeTensorDict(small, { maxBytes: 4096 }).slots[0].nbytes, 2048);
  // A value blob with a RegExp extension inside a tensor dict.
  const good = encodeTensorDict({ v: { a: 1 } }).frame;
  assert.equal(decodeTensorDict(good).dict, { v: { a: 1 } });
  const bad = encodeFrame([{ key: 'v', kind: 'value', blob: evil.pack(/x/) }]);
  refused(() => decodeTensorDict(bad), 'RegExp in a tensor dict');
});

test.run();
