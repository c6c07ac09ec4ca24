// A rank for test/integration/store.test.ts. Modes (argv[2]):
//   shared   join a store at STORE_PORT (world size WORLD_SIZE), count, exchange keys, report
//   master   rank 0 hosts the store on port 0 and publishes the port through the coordination
//            store at COORD_PORT; the other ranks read it from there and join
//   many     open CONNS clients at once to STORE_PORT; each sets its key and waits for all keys
import { TcpStore } from '../../../host/index.js';
import { rankEnv, reportResult } from '../../helpers/ranks.js';

const { rank, worldSize } = rankEnv();
const mode = process.argv[2];
const text = (b: Uint8Array) => Buffer.from(b).toString('utf8');
const runtime = typeof (process.versions as Record<string, string>).bun === 'string' ? 'bun' : 'node';
const timeoutMs = 40_000;

async function exchange(s: TcpStore): Promise<Record<string, unknown>> {
  // 100 sequential adds and 100 concurrent (pipelined) ones on a shared counter
  for (let i = 0; i < 100; i++) await s.add('counter', 1);
  await Promise.all(Array.from({ length: 100 }, () => s.add('counter', 1)));
  await s.set(`from/${rank}`, `${runtime}:${rank}`);
  const others = await s.multiGet(Array.from({ length: worldSize }, (_, r) => `from/${r}`), { timeoutMs });
  const cas = text(await s.compareSet(`cas/${rank}`, '', 'mine'));
  await s.add('done', 1);
  // wait until everyone has counted, then read the total
  for (;;) {
    if (Number(text(await s.get('done'))) >= worldSize) break;
    await new Promise((r) => setTimeout(r, 10));
  }
  return { rank, runtime, others: others.map(text), cas, counter: text(await s.get('counter')) };
}

if (mode === 'shared') {
  const s = await TcpStore.create({ port: Number(process.env.STORE_PORT), worldSize, timeoutMs });
  const r = await exchange(s);
  await s.add('left', 1);
  await s.close();
  reportResult(r);
} else if (mode === 'master') {
  const coord = await TcpStore.create({ port: Number(process.env.COORD_PORT), timeoutMs });
  let s: TcpStore;
  if (rank === 0) {
    // The master binds port 0 (no port is probed and re-bound), publishes the real port, and only
    // then waits for the workers, whose join it could not see before they knew the port.
    s = await TcpStore.create({ port: 0, isServer: true, worldSize, rank, waitForWorkers: false, timeoutMs });
    await coord.set('master_port', String(s.port));
    await s.server!.waitForWorkers({ timeoutMs });
  } else {
    const port = Number(text(await coord.get('master_port', { timeoutMs })));
    s = await TcpStore.create({ port, worldSize, rank, timeoutMs });
  }
  const r = await exchange(s);
  if (rank === 0) {
    // the master leaves last: its server goes down with it
    await s.wait(Array.from({ length: worldSize - 1 }, (_, i) => `bye/${i + 1}`), { timeoutMs });
  } else {
    await s.set(`bye/${rank}`, '1');
  }
  await s.close();
  await coord.close();
  reportResult(r);
} else if (mode === 'many') {
  const conns = Number(process.env.CONNS);
  const total = conns * worldSize;
  const port = Number(process.env.STORE_PORT);
  const clients = await Promise.all(Array.from({ length: conns }, () => TcpStore.create({ port, timeoutMs })));
  const allKeys = Array.from({ length: total }, (_, i) => `many/${i}`);
  await Promise.all(clients.map(async (c, i) => {
    await c.set(`many/${rank * conns + i}`, String(i));
    await c.wait(allKeys, { timeoutMs });
  }));
  // everyone is connected at once here: tell the test, and hold until it has looked
  await clients[0].add('connected', conns);
  await clients[0].wait(['release'], { timeoutMs });
  const ok = (await clients[conns - 1].multiGet(allKeys)).length === total;
  await Promise.all(clients.map((c) => c.close()));
  reportResult({ rank, ok });
}
