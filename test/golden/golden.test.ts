// Golden vectors pin the v1 frame bytes. The runner runs this file on Node and on Bun against
// the same frames.json, so passing on both means both produce and accept identical bytes.
// GROUPCOMM_UPDATE_GOLDEN=1 rewrites frames.json from cases.ts (review the diff!); without it
// the file is only read.
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { encodeTensorDict, decodeTensorDict, fillTensorDict } from '../../host/coordinator/tensor_dict.js';
import { DTYPE_NAMES, type Tensor } from '../../host/core/tensor.js';
import { packageRoot } from '../../host/base/pkgroot.js';
import { CASES } from './cases.js';
import { buildDict, comparable, type GoldenCase } from './spec.js';
import { hex, unhex } from './raw.js';

interface GoldenFile {
  format: string;
  version: number;
  frames: Array<GoldenCase & { hex: string }>;
}

const file = path.join(packageRoot(), 'test', 'golden', 'frames.json');

function encodeCase(c: GoldenCase): Uint8Array {
  return encodeTensorDict(buildDict(c), { inlineCpu: c.inlineCpu }).frame;
}

if (process.env.GROUPCOMM_UPDATE_GOLDEN === '1') {
  const out: GoldenFile = {
    format: 'groupcomm tensor-dict frame (docs/wire-format.md); hex = the exact frame bytes',
    version: 1,
    frames: CASES.map((c) => ({ ...c, hex: hex(encodeCase(c)) })),
  };
  // One frame per block, its dict on one line, so a diff shows which vector changed.
  const j = JSON.stringify;
  const frames = out.frames.map(({ hex: h, dict, ...c }) =>
    `  {${Object.entries(c).map(([k, v]) => `${j(k)}: ${j(v)}`).join(', ')},\n   "dict": ${j(dict)},\n   "hex": ${j(h)}}`);
  fs.writeFileSync(file, `{\n "format": ${j(out.format)},\n "version": ${out.version},\n "frames": [\n${frames.join(',\n')}\n ]\n}\n`);
  console.log(`wrote ${out.frames.length} golden frames to ${file}`);
}

const golden = JSON.parse(fs.readFileSync(file, 'utf8')) as GoldenFile;

test('frames.json is v1 and holds exactly the cases of cases.ts', () => {
  assert.is(golden.version, 1);
  assert.equal(golden.frames.map(({ hex: _h, ...c }) => c), JSON.parse(JSON.stringify(CASES)));
});

test('encoding each golden dict reproduces its bytes exactly', () => {
  for (const g of golden.frames) assert.is(hex(encodeCase(g)), g.hex, g.name);
});

test('decoding each golden frame gives back its dict', () => {
  for (const g of golden.frames) {
    const want = buildDict(g);
    const { dict, slots } = decodeTensorDict(unhex(g.hex));
    // The slots are the tensors that were not inline; "receive" the originals into them.
    const sent = slots.map((s) => want[s.key] as Tensor);
    for (const [i, s] of slots.entries()) {
      assert.is(s.dtype, sent[i].dtype, g.name);
      assert.equal(s.shape, sent[i].shape, g.name);
      assert.is(s.device, sent[i].device, g.name);
    }
    fillTensorDict(dict, slots, sent);
    assert.equal(Object.keys(dict), Object.keys(want), g.name);
    assert.equal(comparable(dict), comparable(want), g.name);
  }
});

test('the golden set covers every dtype, 0-d, empty, 8-d, unicode, nested, device indices, inline', () => {
  assert.ok(golden.frames.length >= 20);
  const all = golden.frames.flatMap((g) => g.dict.map(([k, v]) => ({ g, k, v: JSON.stringify(v) })));
  const tensors = all.filter((e) => e.v.startsWith('{"$tensor"')).map((e) => ({ ...e, t: JSON.parse(e.v).$tensor }));
  for (const d of DTYPE_NAMES) assert.ok(tensors.some((e) => e.t.dtype === d && e.t.device === 'cpu' && e.g.inlineCpu), `inline ${d}`);
  assert.ok(tensors.some((e) => e.t.shape.length === 0), '0-d');
  assert.ok(tensors.some((e) => e.t.shape.includes(0)), 'empty');
  assert.ok(tensors.some((e) => e.t.shape.length === 8), '8-d');
  assert.ok(tensors.some((e) => /^cuda:[1-9]/.test(e.t.device)), 'device index > 0');
  assert.ok(all.some((e) => /\p{Script=Han}/u.test(e.k)) && all.some((e) => /\p{Extended_Pictographic}/u.test(e.k)), 'CJK and emoji keys');
  assert.ok(all.some((e) => e.v.includes('$map')) && all.some((e) => e.v.includes('[[[[')), 'nested values');
});

test('every golden frame fails cleanly when its version is bumped (v1 is pinned)', () => {
  for (const g of golden.frames) {
    const b = unhex(g.hex);
    b[4] = 2;
    assert.throws(() => decodeTensorDict(b), /unsupported frame version/, g.name);
  }
});

test.run();
