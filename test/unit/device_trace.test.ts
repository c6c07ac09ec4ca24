/**
 * GROUPCOMM_DEBUG=trace on a device communicator (host/device/trace.ts): one line per operation
 * (the ten collectives and point-to-point calls, not the lifecycle calls), naming the
 * communicator and rank, the bytes (the result's, else the input's, none for a barrier) and the
 * peers (send/recv: the one peer; collectives: everyone else), and a failure's code. Properties
 * and the plugin's private state pass through. The level is read when host/base/log.ts loads,
 * so this file sets it before importing anything of the library.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';

process.env.GROUPCOMM_DEBUG = 'trace';
delete process.env.GROUPCOMM_DEBUG_SUBSYS;
const { tracedCommunicator } = await import('../../host/device/trace.js');
const { registerBackend, resolveBackend } = await import('../../host/device/registry.js');
const { invalidArgument } = await import('../../host/base/errors.js');
const { backend: cpu } = await import('../../plugins/cpu/index.js');
const { checkEvery } = await import('../../host/coordinator/check.js');
type Comm = Parameters<typeof tracedCommunicator>[0];

const tensor = (n: number) => ({ dtype: 'float32' as const, shape: [n], device: 'cpu', data: new Float32Array(n) });

/** A plugin's communicator: its methods read a private field, as a real plugin's do. */
class Plugin {
  readonly rank = 1;
  readonly worldSize = 4;
  readonly deviceIndex = 0;
  readonly #calls: string[] = [];
  get calls() { return this.#calls; }
  async allReduce(t: unknown) { this.#calls.push('allReduce'); return t; }
  async allGather() { this.#calls.push('allGather'); return tensor(16); }
  async reduceScatter() { this.#calls.push('reduceScatter'); return tensor(1); }
  async broadcast(t: unknown) { this.#calls.push('broadcast'); return t; }
  async gather() { this.#calls.push('gather'); return undefined; }
  async allToAll() { this.#calls.push('allToAll'); return tensor(8); }
  async send() { this.#calls.push('send'); }
  async recv(out: unknown) { this.#calls.push('recv'); return out; }
  async barrier() { this.#calls.push('barrier'); }
  async synchronize() { this.#calls.push('synchronize'); }
  async abort() { this.#calls.push('abort'); }
  async close() { this.#calls.push('close'); }
  failing() { return 0; }
}

const lines: string[] = [];
const write = process.stderr.write;
process.stderr.write = ((chunk: string | Uint8Array) => {
  lines.push(...String(chunk).split('\n').filter(Boolean));
  return true;
}) as typeof process.stderr.write;
const settle = () => new Promise((r) => setTimeout(r, 5));
const traceLines = () => lines.filter((l) => l.includes(' TRACE '));

test('each operation gets one line: name, rank, op, bytes, peers, microseconds', async () => {
  const plugin = new Plugin();
  const c = tracedCommunicator(plugin as unknown as Comm, 'dev_7');
  assert.is.not(c, plugin as unknown);
  lines.length = 0;
  const t = tensor(4);
  assert.is(await c.allReduce(t as never), t);
  await c.allGather(t as never);
  await c.reduceScatter(t as never);
  await c.broadcast(t as never, { root: 0 } as never);
  await c.gather(t as never, { root: 0 } as never);
  await c.allToAll(t as never);
  await c.send(t as never, 3);
  await c.recv(tensor(2) as never, 2);
  await c.barrier();
  await c.synchronize();
  await settle();
  const got = traceLines().map((l) => l.replace(/^.* DEVICE /, 'DEVICE ').replace(/us=\d+$/, 'us=N'));
  assert.equal(got, [
    'DEVICE dev_7 rank 1/4 TRACE op=allReduce bytes=16 peers=0,2,3 us=N',
    'DEVICE dev_7 rank 1/4 TRACE op=allGather bytes=64 peers=0,2,3 us=N',
    'DEVICE dev_7 rank 1/4 TRACE op=reduceScatter bytes=4 peers=0,2,3 us=N',
    'DEVICE dev_7 rank 1/4 TRACE op=broadcast bytes=16 peers=0,2,3 us=N',
    'DEVICE dev_7 rank 1/4 TRACE op=gather bytes=16 peers=0,2,3 us=N',
    'DEVICE dev_7 rank 1/4 TRACE op=allToAll bytes=32 peers=0,2,3 us=N',
    'DEVICE dev_7 rank 1/4 TRACE op=send bytes=16 peers=3 us=N',
    'DEVICE dev_7 rank 1/4 TRACE op=recv bytes=8 peers=2 us=N',
    'DEVICE dev_7 rank 1/4 TRACE op=barrier peers=0,2,3 us=N',
    'DEVICE dev_7 rank 1/4 TRACE op=synchronize peers=0,2,3 us=N',
  ]);
  // Each call ran on the plugin's own object (its private field), once.
  assert.equal(plugin.calls, ['allReduce', 'allGather', 'reduceScatter', 'broadcast', 'gather', 'allToAll', 'send', 'recv', 'barrier', 'synchronize']);
});

test('lifecycle calls and other methods get no line; properties pass through', async () => {
  const plugin = new Plugin();
  const c = tracedCommunicator(plugin as unknown as Comm, 'dev_8');
  lines.length = 0;
  assert.is(c.rank, 1);
  assert.is(c.worldSize, 4);
  assert.is(c.deviceIndex, 0);
  await c.abort();
  await c.close();
  assert.is((c as unknown as Plugin).failing(), 0);
  await settle();
  assert.equal(traceLines(), []);
  assert.equal(plugin.calls, ['abort', 'close']);
});

test('a failed operation: its line says failed= and the code (no bytes: there is no result); the rejection passes through', async () => {
  const plugin = new Plugin();
  plugin.allReduce = async () => { throw invalidArgument('bad tensor'); };
  const c = tracedCommunicator(plugin as unknown as Comm, 'dev_9');
  lines.length = 0;
  await c.allReduce(tensor(4) as never).then(() => assert.unreachable('resolved'), (e: { code?: string }) => assert.is(e.code, 'ERR_GROUPCOMM_INVALID_ARGUMENT'));
  await settle();
  const got = traceLines();
  assert.is(got.length, 1, got.join('\n'));
  assert.match(got[0], / DEVICE dev_9 rank 1\/4 TRACE op=allReduce peers=0,2,3 us=\d+ failed=ERR_GROUPCOMM_INVALID_ARGUMENT$/);
});

test('resolving a backend logs under DEVICE: unavailable at info, available at debug', async () => {
  const like = (name: string, probe: () => Promise<unknown>) => ({
    apiVersion: 1, name, deviceType: name.replace('-', '_'), capabilities: cpu.capabilities, probe,
    deviceCount: cpu.deviceCount, alloc: cpu.alloc, free: cpu.free, copyFromHost: cpu.copyFromHost, copyToHost: cpu.copyToHost, createCommunicator: cpu.createCommunicator,
  });
  const off = like('trace-off', async () => ({ available: false, reason: 'switched off' }));
  const on = like('trace-on', async () => ({ available: true }));
  registerBackend(off as never);
  registerBackend(on as never);
  lines.length = 0;
  await resolveBackend('trace-off').then(() => assert.unreachable('resolved'), () => {});
  assert.is(await resolveBackend('trace-on'), on as never);
  assert.ok(lines.some((l) => / DEVICE INFO backend trace-off unavailable: switched off$/.test(l)), lines.join('\n'));
  assert.ok(lines.some((l) => / DEVICE DEBUG backend trace-on available$/.test(l)), lines.join('\n'));
});

test('under GROUPCOMM_DEBUG=trace the coordinator checks every device call (GROUPCOMM_CHECK_CALLS_EVERY unset)', () => {
  const old = process.env.GROUPCOMM_CHECK_CALLS_EVERY;
  delete process.env.GROUPCOMM_CHECK_CALLS_EVERY;
  try {
    assert.is(checkEvery(), 1);
  } finally {
    if (old !== undefined) process.env.GROUPCOMM_CHECK_CALLS_EVERY = old;
  }
});

test.after(() => { process.stderr.write = write; });
test.run();
