// The public surface, pinned: the names the main entry (host/index.ts, 'groupcomm') and the core
// entry (host/core/index.ts, 'groupcomm/core') export, values and types. Adding or removing a
// name fails here until the list below changes with it, so growth is a conscious change. The
// modules are imported by package name, which goes through package.json "exports" (Node: the
// shipped dist/, Bun: the 'bun' condition's sources).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import fs from 'node:fs';
import path from 'node:path';
import { packageRoot } from '../../host/base/pkgroot.js';

const MAIN_VALUES = [
  'GroupcommError', 'ErrorCode', 'isGroupcommError',
  'tensor', 'empty', 'isTensor', 'isCpu', 'numel', 'nbytes', 'toHost', 'premulSum',
  'TcpStore', 'TcpStoreServer', 'PrefixStore',
  'StatelessProcessGroup', 'CpuGroup',
  'resolveBackend', 'registerBackend', 'toDevice', 'fromDevice',
  'StatelessGroupCoordinator',
];
const MAIN_TYPES = [
  'GroupcommErrorFields', 'OpOptions', 'CloseOptions',
  'Tensor', 'CpuTensor', 'DType', 'DeviceBuffer', 'TypedArray', 'ReduceOp',
  'Store', 'StoreValue', 'TcpStoreOptions', 'TcpStoreServerOptions',
  'ProcessGroupOptions', 'CpuGroupOptions',
  'DeviceBackendV1', 'DeviceCommunicatorV1',
  'CoordinatorOptions', 'TensorDict',
];
/** The issue that set the budget: the main entry names what users call, 40 names or fewer. */
const MAIN_BUDGET = 40;

const CORE_VALUES = [
  'DTYPE_NAMES', 'dtypeInfo',
  'itemSize', 'arrayClassOf', 'bytesOf', 'fromBytes', 'parseDevice',
  'REDUCE_OP_CODES', 'reduceBytes', 'finishAvg', 'allocCoreBuffer', 'reduceAt', 'finishAvgAt',
  'findGroup', 'validatePortTriple', 'groupPortsFor', 'encodePortRecord', 'decodePortRecord',
  'ringNeighbors', 'binomialTree', 'disseminationPartners', 'recursiveDoubling', 'chunkPlan',
  'FrameError',
];
const CORE_TYPES = ['DTypeInfo', 'CoreBuffer', 'GroupLayout', 'PortTriple', 'BinomialTree', 'RecursiveDoublingPlan', 'ChunkPlan'];

/**
 * The names an entry file exports, read from its source: every export there is a named
 * re-export (`export { a, b } from …` or `export type { … } from …`); anything else fails.
 */
function exportedNames(rel: string): { values: string[]; types: string[] } {
  const src = fs.readFileSync(path.join(packageRoot(), rel), 'utf8')
    .replace(/\/\*[\s\S]*?\*\//g, '').replace(/\/\/.*$/gm, '');
  const values: string[] = [], types: string[] = [];
  let rest = src;
  for (const m of src.matchAll(/export\s+(type\s+)?\{([^}]*)\}\s*from\s*'[^']+';/g)) {
    for (const raw of m[2].split(',')) {
      const spec = raw.trim();
      if (!spec) continue;
      const name = spec.split(/\s+as\s+/).pop()!.replace(/^type\s+/, '');
      (m[1] || spec.startsWith('type ') ? types : values).push(name);
    }
    rest = rest.replace(m[0], '');
  }
  assert.not.match(rest, /\bexport\b/, `${rel}: only named re-exports belong in an entry file`);
  return { values, types };
}

const sorted = (xs: readonly string[]) => [...xs].sort();
/** Imports an entry by package name at run time (a variable, so tsc does not resolve it against dist/). */
const load = (spec: string): Promise<Record<string, unknown>> => import(spec);

test('the main entry exports exactly the pinned names, within the budget', async () => {
  const { values, types } = exportedNames('host/index.ts');
  assert.equal(sorted(values), sorted(MAIN_VALUES), 'value exports of host/index.ts');
  // ErrorCode is a value and a type of one name; it counts once.
  assert.equal(sorted(types), sorted(MAIN_TYPES), 'type exports of host/index.ts');
  const names = new Set([...values, ...types]);
  assert.ok(names.size <= MAIN_BUDGET, `the main entry names ${names.size} things; the budget is ${MAIN_BUDGET}`);
  const mod = await load('groupcomm');
  assert.equal(sorted(Object.keys(mod)), sorted(MAIN_VALUES), "what import('groupcomm') gives at run time");
});

test('the core entry exports exactly the pinned names', async () => {
  const { values, types } = exportedNames('host/core/index.ts');
  assert.equal(sorted(values), sorted(CORE_VALUES), 'value exports of host/core/index.ts');
  assert.equal(sorted(types), sorted(CORE_TYPES), 'type exports of host/core/index.ts');
  const mod = await load('groupcomm/core');
  assert.equal(sorted(Object.keys(mod)), sorted(CORE_VALUES), "what import('groupcomm/core') gives at run time");
});

test('low-level core functions are not on the main entry', async () => {
  const mod = await load('groupcomm');
  for (const name of ['reduceAt', 'allocCoreBuffer', 'finishAvgAt', 'reduceBytes', 'chunkPlan', 'ringNeighbors', 'binomialTree']) {
    assert.is(mod[name], undefined, `${name} is exported from the main entry`);
  }
  const core = await load('groupcomm/core');
  assert.is(typeof core.reduceAt, 'function');
});

test.run();
