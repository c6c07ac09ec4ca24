/**
 * One rank of the fault-naming tests (coord_blame.test.ts). `argv[2]` names the scenario; the
 * test hosts the rendezvous store (COORD_STORE_PORT). Each scenario reports what it saw (an
 * error's code, peerRank(s) and message, or ok) for the test to judge.
 */
import { StatelessGroupCoordinator } from '../../../host/coordinator/coordinator.js';
import { TcpStore } from '../../../host/store/index.js';
import { tensor, type CpuTensor } from '../../../host/core/tensor.js';
import { isGroupcommError } from '../../../host/base/errors.js';
import { rankEnv, reportResult } from '../../helpers/ranks.js';

const { rank, worldSize } = rankEnv();
const scenario = process.argv[2];
const port = Number(process.env.COORD_STORE_PORT);
const timeoutMs = Number(process.env.COORD_TIMEOUT_MS ?? 3_000);
const store = await TcpStore.create({ host: '127.0.0.1', port, timeoutMs: 30_000 });
const all = [...Array(worldSize).keys()];
// Ranks start seconds apart on a loaded 2-core machine: meet first, so that start-up skew does not
// eat into the short timeouts the scenarios below test (a late start is not an absent rank).
const run = `blame-start/${process.ppid}/${process.argv.slice(2).join(',')}`;
await store.set(`${run}/${rank}`, '1');
await store.wait(all.map((r) => `${run}/${r}`), { timeoutMs: 60_000 });

type Seen = { code: string; message: string; peerRank?: number; peerRanks?: number[]; ms: number };
const seen = (e: unknown, t0: number): Seen => isGroupcommError(e)
  ? { code: e.code, message: e.message, peerRank: e.peerRank, peerRanks: e.peerRanks, ms: performance.now() - t0 }
  : { code: 'NOT_GROUPCOMM', message: String((e as Error)?.stack ?? e), ms: performance.now() - t0 };

async function outcome(p: Promise<unknown>): Promise<Seen | 'ok'> {
  const t0 = performance.now();
  try {
    await p;
    return 'ok';
  } catch (e) {
    return seen(e, t0);
  }
}

function busy(ms: number): void {
  const until = Date.now() + ms;
  while (Date.now() < until) { /* rank 0's event loop does not turn */ }
}

const create = (name: string, extra: Record<string, unknown> = {}) => StatelessGroupCoordinator.create({
  groupRanks: [all], globalRank: rank, groupName: name, rendezvous: store, timeoutMs, ...extra,
});

let result: unknown;
switch (scenario) {
  // Rank 0 runs synchronous work for longer than the others' timeout right after its barrier
  // resolved: the others' barriers must resolve anyway.
  case 'busy-host': {
    const g = await create('busy');
    await g.barrier();
    const r = await outcome(g.barrier());
    if (rank === 0) busy(timeoutMs + 1_500);
    const x = await g.allReduce(tensor(new Float32Array([rank])), { timeoutMs: 30_000 });
    result = { barrier: r, sum: (x as CpuTensor).data[0] };
    await g.destroy();
    break;
  }
  // Rank 3 never calls allReduce. Rank 0 gives up first (a shorter timeout) and destroys its
  // group; the others must still name rank 3, never rank 0 (which left cleanly) nor the peer
  // they happened to wait on. 'absent-big': large tensors (the ring, many frames).
  case 'absent':
  case 'absent-big': {
    // Creation gets a loaded machine's time (4 processes on 2 cores can take > 1 s); only the
    // collective under test runs with the short timeout it passes explicitly.
    const g = await create(scenario, { timeoutMs: 30_000 });
    const n = scenario === 'absent-big' ? 1 << 20 : 16;
    if (rank === worldSize - 1) {
      await g.barrier({ timeoutMs: 30_000 });
      result = 'absent';
      await new Promise((r) => setTimeout(r, timeoutMs * 2 + 500));
      await g.abort();
      break;
    }
    await g.barrier({ timeoutMs: 30_000 });
    result = await outcome(g.allReduce(tensor(new Float32Array(n).fill(1)), { timeoutMs: rank === 0 ? timeoutMs : timeoutMs * 2 }));
    await g.destroy({ lingerMs: 500 });
    break;
  }
  // Rank 2 SIGKILLs itself in the middle of a loop of tensor-dict broadcasts (4 MiB tensors):
  // every survivor gets PEER_LOST naming rank 2, whatever it was waiting on at that moment.
  case 'dict-kill': {
    const g = await create('dictkill');
    const t = tensor(new Float32Array(1 << 20).fill(rank));
    await g.barrier({ timeoutMs: 30_000 });
    const loop = (async () => {
      for (let i = 0; ; i++) {
        if (rank === 2 && i === 3) process.kill(process.pid, 'SIGKILL');
        await g.broadcastTensorDict(rank === i % 2 ? { i, t } : undefined, i % 2);
      }
    })();
    result = await outcome(loop);
    await g.destroy({ lingerMs: 500 });
    break;
  }
  // Rank 1 calls with another dtype / op / dim (argv[3]): every rank rejects with MISMATCH, the
  // ranks that never exchanged a frame with rank 1 through the group's failure state.
  case 'mismatch': {
    const g = await create(`mm-${process.argv[3]}`);
    const odd = rank === 1;
    const x = tensor(new Float32Array(64).fill(1), { shape: [8, 8] });
    const call = {
      dtype: () => g.allReduce(odd ? tensor(new Int32Array(64).fill(1)) : x),
      op: () => g.allReduce(x, { op: odd ? 'max' : 'sum' }),
      dim: () => g.allGather(x, odd ? 1 : 0),
      collective: () => (odd ? g.broadcast(x, 0) : g.allReduce(x)),
    }[process.argv[3]]!;
    const first = await outcome(call());
    const later = await outcome(g.barrier());
    result = { first, later };
    await g.destroy({ lingerMs: 500 });
    break;
  }
  // The last rank never calls create: every other rank's create fails naming it, by group and
  // global rank.
  case 'create-absent': {
    if (rank === worldSize - 1) {
      result = 'absent';
      await new Promise((r) => setTimeout(r, timeoutMs + 1_500));
      break;
    }
    result = await outcome(create('cabsent'));
    break;
  }
  default:
    throw new Error(`unknown scenario ${scenario}`);
}
reportResult(result);
await store.close();
