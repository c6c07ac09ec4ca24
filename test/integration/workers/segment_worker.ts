/**
 * One rank of the shared-segment allReduce tests (cpu_shm_segments.test.ts). argv: MODE STORE_DIR.
 *   exact   small segments (4 KiB chunks: many chunks, buffers reused across calls) and a low
 *           threshold: every op (premulSum too) × several dtypes × odd counts, out of place and
 *           in place, checked bit for bit; then a size mismatch the fingerprint cannot see (same
 *           `call` shape); then destroy() must unmap the segments. Also: /dev/shm holds none of
 *           this process's names once the path is set up.
 *   faults  (3 ranks) a group where rank 0 uses TCP only (the path stays off everywhere, results
 *           still right); then, on groups with the path on, the last rank skips an allReduce:
 *           the others abort theirs (signal), and on the next group time out naming it.
 * Reports { rank, checks, failures, info }.
 */
import fs from 'node:fs';
import { CpuGroup, type CpuGroupOptions } from '../../../host/cpu/group.js';
import { bytesOf, type CpuTensor, type DType } from '../../../host/core/tensor.js';
import { reduceBytes, type ReduceOp } from '../../../host/core/reduce.js';
import { premulSum, scaleBytes } from '../../../host/core/premul.js';
import { isGroupcommError } from '../../../host/base/errors.js';
import { FileStore } from '../../helpers/cpu_filestore.js';
import { rankEnv, reportResult } from '../../helpers/ranks.js';
import { expectedReduce, input, sameBytes } from './cpu_data.js';
import { checker } from '../../helpers/checks.js';

const { rank, worldSize: P } = rankEnv();
const [mode, storeDir] = process.argv.slice(2);
const store = new FileStore(storeDir);
const checks = checker(rank, 20);
const { check, failures } = checks;
const info: Record<string, unknown> = {};

const SMALL: Partial<CpuGroupOptions> = { transport: 'shm', shmReduceBytes: 1024, shmReduceChunkBytes: 4096 };

function group(name: string, options: Partial<CpuGroupOptions>): Promise<CpuGroup> {
  return CpuGroup.create({ store, rank, worldSize: P, groupName: name, timeoutMs: 30_000, ...options });
}

/** This process's shared-memory names in /dev/shm, and its mappings of gcpu segments. */
const ownNames = () => fs.readdirSync('/dev/shm').filter((f) => new RegExp(`^gcpu-[0-9a-f]{12}-${process.pid}-`).test(f));
const mappedSegments = () => fs.readFileSync('/proc/self/maps', 'utf8').split('\n').filter((l) => l.includes('/gcpu-')).length;

function premulExpected(dtype: DType, factor: number, seed: number, n: number): Uint8Array {
  const scaled = (r: number) => {
    const b = bytesOf(input(dtype, 'sum', r, seed, n)).slice();
    scaleBytes(dtype, b, b, premulSum(factor));
    return b;
  };
  const acc = scaled(0);
  for (let r = 1; r < P; r++) reduceBytes('sum', dtype, acc, scaled(r));
  return acc;
}

async function exact(g: CpuGroup): Promise<void> {
  let seed = 0;
  const plan: [DType, number[], (ReduceOp | 'premulSum')[]][] = [
    ['float32', [1001, 5003, 40_007], ['sum', 'prod', 'min', 'max', 'avg', 'premulSum']],
    ['bfloat16', [4099], ['sum', 'avg', 'max', 'premulSum']],
    ['float16', [3001], ['sum', 'min']],
    ['int64', [2049], ['sum', 'prod', 'avg', 'min']],
    ['uint8', [8195], ['sum', 'max']],
    ['bool', [6007], ['sum', 'prod']],
    ['float64', [1237], ['avg', 'premulSum']],
  ];
  for (const [dtype, counts, ops] of plan) {
    for (const n of counts) {
      for (const op of ops) {
        seed++;
        const pre = op === 'premulSum';
        const x = input(dtype, pre ? 'sum' : op, rank, seed, n);
        const before = bytesOf(x).slice();
        const want = pre ? premulExpected(dtype, 0.5, seed, n) : expectedReduce(dtype, op, P, seed, n);
        const spec = pre ? premulSum(0.5) : op;
        const tag = `${dtype} ${op} n=${n}`;
        check(sameBytes(bytesOf(await g.allReduce(x, { op: spec })), want), `${tag} out of place`);
        check(sameBytes(bytesOf(x), before), `${tag} left its input`);
        await g.allReduce(x, { op: spec, out: x });
        check(sameBytes(bytesOf(x), want), `${tag} in place`);
      }
    }
  }
  info.segments = g.sharedSegments;
  info.namesLeft = ownNames().length;
  // Sizes that differ where the fingerprint cannot tell (the caller's own `call` shape).
  const n = rank === P - 1 ? 3000 : 2000;
  const err = await g.allReduce(input('float32', 'sum', rank, 1, n), { call: { shape: [7] } }).then(() => undefined, (e) => e);
  info.mismatch = err && { code: err.code, peerRank: err.peerRank, message: err.message };
}

async function faults(): Promise<void> {
  // Rank 0 over TCP only: nobody takes the path, every result is still right.
  // 40 007 elements first: the ring (above smallBytes) right after the setup round, so ring
  // frames of a peer done with the setup may reach a rank still in it (Exchange.stream hands
  // them over); a stalled rank makes that likelier, though not certain (cpu_large on Bun, whose
  // stalled rank's writes wait for its stall, caught it when they were dropped).
  const mixed = await group('mixed', { ...SMALL, transport: rank === 0 ? 'tcp' : 'shm' });
  const stall = rank === P - 1 ? setInterval(() => { const t = performance.now(); while (performance.now() - t < 20); }, 1) : undefined;
  try {
    for (const op of ['sum', 'avg'] as const) {
      for (const n of [40_007, 5003]) {
        const x = input('float32', op, rank, 9, n);
        check(sameBytes(bytesOf(await mixed.allReduce(x, { op })), expectedReduce('float32', op, P, 9, n)), `mixed ${op} n=${n}`);
      }
    }
  } finally {
    clearInterval(stall);
  }
  info.mixedSegments = mixed.sharedSegments;
  await mixed.destroy();

  // Rank 2 stays away from one allReduce: the others' abort it (signal), then, on a fresh
  // group (a failed operation turns the path off on its ranks), time out naming it.
  const outcome = (e: unknown) => (isGroupcommError(e) ? { code: e.code, peerRanks: e.peerRanks, message: e.message } : { code: String(e) });
  const x = (seed: number) => input('float32', 'sum', rank, seed, 40_007);
  for (const kind of ['abort', 'timeout'] as const) {
    const g = await group(`faults-${kind}`, SMALL);
    check(sameBytes(bytesOf(await g.allReduce(x(1))), expectedReduce('float32', 'sum', P, 1, 40_007)), `${kind}: first allReduce`);
    info[`${kind}Segments`] = g.sharedSegments;
    if (rank !== P - 1) {
      const ac = new AbortController();
      if (kind === 'abort') setTimeout(() => ac.abort(new Error('test abort')), 300);
      info[kind] = await g.allReduce(x(2), kind === 'abort' ? { signal: ac.signal } : { timeoutMs: 1000 }).then(() => ({ code: 'ok' }), outcome);
    } else {
      // Well past the others' timeout: its goodbye must not reach them before it fires.
      await new Promise((r) => setTimeout(r, 3000));
    }
    await g.destroy();
  }
}

async function main(): Promise<void> {
  if (mode === 'exact') {
    const g = await group('exact', SMALL);
    try {
      await exact(g);
      info.mappedBefore = mappedSegments();
    } finally {
      await g.destroy();
    }
    info.mappedAfter = mappedSegments();
  } else if (mode === 'faults') {
    await faults();
  } else {
    throw new Error(`unknown mode ${mode}`);
  }
  reportResult({ rank, checks: checks.count, failures, info });
}

await main();
