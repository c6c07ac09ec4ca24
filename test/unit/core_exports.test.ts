// The host and the WebAssembly core agree: every export the host declares is there with the
// declared parameter count and nothing undeclared is exported; every table the host (or the
// docs) keeps next to a family of core constants covers exactly that family; and an abort in
// the core reaches the caller as ERR_GROUPCOMM_INTERNAL with the core's message.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import fs from 'node:fs';
import path from 'node:path';
import { getCore, readCoreString } from '../../host/core/loader.js';
import { CORE_FUNCTIONS, CORE_GLOBALS, exportMismatches } from '../../host/core/exports.js';
import { FrameError, FRAME_LIMITS } from '../../host/core/frame.js';
import { DTYPE_NAMES, dtypeInfo } from '../../host/core/dtype.js';
import { REDUCE_OP_CODES, REDUCE_OPS, allocCoreBuffer, reduceBytes } from '../../host/core/reduce.js';
import { packageRoot } from '../../host/base/pkgroot.js';
import { ErrorCode, isGroupcommError, type GroupcommError } from '../../host/base/errors.js';

const raw = () => getCore().exports as unknown as Record<string, unknown>;
/** The core's globals whose names start with `prefix`, as { rest of the name: value }. */
function family(prefix: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [name, v] of Object.entries(raw())) {
    if (name.startsWith(prefix) && v instanceof WebAssembly.Global) out[name.slice(prefix.length)] = v.value as number;
  }
  return out;
}

test('the module exports exactly what host/core/exports.ts declares, with the declared parameter counts', () => {
  assert.equal(exportMismatches(raw(), { undeclared: true }), []);
  const c = getCore();
  for (const name of CORE_GLOBALS) assert.is(c.consts[name], (c.exports[name].value as number), name);
  assert.ok(Object.isFrozen(c.consts));
});

test('exportMismatches names a missing function, a changed parameter count, a missing constant and an undeclared export', () => {
  const fake: Record<string, unknown> = { ...raw() };
  delete fake.frameDecode;
  fake.reduce = (a: number) => a;
  delete fake.FRAME_MAGIC;
  fake.layoutSomethingNew = () => 0;
  fake.__internal = () => 0; // runtime internals are not the host's business
  const problems = exportMismatches(fake, { undeclared: true });
  assert.equal(problems, [
    'function frameDecode is missing',
    `function reduce takes 1 arguments, the host passes ${CORE_FUNCTIONS.reduce}`,
    'constant FRAME_MAGIC is missing',
    'layoutSomethingNew is exported but not declared in host/core/exports.ts',
  ]);
  // What the loader checks: missing or changed only (a newer core may export more).
  assert.is(exportMismatches(fake).length, 3);
});

test('FrameError is the core FRAME_ERR_* family, name for name', () => {
  const core = family('FRAME_ERR_');
  assert.equal({ ...FrameError }, core);
  assert.is(new Set(Object.values(core)).size, Object.keys(core).length, 'codes are distinct');
  assert.not.ok(Object.values(core).includes(getCore().consts.FRAME_OK), 'no error code equals FRAME_OK');
});

test('dtype names, reduce ops and frame limits cover their core families', () => {
  const dtypes = family('DTYPE_');
  assert.is(dtypes.COUNT, DTYPE_NAMES.length);
  delete dtypes.COUNT;
  assert.equal(Object.keys(dtypes).sort(), DTYPE_NAMES.map((n) => n.toUpperCase()).sort());
  for (const n of DTYPE_NAMES) assert.is(dtypeInfo(n)!.code, dtypes[n.toUpperCase()], n);
  const ops = family('REDUCE_');
  for (const k of ['OK', 'ERR_OP', 'ERR_DTYPE', 'ERR_DIVISOR']) delete ops[k];
  assert.equal(Object.keys(ops).sort(), REDUCE_OPS.map((o) => o.toUpperCase()).sort());
  for (const o of REDUCE_OPS) assert.is(REDUCE_OP_CODES[o], ops[o.toUpperCase()], o);
  const k = getCore().consts;
  assert.equal({ ...FRAME_LIMITS }, {
    version: k.FRAME_VERSION, maxNdim: k.FRAME_MAX_NDIM, maxEntries: k.FRAME_MAX_ENTRIES,
    maxKeyBytes: k.FRAME_MAX_KEY_BYTES, maxDeviceTypeBytes: k.FRAME_MAX_DEVICE_TYPE_BYTES,
    maxDeviceIndex: k.FRAME_MAX_DEVICE_INDEX, maxDim: k.FRAME_MAX_DIM, maxTensorBytes: k.FRAME_MAX_TENSOR_BYTES,
    maxFrameBytes: k.FRAME_MAX_FRAME_BYTES, payloadAlign: k.FRAME_PAYLOAD_ALIGN,
  });
});

test('docs/wire-format.md states the core\'s magic, version, limits, dtype codes and error codes', () => {
  const doc = fs.readFileSync(path.join(packageRoot(), 'docs', 'wire-format.md'), 'utf8');
  const k = getCore().consts;
  const magic = new TextDecoder().decode(new Uint8Array(new Uint32Array([k.FRAME_MAGIC]).buffer));
  assert.match(doc, `| 0 | 4 | magic | \`47 43 54 44\` (ASCII \`${magic}\`) |`);
  assert.match(doc, `| 4 | 2 | version | \`${k.FRAME_VERSION}\` |`);
  // Limits table.
  const fmt = (v: number) => v.toLocaleString('en-US');
  const pow = (v: number) => `2^${Math.log2(v + 1)} − 1`;
  for (const row of [
    `| whole frame, metadata and payloads | ${pow(k.FRAME_MAX_FRAME_BYTES)} bytes |`,
    `| entries | ${fmt(k.FRAME_MAX_ENTRIES)} |`,
    `| key | ${fmt(k.FRAME_MAX_KEY_BYTES)} bytes of UTF-8 |`,
    `| device type / index | ${k.FRAME_MAX_DEVICE_TYPE_BYTES} ASCII bytes / ${fmt(k.FRAME_MAX_DEVICE_INDEX)} |`,
    `| ndim | ${k.FRAME_MAX_NDIM} |`,
    `| each dim, and a tensor's nbytes | ${pow(k.FRAME_MAX_DIM)} |`,
  ]) assert.match(doc, row);
  assert.is(k.FRAME_MAX_TENSOR_BYTES, k.FRAME_MAX_DIM, 'one row states both');
  // Error table: "| code | NAME | meaning |" rows.
  const errors: Record<string, number> = {};
  for (const m of doc.matchAll(/^\| (\d+) \| ([A-Z][A-Z_0-9]*) \| /gm)) errors[m[2]] = Number(m[1]);
  assert.equal(errors, family('FRAME_ERR_'));
  // Dtype table: two "| code | dtype | itemsize |" columns per row.
  const dtypes: Record<string, number> = {};
  for (const m of doc.matchAll(/\| (\d+) \| ([a-z0-9_]+) \| (\d) \|/g)) {
    dtypes[m[2]] = Number(m[1]);
    assert.is(dtypeInfo(m[2])!.itemSize, Number(m[3]), m[2]);
  }
  assert.equal(dtypes, Object.fromEntries(DTYPE_NAMES.map((n) => [n, dtypeInfo(n)!.code])));
});

test('an abort in the core is ERR_GROUPCOMM_INTERNAL carrying its message and file:line:col; the core stays usable', () => {
  let err: GroupcommError | undefined;
  try {
    allocCoreBuffer(1 << 30); // above the allocator's largest block: its runtime aborts
  } catch (e) {
    err = e as GroupcommError;
  }
  assert.ok(err && isGroupcommError(err, ErrorCode.INTERNAL), `expected ERR_GROUPCOMM_INTERNAL, got ${String(err)}`);
  assert.match(err!.message, /WebAssembly core aborted: Allocation too large \(~lib\/rt\/tlsf\.ts:\d+:\d+\)/);
  const b = allocCoreBuffer(64);
  b.free();
  const dst = new Uint8Array(new Float32Array([1, 2]).buffer);
  reduceBytes('sum', 'float32', dst, dst.slice());
  assert.equal(Array.from(new Float32Array(dst.buffer)), [2, 4]);
});

test('readCoreString: null, odd and out-of-range pointers give an empty string', () => {
  const m = getCore().memory;
  assert.is(readCoreString(m, 0), '');
  assert.is(readCoreString(m, 7), '');
  assert.is(readCoreString(m, m.buffer.byteLength + 16), '');
  assert.is(readCoreString(undefined, 1024), '');
});

test.run();
