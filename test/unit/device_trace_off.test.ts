/**
 * Without GROUPCOMM_DEBUG=trace a device communicator is not wrapped at all
 * (host/device/trace.ts): the coordinator gets the plugin's own object, and nothing is printed.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';

delete process.env.GROUPCOMM_DEBUG;
delete process.env.GROUPCOMM_DEBUG_SUBSYS;
const { tracedCommunicator } = await import('../../host/device/trace.js');
type Comm = Parameters<typeof tracedCommunicator>[0];

test('tracing off: the communicator itself, and no output', async () => {
  let out = '';
  const write = process.stderr.write;
  process.stderr.write = ((chunk: string | Uint8Array) => { out += String(chunk); return true; }) as typeof process.stderr.write;
  try {
    const comm = { rank: 0, worldSize: 2, deviceIndex: 0, allReduce: async (t: unknown) => t, barrier: async () => {} };
    const c = tracedCommunicator(comm as unknown as Comm, 'dev');
    assert.is(c, comm as unknown as Comm);
    await c.barrier();
    await new Promise((r) => setTimeout(r, 5));
  } finally {
    process.stderr.write = write;
  }
  assert.is(out, '');
});

test.run();
