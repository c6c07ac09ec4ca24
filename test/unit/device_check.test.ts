/**
 * The plugin shape checks (host/device/check.ts), one defect at a time: each missing or wrong
 * field of a DeviceBackendV1 is named on its own line, nothing is reported for a good one, and a
 * communicator missing any method (or [Symbol.asyncDispose]) is refused at creation, naming it.
 * The loader's end-to-end refusals are in device_registry.test.ts.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { backendProblems, checkBackend, checkCommunicator, COMMUNICATOR_FUNCTIONS } from '../../host/device/check.js';
import { isGroupcommError } from '../../host/base/errors.js';
import { checkReduce } from '../../host/device/elementwise.js';
import { premulSum } from '../../host/core/premul.js';

const fn = () => undefined;
const FUNCTIONS = ['probe', 'deviceCount', 'alloc', 'free', 'copyFromHost', 'copyToHost', 'createCommunicator'];

function good(): Record<string, unknown> {
  const b: Record<string, unknown> = {
    apiVersion: 1, name: 'fake', deviceType: 'fake_gpu2', capabilities: { reduceDtypes: ['float32'], sharedDevice: false },
  };
  for (const f of FUNCTIONS) b[f] = fn;
  return b;
}

test('a well-formed backend has no problems and checkBackend returns it', () => {
  const b = good();
  assert.equal(backendProblems(b), []);
  assert.is(checkBackend(b, "'fake'"), b);
  assert.equal(backendProblems({ ...good(), capabilities: { reduceDtypes: [], sharedDevice: true } }), []);
  assert.equal(backendProblems({ ...good(), deviceType: 'x' }), [], 'one letter is a valid device type');
});

test('non-objects are named by their type', () => {
  assert.equal(backendProblems(undefined), ['expected an object, got undefined']);
  assert.equal(backendProblems(null), ['expected an object, got null']);
  assert.equal(backendProblems(3), ['expected an object, got number']);
  assert.equal(backendProblems('cpu'), ['expected an object, got string']);
});

test('each defect is reported alone, on its own line', () => {
  const one = (patch: Record<string, unknown>, re: RegExp) => {
    const p = backendProblems({ ...good(), ...patch });
    assert.is(p.length, 1, `${JSON.stringify(patch)}: ${JSON.stringify(p)}`);
    assert.match(p[0], re);
  };
  one({ apiVersion: 2 }, /^apiVersion is 2; this groupcomm supports 1$/);
  one({ apiVersion: '1' }, /^apiVersion is "1"/);
  one({ name: '' }, /^name must be a non-empty string$/);
  one({ name: 7 }, /^name must be/);
  for (const t of ['cpu', 'Gpu', '1gpu', 'gpu-x', '', ' gpu', 'gpu ', 5]) one({ deviceType: t }, /^deviceType must match/);
  one({ capabilities: undefined }, /^capabilities must be/);
  one({ capabilities: null }, /^capabilities must be/);
  one({ capabilities: { reduceDtypes: 'float32', sharedDevice: false } }, /^capabilities must be/);
  one({ capabilities: { reduceDtypes: [], sharedDevice: 'no' } }, /^capabilities must be/);
  for (const f of FUNCTIONS) one({ [f]: 'not a function' }, new RegExp(`^${f}\\(\\) is missing$`));
});

test('every defect at once: one line each, and checkBackend lists them all as PLUGIN_UNAVAILABLE', () => {
  const p = backendProblems({});
  assert.is(p.length, 4 + FUNCTIONS.length);
  try {
    checkBackend({ apiVersion: 1 }, "'./x.js'");
    assert.unreachable('accepted');
  } catch (e) {
    assert.ok(isGroupcommError(e, 'ERR_GROUPCOMM_PLUGIN_UNAVAILABLE'), String(e));
    for (const f of FUNCTIONS) assert.ok((e as Error).message.includes(`${f}() is missing`), (e as Error).message);
  }
});

function comm(): Record<string | symbol, unknown> {
  const c: Record<string | symbol, unknown> = {};
  for (const f of COMMUNICATOR_FUNCTIONS) c[f] = fn;
  c[Symbol.asyncDispose] = fn;
  return c;
}

test('checkCommunicator: a complete one is returned; each missing method is refused by name', () => {
  assert.equal([...COMMUNICATOR_FUNCTIONS], [
    'allReduce', 'allGather', 'reduceScatter', 'broadcast', 'send', 'recv', 'gather', 'allToAll', 'barrier', 'synchronize', 'abort', 'close',
  ]);
  const c = comm();
  assert.is(checkCommunicator(c, "'fake'"), c);
  for (const f of [...COMMUNICATOR_FUNCTIONS, Symbol.asyncDispose]) {
    const bad = comm();
    delete bad[f];
    try {
      checkCommunicator(bad, "'fake'");
      assert.unreachable(`accepted without ${String(f)}`);
    } catch (e) {
      assert.ok(isGroupcommError(e, 'ERR_GROUPCOMM_PLUGIN_UNAVAILABLE'), String(e));
      const name = typeof f === 'symbol' ? '[Symbol.asyncDispose]' : f;
      assert.ok((e as Error).message.endsWith(`without ${name}`), (e as Error).message);
    }
  }
  // A function carrying every method is not a communicator object either.
  const f = Object.assign(() => undefined, comm());
  f[Symbol.asyncDispose] = fn;
  assert.throws(() => checkCommunicator(f, "'fake'"), (e: unknown) => isGroupcommError(e, 'ERR_GROUPCOMM_PLUGIN_UNAVAILABLE'));
  for (const v of [null, undefined, 42]) {
    assert.throws(() => checkCommunicator(v, "'fake'"), (e: unknown) => isGroupcommError(e, 'ERR_GROUPCOMM_PLUGIN_UNAVAILABLE'));
  }
});

test('checkReduce takes premulSum (its factor checked against the dtype) besides the named ops', () => {
  checkReduce('float32', premulSum(0.5));
  checkReduce('int32', premulSum(3));
  checkReduce('bool', 'max');
  assert.throws(() => checkReduce('bool', 'avg'), (e: unknown) => isGroupcommError(e, 'ERR_GROUPCOMM_INVALID_ARGUMENT'));
  assert.throws(() => checkReduce('float32', 'mean' as never), (e: unknown) => isGroupcommError(e, 'ERR_GROUPCOMM_INVALID_ARGUMENT'));
});

test.run();
