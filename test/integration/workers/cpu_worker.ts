/**
 * One rank of the CPU-group integration tests. argv: MODE STORE_DIR [options].
 *   matrix  every collective × dtype × op × element count against the locally computed result
 *   kill    ranks loop over allReduce; the last rank kills itself mid-collective
 *   groups  two groups of different membership used at the same time
 *   large   multi-MiB allReduce / allGather / broadcast at the default (512 KiB) segmenting
 * Reports { rank, checks, failures } (matrix, groups) or the error seen (kill).
 */
import { CpuGroup } from '../../../host/cpu/group.js';
import { isGroupcommError } from '../../../host/base/errors.js';
import { bytesOf, empty, type DType } from '../../../host/core/tensor.js';
import type { ReduceOp } from '../../../host/core/reduce.js';
import { FileStore } from '../../helpers/cpu_filestore.js';
import { rankEnv, reportResult } from '../../helpers/ranks.js';
import { ALL_DTYPES, ALL_OPS, expectedReduce, input, sameBytes } from './cpu_data.js';
import { checker } from '../../helpers/checks.js';

const { rank, worldSize: P } = rankEnv();
const [mode, storeDir, ...opts] = process.argv.slice(2);
const store = new FileStore(storeDir);

const checks = checker(rank, 20);
const { check, failures } = checks;

/** Small chunks and a low small-message threshold, so short inputs already take the ring paths. */
const TUNING = { chunkBytes: 512, window: 2, smallBytes: 64 };

async function matrix(g: CpuGroup, dtypes: DType[], counts: number[]): Promise<void> {
  let seed = 0;
  for (const dtype of dtypes) {
    for (const count of counts) {
      for (const op of ALL_OPS) {
        seed++;
        if (op === 'avg' && dtype === 'bool') {
          const refused = await g.allReduce(input(dtype, op, rank, seed, count), { op }).then(() => false, (e) => isGroupcommError(e, 'ERR_GROUPCOMM_INVALID_ARGUMENT'));
          check(refused, 'allReduce bool avg is refused');
          continue;
        }
        const t = input(dtype, op, rank, seed, count);
        const reduced = await g.allReduce(t, { op });
        check(sameBytes(bytesOf(reduced), expectedReduce(dtype, op, P, seed, count)), `allReduce ${dtype} ${op} n=${count}`);
        check(sameBytes(bytesOf(t), bytesOf(input(dtype, op, rank, seed, count))), `allReduce ${dtype} ${op} n=${count} left its input unchanged`);

        // reduceScatter over P*count elements: rank r keeps block r of the full reduction.
        seed++;
        const x = input(dtype, op, rank, seed, P * count);
        const before = bytesOf(x).slice();
        const out = await g.reduceScatter(x, { op });
        const full = expectedReduce(dtype, op, P, seed, P * count);
        const blk = bytesOf(out).byteLength;
        check(sameBytes(bytesOf(out), full.subarray(rank * blk, (rank + 1) * blk)), `reduceScatter ${dtype} ${op} n=${count}`);
        check(sameBytes(bytesOf(x), before), `reduceScatter ${dtype} ${op} n=${count} left its input unchanged`);
      }
      seed++;
      const src = seed % P;
      const b = rank === src ? input(dtype, undefined, src, seed, count) : empty([count], dtype);
      const got = await g.broadcast(b, { src });
      check(sameBytes(bytesOf(got), bytesOf(input(dtype, undefined, src, seed, count))), `broadcast ${dtype} n=${count} src=${src}`);

      seed++;
      const mine = input(dtype, undefined, rank, seed, count);
      const all = (await g.allGather(mine)).data;
      const ag = new Uint8Array(all.buffer, all.byteOffset, all.byteLength);
      const blk = bytesOf(mine).byteLength;
      for (let r = 0; r < P; r++) {
        check(sameBytes(ag.subarray(r * blk, (r + 1) * blk), bytesOf(input(dtype, undefined, r, seed, count))), `allGather ${dtype} n=${count} block ${r}`);
      }

      seed++;
      const dst = seed % P;
      const gathered = await g.gather(input(dtype, undefined, rank, seed, count), { dst, out: rank === dst ? empty([P * count], dtype) : undefined });
      if (rank === dst) {
        for (let r = 0; r < P; r++) {
          check(sameBytes(bytesOf(gathered!).subarray(r * blk, (r + 1) * blk), bytesOf(input(dtype, undefined, r, seed, count))), `gather ${dtype} n=${count} block ${r}`);
        }
      } else check(gathered === undefined, 'gather returns undefined off the root');

      seed++;
      const root = (seed + 1) % P;
      const sc = await g.scatter(rank === root ? input(dtype, undefined, root, seed, P * count) : undefined, { src: root, out: empty([count], dtype) });
      check(sameBytes(bytesOf(sc), bytesOf(input(dtype, undefined, root, seed, P * count)).subarray(rank * blk, (rank + 1) * blk)), `scatter ${dtype} n=${count}`);

      seed++;
      const a2a = await g.allToAll(input(dtype, undefined, rank, seed, P * count));
      for (let r = 0; r < P; r++) {
        const from = bytesOf(input(dtype, undefined, r, seed, P * count)).subarray(rank * blk, (rank + 1) * blk);
        check(sameBytes(bytesOf(a2a).subarray(r * blk, (r + 1) * blk), from), `allToAll ${dtype} n=${count} from ${r}`);
      }

      if (P > 1) {
        // Ring of point-to-point messages, two tags in flight, sent before anyone receives.
        seed++;
        const to = (rank + 1) % P;
        const from = (rank + P - 1) % P;
        const s1 = g.send(input(dtype, undefined, rank, seed, count), to, { tag: 7 });
        const s2 = g.send(input(dtype, undefined, rank, seed + 1, count), to, { tag: 3 });
        const r2 = await g.recv(empty([count], dtype), from, { tag: 3 });
        const r1 = await g.recv(empty([count], dtype), from, { tag: 7 });
        await Promise.all([s1, s2]);
        check(sameBytes(bytesOf(r1), bytesOf(input(dtype, undefined, from, seed, count))), `send/recv ${dtype} n=${count} tag 7`);
        check(sameBytes(bytesOf(r2), bytesOf(input(dtype, undefined, from, seed + 1, count))), `send/recv ${dtype} n=${count} tag 3`);
        seed++;
      }
    }
  }
  await g.barrier();
}

async function main(): Promise<void> {
  if (mode === 'matrix') {
    // argv: dtypes (default all), counts (default 0,1,7,1000), then a count that needs many
    // segments and the dtypes to run it with (default 4000 for float32, int64, bfloat16).
    const list = (s: string | undefined, d: string) => (s || d).split(',');
    const dtypes = list(opts[0], ALL_DTYPES.join(',')) as DType[];
    const counts = list(opts[1], '0,1,7,1000').map(Number);
    const bigCount = Number(opts[2] || 4000);
    const bigDtypes = list(opts[3], 'float32,int64,bfloat16') as DType[];
    const g = await CpuGroup.create({ store, rank, worldSize: P, groupName: 'matrix', timeoutMs: 60_000, ...TUNING });
    await matrix(g, dtypes, counts);
    await matrix(g, bigDtypes, [bigCount]);
    await g.destroy();
    reportResult({ rank, checks: checks.count, failures });
  } else if (mode === 'kill') {
    const victim = P - 1;
    const g = await CpuGroup.create({ store, rank, worldSize: P, groupName: 'kill', timeoutMs: 20_000, chunkBytes: 4096 });
    const t = empty([1 << 18], 'float32');
    const t0 = performance.now();
    if (rank === victim) setTimeout(() => process.kill(process.pid, 'SIGKILL'), 300);
    // Whether the allReduces went through the shared segments (1 MiB: above their threshold).
    let segments = false;
    try {
      for (;;) {
        await g.allReduce(t, { out: t });
        segments ||= g.sharedSegments;
      }
    } catch (e) {
      reportResult({
        rank, code: isGroupcommError(e) ? e.code : String(e), peerRank: isGroupcommError(e) ? e.peerRank : undefined,
        message: (e as Error).message, elapsedMs: performance.now() - t0, pid: process.pid, segments,
      });
    }
    // Leave the others time to see the loss themselves: a survivor's goodbye reaching a slower
    // survivor first would be reported there as that survivor's departure instead.
    await new Promise((r) => setTimeout(r, 1500));
    await g.destroy();
  } else if (mode === 'large') {
    // Default tuning: 512 KiB segments, so payloads are read straight into place.
    const g = await CpuGroup.create({ store, rank, worldSize: P, groupName: 'large', timeoutMs: 60_000 });
    const n = 600_001;
    for (const [dtype, op] of [['float32', 'sum'], ['int64', 'max'], ['bfloat16', 'sum']] as const) {
      const t = input(dtype, op, rank, 1, n);
      await g.allReduce(t, { op, out: t });
      check(sameBytes(bytesOf(t), expectedReduce(dtype, op, P, 1, n)), `large allReduce ${dtype} ${op}`);
      const mine = input(dtype, undefined, rank, 2, n);
      const all = bytesOf(await g.allGather(mine));
      const blk = bytesOf(mine).byteLength;
      for (let r = 0; r < P; r++) check(sameBytes(all.subarray(r * blk, (r + 1) * blk), bytesOf(input(dtype, undefined, r, 2, n))), `large allGather ${dtype} block ${r}`);
      const b = rank === 1 ? input(dtype, undefined, 1, 3, n) : empty([n], dtype);
      await g.broadcast(b, { src: 1, out: b });
      check(sameBytes(bytesOf(b), bytesOf(input(dtype, undefined, 1, 3, n))), `large broadcast ${dtype}`);
    }
    await g.destroy();
    reportResult({ rank, checks: checks.count, failures });
  } else if (mode === 'groups') {
    // Group "all" spans every rank; group "odd" holds the odd ranks only, in reverse order.
    const odd = [...Array(P).keys()].filter((r) => r % 2 === 1).reverse();
    const [gAll, gOdd] = await Promise.all([
      CpuGroup.create({ store, rank, worldSize: P, groupName: 'all', timeoutMs: 30_000, ...TUNING }),
      odd.includes(rank) ? CpuGroup.create({ store, rank: odd.indexOf(rank), worldSize: odd.length, groupName: 'odd', timeoutMs: 30_000, ...TUNING }) : undefined,
    ]);
    for (let round = 0; round < 5; round++) {
      const a = input('float32', 'sum', rank, round, 1000);
      const pa = gAll.allReduce(a, { out: a });
      if (gOdd) {
        const b = input('int32', 'max', odd.indexOf(rank), round, 700);
        const pb = gOdd.allReduce(b, { op: 'max', out: b });
        await pb;
        check(sameBytes(bytesOf(b), expectedReduce('int32', 'max', odd.length, round, 700)), `group odd round ${round}`);
      }
      await pa;
      check(sameBytes(bytesOf(a), expectedReduce('float32', 'sum', P, round, 1000)), `group all round ${round}`);
    }
    await Promise.all([gAll.destroy(), gOdd?.destroy()]);
    reportResult({ rank, checks: checks.count, failures });
  } else {
    throw new Error(`unknown mode ${mode}`);
  }
}

await main();
