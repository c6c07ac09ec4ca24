/**
 * The cost of the job secret (docs/security.md), side by side with and without one, in one
 * process over real loopback sockets (rounds interleaved, medians):
 *   store rtt      an awaited set(16 B) + get on a TCP client (not the in-process link)
 *   store connect  TcpStore.create against a running server (handshake, and HMAC exchange)
 *   allReduce 4K   a 4 KiB float32 allReduce on a 2-rank CPU group (transport tcp; both ranks here)
 *   mesh setup     CpuGroup.create for 2 ranks (CHALLENGE/HELLO/ACK, signed or not)
 * Run: node dist/bench/auth.js [--seconds S] [--rounds R]. Noisy on a shared machine: read the
 * ratio of medians, not the absolute numbers.
 */
import { TcpStore } from '../host/store/client.js';
import { TcpStoreServer } from '../host/store/server.js';
import { CpuGroup } from '../host/cpu/group.js';
import { tensor } from '../host/core/tensor.js';

const arg = (name: string, dflt: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : dflt;
};
const SECONDS = arg('seconds', 1);
const ROUNDS = arg('rounds', 5);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function loop(seconds: number, op: () => Promise<unknown>): Promise<number> {
  for (let i = 0; i < 200; i++) await op(); // warm-up
  let n = 0;
  const t0 = performance.now();
  while (performance.now() - t0 < seconds * 1000) {
    await op();
    n++;
  }
  return ((performance.now() - t0) * 1000) / n; // µs per op
}

async function storeCase(secret: string | undefined): Promise<{ rtt: number; connect: number }> {
  const server = await TcpStoreServer.listen({ port: 0, secret });
  const c = await TcpStore.create({ port: server.port, secret, timeoutMs: 10_000 });
  const v = new Uint8Array(16);
  const rtt = await loop(SECONDS, async () => { await c.set('k', v); await c.get('k'); });
  const t0 = performance.now();
  const N = 50;
  for (let i = 0; i < N; i++) await (await TcpStore.create({ port: server.port, secret, timeoutMs: 10_000 })).close();
  const connect = ((performance.now() - t0) * 1000) / N;
  await c.close();
  await server.close();
  return { rtt, connect };
}

let groupNo = 0;
async function meshCase(store: TcpStore, secret: string | undefined): Promise<{ ar: number; setup: number }> {
  const t0 = performance.now();
  const name = `auth-bench-${groupNo++}`;
  const gs = await Promise.all([0, 1].map((rank) => CpuGroup.create({ store, rank, worldSize: 2, groupName: name, transport: 'tcp', secret, timeoutMs: 20_000 })));
  const setup = (performance.now() - t0) * 1000;
  const ts = gs.map(() => tensor(new Float32Array(1024)));
  const ar = await loop(SECONDS, () => Promise.all(gs.map((g, r) => g.allReduce(ts[r], { out: ts[r] }))));
  await Promise.all(gs.map((g) => g.destroy()));
  return { ar, setup };
}

const rows: Record<string, { off: number[]; on: number[] }> = {
  'store rtt (set+get 16 B), µs': { off: [], on: [] },
  'store connect, µs': { off: [], on: [] },
  'allReduce 4 KiB, 2 ranks tcp, µs': { off: [], on: [] },
  'mesh setup, 2 ranks, µs': { off: [], on: [] },
};
const store = await TcpStore.create({ port: 0, isServer: true, timeoutMs: 20_000, secret: 'bench-secret' });
for (let r = 0; r < ROUNDS; r++) {
  for (const [side, secret] of (r % 2 ? [['on', 'bench-secret'], ['off', undefined]] : [['off', undefined], ['on', 'bench-secret']]) as [('on' | 'off'), string | undefined][]) {
    const s = await storeCase(secret);
    rows['store rtt (set+get 16 B), µs'][side].push(s.rtt);
    rows['store connect, µs'][side].push(s.connect);
    const m = await meshCase(store, secret);
    rows['allReduce 4 KiB, 2 ranks tcp, µs'][side].push(m.ar);
    rows['mesh setup, 2 ranks, µs'][side].push(m.setup);
  }
}
await store.close();
console.log(`| case (median of ${ROUNDS} rounds) | no secret | secret | ratio |`);
console.log('|---|---:|---:|---:|');
for (const [name, { off, on }] of Object.entries(rows)) {
  const a = median(off);
  const b = median(on);
  console.log(`| ${name} | ${a.toFixed(1)} | ${b.toFixed(1)} | ${(b / a).toFixed(3)} |`);
}
