#!/usr/bin/env node
// Cross-namespace allReduce against same-host loopback, for docs/multinode.md's table (root,
// iproute2, after `npm run build`): two network namespaces on a bridge (test/helpers/netns.ts),
// one `groupcomm launch --nnodes 2` each, one rank per node, then the same 2 ranks on one host.
// A veth and a bridge are not a NIC. Usage: node scripts/netns-allreduce.mjs [runtime]
// Run as a rank (RANK etc. set): times float32 allReduce over TCP and rank 0 prints the rows.
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const self = fileURLToPath(import.meta.url);

if (process.env.RANK !== undefined) {
  const { CpuGroup, TcpStore, tensor } = await import(path.join(root, 'dist/host/index.js'));
  const rank = Number(process.env.RANK), n = Number(process.env.WORLD_SIZE);
  const store = await TcpStore.fromEnv({ timeoutMs: 60_000 });
  const g = await CpuGroup.create({ store, rank, worldSize: n, groupName: 'nb', transport: 'tcp', timeoutMs: 600_000 });
  const rows = [];
  for (const bytes of [4096, 65536, 1 << 20, 16 << 20, 64 << 20]) {
    const t = tensor(new Float32Array(bytes / 4).fill(1));
    for (let i = 0; i < 3; i++) await g.allReduce(t);
    const iters = bytes >= (16 << 20) ? 10 : bytes >= (1 << 20) ? 40 : 400;
    await g.barrier();
    const t0 = performance.now();
    for (let i = 0; i < iters; i++) await g.allReduce(t);
    const us = ((performance.now() - t0) * 1000) / iters;
    const algbw = bytes / us / 1e3;
    rows.push(`${String(bytes).padStart(10)} B ${us.toFixed(1).padStart(10)} us ${algbw.toFixed(3).padStart(7)} GB/s algbw ${(algbw * 2 * (n - 1) / n).toFixed(3).padStart(7)} GB/s busbw`);
  }
  if (rank === 0) console.log(rows.join('\n'));
  await g.destroy();
  await store.close();
} else {
  const { NetLab } = await import(path.join(root, 'dist-test/test/helpers/netns.js'));
  const rt = process.argv[2] ?? process.execPath;
  process.env.GROUPCOMM_SECRET ??= 'netns-allreduce';
  const bin = path.join(root, 'bin/groupcomm.js');
  const collect = (c) => new Promise((resolve) => { let o = ''; c.stdout.on('data', (d) => (o += d)); c.on('close', () => resolve(o)); });
  const lab = NetLab.create(2);
  if (typeof lab === 'string') {
    console.error(`cannot make namespaces: ${lab}`);
    process.exit(1);
  }
  try {
    const outs = await Promise.all([0, 1].map((i) => collect(lab.spawn(i, rt, [bin, 'launch', '--nnodes', '2', '--node-rank', String(i), '-n', '1',
      '--master-addr', lab.nodes[0].ip4, '--master-port', '29500', self]))));
    console.log(`two namespaces (veth + bridge), 2 nodes × 1 rank:\n${outs[0]}`);
  } finally {
    lab.destroy();
  }
  console.log(`same host (loopback TCP), 2 ranks:\n${await collect(spawn(rt, [bin, 'launch', '-n', '2', self]))}`);
}
