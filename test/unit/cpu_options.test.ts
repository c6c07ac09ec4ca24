/**
 * The CPU group's option resolution and call fingerprint on their own (host/cpu/options.ts,
 * host/cpu/fingerprint.ts): transport and ring size (option, then variable, then the default
 * that shares 16 MiB among the peers), the tuning knobs' range, the fingerprint's bit fields, and
 * the words a mismatch is described in. Groups that use them: cpu_group and cpu_mismatch tests.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { shmReduceOf, transportOf, tuningOf } from '../../host/cpu/options.js';
import { segmentChunkBytes, SharedSegments } from '../../host/cpu/segments.js';
import { logger } from '../../host/base/log.js';
import { describeCall, describeMismatch, fingerprint } from '../../host/cpu/fingerprint.js';
import { isGroupcommError } from '../../host/base/errors.js';
import { premulSum } from '../../host/core/premul.js';

/** Fingerprints computed by this version (see the golden test). */
const GOLDEN = [0xe8000282, 0x2d208053, 0xcc000ca4];

const VARS = ['GROUPCOMM_CPU_TRANSPORT', 'GROUPCOMM_CPU_SHM_RING_BYTES', 'GROUPCOMM_CPU_SHM_MIN_BYTES', 'GROUPCOMM_CPU_CHUNK_BYTES', 'GROUPCOMM_CPU_WINDOW', 'GROUPCOMM_CPU_SMALL_BYTES',
  'GROUPCOMM_CPU_SHM_REDUCE_BYTES', 'GROUPCOMM_CPU_SHM_REDUCE_CHUNK_BYTES'];

/** Runs `f` with only `env` of the variables above set. */
function withEnv(env: Record<string, string>, f: () => void): void {
  const saved = VARS.map((k) => [k, process.env[k]] as const);
  for (const k of VARS) delete process.env[k];
  Object.assign(process.env, env);
  try {
    f();
  } finally {
    for (const [k, v] of saved) if (v === undefined) delete process.env[k]; else process.env[k] = v;
  }
}

const invalid = (f: () => unknown) => assert.throws(f, (e: unknown) => isGroupcommError(e, 'ERR_GROUPCOMM_INVALID_ARGUMENT'));
// Only the fields these functions read (a group also needs a store and a name).
const base = { rank: 0, worldSize: 2 } as { rank: number; worldSize: number; store: never; groupName: string };

test('transportOf: option, then variable, then auto; ring size default shares 16 MiB among the peers', () => {
  withEnv({}, () => {
    assert.equal(transportOf(base), { transport: 'auto', shmRingBytes: 4 << 20, shmMinBytes: 8192 });
    assert.is(transportOf({ ...base, transport: 'tcp' }).transport, 'tcp');
    assert.is(transportOf({ ...base, transport: 'shm' }).transport, 'shm');
    invalid(() => transportOf({ ...base, transport: 'udp' as never }));
    // 16 MiB / (P - 1), as a power of two in [256 KiB, 4 MiB].
    const ring = (worldSize: number) => transportOf({ ...base, worldSize }).shmRingBytes;
    assert.is(ring(1), 4 << 20);
    assert.is(ring(5), 4 << 20, '4 MiB each for 4 peers');
    assert.is(ring(6), 2 << 20, '3.2 MiB share → 2 MiB');
    assert.is(ring(9), 2 << 20, '2 MiB each for 8 peers');
    assert.is(ring(17), 1 << 20);
    assert.is(ring(65), 256 << 10);
    assert.is(ring(1000), 256 << 10, 'never below 256 KiB');
    assert.is(transportOf({ ...base, shmRingBytes: 65536 }).shmRingBytes, 65536);
    invalid(() => transportOf({ ...base, shmRingBytes: 65537 }));
  });
  withEnv({ GROUPCOMM_CPU_TRANSPORT: 'tcp', GROUPCOMM_CPU_SHM_RING_BYTES: '131072', GROUPCOMM_CPU_SHM_MIN_BYTES: '1' }, () => {
    assert.equal(transportOf(base), { transport: 'tcp', shmRingBytes: 131072, shmMinBytes: 1 });
    assert.is(transportOf({ ...base, transport: 'shm', shmRingBytes: 65536 }).shmRingBytes, 65536, 'options win');
  });
});

test('tuningOf: defaults, variables, options; each knob an integer in [1, 2^32)', () => {
  withEnv({}, () => {
    assert.equal(tuningOf(base), { chunkBytes: 512 * 1024, window: 4, smallBytes: 64 * 1024 });
    assert.equal(tuningOf({ ...base, chunkBytes: 1, window: 0xffffffff, smallBytes: 7 }), { chunkBytes: 1, window: 0xffffffff, smallBytes: 7 });
    for (const k of ['chunkBytes', 'window', 'smallBytes']) {
      for (const bad of [0, -1, 1.5, 2 ** 32, NaN]) invalid(() => tuningOf({ ...base, [k]: bad }));
      assert.throws(() => tuningOf({ ...base, [k]: 0 }), new RegExp(`^${k} must be an integer`), 'the message names the knob');
    }
  });
  withEnv({ GROUPCOMM_CPU_CHUNK_BYTES: '1000', GROUPCOMM_CPU_WINDOW: '2', GROUPCOMM_CPU_SMALL_BYTES: '3' }, () => {
    assert.equal(tuningOf(base), { chunkBytes: 1000, window: 2, smallBytes: 3 });
    assert.is(tuningOf({ ...base, window: 9 }).window, 9);
  });
});

test('shmReduceOf: option, then variable, then 256 KiB / 1 MiB; the chunk shrinks so P segments stay within 24 MiB', () => {
  withEnv({}, () => {
    assert.equal(shmReduceOf(base), { minBytes: 256 << 10, chunkBytes: 1 << 20 });
    assert.equal(shmReduceOf({ ...base, shmReduceBytes: 0, shmReduceChunkBytes: 4096 }), { minBytes: 0, chunkBytes: 4096 });
    for (const bad of [-1, 1.5, NaN]) invalid(() => shmReduceOf({ ...base, shmReduceBytes: bad }));
    for (const bad of [4095, 2 ** 30 + 1, 1.5]) invalid(() => shmReduceOf({ ...base, shmReduceChunkBytes: bad }));
  });
  withEnv({ GROUPCOMM_CPU_SHM_REDUCE_BYTES: '1024', GROUPCOMM_CPU_SHM_REDUCE_CHUNK_BYTES: '65536' }, () => {
    assert.equal(shmReduceOf(base), { minBytes: 1024, chunkBytes: 65536 });
    assert.is(shmReduceOf({ ...base, shmReduceBytes: 7 }).minBytes, 7, 'options win');
  });
  assert.is(segmentChunkBytes(1 << 20, 4), 1 << 20);
  assert.is(segmentChunkBytes(1 << 20, 8), (24 << 20) / 32, '4 buffers × 8 segments within 24 MiB');
  assert.is(segmentChunkBytes(4096, 1000), 4096, 'never below 4 KiB');
  assert.is(segmentChunkBytes(5000, 3) % 64, 0, 'a multiple of 64 bytes');
  // Which groups and sizes take the path (before the setup round decides for the group).
  const wants = (worldSize: number, minBytes: number, bytes: number) =>
    new SharedSegments({ rank: 0, worldSize, minBytes, chunkBytes: 1 << 20, shm: true, log: logger('CPU') }).wants(bytes);
  assert.ok(wants(3, 256 << 10, 256 << 10), '3 ranks, at the threshold');
  assert.not.ok(wants(3, 256 << 10, (256 << 10) - 1), 'below the threshold');
  assert.not.ok(wants(2, 256 << 10, 64 << 20), '2 ranks keep the ring');
  assert.ok(wants(8, 256 << 10, 64 << 20));
  assert.not.ok(wants(9, 256 << 10, 64 << 20), 'more than 8 ranks keep the ring');
  assert.not.ok(wants(4, 0, 64 << 20), '0 turns it off');
});

test('fingerprint: each field in its bits; absent fields are 0', () => {
  assert.is(fingerprint({ collective: 'broadcast' }), 1);
  assert.is(fingerprint({ collective: 'reduceScatterv' }), 10);
  const fp = fingerprint({ collective: 'allReduce', dtype: 'float32', op: 'max', root: 3, dim: 2 });
  assert.is(fp & 0xf, 2);
  assert.ok(((fp >>> 4) & 0x1f) > 0, 'dtype set');
  assert.ok(((fp >>> 9) & 0x7) > 0, 'op set');
  assert.is((fp >>> 12) & 0xff, 4, 'root + 1');
  assert.is((fp >>> 20) & 0xf, 3, 'dim + 1');
  assert.is(fp >>> 24, 0, 'no shape');
  assert.is((fingerprint({ collective: 'gather', root: 255 }) >>> 12) & 0xff, 0, 'root + 1 mod 256');
  assert.is((fingerprint({ collective: 'gather', dim: -1 }) >>> 20) & 0xf, 0);
  assert.is((fingerprint({ collective: 'gather', dim: 0 }) >>> 20) & 0xf, 1);
  assert.is((fingerprint({ collective: 'gather', root: 0 }) >>> 12) & 0xff, 1);
  // Every field changes the fingerprint on its own.
  const one = { collective: 'allReduce', dtype: 'float32', op: 'sum', root: 1, dim: 1, shape: [4, 5] } as const;
  const f0 = fingerprint(one);
  for (const patch of [{ collective: 'allGather' }, { dtype: 'int32' }, { op: 'min' }, { root: 2 }, { dim: 0 }, { shape: [5, 4] }, { shape: [20] }, { shape: [4, 5, 1] }] as const) {
    assert.is.not(fingerprint({ ...one, ...patch } as never), f0, JSON.stringify(patch));
  }
  assert.is(fingerprint({ ...one, shape: [4, 5] }), f0, 'the same shape hashes the same');
  assert.is.not(fingerprint({ collective: 'allReduce', shape: [] }) >>> 24, 0, 'an empty shape is a shape');
  assert.is(fingerprint({ collective: 'allReduce', dtype: 'nope' as never, op: 'nope' as never }) >>> 4, 0, 'unknown names count as absent');
});

test('fingerprint golden values: the tag travels in every frame, so builds must agree bit for bit', () => {
  // Shapes with dims of 256 and more exercise every step of the shape hash.
  assert.is(fingerprint({ collective: 'allReduce', dtype: 'float32', op: 'sum', shape: [1000, 3] }), GOLDEN[0]);
  assert.is(fingerprint({ collective: 'allGather', dtype: 'int64', root: 7, dim: 1, shape: [70000] }), GOLDEN[1]);
  assert.is(fingerprint({ collective: 'reduceScatter', dtype: 'bfloat16', op: premulSum(0.5), shape: [2, 256, 65536] }), GOLDEN[2]);
  assert.is((fingerprint({ collective: 'allReduce', op: premulSum(2) }) >>> 9) & 7, 6, 'premulSum is reduction 6');
  const d = describeMismatch(fingerprint({ collective: 'allReduce', op: premulSum(2) }), fingerprint({ collective: 'allReduce', op: 'sum' }), 1);
  assert.is(d.text, 'op (premulSum here, sum on rank 1)');
});

test('describeMismatch names each differing field with both values and the peer', () => {
  const a = fingerprint({ collective: 'allReduce', dtype: 'float32', op: 'sum', root: 0, dim: 1, shape: [4] });
  const b = fingerprint({ collective: 'allReduce', dtype: 'int32', op: 'max', root: 2, dim: 1, shape: [8] });
  const d = describeMismatch(a, b, 3);
  assert.equal(d.fields, ['dtype', 'op', 'root', 'shape']);
  assert.is(d.text, 'dtype (float32 here, int32 on rank 3), op (sum here, max on rank 3), root (0 here, 2 on rank 3), shape or count');
  assert.equal(describeMismatch(a, a, 1), { fields: [], text: '' });
  const c = describeMismatch(fingerprint({ collective: 'broadcast', root: 1 }), fingerprint({ collective: 'gather', dim: 0 }), 0);
  assert.is(c.text, 'collective (broadcast here, gather on rank 0), root (1 here, - on rank 0), dim (- here, 0 on rank 0)');
  // Fields no build of this version writes still read as numbers, not as a crash.
  const e = describeMismatch(0xf | (31 << 4) | (7 << 9), 1, 2);
  assert.is(e.text, 'collective (#15 here, broadcast on rank 2), dtype (#31 here, - on rank 2), op (#7 here, - on rank 2)');
});

test('describeCall names the collective and its set fields, never the shape hash', () => {
  assert.is(describeCall(fingerprint({ collective: 'barrier' })), 'barrier');
  assert.is(describeCall(fingerprint({ collective: 'broadcast', dtype: 'float32', root: 1, shape: [3] })), 'broadcast (dtype float32, root 1)');
  assert.is(describeCall(fingerprint({ collective: 'allReduce', dtype: 'int64', op: 'max', dim: 0 })), 'allReduce (dtype int64, op max, dim 0)');
});

test.run();
